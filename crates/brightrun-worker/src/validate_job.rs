//! Dataset validation jobs: after `confirm_dataset_upload` a dataset is `validating`; a worker
//! claims it, streams the object through brightrun-core's validator and writes the statistics,
//! the first conversations as a sample, the errors, `ready`/`error`, `training_ready` and a
//! `dataset_ready` (or `dataset_error`) notification, in one fenced transaction.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use brightrun_supabase::ErrorCode;
use serde_json::json;
use tracing::{info, warn};

use crate::dataset::{DatasetError, validate_object};
use crate::notify;
use crate::queue::{ClaimedDataset, DatasetResult, QueueError, RetryDecision};
use crate::runtime::{Control, Ctx};

pub async fn run(ctx: Arc<Ctx>, ds: ClaimedDataset, control: Arc<Control>) {
    let lease = ds.lease.clone();
    let max = ctx.queue.policy().max_validation_attempts;
    if lease.attempt > max {
        let message = format!(
            "validation was interrupted {} times (a worker stopped while reading this file); \
             giving up",
            lease.attempt - 1
        );
        let draft = notify::dataset_error(lease.dataset_id, &ds.name, 1, &message);
        if let Err(e) = ctx
            .queue
            .fail_dataset_attempt(&lease, &message, RetryDecision::Permanent, draft)
            .await
        {
            warn!(dataset_id = %lease.dataset_id, error = %e, "could not mark the dataset failed");
        }
        return;
    }

    // Keep the lease while the file streams.
    let hb = {
        let ctx = ctx.clone();
        let lease = lease.clone();
        let control = control.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ctx.heartbeat).await;
                match ctx.queue.heartbeat_dataset(&lease).await {
                    Ok(()) => {}
                    Err(QueueError::LeaseLost) => {
                        control.lease_lost.store(true, Ordering::Relaxed);
                        control.stop.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(e) => warn!(dataset_id = %lease.dataset_id, error = %e, "heartbeat failed"),
                }
            }
        })
    };
    let started = std::time::Instant::now();
    let result = validate_object(
        &ctx.storage,
        &ds.storage_bucket,
        &ds.storage_path,
        ctx.validation_threads,
        control.stop.clone(),
    )
    .await;
    hb.abort();

    let outcome = match result {
        Ok(validated) => {
            let report = &validated.report;
            let columns = report.dataset_columns();
            let stats = &report.statistics;
            let ready = report.is_valid();
            let notification = if ready {
                notify::dataset_ready(
                    lease.dataset_id,
                    &ds.name,
                    columns.total_training_pairs,
                    columns.total_tokens,
                )
            } else {
                let first = report
                    .errors
                    .first()
                    .map(|e| match e.line {
                        Some(line) => format!("line {line}: {}", e.message),
                        None => e.message.clone(),
                    })
                    .unwrap_or_else(|| "the file holds no conversations".to_owned());
                notify::dataset_error(
                    lease.dataset_id,
                    &ds.name,
                    report.error_count.max(1),
                    &first,
                )
            };
            let mut statistics = serde_json::to_value(stats).unwrap_or_else(|_| json!({}));
            if let Some(object) = statistics.as_object_mut() {
                object.insert("error_count".into(), json!(report.error_count));
                object.insert("warning_count".into(), json!(report.warning_count));
                object.insert("counts_by_code".into(), json!(report.counts_by_code));
                object.insert("omitted_issues".into(), json!(report.omitted_issues()));
                object.insert("format".into(), json!(report.format));
                object.insert("bytes_read".into(), json!(report.bytes_read));
            }
            let result = DatasetResult {
                ready,
                total_training_pairs: columns.total_training_pairs,
                total_validation_pairs: columns.total_validation_pairs,
                total_tokens: columns.total_tokens,
                // The worker validates in full, so the token figures are there.
                training_tokens: stats.tokens.as_ref().map_or(0, |t| {
                    i64::try_from(t.billable_per_epoch).unwrap_or(i64::MAX)
                }),
                avg_turns_per_conversation: columns.avg_turns_per_conversation,
                avg_tokens_per_turn: columns.avg_tokens_per_turn,
                statistics,
                validation_errors: serde_json::to_value(&columns.validation_errors)
                    .unwrap_or_else(|_| json!([])),
                sample_data: validated.sample,
                notification,
            };
            info!(dataset_id = %lease.dataset_id, ready, errors = report.error_count,
                  conversations = stats.conversations, elapsed_ms = started.elapsed().as_millis() as u64,
                  "dataset validated");
            ctx.queue.finish_dataset(&lease, &result).await.map(|_| ())
        }
        Err(DatasetError::Stopped) if control.lease_lost.load(Ordering::Relaxed) => {
            Err(QueueError::LeaseLost)
        }
        Err(DatasetError::Stopped) => ctx.queue.release_dataset(&lease).await,
        Err(e) => {
            let retry = if e.is_retryable() {
                RetryDecision::Retryable
            } else {
                RetryDecision::Permanent
            };
            let message = if matches!(&e, DatasetError::Storage(s) if s.code() == ErrorCode::NotFound)
            {
                "the uploaded file is missing from storage".to_owned()
            } else {
                e.to_string()
            };
            let draft = notify::dataset_error(lease.dataset_id, &ds.name, 1, &message);
            warn!(dataset_id = %lease.dataset_id, error = %message, "dataset validation attempt failed");
            ctx.queue
                .fail_dataset_attempt(&lease, &message, retry, draft)
                .await
                .map(|_| ())
        }
    };
    match outcome {
        Ok(()) => {}
        Err(QueueError::LeaseLost) => {
            warn!(dataset_id = %lease.dataset_id, attempt = lease.attempt,
                  "lost the validation lease; result discarded")
        }
        Err(e) => {
            warn!(dataset_id = %lease.dataset_id, error = %e, "could not record the validation")
        }
    }
}
