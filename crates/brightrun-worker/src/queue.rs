//! The queue on PostgreSQL: claiming, leases, fenced writes and the reaper.
//!
//! A claim is one statement, `UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING`,
//! so two workers never take the same row and a claim costs one round trip. The claim increments
//! the row's `attempt`; the worker keeps it in a [`JobLease`] and every later write carries
//! `id = $job AND attempt = $attempt AND worker_id = $me AND status IN (held states)`. A worker
//! whose lease expired and whose job was reclaimed (attempt moved on) therefore changes nothing:
//! its writes match no row and come back as [`QueueError::LeaseLost`].
//!
//! Attempts and failures are counted apart: `attempt` is the fencing token and grows with every
//! claim; `retry_count` counts failed attempts (trainer errors, expired leases) and decides,
//! against `max_attempts`, between a requeue with backoff and a final failure. A job handed back
//! on graceful shutdown is not a failure and does not use up an attempt.
//!
//! Datasets waiting for validation are a second queue on `datasets` with the same shape
//! (`validation_attempt` as the token; migration 20261122300000_worker_queue.sql).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row as _};
use uuid::Uuid;

use crate::notify;

/// Why a queue write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The row is no longer ours: the lease expired and was reaped or reclaimed, or the job
    /// reached a final state elsewhere. The caller must stop writing.
    #[error("lease lost: the job is no longer held by this worker at this attempt")]
    LeaseLost,
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// How long leases last and how failed attempts are retried.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    /// A held row whose lease is older than this is reaped. Heartbeats renew it.
    pub lease: Duration,
    /// Backoff before retry `n` (1-based) is `base × 2^(n-1)`, at most `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A dataset whose validation was claimed this many times without finishing is marked
    /// `error` (the file crashes or hangs every worker).
    pub max_validation_attempts: i32,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            base_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(600),
            max_validation_attempts: 3,
        }
    }
}

/// The fencing token of one claim of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobLease {
    pub job_id: Uuid,
    pub attempt: i32,
    pub worker_id: String,
}

/// A job as claimed: what the worker needs to run it.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub lease: JobLease,
    pub user_id: Uuid,
    pub dataset_id: Uuid,
    pub preset_id: String,
    pub hyperparameters: Value,
    pub gpu_config: Value,
    pub total_epochs: i32,
    pub total_steps: Option<i32>,
    pub cost_per_gpu_hour: f64,
    pub num_gpus: i32,
    pub estimated_total_cost: f64,
    pub cost_estimate: Option<Value>,
    pub external_job_id: Option<String>,
    pub retry_count: i32,
    pub max_attempts: i32,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub cancel_requested: bool,
}

/// The columns a running job reports as it goes.
#[derive(Debug, Clone)]
pub struct JobProgress {
    /// `initializing` or `running`.
    pub status: &'static str,
    /// `initializing`, `training`, `validating` or `saving`.
    pub stage: &'static str,
    /// 0–100.
    pub progress: f64,
    pub epoch: i32,
    pub step: i32,
    pub total_steps: Option<i32>,
    pub current_metrics: Option<Value>,
    pub estimated_completion_at: Option<DateTime<Utc>>,
    pub current_cost: f64,
}

/// One row of `metrics_points`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub epoch: i32,
    pub step: i32,
    pub training_loss: f64,
    pub validation_loss: Option<f64>,
    pub learning_rate: f64,
    pub throughput: Option<f64>,
}

/// A failed attempt, as the worker reports it.
#[derive(Debug, Clone)]
pub struct AttemptFailure {
    pub message: String,
    /// Diagnostic detail for `error_stack` (the error chain); never shown in notifications.
    pub detail: Option<String>,
    pub retry: RetryDecision,
}

/// Whether a failure may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Requeue with backoff unless the job has used up its attempts.
    Retryable,
    /// The job can never succeed as configured: fail it now.
    Permanent,
}

/// How a failed attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    Requeued {
        next_attempt_in: Duration,
    },
    Failed,
    /// The user had asked to cancel; the job ends cancelled instead.
    Cancelled,
}

/// Everything the final transaction of a successful job writes.
#[derive(Debug, Clone)]
pub struct JobCompletion {
    pub artifact_name: String,
    pub quality_metrics: Value,
    pub training_summary: Value,
    pub configuration: Value,
    pub artifacts: Value,
    pub final_cost: f64,
    pub gpu_hours: f64,
    pub final_metrics: Option<Value>,
    pub epoch: i32,
    pub step: i32,
    pub notification: notify::Draft,
}

/// The fencing token of one claim of one dataset validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetLease {
    pub dataset_id: Uuid,
    pub attempt: i32,
    pub worker_id: String,
}

#[derive(Debug, Clone)]
pub struct ClaimedDataset {
    pub lease: DatasetLease,
    pub user_id: Uuid,
    pub name: String,
    pub format: String,
    pub storage_bucket: String,
    pub storage_path: String,
    pub file_size: i64,
}

/// The outcome of validating a dataset, as `datasets` columns.
#[derive(Debug, Clone)]
pub struct DatasetResult {
    pub ready: bool,
    pub total_training_pairs: i64,
    pub total_validation_pairs: i64,
    pub total_tokens: i64,
    pub training_tokens: i64,
    pub avg_turns_per_conversation: f64,
    pub avg_tokens_per_turn: f64,
    pub statistics: Value,
    pub validation_errors: Value,
    pub sample_data: Value,
    pub notification: notify::Draft,
}

/// What the reaper did in one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    pub requeued: u64,
    pub failed: u64,
    pub cancelled: u64,
}

const HELD: &str = "('initializing', 'running')";

/// The queue, as seen by one worker.
#[derive(Debug, Clone)]
pub struct Queue {
    pool: PgPool,
    worker_id: String,
    policy: QueuePolicy,
    /// When set, only these users' work is claimed and reaped (dedicated capacity; test
    /// isolation: a worker confined to some tenants never touches another's jobs).
    only_users: Option<Vec<Uuid>>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Queue {
    pub fn new(pool: PgPool, worker_id: impl Into<String>, policy: QueuePolicy) -> Self {
        Self {
            pool,
            worker_id: worker_id.into(),
            policy,
            only_users: None,
        }
    }

    /// Claims and reaps only the work of these users.
    pub fn with_only_users(mut self, users: Option<Vec<Uuid>>) -> Self {
        self.only_users = users.filter(|u| !u.is_empty());
        self
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The backoff before retry `failures` (1-based), as the SQL computes it.
    pub fn backoff(&self, failures: i32) -> Duration {
        let exp = failures.saturating_sub(1).clamp(0, 30) as u32;
        self.policy
            .base_backoff
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.policy.max_backoff)
    }

    // ----------------------------------------------------------------------------------------
    // Training jobs
    // ----------------------------------------------------------------------------------------

    /// Claims the oldest claimable queued job, or returns `None` when there is none.
    pub async fn claim_job(&self) -> Result<Option<ClaimedJob>> {
        let row = sqlx::query(
            "update public.training_jobs j
                set status = 'initializing', current_stage = 'initializing', worker_id = $1,
                    attempt = j.attempt + 1,
                    lease_expires_at = now() + make_interval(secs => $2),
                    heartbeat_at = now(), started_at = coalesce(j.started_at, now()),
                    progress = 0, current_step = 0, current_epoch = 0, current_metrics = null,
                    current_cost = 0
               from (select q.id from public.training_jobs q
                      where q.status = 'queued' and q.next_attempt_at <= now()
                        and ($3::uuid[] is null or q.user_id = any($3))
                      order by q.created_at, q.id
                      for update skip locked
                      limit 1) c
              where j.id = c.id
          returning j.id, j.attempt, j.user_id, j.dataset_id, j.preset_id, j.hyperparameters,
                    j.gpu_config, j.total_epochs, j.total_steps, j.cost_per_gpu_hour::float8 as price,
                    j.num_gpus, j.estimated_total_cost::float8 as estimate, j.cost_estimate,
                    j.external_job_id, j.retry_count, j.max_attempts",
        )
        .bind(&self.worker_id)
        .bind(secs(self.policy.lease))
        .bind(&self.only_users)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ClaimedJob {
            lease: JobLease {
                job_id: row.try_get("id")?,
                attempt: row.try_get("attempt")?,
                worker_id: self.worker_id.clone(),
            },
            user_id: row.try_get("user_id")?,
            dataset_id: row.try_get("dataset_id")?,
            preset_id: row.try_get("preset_id")?,
            hyperparameters: row.try_get("hyperparameters")?,
            gpu_config: row.try_get("gpu_config")?,
            total_epochs: row.try_get("total_epochs")?,
            total_steps: row.try_get("total_steps")?,
            cost_per_gpu_hour: row.try_get("price")?,
            num_gpus: row.try_get("num_gpus")?,
            estimated_total_cost: row.try_get("estimate")?,
            cost_estimate: row.try_get("cost_estimate")?,
            external_job_id: row.try_get("external_job_id")?,
            retry_count: row.try_get("retry_count")?,
            max_attempts: row.try_get("max_attempts")?,
        }))
    }

    /// Renews the lease and reads whether the user asked to cancel.
    pub async fn heartbeat(&self, lease: &JobLease) -> Result<Heartbeat> {
        let row = sqlx::query(&format!(
            "update public.training_jobs
                set heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $4)
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}
          returning cancel_requested_at is not null as cancel"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(secs(self.policy.lease))
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or(QueueError::LeaseLost)?;
        Ok(Heartbeat {
            cancel_requested: row.try_get("cancel")?,
        })
    }

    /// Deletes the metrics points earlier attempts left (a reclaimed job starts its curve over;
    /// two attempts' points at the same step would draw a zigzag).
    pub async fn clear_stale_metrics(&self, lease: &JobLease) -> Result<u64> {
        let done = sqlx::query(&format!(
            "delete from public.metrics_points m
              where m.job_id = $1 and m.attempt <> $2
                and exists (select 1 from public.training_jobs j
                             where j.id = $1 and j.attempt = $2 and j.worker_id = $3
                               and j.status in {HELD})"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records the remote provider's id for this job, so a later attempt re-attaches to the
    /// same remote run instead of submitting a second one.
    pub async fn set_external_job_id(
        &self,
        lease: &JobLease,
        external_id: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(&format!(
            "update public.training_jobs set external_job_id = $4
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(external_id)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected())
    }

    /// Writes status, stage, progress, epoch/step, current metrics, ETA and cost so far.
    pub async fn report_progress(&self, lease: &JobLease, p: &JobProgress) -> Result<()> {
        let done = sqlx::query(&format!(
            "update public.training_jobs
                set status = $4, current_stage = $5, progress = round($6::numeric, 2),
                    current_epoch = $7, current_step = $8, total_steps = coalesce($9, total_steps),
                    current_metrics = coalesce($10, current_metrics),
                    estimated_completion_at = coalesce($11, estimated_completion_at),
                    current_cost = round($12::numeric, 2)
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(p.status)
        .bind(p.stage)
        .bind(p.progress.clamp(0.0, 100.0))
        .bind(p.epoch)
        .bind(p.step)
        .bind(p.total_steps)
        .bind(&p.current_metrics)
        .bind(p.estimated_completion_at)
        .bind(p.current_cost.max(0.0))
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected())
    }

    /// Upserts one metrics point of this attempt: sending the same step twice (a retry after a
    /// lost response) leaves one row.
    pub async fn record_metric(&self, lease: &JobLease, m: &MetricPoint) -> Result<()> {
        let done = sqlx::query(&format!(
            "insert into public.metrics_points
                    (job_id, attempt, epoch, step, training_loss, validation_loss, learning_rate, throughput)
             select $1, $2, $4, $5, $6::numeric, $7::numeric, $8::numeric, $9::numeric
              where exists (select 1 from public.training_jobs j
                             where j.id = $1 and j.attempt = $2 and j.worker_id = $3
                               and j.status in {HELD})
             on conflict (job_id, attempt, step) do update
                set epoch = excluded.epoch, training_loss = excluded.training_loss,
                    validation_loss = coalesce(excluded.validation_loss, metrics_points.validation_loss),
                    learning_rate = excluded.learning_rate,
                    throughput = coalesce(excluded.throughput, metrics_points.throughput),
                    timestamp = now()"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(m.epoch)
        .bind(m.step)
        .bind(m.training_loss)
        .bind(m.validation_loss)
        .bind(m.learning_rate.max(0.0))
        .bind(m.throughput.map(|t| t.max(0.0)))
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected())
    }

    /// The final transaction of a successful attempt: the artifact row, the job's final status
    /// and cost, the cost record and the notification, all or nothing, and only while the lease
    /// is still ours. Returns the artifact id.
    pub async fn complete(&self, lease: &JobLease, c: &JobCompletion) -> Result<Uuid> {
        let mut tx = self.pool.begin().await?;
        let job = sqlx::query(&format!(
            "select user_id, dataset_id, cost_per_gpu_hour::float8 as price, num_gpus
               from public.training_jobs
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}
                for update"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(QueueError::LeaseLost)?;
        let user_id: Uuid = job.try_get("user_id")?;
        let dataset_id: Uuid = job.try_get("dataset_id")?;
        let price: f64 = job.try_get("price")?;

        let artifact_id: Uuid = sqlx::query_scalar(
            "insert into public.model_artifacts
                    (user_id, job_id, dataset_id, name, quality_metrics, training_summary, configuration, artifacts)
             values ($1, $2, $3, $4, $5, $6, $7, $8)
             returning id",
        )
        .bind(user_id)
        .bind(lease.job_id)
        .bind(dataset_id)
        .bind(&c.artifact_name)
        .bind(&c.quality_metrics)
        .bind(&c.training_summary)
        .bind(&c.configuration)
        .bind(&c.artifacts)
        .fetch_one(&mut *tx)
        .await?;

        sqlx::query(
            "update public.training_jobs
                set status = 'completed', current_stage = 'completed', progress = 100,
                    completed_at = now(), estimated_completion_at = now(),
                    current_epoch = $2, current_step = $3,
                    current_metrics = coalesce($4, current_metrics),
                    current_cost = round($5::numeric, 2), final_cost = round($5::numeric, 2),
                    artifact_id = $6, lease_expires_at = null, error_message = null, error_stack = null
              where id = $1",
        )
        .bind(lease.job_id)
        .bind(c.epoch)
        .bind(c.step)
        .bind(&c.final_metrics)
        .bind(c.final_cost)
        .bind(artifact_id)
        .execute(&mut *tx)
        .await?;

        insert_cost_record(
            &mut tx,
            user_id,
            lease.job_id,
            c.final_cost,
            c.gpu_hours,
            price,
        )
        .await?;
        c.notification.insert(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(artifact_id)
    }

    /// Ends a cancelled attempt: status `cancelled`, the cost of the work done billed, no
    /// notification (the user asked for it).
    pub async fn finish_cancelled(
        &self,
        lease: &JobLease,
        cost_so_far: f64,
        gpu_hours: f64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "update public.training_jobs
                set status = 'cancelled', completed_at = now(), lease_expires_at = null,
                    current_cost = round($4::numeric, 2), final_cost = round($4::numeric, 2),
                    cancel_requested_at = coalesce(cancel_requested_at, now())
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}
          returning user_id, cost_per_gpu_hour::float8 as price"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(cost_so_far)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(QueueError::LeaseLost)?;
        let user_id: Uuid = row.try_get("user_id")?;
        let price: f64 = row.try_get("price")?;
        insert_cost_record(
            &mut tx,
            user_id,
            lease.job_id,
            cost_so_far,
            gpu_hours,
            price,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a failed attempt: requeued with backoff while attempts remain and the failure is
    /// retryable, else `failed` with a `job_failed` notification (built by `notification` from
    /// the final error message). A pending cancel request wins over both.
    pub async fn fail_attempt(
        &self,
        lease: &JobLease,
        failure: &AttemptFailure,
        notification: impl FnOnce(&str) -> notify::Draft,
    ) -> Result<FailureOutcome> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "select user_id, retry_count, max_attempts, cancel_requested_at is not null as cancel
               from public.training_jobs
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}
                for update"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(QueueError::LeaseLost)?;
        let user_id: Uuid = row.try_get("user_id")?;
        let failures: i32 = row.try_get::<i32, _>("retry_count")? + 1;
        let max_attempts: i32 = row.try_get("max_attempts")?;
        let cancel: bool = row.try_get("cancel")?;

        let outcome = if cancel {
            sqlx::query(
                "update public.training_jobs
                    set status = 'cancelled', completed_at = now(), lease_expires_at = null,
                        error_message = $2, error_stack = $3
                  where id = $1",
            )
            .bind(lease.job_id)
            .bind(&failure.message)
            .bind(&failure.detail)
            .execute(&mut *tx)
            .await?;
            FailureOutcome::Cancelled
        } else if failure.retry == RetryDecision::Retryable && failures < max_attempts {
            let wait = self.backoff(failures);
            sqlx::query(
                "update public.training_jobs
                    set status = 'queued', current_stage = 'queued', worker_id = null,
                        lease_expires_at = null, retry_count = $2,
                        next_attempt_at = now() + make_interval(secs => $3),
                        error_message = $4, error_stack = $5
                  where id = $1",
            )
            .bind(lease.job_id)
            .bind(failures)
            .bind(secs(wait))
            .bind(format!(
                "attempt {} of {max_attempts} failed, retrying: {}",
                failures, failure.message
            ))
            .bind(&failure.detail)
            .execute(&mut *tx)
            .await?;
            FailureOutcome::Requeued {
                next_attempt_in: wait,
            }
        } else {
            let message = match failure.retry {
                RetryDecision::Permanent => failure.message.clone(),
                RetryDecision::Retryable => {
                    format!("{} (gave up after {failures} attempts)", failure.message)
                }
            };
            sqlx::query(
                "update public.training_jobs
                    set status = 'failed', completed_at = now(), lease_expires_at = null,
                        retry_count = $2, error_message = $3, error_stack = $4
                  where id = $1",
            )
            .bind(lease.job_id)
            .bind(failures)
            .bind(&message)
            .bind(&failure.detail)
            .execute(&mut *tx)
            .await?;
            notification(&message).insert(&mut tx, user_id).await?;
            FailureOutcome::Failed
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Hands a job back on graceful shutdown: queued again at once, for any worker, without
    /// counting as a failed attempt (or cancelled, when the user asked meanwhile).
    pub async fn release(&self, lease: &JobLease) -> Result<()> {
        let done = sqlx::query(&format!(
            "update public.training_jobs
                set status = case when cancel_requested_at is not null then 'cancelled' else 'queued' end,
                    completed_at = case when cancel_requested_at is not null then now() end,
                    current_stage = case when cancel_requested_at is not null then current_stage else 'queued' end,
                    worker_id = null, lease_expires_at = null, next_attempt_at = now()
              where id = $1 and attempt = $2 and worker_id = $3 and status in {HELD}"
        ))
        .bind(lease.job_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected())
    }

    /// Requeues (with backoff) or fails the jobs whose lease expired; cancels those the user
    /// asked to cancel. Any worker may run it; `SKIP LOCKED` keeps concurrent reapers apart.
    pub async fn reap_jobs(&self) -> Result<Reaped> {
        let rows = sqlx::query(
            "with expired as (
                 select id from public.training_jobs
                  where status in ('initializing', 'running') and lease_expires_at < now()
                    and ($3::uuid[] is null or user_id = any($3))
                  for update skip locked),
             reaped as (
                 update public.training_jobs j
                    set status = case when j.cancel_requested_at is not null then 'cancelled'
                                      when j.retry_count + 1 >= j.max_attempts then 'failed'
                                      else 'queued' end,
                        current_stage = case when j.cancel_requested_at is null
                                              and j.retry_count + 1 < j.max_attempts
                                             then 'queued' else j.current_stage end,
                        completed_at = case when j.cancel_requested_at is not null
                                              or j.retry_count + 1 >= j.max_attempts
                                            then now() end,
                        retry_count = j.retry_count + case when j.cancel_requested_at is null then 1 else 0 end,
                        next_attempt_at = now() + make_interval(secs => least($2::float8,
                                            $1::float8 * power(2, least(j.retry_count, 30)))),
                        error_message = case when j.cancel_requested_at is not null then j.error_message
                            else format('worker %s stopped responding during attempt %s of %s (its lease expired)%s',
                                        coalesce(j.worker_id, '?'), j.retry_count + 1, j.max_attempts,
                                        case when j.retry_count + 1 >= j.max_attempts
                                             then '; giving up' else '; retrying' end) end,
                        worker_id = null, lease_expires_at = null
                   from expired e
                  where j.id = e.id
              returning j.id, j.user_id, j.dataset_id, j.status, j.error_message),
             notified as (
                 insert into public.notifications (user_id, type, title, message, priority, action_url, metadata)
                 select r.user_id, 'job_failed',
                        left('LoRA job failed: ' || coalesce(d.name, 'training job'), 200),
                        format('LoRA job on %L failed: %s. Start it again from the job page.',
                               coalesce(d.name, 'your dataset'), r.error_message),
                        'high', '/jobs/' || r.id::text,
                        jsonb_build_object('job_id', r.id, 'status', 'failed')
                   from reaped r left join public.datasets d on d.id = r.dataset_id
                  where r.status = 'failed'
              returning 1)
             select status, count(*) as n from reaped group by status",
        )
        .bind(secs(self.policy.base_backoff))
        .bind(secs(self.policy.max_backoff))
        .bind(&self.only_users)
        .fetch_all(&self.pool)
        .await?;
        let mut reaped = Reaped::default();
        for row in rows {
            let n = row.try_get::<i64, _>("n")? as u64;
            match row.try_get::<String, _>("status")?.as_str() {
                "queued" => reaped.requeued += n,
                "failed" => reaped.failed += n,
                _ => reaped.cancelled += n,
            }
        }
        Ok(reaped)
    }

    // ----------------------------------------------------------------------------------------
    // Dataset validation
    // ----------------------------------------------------------------------------------------

    /// Claims the oldest dataset waiting for validation whose lease (if any) has expired.
    pub async fn claim_dataset(&self) -> Result<Option<ClaimedDataset>> {
        let row = sqlx::query(
            "update public.datasets d
                set validation_attempt = d.validation_attempt + 1, validation_worker_id = $1,
                    validation_lease_expires_at = now() + make_interval(secs => $2)
               from (select q.id from public.datasets q
                      where q.status = 'validating' and q.deleted_at is null
                        and q.validation_next_attempt_at <= now()
                        and (q.validation_lease_expires_at is null or q.validation_lease_expires_at < now())
                        and ($3::uuid[] is null or q.user_id = any($3))
                      order by q.validation_next_attempt_at, q.updated_at, q.id
                      for update skip locked
                      limit 1) c
              where d.id = c.id
          returning d.id, d.validation_attempt, d.user_id, d.name, d.format, d.storage_bucket,
                    d.storage_path, d.file_size",
        )
        .bind(&self.worker_id)
        .bind(secs(self.policy.lease))
        .bind(&self.only_users)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(ClaimedDataset {
            lease: DatasetLease {
                dataset_id: row.try_get("id")?,
                attempt: row.try_get("validation_attempt")?,
                worker_id: self.worker_id.clone(),
            },
            user_id: row.try_get("user_id")?,
            name: row.try_get("name")?,
            format: row.try_get("format")?,
            storage_bucket: row.try_get("storage_bucket")?,
            storage_path: row.try_get("storage_path")?,
            file_size: row.try_get("file_size")?,
        }))
    }

    pub async fn heartbeat_dataset(&self, lease: &DatasetLease) -> Result<()> {
        let done = sqlx::query(
            "update public.datasets
                set validation_lease_expires_at = now() + make_interval(secs => $4)
              where id = $1 and validation_attempt = $2 and validation_worker_id = $3
                and status = 'validating' and deleted_at is null",
        )
        .bind(lease.dataset_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(secs(self.policy.lease))
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected())
    }

    /// Writes the validation result and its notification in one transaction.
    pub async fn finish_dataset(&self, lease: &DatasetLease, r: &DatasetResult) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "update public.datasets
                set status = $4, training_ready = $5, validated_at = now(),
                    total_training_pairs = $6, total_validation_pairs = $7, total_tokens = $8,
                    training_tokens = $9, avg_turns_per_conversation = round($10::numeric, 2),
                    avg_tokens_per_turn = round($11::numeric, 2), statistics = $12,
                    validation_errors = $13, sample_data = $14,
                    validation_worker_id = null, validation_lease_expires_at = null
              where id = $1 and validation_attempt = $2 and validation_worker_id = $3
                and status = 'validating' and deleted_at is null
          returning user_id",
        )
        .bind(lease.dataset_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(if r.ready { "ready" } else { "error" })
        .bind(r.ready)
        .bind(r.total_training_pairs)
        .bind(r.total_validation_pairs)
        .bind(r.total_tokens)
        .bind(r.training_tokens)
        .bind(r.avg_turns_per_conversation)
        .bind(r.avg_tokens_per_turn)
        .bind(&r.statistics)
        .bind(&r.validation_errors)
        .bind(&r.sample_data)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(QueueError::LeaseLost)?;
        let user_id: Uuid = row.try_get("user_id")?;
        r.notification.insert(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A validation attempt that could not finish (storage unreachable, ...): retried with
    /// backoff, or the dataset is marked `error` with `message` once the attempts are used up.
    /// Returns true when the dataset was marked `error`.
    pub async fn fail_dataset_attempt(
        &self,
        lease: &DatasetLease,
        message: &str,
        retry: RetryDecision,
        notification: notify::Draft,
    ) -> Result<bool> {
        let give_up = retry == RetryDecision::Permanent
            || lease.attempt >= self.policy.max_validation_attempts;
        let mut tx = self.pool.begin().await?;
        let errors =
            serde_json::json!([{ "line": null, "error": message, "code": "validation_failed" }]);
        let row = sqlx::query(
            "update public.datasets
                set status = case when $4 then 'error' else status end,
                    validated_at = case when $4 then now() else validated_at end,
                    validation_errors = case when $4 then $5 else validation_errors end,
                    training_ready = false,
                    validation_next_attempt_at = now() + make_interval(secs => $6),
                    validation_worker_id = null, validation_lease_expires_at = null
              where id = $1 and validation_attempt = $2 and validation_worker_id = $3
                and status = 'validating' and deleted_at is null
          returning user_id",
        )
        .bind(lease.dataset_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .bind(give_up)
        .bind(&errors)
        .bind(secs(self.backoff(lease.attempt)))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(QueueError::LeaseLost)?;
        if give_up {
            let user_id: Uuid = row.try_get("user_id")?;
            notification.insert(&mut tx, user_id).await?;
        }
        tx.commit().await?;
        Ok(give_up)
    }

    /// Hands a validation back on graceful shutdown (claimable again at once). The claim it
    /// used still counts towards `max_validation_attempts`: the token never goes backwards.
    pub async fn release_dataset(&self, lease: &DatasetLease) -> Result<()> {
        let done = sqlx::query(
            "update public.datasets
                set validation_worker_id = null, validation_lease_expires_at = null,
                    validation_next_attempt_at = now()
              where id = $1 and validation_attempt = $2 and validation_worker_id = $3
                and status = 'validating'",
        )
        .bind(lease.dataset_id)
        .bind(lease.attempt)
        .bind(&lease.worker_id)
        .execute(&self.pool)
        .await?;
        fenced(done.rows_affected())
    }
}

fn fenced(rows: u64) -> Result<()> {
    if rows == 0 {
        Err(QueueError::LeaseLost)
    } else {
        Ok(())
    }
}

async fn insert_cost_record(
    tx: &mut sqlx::PgConnection,
    user_id: Uuid,
    job_id: Uuid,
    amount: f64,
    gpu_hours: f64,
    price: f64,
) -> Result<()> {
    if amount <= 0.0 {
        return Ok(());
    }
    sqlx::query(
        "insert into public.cost_records (user_id, job_id, cost_type, amount, details, billing_period)
         values ($1, $2, 'compute', round($3::numeric, 2), $4, date_trunc('month', now())::date)",
    )
    .bind(user_id)
    .bind(job_id)
    .bind(amount)
    .bind(serde_json::json!({
        "gpu_hours": (gpu_hours * 10_000.0).round() / 10_000.0,
        "unit_cost": price,
        "description": "GPU compute for LoRA training",
    }))
    .execute(tx)
    .await?;
    Ok(())
}
