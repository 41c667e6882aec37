//! App-wide changes the window listens to, as named events (one-off progress goes over a
//! `Channel` instead).

use brightrun_client::app::auth::Account;
use serde::Serialize;

/// Signed in, signed out, or the session ended by itself (revoked elsewhere).
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct SessionChanged {
    pub account: Option<Account>,
}

/// A dataset's row changed on the server (uploaded, validated, renamed, deleted).
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct DatasetChanged {
    pub dataset: brightrun_core::Dataset,
}

/// A change to announce, as the shell's state holds it (no runtime type in it).
#[derive(Debug, Clone)]
pub enum Notice {
    Session(Option<Account>),
    Dataset(Box<brightrun_core::Dataset>),
}

impl Notice {
    /// Emits the event to the window; a window that is gone misses it.
    pub fn emit<R: tauri::Runtime>(self, handle: &tauri::AppHandle<R>) {
        use tauri_specta::Event as _;
        let sent = match self {
            Self::Session(account) => SessionChanged { account }.emit(handle),
            Self::Dataset(dataset) => DatasetChanged { dataset: *dataset }.emit(handle),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "the window missed an event");
        }
    }
}
