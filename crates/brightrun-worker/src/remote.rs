//! Remote training providers (the production path: GPU clouds behind an API) and a scripted
//! fake for tests.
//!
//! The worker drives a provider asynchronously: submit (with the job id as idempotency key) and
//! store the provider's id in `training_jobs.external_job_id`, poll events, cancel, fetch the
//! adapter files. A later attempt of the same job (after a crash or a hand-back) finds
//! `external_job_id` set and re-attaches to the running remote job instead of paying for a
//! second one; events are replayed from the start and land idempotently in `metrics_points`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brightrun_core::model::HyperparameterConfig;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::queue::{ClaimedJob, RetryDecision};
use crate::runtime::{Control, Ctx};
use crate::train_job::{AttemptError, EventSink};
use crate::trainer::{Stage, TrainedAdapter, TrainerEvent};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, RemoteError>> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    /// Network trouble or a 5xx: poll again later.
    #[error("provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request (bad settings, quota): not retried.
    #[error("provider refused: {0}")]
    Rejected(String),
    #[error("the provider does not know job {0}")]
    UnknownJob(String),
}

/// What a provider is asked to train.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The idempotency key: submitting the same job twice returns the same remote job.
    pub job_id: Uuid,
    pub hyperparameters: HyperparameterConfig,
    /// A signed URL the provider downloads the JSONL dataset from.
    pub dataset_url: String,
    pub gpu_config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RemoteState {
    Running,
    Succeeded {
        final_train_loss: f64,
        final_validation_loss: Option<f64>,
    },
    Failed(String),
    Cancelled,
}

/// Events since `cursor`, the next cursor, and where the remote job is.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    pub events: Vec<TrainerEvent>,
    pub cursor: u64,
    pub state: RemoteState,
}

pub trait RemoteProvider: Send + Sync {
    fn name(&self) -> &'static str;

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Starts a remote job and returns the provider's id for it.
    fn submit<'a>(&'a self, submission: &'a Submission) -> BoxFut<'a, String>;

    fn poll<'a>(&'a self, external_id: &'a str, cursor: u64) -> BoxFut<'a, Poll>;

    fn cancel<'a>(&'a self, external_id: &'a str) -> BoxFut<'a, ()>;

    /// Downloads the adapter files into `dir` and returns their paths.
    fn fetch_artifacts<'a>(
        &'a self,
        external_id: &'a str,
        dir: &'a Path,
    ) -> BoxFut<'a, Vec<PathBuf>>;
}

fn failed(message: String, retry: RetryDecision) -> AttemptError {
    AttemptError::Failed(crate::queue::AttemptFailure {
        message,
        detail: None,
        retry,
    })
}

/// Runs one attempt on a remote provider; see the module docs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn drive(
    ctx: &Ctx,
    job: &ClaimedJob,
    control: &Control,
    sink: &mut EventSink<'_>,
    provider: &dyn RemoteProvider,
    hyperparameters: HyperparameterConfig,
    bucket: &str,
    path: &str,
    output_dir: &Path,
) -> Result<TrainedAdapter, AttemptError> {
    let lease = &job.lease;
    let external_id = match &job.external_job_id {
        Some(id) => {
            info!(external_id = %id, "re-attaching to the remote job");
            id.clone()
        }
        None => {
            let dataset_url = ctx
                .storage
                .sign_download(bucket, path, Duration::from_secs(24 * 3600))
                .await
                .map_err(|e| {
                    failed(
                        format!("signing the dataset URL failed: {e}"),
                        RetryDecision::Retryable,
                    )
                })?;
            let submission = Submission {
                job_id: lease.job_id,
                hyperparameters,
                dataset_url: dataset_url.to_string(),
                gpu_config: job.gpu_config.clone(),
            };
            let id = provider.submit(&submission).await.map_err(|e| {
                let retry = match e {
                    RemoteError::Rejected(_) => RetryDecision::Permanent,
                    _ => RetryDecision::Retryable,
                };
                failed(
                    format!("submitting to {} failed: {e}", provider.name()),
                    retry,
                )
            })?;
            ctx.queue.set_external_job_id(lease, Some(&id)).await?;
            info!(external_id = %id, "submitted to the remote provider");
            id
        }
    };
    sink.handle(TrainerEvent::Stage(Stage::Initializing)).await;
    let mut cursor = 0;
    let mut transient_failures = 0u32;
    let (final_train_loss, final_validation_loss) = loop {
        if control.stop.load(Ordering::Relaxed) {
            if control.user_cancel.load(Ordering::Relaxed)
                && let Err(e) = provider.cancel(&external_id).await
            {
                warn!(error = %e, "cancelling the remote job failed");
            }
            // On shutdown or a lost lease the remote job keeps running: the next attempt
            // re-attaches to it.
            return Err(AttemptError::Stopped);
        }
        let poll = match provider.poll(&external_id, cursor).await {
            Ok(poll) => {
                transient_failures = 0;
                poll
            }
            Err(RemoteError::Transient(m)) if transient_failures < 10 => {
                transient_failures += 1;
                warn!(error = %m, "polling the provider failed; trying again");
                tokio::time::sleep(provider.poll_interval()).await;
                continue;
            }
            Err(RemoteError::UnknownJob(id)) => {
                // Forget the id so the next attempt submits afresh.
                ctx.queue.set_external_job_id(lease, None).await?;
                return Err(failed(
                    format!("the provider lost remote job {id}"),
                    RetryDecision::Retryable,
                ));
            }
            Err(e) => {
                return Err(failed(
                    format!("polling the provider failed: {e}"),
                    RetryDecision::Retryable,
                ));
            }
        };
        for event in poll.events {
            sink.handle(event).await;
        }
        cursor = poll.cursor;
        match poll.state {
            RemoteState::Running => {}
            RemoteState::Succeeded {
                final_train_loss,
                final_validation_loss,
            } => break (final_train_loss, final_validation_loss),
            RemoteState::Failed(message) => {
                ctx.queue.set_external_job_id(lease, None).await?;
                return Err(failed(
                    format!("the remote training failed: {message}"),
                    RetryDecision::Retryable,
                ));
            }
            RemoteState::Cancelled if control.user_cancel.load(Ordering::Relaxed) => {
                return Err(AttemptError::Stopped);
            }
            RemoteState::Cancelled => {
                ctx.queue.set_external_job_id(lease, None).await?;
                return Err(failed(
                    "the provider cancelled the remote job".into(),
                    RetryDecision::Retryable,
                ));
            }
        }
        sleep_unless_stopped(provider.poll_interval(), control).await;
    };
    let files = provider
        .fetch_artifacts(&external_id, output_dir)
        .await
        .map_err(|e| {
            failed(
                format!("fetching the adapter failed: {e}"),
                RetryDecision::Retryable,
            )
        })?;
    Ok(TrainedAdapter {
        files,
        final_train_loss,
        final_validation_loss,
    })
}

async fn sleep_unless_stopped(total: Duration, control: &Control) {
    let deadline = tokio::time::Instant::now() + total;
    while tokio::time::Instant::now() < deadline && !control.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20).min(total)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The fake provider
// ---------------------------------------------------------------------------------------------

/// A scripted provider whose state lives in files under `dir`, so several worker processes share
/// it and a worker restarted after a crash finds its remote job again. A remote job advances one
/// step every `step_time` of wall time after submission; `base_model = scripted/fail-training`
/// fails it at step 2. Every submission appends the job id to `dir/submissions.log`.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    pub dir: PathBuf,
    pub total_steps: u64,
    pub step_time: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FakeJob {
    external_id: String,
    job_id: Uuid,
    submitted_at_ms: u64,
    total_steps: u64,
    step_ms: u64,
    fail: bool,
    cancelled: bool,
    hyperparameters: HyperparameterConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io(e: std::io::Error) -> RemoteError {
    RemoteError::Transient(e.to_string())
}

impl FakeProvider {
    fn file(&self, external_id: &str) -> PathBuf {
        let safe: String = external_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    async fn load(&self, external_id: &str) -> Result<FakeJob, RemoteError> {
        let bytes = tokio::fs::read(self.file(external_id))
            .await
            .map_err(|_| RemoteError::UnknownJob(external_id.to_owned()))?;
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Transient(e.to_string()))
    }

    async fn store(&self, job: &FakeJob) -> Result<(), RemoteError> {
        let tmp = self.dir.join(format!(
            "{}.tmp-{}",
            job.external_id,
            Uuid::new_v4().simple()
        ));
        tokio::fs::write(&tmp, serde_json::to_vec(job).unwrap_or_default())
            .await
            .map_err(io)?;
        tokio::fs::rename(&tmp, self.file(&job.external_id))
            .await
            .map_err(io)
    }

    fn loss(step: u64, total: u64) -> f64 {
        0.4 + 2.1 * (-(step as f64) / (total as f64 / 3.0)).exp()
    }
}

impl RemoteProvider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake-remote"
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn submit<'a>(&'a self, s: &'a Submission) -> BoxFut<'a, String> {
        Box::pin(async move {
            tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
            let external_id = format!("fake-{}", s.job_id.simple());
            if self.load(&external_id).await.is_ok() {
                return Ok(external_id);
            }
            if s.hyperparameters.base_model == crate::trainer::scripted::INVALID_MODEL {
                return Err(RemoteError::Rejected(format!(
                    "base model {} is not offered",
                    s.hyperparameters.base_model
                )));
            }
            let job = FakeJob {
                external_id: external_id.clone(),
                job_id: s.job_id,
                submitted_at_ms: now_ms(),
                total_steps: self.total_steps.max(1),
                step_ms: self.step_time.as_millis().max(1) as u64,
                fail: s.hyperparameters.base_model == crate::trainer::scripted::FAIL_TRAINING_MODEL,
                cancelled: false,
                hyperparameters: s.hyperparameters.clone(),
            };
            self.store(&job).await?;
            use tokio::io::AsyncWriteExt as _;
            let mut log = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("submissions.log"))
                .await
                .map_err(io)?;
            log.write_all(format!("{}\n", s.job_id).as_bytes())
                .await
                .map_err(io)?;
            Ok(external_id)
        })
    }

    fn poll<'a>(&'a self, external_id: &'a str, cursor: u64) -> BoxFut<'a, Poll> {
        Box::pin(async move {
            let job = self.load(external_id).await?;
            if job.cancelled {
                return Ok(Poll {
                    events: vec![],
                    cursor,
                    state: RemoteState::Cancelled,
                });
            }
            let elapsed = now_ms().saturating_sub(job.submitted_at_ms);
            let mut done = (elapsed / job.step_ms).min(job.total_steps);
            if job.fail {
                done = done.min(1);
            }
            let mut events = Vec::new();
            if cursor == 0 && done > 0 {
                events.push(TrainerEvent::Stage(Stage::Training));
            }
            for step in cursor + 1..=done {
                let loss = Self::loss(step, job.total_steps);
                events.push(TrainerEvent::Step {
                    epoch: 1,
                    step,
                    total_steps: job.total_steps,
                    loss,
                    learning_rate: job.hyperparameters.learning_rate,
                    tokens_per_second: 3200.0,
                });
                if step == job.total_steps {
                    events.push(TrainerEvent::Validation {
                        step,
                        loss: loss * 1.08,
                    });
                }
            }
            let state = if job.fail && elapsed / job.step_ms >= 2 {
                RemoteState::Failed("CUDA out of memory at step 2 (scripted failure)".into())
            } else if done == job.total_steps {
                let loss = Self::loss(done, job.total_steps);
                RemoteState::Succeeded {
                    final_train_loss: loss,
                    final_validation_loss: Some(loss * 1.08),
                }
            } else {
                RemoteState::Running
            };
            Ok(Poll {
                events,
                cursor: done.max(cursor),
                state,
            })
        })
    }

    fn cancel<'a>(&'a self, external_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let mut job = self.load(external_id).await?;
            job.cancelled = true;
            self.store(&job).await
        })
    }

    fn fetch_artifacts<'a>(
        &'a self,
        external_id: &'a str,
        dir: &'a Path,
    ) -> BoxFut<'a, Vec<PathBuf>> {
        Box::pin(async move {
            let job = self.load(external_id).await?;
            let seed = job.job_id.as_u128() as u64;
            let files = [
                (
                    "adapter_model.safetensors",
                    crate::trainer::scripted::safetensors(seed, 4, 16),
                ),
                (
                    "adapter_config.json",
                    serde_json::to_vec_pretty(&crate::trainer::candle::adapter_config(
                        &job.hyperparameters.base_model,
                        job.hyperparameters.lora_rank as usize,
                        job.hyperparameters.lora_alpha,
                        job.hyperparameters.lora_dropout,
                    ))
                    .unwrap_or_default(),
                ),
                ("tokenizer.json", b"{\"version\":\"1.0\"}".to_vec()),
            ];
            let mut out = Vec::new();
            for (name, bytes) in files {
                let path = dir.join(name);
                tokio::fs::write(&path, bytes).await.map_err(io)?;
                out.push(path);
            }
            Ok(out)
        })
    }
}
