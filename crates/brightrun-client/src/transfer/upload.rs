//! Dataset uploads: the check and a signed TUS upload side by side, then register and confirm.
//!
//! 1. The dataset's id is chosen here, so its object path (`{user}/{id}/{file}`, the server's
//!    rule: `brightrun_core::dataset_storage_path`) is known before its row exists.
//! 2. Two things run at once: the file is read through the validator (every error, with its
//!    line) and fingerprinted in the same pass (size, mtime, SHA-256 of the whole file); and a
//!    signed TUS upload to that path (`brightrun_supabase::tus`, the loop the worker uploads
//!    adapters with) sends 6 MiB PATCHes read from disk, a HEAD after any failure, tokens
//!    renewed.
//! 3. The PATCH that would complete the object waits for the verdict. A file with errors stops
//!    the transfer, which is terminated: no dataset row, no object, the full report
//!    ([`Error::Invalid`]). A file that passed is registered (`create_dataset` with the chosen
//!    id; idempotent, so a run that died before hearing the answer just calls it again), then
//!    its last chunk goes.
//! 4. `confirm_dataset_upload` hands the dataset to the worker.
//!
//! Every step the server confirmed is written to `upload_state` first, so running the same
//! upload again after a crash, a cut or a restart continues the same dataset; the SHA-256 the
//! upload began with must still be the file's before its last chunk goes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brightrun_core::dataset::validate_with_progress;
use brightrun_core::{
    ByteTokenizer, CreateDatasetInput, Dataset, DatasetFormat, ModelTokenizer, Tokenizer,
    ValidationMode, ValidationOptions, ValidationReport,
};
use brightrun_supabase::tus::{ResumableUpload, TusAuth, TusHooks, TusMetadata, TusOptions};
use brightrun_supabase::{ApiError, RetryPolicy};
use futures::future::BoxFuture;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use crate::api::Api;
use crate::error::{Error, Result};
use crate::secret::Secret;
use crate::session::Session;
use crate::transfer::progress::{Meter, Phase, Progress, ProgressFn};
use crate::transfer::state::{DatasetTarget, Fingerprint, Stage, UploadRecord, UploadStateStore};

/// What to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadRequest {
    pub path: PathBuf,
    /// The dataset's display name; the file name without extension when `None`.
    pub name: Option<String>,
    pub description: Option<String>,
    /// The format detected by the validator when `None`.
    pub format: Option<DatasetFormat>,
    /// Make a new dataset even if this exact file was uploaded before.
    pub force_new: bool,
}

impl UploadRequest {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            name: None,
            description: None,
            format: None,
            force_new: false,
        }
    }
}

/// How to upload. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Bytes per PATCH. 6 MiB, what Supabase's TUS endpoint requires; the last may be smaller.
    pub chunk_size: u64,
    pub retry: RetryPolicy,
    pub validation: ValidationOptions,
    /// Declared type of the object. `application/jsonl` (the bucket refuses binaries).
    pub content_type: String,
    /// Bound on one PATCH (request and answer). 10 min: 6 MiB at 10 KiB/s.
    pub patch_timeout: Duration,
    /// Bound on every other request. 60 s.
    pub request_timeout: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        let tus = TusOptions::default();
        Self {
            chunk_size: tus.chunk_size,
            retry: tus.retry,
            validation: ValidationOptions::default(),
            content_type: "application/jsonl".to_owned(),
            patch_timeout: tus.patch_timeout,
            request_timeout: tus.request_timeout,
        }
    }
}

impl UploadOptions {
    fn tus(&self) -> TusOptions {
        TusOptions {
            chunk_size: self.chunk_size.max(1),
            retry: self.retry,
            patch_timeout: self.patch_timeout,
            request_timeout: self.request_timeout,
            ..TusOptions::default()
        }
    }
}

/// What an upload ended with.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct UploadOutcome {
    pub dataset_id: Uuid,
    /// The dataset row as `confirm_dataset_upload` returned it, when this run confirmed it.
    pub dataset: Option<Dataset>,
    /// The local validation report (warnings and statistics).
    pub report: ValidationReport,
    /// The byte offset this run started at when it resumed an earlier one.
    pub resumed_from: Option<u64>,
    /// This exact file had already been uploaded and confirmed as `dataset_id`; nothing was sent.
    pub already_uploaded: bool,
    pub bytes: u64,
}

/// Gets a signed upload token for `(bucket, path)`. The default asks Storage
/// ([`Storage::sign_upload`]); tests put their own in front.
pub type SignFn = Arc<dyn Fn(String, String) -> BoxFuture<'static, Result<Secret>> + Send + Sync>;

/// A signed upload token for `bucket/path`, with `session`'s access token.
pub async fn sign_upload(session: &Arc<Session>, bucket: &str, path: &str) -> Result<Secret> {
    Ok(Api::new(session.clone())
        .storage()
        .sign_upload(bucket, path)
        .await?)
}

/// Uploads datasets for one session.
pub struct Uploader {
    api: Api,
    store: UploadStateStore,
    options: UploadOptions,
    signer: SignFn,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    pub fn new(session: Arc<Session>, store: UploadStateStore, options: UploadOptions) -> Self {
        Self::with_api(Api::new(session), store, options)
    }

    pub fn with_api(api: Api, store: UploadStateStore, options: UploadOptions) -> Self {
        let signer: SignFn = {
            let storage = api.storage().clone();
            Arc::new(move |bucket, path| {
                let storage = storage.clone();
                Box::pin(async move { Ok(storage.sign_upload(&bucket, &path).await?) })
            })
        };
        Self {
            api,
            store,
            options,
            signer,
        }
    }

    /// Replaces where signed tokens come from (tests: expired tokens, counting).
    pub fn with_signer(mut self, signer: SignFn) -> Self {
        self.signer = signer;
        self
    }

    pub fn session(&self) -> &Arc<Session> {
        self.api.session()
    }

    /// Validates and uploads `request.path`, resuming an earlier upload of the same file.
    ///
    /// The check and the transfer run side by side: bytes go while the file is read through
    /// the validator (and hashed), and the PATCH that would complete the object waits for the
    /// verdict. Only a file that passed is registered (`create_dataset` with the id chosen at
    /// the start) and completed; a file with errors ends the transfer, which is then terminated,
    /// so it leaves no dataset row and no object ([`Error::Invalid`], with the report).
    pub async fn upload(
        &self,
        request: &UploadRequest,
        progress: Option<ProgressFn>,
    ) -> Result<UploadOutcome> {
        let path = std::fs::canonicalize(&request.path)?;
        let meta = std::fs::metadata(&path)?;
        let (size, mtime) = (meta.len(), mtime_ns(&meta));
        let session = self.api.session();
        let project_url = session.project().url.as_str().to_owned();
        let user_id = session.user_id();
        let file_path = path.to_string_lossy().into_owned();
        let name = dataset_name(request, &path);
        let file_name = storage_file_name(&request.path);
        let same_file =
            |r: &UploadRecord| r.fingerprint.size == size && r.fingerprint.mtime_ns == mtime;

        let existing = self
            .store
            .find(&project_url, &user_id.to_string(), &file_path)
            .await?;
        let record = match existing {
            Some(r) if r.stage == Stage::Confirmed && same_file(&r) && !request.force_new => {
                // Uploaded before: nothing is sent if the file's SHA-256 is still the same.
                let (report, fingerprint) = validate_file(
                    &path,
                    &self.options.validation,
                    progress.clone(),
                    &Default::default(),
                )
                .await?;
                if fingerprint == r.fingerprint {
                    if !report.is_valid() {
                        return Err(Error::Invalid(Box::new(report)));
                    }
                    return Ok(UploadOutcome {
                        dataset_id: parse_uuid(r.dataset_id.as_deref())?,
                        dataset: None,
                        report,
                        resumed_from: None,
                        already_uploaded: true,
                        bytes: size,
                    });
                }
                None
            }
            Some(r) if r.stage == Stage::Confirmed => None,
            Some(r) if same_file(&r) && r.stage != Stage::Creating && r.dataset_id.is_some() => {
                Some(r)
            }
            Some(stale) => {
                self.abandon(&stale).await;
                None
            }
            None => None,
        };
        let resumed = record.is_some();
        let record = match record {
            Some(r) => r,
            None => {
                // The dataset's id is chosen here, so the bytes can go before its row exists.
                let dataset = DatasetTarget::new(user_id, &file_name);
                let fingerprint = Fingerprint {
                    size,
                    mtime_ns: mtime,
                    sha256: String::new(),
                };
                self.store
                    .start(
                        &project_url,
                        &user_id.to_string(),
                        &file_path,
                        &fingerprint,
                        &name,
                        &dataset,
                    )
                    .await?
            }
        };

        let meter = Arc::new(Mutex::new(Meter::new(progress.clone(), size)));
        let held = Arc::new(AtomicBool::new(false));
        let validated = Arc::new(AtomicU64::new(0));
        let check_progress: ProgressFn = {
            let (held, validated) = (held.clone(), validated.clone());
            Arc::new(move |p: &Progress| {
                validated.store(p.bytes, Ordering::Relaxed);
                // The check's own reports show only while the transfer waits for it.
                if let Some(sink) = &progress
                    && held.load(Ordering::Relaxed)
                {
                    sink(p);
                }
            })
        };
        let stop_check = CancellationToken::new();
        let _stop_check_on_drop = stop_check.clone().drop_guard();
        let refused = CancellationToken::new();
        let (verdict_tx, verdict_rx) = tokio::sync::watch::channel(None);
        let check = async {
            let checked = validate_file(
                &path,
                &self.options.validation,
                Some(check_progress),
                &stop_check,
            )
            .await;
            match &checked {
                Ok((report, fingerprint)) if report.is_valid() => {
                    verdict_tx.send_replace(Some(Verdict {
                        fingerprint: fingerprint.clone(),
                        format: report.format.clone(),
                    }));
                }
                _ => refused.cancel(),
            }
            checked
        };
        let mut run = Run {
            up: self,
            path: path.clone(),
            file_name,
            description: request.description.clone(),
            format: request.format.clone(),
            record,
            meter,
            resumed_from: None,
            verdict: verdict_rx,
            held,
            validated,
            registered: false,
        };
        let transfer = async {
            tokio::select! {
                sent = run.drive() => Some(sent),
                () = refused.cancelled() => None,
            }
        };
        let (checked, sent) = tokio::join!(check, transfer);
        let report = match checked {
            Ok((report, _)) if !report.is_valid() => {
                self.discard(&run.record).await;
                return Err(Error::Invalid(Box::new(report)));
            }
            Ok((report, _)) => report,
            // The check could not finish (the file changed or could not be read): what the
            // server confirmed stays, for a later run to resume or abandon.
            Err(e) => return Err(e),
        };
        let dataset = sent.ok_or_else(|| Error::Protocol("the upload stopped".into()))??;
        Ok(UploadOutcome {
            dataset_id: parse_uuid(run.record.dataset_id.as_deref())?,
            dataset,
            report,
            resumed_from: run.resumed_from.filter(|_| resumed),
            already_uploaded: false,
            bytes: size,
        })
    }

    /// Uploads of this user that have not finished (what `upload` would resume).
    pub async fn unfinished(&self) -> Result<Vec<UploadRecord>> {
        let session = self.api.session();
        self.store
            .unfinished(
                session.project().url.as_str(),
                &session.user_id().to_string(),
            )
            .await
    }

    /// The file changed since its upload began: end its unfinished transfer and soft-delete its
    /// dataset if it was registered (best effort: a failure leaves an `uploading` row, which
    /// the user can delete), and forget it.
    async fn abandon(&self, stale: &UploadRecord) {
        if stale.stage != Stage::Confirmed {
            self.terminate(stale).await;
            if let Some(id) = stale.dataset_id.as_deref().and_then(|s| s.parse().ok()) {
                match self.api.delete_dataset(id).await {
                    // Never registered: the file had not passed its check yet.
                    Err(e) if e.code() == crate::error::ErrorCode::NotFound => {}
                    Err(e) => {
                        tracing::warn!(dataset = %id, error = %e, "could not delete an abandoned upload's dataset");
                    }
                    Ok(_) => {}
                }
            }
        }
        if let Err(e) = self.store.delete(stale.id).await {
            tracing::warn!(error = %e, "could not forget an abandoned upload");
        }
    }

    /// The file failed its check while its bytes were going: end the transfer, so the server
    /// drops what it holds (no object ever appears, and no dataset row was made), and forget it.
    async fn discard(&self, record: &UploadRecord) {
        self.terminate(record).await;
        if let Err(e) = self.store.delete(record.id).await {
            tracing::warn!(error = %e, "could not forget a refused upload");
        }
    }

    /// Terminates the record's unfinished TUS upload, if it has one (best effort).
    async fn terminate(&self, record: &UploadRecord) {
        let (Some(url), Some(bucket), Some(object)) = (
            record.tus_url.as_deref(),
            record.storage_bucket.clone(),
            record.storage_path.clone(),
        ) else {
            return;
        };
        let ended = async {
            let url =
                Url::parse(url).map_err(|e| Error::Protocol(format!("stored TUS URL: {e}")))?;
            let token = (self.signer)(bucket, object).await?;
            brightrun_supabase::tus::terminate(
                self.api.storage(),
                &url,
                &TusAuth::Signed(token),
                self.options.request_timeout,
            )
            .await?;
            Ok::<_, Error>(())
        };
        if let Err(e) = ended.await {
            tracing::warn!(error = %e, "could not end an unfinished upload on the server");
        }
    }
}

/// What the check beside the transfer concluded about a file that passed.
#[derive(Debug, Clone)]
struct Verdict {
    fingerprint: Fingerprint,
    format: Option<DatasetFormat>,
}

/// One run of the upload state machine.
struct Run<'a> {
    up: &'a Uploader,
    path: PathBuf,
    file_name: String,
    description: Option<String>,
    /// The format to register; the one the check detected when `None`.
    format: Option<DatasetFormat>,
    record: UploadRecord,
    meter: Arc<Mutex<Meter>>,
    resumed_from: Option<u64>,
    /// Set once the file passed its check.
    verdict: tokio::sync::watch::Receiver<Option<Verdict>>,
    /// The transfer is waiting for the check (its progress is what shows).
    held: Arc<AtomicBool>,
    /// Bytes the check has read.
    validated: Arc<AtomicU64>,
    /// `create_dataset` answered for this run.
    registered: bool,
}

impl Run<'_> {
    async fn drive(&mut self) -> Result<Option<Dataset>> {
        loop {
            match self.record.stage {
                Stage::Creating => {
                    return Err(Error::Protocol(
                        "upload state from an older version: start the upload again".into(),
                    ));
                }
                Stage::Uploading => self.transfer().await?,
                Stage::Uploaded => {
                    let size = self.record.fingerprint.size;
                    lock(&self.meter).phase(Phase::Confirming, size, size);
                    let id = parse_uuid(self.record.dataset_id.as_deref())?;
                    let dataset = self.up.api.confirm_dataset_upload(id).await?;
                    self.record.stage = Stage::Confirmed;
                    self.up.store.save(&self.record).await?;
                    lock(&self.meter).phase(Phase::Done, size, size);
                    return Ok(Some(dataset));
                }
                Stage::Confirmed => return Ok(None),
            }
        }
    }

    async fn transfer(&mut self) -> Result<()> {
        let (bucket, object) = match (&self.record.storage_bucket, &self.record.storage_path) {
            (Some(b), Some(p)) => (b.clone(), p.clone()),
            _ => return Err(Error::Protocol("upload state has no storage path".into())),
        };
        let size = self.record.fingerprint.size;
        lock(&self.meter).phase(Phase::Preparing, self.record.confirmed_offset, size);
        let resume = self
            .record
            .tus_url
            .as_deref()
            .map(Url::parse)
            .transpose()
            .map_err(|e| Error::Protocol(format!("stored TUS URL: {e}")))?;
        let metadata = TusMetadata {
            bucket: bucket.clone(),
            object: object.clone(),
            content_type: self.up.options.content_type.clone(),
            cache_control: Some("3600".into()),
            upsert: false,
        };
        let options = self.up.options.tus();
        let meter = self.meter.clone();
        let upload = ResumableUpload {
            storage: self.up.api.storage(),
            file: &self.path,
            size,
            metadata: &metadata,
            options: &options,
            progress: Some(Arc::new(move |bytes| lock(&meter).set(bytes))),
        };
        let mut hooks = Hooks {
            signer: self.up.signer.clone(),
            api: &self.up.api,
            store: &self.up.store,
            record: &mut self.record,
            bucket,
            object,
            path: &self.path,
            file_name: &self.file_name,
            description: self.description.as_deref(),
            format: self.format.as_ref(),
            meter: self.meter.clone(),
            resumed_from: &mut self.resumed_from,
            verdict: self.verdict.clone(),
            held: &self.held,
            validated: &self.validated,
            registered: &mut self.registered,
        };
        upload.run(resume, &mut hooks).await?;
        self.record.stage = Stage::Uploaded;
        self.record.confirmed_offset = size;
        self.up.store.save(&self.record).await?;
        Ok(())
    }
}

/// What the upload loop asks of a dataset upload: signed tokens, the local state, the file,
/// and, before the last chunk, the check's verdict and the dataset's row.
struct Hooks<'a> {
    signer: SignFn,
    api: &'a Api,
    store: &'a UploadStateStore,
    record: &'a mut UploadRecord,
    bucket: String,
    object: String,
    path: &'a Path,
    file_name: &'a str,
    description: Option<&'a str>,
    format: Option<&'a DatasetFormat>,
    meter: Arc<Mutex<Meter>>,
    resumed_from: &'a mut Option<u64>,
    verdict: tokio::sync::watch::Receiver<Option<Verdict>>,
    held: &'a AtomicBool,
    validated: &'a AtomicU64,
    registered: &'a mut bool,
}

impl Hooks<'_> {
    /// Waits for the file to pass its check, showing the check's progress meanwhile.
    async fn passed(&mut self) -> Result<Verdict> {
        let size = self.record.fingerprint.size;
        let held = self.verdict.borrow().is_none();
        if held {
            self.held.store(true, Ordering::Relaxed);
            let validated = self.validated.load(Ordering::Relaxed);
            lock(&self.meter).phase(Phase::Validating, validated, size);
        }
        let verdict = self
            .verdict
            .wait_for(Option::is_some)
            .await
            .map(|v| v.clone());
        if held {
            self.held.store(false, Ordering::Relaxed);
            lock(&self.meter).phase(Phase::Transferring, self.record.confirmed_offset, size);
        }
        verdict
            .ok()
            .flatten()
            .ok_or_else(|| Error::Protocol("the file's check ended without a verdict".into()))
    }

    /// The file passed: it is still the file this upload began with, and its dataset exists.
    async fn register(&mut self) -> Result<()> {
        let verdict = self.passed().await?;
        let known = &self.record.fingerprint.sha256;
        if !known.is_empty() && *known != verdict.fingerprint.sha256 {
            return Err(Error::FileChanged(self.path.to_owned()));
        }
        if known.is_empty() {
            self.record.fingerprint = verdict.fingerprint.clone();
            self.store.save(self.record).await?;
        }
        let id = parse_uuid(self.record.dataset_id.as_deref())?;
        let dataset = self
            .api
            .create_dataset(&CreateDatasetInput {
                name: self.record.dataset_name.clone(),
                description: self.description.map(str::to_owned),
                format: Some(self.format.cloned().or(verdict.format).unwrap_or_default()),
                file_name: self.file_name.to_owned(),
                file_size: self.record.fingerprint.size,
                id: Some(id),
            })
            .await?;
        if dataset.id != id
            || dataset.storage_bucket != self.bucket
            || dataset.storage_path != self.object
        {
            return Err(Error::Protocol(format!(
                "create_dataset put dataset {} at {}/{}, not at {}/{} where its bytes went",
                dataset.id, dataset.storage_bucket, dataset.storage_path, self.bucket, self.object
            )));
        }
        *self.registered = true;
        Ok(())
    }
}

impl TusHooks for Hooks<'_> {
    async fn auth(&mut self, _renew: bool) -> brightrun_supabase::Result<TusAuth> {
        let token = (self.signer)(self.bucket.clone(), self.object.clone()).await?;
        Ok(TusAuth::Signed(token))
    }

    async fn confirmed(
        &mut self,
        upload: Option<&Url>,
        offset: u64,
    ) -> brightrun_supabase::Result<()> {
        self.record.tus_url = upload.map(Url::to_string);
        self.record.confirmed_offset = offset;
        self.store.save(self.record).await?;
        if self.resumed_from.is_none() {
            // The first offset the server confirms is where this run starts.
            *self.resumed_from = Some(offset);
            lock(&self.meter).start_transfer(offset);
        } else {
            lock(&self.meter).set(offset);
        }
        Ok(())
    }

    fn before_chunk(&mut self) -> brightrun_supabase::Result<()> {
        Ok(check_unchanged(self.path, &self.record.fingerprint)?)
    }

    async fn before_completing(&mut self) -> brightrun_supabase::Result<()> {
        if !*self.registered {
            self.register().await?;
        }
        Ok(())
    }

    /// The object is already there. Its path holds this dataset's id, so it is this upload's
    /// own bytes when the size matches (an earlier run finished but did not hear the answer).
    async fn exists(&mut self, _answer: &ApiError) -> brightrun_supabase::Result<bool> {
        let stored = self
            .api
            .storage()
            .object_size(&self.bucket, &self.object)
            .await?;
        Ok(stored == Some(self.record.fingerprint.size))
    }
}

fn lock(meter: &Mutex<Meter>) -> std::sync::MutexGuard<'_, Meter> {
    meter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse_uuid(id: Option<&str>) -> Result<Uuid> {
    id.and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol("upload state has no dataset id".into()))
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// The file still has the size and mtime it had when it was fingerprinted.
fn check_unchanged(path: &Path, fingerprint: &Fingerprint) -> Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.len() != fingerprint.size || mtime_ns(&meta) != fingerprint.mtime_ns {
        return Err(Error::FileChanged(path.to_owned()));
    }
    Ok(())
}

/// Feeds what it reads to the SHA-256 when there is one.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Whether a validation pass also hashes the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fingerprinting {
    /// For an upload: the SHA-256 of the whole file, its size and mtime.
    Sha256,
    /// For a report only.
    None,
}

/// Validates the file and fingerprints it in the same pass (on a blocking thread). Stops with
/// [`Error::Cancelled`] soon after `cancel` is cancelled.
pub async fn validate_file(
    path: &Path,
    options: &ValidationOptions,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<(ValidationReport, Fingerprint)> {
    let cl100k = ModelTokenizer::Cl100kBase;
    match validate_path(
        path,
        options,
        cl100k,
        progress,
        cancel,
        Fingerprinting::Sha256,
    )
    .await?
    {
        (report, Some(fingerprint)) => Ok((report, fingerprint)),
        (_, None) => Err(Error::Io(std::io::Error::other("the file was not hashed"))),
    }
}

/// Validates the file without hashing it, counting with `model`'s tokenizer: the report alone,
/// as fast as the validator goes.
pub async fn validate_report(
    path: &Path,
    options: &ValidationOptions,
    model: ModelTokenizer,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
) -> Result<ValidationReport> {
    let (report, _) =
        validate_path(path, options, model, progress, cancel, Fingerprinting::None).await?;
    Ok(report)
}

async fn validate_path(
    path: &Path,
    options: &ValidationOptions,
    model: ModelTokenizer,
    progress: Option<ProgressFn>,
    cancel: &CancellationToken,
    fingerprinting: Fingerprinting,
) -> Result<(ValidationReport, Option<Fingerprint>)> {
    let path = path.to_owned();
    let options = options.clone();
    let cancel = cancel.clone();
    tokio::task::spawn_blocking(move || {
        let before = std::fs::metadata(&path)?;
        let file = std::fs::File::open(&path)?;
        let mut reader = HashingReader {
            inner: std::io::BufReader::with_capacity(256 * 1024, file),
            hasher: (fingerprinting == Fingerprinting::Sha256).then(Sha256::new),
        };
        let mut meter = Meter::new(progress, before.len());
        meter.phase(Phase::Validating, 0, before.len());
        // A structural pass never counts, so it does not load a tokenizer's tables (tens of MB).
        let tokenizer: Box<dyn Tokenizer> = match options.mode {
            ValidationMode::Full => model.tokenizer(),
            ValidationMode::Structural => Box::new(ByteTokenizer),
        };
        let report = validate_with_progress(&mut reader, &options, &*tokenizer, &mut |p| {
            meter.set(p.bytes_read);
            if cancel.is_cancelled() {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .map_err(|e| match e {
            brightrun_core::ValidatorError::Read { source, .. } => Error::from(source),
        })?;
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let sha256 = match reader.hasher.take() {
            Some(hasher) => {
                // The validator reads to the end unless stopped; hash whatever is left anyway.
                let mut rest = HashingReader {
                    inner: reader.inner,
                    hasher: Some(hasher),
                };
                std::io::copy(&mut rest, &mut std::io::sink())?;
                rest.hasher.map(|h| hex::encode(h.finalize()))
            }
            None => None,
        };
        let after = std::fs::metadata(&path)?;
        if before.len() != after.len() || mtime_ns(&before) != mtime_ns(&after) {
            return Err(Error::FileChanged(path));
        }
        let fingerprint = sha256.map(|sha256| Fingerprint {
            size: after.len(),
            mtime_ns: mtime_ns(&after),
            sha256,
        });
        Ok((report, fingerprint))
    })
    .await
    .map_err(|e| Error::Io(std::io::Error::other(e)))?
}

fn dataset_name(request: &UploadRequest, path: &Path) -> String {
    let name = request.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dataset".to_owned())
    });
    let trimmed = name.trim();
    if trimmed.is_empty() {
        "dataset".to_owned()
    } else {
        trimmed.chars().take(200).collect()
    }
}

/// The local file name as create_dataset accepts it: letters, digits, space and `._()+-`, not
/// starting with `.`/space/`-`, not ending with `.`/space, no `..`; others become `_`.
pub fn storage_file_name(path: &Path) -> String {
    let raw = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || " ._()+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("..") {
        out = out.replace("..", "_.");
    }
    let out = out.trim_end_matches(['.', ' ']).to_owned();
    let mut out = match out.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => out,
        Some(_) => format!("_{out}"),
        None => "dataset.jsonl".to_owned(),
    };
    if out.len() > 255 {
        out.truncate(255);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_file_names_pass_the_server_rule() {
        let cases = [
            ("train.jsonl", "train.jsonl"),
            ("my data (v2).jsonl", "my data (v2).jsonl"),
            ("données.jsonl", "donn_es.jsonl"),
            (".hidden.jsonl", "_.hidden.jsonl"),
            ("a..b.jsonl", "a_.b.jsonl"),
            ("trailing.", "trailing"),
        ];
        for (input, want) in cases {
            assert_eq!(
                storage_file_name(Path::new(input)),
                want,
                "file name {input:?}"
            );
        }
    }
}
