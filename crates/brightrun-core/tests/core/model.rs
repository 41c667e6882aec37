//! The domain types read rows exactly as PostgREST returns them and write them back unchanged.

use brightrun_core::{
    CostRecord, CostType, Dataset, DatasetFormat, DatasetStatus, JobStage, JobStatus, MetricsPoint,
    ModelArtifact, Notification, NotificationType, PresetId, TrainingJob, builtin_presets,
    known_context_length,
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
        "total_tokens": 1234567, "avg_turns_per_conversation": 4.25, "avg_tokens_per_turn": 61.5,
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

#[test]
fn presets_match_the_spec_and_pass_their_own_checks() {
    let presets = builtin_presets();
    assert_eq!(
        presets.len(),
        4,
        "conservative, balanced, aggressive, custom"
    );
    for preset in &presets {
        assert!(
            preset.hyperparameters.problems().is_empty(),
            "preset {} must be valid: {:?}",
            preset.id,
            preset.hyperparameters.problems()
        );
    }
    let aggressive = &presets[2].hyperparameters;
    assert_eq!(
        (
            aggressive.lora_rank,
            aggressive.lora_alpha,
            aggressive.num_epochs
        ),
        (32, 64, 10),
        "spec values"
    );
    let mut broken = presets[0].hyperparameters.clone();
    broken.lora_dropout = 1.5;
    broken.learning_rate = 0.0;
    let fields: Vec<_> = broken.problems().iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        ["learning_rate", "lora_dropout"],
        "every problem is listed"
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
