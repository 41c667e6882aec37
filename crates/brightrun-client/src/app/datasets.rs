//! Datasets: local validation and conversion, resumable upload, and the list the server keeps.

use std::path::{Path, PathBuf};

use brightrun_core::dataset::{
    ContextWindow, ConversionError, ConversionSummary, FormatGuess, HeadExtent, convert_v3_to_v4,
    detect_format,
};
use brightrun_core::{
    DATASET_EXTENSIONS, DATASET_MAX_BYTES, Dataset, DatasetStatus, ModelTokenizer, ValidationMode,
    ValidationOptions, ValidationReport, known_context_length,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::DatasetChanges;
use crate::app::{App, CancellationToken, Listing, ProgressFn, Refresh, cancellable};
use crate::error::{Error, Result};
use crate::transfer::upload::validate_report;
use crate::transfer::{UploadOptions, UploadOutcome, UploadRequest, UploadStateStore, Uploader};

/// A local dataset file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct LocalFile {
    pub path: PathBuf,
}

/// A dataset of the caller's, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DatasetRef {
    pub id: Uuid,
}

/// Refuses, before any work, a file the server would refuse: not a JSONL file by its name, or
/// over the datasets bucket's size limit. Returns its size.
pub fn check_file(path: &Path) -> Result<u64> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let extension = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if !DATASET_EXTENSIONS.contains(&extension.as_str()) {
        return Err(Error::UnsupportedFile(format!(
            "{name} is not a JSONL dataset: expected a .jsonl file (one JSON conversation per line)"
        )));
    }
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(Error::UnsupportedFile(format!("{name} is not a file")));
    }
    if meta.len() > DATASET_MAX_BYTES {
        return Err(Error::FileTooLarge(format!(
            "{name} is {:.1} MB; datasets can be at most {} MB",
            meta.len() as f64 / 1_048_576.0,
            DATASET_MAX_BYTES / 1_048_576
        )));
    }
    Ok(meta.len())
}

/// Bytes of a file [`inspect`] reads.
const HEAD_BYTES: usize = 64 * 1024;

/// A look at the start of a local file, at once: its format by the first lines that name one
/// (what a drop target decides on before sending: a ShareGPT file is offered conversion).
/// Reads at most 64 KiB; nothing is sent. [`upload`] checks the whole file as it sends it.
pub async fn inspect(_app: &App, request: LocalFile) -> Result<FormatGuess> {
    check_file(&request.path)?;
    let path = request.path;
    tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut head = Vec::with_capacity(HEAD_BYTES + 1);
        std::fs::File::open(&path)?
            .take(HEAD_BYTES as u64 + 1)
            .read_to_end(&mut head)?;
        let extent = if head.len() > HEAD_BYTES {
            head.truncate(HEAD_BYTES);
            HeadExtent::Prefix
        } else {
            HeadExtent::WholeFile
        };
        Ok(detect_format(&head, extent))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

/// The full local report: every error and warning with line, field and suggestion, and the
/// statistics (token counts from cl100k). Nothing is sent.
pub async fn validate(
    app: &App,
    request: LocalFile,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<ValidationReport> {
    validate_with(app, ValidateFile::full(request.path), progress, cancel).await
}

/// The check [`upload`] makes before sending the file, alone: what a front end shows between a
/// drop and the upload (the structural pass from [`STRUCTURAL_FROM_BYTES`] on, the full report
/// below). Nothing is sent.
pub async fn precheck(
    app: &App,
    request: LocalFile,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<ValidationReport> {
    let mode = upload_mode(&request.path, None);
    let request = ValidateFile {
        mode,
        ..ValidateFile::full(request.path)
    };
    validate_with(app, request, progress, cancel).await
}

/// How [`upload`] checks a file: `structural` when given, else by the file's size.
fn upload_mode(path: &std::path::Path, structural: Option<bool>) -> ValidationMode {
    let structural = structural
        .unwrap_or_else(|| std::fs::metadata(path).is_ok_and(|m| m.len() >= STRUCTURAL_FROM_BYTES));
    if structural {
        ValidationMode::Structural
    } else {
        ValidationMode::Full
    }
}

/// A local validation with a choice of what it computes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateFile {
    pub path: PathBuf,
    /// [`ValidationMode::Structural`]: every rule but the context check, no token figures.
    #[serde(default)]
    pub mode: ValidationMode,
    /// The base model the data is for: tokens are counted with its tokenizer where
    /// [`ModelTokenizer::for_model`] has it (cl100k_base otherwise; the report names the one
    /// used), and conversations are checked against its context length where
    /// [`known_context_length`] knows it.
    #[serde(default)]
    pub base_model: Option<String>,
}

impl ValidateFile {
    pub fn full(path: PathBuf) -> Self {
        Self {
            path,
            mode: ValidationMode::Full,
            base_model: None,
        }
    }
}

/// [`validate`] with a [`ValidateFile`]'s choices. The file is not hashed (nothing is sent).
pub async fn validate_with(
    _app: &App,
    request: ValidateFile,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<ValidationReport> {
    check_file(&request.path)?;
    let model = request.base_model.as_deref();
    let context_window = model.and_then(|model| {
        Some(ContextWindow {
            base_model: model.to_owned(),
            max_tokens: u64::from(known_context_length(model)?),
        })
    });
    let options = ValidationOptions {
        mode: request.mode,
        context_window,
        ..ValidationOptions::default()
    };
    let tokenizer = ModelTokenizer::for_model(model);
    validate_report(&request.path, &options, tokenizer, progress, cancel).await
}

/// Convert a ShareGPT (v3) file to the `messages` format (v4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ConvertFile {
    pub input: PathBuf,
    /// Where the v4 file goes; next to the input as `<stem>.v4.jsonl` when `None`.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Replace `output` if it exists.
    #[serde(default)]
    pub overwrite: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Converted {
    pub output: PathBuf,
    #[serde(flatten)]
    pub summary: ConversionSummary,
}

/// Rewrites a v3 file as v4 in one pass (`brightrun_core::dataset::convert_v3_to_v4`). The
/// output is written beside it under a temporary name and renamed when complete, so a failed
/// conversion leaves no half file; an existing output is kept unless `overwrite`.
pub async fn convert(_app: &App, request: ConvertFile) -> Result<Converted> {
    check_file(&request.input)?;
    let output = request.output.clone().unwrap_or_else(|| {
        let stem = request
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".into());
        request.input.with_file_name(format!("{stem}.v4.jsonl"))
    });
    if output == request.input {
        return Err(Error::InvalidInput(
            "the output would replace the input; name another file".into(),
        ));
    }
    if !request.overwrite && output.exists() {
        return Err(Error::InvalidInput(format!(
            "{} exists; choose another name or allow overwriting (--force)",
            output.display()
        )));
    }
    let input = request.input.clone();
    let target = output.clone();
    let summary = tokio::task::spawn_blocking(move || -> Result<ConversionSummary> {
        let reader = std::io::BufReader::new(std::fs::File::open(&input)?);
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty());
        let mut temp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))?;
        let summary = {
            let writer = std::io::BufWriter::new(temp.as_file_mut());
            convert_v3_to_v4(reader, writer, ValidationOptions::default().max_line_bytes).map_err(
                |e| match e {
                    ConversionError::Read { source, .. } | ConversionError::Write(source) => {
                        Error::Io(source)
                    }
                    other => Error::InvalidInput(format!(
                        "{}: {other}; validate it to see every problem",
                        input.display()
                    )),
                },
            )?
        };
        temp.as_file().sync_all()?;
        temp.persist(&target).map_err(|e| Error::Io(e.error))?;
        Ok(summary)
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    Ok(Converted { output, summary })
}

/// Upload a local file as a new dataset (or resume its interrupted upload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct UploadDataset {
    pub path: PathBuf,
    /// The dataset's name; the file name without extension when `None`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// A new dataset even if this exact file was uploaded before.
    #[serde(default)]
    pub new: bool,
    /// The check made while the file is sent (its last chunk waits for it): `true` every rule
    /// but token counting
    /// ([`ValidationMode::Structural`]), `false` the full report with exact token counts.
    /// `None`: structural for files of [`STRUCTURAL_FROM_BYTES`] or more, full below. The
    /// worker validates every upload in full on the server either way, and its report (token
    /// counts, context warnings) is the dataset's.
    #[serde(default)]
    pub structural: Option<bool>,
    /// Bytes per PATCH (tests; the default is what Supabase requires).
    #[serde(default, skip)]
    pub chunk_size: Option<u64>,
}

/// From this size on, an upload's own check is the structural pass: exact token counts cost
/// ~25 CPU-s per GB, several times the transfer on a fast link, and the worker counts them on
/// the server anyway.
pub const STRUCTURAL_FROM_BYTES: u64 = 64 * 1024 * 1024;

fn uploader(
    app: &App,
    api: crate::api::Api,
    chunk_size: Option<u64>,
    mode: ValidationMode,
) -> Uploader {
    let mut options = UploadOptions {
        retry: app.config().retry.transfers,
        ..UploadOptions::default()
    };
    options.validation.mode = mode;
    if let Some(chunk) = chunk_size {
        options.chunk_size = chunk.max(1);
    }
    Uploader::with_api(api, UploadStateStore::from_local(app.db()), options)
}

/// Validates and uploads a file; a file with errors uploads nothing ([`Error::Invalid`], with
/// the report). Interrupted (cancelled, killed, cut off), it resumes from the server's offset
/// when run again, into the same dataset.
pub async fn upload(
    app: &App,
    request: UploadDataset,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<UploadOutcome> {
    check_file(&request.path)?;
    let mode = upload_mode(&request.path, request.structural);
    let uploader = uploader(app, app.api().await?, request.chunk_size, mode);
    let upload = UploadRequest {
        path: request.path,
        name: request.name,
        description: request.description,
        format: None,
        force_new: request.new,
    };
    cancellable(cancel, uploader.upload(&upload, progress)).await
}

/// An upload that has not finished: what `upload` of its file resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct InterruptedUpload {
    pub path: PathBuf,
    pub dataset_name: String,
    pub dataset_id: Option<Uuid>,
    pub bytes: u64,
    /// Bytes the server confirmed.
    pub confirmed: u64,
    /// Whether the file is still there, unchanged in size.
    pub file_present: bool,
}

/// The uploads of the signed-in user that did not finish, oldest first.
pub async fn interrupted(app: &App) -> Result<Vec<InterruptedUpload>> {
    let api = app.api().await?;
    let records = uploader(app, api, None, ValidationMode::Full)
        .unfinished()
        .await?;
    Ok(records
        .into_iter()
        .map(|r| {
            let path = PathBuf::from(&r.file_path);
            let file_present =
                std::fs::metadata(&path).is_ok_and(|m| m.len() == r.fingerprint.size);
            InterruptedUpload {
                dataset_name: r.dataset_name,
                dataset_id: r.dataset_id.and_then(|id| id.parse().ok()),
                bytes: r.fingerprint.size,
                confirmed: r.confirmed_offset,
                file_present,
                path,
            }
        })
        .collect())
}

/// Which datasets to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ListDatasets {
    #[serde(default)]
    pub refresh: Refresh,
    /// Case-insensitive part of the name or file name.
    #[serde(default)]
    pub search: Option<String>,
    #[serde(default)]
    pub status: Option<DatasetStatus>,
}

/// The caller's datasets, newest first: from the server (which updates the local cache), or
/// from the cache alone, at once and offline.
pub async fn list(app: &App, request: ListDatasets) -> Result<Listing<Dataset>> {
    let user = match request.refresh {
        Refresh::Cache => app.user_id().await?,
        Refresh::Server => app.session().await?.user_id(),
    };
    let db = app.db();
    let stale = match request.refresh {
        Refresh::Cache => true,
        Refresh::Server => {
            let api = app.api().await?;
            let fetched_at = Utc::now();
            match db.datasets_cursor(user).await? {
                Some(cursor) => {
                    let changed = api.datasets_changed_since(Some(cursor)).await?;
                    db.merge_datasets(user, &changed, fetched_at).await?;
                }
                None => {
                    let all = api.list_datasets().await?;
                    db.replace_datasets(user, &all, fetched_at).await?;
                }
            }
            false
        }
    };
    let cached = db.cached_datasets(user).await?;
    let search = request.search.as_deref().map(str::to_lowercase);
    let mut items: Vec<Dataset> = cached
        .items
        .into_iter()
        .filter(|d| d.deleted_at.is_none())
        .filter(|d| request.status.as_ref().is_none_or(|s| &d.status == s))
        .filter(|d| {
            search.as_deref().is_none_or(|q| {
                d.name.to_lowercase().contains(q) || d.file_name.to_lowercase().contains(q)
            })
        })
        .collect();
    items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(Listing {
        items,
        stale,
        fetched_at: cached.fetched_at,
    })
}

/// One dataset: status, statistics, samples, the server's validation errors.
pub async fn show(app: &App, request: DatasetRef) -> Result<Dataset> {
    app.api().await?.dataset(request.id).await
}

/// Follows a dataset the server is validating: calls `on_change` with each new version of the
/// row (every `interval`), and returns the row once it is `ready` or `error` (or deleted).
/// Passing network failures are waited out; the caller bounds the wait if it must.
pub async fn follow(
    app: &App,
    request: DatasetRef,
    interval: std::time::Duration,
    mut on_change: impl FnMut(&Dataset),
) -> Result<Dataset> {
    let mut last: Option<Dataset> = None;
    loop {
        match app.api().await?.dataset(request.id).await {
            Ok(dataset) => {
                if last.as_ref() != Some(&dataset) {
                    on_change(&dataset);
                }
                let settled = matches!(dataset.status, DatasetStatus::Ready | DatasetStatus::Error)
                    || dataset.deleted_at.is_some();
                if settled {
                    return Ok(dataset);
                }
                last = Some(dataset);
            }
            Err(e) if e.is_retryable() => {
                tracing::debug!(code = e.code().as_str(), "following a dataset: retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

/// A new name or description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct RenameDataset {
    pub id: Uuid,
    #[serde(default)]
    pub name: Option<String>,
    /// `Some(None)` clears the description.
    #[serde(default)]
    pub description: Option<Option<String>>,
}

/// Renames or re-describes a dataset (the only columns a user may change).
pub async fn rename(app: &App, request: RenameDataset) -> Result<Dataset> {
    if let Some(name) = &request.name
        && name.trim().is_empty()
    {
        return Err(Error::InvalidInput("a dataset needs a name".into()));
    }
    let changes = DatasetChanges {
        name: request.name.map(|n| n.trim().to_owned()),
        description: request.description,
    };
    app.api().await?.update_dataset(request.id, &changes).await
}

/// Deletes a dataset (refused while an unfinished job uses it).
pub async fn delete(app: &App, request: DatasetRef) -> Result<Dataset> {
    app.api().await?.delete_dataset(request.id).await
}
