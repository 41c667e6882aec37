-- The user's local preferences (download folder, budget, notifications, polling cadence): one
-- row, the preferences as JSON, read and written whole by brightrun_client::app::prefs.
create table preferences (
    id         integer primary key check (id = 1),
    body       text not null check (json_valid(body)),
    updated_at text not null
) strict;

-- The server's catalogue (GPU types, presets) as last fetched: it changes rarely, and a form
-- needs it at once, offline too. `body` is the list as JSON.
create table catalogue_cache (
    kind       text primary key check (kind in ('gpu_types', 'presets')),
    body       text not null check (json_valid(body)),
    fetched_at text not null
) strict;
