//! The commands the window calls: one-line adapters over `brightrun_client::app`, plus the
//! shell's own (the project choice, cancelling a transfer). Errors cross as [`WireError`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use brightrun_client::WireError;
use brightrun_client::app::auth::{self, Account, Credentials, SessionStatus, SignedOut, SignedUp};
use brightrun_client::app::costs::{self, CostMonth, CostReport};
use brightrun_client::app::curves::{ChartRequest, DrawnChart};
use brightrun_client::app::datasets::{
    self, ConvertFile, Converted, DatasetRef, InterruptedUpload, ListDatasets, LocalFile,
    RenameDataset, UploadDataset,
};
use brightrun_client::app::jobs::{self, CreatedJob, DraftCheck, JobRef, ListJobs};
use brightrun_client::app::models::{self, DownloadModel, DownloadedModel, ModelRef};
use brightrun_client::app::notifications::{self, ListNotifications, MarkRead, MarkedRead};
use brightrun_client::app::prefs::{self, Preferences};
use brightrun_client::app::{Listing, ProgressFn, Refresh, check_project};
use brightrun_client::transfer::{Progress, UploadOutcome};
use brightrun_client::watch::Visibility;
use brightrun_core::dataset::FormatGuess;
use brightrun_core::{
    CostEstimate, Dataset, GpuType, JobDraft, ModelArtifact, Notification, TrainingJob,
    TrainingPreset, ValidationReport,
};
use tauri::State;
use tauri::ipc::Channel;

use crate::events::Notice;
use crate::project::{Choice, ProjectStatus};
use crate::shell::Shell;

type Answer<T> = Result<T, WireError>;

/// Progress reports onto the window's channel.
fn sink(channel: Channel<Progress>) -> ProgressFn {
    Arc::new(move |p: &Progress| {
        let _ = channel.send(p.clone());
    })
}

// --- The project -----------------------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn project_status(shell: State<'_, Shell>) -> Answer<ProjectStatus> {
    crate::startup_step("first question");
    Ok(ProjectStatus {
        chosen: shell.settings().effective_choice(),
        from_environment: shell.settings().from_environment(),
    })
}

/// The local sandbox: started now if none runs.
#[tauri::command]
#[specta::specta]
pub async fn choose_sandbox(shell: State<'_, Shell>) -> Answer<()> {
    shell.choose(Choice::sandbox()).await?;
    shell.app().await?;
    Ok(())
}

/// A Supabase project, checked against the server before it is kept.
#[tauri::command]
#[specta::specta]
pub async fn choose_project(shell: State<'_, Shell>, url: String, anon_key: String) -> Answer<()> {
    check_project(&url, &anon_key).await?;
    let choice = Choice {
        sandbox: false,
        url: Some(url),
        anon_key: Some(anon_key),
    };
    Ok(shell.choose(choice).await?)
}

// --- The session -----------------------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn sign_up(shell: State<'_, Shell>, request: Credentials) -> Answer<SignedUp> {
    let outcome = auth::sign_up(&*shell.app().await?, request).await?;
    if let SignedUp::SignedIn { account } = &outcome {
        shell.notify(Notice::Session(Some(account.clone())));
    }
    Ok(outcome)
}

#[tauri::command]
#[specta::specta]
pub async fn sign_in(shell: State<'_, Shell>, request: Credentials) -> Answer<Account> {
    let account = auth::sign_in(&*shell.app().await?, request).await?;
    shell.notify(Notice::Session(Some(account.clone())));
    Ok(account)
}

#[tauri::command]
#[specta::specta]
pub async fn sign_out(shell: State<'_, Shell>) -> Answer<SignedOut> {
    shell.stop_watching();
    let done = auth::sign_out(&*shell.app().await?).await?;
    shell.notify(Notice::Session(None));
    Ok(done)
}

/// The session when the window opens: restored from the keychain, signed out, or offline
/// with the account signed in last.
#[tauri::command]
#[specta::specta]
pub async fn session_status(shell: State<'_, Shell>) -> Answer<SessionStatus> {
    Ok(auth::status(&*shell.app().await?).await?)
}

/// Who is signed in, restoring the keychain's session at the first call.
#[tauri::command]
#[specta::specta]
pub async fn whoami(shell: State<'_, Shell>) -> Answer<Account> {
    Ok(auth::whoami(&*shell.app().await?).await?)
}

// --- Datasets --------------------------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn validate_dataset(
    shell: State<'_, Shell>,
    request: LocalFile,
    transfer: String,
    progress: Channel<Progress>,
) -> Answer<ValidationReport> {
    let app = shell.app().await?;
    let cancel = shell.begin(&transfer);
    // The check the upload of a dropped file makes (structural for large files: exact token
    // counts would take longer than the transfer; the worker's report has them).
    let result = datasets::precheck(&app, request, Some(sink(progress)), &cancel).await;
    shell.end(&transfer);
    Ok(result?)
}

/// The format of a dropped file by its first lines, at once (a ShareGPT file is offered
/// conversion before anything is sent).
#[tauri::command]
#[specta::specta]
pub async fn inspect_dataset(shell: State<'_, Shell>, request: LocalFile) -> Answer<FormatGuess> {
    Ok(datasets::inspect(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn convert_dataset(shell: State<'_, Shell>, request: ConvertFile) -> Answer<Converted> {
    Ok(datasets::convert(&*shell.app().await?, request).await?)
}

/// Validates and uploads a file; then follows the server's validation, each change of the row
/// a [`DatasetChanged`] event, until the dataset is ready or in error.
#[tauri::command]
#[specta::specta]
pub async fn upload_dataset(
    shell: State<'_, Shell>,
    request: UploadDataset,
    transfer: String,
    progress: Channel<Progress>,
) -> Answer<UploadOutcome> {
    let app = shell.app().await?;
    let cancel = shell.begin(&transfer);
    let result = datasets::upload(&app, request, Some(sink(progress)), &cancel).await;
    shell.end(&transfer);
    let outcome = result?;
    let dataset = DatasetRef {
        id: outcome.dataset_id,
    };
    let notify = shell.notifier();
    tauri::async_runtime::spawn(async move {
        let changed = |d: &Dataset| notify(Notice::Dataset(Box::new(d.clone())));
        let follow = datasets::follow(&app, dataset, Duration::from_secs(1), changed);
        match tokio::time::timeout(Duration::from_secs(900), follow).await {
            // The server's verdict, on the desktop too (the window may be hidden by now).
            Ok(Ok(done)) => {
                let wanted = prefs::get(&app)
                    .await
                    .map(|p| p.notifications)
                    .unwrap_or(true);
                if let Some(alert) = crate::alerts::Alert::for_dataset(&done).filter(|_| wanted) {
                    notify(Notice::Desktop(alert));
                }
            }
            Ok(Err(e)) => tracing::warn!(code = e.code().as_str(), "stopped following a dataset"),
            Err(_) => tracing::warn!("the dataset was still validating after 15 minutes"),
        }
    });
    Ok(outcome)
}

/// Stops a validation or transfer the window started; false when it had already ended.
#[tauri::command]
#[specta::specta]
pub async fn cancel_transfer(shell: State<'_, Shell>, transfer: String) -> Answer<bool> {
    Ok(shell.cancel(&transfer))
}

#[tauri::command]
#[specta::specta]
pub async fn interrupted_uploads(shell: State<'_, Shell>) -> Answer<Vec<InterruptedUpload>> {
    Ok(datasets::interrupted(&*shell.app().await?).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn list_datasets(
    shell: State<'_, Shell>,
    request: ListDatasets,
) -> Answer<Listing<Dataset>> {
    Ok(datasets::list(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn show_dataset(shell: State<'_, Shell>, request: DatasetRef) -> Answer<Dataset> {
    Ok(datasets::show(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn rename_dataset(shell: State<'_, Shell>, request: RenameDataset) -> Answer<Dataset> {
    Ok(datasets::rename(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn delete_dataset(shell: State<'_, Shell>, request: DatasetRef) -> Answer<Dataset> {
    Ok(datasets::delete(&*shell.app().await?, request).await?)
}

// --- Preferences -----------------------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn get_preferences(shell: State<'_, Shell>) -> Answer<Preferences> {
    let preferences = prefs::get(&*shell.app().await?).await?;
    crate::tray::CLOSE_TO_TRAY.store(preferences.close_to_tray, Ordering::Relaxed);
    Ok(preferences)
}

#[tauri::command]
#[specta::specta]
pub async fn set_preferences(
    shell: State<'_, Shell>,
    preferences: Preferences,
) -> Answer<Preferences> {
    let saved = prefs::set(&*shell.app().await?, preferences).await?;
    crate::tray::CLOSE_TO_TRAY.store(saved.close_to_tray, Ordering::Relaxed);
    Ok(saved)
}

/// Whether this desktop shows the tray (without one, closing the window quits).
#[tauri::command]
#[specta::specta]
pub async fn tray_present(shell: State<'_, Shell>) -> Answer<bool> {
    Ok(shell.has_tray())
}

/// A start-up mark for the whole-process benchmarks (`cargo xtask bench desktop`): the window
/// calls it once a list is on screen; with `BRIGHTRUN_PAINT_MARKS` set it prints `painted
/// <what>` on stdout, as the benchmark's hello-world anchor does. Otherwise it does nothing.
#[tauri::command]
#[specta::specta]
pub fn mark_painted(what: String) {
    use std::io::Write as _;
    crate::startup_step(&format!("painted {what}"));
    if std::env::var_os("BRIGHTRUN_PAINT_MARKS").is_some() {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "painted {what}");
        let _ = out.flush();
    }
}

// --- Jobs ------------------------------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn gpu_types(shell: State<'_, Shell>, refresh: Refresh) -> Answer<Listing<GpuType>> {
    Ok(jobs::gpu_types(&*shell.app().await?, refresh).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn presets(shell: State<'_, Shell>, refresh: Refresh) -> Answer<Listing<TrainingPreset>> {
    Ok(jobs::presets(&*shell.app().await?, refresh).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn check_job(shell: State<'_, Shell>, draft: JobDraft) -> Answer<DraftCheck> {
    Ok(jobs::check(&*shell.app().await?, draft).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn estimate_job(shell: State<'_, Shell>, draft: JobDraft) -> Answer<CostEstimate> {
    Ok(jobs::estimate(&*shell.app().await?, draft).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn create_job(shell: State<'_, Shell>, draft: JobDraft) -> Answer<CreatedJob> {
    let created = jobs::create(&*shell.app().await?, draft).await?;
    shell.notify(Notice::Jobs(vec![created.job.clone()]));
    shell.poll_now();
    Ok(created)
}

#[tauri::command]
#[specta::specta]
pub async fn list_jobs(shell: State<'_, Shell>, request: ListJobs) -> Answer<Listing<TrainingJob>> {
    Ok(jobs::list(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn show_job(shell: State<'_, Shell>, request: JobRef) -> Answer<TrainingJob> {
    Ok(jobs::show(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn cancel_job(shell: State<'_, Shell>, request: JobRef) -> Answer<TrainingJob> {
    let job = jobs::cancel(&*shell.app().await?, request).await?;
    shell.notify(Notice::Jobs(vec![job.clone()]));
    shell.poll_now();
    Ok(job)
}

#[tauri::command]
#[specta::specta]
pub async fn clone_job(shell: State<'_, Shell>, request: JobRef) -> Answer<JobDraft> {
    Ok(jobs::clone(&*shell.app().await?, request).await?)
}

/// A job's chart (or several jobs' training loss) as SVG, in the window's theme.
#[tauri::command]
#[specta::specta]
pub async fn job_chart(shell: State<'_, Shell>, request: ChartRequest) -> Answer<DrawnChart> {
    Ok(shell.curves().draw(&*shell.app().await?, request).await?)
}

/// The same chart as a PNG file at `path` (chosen in the save dialog).
#[tauri::command]
#[specta::specta]
pub async fn export_chart(
    shell: State<'_, Shell>,
    request: ChartRequest,
    path: std::path::PathBuf,
) -> Answer<()> {
    let app = shell.app().await?;
    Ok(shell.curves().export_png(&app, request, &path).await?)
}

/// Starts watching the signed-in user's jobs (job, metrics, outcome and connection events).
#[tauri::command]
#[specta::specta]
pub async fn watch_jobs(shell: State<'_, Shell>) -> Answer<()> {
    Ok(shell.watch().await?)
}

/// The window was shown or hidden: the watcher polls fast only while someone looks.
#[tauri::command]
#[specta::specta]
pub async fn window_visible(shell: State<'_, Shell>, visible: bool) -> Answer<()> {
    shell.set_visibility(if visible {
        Visibility::Foreground
    } else {
        Visibility::Background
    });
    Ok(())
}

// --- Models ----------------------------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn list_models(shell: State<'_, Shell>) -> Answer<Vec<ModelArtifact>> {
    Ok(models::list(&*shell.app().await?).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn show_model(shell: State<'_, Shell>, request: ModelRef) -> Answer<ModelArtifact> {
    Ok(models::show(&*shell.app().await?, request).await?)
}

/// Downloads every file of a model, each verified against its SHA-256; cancellable as
/// `transfer`, resumable after a restart.
#[tauri::command]
#[specta::specta]
pub async fn download_model(
    shell: State<'_, Shell>,
    request: DownloadModel,
    transfer: String,
    progress: Channel<Progress>,
) -> Answer<DownloadedModel> {
    let app = shell.app().await?;
    let cancel = shell.begin(&transfer);
    let result = models::download(&app, request, Some(sink(progress)), &cancel).await;
    shell.end(&transfer);
    Ok(result?)
}

/// The folder `model` (as the window shows it) downloads into unless the user picks another: `<download folder>/<model
/// name>`, the download folder being the preferences' choice or `~/Downloads/BrightRun`.
#[tauri::command]
#[specta::specta]
pub async fn model_folder(
    shell: State<'_, Shell>,
    model: ModelArtifact,
) -> Answer<std::path::PathBuf> {
    Ok(models::default_dir(&*shell.app().await?, &model).await?)
}

/// Opens a folder (a downloaded model's) in the file manager.
#[tauri::command]
#[specta::specta]
pub async fn open_folder(path: std::path::PathBuf) -> Answer<()> {
    if !path.is_dir() {
        return Err(brightrun_client::Error::InvalidInput(format!(
            "{} is not a folder",
            path.display()
        ))
        .into());
    }
    tauri_plugin_opener::open_path(&path, None::<&str>)
        .map_err(|e| brightrun_client::Error::Io(std::io::Error::other(e.to_string())).into())
}

// --- Notifications and costs -----------------------------------------------------------------

#[tauri::command]
#[specta::specta]
pub async fn list_notifications(
    shell: State<'_, Shell>,
    request: ListNotifications,
) -> Answer<Vec<Notification>> {
    Ok(notifications::list(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn mark_notifications_read(
    shell: State<'_, Shell>,
    request: MarkRead,
) -> Answer<MarkedRead> {
    Ok(notifications::mark_read(&*shell.app().await?, request).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn cost_month(shell: State<'_, Shell>, request: CostMonth) -> Answer<CostReport> {
    Ok(costs::month(&*shell.app().await?, request).await?)
}
