//! The local SQLite database: upload state, list caches, notification dedupe. Its schema lives in
//! `crates/brightrun-client/migrations/` (sqlx, applied on open). Never holds a token.
//!
//! Nothing here takes a [`crate::Secret`]: what is stored are rows the server sent (which carry no
//! credentials) and dedupe keys.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use brightrun_core::{Dataset, JobStatus, TrainingJob};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The migrations in `crates/brightrun-client/migrations`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The local database of one installation. Cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct LocalDb {
    pool: SqlitePool,
}

/// A cached list: the items, and when the list was last refreshed (`None`: never). The UI shows
/// it at once and marks it stale until a refresh succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedList<T> {
    pub items: Vec<T>,
    pub fetched_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CacheKind {
    Dataset,
    Job,
}

impl CacheKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Job => "job",
        }
    }
}

fn text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(value: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Protocol(format!("local timestamp {value:?}: {e}")))
}

/// The dedupe key of a job's terminal alert: `job:{id}:{status}`.
pub fn alert_key(job_id: Uuid, status: &JobStatus) -> String {
    format!("job:{job_id}:{status}")
}

impl LocalDb {
    /// Opens (creating if needed) the database at `path` in WAL mode and applies the migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses at most the last transactions on power loss, never
            // consistency; every write here can be redone from the server.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // The database is a small cache: 512 KiB of pages per connection, not SQLite's
            // 2 MiB (the desktop app keeps it open for days).
            .pragma("cache_size", "-512");
        Self::connect(options).await
    }

    /// A private database in memory (tests, `--no-cache`).
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?.foreign_keys(true);
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self> {
        let in_memory = options.get_filename().as_os_str() == ":memory:";
        let pool = SqlitePoolOptions::new()
            // One connection for an in-memory database: each connection would get its own.
            .max_connections(if in_memory { 1 } else { 4 })
            // Connections beyond the one the watcher keeps busy close when idle, with their
            // page caches and threads.
            .idle_timeout((!in_memory).then_some(Duration::from_secs(30)))
            .connect_with(options)
            .await?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| Error::LocalDb(e.into()))?;
        Ok(Self { pool })
    }

    /// The pool, for modules that keep their own tables here (upload state).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // -------------------------------------------------------------------------------------------
    // List caches
    // -------------------------------------------------------------------------------------------

    async fn put<'a, T: Serialize + 'a>(
        &self,
        user_id: Uuid,
        kind: CacheKind,
        items: Vec<(Uuid, DateTime<Utc>, &'a T)>,
        replace_all: bool,
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        self.put_claiming(user_id, kind, items, replace_all, fetched_at, &[])
            .await
            .map(|_| ())
    }

    /// [`LocalDb::put`] and, in the same transaction, [`LocalDb::claim_alert`] for every key:
    /// either the cache and the claims are written, or neither is. Returns whether each key was
    /// claimed now.
    async fn put_claiming<'a, T: Serialize + 'a>(
        &self,
        user_id: Uuid,
        kind: CacheKind,
        items: Vec<(Uuid, DateTime<Utc>, &'a T)>,
        replace_all: bool,
        fetched_at: DateTime<Utc>,
        alert_keys: &[String],
    ) -> Result<Vec<bool>> {
        let user = user_id.to_string();
        let fetched = text(fetched_at);
        let mut tx = self.pool.begin().await?;
        let mut claimed = Vec::with_capacity(alert_keys.len());
        for key in alert_keys {
            claimed.push(insert_claim(&mut tx, key, &fetched).await?);
        }
        if replace_all {
            sqlx::query("delete from list_cache where user_id = ? and kind = ?")
                .bind(&user)
                .bind(kind.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for (id, updated_at, item) in items {
            let body = serde_json::to_string(item)
                .map_err(|e| Error::Protocol(format!("caching {}: {e}", kind.as_str())))?;
            sqlx::query(
                "insert into list_cache (user_id, kind, id, body, updated_at, fetched_at)
                 values (?, ?, ?, ?, ?, ?)
                 on conflict (user_id, kind, id) do update
                   set body = excluded.body, updated_at = excluded.updated_at,
                       fetched_at = excluded.fetched_at",
            )
            .bind(&user)
            .bind(kind.as_str())
            .bind(id.to_string())
            .bind(body)
            .bind(text(updated_at))
            .bind(&fetched)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "insert into list_cache_state (user_id, kind, fetched_at) values (?, ?, ?)
             on conflict (user_id, kind) do update set fetched_at = excluded.fetched_at",
        )
        .bind(&user)
        .bind(kind.as_str())
        .bind(&fetched)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn remove(&self, user_id: Uuid, kind: CacheKind, ids: &[Uuid]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("delete from list_cache where user_id = ? and kind = ? and id = ?")
                .bind(user_id.to_string())
                .bind(kind.as_str())
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list<T: DeserializeOwned>(
        &self,
        user_id: Uuid,
        kind: CacheKind,
    ) -> Result<CachedList<T>> {
        let user = user_id.to_string();
        let rows: Vec<(String,)> = sqlx::query_as(
            "select body from list_cache where user_id = ? and kind = ?
             order by updated_at desc, id desc",
        )
        .bind(&user)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?;
        let items = rows
            .iter()
            .map(|(body,)| {
                serde_json::from_str(body)
                    .map_err(|e| Error::Protocol(format!("cached {}: {e}", kind.as_str())))
            })
            .collect::<Result<Vec<T>>>()?;
        let fetched: Option<(String,)> = sqlx::query_as(
            "select fetched_at from list_cache_state where user_id = ? and kind = ?",
        )
        .bind(&user)
        .bind(kind.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let fetched_at = fetched.map(|(t,)| parse_time(&t)).transpose()?;
        Ok(CachedList { items, fetched_at })
    }

    async fn cursor(&self, user_id: Uuid, kind: CacheKind) -> Result<Option<DateTime<Utc>>> {
        let max: Option<(Option<String>,)> =
            sqlx::query_as("select max(updated_at) from list_cache where user_id = ? and kind = ?")
                .bind(user_id.to_string())
                .bind(kind.as_str())
                .fetch_optional(&self.pool)
                .await?;
        max.and_then(|(t,)| t).map(|t| parse_time(&t)).transpose()
    }

    /// Replaces the cached dataset list of `user_id` with a full list from the server.
    pub async fn replace_datasets(
        &self,
        user_id: Uuid,
        datasets: &[Dataset],
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        let items = datasets.iter().map(|d| (d.id, d.updated_at, d)).collect();
        self.put(user_id, CacheKind::Dataset, items, true, fetched_at)
            .await
    }

    /// Applies an incremental refresh: changed datasets are stored, deleted ones dropped.
    pub async fn merge_datasets(
        &self,
        user_id: Uuid,
        changed: &[Dataset],
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        let (deleted, kept): (Vec<&Dataset>, Vec<&Dataset>) =
            changed.iter().partition(|d| d.deleted_at.is_some());
        let items = kept.into_iter().map(|d| (d.id, d.updated_at, d)).collect();
        self.put(user_id, CacheKind::Dataset, items, false, fetched_at)
            .await?;
        let ids: Vec<Uuid> = deleted.iter().map(|d| d.id).collect();
        self.remove(user_id, CacheKind::Dataset, &ids).await
    }

    /// The cached datasets of `user_id`, most recently changed first.
    pub async fn cached_datasets(&self, user_id: Uuid) -> Result<CachedList<Dataset>> {
        self.list(user_id, CacheKind::Dataset).await
    }

    /// The newest `updated_at` among the cached datasets: the incremental refresh cursor.
    pub async fn datasets_cursor(&self, user_id: Uuid) -> Result<Option<DateTime<Utc>>> {
        self.cursor(user_id, CacheKind::Dataset).await
    }

    // -------------------------------------------------------------------------------------------
    // Preferences and the catalogue
    // -------------------------------------------------------------------------------------------

    /// The stored preferences (JSON), if any were ever saved.
    pub async fn preferences<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        let body: Option<String> = sqlx::query_scalar("select body from preferences where id = 1")
            .fetch_optional(&self.pool)
            .await?;
        body.map(|b| {
            serde_json::from_str(&b)
                .map_err(|e| Error::Protocol(format!("stored preferences: {e}")))
        })
        .transpose()
    }

    /// Replaces the stored preferences.
    pub async fn set_preferences<T: Serialize>(&self, preferences: &T) -> Result<()> {
        let body = serde_json::to_string(preferences)
            .map_err(|e| Error::Protocol(format!("preferences: {e}")))?;
        sqlx::query(
            "insert into preferences (id, body, updated_at) values (1, ?1, ?2)
             on conflict (id) do update set body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(body)
        .bind(text(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Who was signed in last: `(user id, email)`.
    pub async fn last_account(&self) -> Result<Option<(Uuid, Option<String>)>> {
        let row: Option<(String, Option<String>)> =
            sqlx::query_as("select user_id, email from last_account where id = 1")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(id, email)| {
            let id = id
                .parse()
                .map_err(|e| Error::Protocol(format!("stored user id: {e}")))?;
            Ok((id, email))
        })
        .transpose()
    }

    /// When a job watcher last recorded a poll for `user_id` here.
    pub async fn watched_at(&self, user_id: Uuid) -> Result<Option<DateTime<Utc>>> {
        let row: Option<String> =
            sqlx::query_scalar("select polled_at from watch_state where user_id = ?1")
                .bind(user_id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|at| parse_time(&at)).transpose()
    }

    /// Records that a job watcher of `user_id` polled at `at`.
    pub async fn mark_watched(&self, user_id: Uuid, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "insert into watch_state (user_id, polled_at) values (?1, ?2)
             on conflict (user_id) do update set polled_at = excluded.polled_at",
        )
        .bind(user_id.to_string())
        .bind(text(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers who is signed in (`None`: nobody, after a sign-out).
    pub async fn set_last_account(&self, account: Option<(Uuid, Option<&str>)>) -> Result<()> {
        match account {
            Some((id, email)) => {
                sqlx::query(
                    "insert into last_account (id, user_id, email, updated_at) values (1, ?1, ?2, ?3)
                     on conflict (id) do update set user_id = excluded.user_id,
                       email = excluded.email, updated_at = excluded.updated_at",
                )
                .bind(id.to_string())
                .bind(email)
                .bind(text(Utc::now()))
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("delete from last_account")
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// A catalogue list (`gpu_types` or `presets`) as last fetched, with when.
    pub async fn cached_catalogue<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Option<(Vec<T>, DateTime<Utc>)>> {
        let row: Option<(String, String)> =
            sqlx::query_as("select body, fetched_at from catalogue_cache where kind = ?1")
                .bind(kind)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(body, at)| {
            let items = serde_json::from_str(&body)
                .map_err(|e| Error::Protocol(format!("cached {kind}: {e}")))?;
            Ok((items, parse_time(&at)?))
        })
        .transpose()
    }

    /// Stores a catalogue list fetched at `fetched_at`.
    pub async fn put_catalogue<T: Serialize>(
        &self,
        kind: &str,
        items: &[T],
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        let body =
            serde_json::to_string(items).map_err(|e| Error::Protocol(format!("{kind}: {e}")))?;
        sqlx::query(
            "insert into catalogue_cache (kind, body, fetched_at) values (?1, ?2, ?3)
             on conflict (kind) do update set body = excluded.body, fetched_at = excluded.fetched_at",
        )
        .bind(kind)
        .bind(body)
        .bind(text(fetched_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Replaces the cached job list of `user_id` with a full list from the server.
    pub async fn replace_jobs(
        &self,
        user_id: Uuid,
        jobs: &[TrainingJob],
        fetched_at: DateTime<Utc>,
    ) -> Result<()> {
        let items = jobs.iter().map(|j| (j.id, j.updated_at, j)).collect();
        self.put(user_id, CacheKind::Job, items, true, fetched_at)
            .await
    }

    /// Stores jobs that changed and claims `alert_keys` (see [`LocalDb::claim_alert`]) in one
    /// transaction, so a failed write loses neither: the watcher raises an alert only when its claim was committed with
    /// the job version that caused it, and repeats the whole poll otherwise.
    pub async fn merge_jobs_claiming_alerts(
        &self,
        user_id: Uuid,
        changed: &[TrainingJob],
        alert_keys: &[String],
        fetched_at: DateTime<Utc>,
    ) -> Result<Vec<bool>> {
        let items = changed.iter().map(|j| (j.id, j.updated_at, j)).collect();
        self.put_claiming(
            user_id,
            CacheKind::Job,
            items,
            false,
            fetched_at,
            alert_keys,
        )
        .await
    }

    /// The cached jobs of `user_id`, most recently changed first.
    pub async fn cached_jobs(&self, user_id: Uuid) -> Result<CachedList<TrainingJob>> {
        self.list(user_id, CacheKind::Job).await
    }

    /// The newest `updated_at` among the cached jobs: the incremental refresh cursor.
    pub async fn jobs_cursor(&self, user_id: Uuid) -> Result<Option<DateTime<Utc>>> {
        self.cursor(user_id, CacheKind::Job).await
    }

    // -------------------------------------------------------------------------------------------
    // Alert dedupe
    // -------------------------------------------------------------------------------------------

    /// Records that the alert `key` (see [`alert_key`]) is being raised. True the first time,
    /// false if it was raised before (by this run or an earlier one): raise it only on true.
    pub async fn claim_alert(&self, key: &str, at: DateTime<Utc>) -> Result<bool> {
        let mut conn = self.pool.acquire().await?;
        insert_claim(&mut conn, key, &text(at)).await
    }

    /// Whether the alert `key` was raised before.
    pub async fn alert_claimed(&self, key: &str) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as("select 1 from alert_dedupe where key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

/// Records the alert `key` as raised at `at`; true if it was not before.
async fn insert_claim(conn: &mut sqlx::SqliteConnection, key: &str, at: &str) -> Result<bool> {
    let done = sqlx::query(
        "insert into alert_dedupe (key, announced_at) values (?, ?) on conflict (key) do nothing",
    )
    .bind(key)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn alerts_are_claimed_once_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/local.db");
        let key = alert_key(Uuid::nil(), &JobStatus::Completed);
        assert_eq!(
            key, "job:00000000-0000-0000-0000-000000000000:completed",
            "the documented key shape"
        );
        let db = LocalDb::open(&path)
            .await
            .expect("open creates folders and file");
        assert!(
            db.claim_alert(&key, Utc::now()).await.expect("claim"),
            "first claim wins"
        );
        assert!(
            !db.claim_alert(&key, Utc::now()).await.expect("claim"),
            "second claim loses"
        );
        db.close().await;
        let db = LocalDb::open(&path)
            .await
            .expect("reopen applies no migration twice");
        assert!(
            db.alert_claimed(&key).await.expect("read"),
            "the claim survived a restart"
        );
        assert!(
            !db.claim_alert(&key, Utc::now()).await.expect("claim"),
            "a restart never re-announces"
        );
        let other = alert_key(Uuid::nil(), &JobStatus::Failed);
        assert!(
            db.claim_alert(&other, Utc::now()).await.expect("claim"),
            "another status is another alert"
        );
    }

    #[tokio::test]
    async fn journal_mode_is_wal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = LocalDb::open(&dir.path().join("l.db")).await.expect("open");
        let (mode,): (String,) = sqlx::query_as("pragma journal_mode")
            .fetch_one(db.pool())
            .await
            .expect("pragma");
        assert_eq!(
            mode, "wal",
            "WAL lets the window read while the watcher writes"
        );
    }
}
