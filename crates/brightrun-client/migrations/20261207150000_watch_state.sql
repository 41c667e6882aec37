-- When a job watcher last polled on this machine, per user: outcomes a list refresh cached after
-- that (`brightrun jobs list` while the app was closed) were never announced, and the next
-- watcher checks them against the alert claims.
create table watch_state (
    user_id   text primary key,
    polled_at text not null
) strict;
