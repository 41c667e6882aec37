//! Training jobs: the server's catalogue, a [`JobDraft`] estimated and submitted, and the jobs
//! the user has: list, show, metrics, cancel, clone, watch.

use std::pin::Pin;
use std::task::{Context, Poll};

use brightrun_core::{
    CostEstimate, GpuType, JobDraft, JobStatus, MetricsPoint, TrainingJob, TrainingPreset,
};
use chrono::Utc;
use rand::SeedableRng as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::api::{Api, EstimateRequest};
use crate::app::{App, Listing, Refresh, prefs};
use crate::error::{Error, Result};
use crate::watch::{JobWatcher, Visibility, WatchEvent};

/// A job of the caller's, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct JobRef {
    pub id: Uuid,
}

/// A catalogue list, from the cache (offline, at once) or the server (which refreshes it).
async fn catalogue<T, F>(app: &App, kind: &str, refresh: Refresh, fetch: F) -> Result<Listing<T>>
where
    T: Serialize + DeserializeOwned,
    F: AsyncFnOnce(Api) -> Result<Vec<T>>,
{
    if refresh == Refresh::Cache
        && let Some((items, at)) = app.db().cached_catalogue(kind).await?
    {
        return Ok(Listing {
            items,
            stale: true,
            fetched_at: Some(at),
        });
    }
    let items = fetch(app.api().await?).await?;
    let now = Utc::now();
    app.db().put_catalogue(kind, &items, now).await?;
    Ok(Listing {
        items,
        stale: false,
        fetched_at: Some(now),
    })
}

/// The GPU types on offer, in catalogue order (memory, price per GPU-hour, throughput).
pub async fn gpu_types(app: &App, refresh: Refresh) -> Result<Listing<GpuType>> {
    catalogue(app, "gpu_types", refresh, async |api: Api| {
        api.gpu_types().await
    })
    .await
}

/// The hyperparameter presets on offer, in catalogue order.
pub async fn presets(app: &App, refresh: Refresh) -> Result<Listing<TrainingPreset>> {
    catalogue(app, "presets", refresh, async |api: Api| {
        api.presets().await
    })
    .await
}

/// The draft's configuration, checked against the server's presets, GPU catalogue and bounds
/// (the catalogue as cached when it was fetched before, so a form's estimates cost one request).
async fn resolve(app: &App, draft: &JobDraft) -> Result<brightrun_core::CreateTrainingJobInput> {
    let presets = presets(app, Refresh::Cache).await?.items;
    let gpus = gpu_types(app, Refresh::Cache).await?.items;
    draft
        .resolve(&presets, &gpus)
        .map_err(|e| Error::InvalidInput(e.to_string()))
}

/// What the draft would cost, computed by the server (`estimate_training_cost`) from the
/// dataset's tokens, the epochs, the GPU's throughput and price; the answer carries the inputs.
pub async fn estimate(app: &App, draft: JobDraft) -> Result<CostEstimate> {
    let input = resolve(app, &draft).await?;
    app.api()
        .await?
        .estimate_training_cost(&EstimateRequest {
            dataset_id: input.dataset_id,
            gpu_type: input.gpu_config.gpu_type.clone(),
            gpu_count: input.gpu_config.num_gpus,
            epochs: Some(input.hyperparameters.num_epochs),
            preset_id: Some(input.preset_id),
        })
        .await
}

/// What a form shows beside a draft as the user edits it: every value out of bounds (by
/// field), what is allowed but unwise, and the configuration that would be submitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DraftCheck {
    /// The preset's values with the draft's changes; `None` when the preset is unknown.
    pub hyperparameters: Option<brightrun_core::HyperparameterConfig>,
    /// Blocking: the server would refuse these (`field` is a hyperparameter's name,
    /// `gpu_type`, `gpu_count` or `preset`).
    pub problems: Vec<brightrun_core::HyperparameterProblem>,
    /// Not blocking (the warm-up as long as the run, ...).
    pub warnings: Vec<String>,
    /// Optimizer steps of the run, when the dataset's split is known.
    pub total_steps: Option<u64>,
}

/// Checks a draft as the form holds it, without sending anything: the server's bounds (core's
/// copy), the GPU count the catalogue allows, and the schedule against the dataset's size (from
/// the local cache).
pub async fn check(app: &App, draft: JobDraft) -> Result<DraftCheck> {
    use brightrun_core::HyperparameterProblem as Problem;
    let presets = presets(app, Refresh::Cache).await?.items;
    let gpus = gpu_types(app, Refresh::Cache).await?.items;
    let problem = |field: &str, rule: String| Problem {
        field: field.to_owned(),
        rule,
    };
    let Ok(hyperparameters) = draft.hyperparameters(&presets) else {
        return Ok(DraftCheck {
            hyperparameters: None,
            problems: vec![problem(
                "preset",
                format!("{} is not offered", draft.preset),
            )],
            warnings: Vec::new(),
            total_steps: None,
        });
    };
    let mut problems = hyperparameters.problems();
    match gpus.iter().find(|g| g.id == draft.gpu_type) {
        None => problems.push(problem("gpu_type", "is not offered".to_owned())),
        Some(gpu) if !(1..=gpu.max_gpus).contains(&draft.gpu_count) => problems.push(problem(
            "gpu_count",
            format!("must be between 1 and {} for {}", gpu.max_gpus, gpu.id),
        )),
        Some(_) => {}
    }
    let user = app.user_id().await?;
    let pairs = app
        .db()
        .cached_datasets(user)
        .await?
        .items
        .into_iter()
        .find(|d| d.id == draft.dataset_id)
        .and_then(|d| d.total_training_pairs)
        .and_then(|n| u64::try_from(n).ok());
    let total_steps = pairs.map(|n| hyperparameters.total_steps(n));
    let warnings = total_steps
        .and_then(|steps| hyperparameters.schedule_warning(steps))
        .into_iter()
        .collect();
    Ok(DraftCheck {
        hyperparameters: Some(hyperparameters),
        problems,
        warnings,
        total_steps,
    })
}

/// A job just queued, and what may be wrong with its settings (allowed, but worth a look).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CreatedJob {
    pub job: TrainingJob,
    pub warnings: Vec<String>,
}

/// Queues the job the draft describes (`create_training_job`: the server snapshots the price
/// and the estimate).
pub async fn create(app: &App, draft: JobDraft) -> Result<CreatedJob> {
    let input = resolve(app, &draft).await?;
    let job = app.api().await?.create_training_job(&input).await?;
    let warnings = job
        .total_steps
        .and_then(|n| u64::try_from(n).ok())
        .and_then(|steps| job.hyperparameters.schedule_warning(steps))
        .into_iter()
        .collect();
    Ok(CreatedJob { job, warnings })
}

/// Which jobs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ListJobs {
    #[serde(default)]
    pub refresh: Refresh,
    #[serde(default)]
    pub status: Option<JobStatus>,
}

/// The caller's jobs, newest first: from the server (updating the local cache) or the cache.
pub async fn list(app: &App, request: ListJobs) -> Result<Listing<TrainingJob>> {
    let user = match request.refresh {
        Refresh::Cache => app.user_id().await?,
        Refresh::Server => app.session().await?.user_id(),
    };
    let stale = match request.refresh {
        Refresh::Cache => true,
        Refresh::Server => {
            let fetched_at = Utc::now();
            let jobs = app.api().await?.list_jobs().await?;
            app.db().replace_jobs(user, &jobs, fetched_at).await?;
            false
        }
    };
    let cached = app.db().cached_jobs(user).await?;
    let mut items: Vec<TrainingJob> = cached
        .items
        .into_iter()
        .filter(|j| request.status.as_ref().is_none_or(|s| &j.status == s))
        .collect();
    items.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(Listing {
        items,
        stale,
        fetched_at: cached.fetched_at,
    })
}

/// One job: status, stage, progress, metrics, cost.
pub async fn show(app: &App, request: JobRef) -> Result<TrainingJob> {
    app.api().await?.job(request.id).await
}

/// The metrics of a job's current attempt, by step (the curves).
pub async fn metrics(app: &App, request: JobRef) -> Result<Vec<MetricsPoint>> {
    let api = app.api().await?;
    let job = api.job(request.id).await?;
    api.metrics_since(job.id, job.metrics_attempt(), None).await
}

/// Cancels a queued or running job: a queued one at once, a running one at the worker's next
/// heartbeat. Cancelling a cancelled job is not an error.
pub async fn cancel(app: &App, request: JobRef) -> Result<TrainingJob> {
    app.api().await?.cancel_training_job(request.id).await
}

/// A draft with the settings of an earlier job (same dataset, preset, hyperparameters, GPUs),
/// to edit and submit.
pub async fn clone(app: &App, request: JobRef) -> Result<JobDraft> {
    Ok(JobDraft::clone_of(&app.api().await?.job(request.id).await?))
}

/// What to watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct WatchJobs {
    /// One job: the stream starts with its state now and ends after it reaches a final state.
    /// All jobs when `None`.
    #[serde(default)]
    pub job_id: Option<Uuid>,
    /// Seconds between polls while a job runs, instead of the preferences'.
    #[serde(default)]
    pub interval_seconds: Option<u32>,
}

/// Job events as they happen ([`WatchEvent`]), polled at the cadence of the preferences: fast
/// while a job runs and someone looks, slower in the background, backing off offline. Dropping
/// it stops the polling.
pub struct JobWatch {
    /// The watched job as it was when watching began.
    first: Option<WatchEvent>,
    events: mpsc::Receiver<WatchEvent>,
    visibility: watch::Sender<Visibility>,
    job_id: Option<Uuid>,
    ended: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JobWatch {
    /// The window was shown or hidden: poll at that cadence from now on.
    pub fn set_visibility(&self, visibility: Visibility) {
        self.visibility.send_replace(visibility);
    }
}

impl futures::Stream for JobWatch {
    type Item = WatchEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            let event = match self.first.take() {
                Some(first) => first,
                None => match self.events.poll_recv(cx) {
                    Poll::Ready(Some(event)) => event,
                    other => return other,
                },
            };
            let Some(id) = self.job_id else {
                return Poll::Ready(Some(event));
            };
            let keep = match &event {
                WatchEvent::JobUpdated { job } if job.id == id => {
                    self.ended = job.status.is_terminal();
                    true
                }
                WatchEvent::Metrics { job_id, .. } => *job_id == id,
                WatchEvent::Alert { alert } => alert.job_id == id,
                WatchEvent::JobUpdated { .. } => false,
                WatchEvent::Offline { .. } | WatchEvent::Online | WatchEvent::SignedOut => true,
            };
            if keep {
                return Poll::Ready(Some(event));
            }
        }
    }
}

/// Starts watching the signed-in user's jobs (or one of them). The first events describe the
/// jobs as they are; alerts follow each completion or failure once, across restarts.
pub async fn watch(app: &App, request: WatchJobs) -> Result<JobWatch> {
    let api = app.api().await?;
    // An unknown id is an error now, not a stream that never ends.
    let first = match request.job_id {
        Some(id) => Some(WatchEvent::JobUpdated {
            job: Box::new(api.job(id).await?),
        }),
        None => None,
    };
    let user = api.session().user_id();
    let mut cadence = prefs::get(app).await?.cadence();
    if let Some(seconds) = request.interval_seconds {
        let interval = std::time::Duration::from_secs(u64::from(seconds.max(1)));
        cadence.active_foreground = interval;
        cadence.active_background = cadence.active_background.max(interval);
    }
    let watcher = JobWatcher::new(std::sync::Arc::new(api), app.db().clone(), user).await?;
    let (events_tx, events) = mpsc::channel(64);
    let (visibility, visibility_rx) = watch::channel(Visibility::Foreground);
    let task = tokio::spawn(watcher.run(
        cadence,
        visibility_rx,
        events_tx,
        rand::rngs::StdRng::from_entropy(),
    ));
    Ok(JobWatch {
        first,
        events,
        visibility,
        job_id: request.job_id,
        ended: false,
        task,
    })
}
