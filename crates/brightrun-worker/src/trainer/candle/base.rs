//! The base model: generated from a seed, briefly pre-trained on a built-in text so it is not
//! random, and cached on disk as a Hugging Face model directory (`config.json` +
//! `model.safetensors`) named by a fingerprint of everything that determines it.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::model::{Model, ModelConfig, init_weights};
use super::optim::{AdamW, Batch, clip_grad_norm, learning_rate};
use super::rng::{Rng, fingerprint};
use super::tokenizer::{Encoded, VOCAB_SIZE};
use super::{CandleError, tokenizer};

/// The built-in pre-training text.
pub const CORPUS: &str = include_str!("corpus.txt");

/// Bumped whenever the model code changes what a given spec produces.
const FORMAT_VERSION: &str = "brightrun-tiny-byte-llama/1";

/// Everything that determines the base model's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseModelSpec {
    pub model: ModelConfig,
    pub seed: u64,
    pub pretrain_steps: usize,
    pub pretrain_batch: usize,
    pub pretrain_seq_len: usize,
    pub pretrain_learning_rate: f64,
}

impl BaseModelSpec {
    /// The default: 2 layers, d = 64, ~0.13 M parameters, 300 pre-training steps of 8 × 64
    /// bytes (~6 s once with one thread; cached).
    pub fn standard() -> Self {
        Self {
            model: ModelConfig {
                vocab_size: VOCAB_SIZE,
                hidden_size: 64,
                intermediate_size: 172,
                num_layers: 2,
                num_heads: 4,
                max_position_embeddings: 512,
                rope_theta: 10_000.0,
                rms_norm_eps: 1e-5,
                num_kv_heads: None,
                tie_word_embeddings: false,
            },
            seed: 20_240_605,
            pretrain_steps: 300,
            pretrain_batch: 8,
            pretrain_seq_len: 64,
            pretrain_learning_rate: 5e-3,
        }
    }

    /// A very small model for fast tests: 2 layers, d = 32.
    pub fn tiny() -> Self {
        let mut spec = Self::standard();
        spec.model.hidden_size = 32;
        spec.model.intermediate_size = 64;
        spec.model.num_layers = 2;
        spec.model.num_heads = 2;
        spec.pretrain_steps = 20;
        spec.pretrain_batch = 4;
        spec.pretrain_seq_len = 64;
        spec
    }

    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_vec(self).unwrap_or_default();
        fingerprint(&[FORMAT_VERSION.as_bytes(), &json, CORPUS.as_bytes()])
    }

    /// The cache directory of this spec under `cache_dir`.
    pub fn dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("tiny-byte-llama-{:016x}", self.fingerprint()))
    }
}

/// What pre-training achieved, kept next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainingReport {
    pub first_loss: f64,
    pub last_loss: f64,
    pub steps: usize,
    pub seconds: f64,
}

pub struct BaseModel {
    pub model: Model,
    pub dir: PathBuf,
    pub fingerprint: u64,
    /// Whether this call pre-trained it (false: loaded from the cache).
    pub pretrained_now: bool,
}

/// Loads the cached base model, or builds, pre-trains and caches it.
pub fn load_or_build(
    spec: &BaseModelSpec,
    cache_dir: &Path,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<BaseModel, CandleError> {
    spec.model.check().map_err(CandleError::Invalid)?;
    if spec.model.vocab_size != VOCAB_SIZE {
        return Err(CandleError::Invalid(format!(
            "the byte-level base model needs vocab_size {VOCAB_SIZE}"
        )));
    }
    let dir = spec.dir(cache_dir);
    let weights_path = dir.join("model.safetensors");
    if weights_path.is_file() {
        match candle_core::safetensors::load(&weights_path, device)
            .and_then(|w| Model::new(spec.model.clone(), &w))
        {
            Ok(model) => {
                return Ok(BaseModel {
                    model,
                    dir,
                    fingerprint: spec.fingerprint(),
                    pretrained_now: false,
                });
            }
            Err(e) => {
                tracing::warn!(path = %weights_path.display(), "cached base model unusable, rebuilding: {e}");
                let _ = fs::remove_dir_all(&dir);
            }
        }
    }

    let (weights, report) = pretrain(spec, device, cancel)?;
    write_model_dir(spec, &weights, &report, cache_dir, &dir)?;
    let model = Model::new(spec.model.clone(), &weights)?;
    Ok(BaseModel {
        model,
        dir,
        fingerprint: spec.fingerprint(),
        pretrained_now: true,
    })
}

fn pretrain(
    spec: &BaseModelSpec,
    device: &Device,
    cancel: &AtomicBool,
) -> Result<(HashMap<String, Tensor>, PretrainingReport), CandleError> {
    let started = std::time::Instant::now();
    let init = init_weights(&spec.model, spec.seed, device)?;
    let mut names: Vec<String> = init.keys().cloned().collect();
    names.sort();
    let vars = names
        .iter()
        .map(|n| Var::from_tensor(&init[n]))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let weights: HashMap<String, Tensor> = names
        .iter()
        .cloned()
        .zip(vars.iter().map(|v| v.as_tensor().clone()))
        .collect();
    let model = Model::new(spec.model.clone(), &weights)?;
    let mut opt = AdamW::new(vars, 0.0)?;

    let corpus = CORPUS.as_bytes();
    let window = spec.pretrain_seq_len.min(corpus.len() - 1) + 1;
    let mut rng = Rng::new(spec.seed ^ 0xc0ffee);
    let (mut first_loss, mut last_loss) = (f64::NAN, f64::NAN);
    let warmup = (spec.pretrain_steps / 10) as u64;
    for step in 0..spec.pretrain_steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(CandleError::Cancelled);
        }
        let examples: Vec<Encoded> = (0..spec.pretrain_batch)
            .map(|_| {
                let start = rng.below(corpus.len() - window + 1);
                let ids = corpus[start..start + window]
                    .iter()
                    .map(|&b| u32::from(b))
                    .collect();
                Encoded {
                    ids,
                    trainable: vec![true; window],
                }
            })
            .collect();
        let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), device)?;
        let loss = (model.nll_sum(&batch, None, None)? / batch.target_count as f64)?;
        let grads = loss.backward()?;
        let mut g = opt
            .vars()
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => v.zeros_like(),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        clip_grad_norm(&mut g, 1.0)?;
        let lr = learning_rate(
            spec.pretrain_learning_rate,
            step as u64,
            warmup,
            spec.pretrain_steps as u64,
        );
        opt.step(&g, lr)?;
        last_loss = f64::from(loss.to_scalar::<f32>()?);
        if step == 0 {
            first_loss = last_loss;
        }
    }
    // Detach from the autograd graph: plain tensors, frozen from here on.
    let frozen = names
        .iter()
        .zip(opt.vars())
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    let report = PretrainingReport {
        first_loss,
        last_loss,
        steps: spec.pretrain_steps,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(?report, "pre-trained the base model");
    Ok((frozen, report))
}

/// Writes the Hugging Face model directory of a built base.
fn write_model_dir(
    spec: &BaseModelSpec,
    weights: &HashMap<String, Tensor>,
    report: &PretrainingReport,
    cache_dir: &Path,
    dir: &Path,
) -> Result<(), CandleError> {
    publish_model_dir(cache_dir, dir, |tmp| {
        write_weights(tmp, weights)?;
        write_json(&tmp.join("config.json"), &spec.model.hf_config_json())?;
        write_json(
            &tmp.join("generation_config.json"),
            &serde_json::json!({
                "bos_token_id": tokenizer::BOS, "eos_token_id": tokenizer::END,
                "pad_token_id": tokenizer::PAD
            }),
        )?;
        write_json(
            &tmp.join("brightrun_base_model.json"),
            &serde_json::json!({
                "format": FORMAT_VERSION, "spec": spec, "pretraining": report
            }),
        )?;
        super::write_tokenizer_files(tmp, spec.model.max_position_embeddings)?;
        Ok(())
    })
}

/// `model.safetensors` in `dir`: the tensors sorted by name, with PyTorch's metadata.
pub fn write_weights(dir: &Path, weights: &HashMap<String, Tensor>) -> Result<(), CandleError> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let mut sorted: Vec<(&String, &Tensor)> = weights.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    safetensors::serialize_to_file(sorted, Some(metadata), &dir.join("model.safetensors"))
        .map_err(|e| CandleError::Failed(format!("writing base weights: {e}")))
}

/// Publishes a model directory atomically: `fill` writes into a fresh temporary directory in
/// `cache_dir`, which is then renamed to `dir`. If another process got there first, its
/// complete copy is kept; a broken one is replaced.
pub fn publish_model_dir(
    cache_dir: &Path,
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), CandleError>,
) -> Result<(), CandleError> {
    let complete =
        |d: &Path| d.join("model.safetensors").is_file() && d.join("config.json").is_file();
    fs::create_dir_all(cache_dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = cache_dir.join(format!(".tmp-{name}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&tmp)?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        if complete(dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(());
        }
        let _ = fs::remove_dir_all(dir);
    }
    if let Err(e) = fs::rename(&tmp, dir) {
        let _ = fs::remove_dir_all(&tmp);
        if !complete(dir) {
            return Err(e.into());
        }
    }
    Ok(())
}

pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), CandleError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| CandleError::Failed(format!("encoding {}: {e}", path.display())))?;
    text.push('\n');
    fs::write(path, text)?;
    Ok(())
}
