//! The queue statements in-process: exclusive claims, fencing, the reaper.

use std::time::Duration;

use brightrun_worker::queue::{
    AttemptFailure, JobCompletion, JobProgress, MetricPoint, Queue, QueueError, QueuePolicy,
    RetryDecision,
};
use serde_json::json;
use uuid::Uuid;

use crate::support::*;

fn policy() -> QueuePolicy {
    QueuePolicy {
        lease: Duration::from_secs(30),
        base_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..QueuePolicy::default()
    }
}

async fn expire(pool: &sqlx::PgPool, job: Uuid) {
    sqlx::query(
        "update public.training_jobs set lease_expires_at = now() - interval '1 second' where id = $1",
    )
    .bind(job)
    .execute(pool)
    .await
    .expect("expire lease");
}

fn completion() -> JobCompletion {
    JobCompletion {
        artifact_name: "stale".into(),
        quality_metrics: json!({}),
        training_summary: json!({}),
        configuration: json!({}),
        artifacts: json!({"files": []}),
        final_cost: 1.0,
        gpu_hours: 0.1,
        final_metrics: None,
        epoch: 1,
        step: 1,
        notification: brightrun_worker::notify::job_complete(Uuid::nil(), None, "x", 1.0, 1.0),
    }
}

#[tokio::test]
async fn a_claim_is_exclusive_and_a_stale_workers_writes_are_rejected() {
    let pool = db().await;
    let u = user("fence").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let job = create_job(&u, ds, json!({})).await;
    let a = Queue::new(pool.clone(), "worker-a", policy()).with_only_users(Some(vec![u.id]));
    let b = Queue::new(pool.clone(), "worker-b", policy()).with_only_users(Some(vec![u.id]));

    let claimed = a.claim_job().await.expect("claim").expect("a job to claim");
    assert_eq!(claimed.lease.job_id, job, "A claims the queued job");
    assert_eq!(claimed.lease.attempt, 1, "first claim is attempt 1");
    assert!(
        b.claim_job().await.expect("claim").is_none(),
        "B finds nothing while A holds the job"
    );

    // A stops heartbeating; its lease expires and B's reaper requeues the job; B claims it.
    expire(&pool, job).await;
    let reaped = b.reap_jobs().await.expect("reap");
    assert!(
        reaped.requeued >= 1,
        "the expired job is requeued: {reaped:?}"
    );
    let reclaimed = b.claim_job().await.expect("claim").expect("requeued job");
    assert_eq!(reclaimed.lease.attempt, 2, "the reclaim is attempt 2");

    let stale = &claimed.lease;
    assert!(
        matches!(a.heartbeat(stale).await, Err(QueueError::LeaseLost)),
        "A's heartbeat is refused"
    );
    let progress = JobProgress {
        status: "running",
        stage: "training",
        progress: 50.0,
        epoch: 1,
        step: 99,
        total_steps: Some(100),
        current_metrics: None,
        estimated_completion_at: None,
        current_cost: 9.0,
    };
    assert!(
        matches!(
            a.report_progress(stale, &progress).await,
            Err(QueueError::LeaseLost)
        ),
        "A's progress write is refused"
    );
    let point = MetricPoint {
        epoch: 1,
        step: 99,
        training_loss: 1.0,
        validation_loss: None,
        learning_rate: 0.0001,
        throughput: None,
    };
    assert!(
        matches!(
            a.record_metric(stale, &point).await,
            Err(QueueError::LeaseLost)
        ),
        "A's metrics point is refused"
    );
    assert!(
        matches!(
            a.complete(stale, &completion()).await,
            Err(QueueError::LeaseLost)
        ),
        "A's completion is refused"
    );
    let failure = AttemptFailure {
        message: "stale".into(),
        detail: None,
        retry: RetryDecision::Permanent,
    };
    assert!(
        matches!(
            a.fail_attempt(stale, &failure, |m| brightrun_worker::notify::job_failed(
                job, "x", m
            ))
            .await,
            Err(QueueError::LeaseLost)
        ),
        "A's failure report is refused"
    );
    assert!(
        matches!(a.release(stale).await, Err(QueueError::LeaseLost)),
        "A cannot hand back a job it lost"
    );

    let (status, step, worker, artifacts, points): (String, i32, String, i64, i64) =
        sqlx::query_as(
            "select j.status, j.current_step, j.worker_id,
                (select count(*) from public.model_artifacts a where a.job_id = j.id),
                (select count(*) from public.metrics_points m where m.job_id = j.id)
           from public.training_jobs j where j.id = $1",
        )
        .bind(job)
        .fetch_one(&pool)
        .await
        .expect("job row");
    assert_eq!(status, "initializing", "the job is still B's attempt");
    assert_eq!(step, 0, "A's progress did not land");
    assert_eq!(worker, "worker-b", "B holds the job");
    assert_eq!(artifacts, 0, "A's artifact row did not land");
    assert_eq!(points, 0, "A's metrics point did not land");
    b.heartbeat(&reclaimed.lease)
        .await
        .expect("B's heartbeat is accepted");
    b.record_metric(&reclaimed.lease, &point)
        .await
        .expect("B's metrics point is accepted");
    b.record_metric(&reclaimed.lease, &point)
        .await
        .expect("sending the same point again is fine");
    let points: i64 =
        sqlx::query_scalar("select count(*) from public.metrics_points where job_id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(points, 1, "the point is idempotent per job/attempt/step");
    sqlx::query(
        "update public.training_jobs set status = 'failed', completed_at = now() where id = $1",
    )
    .bind(job)
    .execute(&pool)
    .await
    .expect("clean up");
}

#[tokio::test]
async fn the_reaper_fails_a_job_after_its_last_attempt_with_a_notification() {
    let pool = db().await;
    let u = user("reap").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let job = create_job(&u, ds, json!({})).await;
    sqlx::query("update public.training_jobs set max_attempts = 2 where id = $1")
        .bind(job)
        .execute(&pool)
        .await
        .expect("max attempts");
    let q = Queue::new(pool.clone(), "worker-r", policy()).with_only_users(Some(vec![u.id]));
    for attempt in 1..=2 {
        let c = q.claim_job().await.expect("claim").expect("job");
        assert_eq!(c.lease.attempt, attempt, "claim {attempt}");
        expire(&pool, job).await;
        q.reap_jobs().await.expect("reap");
    }
    let (status, retries, message, completed): (String, i32, String, bool) = sqlx::query_as(
        "select status, retry_count, error_message, completed_at is not null
           from public.training_jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("job");
    assert_eq!(status, "failed", "two lost leases use up two attempts");
    assert_eq!(retries, 2, "both failures are counted");
    assert!(
        message.contains("stopped responding") && message.contains("giving up"),
        "the error says what happened: {message}"
    );
    assert!(completed, "a failed job has completed_at");
    let notes: i64 = sqlx::query_scalar(
        "select count(*) from public.notifications where user_id = $1 and type = 'job_failed'",
    )
    .bind(u.id)
    .fetch_one(&pool)
    .await
    .expect("notifications");
    assert_eq!(notes, 1, "one job_failed notification");
}

#[tokio::test]
async fn concurrent_claims_never_take_the_same_job() {
    let pool = db().await;
    let u = user("race").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let mut jobs = Vec::new();
    for _ in 0..10 {
        jobs.push(create_job(&u, ds, json!({})).await);
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let q = Queue::new(pool.clone(), format!("racer-{w}"), policy())
            .with_only_users(Some(vec![u.id]));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(c) = q.claim_job().await.expect("claim") {
                mine.push(c.lease.job_id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(before, all.len(), "no job was claimed twice");
    assert_eq!(all.len(), jobs.len(), "every job was claimed once");
    sqlx::query("update public.training_jobs set status = 'failed', completed_at = now() where user_id = $1")
        .bind(u.id)
        .execute(&pool)
        .await
        .expect("clean up");
}
