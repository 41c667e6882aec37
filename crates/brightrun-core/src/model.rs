//! Rows of the server's tables and the JSON objects inside them, as PostgREST returns them.
//!
//! Field names are the database columns (snake_case), so the same types deserialize a PostgREST
//! response, serialize an RPC argument and cross the IPC boundary. Timestamps are `timestamptz`
//! (`"2026-11-22T10:00:00.123456+00:00"`), `numeric` columns arrive as JSON numbers. Columns the
//! server adds later are ignored; status values this build does not know land in `Other`.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::artifact::ArtifactManifest;
use crate::cost::CostEstimate;
use crate::text_enum::text_enum;

/// A `null` in a column that has a database default reads as the type's default, so one odd row
/// (inserted with an explicit `null`) cannot break a whole list.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

text_enum! {
    /// `datasets.format`.
    #[derive(Default)]
    pub enum DatasetFormat {
        #[default]
        /// One `{"messages": [{"role", "content"}]}` object per line (OpenAI chat format).
        V4 => "brightrun_lora_v4",
        /// ShareGPT, `{"conversations": [{"from", "value"}]}`; deprecated, convertible to v4.
        V3 => "brightrun_lora_v3",
    }
}

text_enum! {
    /// `datasets.status`.
    pub enum DatasetStatus {
        Uploading => "uploading",
        Validating => "validating",
        Ready => "ready",
        Error => "error",
    }
}

text_enum! {
    /// `training_jobs.status`.
    pub enum JobStatus {
        Queued => "queued",
        Initializing => "initializing",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
    }
}

impl JobStatus {
    /// A job in this status will not change again (notifications fire on these).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// `training_jobs.current_stage`.
    pub enum JobStage {
        Queued => "queued",
        Initializing => "initializing",
        Training => "training",
        Validating => "validating",
        Saving => "saving",
        Completed => "completed",
    }
}

text_enum! {
    /// `model_artifacts.status`.
    pub enum ModelStatus {
        Stored => "stored",
        Deployed => "deployed",
        Archived => "archived",
    }
}

text_enum! {
    /// `cost_records.cost_type`.
    pub enum CostType {
        Compute => "compute",
        Storage => "storage",
        DataTransfer => "data_transfer",
    }
}

text_enum! {
    /// `notifications.type`.
    pub enum NotificationType {
        JobComplete => "job_complete",
        JobFailed => "job_failed",
        CostAlert => "cost_alert",
        DatasetReady => "dataset_ready",
        /// A dataset failed validation (not in the spec's list; the schema adds it).
        DatasetError => "dataset_error",
    }
}

text_enum! {
    /// `notifications.priority`.
    pub enum NotificationPriority {
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
}

text_enum! {
    /// `training_jobs.preset_id`.
    pub enum PresetId {
        Conservative => "conservative",
        Balanced => "balanced",
        Aggressive => "aggressive",
        Custom => "custom",
    }
}

text_enum! {
    /// `model_artifacts.quality_metrics.convergence_quality`.
    pub enum ConvergenceQuality {
        Excellent => "excellent",
        Good => "good",
        Fair => "fair",
        Poor => "poor",
    }
}

/// One entry of `datasets.validation_errors` (`[{ line, error, suggestion }]` in the spec), with
/// the richer fields our validator adds; every field but `error` is optional so rows written by
/// older code still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct StoredValidationError {
    #[serde(default)]
    pub line: Option<u64>,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<u64>,
}

/// A row of `datasets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Dataset {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = DatasetFormat))]
    pub format: DatasetFormat,
    pub status: DatasetStatus,
    pub storage_bucket: String,
    pub storage_path: String,
    pub file_name: String,
    pub file_size: i64,
    pub total_training_pairs: Option<i64>,
    pub total_validation_pairs: Option<i64>,
    /// Every token in the file, training and validation conversations.
    pub total_tokens: Option<i64>,
    /// Tokens one training epoch processes (the estimator's input); written by the worker.
    #[serde(default)]
    pub training_tokens: Option<i64>,
    pub avg_turns_per_conversation: Option<f64>,
    pub avg_tokens_per_turn: Option<f64>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = bool))]
    pub training_ready: bool,
    pub validated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub validation_errors: Option<Vec<StoredValidationError>>,
    /// First conversations of the file, for preview; free-form JSON.
    #[serde(default)]
    pub sample_data: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Dataset {
    /// What one epoch over this dataset costs in tokens, as the server's estimate takes it:
    /// `training_tokens`, else `total_tokens` (a slight over-estimate); `None` until validated.
    pub fn tokens_per_epoch(&self) -> Option<u64> {
        self.training_tokens
            .or(self.total_tokens)
            .and_then(|tokens| u64::try_from(tokens).ok())
    }
}

/// `training_jobs.hyperparameters` (HyperparameterConfig).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct HyperparameterConfig {
    /// e.g. `mistralai/Mistral-7B-v0.1`.
    pub base_model: String,
    pub learning_rate: f64,
    pub batch_size: u32,
    pub num_epochs: u32,
    pub lora_rank: u32,
    pub lora_alpha: u32,
    pub lora_dropout: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
}

/// A hyperparameter outside the bounds `create_training_job` enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[error("hyperparameters.{field} {rule}")]
pub struct HyperparameterProblem {
    pub field: String,
    /// e.g. `must be a number in (0, 0.01]`.
    pub rule: String,
}

/// The server's bounds of one numeric hyperparameter (`lora_private.check_hyperparameters` in
/// the migrations): `[min, max]`, or `(min, max]` when `min_exclusive`. Checked here so a form
/// marks a field before anything is sent; the server checks again and decides. A test holds
/// the two to the same numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub field: &'static str,
    pub min: f64,
    pub max: f64,
    pub min_exclusive: bool,
    pub whole: bool,
}

impl Bound {
    pub fn admits(&self, value: f64) -> bool {
        value.is_finite()
            && value <= self.max
            && (value > self.min || (!self.min_exclusive && value == self.min))
            && (!self.whole || value.fract() == 0.0)
    }

    /// The rule in the server's words: `must be a whole number in [1, 256]`.
    pub fn rule(&self) -> String {
        format!(
            "must be a {} in {}{}, {}]",
            if self.whole { "whole number" } else { "number" },
            if self.min_exclusive { "(" } else { "[" },
            self.min,
            self.max
        )
    }
}

/// Every numeric hyperparameter's bounds, as the server enforces them.
pub const HYPERPARAMETER_BOUNDS: [Bound; 10] = [
    Bound {
        field: "learning_rate",
        min: 0.0,
        max: 0.01,
        min_exclusive: true,
        whole: false,
    },
    Bound {
        field: "batch_size",
        min: 1.0,
        max: 256.0,
        min_exclusive: false,
        whole: true,
    },
    Bound {
        field: "num_epochs",
        min: 1.0,
        max: 100.0,
        min_exclusive: false,
        whole: true,
    },
    Bound {
        field: "lora_rank",
        min: 1.0,
        max: 256.0,
        min_exclusive: false,
        whole: true,
    },
    Bound {
        field: "lora_alpha",
        min: 1.0,
        max: 1024.0,
        min_exclusive: false,
        whole: true,
    },
    Bound {
        field: "lora_dropout",
        min: 0.0,
        max: 0.9,
        min_exclusive: false,
        whole: false,
    },
    Bound {
        field: "warmup_steps",
        min: 0.0,
        max: 100_000.0,
        min_exclusive: false,
        whole: true,
    },
    Bound {
        field: "weight_decay",
        min: 0.0,
        max: 1.0,
        min_exclusive: false,
        whole: false,
    },
    Bound {
        field: "gradient_accumulation_steps",
        min: 1.0,
        max: 1024.0,
        min_exclusive: false,
        whole: true,
    },
    Bound {
        field: "max_grad_norm",
        min: 0.0,
        max: 100.0,
        min_exclusive: true,
        whole: false,
    },
];

/// A base model id as the server accepts it: `^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$`.
pub fn is_model_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.len() <= 200
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
}

impl HyperparameterConfig {
    /// Optimizer steps of a run on `training_pairs` examples: `ceil(pairs / (batch_size ×
    /// gradient_accumulation_steps))`, at least 1, per epoch: `create_training_job`'s rule for
    /// `total_steps`, so a form can warn before anything is sent.
    pub fn total_steps(&self, training_pairs: u64) -> u64 {
        let per_step = u64::from(self.batch_size.max(1))
            * u64::from(self.gradient_accumulation_steps.unwrap_or(1).max(1));
        training_pairs.div_ceil(per_step).max(1) * u64::from(self.num_epochs)
    }

    /// Settings that are allowed but defeat themselves on a run of `total_steps` optimizer
    /// steps: a warm-up as long as the run trains below the learning rate asked for all along
    /// (the spec's presets warm up for 100–500 steps; a small dataset trains for far fewer).
    pub fn schedule_warning(&self, total_steps: u64) -> Option<String> {
        let warmup = u64::from(self.warmup_steps.unwrap_or(0));
        if total_steps == 0 || warmup < total_steps {
            return None;
        }
        let suggested = (total_steps / 10).max(1);
        Some(format!(
            "warmup_steps {warmup} is at least the whole run ({total_steps} steps): the learning \
             rate reaches {} only at the very end, if at all; about 10 % of the run \
             ({suggested} steps) is usual",
            self.learning_rate
        ))
    }

    /// Every value outside the server's bounds, so a form can mark every field at once.
    pub fn problems(&self) -> Vec<HyperparameterProblem> {
        let mut problems = Vec::new();
        if !is_model_id(&self.base_model) {
            problems.push(HyperparameterProblem {
                field: "base_model".into(),
                rule: "must be a model id like \"mistralai/Mistral-7B-v0.1\"".into(),
            });
        }
        for bound in &HYPERPARAMETER_BOUNDS {
            if let Some(value) = self.number(bound.field)
                && !bound.admits(value)
            {
                problems.push(HyperparameterProblem {
                    field: bound.field.into(),
                    rule: format!("{}, got {value}", bound.rule()),
                });
            }
        }
        problems
    }

    /// A numeric field by its name (`None` for an optional field that is not set).
    pub fn number(&self, field: &str) -> Option<f64> {
        match field {
            "learning_rate" => Some(self.learning_rate),
            "batch_size" => Some(f64::from(self.batch_size)),
            "num_epochs" => Some(f64::from(self.num_epochs)),
            "lora_rank" => Some(f64::from(self.lora_rank)),
            "lora_alpha" => Some(f64::from(self.lora_alpha)),
            "lora_dropout" => Some(self.lora_dropout),
            "warmup_steps" => self.warmup_steps.map(f64::from),
            "weight_decay" => self.weight_decay,
            "gradient_accumulation_steps" => self.gradient_accumulation_steps.map(f64::from),
            "max_grad_norm" => self.max_grad_norm,
            _ => None,
        }
    }
}

/// `training_jobs.gpu_config` (GPUConfig): the GPU choice snapshotted on the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct GpuConfig {
    /// e.g. `A100-80GB`.
    pub gpu_type: String,
    pub num_gpus: u32,
    pub gpu_memory_gb: f64,
    /// Price of ONE GPU for one hour (the spec's 2×A100 option carried the price of two; fixed).
    pub cost_per_gpu_hour: f64,
}

/// `training_jobs.current_metrics`: the latest metrics, denormalised for list views.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CurrentMetrics {
    pub training_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_loss: Option<f64>,
    pub learning_rate: f64,
    /// Tokens per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<f64>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_processed: Option<u64>,
}

/// A row of `training_jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TrainingJob {
    pub id: Uuid,
    pub user_id: Uuid,
    pub dataset_id: Uuid,
    pub preset_id: PresetId,
    pub hyperparameters: HyperparameterConfig,
    pub gpu_config: GpuConfig,
    pub status: JobStatus,
    pub current_stage: JobStage,
    /// 0–100.
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = f64))]
    pub progress: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = i64))]
    pub current_epoch: i64,
    pub total_epochs: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = i64))]
    pub current_step: i64,
    pub total_steps: Option<i64>,
    pub current_metrics: Option<CurrentMetrics>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub estimated_completion_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = f64))]
    pub current_cost: f64,
    pub estimated_total_cost: f64,
    pub final_cost: Option<f64>,
    /// The estimate `create_training_job` computed and snapshotted, with its inputs.
    #[serde(default)]
    pub cost_estimate: Option<CostEstimate>,
    pub error_message: Option<String>,
    pub error_stack: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = i64))]
    pub retry_count: i64,
    pub external_job_id: Option<String>,
    pub artifact_id: Option<Uuid>,
    /// Which claim by a worker this is (`training_jobs.attempt`): 0 until a worker first claims
    /// the job, one more on every claim (a reclaimed job trains again from step 1).
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = i64))]
    pub attempt: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TrainingJob {
    /// The attempt whose metrics are the job's current curve. `metrics_points.attempt` starts at
    /// 1 (its default, for writers that do not claim), so a job never claimed reads as attempt 1.
    pub fn metrics_attempt(&self) -> i64 {
        self.attempt.max(FIRST_ATTEMPT)
    }
}

/// `metrics_points.attempt` of a point written without one (the column's default).
pub const FIRST_ATTEMPT: i64 = 1;

fn first_attempt() -> i64 {
    FIRST_ATTEMPT
}

/// A row of `metrics_points`: one logged training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MetricsPoint {
    pub id: Uuid,
    pub job_id: Uuid,
    /// The job's attempt that logged the point (`metrics_points.attempt`): steps restart at 1
    /// with every attempt, so a step is only unique within its attempt.
    #[serde(default = "first_attempt")]
    pub attempt: i64,
    pub timestamp: DateTime<Utc>,
    pub epoch: i64,
    pub step: i64,
    pub training_loss: f64,
    pub validation_loss: Option<f64>,
    pub learning_rate: f64,
    pub gradient_norm: Option<f64>,
    /// Tokens per second.
    pub throughput: Option<f64>,
    /// Percent.
    pub gpu_utilization: Option<f64>,
}

/// `model_artifacts.quality_metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct QualityMetrics {
    pub final_training_loss: f64,
    pub final_validation_loss: f64,
    pub convergence_quality: ConvergenceQuality,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perplexity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_epoch: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_validation_loss: Option<f64>,
}

/// `model_artifacts.training_summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TrainingSummary {
    pub duration_seconds: f64,
    pub total_epochs: i64,
    pub final_learning_rate: f64,
    pub gpu_hours: f64,
    pub total_cost: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avg_throughput: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tokens_processed: Option<u64>,
    /// Where the job trained, as the worker names its backend: `candle` (the worker's own CPU
    /// trainer), `ray` (a Ray cluster, through its Jobs API), `fake-remote`, `scripted`.
    /// Absent in summaries written before the worker recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The attempt that completed (1 unless the job was retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// `model_artifacts.configuration`: a copy of the job's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct JobConfiguration {
    pub preset_id: PresetId,
    pub hyperparameters: HyperparameterConfig,
    pub gpu_config: GpuConfig,
    pub dataset_name: String,
}

/// A row of `model_artifacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ModelArtifact {
    pub id: Uuid,
    pub user_id: Uuid,
    pub job_id: Uuid,
    pub dataset_id: Uuid,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub status: ModelStatus,
    pub deployed_at: Option<DateTime<Utc>>,
    pub quality_metrics: QualityMetrics,
    pub training_summary: TrainingSummary,
    pub configuration: JobConfiguration,
    pub artifacts: ArtifactManifest,
    pub parent_model_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `cost_records.details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CostDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hours: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_cost: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A row of `cost_records`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CostRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub job_id: Option<Uuid>,
    pub cost_type: CostType,
    pub amount: f64,
    pub details: Option<CostDetails>,
    /// First day of the billing period (`date`, `"2026-11-01"`).
    pub billing_period: NaiveDate,
    pub recorded_at: DateTime<Utc>,
}

/// The answer of the `monthly_cost_summary` RPC: the caller's costs for one calendar month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MonthlyCostSummary {
    /// First day of the month.
    pub month: NaiveDate,
    pub currency: String,
    pub total: f64,
    pub by_type: CostsByType,
    /// Largest first.
    pub by_job: Vec<JobCost>,
    /// Largest first.
    pub by_gpu: Vec<GpuCost>,
}

/// `monthly_cost_summary.by_type`: one total per [`CostType`], zero when there were none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CostsByType {
    pub compute: f64,
    pub storage: f64,
    pub data_transfer: f64,
}

/// One entry of `monthly_cost_summary.by_job`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct JobCost {
    pub job_id: Uuid,
    pub amount: f64,
}

/// One entry of `monthly_cost_summary.by_gpu`: the costs of jobs by the GPU type snapshotted on
/// the job, with the GPU-hours their records carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct GpuCost {
    pub gpu_type: Option<String>,
    pub amount: f64,
    pub gpu_hours: f64,
}

/// A row of `notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Notification {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Column `type`.
    #[serde(rename = "type")]
    pub kind: NotificationType,
    pub title: String,
    pub message: String,
    pub priority: NotificationPriority,
    #[serde(default, deserialize_with = "null_as_default")]
    #[cfg_attr(feature = "specta", specta(type = bool))]
    pub read: bool,
    pub action_url: Option<String>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// Arguments of the `create_dataset` RPC (CreateDatasetInput).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CreateDatasetInput {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DatasetFormat>,
    pub file_name: String,
    pub file_size: u64,
    /// The dataset's id, chosen by the client so it knows where the file goes before the row
    /// exists ([`dataset_storage_path`]); the server chooses when `None`. With an id the call is
    /// idempotent for the caller's own dataset still `uploading` with the same file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
}

/// Where `create_dataset` puts the file of dataset `dataset` of `user`:
/// `{user}/{dataset}/{file_name}` in [`DATASETS_BUCKET`](crate::DATASETS_BUCKET). The server's
/// rule (migrations, `create_dataset`), for a client that chooses the id and sends the bytes
/// before the row exists; the row the server returns names the path again, and the uploader
/// refuses to go on if the two differ.
pub fn dataset_storage_path(user: Uuid, dataset: Uuid, file_name: &str) -> String {
    format!("{user}/{dataset}/{file_name}")
}

/// Arguments of the create-training-job call (CreateTrainingJobInput).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct CreateTrainingJobInput {
    pub dataset_id: Uuid,
    pub preset_id: PresetId,
    pub hyperparameters: HyperparameterConfig,
    pub gpu_config: GpuConfig,
}

/// A row of `training_presets`: a named, complete [`HyperparameterConfig`] that
/// `create_training_job` starts from. The server's table is the only list of presets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TrainingPreset {
    pub id: PresetId,
    pub display_name: String,
    pub description: Option<String>,
    pub hyperparameters: HyperparameterConfig,
    pub active: bool,
    pub sort_order: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A row of `gpu_types`: one GPU type of the catalogue, with what the estimator needs to turn
/// tokens into hours and hours into money.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct GpuType {
    /// e.g. `A100-80GB`: what `gpu_config.gpu_type` holds.
    pub id: String,
    pub display_name: String,
    /// Memory of one GPU.
    pub memory_gb: u32,
    /// US dollars for ONE GPU for one hour; a job on n GPUs pays n times this.
    pub price_per_gpu_hour: f64,
    /// Training throughput of one GPU, dataset tokens per second.
    pub tokens_per_second_per_gpu: f64,
    /// Largest `gpu_count` offered for this type.
    pub max_gpus: u32,
    pub active: bool,
    pub sort_order: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl GpuType {
    /// The [`GpuConfig`] `create_training_job` snapshots for `gpu_count` of this GPU.
    pub fn config(&self, gpu_count: u32) -> GpuConfig {
        GpuConfig {
            gpu_type: self.id.clone(),
            num_gpus: gpu_count,
            gpu_memory_gb: f64::from(self.memory_gb) * f64::from(gpu_count),
            cost_per_gpu_hour: self.price_per_gpu_hour,
        }
    }
}

/// Context length (tokens) of well-known base models, for the `exceeds_context` warning when the
/// server's catalogue is not at hand. `None` for a model this table does not know.
pub fn known_context_length(base_model: &str) -> Option<u32> {
    let model = base_model.to_ascii_lowercase();
    let table: &[(&str, u32)] = &[
        ("mistral-7b-v0.1", 8_192),
        ("mistral-7b-instruct-v0.2", 32_768),
        ("mistral-7b-instruct-v0.3", 32_768),
        ("llama-3.1", 131_072),
        ("llama-3.2", 131_072),
        ("meta-llama-3-", 8_192),
        ("llama-2-", 4_096),
        ("qwen2.5", 32_768),
        ("smollm2", 8_192),
        ("byte-llama-tiny", 512),
        ("gemma-2", 8_192),
        ("phi-3-mini-4k", 4_096),
    ];
    table
        .iter()
        .find(|(fragment, _)| model.contains(fragment))
        .map(|&(_, tokens)| tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_attempt_still_parse() {
        let point: MetricsPoint = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "job_id": Uuid::nil(), "timestamp": "2026-11-22T10:00:00+00:00",
            "epoch": 0, "step": 3, "training_loss": 1.5, "validation_loss": null,
            "learning_rate": 0.0002, "gradient_norm": null, "throughput": null,
            "gpu_utilization": null
        }))
        .expect("a point from before the attempt column parses");
        assert_eq!(
            point.attempt, FIRST_ATTEMPT,
            "it reads as the column's default, the first attempt"
        );
    }
}
