//! Training on a Ray cluster through the Ray Jobs REST API (`../shared/docs/ray-jobs.md`).
//!
//! A job runs as one Ray job whose submission id is `brightrun-<job id>-a<attempt>`. The
//! entrypoint (`brightrun-train` by default, see [`crate::entrypoint`]) comes as the job's
//! working-directory package, uploaded just before each submission (Ray drops unused packages
//! after 10 minutes). Its stdout carries the contract's event lines; the log endpoint has no
//! offset, so the cursor is the number of event lines already taken.
//!
//! The adapter's files reach Storage without the service-role key: the worker writes signed
//! upload URLs ("tickets") into a small object under the job's staging folder
//! (`<user>/<job>/ray-a<attempt>/` in the models bucket) and gives the entrypoint a signed
//! download URL of it; it rewrites the tickets at half their lifetime while the job runs. At the
//! end it downloads each file the entrypoint reported and checks its size and SHA-256; the
//! worker then stores the adapter under the attempt's prefix, and the staging folder goes with
//! the other attempts' leftovers.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brightrun_supabase::{Secret, Storage};
use futures::TryStreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tracing::{info, warn};
use url::Url;

use super::{BoxFut, Poll, RemoteError, RemoteProvider, RemoteState, Submission};
use crate::entrypoint::{
    ARTIFACT_NAMES, ArtifactsInput, DatasetInput, Event, SPEC_ENV, Tickets, TrainInput, VERSION,
};

/// The models bucket (adapters), where the staging folder lives.
const BUCKET: &str = "lora-models";
const TICKETS: &str = "upload-tickets.json";

/// What a Ray job runs: a directory's files as its working directory, and a command in it.
#[derive(Debug, Clone)]
pub struct RayPackage {
    /// (name in the package, file on this machine); directories are not descended into.
    pub files: Vec<(String, PathBuf)>,
    /// The shell command Ray runs in the unpacked directory.
    pub entrypoint: String,
    /// `runtime_env.pip`: packages Ray installs for the job (empty: none).
    pub pip: Vec<String>,
}

impl RayPackage {
    /// `brightrun-train` (the candle trainer) as the whole package.
    pub fn brightrun_train(binary: PathBuf) -> Self {
        Self {
            files: vec![("brightrun-train".into(), binary)],
            entrypoint: "./brightrun-train".into(),
            pip: Vec::new(),
        }
    }

    /// Every regular file directly in `dir`.
    pub fn directory(dir: &Path, entrypoint: String, pip: Vec<String>) -> std::io::Result<Self> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path(),
                ));
            }
        }
        files.sort();
        Ok(Self {
            files,
            entrypoint,
            pip,
        })
    }

    /// The zip Ray unpacks (mode bits kept), and its content-addressed name.
    fn zip(&self) -> std::io::Result<(String, Vec<u8>)> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, path) in &self.files {
            let bytes = std::fs::read(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(0o755);
            zip.start_file(name.as_str(), options)
                .map_err(std::io::Error::other)?;
            zip.write_all(&bytes)?;
        }
        let bytes = zip.finish().map_err(std::io::Error::other)?.into_inner();
        let digest = hex::encode(Sha256::digest(&bytes));
        Ok((format!("_ray_pkg_{}.zip", &digest[..32]), bytes))
    }
}

#[derive(Debug, Clone)]
pub struct RayOptions {
    /// The dashboard's address, e.g. `http://127.0.0.1:8265`.
    pub address: Url,
    /// Sent as `Authorization: Bearer` (Ray's token auth); never logged.
    pub token: Option<Secret>,
    pub package: RayPackage,
    /// CPUs the entrypoint asks for (`entrypoint_num_cpus`); the candle trainer uses as many
    /// threads.
    pub entrypoint_cpus: u32,
    /// A job still PENDING after this (no resources, a runtime environment that never
    /// finishes) is stopped and the attempt failed.
    pub pending_timeout: Duration,
    /// How long the project's signed upload URLs last (hosted Supabase: 2 h); tickets are
    /// renewed at half of it.
    pub ticket_lifetime: Duration,
    /// The longest run: the lifetime of the signed URLs of the dataset and of the tickets.
    pub max_run: Duration,
}

impl RayOptions {
    pub fn new(address: Url, token: Option<Secret>, package: RayPackage) -> Self {
        Self {
            address,
            token,
            package,
            entrypoint_cpus: 1,
            pending_timeout: Duration::from_secs(15 * 60),
            ticket_lifetime: Duration::from_secs(2 * 3600),
            max_run: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The Jobs API of one cluster (address, token, HTTP client). Cheap to clone.
#[derive(Clone)]
pub struct RayApi {
    address: Url,
    token: Option<Secret>,
    http: reqwest::Client,
}

pub struct RayProvider {
    options: RayOptions,
    api: RayApi,
    /// The worker's Storage (service role): tickets, staging, verification.
    storage: Storage,
    /// The package, zipped once.
    package: tokio::sync::OnceCell<(String, Vec<u8>)>,
    /// When this process last wrote each running job's tickets.
    renewed: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for RayProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RayProvider")
            .field("address", &self.options.address.as_str())
            .finish_non_exhaustive()
    }
}

/// A Ray job as `GET /api/jobs/{id}` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct RayJob {
    pub submission_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub driver_exit_code: Option<i64>,
    /// Milliseconds since the epoch.
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

impl RayJob {
    fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }

    fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "SUCCEEDED" | "FAILED" | "STOPPED")
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn transient(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::Transient(e.to_string())
}

/// The last lines of a job's output that are not events (a traceback's end, say), at most
/// `max` characters.
fn output_tail(logs: &str, lines: usize, max: usize) -> String {
    let tail: Vec<&str> = logs
        .lines()
        .rev()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty() && Event::parse(l).is_none())
        .take(lines)
        .collect();
    let text = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    if text.chars().count() > max {
        let skip = text.chars().count() - max;
        format!("…{}", text.chars().skip(skip).collect::<String>())
    } else {
        text
    }
}

/// Ray's whole account of a failure (its message holds the last 20 000 characters of output),
/// cut to what `error_stack` keeps.
fn detail_of(job: &RayJob) -> Option<String> {
    let message = job.message.as_deref()?;
    let max = 8000;
    let n = message.chars().count();
    Some(if n > max {
        format!("…{}", message.chars().skip(n - max).collect::<String>())
    } else {
        message.to_owned()
    })
}

/// Where a finished or running Ray job stands, from its status and the events it printed.
pub fn state_of(job: &RayJob, events: &[Event], logs: &str) -> RemoteState {
    let reported_error = events.iter().rev().find_map(|e| match e {
        Event::Error { message, retryable } => Some((message.clone(), *retryable)),
        _ => None,
    });
    match job.status.as_str() {
        "SUCCEEDED" => match events.iter().rev().find_map(|e| match e {
            Event::Done {
                final_train_loss,
                final_validation_loss,
            } => Some((*final_train_loss, *final_validation_loss)),
            _ => None,
        }) {
            Some((final_train_loss, final_validation_loss)) => RemoteState::Succeeded {
                final_train_loss,
                final_validation_loss,
            },
            None => RemoteState::Failed {
                message: format!(
                    "the entrypoint exited without reporting the end of training; its last output: {}",
                    output_tail(logs, 3, 400)
                ),
                retryable: true,
                detail: detail_of(job),
            },
        },
        "FAILED" => {
            if let Some((message, retryable)) = reported_error {
                return RemoteState::Failed {
                    message,
                    retryable,
                    detail: detail_of(job),
                };
            }
            let ray_says = job
                .message
                .as_deref()
                .and_then(|m| m.lines().next())
                .unwrap_or("the job failed")
                .trim_end_matches(',')
                .to_owned();
            if job.error_type.as_deref() == Some("RUNTIME_ENV_SETUP_FAILURE") {
                // A pip spec or package the cluster cannot install: the operator's to fix, not
                // something another attempt changes.
                return RemoteState::Failed {
                    message: format!(
                        "the cluster could not set up the job's environment: {ray_says} (check the worker's --ray-pip requirements against the cluster's image)"
                    ),
                    retryable: false,
                    detail: detail_of(job),
                };
            }
            let exit = match job.driver_exit_code {
                // SIGKILL: the kernel's OOM killer, most often.
                Some(code @ (137 | -9)) => {
                    format!(
                        " (exit code {code}: killed, most often for lack of memory on the node)"
                    )
                }
                Some(code) => format!(" (exit code {code})"),
                None => String::new(),
            };
            let tail = output_tail(logs, 3, 400);
            RemoteState::Failed {
                message: if tail.is_empty() {
                    format!("the entrypoint failed{exit}: {ray_says}")
                } else {
                    format!("the entrypoint failed{exit}; its last output: {tail}")
                },
                retryable: true,
                detail: detail_of(job),
            }
        }
        "STOPPED" => RemoteState::Cancelled,
        _ => RemoteState::Running,
    }
}

impl RayApi {
    pub fn new(address: Url, token: Option<Secret>) -> Result<Self, RemoteError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(transient)?;
        Ok(Self {
            address,
            token,
            http,
        })
    }

    fn url(&self, path: &str) -> Result<Url, RemoteError> {
        self.address
            .join(path)
            .map_err(|e| RemoteError::Rejected(format!("{path}: {e}")))
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> Result<reqwest::RequestBuilder, RemoteError> {
        let request = self.http.request(method, self.url(path)?);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        })
    }

    /// Sends and sorts the answer: 2xx, 404 (`None`), refused (401/403/4xx), or transient.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<reqwest::Response>, RemoteError> {
        let response = request.send().await.map_err(|e| {
            RemoteError::Transient(format!("the Ray dashboard did not answer: {e}"))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.chars().take(300).collect();
        match status.as_u16() {
            401 => Err(RemoteError::Rejected(
                "the Ray cluster wants a token (set RAY_AUTH_TOKEN)".into(),
            )),
            403 => Err(RemoteError::Rejected(
                "the Ray cluster refused the token".into(),
            )),
            s if (400..500).contains(&s) => {
                Err(RemoteError::Rejected(format!("HTTP {status}: {body}")))
            }
            _ => Err(RemoteError::Transient(format!("HTTP {status}: {body}"))),
        }
    }

    /// The cluster's Ray version: checks the address and the token before any job is claimed.
    pub async fn check(&self) -> Result<String, RemoteError> {
        let response = self
            .send(self.request(reqwest::Method::GET, "api/version")?)
            .await?
            .ok_or_else(|| RemoteError::Rejected("no Ray Jobs API at this address".into()))?;
        let version: Value = response.json().await.map_err(transient)?;
        Ok(version["ray_version"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned())
    }

    pub async fn job(&self, submission_id: &str) -> Result<Option<RayJob>, RemoteError> {
        let path = format!("api/jobs/{submission_id}");
        match self
            .send(self.request(reqwest::Method::GET, &path)?)
            .await?
        {
            Some(r) => Ok(Some(r.json().await.map_err(transient)?)),
            None => Ok(None),
        }
    }

    pub async fn jobs(&self) -> Result<Vec<RayJob>, RemoteError> {
        let response = self
            .send(self.request(reqwest::Method::GET, "api/jobs/")?)
            .await?
            .ok_or_else(|| RemoteError::Rejected("no Ray Jobs API at this address".into()))?;
        response.json().await.map_err(transient)
    }

    pub async fn logs(&self, submission_id: &str) -> Result<String, RemoteError> {
        #[derive(Deserialize)]
        struct Logs {
            logs: String,
        }
        let path = format!("api/jobs/{submission_id}/logs");
        match self
            .send(self.request(reqwest::Method::GET, &path)?)
            .await?
        {
            Some(r) => Ok(r.json::<Logs>().await.map_err(transient)?.logs),
            None => Err(RemoteError::UnknownJob(submission_id.to_owned())),
        }
    }

    pub async fn stop(&self, submission_id: &str) -> Result<(), RemoteError> {
        let path = format!("api/jobs/{submission_id}/stop");
        match self
            .send(self.request(reqwest::Method::POST, &path)?)
            .await?
        {
            Some(_) => Ok(()),
            None => Err(RemoteError::UnknownJob(submission_id.to_owned())),
        }
    }
}

impl RayProvider {
    pub fn new(options: RayOptions, storage: Storage) -> Result<Self, RemoteError> {
        Ok(Self {
            api: RayApi::new(options.address.clone(), options.token.clone())?,
            options,
            storage,
            package: tokio::sync::OnceCell::new(),
            renewed: Mutex::new(HashMap::new()),
        })
    }

    /// The cluster's Jobs API.
    pub fn api(&self) -> &RayApi {
        &self.api
    }

    /// The package's `gcs://` URI, uploaded unless the cluster has it.
    async fn package_uri(&self) -> Result<String, RemoteError> {
        let (name, bytes) = self
            .package
            .get_or_try_init(|| {
                let package = self.options.package.clone();
                async move {
                    tokio::task::spawn_blocking(move || package.zip())
                        .await
                        .map_err(transient)?
                        .map_err(|e| RemoteError::Rejected(format!("packing the entrypoint: {e}")))
                }
            })
            .await?;
        let path = format!("api/packages/gcs/{name}");
        if self
            .api
            .send(self.api.request(reqwest::Method::GET, &path)?)
            .await?
            .is_none()
        {
            let started = Instant::now();
            self.api
                .send(
                    self.api
                        .request(reqwest::Method::PUT, &path)?
                        .timeout(Duration::from_secs(600))
                        .body(bytes.clone()),
                )
                .await?;
            info!(package = %name, bytes = bytes.len(), took_ms = started.elapsed().as_millis() as u64, "uploaded the entrypoint package to Ray");
        }
        Ok(format!("gcs://{name}"))
    }

    /// Writes fresh signed upload URLs into the staging folder's tickets object.
    async fn write_tickets(&self, staging: &str) -> Result<(), RemoteError> {
        let mut files = std::collections::BTreeMap::new();
        for name in ARTIFACT_NAMES {
            let url = self
                .storage
                .sign_upload_url(BUCKET, &format!("{staging}/{name}"), true)
                .await
                .map_err(|e| transient(format!("signing an upload URL failed: {e}")))?;
            files.insert(name.to_owned(), url.to_string());
        }
        let tickets = Tickets {
            expires_at: now_secs() + self.options.ticket_lifetime.as_secs() as i64,
            files,
        };
        self.storage
            .upload_bytes(
                BUCKET,
                &format!("{staging}/{TICKETS}"),
                serde_json::to_vec(&tickets).unwrap_or_default(),
                "application/json",
            )
            .await
            .map_err(|e| transient(format!("storing the upload tickets failed: {e}")))
    }

    /// Renews the tickets of a running job at half their lifetime (and at once in a process
    /// that has not written them: a worker that re-attached after a restart).
    async fn renew_tickets(&self, job: &RayJob, submission_id: &str) {
        let Some(staging) = job.meta("brightrun_staging") else {
            return;
        };
        let due = {
            let renewed = self.renewed.lock().unwrap_or_else(|p| p.into_inner());
            renewed
                .get(submission_id)
                .is_none_or(|at| at.elapsed() >= self.options.ticket_lifetime / 2)
        };
        if !due {
            return;
        }
        match self.write_tickets(staging).await {
            Ok(()) => {
                self.renewed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(submission_id.to_owned(), Instant::now());
            }
            Err(e) => {
                warn!(error = %e, "renewing the upload tickets failed; trying at the next poll")
            }
        }
    }

    async fn submit_new(&self, s: &Submission, submission_id: &str) -> Result<String, RemoteError> {
        let staging = format!("{}/{}/ray-a{}", s.user_id, s.job_id, s.attempt);
        self.write_tickets(&staging).await?;
        self.renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(submission_id.to_owned(), Instant::now());
        let tickets_url = self
            .storage
            .sign_download(
                BUCKET,
                &format!("{staging}/{TICKETS}"),
                self.options.max_run,
            )
            .await
            .map_err(|e| transient(format!("signing the tickets URL failed: {e}")))?;
        let input = TrainInput {
            version: VERSION,
            job_id: s.job_id,
            attempt: s.attempt,
            hyperparameters: s.hyperparameters.clone(),
            dataset: DatasetInput {
                url: s.dataset_url.clone(),
                format: s.dataset_format.clone(),
            },
            artifacts: ArtifactsInput {
                tickets_url: tickets_url.to_string(),
            },
            gpu_config: s.gpu_config.clone(),
        };
        let working_dir = self.package_uri().await?;
        let cpus = self.options.entrypoint_cpus.max(1).to_string();
        let mut runtime_env = json!({
            "working_dir": working_dir,
            "env_vars": {
                SPEC_ENV: serde_json::to_string(&input).unwrap_or_default(),
                "RAYON_NUM_THREADS": cpus,
                "CANDLE_NUM_THREADS": cpus,
            },
        });
        if !self.options.package.pip.is_empty() {
            runtime_env["pip"] = json!(self.options.package.pip);
        }
        let body = json!({
            "entrypoint": self.options.package.entrypoint,
            "submission_id": submission_id,
            "runtime_env": runtime_env,
            "metadata": {
                "brightrun_job_id": s.job_id.to_string(),
                "brightrun_attempt": s.attempt.to_string(),
                "brightrun_staging": staging,
            },
            "entrypoint_num_cpus": self.options.entrypoint_cpus.max(1),
        });
        match self
            .api
            .send(
                self.api
                    .request(reqwest::Method::POST, "api/jobs/")?
                    .json(&body),
            )
            .await
        {
            Ok(_) => Ok(submission_id.to_owned()),
            // A duplicate submission answers 500 "already exists": another process got there
            // first, and that job is ours.
            Err(RemoteError::Transient(m)) if m.contains("already exists") => {
                Ok(submission_id.to_owned())
            }
            Err(e) => Err(e),
        }
    }

    /// Downloads one staged file, checking it against what the entrypoint reported.
    async fn fetch_one(
        &self,
        staging: &str,
        name: &str,
        size: u64,
        sha256: &str,
        to: &Path,
    ) -> Result<(), RemoteError> {
        let mut body = self
            .storage
            .download(BUCKET, &format!("{staging}/{name}"))
            .await
            .map_err(|e| transient(format!("downloading {name} from the staging folder: {e}")))?;
        let mut file = tokio::fs::File::create(to).await.map_err(transient)?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(transient)? {
            hasher.update(&chunk);
            got += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(transient)?;
        }
        file.flush().await.map_err(transient)?;
        let digest = hex::encode(hasher.finalize());
        if got != size || digest != sha256 {
            return Err(RemoteError::Transient(format!(
                "{name} in Storage ({got} bytes, SHA-256 {digest}) is not what the trainer uploaded ({size} bytes, SHA-256 {sha256})"
            )));
        }
        Ok(())
    }
}

/// The log endpoint answers the whole log every time: a second between polls, plus a second
/// per MiB the log has grown to, at most 10 s (a 100 000-step run logs ~20 MiB).
pub fn next_poll(log_bytes: usize) -> Duration {
    let mib = (log_bytes / (1024 * 1024)) as u64;
    Duration::from_secs((1 + mib).min(10))
}

fn submission_id(s: &Submission) -> String {
    format!("brightrun-{}-a{}", s.job_id, s.attempt)
}

impl RemoteProvider for RayProvider {
    fn name(&self) -> &'static str {
        "ray"
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn submit<'a>(&'a self, s: &'a Submission) -> BoxFut<'a, String> {
        Box::pin(async move {
            let id = submission_id(s);
            // Idempotent: this attempt's Ray job, or a live one of an earlier attempt whose id
            // was never recorded (a worker killed between submitting and saving it).
            let job_id = s.job_id.to_string();
            let existing = self.api.jobs().await?.into_iter().find(|j| {
                j.submission_id.as_deref() == Some(id.as_str())
                    || (j.meta("brightrun_job_id") == Some(job_id.as_str()) && !j.is_terminal())
            });
            if let Some(found) = existing.and_then(|j| j.submission_id) {
                info!(submission_id = %found, "the Ray job exists already; attaching to it");
                return Ok(found);
            }
            self.submit_new(s, &id).await
        })
    }

    fn poll<'a>(&'a self, external_id: &'a str, cursor: u64) -> BoxFut<'a, Poll> {
        Box::pin(async move {
            let job = self
                .api
                .job(external_id)
                .await?
                .ok_or_else(|| RemoteError::UnknownJob(external_id.to_owned()))?;
            let logs = self.api.logs(external_id).await?;
            let events: Vec<Event> = logs.lines().filter_map(Event::parse).collect();
            let new_events = events
                .iter()
                .skip(usize::try_from(cursor).unwrap_or(usize::MAX))
                .filter_map(Event::to_trainer_event)
                .collect();
            let mut state = state_of(&job, &events, &logs);
            if job.status == "PENDING" {
                let waited = job
                    .start_time
                    .map(|ms| (now_secs() * 1000).saturating_sub(ms as i64).max(0) as u64)
                    .unwrap_or(0);
                if Duration::from_millis(waited) > self.options.pending_timeout {
                    let _ = self.api.stop(external_id).await;
                    state = RemoteState::Failed {
                        message: format!(
                            "the Ray job did not start within {} min ({}); the cluster may lack {} free CPU(s) for the entrypoint: add nodes or lower --ray-entrypoint-cpus",
                            self.options.pending_timeout.as_secs() / 60,
                            job.message.as_deref().unwrap_or("waiting for resources"),
                            self.options.entrypoint_cpus.max(1)
                        ),
                        retryable: true,
                        detail: detail_of(&job),
                    };
                }
            }
            if !job.is_terminal() {
                self.renew_tickets(&job, external_id).await;
            }
            Ok(Poll {
                events: new_events,
                cursor: events.len() as u64,
                state,
                next_poll: Some(next_poll(logs.len())),
            })
        })
    }

    fn cancel<'a>(&'a self, external_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.api.stop(external_id).await?;
            // Ray answers `stopped: true` to a PENDING job and does nothing (ray#58353): keep
            // stopping it, in the background, until it has started or ended.
            if self
                .api
                .job(external_id)
                .await?
                .is_some_and(|j| j.status == "PENDING")
            {
                let this = self.api.clone();
                let id = external_id.to_owned();
                let deadline = Instant::now() + self.options.pending_timeout;
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match this.job(&id).await {
                            Ok(Some(j)) if j.status == "PENDING" => continue,
                            Ok(Some(j)) if !j.is_terminal() => {
                                let _ = this.stop(&id).await;
                                info!(submission_id = %id, "stopped the Ray job once it left PENDING");
                                return;
                            }
                            Ok(_) => return,
                            Err(_) => continue,
                        }
                    }
                });
            }
            Ok(())
        })
    }

    fn fetch_artifacts<'a>(
        &'a self,
        external_id: &'a str,
        dir: &'a Path,
    ) -> BoxFut<'a, Vec<PathBuf>> {
        Box::pin(async move {
            let job = self
                .api
                .job(external_id)
                .await?
                .ok_or_else(|| RemoteError::UnknownJob(external_id.to_owned()))?;
            let staging = job
                .meta("brightrun_staging")
                .ok_or_else(|| {
                    RemoteError::Rejected(format!(
                        "Ray job {external_id} has no brightrun_staging metadata"
                    ))
                })?
                .to_owned();
            let logs = self.api.logs(external_id).await?;
            let mut reported: Vec<(String, u64, String)> = Vec::new();
            for event in logs.lines().filter_map(Event::parse) {
                if let Event::Artifact { name, size, sha256 } = event {
                    // A retried upload reports the file again: the last report counts.
                    reported.retain(|(n, _, _)| *n != name);
                    reported.push((name, size, sha256));
                }
            }
            if reported.is_empty() {
                return Err(RemoteError::Rejected(
                    "the entrypoint reported no adapter files".into(),
                ));
            }
            let mut files = Vec::new();
            for (name, size, sha256) in reported {
                if !ARTIFACT_NAMES.contains(&name.as_str()) {
                    return Err(RemoteError::Rejected(format!(
                        "the entrypoint reported a file it had no ticket for: {name}"
                    )));
                }
                let path = dir.join(&name);
                self.fetch_one(&staging, &name, size, &sha256, &path)
                    .await?;
                files.push(path);
            }
            self.renewed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(external_id);
            Ok(files)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, error_type: Option<&str>) -> RayJob {
        RayJob {
            submission_id: Some("brightrun-x-a1".into()),
            status: status.into(),
            message: Some("Job entrypoint command failed with exit code 1, last available logs (truncated to 20,000 chars):\nboom".into()),
            error_type: error_type.map(Into::into),
            driver_exit_code: Some(1),
            start_time: None,
            metadata: None,
        }
    }

    #[test]
    fn ray_states_map_to_ours_with_the_entrypoints_own_words_first() {
        let done = Event::Done {
            final_train_loss: 0.7,
            final_validation_loss: Some(0.8),
        };
        assert_eq!(
            state_of(&job("SUCCEEDED", None), &[done], ""),
            RemoteState::Succeeded {
                final_train_loss: 0.7,
                final_validation_loss: Some(0.8)
            }
        );
        let RemoteState::Failed {
            message, retryable, ..
        } = state_of(&job("SUCCEEDED", None), &[], "loading\nKilled\n")
        else {
            panic!("a run without `done` is not a success")
        };
        assert!(retryable && message.contains("Killed"), "{message}");
        assert_eq!(
            state_of(&job("RUNNING", None), &[], ""),
            RemoteState::Running
        );
        assert_eq!(
            state_of(&job("PENDING", None), &[], ""),
            RemoteState::Running
        );
        assert_eq!(
            state_of(&job("STOPPED", None), &[], ""),
            RemoteState::Cancelled
        );
        let reported = Event::Error {
            message: "invalid training settings: lora_rank 0".into(),
            retryable: false,
        };
        assert_eq!(
            state_of(
                &job("FAILED", Some("JOB_ENTRYPOINT_COMMAND_ERROR")),
                &[reported],
                "x"
            ),
            RemoteState::Failed {
                message: "invalid training settings: lora_rank 0".into(),
                retryable: false,
                detail: Some(job("FAILED", None).message.expect("message")),
            }
        );
        let RemoteState::Failed {
            message, retryable, ..
        } = state_of(
            &job("FAILED", Some("JOB_ENTRYPOINT_COMMAND_ERROR")),
            &[],
            "{\"brightrun\":1,\"event\":\"stage\",\"stage\":\"training\"}\nTraceback (most recent call last):\nRuntimeError: CUDA error: out of memory\n",
        )
        else {
            panic!("FAILED is a failure")
        };
        assert!(retryable);
        assert!(
            message.contains("exit code 1")
                && message.ends_with("RuntimeError: CUDA error: out of memory"),
            "{message}"
        );
        let RemoteState::Failed {
            message, retryable, ..
        } = state_of(&job("FAILED", Some("RUNTIME_ENV_SETUP_FAILURE")), &[], "")
        else {
            panic!("FAILED is a failure")
        };
        assert!(!retryable, "a broken runtime environment is not retried");
        assert!(message.contains("could not set up"), "{message}");
        let mut killed = job("FAILED", Some("JOB_ENTRYPOINT_COMMAND_ERROR"));
        killed.driver_exit_code = Some(137);
        let RemoteState::Failed { message, .. } = state_of(&killed, &[], "step 3\n") else {
            panic!("FAILED is a failure")
        };
        assert!(message.contains("lack of memory"), "{message}");
    }

    #[test]
    fn polls_space_out_as_the_log_grows() {
        assert_eq!(next_poll(0), Duration::from_secs(1));
        assert_eq!(next_poll(900 * 1024), Duration::from_secs(1));
        assert_eq!(next_poll(3 * 1024 * 1024 + 5), Duration::from_secs(4));
        assert_eq!(next_poll(200 * 1024 * 1024), Duration::from_secs(10));
    }

    #[test]
    fn the_package_is_a_zip_named_by_its_content_with_executable_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("trainer");
        std::fs::write(&bin, b"#!/bin/sh\necho hi\n").expect("write");
        let package = RayPackage::brightrun_train(bin.clone());
        let (name, bytes) = package.zip().expect("zip");
        let (again, _) = package.zip().expect("zip");
        assert_eq!(name, again, "the same content gives the same name");
        assert!(
            name.starts_with("_ray_pkg_") && name.ends_with(".zip"),
            "{name}"
        );
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
        let entry = archive.by_name("brightrun-train").expect("the binary");
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o755));
        std::fs::write(&bin, b"#!/bin/sh\necho changed\n").expect("write");
        let (changed, _) = package.zip().expect("zip");
        assert_ne!(name, changed, "new content, new name");
    }
}
