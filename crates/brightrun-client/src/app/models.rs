//! Trained adapters: the list, one model, and its files downloaded and verified.

use std::path::PathBuf;

use brightrun_core::ModelArtifact;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::app::{App, CancellationToken, ProgressFn, cancellable, prefs};
use crate::error::{Error, ErrorCode, Result};
use crate::transfer::{DownloadOptions, Downloaded, Downloader, sanitize_file_name};

/// A model by its id, or by the id of the job that trained it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ModelRef {
    pub id: Uuid,
}

/// The caller's trained adapters, newest first.
pub async fn list(app: &App) -> Result<Vec<ModelArtifact>> {
    app.api().await?.list_model_artifacts().await
}

/// One model, by its id or its job's. Only a "not found" of the first look-up leads to the
/// second; any other failure (offline, signed out) is reported as it is.
pub async fn show(app: &App, request: ModelRef) -> Result<ModelArtifact> {
    let api = app.api().await?;
    match api.model_artifact(request.id).await {
        Ok(model) => Ok(model),
        Err(e) if e.code() == ErrorCode::NotFound => {
            match api.model_artifact_for_job(request.id).await? {
                Some(model) => Ok(model),
                None => Err(Error::Api(crate::error::ApiError {
                    service: crate::error::Service::Rest,
                    status: 404,
                    code: "PGRST116".into(),
                    message: format!("no model and no job with a model has the id {}", request.id),
                    details: None,
                    hint: Some("`models list` shows your models and their jobs".into()),
                    retry_after: None,
                })),
            }
        }
        Err(e) => Err(e),
    }
}

/// Where a model downloads unless the user names a folder: `<download folder>/<model name>`.
pub async fn default_dir(app: &App, model: &ModelArtifact) -> Result<PathBuf> {
    let base = prefs::get(app).await?.download_dir(app);
    let name = sanitize_file_name(&model.name).unwrap_or_else(|| model.id.to_string());
    Ok(base.join(name))
}

/// Download a model's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DownloadModel {
    /// The model's id, or its job's.
    pub id: Uuid,
    /// The folder; `<download folder>/<model name>` when `None` (see the preferences).
    #[serde(default)]
    pub to: Option<PathBuf>,
    /// Download files the server recorded no SHA-256 for (they are marked unverified).
    #[serde(default)]
    pub allow_unverified: bool,
    /// Files at least this large are fetched in parallel segments (tests).
    #[serde(default, skip)]
    pub segment_threshold: Option<u64>,
}

/// A downloaded model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DownloadedModel {
    pub model_id: Uuid,
    pub dir: PathBuf,
    pub files: Vec<Downloaded>,
}

/// Downloads every file of a model into a folder: ranged and resumable (`.part` files survive
/// a restart), each SHA-256 checked against the manifest before the file takes its name.
pub async fn download(
    app: &App,
    request: DownloadModel,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<DownloadedModel> {
    let model = show(app, ModelRef { id: request.id }).await?;
    let dir = match request.to {
        Some(dir) => dir,
        None => default_dir(app, &model).await?,
    };
    let mut options = DownloadOptions {
        require_digest: !request.allow_unverified,
        retry: app.config().retry.transfers,
        ..DownloadOptions::default()
    };
    if let Some(threshold) = request.segment_threshold {
        options.segment_threshold = threshold;
    }
    let downloader = Downloader::with_api(app.api().await?, options);
    let files = cancellable(
        cancel,
        downloader.download_manifest(&model.artifacts, &dir, progress),
    )
    .await?;
    Ok(DownloadedModel {
        model_id: model.id,
        dir,
        files,
    })
}
