//! brightrun-client: everything the desktop window and the `brightrun` CLI do against a BrightRun
//! project (hosted Supabase or brightrun-stack), implemented once.
//!
//! - [`app`]: the app layer: one [`app::App`] per project, and one handler per user operation,
//!   called by the CLI, the desktop shell and tests alike.
//! - [`session`]: email + password sign-in; the refresh token in the OS keychain, the access token
//!   in memory only, one refresh at a time before expiry.
//! - [`api`]: typed PostgREST and RPC calls for every product operation.
//! - [`transfer`]: resumable TUS uploads with their state in the local database, and ranged,
//!   verified downloads.
//! - [`watch`]: the job watcher (incremental polling, alerts once per outcome).
//! - [`local`]: the local SQLite database (upload state, caches, alert dedupe, preferences).
//!
//! It must not depend on Tauri, decide business rules the server owns, or let a secret reach a
//! log, the local database or `Debug` output.

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod local;
pub mod secret;
pub mod session;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;
pub mod watch;

pub use brightrun_supabase::retry;
pub use config::{BuildChannel, LocalStackInfo, Project, StackBanner};
pub use error::{Error, ErrorCode, Result, WireError};
pub use secret::Secret;
