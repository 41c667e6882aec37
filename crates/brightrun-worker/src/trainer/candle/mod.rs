//! The default trainer backend: real LoRA training on the CPU with candle.
//!
//! The base model is a tiny byte-level Llama (RMSNorm, rotary, SwiGLU; see [`model`]) generated
//! from a seed and briefly pre-trained on a built-in text, cached on disk after first use (see
//! [`base`]); nothing is downloaded. A job trains LoRA pairs on the q and v projections as PEFT
//! defines them (A kaiming-uniform, B zeros, scale alpha/r, dropout on the LoRA input), with
//! AdamW over the LoRA parameters only, linear warmup + cosine decay, global-norm clipping and
//! gradient accumulation, and writes a PEFT adapter directory: `adapter_model.safetensors`
//! (`base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.weight`),
//! `adapter_config.json` and the tokenizer files.
//!
//! Conversations use the chat template `<|begin|><|role|>content<|end|>…`; the loss is taken on
//! the bytes (and closing `<|end|>`) of trainable assistant turns only. Sequences are truncated
//! to [`CandleOptions::max_seq_len`] ids. Events: `Stage(Initializing)`, `Stage(Training)`,
//! one `Step` per optimizer step (`epoch` and `step` are 1-based), a `Validation` after every
//! epoch but the last, then `Stage(Validating)` + a final `Validation` (only when there is
//! validation data), `Stage(Saving)`. `cancel` is checked before every micro-batch (and every
//! pre-training step), so a cancelled run returns within one step.
//!
//! Training runs in a rayon pool of [`CandleOptions::threads`] threads (default 1: for models
//! this small, gemm's threading overhead costs more than it gains). candle's element-wise ops
//! use a separate spinning barrier pool sized from `CANDLE_NUM_THREADS` / `RAYON_NUM_THREADS`
//! at first use; run the process with `CANDLE_NUM_THREADS=1` (3–4× faster on a loaded 2-core
//! machine). It cannot be set from here without `unsafe` (`std::env::set_var`).

pub mod base;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod rng;
pub mod tokenizer;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use self::base::{BaseModelSpec, write_json};
use self::model::{Lora, Model};
use self::optim::{AdamW, Batch, clip_grad_norm, learning_rate};
use self::rng::Rng;
use self::tokenizer::{Encoded, encode_conversation};
use super::{
    Role, Stage, TrainedAdapter, TrainerBackend, TrainerError, TrainerEvent, TrainingSpec, Turn,
};

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// Our own notes on the run (base model, fingerprint, a probe for external checks).
pub const RUN_INFO: &str = "brightrun_adapter.json";
pub const TOKENIZER_FILES: [&str; 3] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

/// How the backend trains; [`CandleOptions::default`] is what `--backend candle` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct CandleOptions {
    pub base: BaseModelSpec,
    /// Longest sequence (in ids, template included) trained on; longer ones are cut.
    pub max_seq_len: usize,
    /// Rayon threads for the run (0: the global pool).
    pub threads: usize,
    /// Seed of LoRA init, dropout masks and shuffling.
    pub seed: u64,
    /// Train on this GGUF llama model (e.g. SmolLM2-135M-Instruct) instead of the built-in
    /// byte-level base; see [`gguf`].
    pub gguf: Option<PathBuf>,
    /// Recompute each layer in the backward pass instead of keeping every intermediate
    /// ([`Model::nll_sum_and_grads_checkpointed`]); same numbers, less memory, ~⅓ more compute.
    /// `None`: on for GGUF bases (deep), off for the built-in one.
    pub checkpoint_activations: Option<bool>,
}

impl Default for CandleOptions {
    fn default() -> Self {
        Self {
            base: BaseModelSpec::standard(),
            max_seq_len: 384,
            threads: 1,
            seed: 42,
            gguf: None,
            checkpoint_activations: None,
        }
    }
}

pub struct CandleBackend {
    cache_dir: PathBuf,
    options: CandleOptions,
    /// The base model, loaded on first use and kept for every later job (a GGUF base is a
    /// 98 MB read, a hash and 540 MB of weights each time otherwise).
    base: std::sync::Mutex<Option<Arc<Base>>>,
}

impl CandleBackend {
    /// The default backend; base models are cached under `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self::with_options(cache_dir, CandleOptions::default())
    }

    pub fn with_options(cache_dir: PathBuf, options: CandleOptions) -> Self {
        Self {
            cache_dir,
            options,
            base: std::sync::Mutex::new(None),
        }
    }

    pub fn options(&self) -> &CandleOptions {
        &self.options
    }

    /// Loads (or builds and caches) the base model without training anything; returns its
    /// Hugging Face directory.
    pub fn prepare_base_model(&self, cancel: &AtomicBool) -> Result<PathBuf, TrainerError> {
        Ok(self.load_base(&Device::Cpu, cancel)?.dir().to_owned())
    }

    /// The base model: loaded (or built) once, then shared. Concurrent first uses wait for
    /// one load instead of each doing it.
    fn load_base(&self, device: &Device, cancel: &AtomicBool) -> Result<Arc<Base>, CandleError> {
        let mut slot = self.base.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(base) = slot.as_ref() {
            return Ok(base.clone());
        }
        let base = Arc::new(match &self.options.gguf {
            Some(path) => Base::Gguf(Box::new(gguf::load(path, &self.cache_dir, device)?)),
            None => Base::Builtin(base::load_or_build(
                &self.options.base,
                &self.cache_dir,
                device,
                cancel,
            )?),
        });
        *slot = Some(base.clone());
        Ok(base)
    }

    /// Encodes conversations as the trainer would, with the configured base model's template
    /// (for tools that train the same data elsewhere).
    pub fn encode_all(
        &self,
        conversations: &[Vec<Turn>],
        cancel: &AtomicBool,
    ) -> Result<Vec<Encoded>, TrainerError> {
        let base = self.load_base(&Device::Cpu, cancel)?;
        let max_len = self.max_len(&base);
        Ok(conversations
            .iter()
            .map(|c| base.encode(c, max_len))
            .collect::<Result<_, _>>()?)
    }

    fn max_len(&self, base: &Base) -> usize {
        self.options
            .max_seq_len
            .min(base.model().config.max_position_embeddings)
            .max(2)
    }
}

/// The base model of a run and its chat template.
enum Base {
    Builtin(base::BaseModel),
    Gguf(Box<gguf::GgufBase>),
}

impl Base {
    fn model(&self) -> &Model {
        match self {
            Self::Builtin(b) => &b.model,
            Self::Gguf(b) => &b.model,
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Self::Builtin(b) => &b.dir,
            Self::Gguf(b) => &b.dir,
        }
    }

    fn fingerprint(&self) -> u64 {
        match self {
            Self::Builtin(b) => b.fingerprint,
            Self::Gguf(b) => b.fingerprint,
        }
    }

    fn encode(&self, turns: &[Turn], max_len: usize) -> Result<Encoded, CandleError> {
        match self {
            Self::Builtin(_) => Ok(encode_conversation(turns, max_len)),
            Self::Gguf(b) => b.chat.encode(turns, max_len),
        }
    }

    /// What `adapter_config.json` names as the base: the Hugging Face id when known, else the
    /// cached directory (which `transformers` loads as well).
    fn adapter_base(&self) -> String {
        match self {
            Self::Gguf(b) if b.hf_id.is_some() => b.hf_id.clone().unwrap_or_default(),
            _ => self.dir().to_string_lossy().into_owned(),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Builtin(_) => "brightrun tiny byte-level llama".into(),
            Self::Gguf(b) => b.name.clone(),
        }
    }

    fn write_tokenizer_files(
        &self,
        dir: &Path,
        max_len: usize,
    ) -> Result<Vec<PathBuf>, CandleError> {
        match self {
            Self::Builtin(_) => write_tokenizer_files(dir, max_len),
            Self::Gguf(b) => b.chat.write_files(dir, max_len),
        }
    }
}

/// Internal error; becomes a [`TrainerError`].
#[derive(Debug, thiserror::Error)]
pub enum CandleError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<CandleError> for TrainerError {
    fn from(e: CandleError) -> Self {
        match e {
            CandleError::Cancelled => TrainerError::Cancelled,
            CandleError::Invalid(m) => TrainerError::InvalidSpec(m),
            other => TrainerError::Failed(other.to_string()),
        }
    }
}

impl TrainerBackend for CandleBackend {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn train(
        &self,
        spec: &TrainingSpec,
        events: &mut dyn FnMut(TrainerEvent),
        cancel: &AtomicBool,
    ) -> Result<TrainedAdapter, TrainerError> {
        if self.options.threads == 0 {
            return Ok(self.run(spec, &mut |e| events(e), cancel)?);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(self.options.threads)
            .thread_name(|i| format!("candle-trainer-{i}"))
            .build()
            .map_err(|e| TrainerError::Failed(format!("thread pool: {e}")))?;
        // The training runs on the pool; events come back to this thread, which owns `events`,
        // hand to hand: the pool waits until each event is taken, so it cannot run steps ahead
        // of a caller that cancels from its event handler ("within one step" holds here too).
        let (tx, rx) = mpsc::sync_channel(0);
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                pool.install(|| {
                    self.run(
                        spec,
                        &mut |e| {
                            let _ = tx.send(e);
                        },
                        cancel,
                    )
                })
            });
            for event in rx {
                events(event);
            }
            match worker.join() {
                Ok(result) => Ok(result?),
                Err(_) => Err(TrainerError::Failed("the trainer thread panicked".into())),
            }
        })
    }
}

struct Step {
    micro_batches: Vec<Vec<usize>>,
}

impl CandleBackend {
    fn run(
        &self,
        spec: &TrainingSpec,
        events: &mut dyn FnMut(TrainerEvent),
        cancel: &AtomicBool,
    ) -> Result<TrainedAdapter, CandleError> {
        let hp = &spec.hyperparameters;
        let problems = hp.problems();
        if !problems.is_empty() {
            let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(CandleError::Invalid(text.join("; ")));
        }
        if hp.lora_dropout >= 1.0 {
            return Err(CandleError::Invalid("lora_dropout must be below 1".into()));
        }
        let opts = &self.options;
        let device = Device::Cpu;
        events(TrainerEvent::Stage(Stage::Initializing));

        let base = self.load_base(&device, cancel)?;
        let model = base.model();
        let max_len = self.max_len(&base);
        let checkpoint = opts
            .checkpoint_activations
            .unwrap_or(matches!(*base, Base::Gguf(_)));
        let encode = |set: &[Vec<Turn>]| -> Result<Vec<Encoded>, CandleError> {
            let mut out = Vec::with_capacity(set.len());
            for c in set {
                let e = base.encode(c, max_len)?;
                if e.target_count() > 0 {
                    out.push(e);
                }
            }
            Ok(out)
        };
        let train = encode(&spec.train)?;
        let validation = encode(&spec.validation)?;
        if train.is_empty() {
            return Err(CandleError::Invalid(format!(
                "no training conversation has a trainable assistant token within the first {max_len} tokens"
            )));
        }

        let rank = hp.lora_rank as usize;
        let lora = Lora::new(
            &model.config,
            rank,
            f64::from(hp.lora_alpha),
            hp.lora_dropout as f32,
            opts.seed,
            &device,
        )?;
        let mut opt = AdamW::new(lora.vars(), hp.weight_decay.unwrap_or(0.0))?;
        let max_grad_norm = hp.max_grad_norm.unwrap_or(1.0);

        let batch_size = hp.batch_size as usize;
        let micro_per_epoch = train.len().div_ceil(batch_size);
        let accumulation =
            (hp.gradient_accumulation_steps.unwrap_or(1) as usize).clamp(1, micro_per_epoch);
        let steps_per_epoch = micro_per_epoch.div_ceil(accumulation) as u64;
        let total_steps = steps_per_epoch * u64::from(hp.num_epochs);
        let warmup = u64::from(hp.warmup_steps.unwrap_or(0));

        events(TrainerEvent::Stage(Stage::Training));
        let mut rng = Rng::new(opts.seed ^ 0xd1ce);
        let mut global_step = 0u64;
        let (mut epoch_loss_sum, mut epoch_targets) = (0f64, 0usize);
        let mut final_validation = None;
        for epoch in 1..=hp.num_epochs {
            let mut order: Vec<usize> = (0..train.len()).collect();
            rng.shuffle(&mut order);
            let micro: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
            let steps: Vec<Step> = micro
                .chunks(accumulation)
                .map(|m| Step {
                    micro_batches: m.to_vec(),
                })
                .collect();
            (epoch_loss_sum, epoch_targets) = (0.0, 0);
            for step in steps {
                let started = Instant::now();
                let batches = step
                    .micro_batches
                    .iter()
                    .map(|idx| {
                        Batch::new(&idx.iter().map(|&i| &train[i]).collect::<Vec<_>>(), &device)
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let step_targets: usize = batches.iter().map(|b| b.target_count).sum();
                let step_tokens: usize = batches.iter().map(|b| b.token_count).sum();
                let mut grads: Option<Vec<Tensor>> = None;
                let mut loss_sum = 0f64;
                for batch in &batches {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(CandleError::Cancelled);
                    }
                    let micro_grads = if checkpoint {
                        let (loss, grads) = model.nll_sum_and_grads_checkpointed(
                            batch,
                            &lora,
                            &mut rng,
                            step_targets as f64,
                        )?;
                        loss_sum += loss;
                        grads
                    } else {
                        let nll = model.nll_sum(batch, Some(&lora), Some(&mut rng))?;
                        loss_sum += f64::from(nll.to_scalar::<f32>()?);
                        let store = (nll / step_targets as f64)?.backward()?;
                        opt.vars()
                            .iter()
                            .map(|v| match store.get(v.as_tensor()) {
                                Some(g) => Ok(g.clone()),
                                None => v.zeros_like(),
                            })
                            .collect::<candle_core::Result<Vec<_>>>()?
                    };
                    grads = Some(match grads {
                        None => micro_grads,
                        Some(acc) => acc
                            .iter()
                            .zip(&micro_grads)
                            .map(|(a, g)| a + g)
                            .collect::<candle_core::Result<Vec<_>>>()?,
                    });
                }
                let mut grads = grads.unwrap_or_default();
                clip_grad_norm(&mut grads, max_grad_norm)?;
                let lr = learning_rate(hp.learning_rate, global_step, warmup, total_steps);
                opt.step(&grads, lr)?;
                global_step += 1;
                epoch_loss_sum += loss_sum;
                epoch_targets += step_targets;
                let seconds = started.elapsed().as_secs_f64().max(1e-9);
                events(TrainerEvent::Step {
                    epoch,
                    step: global_step,
                    total_steps,
                    loss: loss_sum / step_targets as f64,
                    learning_rate: lr,
                    tokens_per_second: step_tokens as f64 / seconds,
                });
            }
            if epoch < hp.num_epochs && !validation.is_empty() {
                let loss = evaluate(model, Some(&lora), &validation, batch_size, &device, cancel)?;
                events(TrainerEvent::Validation {
                    step: global_step,
                    loss,
                });
            }
        }
        if !validation.is_empty() {
            events(TrainerEvent::Stage(Stage::Validating));
            let loss = evaluate(model, Some(&lora), &validation, batch_size, &device, cancel)?;
            events(TrainerEvent::Validation {
                step: global_step,
                loss,
            });
            final_validation = Some(loss);
        }

        events(TrainerEvent::Stage(Stage::Saving));
        let files = write_adapter(
            spec,
            &base,
            &lora,
            hp.lora_dropout,
            max_len,
            &device,
            cancel,
        )?;
        Ok(TrainedAdapter {
            files,
            final_train_loss: epoch_loss_sum / epoch_targets.max(1) as f64,
            final_validation_loss: final_validation,
        })
    }
}

/// Mean loss per trainable target over `set`, without dropout.
pub fn evaluate(
    model: &Model,
    lora: Option<&Lora>,
    set: &[Encoded],
    batch_size: usize,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<f64, CandleError> {
    let (mut sum, mut count) = (0f64, 0usize);
    for chunk in set.chunks(batch_size.max(1)) {
        if cancel.load(Ordering::Relaxed) {
            return Err(CandleError::Cancelled);
        }
        let batch = Batch::new(&chunk.iter().collect::<Vec<_>>(), device)?;
        sum += f64::from(model.nll_sum(&batch, lora, None)?.to_scalar::<f32>()?);
        count += batch.target_count;
    }
    Ok(sum / count.max(1) as f64)
}

/// A fixed conversation on which `brightrun_adapter.json` records the base and adapted losses, so
/// an external loader (e.g. `peft`) can check it computes the same numbers.
pub fn probe_conversation() -> Vec<Turn> {
    vec![
        Turn {
            role: Role::User,
            content: "How do I reset my password?".into(),
            trainable: false,
        },
        Turn {
            role: Role::Assistant,
            content: "Open Settings, choose Account, then click Reset password. We will email you a link.".into(),
            trainable: true,
        },
    ]
}

pub fn write_tokenizer_files(
    dir: &Path,
    model_max_length: usize,
) -> Result<Vec<PathBuf>, CandleError> {
    let contents = [
        tokenizer::tokenizer_json(),
        tokenizer::tokenizer_config_json(model_max_length),
        tokenizer::special_tokens_map_json(),
    ];
    let mut files = Vec::new();
    for (name, value) in TOKENIZER_FILES.iter().zip(contents) {
        let path = dir.join(name);
        write_json(&path, &value)?;
        files.push(path);
    }
    Ok(files)
}

/// PEFT's `LoraConfig` for this run (every key PEFT writes for a plain LoRA).
pub fn adapter_config(base_model: &str, rank: usize, alpha: u32, dropout: f64) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "revision": null,
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "auto_mapping": null,
    })
}

fn write_adapter(
    spec: &TrainingSpec,
    base: &Base,
    lora: &Lora,
    dropout: f64,
    max_len: usize,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<Vec<PathBuf>, CandleError> {
    let dir = &spec.output_dir;
    fs::create_dir_all(dir)?;
    let hp = &spec.hyperparameters;
    let mut files = Vec::new();

    let weights = dir.join(ADAPTER_WEIGHTS);
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(lora.named_tensors(), Some(metadata), &weights)
        .map_err(|e| CandleError::Failed(format!("writing {ADAPTER_WEIGHTS}: {e}")))?;
    files.push(weights);

    let base_dir = base.dir().to_string_lossy().into_owned();
    let config_path = dir.join(ADAPTER_CONFIG);
    let config = adapter_config(
        &base.adapter_base(),
        hp.lora_rank as usize,
        hp.lora_alpha,
        dropout,
    );
    write_json(&config_path, &config)?;
    files.push(config_path);
    files.extend(base.write_tokenizer_files(dir, max_len)?);

    let probe = [base.encode(&probe_conversation(), max_len)?];
    let base_loss = evaluate(base.model(), None, &probe, 1, device, cancel)?;
    let adapted_loss = evaluate(base.model(), Some(lora), &probe, 1, device, cancel)?;
    let info_path = dir.join(RUN_INFO);
    write_json(
        &info_path,
        &json!({
            "backend": "candle",
            "job_id": spec.job_id,
            "attempt": spec.attempt,
            "requested_base_model": hp.base_model,
            "base_model": base.name(),
            "base_model_dir": base_dir,
            "base_model_fingerprint": format!("{:016x}", base.fingerprint()),
            "max_seq_len": max_len,
            "probe": {
                "messages": probe_conversation().iter().map(|t| json!({
                    "role": match t.role { Role::System => "system", Role::User => "user", Role::Assistant => "assistant" },
                    "content": t.content,
                })).collect::<Vec<_>>(),
                "ids": probe[0].ids,
                "trainable": probe[0].trainable,
                "base_loss": base_loss,
                "adapted_loss": adapted_loss,
            },
        }),
    )?;
    files.push(info_path);
    Ok(files)
}
