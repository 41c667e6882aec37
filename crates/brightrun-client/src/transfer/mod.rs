//! Resumable uploads and verified downloads (ARCHITECTURE.md §5).
//!
//! - [`upload`]: validate locally, `create_dataset`, a signed TUS upload streamed from disk in
//!   6 MiB PATCHes, `confirm_dataset_upload`; the state lives in the local database
//!   ([`state`]), so a crash, a cut connection or a restart resumes the same dataset.
//! - [`download`]: signed URLs, `Range` resume from `<name>.part`, parallel segments for large
//!   files, SHA-256 against the recorded digest, atomic rename, sanitised names.
//!
//! Both report [`Progress`] to a callback (a Tauri `Channel`, a CLI progress bar, a
//! `tokio::sync::watch` sender), retry transient failures with jittered exponential backoff
//! ([`backoff`]) and give up with a specific [`TransferError`].

pub mod backoff;
pub mod download;
mod error;
mod http;
pub mod progress;
pub mod state;
pub mod upload;

pub use backoff::Backoff;
pub use download::{ArtifactFile, DownloadOptions, Downloaded, Downloader, sanitize_file_name};
pub use error::TransferError;
pub use progress::{Phase, Progress, ProgressFn};
pub use state::UploadStateStore;
pub use upload::{UploadOptions, UploadOutcome, UploadRequest, Uploader};
