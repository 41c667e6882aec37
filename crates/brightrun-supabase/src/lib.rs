//! brightrun-supabase: the Supabase wire protocol as BrightRun's clients speak it, shared by
//! `brightrun-client` (a user's session) and `brightrun-worker` (the service-role key).
//!
//! - [`error`]: the error answers of GoTrue, PostgREST, Storage and TUS, kept losslessly, and
//!   the three questions asked of every failure: may it be retried, after how long, and which of
//!   the few [`ErrorCode`]s a front end branches on it is.
//! - [`retry`]: exponential backoff with full jitter, bounded, honouring `Retry-After`.
//! - [`secret`]: tokens, keys and passwords as a type that never prints.
//! - [`storage`] and [`tus`]: the Storage object API and resumable (TUS 1.0.0) uploads, the one
//!   implementation both clients use.
//!
//! It must not know about sessions, keychains or local databases (the worker has none), nor
//! about LoRA: callers bring their credentials through `storage::Credentials`. Without its
//! default feature `client` only [`Secret`] is left: brightrun-stack keeps its signing key in it.

#[cfg(feature = "client")]
pub mod error;
#[cfg(feature = "client")]
pub mod retry;
pub mod secret;
#[cfg(feature = "client")]
pub mod storage;
#[cfg(feature = "client")]
pub mod tus;

#[cfg(feature = "client")]
pub use error::{ApiError, Error, ErrorCode, Result, Service};
#[cfg(feature = "client")]
pub use retry::{Backoff, Idempotency, Retrier, RetryPolicy, Retryable};
pub use secret::Secret;
#[cfg(feature = "client")]
pub use storage::{Credentials, Storage};
