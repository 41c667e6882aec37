//! The commands the window calls: one-line adapters over `brightrun_client::app`, plus the
//! shell's own (the project choice, cancelling a transfer). Errors cross as [`WireError`].

use std::sync::Arc;
use std::time::Duration;

use brightrun_client::WireError;
use brightrun_client::app::auth::{self, Account, Credentials, SessionStatus, SignedOut, SignedUp};
use brightrun_client::app::datasets::{
    self, ConvertFile, Converted, DatasetRef, InterruptedUpload, ListDatasets, LocalFile,
    RenameDataset, UploadDataset,
};
use brightrun_client::app::prefs::{self, Preferences};
use brightrun_client::app::{Listing, ProgressFn, check_project};
use brightrun_client::transfer::{Progress, UploadOutcome};
use brightrun_core::{Dataset, ValidationReport};
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
    let result = datasets::validate(&app, request, Some(sink(progress)), &cancel).await;
    shell.end(&transfer);
    Ok(result?)
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
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(900), follow).await {
            tracing::warn!(code = e.code().as_str(), "stopped following a dataset");
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
    Ok(prefs::get(&*shell.app().await?).await?)
}

#[tauri::command]
#[specta::specta]
pub async fn set_preferences(
    shell: State<'_, Shell>,
    preferences: Preferences,
) -> Answer<Preferences> {
    Ok(prefs::set(&*shell.app().await?, preferences).await?)
}
