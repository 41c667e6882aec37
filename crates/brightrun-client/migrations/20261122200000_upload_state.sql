-- Dataset uploads in progress (brightrun_client::transfer::upload), so an upload resumes after a
-- crash, a network cut or a restart without creating a second dataset row.
--
-- One row per (project, user, file path). The file fingerprint (size, mtime, SHA-256 of the whole
-- file, computed in the same pass as local validation) tells whether the file is still the one
-- being uploaded; when it changed, the old upload is abandoned and a new dataset is made.
-- Never holds a token: the signed upload token lives in memory only and is fetched again after a
-- restart (one request), so there is no token expiry to keep either.
create table upload_state (
  id integer primary key,
  project_url text not null,
  user_id text not null,
  file_path text not null,
  file_size integer not null check (file_size >= 0),
  file_mtime_ns integer not null,
  file_sha256 text not null,
  dataset_name text not null,
  -- 'creating'  create_dataset was (maybe) called; dataset_id is unknown until it answers
  -- 'uploading' the dataset exists; bytes are going to storage_path through tus_url
  -- 'uploaded'  every byte is stored; confirm_dataset_upload remains
  -- 'confirmed' done; kept so that running the same upload again finds the dataset
  stage text not null check (stage in ('creating', 'uploading', 'uploaded', 'confirmed')),
  dataset_id text,
  storage_bucket text,
  storage_path text,
  tus_url text,
  -- The last offset the server confirmed (PATCH answer or HEAD).
  confirmed_offset integer not null default 0 check (confirmed_offset >= 0),
  -- Unix seconds.
  started_at integer not null,
  updated_at integer not null,
  unique (project_url, user_id, file_path)
);
