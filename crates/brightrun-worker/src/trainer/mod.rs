//! Trainer backends: what turns a training job into a LoRA adapter.
//!
//! A backend trains in the calling thread (the worker runs it on a blocking thread), reports
//! progress through `events`, and stops soon after `cancel` is set. Backends know nothing about
//! the queue, the database or storage.

pub mod candle;
pub mod scripted;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use brightrun_core::model::HyperparameterConfig;

/// One conversation turn as the trainer sees it (the dataset is validated before training).
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub role: Role,
    pub content: String,
    /// Whether the loss is taken on this turn (assistant turns with weight 1).
    pub trainable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
}

/// Everything a backend needs for one attempt of one job.
#[derive(Debug, Clone)]
pub struct TrainingSpec {
    pub job_id: uuid::Uuid,
    pub attempt: u32,
    pub hyperparameters: HyperparameterConfig,
    pub train: Vec<Vec<Turn>>,
    pub validation: Vec<Vec<Turn>>,
    /// Where the backend writes the adapter files (created, empty).
    pub output_dir: PathBuf,
}

/// Where a run is; the worker maps these to the job's status and progress columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Initializing,
    Training,
    Validating,
    Saving,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TrainerEvent {
    Stage(Stage),
    /// After each optimizer step.
    Step {
        epoch: u32,
        step: u64,
        total_steps: u64,
        loss: f64,
        learning_rate: f64,
        tokens_per_second: f64,
    },
    /// After each validation pass.
    Validation {
        step: u64,
        loss: f64,
    },
}

/// The files of a trained adapter, all inside `TrainingSpec::output_dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedAdapter {
    /// `adapter_model.safetensors`, `adapter_config.json`, tokenizer files, ...
    pub files: Vec<PathBuf>,
    pub final_train_loss: f64,
    pub final_validation_loss: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    #[error("cancelled")]
    Cancelled,
    /// The job's settings cannot be trained (not retried).
    #[error("invalid training settings: {0}")]
    InvalidSpec(String),
    /// Anything else; the worker retries per its policy.
    #[error("training failed: {0}")]
    Failed(String),
}

pub trait TrainerBackend: Send + Sync {
    fn name(&self) -> &'static str;

    /// Trains one attempt. Blocking; called on a blocking thread.
    fn train(
        &self,
        spec: &TrainingSpec,
        events: &mut dyn FnMut(TrainerEvent),
        cancel: &AtomicBool,
    ) -> Result<TrainedAdapter, TrainerError>;
}
