//! A job as the user is composing it: a preset plus the values they changed, and the GPU choice.
//!
//! The window's form, the CLI's options and a hyperparameters file all produce the same
//! [`JobDraft`]; [`JobDraft::resolve`] turns it into the configuration `create_training_job`
//! receives, against the server's presets, and names every value outside the server's bounds
//! before anything is sent. The server checks again and decides; prices are its alone.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{
    CreateTrainingJobInput, GpuType, HyperparameterConfig, HyperparameterProblem, PresetId,
    TrainingJob, TrainingPreset,
};

fn one() -> u32 {
    1
}

/// Values that replace the preset's, one each. Unknown keys are refused (a misspelt
/// `learning_rte` is an error, not a setting silently ignored).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(deny_unknown_fields)]
pub struct HyperparameterOverrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_epochs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_alpha: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradient_accumulation_steps: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
}

impl HyperparameterOverrides {
    /// Every value of `config`, as overrides (a clone starts from the whole configuration).
    pub fn all_of(config: &HyperparameterConfig) -> Self {
        Self {
            base_model: Some(config.base_model.clone()),
            learning_rate: Some(config.learning_rate),
            batch_size: Some(config.batch_size),
            num_epochs: Some(config.num_epochs),
            lora_rank: Some(config.lora_rank),
            lora_alpha: Some(config.lora_alpha),
            lora_dropout: Some(config.lora_dropout),
            warmup_steps: config.warmup_steps,
            weight_decay: config.weight_decay,
            gradient_accumulation_steps: config.gradient_accumulation_steps,
            max_grad_norm: config.max_grad_norm,
        }
    }

    /// These overrides with `later`'s values on top (a file, then command-line options).
    pub fn then(self, later: Self) -> Self {
        Self {
            base_model: later.base_model.or(self.base_model),
            learning_rate: later.learning_rate.or(self.learning_rate),
            batch_size: later.batch_size.or(self.batch_size),
            num_epochs: later.num_epochs.or(self.num_epochs),
            lora_rank: later.lora_rank.or(self.lora_rank),
            lora_alpha: later.lora_alpha.or(self.lora_alpha),
            lora_dropout: later.lora_dropout.or(self.lora_dropout),
            warmup_steps: later.warmup_steps.or(self.warmup_steps),
            weight_decay: later.weight_decay.or(self.weight_decay),
            gradient_accumulation_steps: later
                .gradient_accumulation_steps
                .or(self.gradient_accumulation_steps),
            max_grad_norm: later.max_grad_norm.or(self.max_grad_norm),
        }
    }

    /// `preset`'s configuration with these values replaced.
    pub fn apply(&self, preset: &HyperparameterConfig) -> HyperparameterConfig {
        let mut hp = preset.clone();
        if let Some(v) = &self.base_model {
            hp.base_model = v.trim().to_owned();
        }
        hp.learning_rate = self.learning_rate.unwrap_or(hp.learning_rate);
        hp.batch_size = self.batch_size.unwrap_or(hp.batch_size);
        hp.num_epochs = self.num_epochs.unwrap_or(hp.num_epochs);
        hp.lora_rank = self.lora_rank.unwrap_or(hp.lora_rank);
        hp.lora_alpha = self.lora_alpha.unwrap_or(hp.lora_alpha);
        hp.lora_dropout = self.lora_dropout.unwrap_or(hp.lora_dropout);
        hp.warmup_steps = self.warmup_steps.or(hp.warmup_steps);
        hp.weight_decay = self.weight_decay.or(hp.weight_decay);
        hp.gradient_accumulation_steps = self
            .gradient_accumulation_steps
            .or(hp.gradient_accumulation_steps);
        hp.max_grad_norm = self.max_grad_norm.or(hp.max_grad_norm);
        hp
    }
}

/// A training job before it is submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(deny_unknown_fields)]
pub struct JobDraft {
    pub dataset_id: Uuid,
    /// The preset the configuration starts from.
    pub preset: PresetId,
    /// A GPU type of the server's catalogue, e.g. `A100-80GB`.
    pub gpu_type: String,
    #[serde(default = "one")]
    pub gpu_count: u32,
    #[serde(default)]
    pub overrides: HyperparameterOverrides,
}

/// Why a draft cannot be submitted as it is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DraftError {
    #[error("the server offers no preset {0}")]
    UnknownPreset(PresetId),
    #[error("the server offers no GPU type {0:?}")]
    UnknownGpu(String),
    #[error("gpu_count must be between 1 and {max} for {gpu}, got {got}")]
    GpuCount { gpu: String, got: u32, max: u32 },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    OutOfBounds(Vec<HyperparameterProblem>),
}

impl JobDraft {
    /// A draft that runs `job` again with the same settings (clone, then edit).
    pub fn clone_of(job: &TrainingJob) -> Self {
        Self {
            dataset_id: job.dataset_id,
            preset: job.preset_id.clone(),
            gpu_type: job.gpu_config.gpu_type.clone(),
            gpu_count: job.gpu_config.num_gpus,
            overrides: HyperparameterOverrides::all_of(&job.hyperparameters),
        }
    }

    /// The configuration this draft submits: the preset's values with the overrides applied.
    pub fn hyperparameters(
        &self,
        presets: &[TrainingPreset],
    ) -> Result<HyperparameterConfig, DraftError> {
        let preset = presets
            .iter()
            .find(|p| p.id == self.preset)
            .ok_or_else(|| DraftError::UnknownPreset(self.preset.clone()))?;
        Ok(self.overrides.apply(&preset.hyperparameters))
    }

    /// What `create_training_job` receives, with every value checked against the server's
    /// bounds; the first error lists every field out of bounds.
    pub fn resolve(
        &self,
        presets: &[TrainingPreset],
        gpus: &[GpuType],
    ) -> Result<CreateTrainingJobInput, DraftError> {
        let hyperparameters = self.hyperparameters(presets)?;
        let gpu = gpus
            .iter()
            .find(|g| g.id == self.gpu_type)
            .ok_or_else(|| DraftError::UnknownGpu(self.gpu_type.clone()))?;
        if !(1..=gpu.max_gpus).contains(&self.gpu_count) {
            return Err(DraftError::GpuCount {
                gpu: gpu.id.clone(),
                got: self.gpu_count,
                max: gpu.max_gpus,
            });
        }
        let problems = hyperparameters.problems();
        if !problems.is_empty() {
            return Err(DraftError::OutOfBounds(problems));
        }
        Ok(CreateTrainingJobInput {
            dataset_id: self.dataset_id,
            preset_id: self.preset.clone(),
            gpu_config: gpu.config(self.gpu_count),
            hyperparameters,
        })
    }
}
