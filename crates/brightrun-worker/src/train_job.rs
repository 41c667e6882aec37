//! One attempt of one training job: queued → initializing → running (training / validating /
//! saving) → completed | failed | cancelled.
//!
//! While it runs the worker writes progress, epoch/step, current metrics, ETA and cost so far
//! (throttled) and every metrics point (idempotent per job/attempt/step). At the end it uploads
//! the adapter files to `lora-models/{user_id}/{job_id}/attempt-{n}/` with their SHA-256 and
//! sizes and, in one fenced transaction, writes the `model_artifacts` row, the final status and
//! cost, the cost record and the `job_complete` notification.
//!
//! Cost so far: GPU-hours are billed as the catalogue-equivalent hours of the work done, i.e.
//! the job's snapshotted estimate pro rata — `overhead_hours + training_hours × steps done ÷
//! total steps`, times the snapshotted $/GPU-hour and GPU count. (The wall time of a CPU
//! backend means nothing at GPU prices; a completed job costs exactly its estimate.)

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use brightrun_core::model::HyperparameterConfig;
use brightrun_core::{ArtifactFile, ArtifactManifest, MODELS_BUCKET, PeftConfig};
use brightrun_supabase::storage::UploadOptions;
use chrono::Utc;
use serde_json::{Value, json};
use sqlx::Row as _;
use tracing::{Instrument as _, info, info_span, warn};

use crate::dataset::load_training_data;
use crate::notify;
use crate::queue::{
    AttemptFailure, ClaimedJob, FailureOutcome, JobCompletion, JobLease, JobProgress, MetricPoint,
    QueueError, RetryDecision,
};
use crate::runtime::{Backend, Control, Ctx};
use crate::trainer::{Stage, TrainedAdapter, TrainerError, TrainerEvent, TrainingSpec};

/// How an attempt ended before the final bookkeeping.
#[derive(Debug)]
pub enum AttemptError {
    /// The trainer stopped because `Control::stop` was set (cancel, shutdown or lost lease).
    Stopped,
    LeaseLost,
    Failed(AttemptFailure),
}

impl From<QueueError> for AttemptError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::LeaseLost => Self::LeaseLost,
            QueueError::Db(e) => Self::Failed(AttemptFailure {
                message: "the worker lost its database connection".into(),
                detail: Some(e.to_string()),
                retry: RetryDecision::Retryable,
            }),
        }
    }
}

fn failed(message: impl Into<String>, retry: RetryDecision) -> AttemptError {
    AttemptError::Failed(AttemptFailure {
        message: message.into(),
        detail: None,
        retry,
    })
}

/// The snapshotted prices of a job.
#[derive(Debug, Clone, Copy)]
pub struct Billing {
    pub overhead_hours: f64,
    pub training_hours: f64,
    pub price_per_gpu_hour: f64,
    pub gpus: f64,
}

impl Billing {
    pub fn of(job: &ClaimedJob) -> Self {
        let gpus = f64::from(job.num_gpus.max(1));
        let price = job.cost_per_gpu_hour;
        let field = |k: &str| {
            job.cost_estimate
                .as_ref()
                .and_then(|e| e.get(k))
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
        };
        match (field("overhead_hours"), field("training_hours")) {
            (Some(overhead_hours), Some(training_hours)) => Self {
                overhead_hours,
                training_hours,
                price_per_gpu_hour: price,
                gpus,
            },
            _ => Self {
                overhead_hours: 0.0,
                training_hours: job.estimated_total_cost / (price * gpus).max(1e-9),
                price_per_gpu_hour: price,
                gpus,
            },
        }
    }

    /// GPU-hours for the work done (`fraction` of the training steps).
    pub fn gpu_hours(&self, fraction: f64) -> f64 {
        (self.overhead_hours + self.training_hours * fraction.clamp(0.0, 1.0)) * self.gpus
    }

    pub fn cost(&self, fraction: f64) -> f64 {
        self.gpu_hours(fraction) * self.price_per_gpu_hour
    }
}

/// Where a running attempt is, turned into the job's columns.
struct Tracker {
    billing: Billing,
    stage: Stage,
    epoch: u32,
    step: u64,
    total_steps: Option<u64>,
    first_loss: Option<f64>,
    loss: Option<f64>,
    validation_loss: Option<f64>,
    best_validation: Option<(f64, u32)>,
    learning_rate: f64,
    throughput: Option<f64>,
    throughput_sum: f64,
    throughput_n: u64,
    started: Instant,
    first_step_at: Option<Instant>,
    last_write: Option<Instant>,
    dirty: bool,
}

impl Tracker {
    fn new(job: &ClaimedJob) -> Self {
        Self {
            billing: Billing::of(job),
            stage: Stage::Initializing,
            epoch: 0,
            step: 0,
            total_steps: job.total_steps.and_then(|s| u64::try_from(s).ok()),
            first_loss: None,
            loss: None,
            validation_loss: None,
            best_validation: None,
            learning_rate: 0.0,
            throughput: None,
            throughput_sum: 0.0,
            throughput_n: 0,
            started: Instant::now(),
            first_step_at: None,
            last_write: None,
            dirty: true,
        }
    }

    fn fraction(&self) -> f64 {
        match self.total_steps {
            Some(total) if total > 0 => (self.step as f64 / total as f64).min(1.0),
            _ => 0.0,
        }
    }

    fn status_and_stage(&self) -> (&'static str, &'static str) {
        match self.stage {
            Stage::Initializing => ("initializing", "initializing"),
            Stage::Training => ("running", "training"),
            Stage::Validating => ("running", "validating"),
            Stage::Saving => ("running", "saving"),
        }
    }

    fn metrics_json(&self) -> Option<Value> {
        let loss = self.loss?;
        let mut m = json!({ "training_loss": loss, "learning_rate": self.learning_rate });
        if let Some(v) = self.validation_loss {
            m["validation_loss"] = json!(v);
        }
        if let Some(t) = self.throughput {
            m["throughput"] = json!((t * 100.0).round() / 100.0);
        }
        Some(m)
    }

    fn progress(&self) -> JobProgress {
        let (status, stage) = self.status_and_stage();
        let progress = match self.stage {
            Stage::Initializing => 1.0,
            Stage::Training | Stage::Validating => 2.0 + 93.0 * self.fraction(),
            Stage::Saving => 96.0,
        };
        let eta = match (self.first_step_at, self.total_steps) {
            (Some(first), Some(total)) if self.step > 0 && total >= self.step => {
                let per_step = first.elapsed().as_secs_f64() / self.step as f64;
                let left = per_step * (total - self.step) as f64;
                chrono::Duration::from_std(Duration::from_secs_f64(left.min(1e7)))
                    .ok()
                    .map(|d| Utc::now() + d)
            }
            _ => None,
        };
        JobProgress {
            status,
            stage,
            progress,
            epoch: i32::try_from(self.epoch).unwrap_or(i32::MAX),
            step: i32::try_from(self.step).unwrap_or(i32::MAX),
            total_steps: self.total_steps.and_then(|t| i32::try_from(t).ok()),
            current_metrics: self.metrics_json(),
            estimated_completion_at: eta,
            current_cost: self.billing.cost(self.fraction()),
        }
    }

    /// Applies an event; returns the metrics point to write, if any.
    fn apply(&mut self, event: &TrainerEvent) -> Option<MetricPoint> {
        self.dirty = true;
        match *event {
            TrainerEvent::Stage(stage) => {
                self.stage = stage;
                None
            }
            TrainerEvent::Step {
                epoch,
                step,
                total_steps,
                loss,
                learning_rate,
                tokens_per_second,
            } => {
                self.first_step_at.get_or_insert_with(Instant::now);
                self.epoch = epoch;
                self.step = step;
                self.total_steps = Some(total_steps);
                self.first_loss.get_or_insert(loss);
                self.loss = Some(loss);
                self.learning_rate = learning_rate;
                if tokens_per_second.is_finite() && tokens_per_second >= 0.0 {
                    self.throughput = Some(tokens_per_second);
                    self.throughput_sum += tokens_per_second;
                    self.throughput_n += 1;
                }
                if self.stage == Stage::Initializing {
                    self.stage = Stage::Training;
                }
                Some(self.point(step, None))
            }
            TrainerEvent::Validation { step, loss } => {
                self.validation_loss = Some(loss);
                if self.best_validation.is_none_or(|(best, _)| loss < best) {
                    self.best_validation = Some((loss, self.epoch));
                }
                Some(self.point(step, Some(loss)))
            }
        }
    }

    fn point(&self, step: u64, validation_loss: Option<f64>) -> MetricPoint {
        MetricPoint {
            epoch: i32::try_from(self.epoch).unwrap_or(i32::MAX),
            step: i32::try_from(step).unwrap_or(i32::MAX),
            training_loss: finite(self.loss.unwrap_or(0.0)),
            validation_loss: validation_loss.map(finite),
            learning_rate: finite(self.learning_rate),
            throughput: self.throughput.map(finite),
        }
    }

    /// Whether it is time to write progress (always on a stage change).
    fn due(&self, interval: Duration, stage_changed: bool) -> bool {
        self.dirty && (stage_changed || self.last_write.is_none_or(|t| t.elapsed() >= interval))
    }
}

/// NUMERIC(10,6) columns hold |x| < 10^4.
fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(-9_999.0, 9_999.0)
    } else {
        9_999.0
    }
}

/// Writes what events say, fenced by the lease. Shared by local and remote backends.
pub struct EventSink<'a> {
    ctx: &'a Ctx,
    lease: &'a JobLease,
    control: &'a Control,
    tracker: Tracker,
}

impl EventSink<'_> {
    pub async fn handle(&mut self, event: TrainerEvent) {
        let before = self.tracker.stage;
        let point = self.tracker.apply(&event);
        if self.control.lease_lost.load(Ordering::Relaxed) {
            return;
        }
        if let Some(point) = point {
            self.write(self.ctx.queue.record_metric(self.lease, &point).await);
        }
        if self
            .tracker
            .due(self.ctx.progress_interval, before != self.tracker.stage)
        {
            self.flush().await;
        }
    }

    pub async fn flush(&mut self) {
        if self.control.lease_lost.load(Ordering::Relaxed) || !self.tracker.dirty {
            return;
        }
        let progress = self.tracker.progress();
        self.write(self.ctx.queue.report_progress(self.lease, &progress).await);
        self.tracker.last_write = Some(Instant::now());
        self.tracker.dirty = false;
    }

    fn write(&self, result: Result<(), QueueError>) {
        match result {
            Ok(()) => {}
            Err(QueueError::LeaseLost) => {
                warn!("lease lost: stopping the attempt without further writes");
                self.control.lease_lost.store(true, Ordering::Relaxed);
                self.control.stop.store(true, Ordering::Relaxed);
            }
            // A progress write can be lost; the heartbeat decides whether we still hold the job.
            Err(e) => warn!(error = %e, "progress write failed"),
        }
    }
}

struct DatasetRow {
    name: String,
    bucket: String,
    path: String,
    format: String,
}

async fn dataset_row(ctx: &Ctx, job: &ClaimedJob) -> Result<DatasetRow, AttemptError> {
    let row = sqlx::query(
        "select name, storage_bucket, storage_path, format from public.datasets where id = $1",
    )
    .bind(job.dataset_id)
    .fetch_optional(ctx.queue.pool())
    .await
    .map_err(QueueError::from)?
    .ok_or_else(|| {
        failed(
            "the job's dataset no longer exists",
            RetryDecision::Permanent,
        )
    })?;
    Ok(DatasetRow {
        name: row.try_get("name").map_err(QueueError::from)?,
        bucket: row.try_get("storage_bucket").map_err(QueueError::from)?,
        path: row.try_get("storage_path").map_err(QueueError::from)?,
        format: row.try_get("format").map_err(QueueError::from)?,
    })
}

pub async fn run(ctx: Arc<Ctx>, job: ClaimedJob, control: Arc<Control>) {
    let span = info_span!("job", job_id = %job.lease.job_id, attempt = job.lease.attempt);
    run_inner(ctx, job, control).instrument(span).await;
}

async fn heartbeat_loop(ctx: Arc<Ctx>, lease: JobLease, control: Arc<Control>) {
    loop {
        tokio::time::sleep(ctx.heartbeat).await;
        match ctx.queue.heartbeat(&lease).await {
            Ok(hb) if hb.cancel_requested => control.request_cancel(),
            Ok(_) => {}
            Err(QueueError::LeaseLost) => {
                warn!("heartbeat: lease lost");
                control.lease_lost.store(true, Ordering::Relaxed);
                control.stop.store(true, Ordering::Relaxed);
                return;
            }
            Err(e) => warn!(error = %e, "heartbeat failed"),
        }
    }
}

async fn run_inner(ctx: Arc<Ctx>, job: ClaimedJob, control: Arc<Control>) {
    let lease = job.lease.clone();
    info!(backend = ctx.backend.name(), "job claimed");
    let hb = tokio::spawn(heartbeat_loop(ctx.clone(), lease.clone(), control.clone()));
    let mut sink = EventSink {
        ctx: &ctx,
        lease: &lease,
        control: &control,
        tracker: Tracker::new(&job),
    };
    let output_dir = ctx
        .work_dir
        .join(lease.job_id.to_string())
        .join(format!("attempt-{}", lease.attempt));
    let mut dataset_name = "your dataset".to_owned();
    let result = attempt(
        &ctx,
        &job,
        &control,
        &mut sink,
        &output_dir,
        &mut dataset_name,
    )
    .await;
    let outcome = conclude(&ctx, &job, &control, &mut sink, result, &dataset_name).await;
    hb.abort();
    let _ = tokio::fs::remove_dir_all(&output_dir).await;
    match outcome {
        Ok(what) => info!(outcome = what, "attempt finished"),
        Err(QueueError::LeaseLost) => warn!("attempt abandoned: lease lost, nothing written"),
        Err(e) => warn!(error = %e, "could not record the attempt's end; its lease will expire"),
    }
}

async fn attempt(
    ctx: &Ctx,
    job: &ClaimedJob,
    control: &Control,
    sink: &mut EventSink<'_>,
    output_dir: &Path,
    dataset_name: &mut String,
) -> Result<Uploaded3, AttemptError> {
    let lease = &job.lease;
    let cleared = ctx.queue.clear_stale_metrics(lease).await?;
    if cleared > 0 {
        info!(cleared, "removed metrics points of earlier attempts");
    }
    sink.flush().await;
    let dataset = dataset_row(ctx, job).await?;
    *dataset_name = dataset.name.clone();
    let hyperparameters: HyperparameterConfig = serde_json::from_value(job.hyperparameters.clone())
        .map_err(|e| {
            failed(
                format!("the job's hyperparameters cannot be read: {e}"),
                RetryDecision::Permanent,
            )
        })?;
    let _ = tokio::fs::remove_dir_all(output_dir).await;
    tokio::fs::create_dir_all(output_dir).await.map_err(|e| {
        failed(
            format!("creating the output folder failed: {e}"),
            RetryDecision::Retryable,
        )
    })?;

    let adapter = match &ctx.backend {
        Backend::Local(backend) => {
            let data = load_training_data(
                &ctx.storage,
                &dataset.bucket,
                &dataset.path,
                &dataset.format,
            )
            .await
            .map_err(|e| {
                let retry = if e.is_retryable() {
                    RetryDecision::Retryable
                } else {
                    RetryDecision::Permanent
                };
                failed(format!("reading the dataset failed: {e}"), retry)
            })?;
            let spec = TrainingSpec {
                job_id: lease.job_id,
                attempt: u32::try_from(lease.attempt).unwrap_or(0),
                hyperparameters,
                train: data.train,
                validation: data.validation,
                output_dir: output_dir.to_path_buf(),
            };
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let backend = backend.clone();
            let stop = control.stop.clone();
            let handle = tokio::task::spawn_blocking(move || {
                let mut send = |event| {
                    let _ = tx.send(event);
                };
                backend.train(&spec, &mut send, &stop)
            });
            while let Some(event) = rx.recv().await {
                sink.handle(event).await;
            }
            let trained = handle.await.map_err(|e| {
                failed(
                    format!("the trainer crashed: {e}"),
                    RetryDecision::Retryable,
                )
            })?;
            match trained {
                Ok(adapter) => adapter,
                Err(TrainerError::Cancelled) => return Err(AttemptError::Stopped),
                Err(TrainerError::InvalidSpec(m)) => {
                    return Err(failed(
                        format!("invalid training settings: {m}"),
                        RetryDecision::Permanent,
                    ));
                }
                Err(TrainerError::Failed(m)) => {
                    return Err(failed(
                        format!("training failed: {m}"),
                        RetryDecision::Retryable,
                    ));
                }
            }
        }
        Backend::Remote(provider) => {
            crate::remote::drive(
                ctx,
                job,
                control,
                sink,
                provider.as_ref(),
                hyperparameters,
                &dataset.bucket,
                &dataset.path,
                &dataset.format,
                output_dir,
            )
            .await?
        }
    };
    if control.stop.load(Ordering::Relaxed) {
        return Err(AttemptError::Stopped);
    }
    sink.handle(TrainerEvent::Stage(Stage::Saving)).await;
    let manifest = upload_adapter(ctx, job, &adapter).await?;
    Ok(Uploaded3 { adapter, manifest })
}

/// A trained adapter and the manifest of its uploaded files.
pub struct Uploaded3 {
    adapter: TrainedAdapter,
    manifest: ArtifactManifest,
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

fn attempt_prefix(job: &ClaimedJob) -> String {
    format!(
        "{}/{}/attempt-{}",
        job.user_id, job.lease.job_id, job.lease.attempt
    )
}

async fn upload_adapter(
    ctx: &Ctx,
    job: &ClaimedJob,
    adapter: &TrainedAdapter,
) -> Result<ArtifactManifest, AttemptError> {
    let prefix = attempt_prefix(job);
    let mut out = Vec::new();
    for file in &adapter.files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                failed(
                    format!(
                        "the trainer wrote a file without a usable name: {}",
                        file.display()
                    ),
                    RetryDecision::Permanent,
                )
            })?
            .to_owned();
        let path = format!("{prefix}/{name}");
        let uploaded = ctx
            .storage
            .upload_file(
                MODELS_BUCKET,
                &path,
                file,
                content_type(&name),
                &UploadOptions::default(),
            )
            .await
            .map_err(|e| {
                let retry = if e.is_retryable() {
                    RetryDecision::Retryable
                } else {
                    RetryDecision::Permanent
                };
                failed(format!("uploading {name} failed: {e}"), retry)
            })?;
        out.push(ArtifactFile {
            content_type: Some(content_type(&name).to_owned()),
            name,
            path: uploaded.path,
            size: Some(uploaded.size),
            sha256: Some(uploaded.sha256),
        });
    }
    if out.is_empty() {
        return Err(failed(
            "the trainer produced no files",
            RetryDecision::Retryable,
        ));
    }
    // The adapter's own description of itself: what PEFT will read.
    let config = adapter
        .files
        .iter()
        .find(|f| f.file_name().is_some_and(|n| n == "adapter_config.json"))
        .ok_or_else(|| {
            failed(
                "the trainer wrote no adapter_config.json",
                RetryDecision::Permanent,
            )
        })?;
    let peft: PeftConfig = tokio::fs::read(config)
        .await
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| {
            failed(
                format!("the trainer's adapter_config.json is not a LoRA config: {e}"),
                RetryDecision::Permanent,
            )
        })?;
    Ok(ArtifactManifest::new(
        MODELS_BUCKET,
        format!("{prefix}/"),
        out,
        peft,
    ))
}

fn convergence(first: f64, last: f64) -> &'static str {
    let ratio = if first > 0.0 { last / first } else { 1.0 };
    match ratio {
        r if r < 0.5 => "excellent",
        r if r < 0.75 => "good",
        r if r < 0.95 => "fair",
        _ => "poor",
    }
}

async fn conclude(
    ctx: &Ctx,
    job: &ClaimedJob,
    control: &Control,
    sink: &mut EventSink<'_>,
    result: Result<Uploaded3, AttemptError>,
    dataset_name: &str,
) -> Result<&'static str, QueueError> {
    let lease = &job.lease;
    if control.lease_lost.load(Ordering::Relaxed) {
        return Err(QueueError::LeaseLost);
    }
    let user_cancel = control.user_cancel.load(Ordering::Relaxed);
    let shutdown = control.shutdown.load(Ordering::Relaxed);
    if user_cancel && matches!(result, Ok(_) | Err(AttemptError::Stopped)) {
        sink.flush().await;
        let fraction = sink.tracker.fraction();
        let billing = sink.tracker.billing;
        ctx.queue
            .finish_cancelled(lease, billing.cost(fraction), billing.gpu_hours(fraction))
            .await?;
        return Ok("cancelled");
    }
    match result {
        Ok(done) => {
            let t = &sink.tracker;
            let final_loss = finite(done.adapter.final_train_loss);
            let final_val = done
                .adapter
                .final_validation_loss
                .map(finite)
                .or(t.validation_loss);
            let cost = t.billing.cost(1.0);
            let gpu_hours = t.billing.gpu_hours(1.0);
            let mut quality = json!({
                "final_training_loss": final_loss,
                "final_validation_loss": final_val.unwrap_or(final_loss),
                "convergence_quality": convergence(t.first_loss.unwrap_or(final_loss), final_loss),
            });
            if let Some(v) = final_val {
                quality["perplexity"] = json!(v.min(50.0).exp());
            }
            if let Some((best, epoch)) = t.best_validation {
                quality["best_validation_loss"] = json!(best);
                quality["best_epoch"] = json!(epoch);
            }
            let total_tokens: Option<u64> = job
                .cost_estimate
                .as_ref()
                .and_then(|e| e.get("total_tokens"))
                .and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()))
                .map(|v| v as u64);
            let mut summary = json!({
                "duration_seconds": t.started.elapsed().as_secs_f64(),
                "total_epochs": job.total_epochs,
                "final_learning_rate": t.learning_rate,
                "gpu_hours": (gpu_hours * 10_000.0).round() / 10_000.0,
                "total_cost": (cost * 100.0).round() / 100.0,
                "total_steps": t.step,
                "attempt": lease.attempt,
                "backend": ctx.backend.name(),
            });
            if t.throughput_n > 0 {
                summary["avg_throughput"] = json!(t.throughput_sum / t.throughput_n as f64);
            }
            if let Some(tokens) = total_tokens {
                summary["total_tokens_processed"] = json!(tokens);
            }
            let mut final_metrics = t.metrics_json().unwrap_or_else(|| json!({}));
            final_metrics["training_loss"] = json!(final_loss);
            if let Some(v) = final_val {
                final_metrics["validation_loss"] = json!(v);
            }
            let completion = JobCompletion {
                artifact_name: format!("{dataset_name} LoRA adapter")
                    .chars()
                    .take(200)
                    .collect(),
                quality_metrics: quality,
                training_summary: summary,
                configuration: json!({
                    "preset_id": job.preset_id, "hyperparameters": job.hyperparameters,
                    "gpu_config": job.gpu_config, "dataset_name": dataset_name,
                }),
                artifacts: json!(done.manifest),
                final_cost: cost,
                gpu_hours,
                final_metrics: Some(final_metrics),
                epoch: i32::try_from(t.epoch).unwrap_or(i32::MAX),
                step: i32::try_from(t.step).unwrap_or(i32::MAX),
                notification: notify::job_complete(
                    lease.job_id,
                    None,
                    dataset_name,
                    final_loss,
                    cost,
                ),
            };
            let artifact_id = ctx.queue.complete(lease, &completion).await?;
            info!(%artifact_id, cost, "job completed");
            remove_other_attempts(ctx, job).await;
            Ok("completed")
        }
        Err(AttemptError::Stopped) if shutdown => {
            ctx.queue.release(lease).await?;
            Ok("handed back")
        }
        Err(AttemptError::Stopped) => {
            // Stopped without a reason we know: treat as a retryable failure.
            fail(
                ctx,
                job,
                AttemptFailure {
                    message: "the trainer stopped unexpectedly".into(),
                    detail: None,
                    retry: RetryDecision::Retryable,
                },
                dataset_name,
            )
            .await
        }
        Err(AttemptError::LeaseLost) => Err(QueueError::LeaseLost),
        Err(AttemptError::Failed(failure))
            if shutdown && failure.retry == RetryDecision::Retryable =>
        {
            // Interrupted by the shutdown: not the job's fault.
            ctx.queue.release(lease).await?;
            Ok("handed back")
        }
        Err(AttemptError::Failed(failure)) => fail(ctx, job, failure, dataset_name).await,
    }
}

async fn fail(
    ctx: &Ctx,
    job: &ClaimedJob,
    failure: AttemptFailure,
    dataset_name: &str,
) -> Result<&'static str, QueueError> {
    warn!(error = %failure.message, retry = ?failure.retry, "attempt failed");
    let job_id = job.lease.job_id;
    let outcome = ctx
        .queue
        .fail_attempt(&job.lease, &failure, |message| {
            notify::job_failed(job_id, dataset_name, message)
        })
        .await?;
    Ok(match outcome {
        FailureOutcome::Requeued { .. } => "requeued",
        FailureOutcome::Failed => "failed",
        FailureOutcome::Cancelled => "cancelled",
    })
}

/// Objects earlier attempts of this job left in storage (an attempt killed while uploading):
/// removed once the job's artifact row names this attempt's files. Best effort.
async fn remove_other_attempts(ctx: &Ctx, job: &ClaimedJob) {
    let root = format!("{}/{}/", job.user_id, job.lease.job_id);
    let mine = format!("attempt-{}", job.lease.attempt);
    let folders = match ctx.storage.list(MODELS_BUCKET, &root).await {
        Ok(f) => f,
        Err(e) => {
            warn!(error = %e, "listing earlier attempts' files failed");
            return;
        }
    };
    for folder in folders.into_iter().filter(|f| *f != mine) {
        let prefix = format!("{root}{folder}/");
        let names = ctx
            .storage
            .list(MODELS_BUCKET, &prefix)
            .await
            .unwrap_or_default();
        let paths: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
        if let Err(e) = ctx.storage.remove(MODELS_BUCKET, &paths).await {
            warn!(error = %e, "removing an earlier attempt's files failed");
        } else if !paths.is_empty() {
            info!(
                folder,
                files = paths.len(),
                "removed an earlier attempt's files"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_is_the_estimate_pro_rata() {
        let b = Billing {
            overhead_hours: 0.25,
            training_hours: 1.0,
            price_per_gpu_hour: 3.0,
            gpus: 2.0,
        };
        assert!(
            (b.cost(1.0) - 7.5).abs() < 1e-9,
            "full run costs the estimate"
        );
        assert!(
            (b.cost(0.5) - 4.5).abs() < 1e-9,
            "half the steps, half the training hours"
        );
        assert!(
            (b.cost(0.0) - 1.5).abs() < 1e-9,
            "the overhead is billed once work starts"
        );
    }
}
