-- BrightRun LoRA training: who may read and write what, through PostgREST.
--
-- PostgREST runs every request as `anon` (no user) or `authenticated` (a signed-in user), so
-- PostgreSQL privileges and row-level security ARE the API's authorization. Supabase (and
-- brightrun-stack's bootstrap) set
--     alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
-- so every table below starts out fully writable by every client. Each hardening here closes a
-- hole the spec left open:
--
--   1. RLS on EVERY table. The spec created metrics_points, cost_records and notifications
--      without RLS (003), which exposes every user's rows to every signed-in user.
--   2. Table privileges: anon gets nothing on user data; authenticated gets SELECT only, plus
--      column-level UPDATE on datasets(name, description) and notifications(read). With the
--      spec's "Users can update own datasets/jobs" policies a user could PATCH their dataset to
--      status='ready', training_ready=true (skipping validation) or their job's cost to 0.
--      Column privileges make such a PATCH fail with 42501 whatever the row policy says.
--   3. No INSERT or DELETE for users anywhere: rows are created by SECURITY DEFINER functions
--      (create_dataset, create_training_job) that validate input and compute server-owned
--      values, and by the worker (service_role); datasets are deleted softly by delete_dataset.
--   4. Policies are `to authenticated` and compare with `(select auth.uid())` (evaluated once per
--      statement, not per row).
--   5. service_role has BYPASSRLS and keeps ALL privileges: it is the worker's and operators' key.

-- --------------------------------------------------------------------------------------------
-- Privileges
-- --------------------------------------------------------------------------------------------
revoke all on table
  public.datasets, public.training_jobs, public.metrics_points, public.model_artifacts,
  public.cost_records, public.notifications, public.gpu_types, public.training_presets
from anon, authenticated;

grant all on table
  public.datasets, public.training_jobs, public.metrics_points, public.model_artifacts,
  public.cost_records, public.notifications, public.gpu_types, public.training_presets
to service_role;

grant select on table
  public.datasets, public.training_jobs, public.metrics_points, public.model_artifacts,
  public.cost_records, public.notifications
to authenticated;

-- The only user-writable columns.
grant update (name, description) on table public.datasets to authenticated;
grant update (read) on table public.notifications to authenticated;

-- The catalogue is public information (prices are shown before sign-in).
grant select on table public.gpu_types, public.training_presets to anon, authenticated;

-- --------------------------------------------------------------------------------------------
-- Row-level security
-- --------------------------------------------------------------------------------------------
alter table public.datasets enable row level security;
alter table public.training_jobs enable row level security;
alter table public.metrics_points enable row level security;
alter table public.model_artifacts enable row level security;
alter table public.cost_records enable row level security;
alter table public.notifications enable row level security;
alter table public.gpu_types enable row level security;
alter table public.training_presets enable row level security;

-- datasets: read own (soft-deleted ones too: jobs and models still name them); rename own.
create policy "Users can view own datasets" on public.datasets
  for select to authenticated
  using (user_id = (select auth.uid()));
-- WITH CHECK as well as USING, so an UPDATE can never move a row to another owner (user_id is
-- not updatable anyway; this keeps the policy correct on its own).
create policy "Users can update own datasets" on public.datasets
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

-- training_jobs: read own. Every change goes through create_training_job / cancel_training_job
-- or the worker.
create policy "Users can view own jobs" on public.training_jobs
  for select to authenticated
  using (user_id = (select auth.uid()));

-- metrics_points: read the points of own jobs. The policy reads training_jobs as the caller, so
-- training_jobs' own policy applies inside it too: a foreign job id matches nothing.
create policy "Users can view metrics for own jobs" on public.metrics_points
  for select to authenticated
  using (exists (
    select 1 from public.training_jobs j
    where j.id = metrics_points.job_id and j.user_id = (select auth.uid())
  ));

create policy "Users can view own models" on public.model_artifacts
  for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Users can view own costs" on public.cost_records
  for select to authenticated
  using (user_id = (select auth.uid()));

create policy "Users can view own notifications" on public.notifications
  for select to authenticated
  using (user_id = (select auth.uid()));
create policy "Users can update own notifications" on public.notifications
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

-- Catalogue: everyone sees the active offers; retired ones stay for the jobs that used them
-- (their price is snapshotted on the job) but are no longer offered.
create policy "Anyone can view active GPU types" on public.gpu_types
  for select to anon, authenticated
  using (active);
create policy "Anyone can view active presets" on public.training_presets
  for select to anon, authenticated
  using (active);
