-- BrightRun LoRA training: the six tables of spec 003/004 (datasets, training_jobs,
-- metrics_points, model_artifacts, cost_records, notifications) with every column, index and
-- updated_at trigger of the spec, under the spec's names, plus:
--   * NOT NULL on every column that has a default and is read as a state (a NULL status would
--     slip through a CHECK, since CHECK treats NULL as true);
--   * CHECK constraints for every status/enum column (the spec's VARCHAR statuses are kept, so
--     new states are a constraint change, not a type migration) and for ranges;
--   * server-side statistics and snapshot columns (datasets.training_tokens, .statistics;
--     training_jobs.cost_per_gpu_hour, .num_gpus, .cost_estimate, ...);
--   * the worker's queue columns (worker_id, attempt, lease_expires_at, heartbeat_at,
--     cancel_requested_at, max_attempts, next_attempt_at) and the claim index.
-- Who may read or write what is in 20261122000003_lora_access.sql; the state transitions are
-- functions in 20261122000005_lora_functions.sql.
--
-- Foreign keys the spec declares ON DELETE RESTRICT are declared NO ACTION here: for a direct
-- DELETE the effect is the same (the delete fails while rows refer to it), but NO ACTION is
-- checked at the end of the statement, so deleting a user from auth.users, which cascades to
-- their datasets, jobs and artifacts in one statement, succeeds instead of failing on whichever
-- cascade PostgreSQL happens to run first.

-- ============================================================================================
-- DATASETS
-- ============================================================================================
create table public.datasets (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,

  -- Metadata (the only columns a user may change after creation: name, description)
  name varchar(200) not null check (char_length(btrim(name)) > 0),
  description text check (char_length(description) <= 10000),
  format varchar(50) not null default 'brightrun_lora_v4'
    check (format in ('brightrun_lora_v4', 'brightrun_lora_v3')),
  -- uploading -> validating (confirm_dataset_upload) -> ready | error (the worker)
  status varchar(50) not null default 'uploading'
    check (status in ('uploading', 'validating', 'ready', 'error')),

  -- Storage: a path inside the bucket, never a URL. `{user_id}/{dataset_id}/{file_name}`.
  storage_bucket varchar(100) not null default 'lora-datasets' check (storage_bucket = 'lora-datasets'),
  storage_path text not null unique,
  file_name varchar(255) not null check (char_length(file_name) > 0),
  file_size bigint not null check (file_size > 0),

  -- Statistics, written by the worker after validation.
  total_training_pairs integer check (total_training_pairs >= 0),
  total_validation_pairs integer check (total_validation_pairs >= 0),
  -- Every token in the file (training and validation conversations).
  total_tokens bigint check (total_tokens >= 0),
  avg_turns_per_conversation decimal(10, 2) check (avg_turns_per_conversation >= 0),
  avg_tokens_per_turn decimal(10, 2) check (avg_tokens_per_turn >= 0),
  -- Tokens one training epoch processes: all tokens (context and completion) of the
  -- conversations that hold training pairs, validation-only lines excluded. This is the
  -- estimator's `tokens_per_epoch`; when the worker has not written it, total_tokens is used
  -- (a slight over-estimate). Not in the spec: added because the spec's estimate ignored size.
  training_tokens bigint check (training_tokens >= 0),
  -- The validator's full statistics report (p50/p95/max tokens per conversation, assistant
  -- tokens, warnings counts, ...), for display. Informational: nothing server-side reads it.
  statistics jsonb check (statistics is null or jsonb_typeof(statistics) = 'object'),

  -- Validation
  training_ready boolean not null default false,
  validated_at timestamptz,
  validation_errors jsonb check (validation_errors is null or jsonb_typeof(validation_errors) = 'array'),

  -- Sample data (for preview): the first conversations.
  sample_data jsonb,

  -- Timestamps
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz, -- soft delete (public.delete_dataset)

  -- A dataset can only be training-ready once it is validated and its size in tokens is known,
  -- because create_training_job estimates the cost from it.
  constraint datasets_training_ready_requires_ready check (not training_ready or status = 'ready'),
  constraint datasets_ready_requires_tokens
    check (status <> 'ready' or (validated_at is not null and coalesce(training_tokens, total_tokens) is not null))
);

create index idx_datasets_user_id on public.datasets (user_id);
create index idx_datasets_status on public.datasets (status) where deleted_at is null;
create index idx_datasets_created_at on public.datasets (created_at desc);
-- The client's incremental refresh: `user_id=eq.<me>&updated_at=gt.<cursor>`.
create index idx_datasets_user_updated_at on public.datasets (user_id, updated_at);
-- The worker's validation queue: datasets waiting for validation, oldest first.
create index idx_datasets_validating on public.datasets (updated_at) where status = 'validating' and deleted_at is null;

comment on table public.datasets is 'LoRA training datasets uploaded by users';
comment on column public.datasets.storage_path is 'Supabase Storage path - generate signed URLs on-demand';
comment on column public.datasets.validation_errors is 'Array of validation error objects: [{ line, error, suggestion }]';
comment on column public.datasets.training_tokens is
  'Tokens processed per training epoch (training conversations only). Written by the worker; read by the cost estimate.';
comment on column public.datasets.statistics is 'Full validator statistics report (display only).';

create trigger update_datasets_updated_at before update on public.datasets
  for each row execute function public.update_updated_at_column();

-- ============================================================================================
-- TRAINING_JOBS
-- ============================================================================================
create table public.training_jobs (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  dataset_id uuid not null references public.datasets (id), -- spec: RESTRICT (see header)

  -- Configuration
  preset_id varchar(50) not null references public.training_presets (id),
  hyperparameters jsonb not null check (jsonb_typeof(hyperparameters) = 'object'), -- HyperparameterConfig
  gpu_config jsonb not null check (jsonb_typeof(gpu_config) = 'object'), -- GPUConfig snapshot

  -- Status & progress
  status varchar(50) not null default 'queued'
    check (status in ('queued', 'initializing', 'running', 'completed', 'failed', 'cancelled')),
  current_stage varchar(50) not null default 'queued'
    check (current_stage in ('queued', 'initializing', 'training', 'validating', 'saving', 'completed')),
  progress decimal(5, 2) not null default 0 check (progress between 0 and 100),

  -- Training progress
  current_epoch integer not null default 0 check (current_epoch >= 0),
  total_epochs integer not null check (total_epochs >= 1),
  current_step integer not null default 0 check (current_step >= 0),
  total_steps integer check (total_steps >= 0),

  -- Current metrics (denormalized for quick access)
  current_metrics jsonb,

  -- Time tracking
  queued_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  estimated_completion_at timestamptz,

  -- Cost tracking (USD)
  current_cost decimal(10, 2) not null default 0 check (current_cost >= 0),
  estimated_total_cost decimal(10, 2) not null check (estimated_total_cost >= 0),
  final_cost decimal(10, 2) check (final_cost >= 0),
  -- Snapshots taken by create_training_job, so a later catalogue price change never changes
  -- what a job costs: the $/GPU-hour and GPU count billed, and the estimate with its inputs.
  cost_per_gpu_hour numeric(10, 4) not null check (cost_per_gpu_hour > 0),
  num_gpus integer not null check (num_gpus >= 1),
  cost_estimate jsonb check (cost_estimate is null or jsonb_typeof(cost_estimate) = 'object'),
  estimated_duration_hours numeric(12, 4) check (estimated_duration_hours >= 0),

  -- Error handling
  error_message text,
  error_stack text,
  retry_count integer not null default 0 check (retry_count >= 0),

  -- External training service
  external_job_id varchar(255) unique, -- ID from GPU cluster API

  -- Artifact reference (foreign key added after model_artifacts)
  artifact_id uuid,

  -- Queue (brightrun-worker). A worker claims the oldest claimable queued job with
  --   UPDATE ... FROM (SELECT id ... WHERE status = 'queued' AND next_attempt_at <= now()
  --                    ORDER BY created_at FOR UPDATE SKIP LOCKED LIMIT 1)
  -- setting worker_id, attempt = attempt + 1, lease_expires_at, heartbeat_at. `attempt` is the
  -- fencing token: every worker write carries `AND attempt = <mine>`, so a worker whose lease
  -- expired and was reclaimed cannot overwrite the new attempt. A reaper requeues jobs whose
  -- lease expired (next_attempt_at = now() + backoff) or fails them after max_attempts.
  worker_id text,
  attempt integer not null default 0 check (attempt >= 0),
  max_attempts integer not null default 3 check (max_attempts >= 1),
  next_attempt_at timestamptz not null default now(),
  lease_expires_at timestamptz,
  heartbeat_at timestamptz,
  -- Set by cancel_training_job for a job a worker holds; the worker reads it with its heartbeat
  -- and stops. A queued job is cancelled directly.
  cancel_requested_at timestamptz,

  -- Timestamps
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),

  constraint training_jobs_terminal_has_completed_at
    check (status not in ('completed', 'failed', 'cancelled') or completed_at is not null)
);

create index idx_training_jobs_user_id on public.training_jobs (user_id);
create index idx_training_jobs_status on public.training_jobs (status);
create index idx_training_jobs_dataset_id on public.training_jobs (dataset_id);
create index idx_training_jobs_external_id on public.training_jobs (external_job_id);
create index idx_training_jobs_created_at on public.training_jobs (created_at desc);
-- The claim query: queued jobs in FIFO order. Partial, so it stays as small as the queue.
create index idx_training_jobs_queue on public.training_jobs (created_at, next_attempt_at) where status = 'queued';
-- The reaper: held jobs by lease expiry.
create index idx_training_jobs_lease on public.training_jobs (lease_expires_at)
  where status in ('initializing', 'running');
create index idx_training_jobs_user_updated_at on public.training_jobs (user_id, updated_at);
create index idx_training_jobs_preset_id on public.training_jobs (preset_id);

comment on table public.training_jobs is 'LoRA training jobs configuration and status';
comment on column public.training_jobs.external_job_id is 'Job ID from external GPU cluster API';
comment on column public.training_jobs.current_metrics is
  'Latest metrics for quick display without querying metrics_points';
comment on column public.training_jobs.cost_per_gpu_hour is
  'USD per GPU-hour snapshotted from gpu_types at creation; cost so far = hours x this x num_gpus.';
comment on column public.training_jobs.cost_estimate is
  'The estimate (inputs and outputs of estimate_training_cost) snapshotted at creation.';
comment on column public.training_jobs.attempt is
  'Fencing token: incremented on every claim; worker writes must match it.';
comment on column public.training_jobs.cancel_requested_at is
  'Set by cancel_training_job while a worker holds the job; the worker honours it on heartbeat.';

create trigger update_training_jobs_updated_at before update on public.training_jobs
  for each row execute function public.update_updated_at_column();

-- ============================================================================================
-- METRICS_POINTS
-- ============================================================================================
create table public.metrics_points (
  id uuid primary key default gen_random_uuid(),
  job_id uuid not null references public.training_jobs (id) on delete cascade,
  -- Which claim of the job wrote the point (training_jobs.attempt). With the unique index
  -- below, re-sending a point after a crash is an idempotent upsert.
  attempt integer not null default 1 check (attempt >= 1),

  timestamp timestamptz not null default now(),

  -- Progress
  epoch integer not null check (epoch >= 0),
  step integer not null check (step >= 0),

  -- Loss metrics
  training_loss decimal(10, 6) not null,
  validation_loss decimal(10, 6),

  -- Training metrics
  learning_rate decimal(12, 10) not null check (learning_rate >= 0),
  gradient_norm decimal(10, 6),

  -- Performance metrics
  throughput decimal(10, 2) check (throughput >= 0), -- tokens/sec
  gpu_utilization decimal(5, 2) check (gpu_utilization between 0 and 100) -- percentage
);

create index idx_metrics_points_job_id on public.metrics_points (job_id);
create index idx_metrics_points_timestamp on public.metrics_points (job_id, timestamp desc);
create index idx_metrics_points_step on public.metrics_points (job_id, step desc);
create unique index idx_metrics_points_job_attempt_step on public.metrics_points (job_id, attempt, step);

comment on table public.metrics_points is 'Time-series training metrics for loss curves and performance tracking';

-- ============================================================================================
-- MODEL_ARTIFACTS
-- ============================================================================================
create table public.model_artifacts (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  job_id uuid not null unique references public.training_jobs (id), -- spec: RESTRICT
  dataset_id uuid not null references public.datasets (id), -- spec: RESTRICT

  -- Metadata
  name varchar(200) not null check (char_length(btrim(name)) > 0),
  version varchar(50) not null default '1.0.0',
  description text,

  -- Status
  status varchar(50) not null default 'stored' check (status in ('stored', 'deployed', 'archived')),
  deployed_at timestamptz,

  quality_metrics jsonb not null, -- { final_training_loss, final_validation_loss, convergence_quality, perplexity }
  training_summary jsonb not null, -- { duration_seconds, total_epochs, final_learning_rate, gpu_hours, total_cost }
  configuration jsonb not null, -- copy of the job config
  -- Storage paths in `lora-models`, never URLs: { adapter_model_path, adapter_config_path, tokenizer_path, file_sizes }
  artifacts jsonb not null check (jsonb_typeof(artifacts) = 'object'),

  -- Version lineage
  parent_model_id uuid references public.model_artifacts (id),

  -- Timestamps
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz -- soft delete
);

create index idx_model_artifacts_user_id on public.model_artifacts (user_id);
create index idx_model_artifacts_job_id on public.model_artifacts (job_id);
create index idx_model_artifacts_status on public.model_artifacts (status) where deleted_at is null;
create index idx_model_artifacts_created_at on public.model_artifacts (created_at desc);
create index idx_model_artifacts_dataset_id on public.model_artifacts (dataset_id);
create index idx_model_artifacts_parent_model_id on public.model_artifacts (parent_model_id);

comment on table public.model_artifacts is 'Trained LoRA model artifacts metadata and storage paths';
comment on column public.model_artifacts.artifacts is 'Storage paths only - generate signed URLs on-demand';

create trigger update_model_artifacts_updated_at before update on public.model_artifacts
  for each row execute function public.update_updated_at_column();

alter table public.training_jobs
  add constraint fk_training_jobs_artifact foreign key (artifact_id) references public.model_artifacts (id);
create index idx_training_jobs_artifact_id on public.training_jobs (artifact_id);

-- ============================================================================================
-- COST_RECORDS
-- ============================================================================================
create table public.cost_records (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  job_id uuid references public.training_jobs (id) on delete set null,

  -- Cost breakdown (USD)
  cost_type varchar(50) not null check (cost_type in ('compute', 'storage', 'data_transfer')),
  amount decimal(10, 2) not null check (amount >= 0),

  details jsonb, -- { gpu_hours, storage_gb, transfer_gb, unit_cost, description }

  -- Start of the billing period: the first day of a calendar month (monthly_cost_summary
  -- groups by it).
  billing_period date not null check (extract(day from billing_period) = 1),
  recorded_at timestamptz not null default now()
);

create index idx_cost_records_user_id on public.cost_records (user_id);
create index idx_cost_records_job_id on public.cost_records (job_id);
create index idx_cost_records_billing_period on public.cost_records (user_id, billing_period desc);

comment on table public.cost_records is 'Cost tracking records for billing and analytics';

-- ============================================================================================
-- NOTIFICATIONS
-- ============================================================================================
create table public.notifications (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,

  -- The spec's four types, plus dataset_error for a dataset that failed validation.
  type varchar(50) not null
    check (type in ('job_complete', 'job_failed', 'cost_alert', 'dataset_ready', 'dataset_error')),
  title varchar(200) not null,
  message text not null,
  priority varchar(20) not null default 'medium' check (priority in ('low', 'medium', 'high', 'critical')),

  -- The only column a user may change.
  read boolean not null default false,
  action_url text, -- in-app route to open on click

  metadata jsonb,

  created_at timestamptz not null default now()
);

create index idx_notifications_user_id on public.notifications (user_id);
create index idx_notifications_read on public.notifications (user_id, read, created_at desc);
create index idx_notifications_created_at on public.notifications (created_at desc);

comment on table public.notifications is 'User notifications for job events and alerts';
