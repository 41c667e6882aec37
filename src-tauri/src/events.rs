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

/// Training jobs are new or changed (status, stage, progress, cost): all of one poll together.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct JobsChanged {
    pub jobs: Vec<brightrun_core::TrainingJob>,
}

/// New metrics of these jobs arrived (one poll's): their charts can be drawn again.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct MetricsAdded {
    pub job_ids: Vec<uuid::Uuid>,
}

/// A job completed or failed (once per outcome, across restarts).
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct JobFinished {
    pub alert: brightrun_client::watch::JobAlert,
}

/// The watcher lost or regained the server: `retry_in_secs` until its next try when offline.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct ConnectionChanged {
    pub online: bool,
    pub retry_in_secs: Option<f64>,
}

/// Open a route of the window (a notification or the tray was clicked): `#/jobs/<id>`.
#[derive(Debug, Clone, Serialize, specta::Type, tauri_specta::Event)]
pub struct Navigate {
    pub to: String,
}

/// A change to announce, as the shell's state holds it (no runtime type in it).
#[derive(Debug, Clone)]
pub enum Notice {
    Session(Option<Account>),
    Dataset(Box<brightrun_core::Dataset>),
    Jobs(Vec<brightrun_core::TrainingJob>),
    Metrics(Vec<uuid::Uuid>),
    /// Outcomes of one poll; `native` raises desktop notifications too (the preference), one
    /// per outcome, or one for all when `grouped` (what happened while the app was closed).
    Finished {
        alerts: Vec<brightrun_client::watch::JobAlert>,
        native: bool,
        grouped: bool,
    },
    /// A desktop notification only.
    Desktop(crate::alerts::Alert),
    Navigate(String),
    Connection {
        online: bool,
        retry_in_secs: Option<f64>,
    },
}

impl Notice {
    /// Emits the event to the window; a window that is gone misses it.
    pub fn emit<R: tauri::Runtime>(self, handle: &tauri::AppHandle<R>) {
        use tauri_specta::Event as _;
        let sent = match self {
            Self::Session(account) => SessionChanged { account }.emit(handle),
            Self::Dataset(dataset) => DatasetChanged { dataset: *dataset }.emit(handle),
            Self::Jobs(jobs) => {
                crate::tray::jobs_changed(handle, &jobs);
                JobsChanged { jobs }.emit(handle)
            }
            Self::Metrics(job_ids) => MetricsAdded { job_ids }.emit(handle),
            Self::Finished {
                alerts,
                native,
                grouped,
            } => {
                crate::tray::finished(handle, &alerts);
                if native {
                    let batches: Vec<&[brightrun_client::watch::JobAlert]> = if grouped {
                        vec![&alerts]
                    } else {
                        alerts.chunks(1).collect()
                    };
                    for alert in batches
                        .into_iter()
                        .filter_map(crate::alerts::Alert::for_jobs)
                    {
                        crate::alerts::show(handle, alert);
                    }
                }
                alerts
                    .into_iter()
                    .map(|alert| JobFinished { alert }.emit(handle))
                    .find(Result::is_err)
                    .unwrap_or(Ok(()))
            }
            Self::Desktop(alert) => {
                crate::alerts::show(handle, alert);
                Ok(())
            }
            Self::Navigate(to) => Navigate { to }.emit(handle),
            Self::Connection {
                online,
                retry_in_secs,
            } => ConnectionChanged {
                online,
                retry_in_secs,
            }
            .emit(handle),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "the window missed an event");
        }
    }
}
