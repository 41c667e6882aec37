//! A fast, deterministic [`TrainerBackend`] for tests and load runs: it "trains" for a fixed
//! number of steps with a falling loss, a validation pass per epoch, and writes small adapter
//! files whose bytes depend only on the job id, so a retried job produces identical files.
//!
//! Fault injection goes through the job's `base_model` (a real job setting, so it works across
//! processes): `scripted/fail-training` fails at step 2 with a retryable error,
//! `scripted/invalid` is refused as an invalid spec (not retried).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Stage, TrainedAdapter, TrainerBackend, TrainerError, TrainerEvent, TrainingSpec};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ScriptedBackend {
    /// Steps in total; `None` = epochs × ⌈training conversations ÷ batch size⌉, at least 1.
    pub total_steps: Option<u64>,
    /// Time one step takes (simulated work; the cancel flag is checked every 10 ms of it).
    pub step_time: Duration,
}

impl Default for ScriptedBackend {
    fn default() -> Self {
        Self {
            total_steps: None,
            step_time: Duration::from_millis(20),
        }
    }
}

pub const FAIL_TRAINING_MODEL: &str = "scripted/fail-training";
pub const INVALID_MODEL: &str = "scripted/invalid";

fn pause(time: Duration, cancel: &AtomicBool) -> Result<(), TrainerError> {
    let mut left = time;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Err(TrainerError::Cancelled);
        }
        if left.is_zero() {
            return Ok(());
        }
        let slice = left.min(Duration::from_millis(10));
        std::thread::sleep(slice);
        left -= slice;
    }
}

/// A minimal valid safetensors file: one F32 tensor per LoRA matrix of layer 0, q and v.
pub(crate) fn safetensors(seed: u64, rank: usize, hidden: usize) -> Vec<u8> {
    let names = [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
        "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight",
    ];
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut state = seed | 1;
    for (i, name) in names.iter().enumerate() {
        let shape = if i % 2 == 0 {
            [rank, hidden]
        } else {
            [hidden, rank]
        };
        let start = data.len();
        for _ in 0..shape[0] * shape[1] {
            // xorshift64: deterministic weights from the seed.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02;
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            (*name).to_owned(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap_or_default();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

impl TrainerBackend for ScriptedBackend {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn train(
        &self,
        spec: &TrainingSpec,
        events: &mut dyn FnMut(TrainerEvent),
        cancel: &AtomicBool,
    ) -> Result<TrainedAdapter, TrainerError> {
        let hp = &spec.hyperparameters;
        if hp.base_model == INVALID_MODEL {
            return Err(TrainerError::InvalidSpec(format!(
                "base model {INVALID_MODEL} is not supported by this backend"
            )));
        }
        if spec.train.is_empty() {
            return Err(TrainerError::InvalidSpec(
                "the dataset has no training conversations".into(),
            ));
        }
        events(TrainerEvent::Stage(Stage::Initializing));
        pause(self.step_time, cancel)?;
        let epochs = u64::from(hp.num_epochs.max(1));
        let per_epoch_natural = (spec.train.len() as u64).div_ceil(u64::from(hp.batch_size.max(1)));
        let total = self
            .total_steps
            .unwrap_or(epochs * per_epoch_natural)
            .max(1);
        let per_epoch = total.div_ceil(epochs).max(1);
        let tokens_per_step: usize = spec
            .train
            .iter()
            .flatten()
            .map(|t| t.content.len())
            .sum::<usize>()
            .max(1)
            / per_epoch_natural.max(1) as usize;
        events(TrainerEvent::Stage(Stage::Training));
        let mut loss = 2.5;
        let mut validation_loss = None;
        for step in 1..=total {
            pause(self.step_time, cancel)?;
            if hp.base_model == FAIL_TRAINING_MODEL && step == 2 {
                return Err(TrainerError::Failed(
                    "loss became NaN at step 2 (scripted failure)".into(),
                ));
            }
            loss = 0.4 + 2.1 * (-(step as f64) / (total as f64 / 3.0)).exp();
            let epoch = ((step - 1) / per_epoch + 1).min(epochs) as u32;
            events(TrainerEvent::Step {
                epoch,
                step,
                total_steps: total,
                loss,
                learning_rate: hp.learning_rate * (1.0 - (step - 1) as f64 / total as f64),
                tokens_per_second: tokens_per_step as f64 / self.step_time.as_secs_f64().max(1e-3),
            });
            if step.is_multiple_of(per_epoch) || step == total {
                events(TrainerEvent::Stage(Stage::Validating));
                let v = loss * 1.08;
                validation_loss = Some(v);
                events(TrainerEvent::Validation { step, loss: v });
                if step < total {
                    events(TrainerEvent::Stage(Stage::Training));
                }
            }
        }
        events(TrainerEvent::Stage(Stage::Saving));
        let seed = spec.job_id.as_u128() as u64 ^ (spec.job_id.as_u128() >> 64) as u64;
        let rank = (hp.lora_rank as usize).clamp(1, 8);
        let files = [
            ("adapter_model.safetensors", safetensors(seed, rank, 16)),
            (
                "adapter_config.json",
                serde_json::to_vec_pretty(&crate::trainer::candle::adapter_config(
                    &hp.base_model,
                    hp.lora_rank as usize,
                    hp.lora_alpha,
                    hp.lora_dropout,
                ))
                .unwrap_or_default(),
            ),
            (
                "tokenizer.json",
                serde_json::to_vec(
                    &serde_json::json!({"version": "1.0", "model": {"type": "bytes"}}),
                )
                .unwrap_or_default(),
            ),
        ];
        let mut paths = Vec::new();
        for (name, bytes) in files {
            let path = spec.output_dir.join(name);
            std::fs::write(&path, bytes)
                .map_err(|e| TrainerError::Failed(format!("writing {name}: {e}")))?;
            paths.push(path);
        }
        Ok(TrainedAdapter {
            files: paths,
            final_train_loss: loss,
            final_validation_loss: validation_loss,
        })
    }
}
