//! A scripted fake provider for tests (a GPU provider we cannot run here).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brightrun_core::model::HyperparameterConfig;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{BoxFut, Poll, RemoteError, RemoteProvider, RemoteState, Submission};
use crate::trainer::{Stage, TrainerEvent};

/// A scripted provider whose state lives in files under `dir`, so several worker processes share
/// it and a worker restarted after a crash finds its remote job again. A remote job advances one
/// step every `step_time` of wall time after submission; `base_model = scripted/fail-training`
/// fails it at step 2. Every submission appends the job id to `dir/submissions.log`.
#[derive(Debug, Clone)]
pub struct FakeProvider {
    pub dir: PathBuf,
    pub total_steps: u64,
    pub step_time: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FakeJob {
    external_id: String,
    job_id: Uuid,
    submitted_at_ms: u64,
    total_steps: u64,
    step_ms: u64,
    fail: bool,
    cancelled: bool,
    hyperparameters: HyperparameterConfig,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io(e: std::io::Error) -> RemoteError {
    RemoteError::Transient(e.to_string())
}

impl FakeProvider {
    fn file(&self, external_id: &str) -> PathBuf {
        let safe: String = external_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    async fn load(&self, external_id: &str) -> Result<FakeJob, RemoteError> {
        let bytes = tokio::fs::read(self.file(external_id))
            .await
            .map_err(|_| RemoteError::UnknownJob(external_id.to_owned()))?;
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Transient(e.to_string()))
    }

    async fn store(&self, job: &FakeJob) -> Result<(), RemoteError> {
        let tmp = self.dir.join(format!(
            "{}.tmp-{}",
            job.external_id,
            Uuid::new_v4().simple()
        ));
        tokio::fs::write(&tmp, serde_json::to_vec(job).unwrap_or_default())
            .await
            .map_err(io)?;
        tokio::fs::rename(&tmp, self.file(&job.external_id))
            .await
            .map_err(io)
    }

    fn loss(step: u64, total: u64) -> f64 {
        0.4 + 2.1 * (-(step as f64) / (total as f64 / 3.0)).exp()
    }
}

impl RemoteProvider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake-remote"
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(100)
    }

    fn submit<'a>(&'a self, s: &'a Submission) -> BoxFut<'a, String> {
        Box::pin(async move {
            tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
            let external_id = format!("fake-{}", s.job_id.simple());
            if self.load(&external_id).await.is_ok() {
                return Ok(external_id);
            }
            if s.hyperparameters.base_model == crate::trainer::scripted::INVALID_MODEL {
                return Err(RemoteError::Rejected(format!(
                    "base model {} is not offered",
                    s.hyperparameters.base_model
                )));
            }
            let job = FakeJob {
                external_id: external_id.clone(),
                job_id: s.job_id,
                submitted_at_ms: now_ms(),
                total_steps: self.total_steps.max(1),
                step_ms: self.step_time.as_millis().max(1) as u64,
                fail: s.hyperparameters.base_model == crate::trainer::scripted::FAIL_TRAINING_MODEL,
                cancelled: false,
                hyperparameters: s.hyperparameters.clone(),
            };
            self.store(&job).await?;
            use tokio::io::AsyncWriteExt as _;
            let mut log = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("submissions.log"))
                .await
                .map_err(io)?;
            log.write_all(format!("{}\n", s.job_id).as_bytes())
                .await
                .map_err(io)?;
            Ok(external_id)
        })
    }

    fn poll<'a>(&'a self, external_id: &'a str, cursor: u64) -> BoxFut<'a, Poll> {
        Box::pin(async move {
            let job = self.load(external_id).await?;
            if job.cancelled {
                return Ok(Poll {
                    events: vec![],
                    cursor,
                    state: RemoteState::Cancelled,
                    next_poll: None,
                });
            }
            let elapsed = now_ms().saturating_sub(job.submitted_at_ms);
            let mut done = (elapsed / job.step_ms).min(job.total_steps);
            if job.fail {
                done = done.min(1);
            }
            let mut events = Vec::new();
            if cursor == 0 && done > 0 {
                events.push(TrainerEvent::Stage(Stage::Training));
            }
            for step in cursor + 1..=done {
                let loss = Self::loss(step, job.total_steps);
                events.push(TrainerEvent::Step {
                    epoch: 1,
                    step,
                    total_steps: job.total_steps,
                    loss,
                    learning_rate: job.hyperparameters.learning_rate,
                    tokens_per_second: 3200.0,
                });
                if step == job.total_steps {
                    events.push(TrainerEvent::Validation {
                        step,
                        loss: loss * 1.08,
                    });
                }
            }
            let state = if job.fail && elapsed / job.step_ms >= 2 {
                RemoteState::Failed {
                    message: "CUDA out of memory at step 2 (scripted failure)".into(),
                    retryable: true,
                    detail: None,
                }
            } else if done == job.total_steps {
                let loss = Self::loss(done, job.total_steps);
                RemoteState::Succeeded {
                    final_train_loss: loss,
                    final_validation_loss: Some(loss * 1.08),
                }
            } else {
                RemoteState::Running
            };
            Ok(Poll {
                events,
                cursor: done.max(cursor),
                state,
                next_poll: None,
            })
        })
    }

    fn cancel<'a>(&'a self, external_id: &'a str) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let mut job = self.load(external_id).await?;
            job.cancelled = true;
            self.store(&job).await
        })
    }

    fn fetch_artifacts<'a>(
        &'a self,
        external_id: &'a str,
        dir: &'a Path,
    ) -> BoxFut<'a, Vec<PathBuf>> {
        Box::pin(async move {
            let job = self.load(external_id).await?;
            let seed = job.job_id.as_u128() as u64;
            let files = [
                (
                    "adapter_model.safetensors",
                    crate::trainer::scripted::safetensors(seed, 4, 16),
                ),
                (
                    "adapter_config.json",
                    serde_json::to_vec_pretty(&crate::trainer::candle::adapter_config(
                        &job.hyperparameters.base_model,
                        job.hyperparameters.lora_rank as usize,
                        job.hyperparameters.lora_alpha,
                        job.hyperparameters.lora_dropout,
                    ))
                    .unwrap_or_default(),
                ),
                ("tokenizer.json", b"{\"version\":\"1.0\"}".to_vec()),
            ];
            let mut out = Vec::new();
            for (name, bytes) in files {
                let path = dir.join(name);
                tokio::fs::write(&path, bytes).await.map_err(io)?;
                out.push(path);
            }
            Ok(out)
        })
    }
}
