//! Resumable uploads and verified downloads (ARCHITECTURE.md §5).
//!
//! - [`upload`]: the local check and a signed TUS upload streamed from disk in 6 MiB PATCHes,
//!   side by side; the last chunk waits for the verdict and `create_dataset`, then
//!   `confirm_dataset_upload`; the state lives in the local database ([`state`]), so a crash,
//!   a cut connection or a restart resumes the same dataset.
//! - [`download`]: signed URLs, `Range` resume from `<name>.part`, parallel segments for large
//!   files, SHA-256 against the manifest's digest, atomic rename, sanitised names.
//!
//! Both report [`Progress`] to a callback (a Tauri `Channel`, a CLI progress bar), retry
//! transient failures with jittered exponential backoff counted without progress
//! (`brightrun_supabase::Backoff`) and give up with a specific [`crate::Error`].

pub mod download;
pub mod progress;
pub mod state;
pub mod upload;

pub use download::{DownloadOptions, Downloaded, Downloader, sanitize_file_name};
pub use progress::{Phase, Progress, ProgressFn};
pub use state::{DatasetTarget, UploadStateStore};
pub use upload::{UploadOptions, UploadOutcome, UploadRequest, Uploader};
