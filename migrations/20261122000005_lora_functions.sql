-- BrightRun LoRA training: the state transitions users may make, as functions called through
-- PostgREST (`POST /rest/v1/rpc/<name>` with a JSON object of named arguments).
--
-- Why functions: users have no INSERT privilege and may UPDATE only a few columns (see
-- 20261122000003_lora_access.sql). Everything that creates rows, changes a status or computes a
-- price happens here, where the server decides: ownership, validation, the cost estimate and the
-- price snapshot cannot be skipped or forged by a client.
--
-- Every public function here:
--   * is SECURITY DEFINER (runs as its owner, `postgres`, which owns the tables and so is not
--     subject to their RLS) and therefore checks ownership itself against auth.uid(). The one
--     read outside our tables, storage.objects in confirm_dataset_upload, relies on `postgres`
--     bypassing RLS there too: a superuser in brightrun-stack, BYPASSRLS on hosted Supabase;
--   * has `set search_path = ''` and qualifies every name, so a caller cannot substitute an
--     object of their own for one the function uses;
--   * is executable by `authenticated` only. PostgreSQL grants EXECUTE to PUBLIC on every new
--     function and the Supabase default privileges grant it to anon and service_role as well;
--     all of those are revoked at the end of this file.
--
-- Errors (PostgREST maps SQLSTATE to HTTP; the body carries code/message/details/hint):
--   22023 invalid_parameter_value  -> 400  bad argument (the message names it and the rule)
--   42501 insufficient_privilege   -> 401/403  no user in the token
--   PT404                          -> 404  no such row OF THE CALLER (another user's rows are
--                                          reported as not found, never as forbidden, so ids
--                                          cannot be probed)
--   PT409                          -> 409  the row is in a state that does not allow this
--   PT429                          -> 429  a per-user limit is reached

create schema if not exists lora_private;
comment on schema lora_private is
  'Internal helpers of the LoRA functions. Not exposed through PostgREST; only the function owner uses it.';
revoke all on schema lora_private from public;

-- --------------------------------------------------------------------------------------------
-- Internal helpers
-- --------------------------------------------------------------------------------------------

-- The caller's user id, or 42501 when the request carries no user.
create function lora_private.require_user()
returns uuid
language plpgsql
stable
set search_path = ''
as $$
declare
  uid uuid := auth.uid();
begin
  if uid is null then
    raise exception using errcode = '42501', message = 'not signed in: this function needs a user access token';
  end if;
  return uid;
end;
$$;

-- The cost model (PRODUCT.md "Cost model"; replaces the spec's flat 0.5 h per epoch, which
-- ignored the dataset):
--
--   training_hours  = tokens_per_epoch x epochs / (tokens_per_second_per_gpu x gpus x efficiency) / 3600
--   estimated_hours = training_hours + OVERHEAD_HOURS
--   estimated_cost  = estimated_hours x price_per_gpu_hour x gpus
--
-- Constants:
--   OVERHEAD_HOURS = 0.25. Fixed time billed per job regardless of size: provisioning the GPU
--     machine, downloading the base model (~15 GB for a 7B model in bf16), the final
--     evaluation, and saving and uploading the adapter. Every GPU of the job is held meanwhile,
--     so the overhead is billed for all of them.
--   efficiency = 0.9 ^ log2(gpus). Data-parallel training loses time to the gradient all-reduce;
--     we assume each doubling of the GPU count keeps 90 % of the per-GPU throughput: 1 GPU 1.0,
--     2 GPUs 0.90, 4 GPUs 0.81, 8 GPUs 0.729. (The spec used a flat 0.8 for any count > 1.)
--     So more GPUs finish sooner but cost somewhat more, as they do in reality.
--   tokens_per_second_per_gpu and price_per_gpu_hour come from public.gpu_types (catalogue data).
--   tokens_per_epoch is datasets.training_tokens, or total_tokens when the worker did not write
--     it (see the column comments in 20261122000002_lora_schema.sql).
-- Rounding: hours to 4 decimals, money to cents (training_jobs.estimated_total_cost is
-- DECIMAL(10,2)); the cost is computed from the unrounded hours.
create function lora_private.estimate_cost(
  tokens_per_epoch bigint,
  epochs integer,
  gpu_type text,
  price_per_gpu_hour numeric,
  tokens_per_second_per_gpu numeric,
  gpu_count integer
)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
declare
  overhead_hours constant numeric := 0.25;
  per_doubling_efficiency constant numeric := 0.9;
  efficiency numeric;
  effective_throughput numeric;
  training_hours numeric;
  total_hours numeric;
begin
  efficiency := pg_catalog.power(per_doubling_efficiency, pg_catalog.log(2.0, gpu_count::numeric));
  effective_throughput := tokens_per_second_per_gpu * gpu_count * efficiency;
  training_hours := (tokens_per_epoch::numeric * epochs) / effective_throughput / 3600;
  total_hours := training_hours + overhead_hours;
  return pg_catalog.jsonb_build_object(
    'tokens_per_epoch', tokens_per_epoch,
    'epochs', epochs,
    'total_tokens', tokens_per_epoch::numeric * epochs,
    'gpu_type', gpu_type,
    'gpu_count', gpu_count,
    'tokens_per_second_per_gpu', tokens_per_second_per_gpu,
    'scaling_efficiency', pg_catalog.round(efficiency, 4),
    'effective_tokens_per_second', pg_catalog.round(effective_throughput, 2),
    'training_hours', pg_catalog.round(training_hours, 4),
    'overhead_hours', overhead_hours,
    'estimated_hours', pg_catalog.round(total_hours, 4),
    'gpu_hours', pg_catalog.round(total_hours * gpu_count, 4),
    'price_per_gpu_hour', price_per_gpu_hour,
    'estimated_cost', pg_catalog.round(total_hours * price_per_gpu_hour * gpu_count, 2),
    'currency', 'USD'
  );
end;
$$;

-- The active catalogue row for a GPU type, with the count checked against it.
create function lora_private.gpu_offer(gpu_type text, gpu_count integer)
returns public.gpu_types
language plpgsql
stable
set search_path = ''
as $$
declare
  gpu public.gpu_types;
begin
  select g.* into gpu from public.gpu_types g where g.id = gpu_offer.gpu_type and g.active;
  if not found then
    raise exception using errcode = '22023',
      message = pg_catalog.format('unknown GPU type %L', gpu_offer.gpu_type),
      hint = (select 'available: ' || pg_catalog.string_agg(g.id, ', ' order by g.sort_order, g.id)
              from public.gpu_types g where g.active);
  end if;
  if gpu_offer.gpu_count is null or gpu_offer.gpu_count < 1 or gpu_offer.gpu_count > gpu.max_gpus then
    raise exception using errcode = '22023',
      message = pg_catalog.format('gpu_count must be between 1 and %s for %s, got %s',
                                  gpu.max_gpus, gpu.id, coalesce(gpu_offer.gpu_count::text, 'null'));
  end if;
  return gpu;
end;
$$;

-- The caller's dataset usable for an estimate or a job: it exists, is theirs, is not deleted and
-- has its size in tokens; with require_ready, it is also validated and training-ready.
-- create_training_job locks the row FOR SHARE before calling this, so delete_dataset (FOR UPDATE)
-- cannot run between the check and the job insert.
create function lora_private.dataset_for_training(uid uuid, dataset_id uuid, require_ready boolean)
returns public.datasets
language plpgsql
stable
set search_path = ''
as $$
declare
  ds public.datasets;
begin
  select d.* into ds from public.datasets d
    where d.id = dataset_for_training.dataset_id and d.user_id = dataset_for_training.uid;
  if not found then
    raise exception using errcode = 'PT404',
      message = pg_catalog.format('dataset %s not found', coalesce(dataset_for_training.dataset_id::text, 'null'));
  end if;
  if ds.deleted_at is not null then
    raise exception using errcode = 'PT409',
      message = pg_catalog.format('dataset %s has been deleted', ds.id);
  end if;
  if require_ready and not (ds.status = 'ready' and ds.training_ready) then
    raise exception using errcode = 'PT409',
      message = pg_catalog.format('dataset %s is not ready for training (status: %s)', ds.id, ds.status),
      hint = case ds.status
        when 'uploading' then 'finish the upload and call confirm_dataset_upload'
        when 'validating' then 'wait until validation finishes'
        when 'error' then 'the dataset failed validation; see validation_errors'
        else 'the dataset passed validation but is not training-ready; see validation_errors'
      end;
  end if;
  if coalesce(ds.training_tokens, ds.total_tokens) is null then
    raise exception using errcode = 'PT409',
      message = pg_catalog.format('dataset %s has no token statistics yet (status: %s)', ds.id, ds.status),
      hint = 'the estimate needs the dataset size in tokens, which validation computes; wait until it finishes';
  end if;
  return ds;
end;
$$;

-- One number-valued hyperparameter: `value` must be a JSON number within [min, max] (or
-- (min, max] when min_exclusive), and a whole number when whole.
create function lora_private.check_number(
  key text, value jsonb, min numeric, max numeric, min_exclusive boolean, whole boolean
)
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
  n numeric;
  range text := pg_catalog.format('%s%s, %s]', case when min_exclusive then '(' else '[' end, min, max);
begin
  if pg_catalog.jsonb_typeof(value) <> 'number' then
    raise exception using errcode = '22023',
      message = pg_catalog.format('hyperparameters.%s must be a %s in %s, got %s',
                                  key, case when whole then 'whole number' else 'number' end, range, value);
  end if;
  n := (value #>> '{}')::numeric;
  if (whole and n <> pg_catalog.trunc(n)) or n > max or n < min or (min_exclusive and n = min) then
    raise exception using errcode = '22023',
      message = pg_catalog.format('hyperparameters.%s must be a %s in %s, got %s',
                                  key, case when whole then 'whole number' else 'number' end, range, value);
  end if;
end;
$$;

-- A complete HyperparameterConfig (spec 004) within sane bounds. Unknown keys are refused, so a
-- typo ("learning_rte") is an error rather than a silently ignored setting.
create function lora_private.check_hyperparameters(hp jsonb)
returns void
language plpgsql
immutable
set search_path = ''
as $$
declare
  k text;
  v jsonb;
  required constant text[] := array['base_model', 'learning_rate', 'batch_size', 'num_epochs',
                                    'lora_rank', 'lora_alpha', 'lora_dropout'];
begin
  for k, v in select e.key, e.value from pg_catalog.jsonb_each(hp) e loop
    case k
      when 'base_model' then
        if pg_catalog.jsonb_typeof(v) <> 'string' or (v #>> '{}') !~ '^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$' then
          raise exception using errcode = '22023',
            message = pg_catalog.format('hyperparameters.base_model must be a model id like "mistralai/Mistral-7B-v0.1", got %s', v);
        end if;
      -- Bounds: wide enough for every real LoRA recipe, narrow enough to catch unit mistakes
      -- (a learning rate of 2 instead of 2e-4, 1000 epochs) before they cost GPU hours.
      when 'learning_rate' then perform lora_private.check_number(k, v, 0, 0.01, true, false);
      when 'batch_size' then perform lora_private.check_number(k, v, 1, 256, false, true);
      when 'num_epochs' then perform lora_private.check_number(k, v, 1, 100, false, true);
      when 'lora_rank' then perform lora_private.check_number(k, v, 1, 256, false, true);
      when 'lora_alpha' then perform lora_private.check_number(k, v, 1, 1024, false, true);
      when 'lora_dropout' then perform lora_private.check_number(k, v, 0, 0.9, false, false);
      when 'warmup_steps' then perform lora_private.check_number(k, v, 0, 100000, false, true);
      when 'weight_decay' then perform lora_private.check_number(k, v, 0, 1, false, false);
      when 'gradient_accumulation_steps' then perform lora_private.check_number(k, v, 1, 1024, false, true);
      when 'max_grad_norm' then perform lora_private.check_number(k, v, 0, 100, true, false);
      else
        raise exception using errcode = '22023',
          message = pg_catalog.format('unknown hyperparameter %L', k),
          hint = 'known: base_model, learning_rate, batch_size, num_epochs, lora_rank, lora_alpha, '
                 'lora_dropout, warmup_steps, weight_decay, gradient_accumulation_steps, max_grad_norm';
    end case;
  end loop;
  for k in select unnest(required) loop
    if not hp ? k then
      raise exception using errcode = '22023', message = pg_catalog.format('hyperparameters.%s is required', k);
    end if;
  end loop;
end;
$$;

revoke all on all functions in schema lora_private from public, anon, authenticated, service_role;

-- --------------------------------------------------------------------------------------------
-- Datasets
-- --------------------------------------------------------------------------------------------

-- Step 1 of an upload: registers the dataset and returns its row, whose storage_path
-- `{user_id}/{dataset_id}/{file_name}` in bucket storage_bucket is where the client uploads
-- (the folder policy on storage.objects admits exactly the caller's folder).
create function public.create_dataset(
  name text,
  file_name text,
  file_size bigint,
  description text default null,
  format text default null
)
returns public.datasets
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  new_id uuid := pg_catalog.gen_random_uuid();
  chosen_format text := coalesce(create_dataset.format, 'brightrun_lora_v4');
  clean_name text := pg_catalog.btrim(create_dataset.name);
  size_limit bigint;
  ds public.datasets;
begin
  if clean_name is null or clean_name = '' or pg_catalog.char_length(clean_name) > 200 then
    raise exception using errcode = '22023', message = 'name must be 1 to 200 characters';
  end if;
  if pg_catalog.char_length(create_dataset.description) > 10000 then
    raise exception using errcode = '22023', message = 'description must be at most 10000 characters';
  end if;
  if chosen_format not in ('brightrun_lora_v4', 'brightrun_lora_v3') then
    raise exception using errcode = '22023',
      message = pg_catalog.format('unknown dataset format %L', chosen_format),
      hint = 'use brightrun_lora_v4 (OpenAI "messages") or brightrun_lora_v3 (ShareGPT "conversations")';
  end if;

  -- The file name becomes the last segment of a storage key: it must not add folders, escape
  -- the dataset's folder, or hold characters that need escaping in URLs or file systems.
  if create_dataset.file_name is null or create_dataset.file_name = ''
     or pg_catalog.char_length(create_dataset.file_name) > 255 then
    raise exception using errcode = '22023', message = 'file_name must be 1 to 255 characters';
  end if;
  if pg_catalog.strpos(create_dataset.file_name, '/') > 0 or pg_catalog.strpos(create_dataset.file_name, '\') > 0 then
    raise exception using errcode = '22023',
      message = pg_catalog.format('file_name %L must not contain "/" or "\": give the file name without its folder', create_dataset.file_name);
  end if;
  if pg_catalog.strpos(create_dataset.file_name, '..') > 0 then
    raise exception using errcode = '22023',
      message = pg_catalog.format('file_name %L must not contain ".."', create_dataset.file_name);
  end if;
  if create_dataset.file_name !~ '^[A-Za-z0-9_][A-Za-z0-9._ ()+-]*$' or create_dataset.file_name ~ '[ .]$' then
    raise exception using errcode = '22023',
      message = pg_catalog.format('file_name %L has characters that are not allowed', create_dataset.file_name),
      hint = 'use letters, digits, spaces and . _ - ( ) +; start with a letter, digit or _; do not end with a space or "."';
  end if;

  -- The bucket's own limit is the single source of truth (500 MB as created).
  select b.file_size_limit into size_limit from storage.buckets b where b.id = 'lora-datasets';
  size_limit := coalesce(size_limit, 524288000);
  if create_dataset.file_size is null or create_dataset.file_size < 1 or create_dataset.file_size > size_limit then
    raise exception using errcode = '22023',
      message = pg_catalog.format('file_size must be between 1 and %s bytes (%s MB), got %s',
                                  size_limit, size_limit / 1048576, coalesce(create_dataset.file_size::text, 'null'));
  end if;

  insert into public.datasets (id, user_id, name, description, format, status, storage_bucket, storage_path, file_name, file_size)
  values (new_id, uid, clean_name, create_dataset.description, chosen_format, 'uploading', 'lora-datasets',
          uid::text || '/' || new_id::text || '/' || create_dataset.file_name,
          create_dataset.file_name, create_dataset.file_size)
  returning * into ds;
  return ds;
end;
$$;

-- Step 3 of an upload: the file is in storage; hand the dataset to the worker for validation
-- (status 'validating'). Idempotent: confirming a dataset that is already validating or ready
-- returns it unchanged. file_size is corrected to the stored object's size.
create function public.confirm_dataset_upload(dataset_id uuid)
returns public.datasets
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  ds public.datasets;
  object_metadata jsonb;
  stored_size bigint;
begin
  select d.* into ds from public.datasets d
    where d.id = confirm_dataset_upload.dataset_id and d.user_id = uid and d.deleted_at is null
    for update;
  if not found then
    raise exception using errcode = 'PT404',
      message = pg_catalog.format('dataset %s not found', coalesce(confirm_dataset_upload.dataset_id::text, 'null'));
  end if;

  if ds.status in ('validating', 'ready') then
    return ds;
  elsif ds.status = 'error' then
    raise exception using errcode = 'PT409',
      message = pg_catalog.format('dataset %s failed validation and cannot be confirmed again', ds.id),
      hint = 'fix the file and create a new dataset';
  end if;

  select o.metadata into object_metadata from storage.objects o
    where o.bucket_id = ds.storage_bucket and o.name = ds.storage_path;
  if not found then
    raise exception using errcode = 'PT409',
      message = pg_catalog.format('no uploaded file at %s/%s', ds.storage_bucket, ds.storage_path),
      hint = 'upload the file to storage_path in storage_bucket, then confirm again';
  end if;
  if pg_catalog.jsonb_typeof(object_metadata -> 'size') = 'number' then
    stored_size := (object_metadata ->> 'size')::bigint;
    if stored_size < 1 then
      raise exception using errcode = '22023',
        message = pg_catalog.format('the uploaded file %s/%s is empty', ds.storage_bucket, ds.storage_path);
    end if;
  end if;

  update public.datasets d
    set status = 'validating', file_size = coalesce(stored_size, d.file_size), validation_errors = null
    where d.id = ds.id
    returning * into ds;
  return ds;
end;
$$;

-- Soft delete: the row stays (jobs and models refer to it) with deleted_at set, and it can no
-- longer be confirmed, estimated or trained on. Refused while an unfinished job uses the dataset,
-- because the worker reads the file. Deleting the file itself is the client's call to Storage
-- (the folder policy allows it). Idempotent.
create function public.delete_dataset(dataset_id uuid)
returns public.datasets
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  ds public.datasets;
  active_jobs text;
begin
  select d.* into ds from public.datasets d
    where d.id = delete_dataset.dataset_id and d.user_id = uid
    for update;
  if not found then
    raise exception using errcode = 'PT404',
      message = pg_catalog.format('dataset %s not found', coalesce(delete_dataset.dataset_id::text, 'null'));
  end if;
  if ds.deleted_at is not null then
    return ds;
  end if;

  select pg_catalog.string_agg(j.id::text, ', ' order by j.created_at) into active_jobs
    from public.training_jobs j
    where j.dataset_id = ds.id and j.status in ('queued', 'initializing', 'running');
  if active_jobs is not null then
    raise exception using errcode = 'PT409',
      message = pg_catalog.format('dataset %s is used by training jobs that have not finished', ds.id),
      detail = 'jobs: ' || active_jobs,
      hint = 'cancel the jobs or wait until they finish, then delete the dataset';
  end if;

  update public.datasets d set deleted_at = pg_catalog.now(), training_ready = false
    where d.id = ds.id
    returning * into ds;
  return ds;
end;
$$;

-- --------------------------------------------------------------------------------------------
-- Cost estimate and jobs
-- --------------------------------------------------------------------------------------------

-- What a job on this dataset would cost: the formula and constants are documented at
-- lora_private.estimate_cost. The number of epochs is `epochs`, or the preset's num_epochs when
-- `epochs` is null. Returns the inputs with the outputs, so the client can show why.
create function public.estimate_training_cost(
  dataset_id uuid,
  gpu_type text,
  gpu_count integer default 1,
  epochs integer default null,
  preset_id text default null
)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  ds public.datasets := lora_private.dataset_for_training(uid, estimate_training_cost.dataset_id, false);
  gpu public.gpu_types := lora_private.gpu_offer(estimate_training_cost.gpu_type, estimate_training_cost.gpu_count);
  preset public.training_presets;
  chosen_epochs integer := estimate_training_cost.epochs;
begin
  if estimate_training_cost.preset_id is not null then
    select p.* into preset from public.training_presets p where p.id = estimate_training_cost.preset_id and p.active;
    if not found then
      raise exception using errcode = '22023',
        message = pg_catalog.format('unknown preset %L', estimate_training_cost.preset_id);
    end if;
    chosen_epochs := coalesce(chosen_epochs, (preset.hyperparameters ->> 'num_epochs')::integer);
  end if;
  if chosen_epochs is null then
    raise exception using errcode = '22023', message = 'give epochs or a preset_id to take them from';
  end if;
  if chosen_epochs < 1 or chosen_epochs > 100 then
    raise exception using errcode = '22023',
      message = pg_catalog.format('epochs must be between 1 and 100, got %s', chosen_epochs);
  end if;

  return lora_private.estimate_cost(coalesce(ds.training_tokens, ds.total_tokens), chosen_epochs, gpu.id,
                                    gpu.price_per_gpu_hour, gpu.tokens_per_second_per_gpu,
                                    estimate_training_cost.gpu_count)
         || pg_catalog.jsonb_build_object('dataset_id', ds.id, 'preset_id', estimate_training_cost.preset_id);
end;
$$;

-- Queue a training job. The dataset must be the caller's, ready and training-ready, not deleted.
-- The hyperparameters are the preset's, overridden key by key by `hyperparameters`, and are
-- validated. The estimate and the GPU's $/GPU-hour are computed here and SNAPSHOTTED on the job
-- (estimated_total_cost, cost_per_gpu_hour, gpu_config, cost_estimate): a later catalogue price
-- change does not change what this job costs.
create function public.create_training_job(
  dataset_id uuid,
  preset_id text,
  gpu_type text,
  gpu_count integer default 1,
  hyperparameters jsonb default null
)
returns public.training_jobs
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  -- At most this many unfinished (queued, initializing, running) jobs per user: a runaway
  -- script cannot fill the queue and run up a bill.
  max_unfinished_jobs constant integer := 10;
  uid uuid := lora_private.require_user();
  preset public.training_presets;
  ds public.datasets;
  gpu public.gpu_types;
  hp jsonb;
  epochs integer;
  estimate jsonb;
  steps_per_epoch integer;
  unfinished integer;
  job public.training_jobs;
begin
  select p.* into preset from public.training_presets p where p.id = create_training_job.preset_id and p.active;
  if not found then
    raise exception using errcode = '22023',
      message = pg_catalog.format('unknown preset %L', create_training_job.preset_id),
      hint = (select 'available: ' || pg_catalog.string_agg(p.id, ', ' order by p.sort_order, p.id)
              from public.training_presets p where p.active);
  end if;
  if create_training_job.hyperparameters is not null
     and pg_catalog.jsonb_typeof(create_training_job.hyperparameters) <> 'object' then
    raise exception using errcode = '22023', message = 'hyperparameters must be a JSON object';
  end if;
  hp := preset.hyperparameters || coalesce(create_training_job.hyperparameters, '{}'::jsonb);
  perform lora_private.check_hyperparameters(hp);
  epochs := (hp ->> 'num_epochs')::integer;

  gpu := lora_private.gpu_offer(create_training_job.gpu_type, create_training_job.gpu_count);
  perform 1 from public.datasets d
    where d.id = create_training_job.dataset_id and d.user_id = uid
    for share;
  ds := lora_private.dataset_for_training(uid, create_training_job.dataset_id, true);

  select pg_catalog.count(*) into unfinished from public.training_jobs j
    where j.user_id = uid and j.status in ('queued', 'initializing', 'running');
  if unfinished >= max_unfinished_jobs then
    raise exception using errcode = 'PT429',
      message = pg_catalog.format('you already have %s unfinished training jobs (limit %s)', unfinished, max_unfinished_jobs),
      hint = 'wait for a job to finish or cancel one';
  end if;

  estimate := lora_private.estimate_cost(coalesce(ds.training_tokens, ds.total_tokens), epochs, gpu.id,
                                         gpu.price_per_gpu_hour, gpu.tokens_per_second_per_gpu,
                                         create_training_job.gpu_count)
              || pg_catalog.jsonb_build_object('dataset_id', ds.id, 'preset_id', preset.id);
  if ds.total_training_pairs is not null then
    steps_per_epoch := greatest(1, pg_catalog.ceil(ds.total_training_pairs::numeric
      / ((hp ->> 'batch_size')::integer * coalesce((hp ->> 'gradient_accumulation_steps')::integer, 1))))::integer;
  end if;

  insert into public.training_jobs (
    user_id, dataset_id, preset_id, hyperparameters, gpu_config, status, current_stage,
    total_epochs, total_steps, estimated_total_cost, estimated_duration_hours, estimated_completion_at,
    cost_per_gpu_hour, num_gpus, cost_estimate
  ) values (
    uid, ds.id, preset.id, hp,
    pg_catalog.jsonb_build_object('gpu_type', gpu.id, 'num_gpus', create_training_job.gpu_count,
                                  'gpu_memory_gb', gpu.memory_gb * create_training_job.gpu_count,
                                  'cost_per_gpu_hour', gpu.price_per_gpu_hour),
    'queued', 'queued',
    epochs, steps_per_epoch * epochs, (estimate ->> 'estimated_cost')::numeric,
    (estimate ->> 'estimated_hours')::numeric,
    pg_catalog.now() + pg_catalog.make_interval(secs => (estimate ->> 'estimated_hours')::double precision * 3600),
    gpu.price_per_gpu_hour, create_training_job.gpu_count, estimate
  )
  returning * into job;
  return job;
end;
$$;

-- Cancel a job. queued -> cancelled at once (no worker holds it; the claim query skips the row
-- while it is locked here and sees the new status after). initializing/running -> sets
-- cancel_requested_at; the worker holding the job stops at its next heartbeat and writes the
-- final status. Cancelling an already cancelled job returns it unchanged (a double click is not
-- an error); a completed or failed job cannot be cancelled (409).
create function public.cancel_training_job(job_id uuid)
returns public.training_jobs
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  job public.training_jobs;
begin
  select j.* into job from public.training_jobs j
    where j.id = cancel_training_job.job_id and j.user_id = uid
    for update;
  if not found then
    raise exception using errcode = 'PT404',
      message = pg_catalog.format('training job %s not found', coalesce(cancel_training_job.job_id::text, 'null'));
  end if;

  case job.status
    when 'queued' then
      update public.training_jobs j
        set status = 'cancelled', completed_at = pg_catalog.now(),
            cancel_requested_at = coalesce(j.cancel_requested_at, pg_catalog.now()),
            lease_expires_at = null
        where j.id = job.id
        returning * into job;
    when 'initializing', 'running' then
      update public.training_jobs j
        set cancel_requested_at = coalesce(j.cancel_requested_at, pg_catalog.now())
        where j.id = job.id
        returning * into job;
    when 'cancelled' then
      null;
    else
      raise exception using errcode = 'PT409',
        message = pg_catalog.format('training job %s has already %s and cannot be cancelled', job.id, job.status);
  end case;
  return job;
end;
$$;

-- --------------------------------------------------------------------------------------------
-- Notifications and costs
-- --------------------------------------------------------------------------------------------

-- Mark the caller's notifications read: those in `ids`, or all of them when `ids` is null.
-- Returns how many changed from unread to read. Ids of other users' notifications are ignored.
create function public.mark_notifications_read(ids uuid[] default null)
returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  changed integer;
begin
  update public.notifications n set read = true
    where n.user_id = uid and not n.read
      and (mark_notifications_read.ids is null or n.id = any (mark_notifications_read.ids));
  get diagnostics changed = row_count;
  return changed;
end;
$$;

-- The caller's costs for one calendar month (`month` is any day in it; null = the current month,
-- in the session time zone, UTC on Supabase):
--   { month, currency, total, by_type: {compute, storage, data_transfer},
--     by_job: [{job_id, amount}], by_gpu: [{gpu_type, amount, gpu_hours}] }
-- by_gpu groups the records of jobs by the GPU type snapshotted on the job; gpu_hours sums the
-- records' details.gpu_hours.
create function public.monthly_cost_summary(month date default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  period date := pg_catalog.date_trunc('month', coalesce(monthly_cost_summary.month, current_date))::date;
  result jsonb;
begin
  select pg_catalog.jsonb_build_object(
    'month', period,
    'currency', 'USD',
    'total', coalesce((select pg_catalog.sum(c.amount) from public.cost_records c
                        where c.user_id = uid and c.billing_period = period), 0),
    'by_type', pg_catalog.jsonb_build_object('compute', 0, 'storage', 0, 'data_transfer', 0)
      || coalesce((select pg_catalog.jsonb_object_agg(t.cost_type, t.amount)
                   from (select c.cost_type, pg_catalog.sum(c.amount) as amount from public.cost_records c
                          where c.user_id = uid and c.billing_period = period
                          group by c.cost_type) t), '{}'::jsonb),
    'by_job', coalesce((select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('job_id', t.job_id, 'amount', t.amount)
                                                    order by t.amount desc, t.job_id)
                        from (select c.job_id, pg_catalog.sum(c.amount) as amount from public.cost_records c
                               where c.user_id = uid and c.billing_period = period and c.job_id is not null
                               group by c.job_id) t), '[]'::jsonb),
    'by_gpu', coalesce((select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                 'gpu_type', t.gpu_type, 'amount', t.amount, 'gpu_hours', t.gpu_hours)
                               order by t.amount desc, t.gpu_type)
                        from (select j.gpu_config ->> 'gpu_type' as gpu_type, pg_catalog.sum(c.amount) as amount,
                                     coalesce(pg_catalog.sum(case when pg_catalog.jsonb_typeof(c.details -> 'gpu_hours') = 'number'
                                                                  then (c.details ->> 'gpu_hours')::numeric end), 0) as gpu_hours
                                from public.cost_records c
                                join public.training_jobs j on j.id = c.job_id
                               where c.user_id = uid and c.billing_period = period
                               group by j.gpu_config ->> 'gpu_type') t), '[]'::jsonb)
  ) into result;
  return result;
end;
$$;

-- --------------------------------------------------------------------------------------------
-- Who may call them: signed-in users only.
-- --------------------------------------------------------------------------------------------
revoke all on function
  public.create_dataset(text, text, bigint, text, text),
  public.confirm_dataset_upload(uuid),
  public.delete_dataset(uuid),
  public.estimate_training_cost(uuid, text, integer, integer, text),
  public.create_training_job(uuid, text, text, integer, jsonb),
  public.cancel_training_job(uuid),
  public.mark_notifications_read(uuid[]),
  public.monthly_cost_summary(date)
from public, anon, authenticated, service_role;

grant execute on function
  public.create_dataset(text, text, bigint, text, text),
  public.confirm_dataset_upload(uuid),
  public.delete_dataset(uuid),
  public.estimate_training_cost(uuid, text, integer, integer, text),
  public.create_training_job(uuid, text, text, integer, jsonb),
  public.cancel_training_job(uuid),
  public.mark_notifications_read(uuid[]),
  public.monthly_cost_summary(date)
to authenticated;
