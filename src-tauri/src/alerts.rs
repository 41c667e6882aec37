//! Native notifications (freedesktop, through `notify-rust`): a job's outcome, several outcomes
//! grouped into one (those that happened while the app was closed arrive together), a dataset's
//! validation, the month's budget. Their text comes from the app layer ([`JobAlert`]) or names
//! the dataset only: never a token or a local path.
//!
//! A click (the `default` action) opens the window on what the notification is about; a
//! completed job's `download` action downloads its adapter to the default folder. Desktops that
//! ignore actions still have the tray and the in-app list. `wait_for_action` blocks until the
//! notification is closed, so each runs on its own thread.

use brightrun_client::app::models::{self, DownloadModel};
use brightrun_client::watch::JobAlert;
use brightrun_core::{Dataset, DatasetStatus, JobStatus};
use tauri::{AppHandle, Manager as _, Runtime};

use crate::shell::Shell;

/// The app's name on the notification server.
const APP_NAME: &str = "BrightRun";

/// What a click opens: a route of the window (`#/jobs/<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub summary: String,
    pub body: String,
    /// Where a click leads.
    pub open: String,
    /// The completed job whose adapter the `download` action fetches.
    pub download: Option<uuid::Uuid>,
}

impl Alert {
    /// One notification for the outcomes in `alerts`: the alert itself when there is one, a
    /// summary of all when there are several.
    pub fn for_jobs(alerts: &[JobAlert]) -> Option<Self> {
        match alerts {
            [] => None,
            [one] => Some(Self {
                summary: one.title.clone(),
                body: one.body.clone(),
                open: format!("#/jobs/{}", one.job_id),
                download: (one.status == JobStatus::Completed).then_some(one.job_id),
            }),
            many => {
                let done = many
                    .iter()
                    .filter(|a| a.status == JobStatus::Completed)
                    .count();
                let failed = many.len() - done;
                let mut parts = Vec::new();
                if done > 0 {
                    parts.push(format!("{done} completed"));
                }
                if failed > 0 {
                    parts.push(format!("{failed} failed"));
                }
                let names: Vec<String> = many
                    .iter()
                    .take(3)
                    .map(|a| {
                        a.dataset
                            .clone()
                            .unwrap_or_else(|| a.job_id.simple().to_string()[..8].to_owned())
                    })
                    .collect();
                let more = many.len().saturating_sub(3);
                let mut list = names.join(", ");
                if more > 0 {
                    list.push_str(&format!(" and {more} more"));
                }
                Some(Self {
                    summary: format!("{} training jobs ended: {}", many.len(), parts.join(", ")),
                    body: format!("{list}. Open BrightRun to see them."),
                    open: "#/jobs".to_owned(),
                    download: None,
                })
            }
        }
    }

    /// A dataset the server finished validating.
    pub fn for_dataset(dataset: &Dataset) -> Option<Self> {
        let (summary, body) = match dataset.status {
            DatasetStatus::Ready => (
                format!("Dataset ready: {}", dataset.name),
                format!(
                    "{} training conversations. Start a training job with it.",
                    dataset.total_training_pairs.unwrap_or(0)
                ),
            ),
            DatasetStatus::Error => (
                format!("Dataset rejected: {}", dataset.name),
                "The server's validation found errors. Open it to see them.".to_owned(),
            ),
            _ => return None,
        };
        Some(Self {
            summary,
            body,
            open: format!("#/datasets/{}", dataset.id),
            download: None,
        })
    }
}

/// Shows the window and opens `route` in it.
pub fn open_window<R: Runtime>(handle: &AppHandle<R>, route: &str) {
    if let Some(window) = handle.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
    if !route.is_empty() {
        crate::events::Notice::Navigate(route.to_owned()).emit(handle);
    }
    handle
        .state::<Shell>()
        .set_visibility(brightrun_client::watch::Visibility::Foreground);
}

/// Raises `alert` on the desktop; a click opens the window on it. Failures (no notification
/// server) are logged: the in-app list has the same news.
pub fn show<R: Runtime>(handle: &AppHandle<R>, alert: Alert) {
    let handle = handle.clone();
    std::thread::spawn(move || {
        let mut notification = notify_rust::Notification::new();
        notification
            .appname(APP_NAME)
            .summary(&alert.summary)
            .body(&alert.body)
            .action("default", "Open");
        if alert.download.is_some() {
            notification.action("download", "Download adapter");
        }
        let shown = match notification.show() {
            Ok(shown) => shown,
            Err(e) => {
                tracing::warn!(error = %e, "no desktop notification (is a notification server running?)");
                return;
            }
        };
        shown.wait_for_action(|action| match action {
            "default" => open_window(&handle, &alert.open),
            "download" => {
                if let Some(job) = alert.download {
                    download(&handle, job);
                }
            }
            _ => {}
        });
    });
}

/// Downloads a completed job's adapter to the default folder, and says so when it is done.
fn download<R: Runtime>(handle: &AppHandle<R>, job: uuid::Uuid) {
    let handle = handle.clone();
    tauri::async_runtime::spawn(async move {
        let shell = handle.state::<Shell>();
        let outcome = async {
            let app = shell.app().await?;
            let request = DownloadModel {
                id: job,
                to: None,
                allow_unverified: false,
                segment_threshold: None,
            };
            let cancel = brightrun_client::app::CancellationToken::new();
            models::download(&app, request, None, &cancel).await
        }
        .await;
        let alert = match outcome {
            Ok(done) => Alert {
                summary: "Adapter downloaded".to_owned(),
                body: format!(
                    "{} files, each SHA-256 verified. Open the model to see where.",
                    done.files.len()
                ),
                open: format!("#/models/{}", done.model_id),
                download: None,
            },
            Err(e) => Alert {
                summary: "Download failed".to_owned(),
                body: format!("{}. Open the model to try again.", e.code().as_str()),
                open: format!("#/jobs/{job}"),
                download: None,
            },
        };
        show(&handle, alert);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(status: JobStatus, dataset: Option<&str>) -> JobAlert {
        JobAlert {
            job_id: uuid::Uuid::new_v4(),
            status,
            dataset: dataset.map(str::to_owned),
            title: "t".into(),
            body: "b".into(),
        }
    }

    #[test]
    fn one_outcome_is_itself_and_several_are_grouped() {
        assert_eq!(Alert::for_jobs(&[]), None);
        let one = alert(JobStatus::Completed, Some("chats"));
        let single = Alert::for_jobs(std::slice::from_ref(&one)).expect("an alert");
        assert_eq!(single.open, format!("#/jobs/{}", one.job_id));
        assert_eq!(
            single.download,
            Some(one.job_id),
            "a completed job offers its adapter"
        );
        let failed = alert(JobStatus::Failed, None);
        assert_eq!(
            Alert::for_jobs(std::slice::from_ref(&failed))
                .expect("an alert")
                .download,
            None
        );
        let many: Vec<JobAlert> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| alert(JobStatus::Completed, Some(n)))
            .chain([alert(JobStatus::Failed, Some("e"))])
            .collect();
        let grouped = Alert::for_jobs(&many).expect("an alert");
        assert_eq!(
            grouped.summary,
            "5 training jobs ended: 4 completed, 1 failed"
        );
        assert_eq!(
            grouped.body,
            "a, b, c and 2 more. Open BrightRun to see them."
        );
        assert_eq!(grouped.open, "#/jobs");
    }
}
