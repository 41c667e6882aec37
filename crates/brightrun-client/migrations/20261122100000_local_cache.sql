-- The client's local database (SQLite): list caches and alert dedupe. Upload state is in its own
-- migration files (20261122200000+).
--
-- Never holds a token: the refresh token lives in the OS keychain, the access token in memory.
-- Timestamps are RFC 3339 UTC text.

-- The last rows of a list the server sent, shown at once on start (marked stale until refreshed)
-- so the app is useful offline. One row per cached item; `body` is the item as JSON.
create table list_cache (
    user_id    text not null,
    kind       text not null check (kind in ('dataset', 'job')),
    id         text not null,
    body       text not null check (json_valid(body)),
    -- The server's updated_at of the item: the incremental refresh cursor is its maximum.
    updated_at text not null,
    fetched_at text not null,
    primary key (user_id, kind, id)
) strict;

-- When each list was last refreshed in full or incrementally.
create table list_cache_state (
    user_id    text not null,
    kind       text not null check (kind in ('dataset', 'job')),
    fetched_at text not null,
    primary key (user_id, kind)
) strict;

-- Alerts already raised, by `job:{id}:{status}`: a restart never repeats an alert.
create table alert_dedupe (
    key          text primary key,
    announced_at text not null
) strict;
