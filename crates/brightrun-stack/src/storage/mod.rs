//! `/storage/v1`: the storage-api subset (supabase-protocol.md §4) — buckets from migrations,
//! objects in `storage.objects` with their bytes on the local disk, signed URLs, ranged
//! downloads and TUS 1.0.0 resumable uploads.
//!
//! Every user-context operation is authorised by the RLS policies on `storage.objects`, checked in
//! PostgreSQL the way storage-api does it; Rust code only moves bytes.

mod blobs;
mod drain;
mod error;
mod objects;
mod scope;
mod tus;

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::any;

pub use blobs::valid_object_name;
pub use error::{StorageError, TusError};

use crate::AppState;

/// Storage settings (storage-api's env of the same meaning in parentheses).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Cap over every bucket's own limit (`FILE_SIZE_LIMIT`).
    pub global_file_size_limit: u64,
    /// Lifetime of signed upload tokens (`UPLOAD_SIGNED_URL_EXPIRATION_TIME`; hosted: 2 h).
    pub signed_upload_url_expiry: Duration,
    /// Unfinished TUS uploads are forgotten after this (`TUS_URL_EXPIRY_MS`; hosted: 24 h).
    pub tus_upload_expiry: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            global_file_size_limit: 5 * 1024 * 1024 * 1024,
            signed_upload_url_expiry: Duration::from_secs(2 * 3600),
            tus_upload_expiry: Duration::from_secs(24 * 3600),
        }
    }
}

/// What `/storage/v1` keeps between requests.
#[derive(Debug)]
pub struct StorageState {
    blobs: blobs::BlobStore,
    uploads: tus::Uploads,
}

impl StorageState {
    pub fn open(root: PathBuf) -> std::io::Result<Self> {
        let blobs = blobs::BlobStore::new(root)?;
        let uploads = tus::Uploads::new(blobs.uploads_dir());
        Ok(Self { blobs, uploads })
    }

    /// Forgets unfinished TUS uploads older than the configured expiry.
    pub async fn sweep_expired_uploads(&self, expiry: Duration) {
        self.uploads.sweep(expiry).await;
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/object/{*rest}", any(objects::dispatch))
        .route("/upload/resumable", any(tus::create_authenticated))
        .route("/upload/resumable/", any(tus::create_authenticated))
        .route("/upload/resumable/sign", any(tus::create_signed))
        .route("/upload/resumable/sign/", any(tus::create_signed))
        .route("/upload/resumable/sign/{id}", any(tus::item_signed))
        .route("/upload/resumable/{id}", any(tus::item_authenticated))
        // Uploads stream to disk with their own size limits; axum's 2 MB default does not apply.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(drain::drain_unread))
}
