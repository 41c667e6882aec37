-- BrightRun LoRA training: Storage buckets and folder-per-user policies on storage.objects.
--
-- Buckets are rows in storage.buckets (what the Supabase dashboard writes), so the limits are in
-- the migration rather than in a setup guide someone has to follow by hand. Both buckets are
-- private: every download goes through a signed URL or an authenticated request that passes
-- the SELECT policies below.
--
-- Layout (spec 002):
--   lora-datasets/{user_id}/{dataset_id}/{file_name}    written by the user (create_dataset
--                                                       returns the path), read by the worker
--   lora-models/{user_id}/{job_id}/...                  written by the worker (service_role),
--                                                       read by the user
-- A policy matches only when the first folder of the object name is the caller's own id, so a
-- user can never list, read, overwrite or delete another user's files, even knowing the path.

insert into storage.buckets (id, name, public, file_size_limit, allowed_mime_types)
values
  -- 500 MB. JSONL datasets under the MIME types clients and browsers actually send for .jsonl /
  -- .json / .txt. application/octet-stream is deliberately NOT allowed: a dataset must be
  -- declared as text, so binaries dropped by mistake are refused at upload time (415).
  ('lora-datasets', 'lora-datasets', false, 524288000,
   array['application/json', 'application/jsonl', 'application/x-jsonlines', 'application/x-ndjson', 'text/plain']),
  -- 5 GB. Adapter weights (safetensors: octet-stream), archives, and JSON configs/tokenizers.
  ('lora-models', 'lora-models', false, 5368709120,
   array['application/octet-stream', 'application/x-tar', 'application/gzip', 'application/json'])
on conflict (id) do update
  set public = excluded.public,
      file_size_limit = excluded.file_size_limit,
      allowed_mime_types = excluded.allowed_mime_types;

-- lora-datasets: the user manages files in their own folder. UPDATE is needed for upserts
-- (x-upsert: true, and TUS resumption re-checks INSERT + SELECT + UPDATE).
create policy "lora-datasets: users insert into own folder" on storage.objects
  for insert to authenticated
  with check (bucket_id = 'lora-datasets' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "lora-datasets: users read own folder" on storage.objects
  for select to authenticated
  using (bucket_id = 'lora-datasets' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "lora-datasets: users update own folder" on storage.objects
  for update to authenticated
  using (bucket_id = 'lora-datasets' and (storage.foldername(name))[1] = (select auth.uid())::text)
  with check (bucket_id = 'lora-datasets' and (storage.foldername(name))[1] = (select auth.uid())::text);
create policy "lora-datasets: users delete from own folder" on storage.objects
  for delete to authenticated
  using (bucket_id = 'lora-datasets' and (storage.foldername(name))[1] = (select auth.uid())::text);

-- lora-models: read only. The spec let users upload and delete model files; then a user could
-- replace a trained adapter with anything while model_artifacts still vouches for it (and its
-- recorded SHA-256). Only the worker writes here, with service_role, which bypasses RLS.
create policy "lora-models: users read own folder" on storage.objects
  for select to authenticated
  using (bucket_id = 'lora-models' and (storage.foldername(name))[1] = (select auth.uid())::text);
