-- BrightRun LoRA training: the server-side catalogue (GPU types and hyperparameter presets).
--
-- Why these are tables and not constants in the app: prices, throughput figures and presets
-- change without an app release, and every cost the server computes (estimate_training_cost,
-- create_training_job) reads them here, so the desktop app, the CLI and the worker can never
-- disagree about a price. Users may read the active rows; only service_role (operators, the
-- worker) may write them. Grants and RLS are set in 20261122000003_lora_access.sql.
--
-- Forward-only: applied once by brightrun-stack (sqlx) and by `supabase db push`. Runs as
-- `postgres` after Supabase's own schemas (auth, storage) and roles exist.

-- Shared `updated_at` trigger (the spec's name). `set search_path = ''`: a trigger function runs
-- with the privileges of whoever fires it, but pinning the path keeps the Supabase linter quiet
-- and the function immune to objects a caller might create in their own schemas.
create or replace function public.update_updated_at_column()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at = pg_catalog.now();
  return new;
end;
$$;
-- A trigger function is never an API endpoint; nobody needs EXECUTE on it to fire the trigger.
revoke all on function public.update_updated_at_column() from public, anon, authenticated, service_role;

-- ============================================================================================
-- GPU_TYPES
-- ============================================================================================
create table public.gpu_types (
  -- The spec's `gpu_type` string ('A100-80GB', ...): what GPUConfig.gpu_type holds.
  id varchar(50) primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$'),
  display_name varchar(100) not null check (char_length(btrim(display_name)) > 0),
  memory_gb integer not null check (memory_gb > 0),
  -- US dollars for ONE GPU for one hour. A job on n GPUs costs n times this per hour.
  price_per_gpu_hour numeric(10, 4) not null check (price_per_gpu_hour > 0),
  -- Training throughput of ONE GPU, in dataset tokens per second, used by the estimator
  -- (see lora_private.estimate_cost in 20261122000005_lora_functions.sql).
  tokens_per_second_per_gpu numeric(12, 2) not null check (tokens_per_second_per_gpu > 0),
  max_gpus integer not null default 1 check (max_gpus between 1 and 64),
  active boolean not null default true,
  sort_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.gpu_types is
  'GPU catalogue: $/GPU-hour and throughput used by the server-side cost estimate. Written by service_role only.';
comment on column public.gpu_types.price_per_gpu_hour is
  'USD per GPU per hour (never per machine). Jobs snapshot it at creation (training_jobs.cost_per_gpu_hour).';
comment on column public.gpu_types.tokens_per_second_per_gpu is
  'Sustained LoRA training throughput of one GPU in tokens/s (7B base model, bf16, seq 2048). Estimator input.';

create trigger update_gpu_types_updated_at before update on public.gpu_types
  for each row execute function public.update_updated_at_column();

-- Seed from spec 004 GPU_OPTIONS, with its defect fixed: the spec lists a "2 x A100-80GB" option
-- with cost_per_gpu_hour 6.00, which is the price of the two-GPU machine (2 x $3.00), not of one
-- GPU. The catalogue holds one row per GPU type with the per-GPU price; the GPU count is chosen
-- per job (up to max_gpus) and multiplies the price.
--
-- Throughput figures (tokens/s per GPU, LoRA on a 7B model, bf16, sequence length 2048, rank
-- 8-32; the adapter rank barely changes throughput because the frozen base dominates):
--   A6000-48GB  1,400 tok/s  (Ampere, 48 GB, ~40 % of an A100's bf16 tensor throughput)
--   A100-80GB   3,200 tok/s  (reference point)
--   H100-80GB   6,000 tok/s  (~1.9x an A100 for transformer training)
-- They are planning figures, deliberately rounded; operators correct them from measured jobs
-- (metrics_points.throughput) with an UPDATE, no release needed.
insert into public.gpu_types
  (id, display_name, memory_gb, price_per_gpu_hour, tokens_per_second_per_gpu, max_gpus, sort_order)
values
  ('A6000-48GB', 'NVIDIA RTX A6000 48 GB', 48, 1.50, 1400, 4, 10),
  ('A100-80GB', 'NVIDIA A100 80 GB', 80, 3.00, 3200, 8, 20),
  ('H100-80GB', 'NVIDIA H100 80 GB', 80, 5.00, 6000, 8, 30);

-- ============================================================================================
-- TRAINING_PRESETS
-- ============================================================================================
create table public.training_presets (
  -- The spec's PresetId: 'conservative' | 'balanced' | 'aggressive' | 'custom'.
  id varchar(50) primary key check (id ~ '^[a-z][a-z0-9_]*$'),
  display_name varchar(100) not null check (char_length(btrim(display_name)) > 0),
  description text,
  -- A complete HyperparameterConfig (spec 004). create_training_job merges the caller's
  -- overrides over it and validates the result.
  hyperparameters jsonb not null check (jsonb_typeof(hyperparameters) = 'object'),
  active boolean not null default true,
  sort_order integer not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

comment on table public.training_presets is
  'Hyperparameter presets (spec 004 HYPERPARAMETER_PRESETS). Written by service_role only.';

create trigger update_training_presets_updated_at before update on public.training_presets
  for each row execute function public.update_updated_at_column();

-- Values exactly as spec 004 HYPERPARAMETER_PRESETS.
insert into public.training_presets (id, display_name, description, hyperparameters, sort_order)
values
  ('conservative', 'Conservative', 'Low learning rate, small rank, 3 epochs: safest on small datasets.',
   '{"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0001, "batch_size": 4, "num_epochs": 3,
     "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.05, "warmup_steps": 100, "weight_decay": 0.01}', 10),
  ('balanced', 'Balanced', 'The default: rank 16, 5 epochs.',
   '{"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0002, "batch_size": 8, "num_epochs": 5,
     "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.1, "warmup_steps": 200, "weight_decay": 0.01}', 20),
  ('aggressive', 'Aggressive', 'Higher learning rate, rank 32, 10 epochs: large datasets, more cost.',
   '{"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0003, "batch_size": 16, "num_epochs": 10,
     "lora_rank": 32, "lora_alpha": 64, "lora_dropout": 0.1, "warmup_steps": 500, "weight_decay": 0.01}', 30),
  ('custom', 'Custom', 'Start from balanced values and set every hyperparameter yourself.',
   '{"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0002, "batch_size": 8, "num_epochs": 5,
     "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.1}', 40);
