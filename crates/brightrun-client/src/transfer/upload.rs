//! Dataset uploads: validate, create_dataset, signed TUS upload streamed from disk, confirm.
//!
//! 1. The file is validated locally with `brightrun_core` (every error, with its line) and
//!    fingerprinted in the same pass: size, mtime and the SHA-256 of the whole file. A file with
//!    errors is refused with the full report before a byte leaves the machine.
//! 2. `create_dataset` registers the dataset and names its storage path.
//! 3. A signed upload token for that path, then TUS on `/storage/v1/upload/resumable/sign` with
//!    `x-signature`: one creation POST, then PATCHes of `chunk_size` (6 MiB) read from disk as
//!    they are sent (constant memory).
//! 4. `confirm_dataset_upload` hands the dataset to the worker.
//!
//! Every step the server confirmed is written to `upload_state` first, so running the same
//! upload again after a crash, a cut or a restart continues the same dataset. After any failed
//! PATCH the offset is re-read with HEAD (never a blind retry); a 409 offset conflict is a
//! resync; an expired or refused token is renewed; transient failures back off with jitter,
//! honouring `Retry-After`. If the process dies between `create_dataset` committing and its
//! answer arriving, the next run adopts that dataset (same name, file name and size, still
//! `uploading`, created since the run started) instead of making a second one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use brightrun_core::dataset::validate_with_progress;
use brightrun_core::{DatasetFormat, TiktokenTokenizer, ValidationOptions, ValidationReport};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use reqwest::header::LOCATION;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use url::Url;
use uuid::Uuid;

use crate::error::{ApiError, Service};
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::session::Session;
use crate::transfer::TransferError;
use crate::transfer::backoff::Backoff;
use crate::transfer::http::{self, TusRefusal, tus_refusal};
use crate::transfer::progress::{Meter, Phase, ProgressFn};
use crate::transfer::state::{Fingerprint, Stage, UploadRecord, UploadStateStore};

const TUS_VERSION: &str = "1.0.0";
const READ_PIECE: usize = 64 * 1024;

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
        Self {
            chunk_size: 6 * 1024 * 1024,
            retry: RetryPolicy::transfers(),
            validation: ValidationOptions::default(),
            content_type: "application/jsonl".to_owned(),
            patch_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// What an upload ended with.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    pub dataset_id: Uuid,
    /// The dataset row as the server returned it last (`confirm_dataset_upload`), when this run
    /// confirmed it.
    pub dataset: Option<Value>,
    /// The local validation report (warnings and statistics).
    pub report: ValidationReport,
    /// The byte offset this run started at when it resumed an earlier one.
    pub resumed_from: Option<u64>,
    /// This exact file had already been uploaded and confirmed as `dataset_id`; nothing was sent.
    pub already_uploaded: bool,
    pub bytes: u64,
}

/// Gets a signed upload token for `(bucket, path)`. The default asks Storage
/// ([`sign_upload`]); tests put their own in front.
pub type SignFn =
    Arc<dyn Fn(String, String) -> BoxFuture<'static, Result<Secret, TransferError>> + Send + Sync>;

/// `POST /storage/v1/object/upload/sign/<bucket>/<path>`: a token for one upload to that path.
pub async fn sign_upload(
    session: &Session,
    bucket: &str,
    path: &str,
) -> Result<Secret, TransferError> {
    #[derive(Deserialize)]
    struct Signed {
        token: String,
    }
    let url = http::storage_url(session, &["object", "upload", "sign", bucket], path);
    let answer = http::storage_post(session, url, &json!({})).await?;
    let signed: Signed = serde_json::from_value(answer).map_err(|e| {
        TransferError::Client(crate::Error::Protocol(format!(
            "signed upload answer has no token: {e}"
        )))
    })?;
    Ok(Secret::new(signed.token))
}

/// Uploads datasets for one session.
pub struct Uploader {
    session: Arc<Session>,
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

/// The row fields an upload needs.
#[derive(Debug, Clone, Deserialize)]
struct DatasetRef {
    id: Uuid,
    storage_bucket: String,
    storage_path: String,
}

enum StepError {
    /// A TUS answer: its meaning depends on the refusal and on the request.
    Tus(ApiError),
    Other(TransferError),
}

impl<E: Into<TransferError>> From<E> for StepError {
    fn from(e: E) -> Self {
        Self::Other(e.into())
    }
}

enum Step {
    /// The server confirmed more bytes (or a stage): retries start counting again.
    Progressed,
    Continue,
    Done(Option<Value>),
}

impl Uploader {
    pub fn new(session: Arc<Session>, store: UploadStateStore, options: UploadOptions) -> Self {
        let signer: SignFn = {
            let session = session.clone();
            Arc::new(move |bucket, path| {
                let session = session.clone();
                Box::pin(async move { sign_upload(&session, &bucket, &path).await })
            })
        };
        Self {
            session,
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
        &self.session
    }

    /// Validates and uploads `request.path`, resuming an earlier upload of the same file.
    pub async fn upload(
        &self,
        request: &UploadRequest,
        progress: Option<ProgressFn>,
    ) -> Result<UploadOutcome, TransferError> {
        let path = std::fs::canonicalize(&request.path)?;
        let (report, fingerprint) =
            validate_file(&path, &self.options.validation, progress.clone()).await?;
        if !report.is_valid() {
            return Err(TransferError::Invalid(Box::new(report)));
        }
        let project_url = self.session.project().url.as_str().to_owned();
        let user_id = self.session.user_id().to_string();
        let file_path = path.to_string_lossy().into_owned();
        let name = dataset_name(request, &path);

        let existing = self.store.find(&project_url, &user_id, &file_path).await?;
        let record = match existing {
            Some(r) if r.fingerprint == fingerprint && r.stage == Stage::Confirmed => {
                if request.force_new {
                    None
                } else {
                    let dataset_id = parse_uuid(r.dataset_id.as_deref())?;
                    return Ok(UploadOutcome {
                        dataset_id,
                        dataset: None,
                        report,
                        resumed_from: None,
                        already_uploaded: true,
                        bytes: fingerprint.size,
                    });
                }
            }
            Some(r) if r.fingerprint == fingerprint => Some(r),
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
                self.store
                    .start(&project_url, &user_id, &file_path, &fingerprint, &name)
                    .await?
            }
        };
        let format = request
            .format
            .clone()
            .or_else(|| report.format.clone())
            .unwrap_or_default();
        let meter = Arc::new(Mutex::new(Meter::new(progress, fingerprint.size)));
        let mut run = Run {
            up: self,
            path,
            file_name: storage_file_name(&request.path),
            description: request.description.clone(),
            format,
            record,
            may_adopt: resumed,
            token: None,
            need_head: true,
            meter,
            started_transfer: false,
            resumed_from: None,
            backoff: Backoff::new(self.options.retry),
            token_renewals: 0,
        };
        let dataset = run.drive().await?;
        let dataset_id = parse_uuid(run.record.dataset_id.as_deref())?;
        Ok(UploadOutcome {
            dataset_id,
            dataset,
            report,
            resumed_from: run.resumed_from.filter(|_| resumed),
            already_uploaded: false,
            bytes: fingerprint.size,
        })
    }

    /// Uploads of this user that have not finished (what `upload` would resume).
    pub async fn unfinished(&self) -> Result<Vec<UploadRecord>, TransferError> {
        self.store
            .unfinished(
                self.session.project().url.as_str(),
                &self.session.user_id().to_string(),
            )
            .await
    }

    /// The file changed since its upload began: soft-delete the half-uploaded dataset (best
    /// effort: a failure leaves an `uploading` row, which the user can delete) and forget it.
    async fn abandon(&self, stale: &UploadRecord) {
        if stale.stage != Stage::Confirmed
            && let Some(id) = &stale.dataset_id
        {
            let result: Result<Value, _> =
                http::rpc(&self.session, "delete_dataset", &json!({"dataset_id": id})).await;
            if let Err(e) = result {
                tracing::warn!(dataset = %id, error = %e, "could not delete an abandoned upload's dataset");
            }
        }
        if let Err(e) = self.store.delete(stale.id).await {
            tracing::warn!(error = %e, "could not forget an abandoned upload");
        }
    }
}

/// One run of the upload state machine.
struct Run<'a> {
    up: &'a Uploader,
    path: PathBuf,
    file_name: String,
    description: Option<String>,
    format: DatasetFormat,
    record: UploadRecord,
    /// A `create_dataset` may have committed without us hearing the answer.
    may_adopt: bool,
    token: Option<Secret>,
    need_head: bool,
    meter: Arc<Mutex<Meter>>,
    started_transfer: bool,
    resumed_from: Option<u64>,
    backoff: Backoff,
    token_renewals: u32,
}

impl Run<'_> {
    async fn drive(&mut self) -> Result<Option<Value>, TransferError> {
        loop {
            match self.step().await {
                Ok(Step::Done(row)) => {
                    let size = self.record.fingerprint.size;
                    lock(&self.meter).phase(Phase::Done, size, size);
                    return Ok(row);
                }
                Ok(Step::Progressed) => {
                    self.backoff.reset();
                    self.token_renewals = 0;
                }
                Ok(Step::Continue) => {}
                Err(StepError::Tus(api)) => self.on_tus_refusal(api).await?,
                Err(StepError::Other(e)) => self.on_error(e).await?,
            }
        }
    }

    async fn on_tus_refusal(&mut self, api: ApiError) -> Result<(), TransferError> {
        self.need_head = true;
        match tus_refusal(&api) {
            TusRefusal::OffsetConflict | TusRefusal::Locked => {
                // Resync: the next step is a HEAD. Wait a little first, since the usual cause
                // is an earlier request of ours the server has not finished with.
                self.wait(TransferError::from(api)).await
            }
            TusRefusal::BadToken => {
                self.token = None;
                self.token_renewals += 1;
                if self.token_renewals > 3 {
                    return Err(TransferError::from(api));
                }
                Ok(())
            }
            TusRefusal::Gone => {
                tracing::info!("the server forgot the upload; starting a new one");
                self.record.tus_url = None;
                self.record.confirmed_offset = 0;
                self.up.store.save(&self.record).await?;
                self.wait(TransferError::from(api)).await
            }
            TusRefusal::Exists => self.on_exists(api).await,
            TusRefusal::Other => {
                let e = TransferError::from_api(api);
                if e.is_retryable() {
                    self.wait(e).await
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn on_error(&mut self, e: TransferError) -> Result<(), TransferError> {
        if !e.is_retryable() {
            return Err(e);
        }
        tracing::info!(error = %e, "upload step failed; retrying");
        self.need_head = true;
        self.wait(e).await
    }

    /// Backs off before the next attempt, or gives up with `last`.
    async fn wait(&mut self, last: TransferError) -> Result<(), TransferError> {
        match self.backoff.next_delay(last.retry_after()) {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(TransferError::RetriesExhausted {
                attempts: self.backoff.attempts(),
                last: Box::new(last),
            }),
        }
    }

    /// The object is already there. Its path holds this dataset's id, so it is this upload's
    /// own bytes when the size matches (an earlier run finished but did not hear the answer).
    async fn on_exists(&mut self, api: ApiError) -> Result<(), TransferError> {
        let (bucket, path) = self.target()?;
        let url = http::storage_url(
            &self.up.session,
            &["object", "authenticated", &bucket],
            &path,
        );
        let token = self.up.session.access_token().await?;
        let response = self
            .up
            .session
            .http()
            .head(url)
            .header("apikey", &self.up.session.project().anon_key)
            .bearer_auth(token.expose())
            .timeout(self.up.options.request_timeout)
            .send()
            .await?;
        let stored = response
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if response.status().is_success() && stored == Some(self.record.fingerprint.size) {
            self.record.stage = Stage::Uploaded;
            self.record.confirmed_offset = self.record.fingerprint.size;
            self.up.store.save(&self.record).await?;
            Ok(())
        } else {
            Err(TransferError::Conflict(format!(
                "{bucket}/{path} already holds a different file ({}): {}",
                stored.map_or_else(|| "size unknown".to_owned(), |s| format!("{s} bytes")),
                api.message
            )))
        }
    }

    fn target(&self) -> Result<(String, String), TransferError> {
        match (&self.record.storage_bucket, &self.record.storage_path) {
            (Some(b), Some(p)) => Ok((b.clone(), p.clone())),
            _ => Err(TransferError::Client(crate::Error::Protocol(
                "upload state has no storage path".into(),
            ))),
        }
    }

    async fn step(&mut self) -> Result<Step, StepError> {
        match self.record.stage {
            Stage::Creating => self.create_dataset().await,
            Stage::Uploading => self.transfer().await,
            Stage::Uploaded => {
                let size = self.record.fingerprint.size;
                lock(&self.meter).phase(Phase::Confirming, size, size);
                let id = self.record.dataset_id.clone().unwrap_or_default();
                let row: Value = http::rpc(
                    &self.up.session,
                    "confirm_dataset_upload",
                    &json!({"dataset_id": id}),
                )
                .await?;
                self.record.stage = Stage::Confirmed;
                self.up.store.save(&self.record).await?;
                Ok(Step::Done(Some(row)))
            }
            Stage::Confirmed => Ok(Step::Done(None)),
        }
    }

    async fn create_dataset(&mut self) -> Result<Step, StepError> {
        let size = self.record.fingerprint.size;
        lock(&self.meter).phase(Phase::Preparing, 0, size);
        let dataset = match self.adoptable().await? {
            Some(d) => {
                tracing::info!(dataset = %d.id, "continuing a dataset created by an interrupted run");
                d
            }
            None => {
                self.may_adopt = true;
                let mut args = json!({
                    "name": self.record.dataset_name,
                    "file_name": self.file_name,
                    "file_size": size,
                    "format": self.format.as_str(),
                });
                if let Some(d) = &self.description {
                    args["description"] = json!(d);
                }
                http::rpc::<DatasetRef>(&self.up.session, "create_dataset", &args).await?
            }
        };
        self.record.dataset_id = Some(dataset.id.to_string());
        self.record.storage_bucket = Some(dataset.storage_bucket);
        self.record.storage_path = Some(dataset.storage_path);
        self.record.stage = Stage::Uploading;
        self.up.store.save(&self.record).await?;
        Ok(Step::Progressed)
    }

    /// A dataset an interrupted `create_dataset` of this upload made, if any.
    async fn adoptable(&self) -> Result<Option<DatasetRef>, TransferError> {
        if !self.may_adopt {
            return Ok(None);
        }
        // Ten minutes of slack for clock skew between this machine and the server.
        let since = chrono::DateTime::from_timestamp(self.record.started_at - 600, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let rows: Vec<DatasetRef> = http::select(
            &self.up.session,
            "datasets",
            &[
                ("select", "id,storage_bucket,storage_path".to_owned()),
                ("user_id", format!("eq.{}", self.up.session.user_id())),
                ("name", format!("eq.{}", self.record.dataset_name)),
                ("file_name", format!("eq.{}", self.file_name)),
                ("file_size", format!("eq.{}", self.record.fingerprint.size)),
                ("status", "eq.uploading".to_owned()),
                ("deleted_at", "is.null".to_owned()),
                ("created_at", format!("gte.{since}")),
                ("order", "created_at.desc".to_owned()),
            ],
        )
        .await?;
        let known = self
            .up
            .store
            .known_dataset_ids(&self.record.project_url, &self.record.user_id)
            .await?;
        Ok(rows
            .into_iter()
            .find(|d| !known.contains(&d.id.to_string())))
    }

    async fn transfer(&mut self) -> Result<Step, StepError> {
        let (bucket, path) = self.target()?;
        let size = self.record.fingerprint.size;
        if self.token.is_none() {
            if !self.started_transfer {
                lock(&self.meter).phase(Phase::Preparing, self.record.confirmed_offset, size);
            }
            self.token = Some((self.up.signer)(bucket.clone(), path.clone()).await?);
            return Ok(Step::Continue);
        }
        let Some(tus_url) = self.record.tus_url.clone() else {
            self.create_tus(&bucket, &path).await?;
            self.need_head = false;
            self.begin_transfer();
            return Ok(Step::Progressed);
        };
        let tus_url = Url::parse(&tus_url).map_err(|e| {
            TransferError::Client(crate::Error::Protocol(format!("stored TUS URL: {e}")))
        })?;
        if self.need_head {
            let offset = self.head(&tus_url).await?;
            self.need_head = false;
            let moved = offset > self.record.confirmed_offset;
            self.record.confirmed_offset = offset;
            self.up.store.save(&self.record).await?;
            self.begin_transfer();
            lock(&self.meter).set(offset);
            return Ok(if moved {
                Step::Progressed
            } else {
                Step::Continue
            });
        }
        if self.record.confirmed_offset >= size {
            self.record.stage = Stage::Uploaded;
            self.up.store.save(&self.record).await?;
            return Ok(Step::Progressed);
        }
        let offset = self.patch(&tus_url).await?;
        self.record.confirmed_offset = offset;
        self.up.store.save(&self.record).await?;
        lock(&self.meter).set(offset);
        Ok(Step::Progressed)
    }

    fn begin_transfer(&mut self) {
        if !self.started_transfer {
            self.started_transfer = true;
            self.resumed_from = Some(self.record.confirmed_offset);
            lock(&self.meter).start_transfer(self.record.confirmed_offset);
        }
    }

    fn tus_request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let token = self.token.as_ref().map(Secret::expose).unwrap_or_default();
        self.up
            .session
            .http()
            .request(method, url)
            .header("tus-resumable", TUS_VERSION)
            .header("apikey", &self.up.session.project().anon_key)
            .header("x-signature", token)
    }

    async fn create_tus(&mut self, bucket: &str, path: &str) -> Result<(), StepError> {
        let endpoint = self
            .up
            .session
            .project()
            .endpoint("storage", "upload/resumable/sign");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let metadata = format!(
            "bucketName {},objectName {},contentType {},cacheControl {}",
            b64(bucket),
            b64(path),
            b64(&self.up.options.content_type),
            b64("3600"),
        );
        let response = self
            .tus_request(reqwest::Method::POST, endpoint.clone())
            .header("upload-length", self.record.fingerprint.size)
            .header("upload-metadata", metadata)
            .timeout(self.up.options.request_timeout)
            .send()
            .await?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(StepError::Tus(
                ApiError::from_response(Service::Tus, response).await,
            ));
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                TransferError::Client(crate::Error::Protocol(
                    "TUS creation answered without a Location".into(),
                ))
            })?;
        let url = endpoint.join(location).map_err(|e| {
            TransferError::Client(crate::Error::Protocol(format!("TUS Location: {e}")))
        })?;
        self.record.tus_url = Some(url.to_string());
        self.record.confirmed_offset = 0;
        self.up.store.save(&self.record).await?;
        Ok(())
    }

    async fn head(&self, url: &Url) -> Result<u64, StepError> {
        let response = self
            .tus_request(reqwest::Method::HEAD, url.clone())
            .timeout(self.up.options.request_timeout)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST {
            // A HEAD answer has no body to say why; on the signed route the only 400 is the
            // token check (missing, invalid or expired signature).
            return Err(StepError::Tus(ApiError::from_body(
                Service::Tus,
                400,
                "Invalid signature (HEAD answered 400, which carries no reason)",
                None,
            )));
        }
        if !response.status().is_success() {
            return Err(StepError::Tus(
                ApiError::from_response(Service::Tus, response).await,
            ));
        }
        let offset = upload_offset(&response)?;
        if offset > self.record.fingerprint.size {
            return Err(StepError::Other(TransferError::Client(
                crate::Error::Protocol(format!(
                    "the server holds {offset} bytes of a {}-byte upload",
                    self.record.fingerprint.size
                )),
            )));
        }
        Ok(offset)
    }

    /// Sends one chunk from `confirmed_offset`, read from disk as it goes out.
    async fn patch(&mut self, url: &Url) -> Result<u64, StepError> {
        let start = self.record.confirmed_offset;
        let size = self.record.fingerprint.size;
        check_unchanged(&self.path, &self.record.fingerprint)?;
        let len = self.up.options.chunk_size.min(size - start);
        let mut file = tokio::fs::File::open(&self.path).await?;
        file.seek(std::io::SeekFrom::Start(start)).await?;
        let meter = self.meter.clone();
        let body = tokio_util::io::ReaderStream::with_capacity(file.take(len), READ_PIECE).inspect(
            move |piece| {
                if let Ok(bytes) = piece {
                    lock(&meter).add(bytes.len() as u64);
                }
            },
        );
        let response = self
            .tus_request(reqwest::Method::PATCH, url.clone())
            .header("upload-offset", start)
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body))
            .timeout(self.up.options.patch_timeout)
            .send()
            .await;
        // On failure, what was sent is not what was stored: the meter goes back to the
        // confirmed offset until a HEAD says more.
        let response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                lock(&self.meter).set(start);
                return Err(StepError::Tus(
                    ApiError::from_response(Service::Tus, r).await,
                ));
            }
            Err(e) => {
                lock(&self.meter).set(start);
                return Err(e.into());
            }
        };
        let offset = upload_offset(&response)?;
        if offset <= start || offset > size {
            return Err(StepError::Other(TransferError::Client(
                crate::Error::Protocol(format!(
                    "PATCH at {start} answered with offset {offset} (upload length {size})"
                )),
            )));
        }
        Ok(offset)
    }
}

fn upload_offset(response: &reqwest::Response) -> Result<u64, TransferError> {
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            TransferError::Client(crate::Error::Protocol(
                "TUS answer without a valid Upload-Offset".into(),
            ))
        })
}

fn lock(meter: &Mutex<Meter>) -> std::sync::MutexGuard<'_, Meter> {
    meter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn parse_uuid(id: Option<&str>) -> Result<Uuid, TransferError> {
    id.and_then(|s| s.parse().ok()).ok_or_else(|| {
        TransferError::Client(crate::Error::Protocol(
            "upload state has no dataset id".into(),
        ))
    })
}

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// The file still has the size and mtime it had when it was fingerprinted.
fn check_unchanged(path: &Path, fingerprint: &Fingerprint) -> Result<(), TransferError> {
    let meta = std::fs::metadata(path)?;
    if meta.len() != fingerprint.size || mtime_ns(&meta) != fingerprint.mtime_ns {
        return Err(TransferError::FileChanged(path.to_owned()));
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Validates the file and fingerprints it in the same pass (on a blocking thread).
pub async fn validate_file(
    path: &Path,
    options: &ValidationOptions,
    progress: Option<ProgressFn>,
) -> Result<(ValidationReport, Fingerprint), TransferError> {
    let path = path.to_owned();
    let options = options.clone();
    tokio::task::spawn_blocking(move || {
        let before = std::fs::metadata(&path)?;
        let file = std::fs::File::open(&path)?;
        let mut reader = HashingReader {
            inner: std::io::BufReader::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
        };
        let mut meter = Meter::new(progress, before.len());
        meter.phase(Phase::Validating, 0, before.len());
        let tokenizer = TiktokenTokenizer::cl100k_base();
        let report = validate_with_progress(&mut reader, &options, &tokenizer, &mut |p| {
            meter.set(p.bytes_read);
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| match e {
            brightrun_core::ValidatorError::Read { source, .. } => TransferError::from(source),
        })?;
        // The validator may stop before EOF only when cancelled; hash whatever is left anyway.
        std::io::copy(&mut reader, &mut std::io::sink())?;
        let after = std::fs::metadata(&path)?;
        let fingerprint = Fingerprint {
            size: after.len(),
            mtime_ns: mtime_ns(&after),
            sha256: hex::encode(reader.hasher.finalize()),
        };
        if before.len() != after.len() || mtime_ns(&before) != fingerprint.mtime_ns {
            return Err(TransferError::FileChanged(path));
        }
        Ok((report, fingerprint))
    })
    .await
    .map_err(|e| TransferError::from(std::io::Error::other(e)))?
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
