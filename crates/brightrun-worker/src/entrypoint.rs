//! The training entrypoint contract: what a program that trains one job on a cluster is given,
//! and what it prints (ARCHITECTURE.md §7, docs/entrypoint.md).
//!
//! Input: one JSON document, [`TrainInput`], in the environment variable [`SPEC_ENV`]. It names
//! the hyperparameters, a signed URL to download the dataset from, and a signed URL to a small
//! JSON document of signed upload URLs ([`Tickets`]), one per file name the adapter may have.
//! The worker rewrites that document before its upload URLs expire, so a run longer than their
//! lifetime still finds fresh ones; the service-role key never leaves the worker.
//!
//! Output: one event per line on stdout, each a JSON object tagged `"brightrun": 1` ([`Event`]):
//! `stage`, `step`, `validation`, `artifact` (after a file is uploaded: name, size, SHA-256),
//! `error` (why the run failed, and whether trying again can help) and, last, `done`. Any other
//! output (logs, warnings, a traceback) is kept but not interpreted.
//!
//! `brightrun-train` (candle) and `entrypoints/ray-peft/train.py` (PyTorch + PEFT on Ray Train)
//! keep it; the Ray backend (`remote::ray`) reads it.

use std::collections::BTreeMap;

use brightrun_core::model::HyperparameterConfig;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::trainer::{Stage, TrainerEvent};

/// The environment variable holding the [`TrainInput`] JSON.
pub const SPEC_ENV: &str = "BRIGHTRUN_TRAIN_SPEC";

/// The contract's version, in [`TrainInput::version`] and in every event line.
pub const VERSION: u32 = 1;

/// The names an adapter's files may have; the worker signs an upload URL for each. A trainer
/// that writes another file leaves it out (and says so on stderr).
pub const ARTIFACT_NAMES: [&str; 13] = [
    "adapter_model.safetensors",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "added_tokens.json",
    "generation_config.json",
    "README.md",
    "brightrun_adapter.json",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainInput {
    pub version: u32,
    pub job_id: Uuid,
    /// The attempt that submitted this run.
    pub attempt: u32,
    pub hyperparameters: HyperparameterConfig,
    pub dataset: DatasetInput,
    pub artifacts: ArtifactsInput,
    /// The job's GPU request (`gpu_type`, `gpu_count`), for trainers that scale out.
    #[serde(default)]
    pub gpu_config: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInput {
    /// A signed GET URL of the JSONL file.
    pub url: String,
    /// `brightrun_lora_v4` or `brightrun_lora_v3`.
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactsInput {
    /// A signed GET URL of the current [`Tickets`]; fetch it right before uploading.
    pub tickets_url: String,
}

/// Signed upload URLs, one per name in [`ARTIFACT_NAMES`]: `PUT` the file's bytes to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tickets {
    /// Unix seconds after which the URLs no longer work (the worker renews them well before).
    pub expires_at: i64,
    pub files: BTreeMap<String, String>,
}

/// One line of the entrypoint's stdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Stage {
        stage: Stage,
    },
    Step {
        epoch: u32,
        step: u64,
        total_steps: u64,
        loss: f64,
        learning_rate: f64,
        tokens_per_second: f64,
    },
    Validation {
        step: u64,
        loss: f64,
    },
    /// A file of the adapter, uploaded through its ticket.
    Artifact {
        name: String,
        size: u64,
        sha256: String,
    },
    /// Why the run failed. `retryable: false` when the settings or the data are at fault.
    Error {
        message: String,
        retryable: bool,
    },
    /// The last line of a successful run.
    Done {
        final_train_loss: f64,
        final_validation_loss: Option<f64>,
    },
}

#[derive(Serialize, Deserialize)]
struct Line<E> {
    brightrun: u32,
    #[serde(flatten)]
    event: E,
}

impl Event {
    /// The line to print (no newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(&Line {
            brightrun: VERSION,
            event: self,
        })
        .unwrap_or_default()
    }

    /// The event on a line of output, if it is one; `None` for any other output.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        if !line.starts_with('{') || !line.contains("\"brightrun\"") {
            return None;
        }
        let parsed: Line<Self> = serde_json::from_str(line).ok()?;
        (parsed.brightrun == VERSION).then_some(parsed.event)
    }

    /// What the worker's progress tracking makes of it (stages, steps, validation).
    pub fn to_trainer_event(&self) -> Option<TrainerEvent> {
        Some(match *self {
            Self::Stage { stage } => TrainerEvent::Stage(stage),
            Self::Step {
                epoch,
                step,
                total_steps,
                loss,
                learning_rate,
                tokens_per_second,
            } => TrainerEvent::Step {
                epoch,
                step,
                total_steps,
                loss,
                learning_rate,
                tokens_per_second,
            },
            Self::Validation { step, loss } => TrainerEvent::Validation { step, loss },
            _ => return None,
        })
    }
}

impl From<TrainerEvent> for Event {
    fn from(event: TrainerEvent) -> Self {
        match event {
            TrainerEvent::Stage(stage) => Self::Stage { stage },
            TrainerEvent::Step {
                epoch,
                step,
                total_steps,
                loss,
                learning_rate,
                tokens_per_second,
            } => Self::Step {
                epoch,
                step,
                total_steps,
                loss,
                learning_rate,
                tokens_per_second,
            },
            TrainerEvent::Validation { step, loss } => Self::Validation { step, loss },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_their_lines_and_other_output_is_not_an_event() {
        let events = [
            Event::Stage {
                stage: Stage::Training,
            },
            Event::Step {
                epoch: 1,
                step: 7,
                total_steps: 30,
                loss: 1.25,
                learning_rate: 2e-4,
                tokens_per_second: 900.0,
            },
            Event::Artifact {
                name: "adapter_config.json".into(),
                size: 812,
                sha256: "ab".repeat(32),
            },
            Event::Error {
                message: "CUDA out of memory".into(),
                retryable: true,
            },
            Event::Done {
                final_train_loss: 0.5,
                final_validation_loss: None,
            },
        ];
        for event in events {
            let line = event.to_line();
            assert!(line.starts_with("{\"brightrun\":1,"), "{line}");
            assert_eq!(Event::parse(&line), Some(event));
        }
        assert_eq!(
            Event::parse(r#"{"brightrun":1,"event":"stage","stage":"saving"}"#),
            Some(Event::Stage {
                stage: Stage::Saving
            })
        );
        for other in [
            "Traceback (most recent call last):",
            r#"{"event":"done","final_train_loss":1}"#,
            r#"{"brightrun":2,"event":"stage","stage":"saving"}"#,
            r#"{"brightrun":1,"event":"launch_rockets"}"#,
            "",
        ] {
            assert_eq!(Event::parse(other), None, "{other:?}");
        }
    }
}
