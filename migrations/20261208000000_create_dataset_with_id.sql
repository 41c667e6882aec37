-- Pipelined uploads: a client sends a dataset's bytes while it is still checking the file, and
-- registers the dataset only when the check has passed, just before the last TUS chunk (the one
-- that makes the object appear). A file that fails the check therefore leaves no dataset row
-- and no stored object behind: the client terminates its unfinished TUS upload and that is all.
--
-- For that the client must know the object's path before the row exists, so it chooses the
-- dataset's id. create_dataset gains `id` (default null: the server chooses, as before). The
-- path stays the server's rule: {user_id}/{dataset_id}/{file_name}, returned in the row, which
-- the client checks against the path it uploaded to.
--
-- With an id the call is idempotent: calling it again for the caller's own dataset that is
-- still `uploading` with the same file name and size returns that row. A client that died
-- between the row committing and the answer arriving simply calls it again. Any other use of
-- an existing id is refused (23505 → 409), whoever's row it is.

drop function public.create_dataset(text, text, bigint, text, text);

create function public.create_dataset(
  name text,
  file_name text,
  file_size bigint,
  description text default null,
  format text default null,
  id uuid default null
)
returns public.datasets
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  uid uuid := lora_private.require_user();
  new_id uuid := coalesce(create_dataset.id, pg_catalog.gen_random_uuid());
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

  if create_dataset.id is not null then
    select d.* into ds from public.datasets d where d.id = create_dataset.id for update;
    if found then
      if ds.user_id = uid and ds.status = 'uploading' and ds.deleted_at is null
         and ds.file_name = create_dataset.file_name and ds.file_size = create_dataset.file_size then
        return ds;
      end if;
      raise exception using errcode = '23505',
        message = pg_catalog.format('dataset id %s is already in use', create_dataset.id),
        hint = 'choose a new random id, or leave id out and let the server choose one';
    end if;
  end if;

  insert into public.datasets (id, user_id, name, description, format, status, storage_bucket, storage_path, file_name, file_size)
  values (new_id, uid, clean_name, create_dataset.description, chosen_format, 'uploading', 'lora-datasets',
          uid::text || '/' || new_id::text || '/' || create_dataset.file_name,
          create_dataset.file_name, create_dataset.file_size)
  returning * into ds;
  return ds;
end;
$$;

revoke all on function public.create_dataset(text, text, bigint, text, text, uuid)
  from public, anon, authenticated, service_role;
grant execute on function public.create_dataset(text, text, bigint, text, text, uuid) to authenticated;
