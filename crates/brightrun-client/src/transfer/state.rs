//! Upload state in the local database (table `upload_state`, migration
//! `20261122200000_upload_state.sql`). Written after every step the server confirmed, so a killed
//! process resumes where the server is. Never holds a token.

use sqlx::SqlitePool;

use crate::error::{Error, Result};

/// Where an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Left by versions that registered the dataset before sending (create_dataset was maybe
    /// called, its id unknown). Such an upload is abandoned and started again.
    Creating,
    /// The dataset's id and object path are chosen; bytes are going through `tus_url`. The
    /// dataset row is made (with that id) only once the file passed its check, just before
    /// the last chunk.
    Uploading,
    /// Every byte is stored and the dataset registered; confirm_dataset_upload remains.
    Uploaded,
    /// Done; kept so that running the same upload again finds the dataset.
    Confirmed,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Uploading => "uploading",
            Self::Uploaded => "uploaded",
            Self::Confirmed => "confirmed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => Self::Creating,
            "uploading" => Self::Uploading,
            "uploaded" => Self::Uploaded,
            "confirmed" => Self::Confirmed,
            _ => return None,
        })
    }
}

/// The file an upload reads; when any part differs, it is another file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    /// Lowercase hex; empty until the check running beside the transfer has read the whole
    /// file (an upload resumed after that compares it before completing).
    pub sha256: String,
}

/// Where a new upload's dataset goes: the id the client chose for it and its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetTarget {
    pub id: uuid::Uuid,
    pub bucket: String,
    pub path: String,
}

impl DatasetTarget {
    /// A new dataset of `user` for a file stored as `file_name`.
    pub fn new(user: uuid::Uuid, file_name: &str) -> Self {
        let id = uuid::Uuid::new_v4();
        Self {
            id,
            bucket: brightrun_core::DATASETS_BUCKET.to_owned(),
            path: brightrun_core::dataset_storage_path(user, id, file_name),
        }
    }
}

/// One upload's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    pub id: i64,
    pub project_url: String,
    pub user_id: String,
    pub file_path: String,
    pub fingerprint: Fingerprint,
    pub dataset_name: String,
    pub stage: Stage,
    pub dataset_id: Option<String>,
    pub storage_bucket: Option<String>,
    pub storage_path: Option<String>,
    pub tus_url: Option<String>,
    pub confirmed_offset: u64,
    pub started_at: i64,
}

/// The `upload_state` table.
#[derive(Debug, Clone)]
pub struct UploadStateStore {
    pool: SqlitePool,
}

type Row = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

const COLUMNS: &str = "id, project_url, user_id, file_path, file_size, file_mtime_ns, file_sha256, \
     dataset_name, stage, dataset_id, storage_bucket, storage_path, tus_url, confirmed_offset, started_at";

fn record(row: Row) -> Result<UploadRecord> {
    let stage = Stage::parse(&row.8).ok_or_else(|| {
        Error::Protocol(format!(
            "unknown upload stage {:?} in the local database",
            row.8
        ))
    })?;
    Ok(UploadRecord {
        id: row.0,
        project_url: row.1,
        user_id: row.2,
        file_path: row.3,
        fingerprint: Fingerprint {
            size: u64::try_from(row.4).unwrap_or(0),
            mtime_ns: row.5,
            sha256: row.6,
        },
        dataset_name: row.7,
        stage,
        dataset_id: row.9,
        storage_bucket: row.10,
        storage_path: row.11,
        tus_url: row.12,
        confirmed_offset: u64::try_from(row.13).unwrap_or(0),
        started_at: row.14,
    })
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl UploadStateStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The upload table of the local database.
    pub fn from_local(db: &crate::local::LocalDb) -> Self {
        Self::new(db.pool().clone())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn find(
        &self,
        project_url: &str,
        user_id: &str,
        file_path: &str,
    ) -> Result<Option<UploadRecord>> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from upload_state where project_url = ?1 and user_id = ?2 and file_path = ?3"
        ))
        .bind(project_url)
        .bind(user_id)
        .bind(file_path)
        .fetch_optional(&self.pool)
        .await?;
        row.map(record).transpose()
    }

    /// All uploads of a user that have not been confirmed.
    pub async fn unfinished(&self, project_url: &str, user_id: &str) -> Result<Vec<UploadRecord>> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "select {COLUMNS} from upload_state where project_url = ?1 and user_id = ?2 and stage <> 'confirmed' order by id"
        ))
        .bind(project_url)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(record).collect()
    }

    /// A fresh row in stage `creating`, replacing any row for the same file.
    pub async fn start(
        &self,
        project_url: &str,
        user_id: &str,
        file_path: &str,
        fingerprint: &Fingerprint,
        dataset_name: &str,
        target: &DatasetTarget,
    ) -> Result<UploadRecord> {
        let t = now();
        let dataset_id = target.id.to_string();
        let id: i64 = sqlx::query_scalar(
            "insert into upload_state (project_url, user_id, file_path, file_size, file_mtime_ns,
               file_sha256, dataset_name, stage, dataset_id, storage_bucket, storage_path,
               started_at, updated_at)
             values (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'uploading', ?8, ?9, ?10, ?11, ?11)
             on conflict (project_url, user_id, file_path) do update set
               file_size = excluded.file_size, file_mtime_ns = excluded.file_mtime_ns,
               file_sha256 = excluded.file_sha256, dataset_name = excluded.dataset_name,
               stage = 'uploading', dataset_id = excluded.dataset_id,
               storage_bucket = excluded.storage_bucket, storage_path = excluded.storage_path,
               tus_url = null, confirmed_offset = 0, started_at = excluded.started_at,
               updated_at = excluded.updated_at
             returning id",
        )
        .bind(project_url)
        .bind(user_id)
        .bind(file_path)
        .bind(i64_of(fingerprint.size))
        .bind(fingerprint.mtime_ns)
        .bind(&fingerprint.sha256)
        .bind(dataset_name)
        .bind(&dataset_id)
        .bind(&target.bucket)
        .bind(&target.path)
        .bind(t)
        .fetch_one(&self.pool)
        .await?;
        Ok(UploadRecord {
            id,
            project_url: project_url.to_owned(),
            user_id: user_id.to_owned(),
            file_path: file_path.to_owned(),
            fingerprint: fingerprint.clone(),
            dataset_name: dataset_name.to_owned(),
            stage: Stage::Uploading,
            dataset_id: Some(dataset_id),
            storage_bucket: Some(target.bucket.clone()),
            storage_path: Some(target.path.clone()),
            tus_url: None,
            confirmed_offset: 0,
            started_at: t,
        })
    }

    /// Writes the mutable part of `record` (stage, dataset, TUS URL, offset, the file's
    /// SHA-256 once known).
    pub async fn save(&self, record: &UploadRecord) -> Result<()> {
        sqlx::query(
            "update upload_state set stage = ?2, dataset_id = ?3, storage_bucket = ?4,
               storage_path = ?5, tus_url = ?6, confirmed_offset = ?7, updated_at = ?8,
               file_sha256 = ?9
             where id = ?1",
        )
        .bind(record.id)
        .bind(record.stage.as_str())
        .bind(&record.dataset_id)
        .bind(&record.storage_bucket)
        .bind(&record.storage_path)
        .bind(&record.tus_url)
        .bind(i64_of(record.confirmed_offset))
        .bind(now())
        .bind(&record.fingerprint.sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete(&self, id: i64) -> Result<()> {
        sqlx::query("delete from upload_state where id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
