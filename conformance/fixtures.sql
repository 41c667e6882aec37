-- Fixtures for the supabase-js conformance suite (conformance/test/*.test.js).
-- Applied by the harness before each run:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f conformance/fixtures.sql
-- Idempotent: safe to apply again to the same stack. Rows are never seeded here; every test
-- creates its own users and rows, so runs can repeat against the same database.

set client_min_messages = warning;

create table if not exists public.conformance_notes (
  id bigserial primary key,
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  title text,
  body text,
  score int,
  tags text[],
  created_at timestamptz default now(),
  unique (user_id, title)
);

-- Columns added after the first version of this file: add them to existing stacks too.
alter table public.conformance_notes add column if not exists meta jsonb;
alter table public.conformance_notes add column if not exists ratio numeric(10, 2);

alter table public.conformance_notes enable row level security;

-- Explicit grants (do not rely on default privileges): anon may select, but no policy lets it
-- see a row, so it reads an empty list; authenticated users read and write their own rows.
revoke all on table public.conformance_notes from anon, authenticated;
grant select on table public.conformance_notes to anon;
grant select, insert, update, delete on table public.conformance_notes to authenticated;
grant all on table public.conformance_notes to service_role;
grant usage, select on sequence public.conformance_notes_id_seq to authenticated, service_role;

drop policy if exists conformance_notes_select_own on public.conformance_notes;
drop policy if exists conformance_notes_insert_own on public.conformance_notes;
drop policy if exists conformance_notes_update_own on public.conformance_notes;
drop policy if exists conformance_notes_delete_own on public.conformance_notes;

create policy conformance_notes_select_own on public.conformance_notes
  for select to authenticated using (user_id = (select auth.uid()));
create policy conformance_notes_insert_own on public.conformance_notes
  for insert to authenticated with check (user_id = (select auth.uid()));
create policy conformance_notes_update_own on public.conformance_notes
  for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy conformance_notes_delete_own on public.conformance_notes
  for delete to authenticated using (user_id = (select auth.uid()));

-- Scalar function: POST /rest/v1/rpc/conformance_add {"a":2,"b":3} -> 5
create or replace function public.conformance_add(a int, b int) returns int
  language sql immutable as $$ select a + b $$;

-- Scalar function reading the JWT claims PostgREST sets: returns the caller's auth.uid().
create or replace function public.conformance_whoami() returns uuid
  language sql stable as $$ select auth.uid() $$;

-- Set-returning function: rows (i, label) for i in 1..n; filters/order apply to its result.
create or replace function public.conformance_series(n int)
  returns table (i int, label text)
  language sql immutable as $$
    select g, 'item-' || g from generate_series(1, n) as g
  $$;

-- Raising function: RAISE EXCEPTION -> SQLSTATE P0001, HTTP 400, with message/detail/hint.
create or replace function public.conformance_fail(msg text) returns void
  language plpgsql as $$
  begin
    raise exception using message = msg,
                          detail = 'conformance detail',
                          hint = 'conformance hint';
  end
  $$;

-- RAISE with a PostgREST status SQLSTATE (PTxyz -> HTTP xyz).
create or replace function public.conformance_fail_with(state text, msg text) returns void
  language plpgsql as $$
  begin
    raise exception using errcode = state, message = msg;
  end
  $$;

-- A single unnamed jsonb parameter receives the whole request body.
create or replace function public.conformance_echo(jsonb) returns jsonb
  language sql immutable as $$ select $1 $$;

-- void -> 204 No Content.
create or replace function public.conformance_noop() returns void
  language sql as $$ select $$;

revoke all on function public.conformance_fail_with(text, text) from public;
revoke all on function public.conformance_echo(jsonb) from public;
revoke all on function public.conformance_noop() from public;
grant execute on function public.conformance_fail_with(text, text) to anon, authenticated, service_role;
grant execute on function public.conformance_echo(jsonb) to anon, authenticated, service_role;
grant execute on function public.conformance_noop() to anon, authenticated, service_role;

revoke all on function public.conformance_add(int, int) from public;
revoke all on function public.conformance_whoami() from public;
revoke all on function public.conformance_series(int) from public;
revoke all on function public.conformance_fail(text) from public;
grant execute on function public.conformance_add(int, int) to anon, authenticated, service_role;
grant execute on function public.conformance_whoami() to anon, authenticated, service_role;
grant execute on function public.conformance_series(int) to anon, authenticated, service_role;
grant execute on function public.conformance_fail(text) to anon, authenticated, service_role;

notify pgrst, 'reload schema';
