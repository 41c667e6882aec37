//! The job watcher against the real stack: incremental changes, metrics by step within the job's
//! current attempt, one alert per terminal transition that survives a restart, none for history
//! or for a cancelled job.

use std::sync::Arc;
use std::time::Duration;

use brightrun_client::Secret;
use brightrun_client::api::Api;
use brightrun_client::local::LocalDb;
use brightrun_client::retry::{Retrier, RetryPolicy};
use brightrun_client::session::Session;
use brightrun_client::watch::{Cadence, JobFeed, JobWatcher, Visibility, WatchEvent};
use brightrun_core::{
    CreateTrainingJobInput, GpuConfig, HyperparameterConfig, JobStatus, PresetId,
};
use rand::SeedableRng;
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{self, db, minted, ready_dataset};

fn job_input(dataset_id: Uuid) -> CreateTrainingJobInput {
    CreateTrainingJobInput {
        dataset_id,
        preset_id: PresetId::Conservative,
        // The conservative preset's values (the server merges them over its own).
        hyperparameters: HyperparameterConfig {
            base_model: "mistralai/Mistral-7B-v0.1".into(),
            learning_rate: 0.0001,
            batch_size: 4,
            num_epochs: 3,
            lora_rank: 8,
            lora_alpha: 16,
            lora_dropout: 0.05,
            warmup_steps: Some(100),
            weight_decay: Some(0.01),
            gradient_accumulation_steps: None,
            max_grad_norm: None,
        },
        gpu_config: GpuConfig {
            gpu_type: "A6000-48GB".into(),
            num_gpus: 1,
            gpu_memory_gb: 48.0,
            cost_per_gpu_hour: 1.5,
        },
    }
}

/// What the worker writes: a status change (and with it a new `updated_at`).
async fn set_status(db: &PgPool, job_id: Uuid, status: &str) {
    let terminal = matches!(status, "completed" | "failed" | "cancelled");
    sqlx::query(
        "update public.training_jobs set status = $2,
            started_at = coalesce(started_at, now()),
            completed_at = case when $3 then now() end,
            final_cost = case when $2 = 'completed' then 1.23 end,
            error_message = case when $2 = 'failed' then 'out of memory' end
         where id = $1",
    )
    .bind(job_id)
    .bind(status)
    .bind(terminal)
    .execute(db)
    .await
    .expect("update job status");
}

async fn add_metrics(db: &PgPool, job_id: Uuid, steps: std::ops::RangeInclusive<i32>) {
    add_attempt_metrics(db, job_id, 1, steps).await;
}

/// Points as the worker holding `attempt` writes them.
async fn add_attempt_metrics(
    db: &PgPool,
    job_id: Uuid,
    attempt: i32,
    steps: std::ops::RangeInclusive<i32>,
) {
    for step in steps {
        sqlx::query(
            "insert into public.metrics_points (job_id, attempt, epoch, step, training_loss, learning_rate)
             values ($1, $2, 0, $3, 1.0, 0.0001)",
        )
        .bind(job_id)
        .bind(attempt)
        .bind(step)
        .execute(db)
        .await
        .expect("insert metric");
    }
}

/// What a claim writes: the next attempt, running from step 0 (`attempt` is the fencing token).
async fn claim(db: &PgPool, job_id: Uuid, attempt: i32) {
    sqlx::query(
        "update public.training_jobs set status = 'running', current_stage = 'training',
            attempt = $2, current_step = 0, worker_id = 'worker-' || $2::text,
            started_at = coalesce(started_at, now())
         where id = $1",
    )
    .bind(job_id)
    .bind(attempt)
    .execute(db)
    .await
    .expect("claim the job");
}

fn updated(events: &[WatchEvent]) -> Vec<(Uuid, JobStatus)> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::JobUpdated { job } => Some((job.id, job.status.clone())),
            _ => None,
        })
        .collect()
}

fn steps(events: &[WatchEvent], job_id: Uuid) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Metrics {
                job_id: id, points, ..
            } if *id == job_id => Some(points.iter().map(|p| p.step).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// `(attempt, steps)` of each `Metrics` event of a job.
fn attempt_steps(events: &[WatchEvent], job_id: Uuid) -> Vec<(i64, Vec<i64>)> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Metrics {
                job_id: id,
                attempt,
                points,
            } if *id == job_id => Some((*attempt, points.iter().map(|p| p.step).collect())),
            _ => None,
        })
        .collect()
}

fn alerts(events: &[WatchEvent]) -> Vec<(Uuid, JobStatus, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Alert { alert: a } => Some((
                a.job_id,
                a.status.clone(),
                format!("{} {}", a.title, a.body),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn watcher_reports_changes_and_alerts_once_across_restarts() {
    let (user, api) = minted("watch").await;
    let pg = db().await;
    let dataset = ready_dataset(&pg, user.id, "Watched").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("local.db");
    let local = LocalDb::open(&path).await.expect("local db");
    let feed: Arc<dyn JobFeed> = Arc::new(api.clone());

    // History: a job that completed before this machine ever watched.
    let old = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("old job");
    add_metrics(&pg, old.id, 1..=2).await;
    set_status(&pg, old.id, "completed").await;

    let mut watcher = JobWatcher::new(feed.clone(), local.clone(), user.id)
        .await
        .expect("watcher");
    let events = watcher.poll_once().await.expect("first poll");
    assert_eq!(
        updated(&events),
        vec![(old.id, JobStatus::Completed)],
        "the first sync lists history"
    );
    assert!(
        alerts(&events).is_empty(),
        "history raises no alert: {events:?}"
    );
    assert!(steps(&events, old.id).is_empty(), "and loads no old curves");
    assert!(
        watcher.poll_once().await.expect("poll").is_empty(),
        "nothing changed, nothing reported"
    );

    // A new job runs and logs metrics.
    let job = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("job");
    set_status(&pg, job.id, "running").await;
    add_metrics(&pg, job.id, 1..=3).await;
    let events = watcher.poll_once().await.expect("poll");
    assert_eq!(
        updated(&events),
        vec![(job.id, JobStatus::Running)],
        "the new job, running"
    );
    assert_eq!(steps(&events, job.id), vec![1, 2, 3], "its metrics so far");
    assert!(watcher.any_active(), "a running job makes the cadence fast");

    // Points without a job-row change still arrive, and only the new ones.
    add_metrics(&pg, job.id, 4..=5).await;
    let events = watcher.poll_once().await.expect("poll");
    assert!(updated(&events).is_empty(), "the job row did not change");
    assert_eq!(
        steps(&events, job.id),
        vec![4, 5],
        "only steps after the last one"
    );

    // It completes, with a last point.
    add_metrics(&pg, job.id, 6..=6).await;
    set_status(&pg, job.id, "completed").await;
    let events = watcher.poll_once().await.expect("poll");
    assert_eq!(
        updated(&events),
        vec![(job.id, JobStatus::Completed)],
        "the terminal transition"
    );
    assert_eq!(steps(&events, job.id), vec![6], "and the last point");
    let raised = alerts(&events);
    assert_eq!(raised.len(), 1, "exactly one alert: {events:?}");
    assert_eq!(
        (raised[0].0, raised[0].1.clone()),
        (job.id, JobStatus::Completed),
        "for this job"
    );
    assert!(
        !raised[0].2.contains('/') && !raised[0].2.contains(&user.id.to_string()),
        "the alert text carries no path or id beyond a short job id: {}",
        raised[0].2
    );
    assert!(
        watcher.poll_once().await.expect("poll").is_empty(),
        "no repeat on the next poll"
    );
    assert!(!watcher.any_active(), "nothing runs any more");

    // Restart: a new watcher on the reopened database.
    drop(watcher);
    local.close().await;
    let local = LocalDb::open(&path).await.expect("reopen");
    let mut watcher = JobWatcher::new(feed.clone(), local.clone(), user.id)
        .await
        .expect("watcher");
    let events = watcher.poll_once().await.expect("poll after restart");
    assert!(
        alerts(&events).is_empty(),
        "a restart never re-announces: {events:?}"
    );
    assert!(
        updated(&events).is_empty(),
        "and reports nothing it reported before: {events:?}"
    );

    // Cancelled by the user: an update, no alert. Failed: an alert.
    let cancelled = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("job");
    api.cancel_training_job(cancelled.id).await.expect("cancel");
    let failed = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("job");
    set_status(&pg, failed.id, "failed").await;
    let events = watcher.poll_once().await.expect("poll");
    let statuses = updated(&events);
    assert!(
        statuses.contains(&(cancelled.id, JobStatus::Cancelled))
            && statuses.contains(&(failed.id, JobStatus::Failed)),
        "both changes are reported: {statuses:?}"
    );
    let raised = alerts(&events);
    assert_eq!(
        raised
            .iter()
            .map(|a| (a.0, a.1.clone()))
            .collect::<Vec<_>>(),
        vec![(failed.id, JobStatus::Failed)],
        "the failure alerts, the user's own cancel does not"
    );
    let cached = local.cached_jobs(user.id).await.expect("cache");
    assert_eq!(cached.items.len(), 4, "every job is in the offline cache");
    assert!(
        cached.fetched_at.is_some(),
        "with the time of the last refresh"
    );
    pg.close().await;
}

#[tokio::test]
async fn a_reclaimed_job_restarts_its_curve_without_mixing_attempts() {
    let (user, api) = minted("watch-attempts").await;
    let pg = db().await;
    let dataset = ready_dataset(&pg, user.id, "Reclaimed").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalDb::open(&dir.path().join("local.db"))
        .await
        .expect("local db");
    let mut watcher = JobWatcher::new(Arc::new(api.clone()), local, user.id)
        .await
        .expect("watcher");
    assert!(
        watcher.poll_once().await.expect("first poll").is_empty(),
        "a new user has no jobs"
    );

    let job = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("job");
    claim(&pg, job.id, 1).await;
    add_attempt_metrics(&pg, job.id, 1, 1..=5).await;
    let events = watcher.poll_once().await.expect("poll");
    assert_eq!(
        attempt_steps(&events, job.id),
        vec![(1, vec![1, 2, 3, 4, 5])],
        "the first attempt's points: {events:?}"
    );

    // The first worker logs one more point, loses its lease, and another worker reclaims the
    // job: attempt 2 starts again at step 1, below the step the watcher had reached.
    add_attempt_metrics(&pg, job.id, 1, 6..=6).await;
    claim(&pg, job.id, 2).await;
    add_attempt_metrics(&pg, job.id, 2, 1..=3).await;
    let events = watcher.poll_once().await.expect("poll after the reclaim");
    let reclaimed = updated(&events);
    assert_eq!(
        reclaimed,
        vec![(job.id, JobStatus::Running)],
        "the claim changed the row"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, WatchEvent::JobUpdated { job: j } if j.attempt == 2)),
        "the job row carries its attempt: {events:?}"
    );
    assert_eq!(
        attempt_steps(&events, job.id),
        vec![(2, vec![1, 2, 3])],
        "the new attempt's curve from step 1, nothing of the old one (its step 6 included): \
         {events:?}"
    );

    // Points of the new attempt past the old attempt's last step, with no row change.
    add_attempt_metrics(&pg, job.id, 2, 4..=7).await;
    let events = watcher.poll_once().await.expect("poll");
    assert!(updated(&events).is_empty(), "the job row did not change");
    assert_eq!(
        attempt_steps(&events, job.id),
        vec![(2, vec![4, 5, 6, 7])],
        "the cursor follows attempt 2 alone (attempt 1's step 6 is not news): {events:?}"
    );
    assert!(
        watcher.poll_once().await.expect("poll").is_empty(),
        "nothing new, nothing reported"
    );
    pg.close().await;
}

#[tokio::test]
async fn offline_polls_back_off_and_stop_when_nobody_listens() {
    let session = Session::with_static_token(
        support::project_at("http://127.0.0.1:1"),
        support::http(),
        Uuid::new_v4(),
        Secret::new("unused"),
    );
    let api = Api::with_retrier(session, Retrier::new(RetryPolicy::none()));
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalDb::open(&dir.path().join("l.db")).await.expect("db");
    let watcher = JobWatcher::new(Arc::new(api), local, Uuid::new_v4())
        .await
        .expect("watcher");
    let cadence = Cadence {
        active_foreground: Duration::from_millis(1),
        offline: RetryPolicy {
            base: Duration::from_millis(2),
            max_backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        },
        ..Cadence::default()
    };
    let (_visible, visibility) = tokio::sync::watch::channel(Visibility::Foreground);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(watcher.run(
        cadence,
        visibility,
        tx,
        rand::rngs::StdRng::seed_from_u64(3),
    ));
    for _ in 0..4 {
        let event = rx.recv().await.expect("an event");
        assert!(
            matches!(event, WatchEvent::Offline { retry_in } if retry_in <= Duration::from_millis(20)),
            "offline polls report Offline with a capped wait: {event:?}"
        );
    }
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watcher stops once nobody listens")
        .expect("no panic");
}

#[tokio::test]
async fn a_failed_cache_write_loses_no_alert() {
    let (user, api) = minted("watch-fail").await;
    let pg = db().await;
    let dataset = ready_dataset(&pg, user.id, "Alerted").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalDb::open(&dir.path().join("local.db"))
        .await
        .expect("local db");
    let feed: Arc<dyn JobFeed> = Arc::new(api.clone());
    let mut watcher = JobWatcher::new(feed, local.clone(), user.id)
        .await
        .expect("watcher");
    watcher.poll_once().await.expect("first sync");

    let job = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("job");
    set_status(&pg, job.id, "completed").await;
    // The cache write of the poll that sees the completion fails (the table is away).
    sqlx::query("alter table list_cache rename to list_cache_away")
        .execute(local.pool())
        .await
        .expect("hide the cache table");
    watcher
        .poll_once()
        .await
        .expect_err("the poll fails with its write");
    sqlx::query("alter table list_cache_away rename to list_cache")
        .execute(local.pool())
        .await
        .expect("restore the cache table");

    let events = watcher.poll_once().await.expect("the next poll");
    let raised = alerts(&events);
    assert_eq!(
        raised
            .iter()
            .map(|a| (a.0, a.1.clone()))
            .collect::<Vec<_>>(),
        vec![(job.id, JobStatus::Completed)],
        "the completion is still announced, once: {events:?}"
    );
    assert!(
        alerts(&watcher.poll_once().await.expect("poll")).is_empty(),
        "and not again"
    );
}

#[tokio::test]
async fn an_outcome_a_list_cached_while_no_watcher_ran_is_still_announced_once() {
    let (user, api) = minted("watch-list").await;
    let pg = db().await;
    let dataset = ready_dataset(&pg, user.id, "Listed").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalDb::open(&dir.path().join("local.db"))
        .await
        .expect("local db");
    let feed: Arc<dyn JobFeed> = Arc::new(api.clone());

    // The app watched here once, then quit.
    let mut watcher = JobWatcher::new(feed.clone(), local.clone(), user.id)
        .await
        .expect("watcher");
    watcher.poll_once().await.expect("first poll");
    drop(watcher);

    // While it is closed a job completes, and `brightrun jobs list` caches it.
    let job = api
        .create_training_job(&job_input(dataset))
        .await
        .expect("job");
    set_status(&pg, job.id, "completed").await;
    let listed = api.list_jobs().await.expect("list");
    local
        .replace_jobs(user.id, &listed, chrono::Utc::now())
        .await
        .expect("the list's cache");

    // The next start announces it, once.
    let mut watcher = JobWatcher::new(feed.clone(), local.clone(), user.id)
        .await
        .expect("watcher");
    let events = watcher.poll_once().await.expect("poll");
    let raised: Vec<Uuid> = alerts(&events).into_iter().map(|a| a.0).collect();
    assert_eq!(raised, vec![job.id], "announced: {events:?}");
    assert!(alerts(&watcher.poll_once().await.expect("poll")).is_empty());
    drop(watcher);
    let mut watcher = JobWatcher::new(feed, local, user.id)
        .await
        .expect("watcher");
    assert!(
        alerts(&watcher.poll_once().await.expect("poll")).is_empty(),
        "not again after another restart"
    );
}
