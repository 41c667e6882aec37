-- BrightRun worker: what brightrun-worker needs from the schema beyond the training_jobs queue
-- columns of 20261122000002_lora_schema.sql.
--
--   1. A lease on dataset validation. confirm_dataset_upload moves a dataset to 'validating'; a
--      worker claims it with FOR UPDATE SKIP LOCKED, holding validation_lease_expires_at, and
--      every write it makes carries `validation_attempt = <mine>` (the fencing token, as
--      training_jobs.attempt is for jobs). A worker that dies mid-validation lets its lease
--      expire and another worker claims the dataset again (validation is deterministic, so a
--      second run writes the same result).
--   2. Wake-ups. Triggers send pg_notify('brightrun_worker', ...) when there is work (a job
--      queued, a dataset to validate) and when a held job is asked to cancel, so idle workers
--      claim at once and a running job stops within a heartbeat-independent delay. Workers also
--      poll, so a lost notification (e.g. through a transaction pooler, which drops LISTEN) only
--      costs latency.
--
-- The queue statements themselves (claim, heartbeat, fenced writes, reaper) are in the worker
-- (crates/brightrun-worker/src/queue.rs): it connects to PostgreSQL directly as the table owner.

alter table public.datasets
  add column validation_attempt integer not null default 0 check (validation_attempt >= 0),
  add column validation_worker_id text,
  add column validation_lease_expires_at timestamptz,
  add column validation_next_attempt_at timestamptz not null default now();

comment on column public.datasets.validation_attempt is
  'Fencing token of dataset validation: incremented on every claim by a worker; its writes must match it.';
comment on column public.datasets.validation_lease_expires_at is
  'Until when the claiming worker holds the validation; after it, another worker may claim the dataset.';
comment on column public.datasets.validation_next_attempt_at is
  'Earliest time a worker may (re)try validating the dataset (backoff after a failed attempt).';

-- The validation claim: datasets waiting for a worker, oldest first.
create index idx_datasets_validation_queue on public.datasets (validation_next_attempt_at, updated_at)
  where status = 'validating' and deleted_at is null;

create function lora_private.notify_worker()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_table_name = 'training_jobs' then
    if new.status = 'queued' and (tg_op = 'INSERT' or old.status is distinct from 'queued') then
      perform pg_catalog.pg_notify('brightrun_worker', 'job');
    elsif tg_op = 'UPDATE' and new.cancel_requested_at is not null and old.cancel_requested_at is null
          and new.status in ('initializing', 'running') then
      perform pg_catalog.pg_notify('brightrun_worker', 'cancel:' || new.id::text);
    end if;
  elsif new.status = 'validating' and (tg_op = 'INSERT' or old.status is distinct from 'validating') then
    perform pg_catalog.pg_notify('brightrun_worker', 'dataset');
  end if;
  return null;
end;
$$;
revoke all on function lora_private.notify_worker() from public, anon, authenticated, service_role;

create trigger notify_worker_training_jobs after insert or update of status, cancel_requested_at
  on public.training_jobs for each row execute function lora_private.notify_worker();
create trigger notify_worker_datasets after insert or update of status
  on public.datasets for each row execute function lora_private.notify_worker();
