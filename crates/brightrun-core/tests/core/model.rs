//! The domain types read rows exactly as PostgREST returns them and write them back unchanged.

use brightrun_core::{
    CostRecord, CostType, Dataset, DatasetFormat, DatasetStatus, GpuType, JobStage, JobStatus,
    MetricsPoint, ModelArtifact, MonthlyCostSummary, Notification, NotificationType, PresetId,
    TrainingJob, TrainingPreset, known_context_length,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Reads `row`, writes it, reads that again: both reads must be equal, and the written JSON must
/// carry the same columns.
fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(row: Value) -> T {
    let parsed: T = serde_json::from_value(row.clone()).expect("row deserializes");
    let written = serde_json::to_value(&parsed).expect("row serializes");
    let reparsed: T = serde_json::from_value(written.clone()).expect("written row deserializes");
    assert_eq!(parsed, reparsed, "round trip changes nothing");
    let columns = |value: &Value| {
        let mut keys: Vec<String> = value
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    };
    assert_eq!(
        columns(&row),
        columns(&written),
        "written JSON has the row's columns"
    );
    parsed
}

const USER: &str = "6f1c2a52-3b7e-4a52-9b8e-2f6f6c1d0a11";
const DATASET: &str = "0b7a5d4e-1c2f-4e3a-8b9c-7d6e5f4a3b2c";
const JOB: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

fn hyperparameters() -> Value {
    json!({"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0002, "batch_size": 8,
           "num_epochs": 5, "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.1,
           "warmup_steps": 200, "weight_decay": 0.01})
}

fn gpu_config() -> Value {
    json!({"gpu_type": "A100-80GB", "num_gpus": 2, "gpu_memory_gb": 160, "cost_per_gpu_hour": 3.0})
}

#[test]
fn a_dataset_row_round_trips() {
    let dataset: Dataset = round_trip(json!({
        "id": DATASET, "user_id": USER, "name": "support-bot", "description": null,
        "format": "brightrun_lora_v4", "status": "ready", "storage_bucket": "lora-datasets",
        "storage_path": format!("{USER}/{DATASET}/chats.jsonl"), "file_name": "chats.jsonl",
        "file_size": 10485760, "total_training_pairs": 900, "total_validation_pairs": 100,
        "total_tokens": 1234567, "training_tokens": 1100000,
        "avg_turns_per_conversation": 4.25, "avg_tokens_per_turn": 61.5,
        "training_ready": true, "validated_at": "2026-11-22T10:00:00.123456+00:00",
        "validation_errors": [{"line": 3, "error": "content is empty", "suggestion": "Write it"}],
        "sample_data": [{"messages": []}],
        "created_at": "2026-11-22T09:59:00+00:00", "updated_at": "2026-11-22T10:00:00.123456+00:00",
        "deleted_at": null
    }));
    assert_eq!(
        dataset.status,
        DatasetStatus::Ready,
        "status text maps to the enum"
    );
    assert_eq!(
        dataset.format,
        DatasetFormat::V4,
        "format text maps to the enum"
    );
    assert_eq!(
        dataset.tokens_per_epoch(),
        Some(1_100_000),
        "an epoch is the training tokens, not every token of the file"
    );
    assert_eq!(
        dataset.validated_at.map(|t| t.timestamp_subsec_micros()),
        Some(123_456),
        "microseconds of timestamptz survive"
    );
}

#[test]
fn unknown_status_values_are_kept_not_rejected() {
    let mut row = json!({
        "id": JOB, "user_id": USER, "dataset_id": DATASET, "preset_id": "balanced",
        "hyperparameters": hyperparameters(), "gpu_config": gpu_config(),
        "status": "paused_by_admin", "current_stage": "training", "progress": 42.5,
        "current_epoch": 2, "total_epochs": 5, "current_step": 420, "total_steps": 1000,
        "current_metrics": {"training_loss": 0.91, "learning_rate": 0.0002, "throughput": 3100.5},
        "queued_at": "2026-11-22T10:00:00+00:00", "started_at": "2026-11-22T10:01:00+00:00",
        "completed_at": null, "estimated_completion_at": "2026-11-22T12:00:00+00:00",
        "current_cost": 1.25, "estimated_total_cost": 3.41, "final_cost": null,
        "cost_estimate": null,
        "error_message": null, "error_stack": null, "retry_count": 0,
        "external_job_id": null, "artifact_id": null, "attempt": 2,
        "created_at": "2026-11-22T10:00:00+00:00", "updated_at": "2026-11-22T10:05:00.5+00:00"
    });
    let job: TrainingJob = round_trip(row.clone());
    assert_eq!(job.attempt, 2, "the claim count reads");
    assert_eq!(
        job.status,
        JobStatus::Other("paused_by_admin".into()),
        "unknown text is kept"
    );
    assert_eq!(job.current_stage, JobStage::Training, "known stage maps");
    assert_eq!(job.preset_id, PresetId::Balanced, "preset id maps");
    assert_eq!(job.gpu_config.num_gpus, 2, "gpu config reads");
    assert!(
        !job.status.is_terminal(),
        "an unknown status is not terminal"
    );
    // A column with a database default that came back null reads as the default.
    row["progress"] = Value::Null;
    let job: TrainingJob = serde_json::from_value(row).expect("null progress is tolerated");
    assert_eq!(job.progress, 0.0, "null progress reads as 0");
}

#[test]
fn metrics_artifacts_costs_and_notifications_round_trip() {
    let point: MetricsPoint = round_trip(json!({
        "id": "11111111-2222-4333-8444-555555555555", "job_id": JOB, "attempt": 2,
        "timestamp": "2026-11-22T10:00:00.123456+00:00", "epoch": 1, "step": 10,
        "training_loss": 1.234567, "validation_loss": null, "learning_rate": 0.0001999999,
        "gradient_norm": 0.5, "throughput": 3200.25, "gpu_utilization": 97.5
    }));
    assert_eq!(point.attempt, 2, "the attempt that logged the point reads");
    assert_eq!(
        point.learning_rate, 0.0001999999,
        "numeric(12,10) read as a number"
    );

    let artifact: ModelArtifact = round_trip(json!({
        "id": "22222222-2222-4333-8444-555555555555", "user_id": USER, "job_id": JOB,
        "dataset_id": DATASET, "name": "support-bot v3", "version": "1.0.0", "description": null,
        "status": "stored", "deployed_at": null,
        "quality_metrics": {"final_training_loss": 0.82, "final_validation_loss": 0.9,
                            "convergence_quality": "good", "perplexity": 2.46},
        "training_summary": {"duration_seconds": 3600, "total_epochs": 5,
                             "final_learning_rate": 0.00001, "gpu_hours": 2.0, "total_cost": 6.0},
        "configuration": {"preset_id": "balanced", "hyperparameters": hyperparameters(),
                          "gpu_config": gpu_config(), "dataset_name": "support-bot"},
        "artifacts": {"adapter_model_path": "u/j/adapter_model.safetensors",
                      "adapter_config_path": "u/j/adapter_config.json",
                      "tokenizer_path": "u/j/tokenizer",
                      "file_sizes": {"adapter_model": 1000, "adapter_config": 10, "tokenizer": 100}},
        "parent_model_id": null, "created_at": "2026-11-22T11:00:00+00:00",
        "updated_at": "2026-11-22T11:00:00+00:00", "deleted_at": null
    }));
    assert_eq!(artifact.training_summary.gpu_hours, 2.0, "summary reads");

    let cost: CostRecord = round_trip(json!({
        "id": "33333333-2222-4333-8444-555555555555", "user_id": USER, "job_id": JOB,
        "cost_type": "compute", "amount": 6.0,
        "details": {"gpu_hours": 2.0, "unit_cost": 3.0},
        "billing_period": "2026-11-01", "recorded_at": "2026-11-22T11:00:00+00:00"
    }));
    assert_eq!(cost.cost_type, CostType::Compute, "cost type maps");
    assert_eq!(
        cost.billing_period.to_string(),
        "2026-11-01",
        "date column reads as a date"
    );

    let notification: Notification = round_trip(json!({
        "id": "44444444-2222-4333-8444-555555555555", "user_id": USER, "type": "job_complete",
        "title": "LoRA job 'support-bot v3' finished", "message": "loss 0.82, $3.41",
        "priority": "high", "read": false, "action_url": null,
        "metadata": {"job_id": JOB}, "created_at": "2026-11-22T11:00:00+00:00"
    }));
    assert_eq!(
        notification.kind,
        NotificationType::JobComplete,
        "column `type` maps to kind"
    );
}

/// The values of every text column's CHECK constraint in migrations/20261122000002_lora_schema.sql,
/// in the constraint's order: each must be a known variant, and no variant may be missing.
#[test]
fn text_enums_know_exactly_the_schemas_values() {
    fn texts<T: std::fmt::Display>(known: &[T]) -> Vec<String> {
        known.iter().map(ToString::to_string).collect()
    }
    let cases: [(&str, Vec<String>, &[&str]); 8] = [
        (
            "datasets.format",
            texts(DatasetFormat::KNOWN),
            &["brightrun_lora_v4", "brightrun_lora_v3"],
        ),
        (
            "datasets.status",
            texts(DatasetStatus::KNOWN),
            &["uploading", "validating", "ready", "error"],
        ),
        (
            "training_jobs.status",
            texts(JobStatus::KNOWN),
            &[
                "queued",
                "initializing",
                "running",
                "completed",
                "failed",
                "cancelled",
            ],
        ),
        (
            "training_jobs.current_stage",
            texts(JobStage::KNOWN),
            &[
                "queued",
                "initializing",
                "training",
                "validating",
                "saving",
                "completed",
            ],
        ),
        (
            "model_artifacts.status",
            texts(brightrun_core::ModelStatus::KNOWN),
            &["stored", "deployed", "archived"],
        ),
        (
            "cost_records.cost_type",
            texts(CostType::KNOWN),
            &["compute", "storage", "data_transfer"],
        ),
        (
            "notifications.type",
            texts(NotificationType::KNOWN),
            &[
                "job_complete",
                "job_failed",
                "cost_alert",
                "dataset_ready",
                "dataset_error",
            ],
        ),
        (
            "notifications.priority",
            texts(brightrun_core::NotificationPriority::KNOWN),
            &["low", "medium", "high", "critical"],
        ),
    ];
    for (column, known, schema) in cases {
        assert_eq!(
            known, schema,
            "{column}: the enum and the CHECK constraint agree"
        );
    }
    let failed: Notification = serde_json::from_value(json!({
        "id": "44444444-2222-4333-8444-555555555556", "user_id": USER, "type": "dataset_error",
        "title": "Dataset 'support-bot' failed validation", "message": "3 errors",
        "priority": "high", "read": false, "action_url": null, "metadata": null,
        "created_at": "2026-11-22T11:00:00+00:00"
    }))
    .expect("a dataset_error notification reads");
    assert_eq!(
        failed.kind,
        NotificationType::DatasetError,
        "dataset_error is a known type, not Other"
    );
}

#[test]
fn catalogue_rows_round_trip() {
    // As PostgREST sends them: numeric columns keep their scale (1.5000, 1400.00).
    let gpu: GpuType = round_trip(json!({
        "id": "A6000-48GB", "display_name": "NVIDIA RTX A6000 48 GB", "memory_gb": 48,
        "price_per_gpu_hour": 1.5000, "tokens_per_second_per_gpu": 1400.00, "max_gpus": 4,
        "active": true, "sort_order": 10, "created_at": "2026-11-22T05:02:50.202212+00:00",
        "updated_at": "2026-11-22T05:02:50.202212+00:00"
    }));
    let config = gpu.config(2);
    assert_eq!(
        (
            config.gpu_type.as_str(),
            config.num_gpus,
            config.gpu_memory_gb,
            config.cost_per_gpu_hour
        ),
        ("A6000-48GB", 2, 96.0, 1.5),
        "the job's gpu_config: memory of all GPUs, price of one"
    );

    let preset: TrainingPreset = round_trip(json!({
        "id": "custom", "display_name": "Custom",
        "description": "Start from balanced values and set every hyperparameter yourself.",
        "hyperparameters": {"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0002,
                            "batch_size": 8, "num_epochs": 5, "lora_rank": 16, "lora_alpha": 32,
                            "lora_dropout": 0.1},
        "active": true, "sort_order": 40, "created_at": "2026-11-22T05:02:50.202212+00:00",
        "updated_at": "2026-11-22T05:02:50.202212+00:00"
    }));
    assert_eq!(preset.id, PresetId::Custom, "preset id maps");
    assert_eq!(
        preset.hyperparameters.warmup_steps, None,
        "custom has no warm-up"
    );
    assert!(
        preset.hyperparameters.problems().is_empty(),
        "a preset passes its own checks"
    );
    let mut broken = preset.hyperparameters.clone();
    broken.lora_dropout = 1.5;
    broken.learning_rate = 0.0;
    let problems = broken.problems();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["learning_rate", "lora_dropout"],
        "every problem is listed"
    );
}

#[test]
fn a_job_carries_its_cost_estimate_snapshot() {
    let estimate = json!({
        "tokens_per_epoch": 100000, "epochs": 5, "total_tokens": 500000, "gpu_type": "A100-80GB",
        "gpu_count": 2, "tokens_per_second_per_gpu": 3200.00, "scaling_efficiency": 0.9000,
        "effective_tokens_per_second": 5760.00, "training_hours": 0.0241, "overhead_hours": 0.25,
        "estimated_hours": 0.2741, "gpu_hours": 0.5482, "price_per_gpu_hour": 3.0000,
        "estimated_cost": 1.64, "currency": "USD", "dataset_id": DATASET, "preset_id": "balanced"
    });
    let job: TrainingJob = round_trip(json!({
        "id": JOB, "user_id": USER, "dataset_id": DATASET, "preset_id": "balanced",
        "hyperparameters": hyperparameters(), "gpu_config": gpu_config(),
        "status": "queued", "current_stage": "queued", "progress": 0,
        "current_epoch": 0, "total_epochs": 5, "current_step": 0, "total_steps": 60,
        "current_metrics": null, "queued_at": "2026-11-22T10:00:00+00:00", "started_at": null,
        "completed_at": null, "estimated_completion_at": "2026-11-22T10:16:27+00:00",
        "current_cost": 0, "estimated_total_cost": 1.64, "final_cost": null,
        "cost_estimate": estimate, "error_message": null, "error_stack": null, "retry_count": 0,
        "external_job_id": null, "artifact_id": null, "attempt": 0,
        "created_at": "2026-11-22T10:00:00+00:00", "updated_at": "2026-11-22T10:00:00+00:00"
    }));
    let snapshot = job.cost_estimate.expect("the snapshot reads");
    assert_eq!(
        snapshot.estimated_cost, job.estimated_total_cost,
        "the snapshot is the job's estimate"
    );
    assert_eq!(snapshot.gpu_hours, 0.5482, "with its inputs and outputs");
}

#[test]
fn the_monthly_summary_reads() {
    let summary: MonthlyCostSummary = round_trip(json!({
        "month": "2026-11-01", "currency": "USD", "total": 1.35,
        "by_type": {"compute": 1.25, "storage": 0.10, "data_transfer": 0},
        "by_job": [{"job_id": JOB, "amount": 1.35}],
        "by_gpu": [{"gpu_type": "A100-80GB", "amount": 1.25, "gpu_hours": 0.4}]
    }));
    assert_eq!(summary.by_type.storage, 0.1, "by type");
    assert_eq!(
        summary.by_gpu[0].gpu_type.as_deref(),
        Some("A100-80GB"),
        "by GPU"
    );
}

#[test]
fn context_lengths_are_per_model() {
    assert_eq!(
        known_context_length("mistralai/Mistral-7B-v0.1"),
        Some(8192),
        "Mistral v0.1"
    );
    assert_eq!(
        known_context_length("meta-llama/Llama-3.1-8B-Instruct"),
        Some(131_072),
        "Llama 3.1"
    );
    assert_eq!(
        known_context_length("acme/unknown-model"),
        None,
        "unknown models are not guessed"
    );
}

#[test]
fn a_warmup_as_long_as_the_run_is_flagged() {
    let mut hp: brightrun_core::HyperparameterConfig =
        serde_json::from_value(hyperparameters()).expect("config");
    hp.warmup_steps = Some(100);
    let warning = hp.schedule_warning(69).expect("100 warm-up steps of 69");
    assert!(
        warning.contains("warmup_steps 100")
            && warning.contains("69 steps")
            && warning.contains("(6 steps)"),
        "says what and suggests 10 %: {warning}"
    );
    assert_eq!(
        hp.schedule_warning(69).is_some(),
        hp.schedule_warning(100).is_some(),
        "equal counts too"
    );
    assert_eq!(
        hp.schedule_warning(101),
        None,
        "a warm-up shorter than the run is fine"
    );
    hp.warmup_steps = None;
    assert_eq!(hp.schedule_warning(10), None, "no warm-up, nothing to say");
}

#[test]
fn a_training_summary_says_where_the_job_trained() {
    // What the worker writes (train_job.rs), and what summaries older than `backend` hold.
    let summary: brightrun_core::TrainingSummary = round_trip(json!({
        "duration_seconds": 8.5, "total_epochs": 1, "final_learning_rate": 0.0001,
        "gpu_hours": 0.0024, "total_cost": 0.01, "backend": "ray", "attempt": 2,
    }));
    assert_eq!(
        summary.backend.as_deref(),
        Some("ray"),
        "the backend is kept"
    );
    assert_eq!(summary.attempt, Some(2), "the attempt is kept");
    let older: brightrun_core::TrainingSummary = round_trip(json!({
        "duration_seconds": 8.5, "total_epochs": 1, "final_learning_rate": 0.0001,
        "gpu_hours": 0.0024, "total_cost": 0.01,
    }));
    assert_eq!(older.backend, None, "an older summary has none");
}
