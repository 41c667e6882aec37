//! The worker process's loop: claim work while there is capacity, run each claim in its own
//! task with a heartbeat, reap expired leases, and on shutdown hand running work back.
//!
//! Wake-ups come from `LISTEN brightrun_worker` (migration 20261122300000_worker_queue.sql) with
//! a poll as the fallback, so an idle worker claims new work within milliseconds and a cancel
//! request reaches the running job at once, whatever the heartbeat interval.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};
use uuid::Uuid;

use crate::queue::{Queue, QueuePolicy};
use crate::remote::RemoteProvider;
use crate::trainer::TrainerBackend;
use brightrun_supabase::{Secret, Storage};

/// What trains the jobs this worker claims.
#[derive(Clone)]
pub enum Backend {
    /// A [`TrainerBackend`] in this process (candle on the CPU, or the scripted one).
    Local(Arc<dyn TrainerBackend>),
    /// A training provider's API; the worker submits, follows and fetches.
    Remote(Arc<dyn RemoteProvider>),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local(b) => b.name(),
            Self::Remote(p) => p.name(),
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// libpq URL of a role that owns the tables (the stack's superuser; `postgres` on Supabase).
    pub database_url: String,
    /// The project URL, for Storage.
    pub api_url: String,
    pub service_role_key: Secret,
    pub worker_id: String,
    /// Jobs (training or validation) run at once.
    pub concurrency: usize,
    pub policy: QueuePolicy,
    /// Lease renewal and cancel check; well below `policy.lease`.
    pub heartbeat: Duration,
    /// Fallback queue poll when no notification arrives.
    pub poll_interval: Duration,
    pub reap_interval: Duration,
    /// Where trainers write adapter files before upload.
    pub work_dir: PathBuf,
    /// How long a shutdown waits for running jobs to hand themselves back.
    pub shutdown_grace: Duration,
    /// Minimum time between two progress writes of one job (metrics points are all written).
    pub progress_interval: Duration,
    /// Claim only these users' work (dedicated capacity for a tenant; isolates test runs).
    pub only_users: Option<Vec<Uuid>>,
    /// Threads one dataset validation checks lines on. `None`: the cores divided among the
    /// `concurrency` jobs that may run at once ([`validation_threads`]), so validations side by
    /// side never start more threads than there are cores.
    pub validation_threads: Option<usize>,
}

/// Threads per validation when `concurrency` jobs share `cores`: an equal share, at least one.
/// Their sum over `concurrency` validations is at most `max(cores, concurrency)`.
pub fn validation_threads(cores: usize, concurrency: usize) -> usize {
    (cores / concurrency.max(1)).max(1)
}

impl WorkerConfig {
    /// The thread count each validation uses: [`Self::validation_threads`], or this machine's
    /// share.
    pub fn threads_per_validation(&self) -> usize {
        self.validation_threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            validation_threads(cores, self.concurrency)
        })
    }
}

impl WorkerConfig {
    pub fn new(
        database_url: String,
        api_url: String,
        service_role_key: Secret,
        work_dir: PathBuf,
    ) -> Self {
        Self {
            database_url,
            api_url,
            service_role_key,
            worker_id: format!("worker-{}", Uuid::new_v4().simple()),
            concurrency: 2,
            policy: QueuePolicy::default(),
            heartbeat: Duration::from_secs(2),
            poll_interval: Duration::from_secs(2),
            reap_interval: Duration::from_secs(5),
            work_dir,
            shutdown_grace: Duration::from_secs(20),
            progress_interval: Duration::from_millis(250),
            only_users: None,
            validation_threads: None,
        }
    }
}

/// Why a running job should stop, set from the heartbeat, the notification listener or the
/// shutdown path. `stop` is what the trainer polls; the others say why.
#[derive(Debug, Default)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub user_cancel: AtomicBool,
    pub shutdown: AtomicBool,
    pub lease_lost: AtomicBool,
}

impl Control {
    pub fn request_cancel(&self) {
        self.user_cancel.store(true, Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Shared by every task of one worker.
pub struct Ctx {
    pub queue: Queue,
    pub storage: Storage,
    pub backend: Backend,
    pub work_dir: PathBuf,
    pub heartbeat: Duration,
    pub progress_interval: Duration,
    /// Threads per dataset validation ([`WorkerConfig::threads_per_validation`]).
    pub validation_threads: usize,
}

/// What one worker did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub jobs: u64,
    pub validations: u64,
}

enum Work {
    Dataset(crate::queue::ClaimedDataset),
    Job(Box<crate::queue::ClaimedJob>),
}

/// Runs a worker until `shutdown` resolves, then hands running work back and returns.
pub async fn run(
    config: WorkerConfig,
    backend: Backend,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<Summary> {
    let pool = PgPoolOptions::new()
        .max_connections(config.concurrency as u32 * 2 + 3)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&config.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    let api_url: url::Url = config
        .api_url
        .parse()
        .with_context(|| format!("the API URL {:?} is not a URL", config.api_url))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let key = config.service_role_key.clone();
    let storage = Storage::new(http, &api_url, key.clone(), Arc::new(key));
    tokio::fs::create_dir_all(&config.work_dir)
        .await
        .with_context(|| format!("creating {}", config.work_dir.display()))?;
    let queue = Queue::new(
        pool.clone(),
        config.worker_id.clone(),
        config.policy.clone(),
    )
    .with_only_users(config.only_users.clone());
    let ctx = Arc::new(Ctx {
        queue,
        storage,
        backend: backend.clone(),
        work_dir: config.work_dir.clone(),
        heartbeat: config.heartbeat,
        progress_interval: config.progress_interval,
        validation_threads: config.threads_per_validation(),
    });
    let controls: Arc<Mutex<HashMap<Uuid, Arc<Control>>>> = Arc::default();
    let work_ready = Arc::new(Notify::new());

    let mut listener = PgListener::connect_with(&pool)
        .await
        .context("opening the notification listener")?;
    listener.listen("brightrun_worker").await?;
    let listen_task = {
        let controls = controls.clone();
        let work_ready = work_ready.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(n) => {
                        if let Some(id) = n.payload().strip_prefix("cancel:") {
                            let id = Uuid::parse_str(id).ok();
                            let control = id.and_then(|id| {
                                controls.lock().ok().and_then(|m| m.get(&id).cloned())
                            });
                            if let Some(control) = control {
                                control.request_cancel();
                            }
                        } else {
                            work_ready.notify_one();
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "notification listener failed; polling meanwhile");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };
    let reaper = {
        let ctx = ctx.clone();
        let interval = config.reap_interval;
        let work_ready = work_ready.clone();
        tokio::spawn(async move {
            loop {
                match ctx.queue.reap_jobs().await {
                    Ok(r) if r.requeued + r.failed + r.cancelled > 0 => {
                        info!(
                            requeued = r.requeued,
                            failed = r.failed,
                            cancelled = r.cancelled,
                            "reaped jobs with expired leases"
                        );
                        work_ready.notify_one();
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "reaper pass failed"),
                }
                tokio::time::sleep(interval).await;
            }
        })
    };

    info!(worker_id = %config.worker_id, backend = backend.name(), concurrency = config.concurrency,
          lease_s = config.policy.lease.as_secs_f64(), "worker started");
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let jobs = Arc::new(AtomicU64::new(0));
    let validations = Arc::new(AtomicU64::new(0));
    tokio::pin!(shutdown);
    'claiming: loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit?,
            () = &mut shutdown => break 'claiming,
        };
        let work = match claim_next(&ctx).await {
            Ok(work) => work,
            Err(e) => {
                warn!(error = %e, "claim failed");
                None
            }
        };
        let Some(work) = work else {
            drop(permit);
            tokio::select! {
                () = work_ready.notified() => {}
                () = tokio::time::sleep(config.poll_interval) => {}
                () = &mut shutdown => break 'claiming,
            }
            continue;
        };
        let control = Arc::new(Control::default());
        let ctx = ctx.clone();
        let controls = controls.clone();
        match work {
            Work::Dataset(ds) => {
                let id = ds.lease.dataset_id;
                controls
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id, control.clone());
                let counter = validations.clone();
                tasks.spawn(async move {
                    crate::validate_job::run(ctx, ds, control).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut m) = controls.lock() {
                        m.remove(&id);
                    }
                    drop(permit);
                });
            }
            Work::Job(job) => {
                let id = job.lease.job_id;
                controls
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(id, control.clone());
                let counter = jobs.clone();
                tasks.spawn(async move {
                    crate::train_job::run(ctx, *job, control).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut m) = controls.lock() {
                        m.remove(&id);
                    }
                    drop(permit);
                });
            }
        }
        // More work may be waiting: claim again without waiting for a notification.
        work_ready.notify_one();
    }

    let running = controls.lock().map(|m| m.len()).unwrap_or(0);
    info!(running, "shutting down: handing running work back");
    if let Ok(m) = controls.lock() {
        for control in m.values() {
            control.shutdown.store(true, Ordering::Relaxed);
            control.stop.store(true, Ordering::Relaxed);
        }
    }
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("running work did not stop in time; its leases will expire and be reaped");
        tasks.abort_all();
    }
    reaper.abort();
    listen_task.abort();
    pool.close().await;
    let summary = Summary {
        jobs: jobs.load(Ordering::Relaxed),
        validations: validations.load(Ordering::Relaxed),
    };
    info!(
        jobs = summary.jobs,
        validations = summary.validations,
        "worker stopped"
    );
    Ok(summary)
}

/// Datasets first (a user is waiting on the upload screen), then training jobs.
async fn claim_next(ctx: &Ctx) -> Result<Option<Work>, crate::queue::QueueError> {
    if let Some(ds) = ctx.queue.claim_dataset().await? {
        return Ok(Some(Work::Dataset(ds)));
    }
    Ok(ctx
        .queue
        .claim_job()
        .await?
        .map(|job| Work::Job(Box::new(job))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validations_side_by_side_share_the_cores() {
        for cores in 1..=16 {
            for concurrency in 1..=8 {
                let each = validation_threads(cores, concurrency);
                assert!(each >= 1, "a validation always gets a thread");
                assert!(
                    each * concurrency <= cores.max(concurrency),
                    "{concurrency} validations of {each} threads oversubscribe {cores} cores"
                );
            }
        }
        assert_eq!(validation_threads(2, 1), 2, "one job alone uses every core");
        assert_eq!(
            validation_threads(2, 2),
            1,
            "two jobs on two cores: one each"
        );
        assert_eq!(validation_threads(8, 3), 2, "an equal share, rounded down");
    }

    #[test]
    fn an_operators_thread_count_wins() {
        let mut config = WorkerConfig::new(
            String::new(),
            String::new(),
            Secret::new("k".to_owned()),
            PathBuf::new(),
        );
        config.concurrency = 64;
        assert_eq!(
            config.threads_per_validation(),
            1,
            "64 jobs on any test machine get one thread each"
        );
        config.validation_threads = Some(3);
        assert_eq!(config.threads_per_validation(), 3, "the operator's count");
    }
}
