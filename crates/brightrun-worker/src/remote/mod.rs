//! Remote training: the worker drives a job that runs elsewhere — on a Ray cluster ([`ray`]), or
//! on a provider's API (the scripted [`fake`] stands in for a GPU cloud in tests).
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
use std::time::Duration;

use brightrun_core::model::HyperparameterConfig;
use tracing::{info, warn};
use uuid::Uuid;

pub mod fake;
pub mod ray;

pub use fake::FakeProvider;
pub use ray::{RayOptions, RayProvider};

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
    /// With `attempt`, the idempotency key: submitting the same attempt twice returns the same
    /// remote job.
    pub job_id: Uuid,
    pub attempt: u32,
    /// The job's owner: the adapter's objects live under this user's folder.
    pub user_id: Uuid,
    pub hyperparameters: HyperparameterConfig,
    /// A signed URL the provider downloads the JSONL dataset from.
    pub dataset_url: String,
    /// `datasets.format`.
    pub dataset_format: String,
    pub gpu_config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RemoteState {
    Running,
    Succeeded {
        final_train_loss: f64,
        final_validation_loss: Option<f64>,
    },
    /// `retryable: false` when the job's settings or data are at fault; `detail` (the
    /// provider's whole account, for `error_stack`) is never shown in notifications.
    Failed {
        message: String,
        retryable: bool,
        detail: Option<String>,
    },
    Cancelled,
}

/// Events since `cursor`, the next cursor, and where the remote job is.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    pub events: Vec<TrainerEvent>,
    pub cursor: u64,
    pub state: RemoteState,
    /// When to poll next, if not after [`RemoteProvider::poll_interval`] (a provider whose
    /// polls cost more as the job goes on spaces them out).
    pub next_poll: Option<Duration>,
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

/// How long a provider may not answer before the attempt fails.
const UNAVAILABLE_GRACE: Duration = Duration::from_secs(90);

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
    dataset_format: &str,
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
                attempt: u32::try_from(lease.attempt).unwrap_or(0),
                user_id: job.user_id,
                hyperparameters,
                dataset_url: dataset_url.to_string(),
                dataset_format: dataset_format.to_owned(),
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
    // Since when the provider has not answered (a restarting head, a network blip): given
    // UNAVAILABLE_GRACE before the attempt fails, so a restart costs no attempt of its own.
    let mut unavailable_since: Option<std::time::Instant> = None;
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
                unavailable_since = None;
                poll
            }
            Err(RemoteError::Transient(m))
                if unavailable_since.is_none_or(|t| t.elapsed() < UNAVAILABLE_GRACE) =>
            {
                unavailable_since.get_or_insert_with(std::time::Instant::now);
                warn!(error = %m, "polling the provider failed; trying again");
                sleep_unless_stopped(provider.poll_interval(), control).await;
                continue;
            }
            Err(RemoteError::UnknownJob(id)) => {
                // Forget the id so the next attempt submits afresh.
                ctx.queue.set_external_job_id(lease, None).await?;
                return Err(failed(
                    format!(
                        "{} lost remote job {id} (restarted or cleaned up?); it is submitted again",
                        provider.name()
                    ),
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
        let wait = poll.next_poll.unwrap_or_else(|| provider.poll_interval());
        match poll.state {
            RemoteState::Running => {}
            RemoteState::Succeeded {
                final_train_loss,
                final_validation_loss,
            } => break (final_train_loss, final_validation_loss),
            RemoteState::Failed {
                message,
                retryable,
                detail,
            } => {
                ctx.queue.set_external_job_id(lease, None).await?;
                return Err(AttemptError::Failed(crate::queue::AttemptFailure {
                    message: format!("training on {} failed: {message}", provider.name()),
                    detail,
                    retry: if retryable {
                        RetryDecision::Retryable
                    } else {
                        RetryDecision::Permanent
                    },
                }));
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
        sleep_unless_stopped(wait, control).await;
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
