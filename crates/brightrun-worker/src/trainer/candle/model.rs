//! A Llama (RMSNorm, rotary embeddings as Hugging Face's `rotate_half`, SwiGLU MLP, grouped-query
//! attention, LM head tied to the embeddings or not) whose tensors carry Hugging Face
//! `LlamaForCausalLM` names and layouts, so the same weights load in `transformers` and the LoRA
//! adapter in `peft`. Only ops with a backward pass are used (the fused ops of
//! [`super::kernels`], a hand-written rotary). The built-in base is a tiny byte-level instance;
//! [`super::gguf`] loads a real one (SmolLM2).

use std::collections::HashMap;

use candle_core::{D, DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::kernels::{causal_mask, masked_softmax, nll_rows, rms_norm, swiglu};
use super::optim::Batch;
use super::rng::Rng;
use super::tokenizer::{BOS, END, PAD};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    /// Key/value heads (grouped-query attention); `None`: one per query head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_kv_heads: Option<usize>,
    /// The LM head is the embedding matrix (no `lm_head.weight` of its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    pub fn kv_heads(&self) -> usize {
        self.num_kv_heads.unwrap_or(self.num_heads)
    }

    /// Output width of the k and v projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    pub fn check(&self) -> std::result::Result<(), String> {
        if self.vocab_size == 0 {
            return Err("vocab_size must be positive".into());
        }
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err("hidden_size must be a multiple of num_heads".into());
        }
        if self.kv_heads() == 0 || !self.num_heads.is_multiple_of(self.kv_heads()) {
            return Err("num_heads must be a multiple of num_kv_heads".into());
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err("head_dim must be even (rotary embeddings)".into());
        }
        if self.num_layers == 0 || self.intermediate_size == 0 {
            return Err("num_layers and intermediate_size must be positive".into());
        }
        Ok(())
    }

    /// Hugging Face `config.json` of the equivalent `LlamaForCausalLM`.
    pub fn hf_config_json(&self) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.kv_heads(),
            "head_dim": self.head_dim(),
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": 0.02,
            "bos_token_id": BOS,
            "eos_token_id": END,
            "pad_token_id": PAD,
            "torch_dtype": "float32",
            "use_cache": true
        })
    }

    /// Every base tensor: Hugging Face name and shape.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.kv_dim();
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}");
            for (proj, rows) in [("q_proj", h), ("k_proj", kv), ("v_proj", kv), ("o_proj", h)] {
                out.push((format!("{p}.self_attn.{proj}.weight"), vec![rows, h]));
            }
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        out
    }
}

/// Deterministic initial weights: N(0, 0.02) for matrices (output projections scaled by
/// 1/sqrt(2·layers), as GPT-2 does), ones for norms.
pub fn init_weights(
    config: &ModelConfig,
    seed: u64,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = Rng::new(seed);
    let mut out = HashMap::new();
    let residual_std = 0.02 / (2.0 * config.num_layers as f32).sqrt();
    for (name, shape) in config.tensor_shapes() {
        let n: usize = shape.iter().product();
        let data = if shape.len() == 1 {
            vec![1.0f32; n]
        } else if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
            rng.normal_vec(n, residual_std)
        } else {
            rng.normal_vec(n, 0.02)
        };
        out.insert(name, Tensor::from_vec(data, shape, device)?);
    }
    Ok(out)
}

/// A LoRA pair as PEFT defines it: `y = x Wᵀ + scale · dropout(x) Aᵀ Bᵀ`, A `[r, in]`, B `[out, r]`.
pub struct LoraPair {
    pub a: Var,
    pub b: Var,
}

pub struct LoraLayer {
    pub q: LoraPair,
    pub v: LoraPair,
}

pub struct Lora {
    pub layers: Vec<LoraLayer>,
    pub scale: f64,
    pub dropout: f32,
    /// Pre-drawn dropout keep-mask values (0 or 1/(1−p)); each use takes a window at a seeded
    /// random offset, so masks are deterministic without drawing every element every step.
    mask_pool: Option<Tensor>,
}

const MASK_POOL: usize = 1 << 20;

impl Lora {
    /// A: kaiming-uniform (PEFT's default, bound 1/sqrt(in)); B: zeros, so training starts at
    /// the base model.
    pub fn new(
        config: &ModelConfig,
        rank: usize,
        alpha: f64,
        dropout: f32,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let h = config.hidden_size;
        let bound = 1.0 / (h as f32).sqrt();
        let pair = |rng: &mut Rng, out: usize| -> Result<LoraPair> {
            let a = Tensor::from_vec(rng.uniform_vec(rank * h, bound), (rank, h), device)?;
            Ok(LoraPair {
                a: Var::from_tensor(&a)?,
                b: Var::zeros((out, rank), DType::F32, device)?,
            })
        };
        let layers = (0..config.num_layers)
            .map(|_| {
                Ok(LoraLayer {
                    q: pair(&mut rng, h)?,
                    v: pair(&mut rng, config.kv_dim())?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mask_pool = if dropout > 0.0 {
            let keep = 1.0 / (1.0 - dropout);
            let values: Vec<f32> = (0..MASK_POOL)
                .map(|_| if rng.next_f32() < dropout { 0.0 } else { keep })
                .collect();
            Some(Tensor::from_vec(values, MASK_POOL, device)?)
        } else {
            None
        };
        Ok(Self {
            layers,
            scale: alpha / rank as f64,
            dropout,
            mask_pool,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.layers
            .iter()
            .flat_map(|l| [&l.q.a, &l.q.b, &l.v.a, &l.v.b])
            .cloned()
            .collect()
    }

    /// PEFT names: `base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.weight`.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (proj, pair) in [("q_proj", &layer.q), ("v_proj", &layer.v)] {
                let p = format!("base_model.model.model.layers.{i}.self_attn.{proj}");
                out.push((format!("{p}.lora_A.weight"), pair.a.as_tensor().clone()));
                out.push((format!("{p}.lora_B.weight"), pair.b.as_tensor().clone()));
            }
        }
        out
    }
}

struct Layer {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
    input_norm: Tensor,
    post_norm: Tensor,
}

/// The base model: weights are plain tensors (frozen) or `Var` tensors (pre-training).
pub struct Model {
    pub config: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Tensor,
}

/// `x [n, in]` times `w [out, in]` transposed.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.matmul(&w.t()?)
}

impl Model {
    pub fn new(config: ModelConfig, weights: &HashMap<String, Tensor>) -> Result<Self> {
        for (name, shape) in config.tensor_shapes() {
            let t = weights
                .get(&name)
                .ok_or_else(|| candle_core::Error::Msg(format!("base model lacks {name}")))?;
            if t.dims() != shape.as_slice() {
                candle_core::bail!(
                    "base tensor {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                );
            }
        }
        let get = |name: &str| weights[name].clone();
        let layers = (0..config.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Layer {
                    q: get(&format!("{p}.self_attn.q_proj.weight")),
                    k: get(&format!("{p}.self_attn.k_proj.weight")),
                    v: get(&format!("{p}.self_attn.v_proj.weight")),
                    o: get(&format!("{p}.self_attn.o_proj.weight")),
                    gate: get(&format!("{p}.mlp.gate_proj.weight")),
                    up: get(&format!("{p}.mlp.up_proj.weight")),
                    down: get(&format!("{p}.mlp.down_proj.weight")),
                    input_norm: get(&format!("{p}.input_layernorm.weight")),
                    post_norm: get(&format!("{p}.post_attention_layernorm.weight")),
                }
            })
            .collect();
        let embed = get("model.embed_tokens.weight");
        Ok(Self {
            lm_head: if config.tie_word_embeddings {
                embed.clone()
            } else {
                get("lm_head.weight")
            },
            embed,
            norm: get("model.norm.weight"),
            layers,
            config,
        })
    }

    /// Rotary tables `[t, head_dim]` as Hugging Face builds them: `cat(freqs, freqs)`.
    fn rotary(&self, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim();
        let half = hd / 2;
        let mut cos = Vec::with_capacity(t * hd);
        let mut sin = Vec::with_capacity(t * hd);
        for pos in 0..t {
            for i in 0..hd {
                let inv = 1.0
                    / self
                        .config
                        .rope_theta
                        .powf((2 * (i % half)) as f64 / hd as f64);
                let angle = pos as f64 * inv;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, hd), device)?,
            Tensor::from_vec(sin, (t, hd), device)?,
        ))
    }

    /// Logits `[b, t, vocab]` for ids `[b, t]` (u32). `lora_rng` draws the LoRA dropout masks
    /// (`None`: no dropout, as at evaluation).
    pub fn forward(
        &self,
        ids: &Tensor,
        lora: Option<&Lora>,
        lora_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self.hidden(ids, lora, lora_rng)?;
        linear(&x, &self.lm_head)?.reshape((b, t, self.config.vocab_size))
    }

    /// The summed negative log-likelihood of `batch`'s loss targets (callers divide). Only the
    /// loss rows go through the LM head and the softmax: with a 49k vocabulary and half the
    /// positions being prompt or padding, that is most of the logits' time and memory.
    pub fn nll_sum(
        &self,
        batch: &Batch,
        lora: Option<&Lora>,
        lora_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        if batch.target_count == 0 {
            return Tensor::zeros((), DType::F32, batch.inputs.device());
        }
        let x = self.hidden(&batch.inputs, lora, lora_rng)?;
        let rows = x.index_select(&batch.loss_rows, 0)?;
        nll_rows(&linear(&rows, &self.lm_head)?, &batch.loss_targets)?.sum_all()
    }

    /// The final (normed) hidden states `[b·t, hidden]`.
    fn hidden(
        &self,
        ids: &Tensor,
        lora: Option<&Lora>,
        mut lora_rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let ctx = self.context(ids)?;
        let mut x = self.embed.embedding(&ids.flatten_all()?)?; // [b·t, h]
        for l in 0..self.layers.len() {
            x = self.block(l, &x, lora, lora_rng.as_deref_mut(), &ctx)?;
        }
        rms_norm(&x, &self.norm, self.config.rms_norm_eps)
    }

    fn context(&self, ids: &Tensor) -> Result<Context> {
        let (b, t) = ids.dims2()?;
        let (cos, sin) = self.rotary(t, ids.device())?;
        Ok(Context {
            b,
            t,
            cos,
            sin,
            mask: causal_mask(t, ids.device())?,
        })
    }

    /// Decoder layer `l`: `x [b·t, h]` → `[b·t, h]`.
    fn block(
        &self,
        l: usize,
        x: &Tensor,
        lora: Option<&Lora>,
        mut lora_rng: Option<&mut Rng>,
        ctx: &Context,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = (ctx.b, ctx.t);
        let (h, nh, hd) = (c.hidden_size, c.num_heads, c.head_dim());
        let (nkv, group) = (c.kv_heads(), c.num_heads / c.kv_heads());
        let eps = c.rms_norm_eps;
        let scale = 1.0 / (hd as f64).sqrt();
        let layer = &self.layers[l];
        let xn = rms_norm(x, &layer.input_norm, eps)?;
        let mut q = linear(&xn, &layer.q)?;
        let k = linear(&xn, &layer.k)?;
        let mut v = linear(&xn, &layer.v)?;
        if let Some(lora) = lora {
            let ll = &lora.layers[l];
            q = (q + lora_delta(&xn, &ll.q, lora, lora_rng.as_deref_mut())?)?;
            v = (v + lora_delta(&xn, &ll.v, lora, lora_rng)?)?;
        }
        let heads = |x: Tensor, n: usize| -> Result<Tensor> {
            x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()
        };
        let q = rope(&heads(q, nh)?, &ctx.cos, &ctx.sin)?;
        let k = repeat_kv(rope(&heads(k, nkv)?, &ctx.cos, &ctx.sin)?, group)?;
        let v = repeat_kv(heads(v, nkv)?, group)?;
        let att = masked_softmax(&q.matmul(&k.t()?)?, scale, &ctx.mask)?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b * t, h))?;
        let x = (x + linear(&y, &layer.o)?)?;
        let xn = rms_norm(&x, &layer.post_norm, eps)?;
        let mlp = swiglu(&linear(&xn, &layer.gate)?, &linear(&xn, &layer.up)?)?;
        x + linear(&mlp, &layer.down)?
    }

    /// [`Model::nll_sum`] and the gradients of `nll / divisor` for `lora.vars()` (in that
    /// order), with activation checkpointing: the forward pass keeps only each layer's input;
    /// the backward pass recomputes one layer at a time (with the same dropout masks) and
    /// pushes the gradient through it. Memory holds one layer's intermediates instead of all
    /// of them, for one more forward pass of compute; the numbers are those of the plain path.
    pub fn nll_sum_and_grads_checkpointed(
        &self,
        batch: &Batch,
        lora: &Lora,
        rng: &mut Rng,
        divisor: f64,
    ) -> Result<(f64, Vec<Tensor>)> {
        let vars = lora.vars();
        if batch.target_count == 0 {
            let zeros = vars
                .iter()
                .map(|v| v.zeros_like())
                .collect::<Result<Vec<_>>>()?;
            return Ok((0.0, zeros));
        }
        let ctx = self.context(&batch.inputs)?;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut rngs = Vec::with_capacity(self.layers.len());
        let mut x = self.embed.embedding(&batch.inputs.flatten_all()?)?.detach();
        for l in 0..self.layers.len() {
            rngs.push(rng.clone());
            let y = self.block(l, &x, Some(lora), Some(rng), &ctx)?.detach();
            inputs.push(x);
            x = y;
        }
        let top = Var::from_tensor(&x)?;
        let hidden = rms_norm(top.as_tensor(), &self.norm, self.config.rms_norm_eps)?;
        let rows = hidden.index_select(&batch.loss_rows, 0)?;
        let nll = nll_rows(&linear(&rows, &self.lm_head)?, &batch.loss_targets)?.sum_all()?;
        let loss = f64::from(nll.to_scalar::<f32>()?);
        let store = (nll / divisor)?.backward()?;
        let mut grad = match store.get(top.as_tensor()) {
            Some(g) => g.clone(),
            None => top.zeros_like()?,
        };
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        for l in (0..self.layers.len()).rev() {
            let input = Var::from_tensor(&inputs[l])?;
            let mut replay = rngs[l].clone();
            let y = self.block(l, input.as_tensor(), Some(lora), Some(&mut replay), &ctx)?;
            // d/dθ Σ(y · g) = (∂y/∂θ)ᵀ g: the layer's share of the loss gradient.
            let store = (y * &grad)?.sum_all()?.backward()?;
            let ll = &lora.layers[l];
            for (i, var) in [&ll.q.a, &ll.q.b, &ll.v.a, &ll.v.b].into_iter().enumerate() {
                grads[4 * l + i] = store.get(var.as_tensor()).cloned();
            }
            grad = match store.get(input.as_tensor()) {
                Some(g) => g.clone(),
                None => input.zeros_like()?,
            };
        }
        let grads = grads
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| match g {
                Some(g) => Ok(g),
                None => v.zeros_like(),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((loss, grads))
    }
}

/// What every layer of one forward pass shares.
struct Context {
    b: usize,
    t: usize,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

fn lora_delta(x: &Tensor, pair: &LoraPair, lora: &Lora, rng: Option<&mut Rng>) -> Result<Tensor> {
    let x = match (rng, &lora.mask_pool) {
        (Some(rng), Some(pool)) => {
            let n = x.elem_count();
            let mask = if n <= MASK_POOL {
                pool.narrow(0, rng.below(MASK_POOL - n + 1), n)?
                    .reshape(x.shape())?
            } else {
                let keep = 1.0 / (1.0 - lora.dropout);
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        if rng.next_f32() < lora.dropout {
                            0.0
                        } else {
                            keep
                        }
                    })
                    .collect();
                Tensor::from_vec(values, x.shape(), x.device())?
            };
            (x * mask)?
        }
        _ => x.clone(),
    };
    linear(&linear(&x, pair.a.as_tensor())?, pair.b.as_tensor())? * lora.scale
}

/// Grouped-query attention as Hugging Face's `repeat_kv`: `[b, kv, t, d]` → `[b, kv·group, t, d]`,
/// query head `i` reading kv head `i / group`.
fn repeat_kv(x: Tensor, group: usize) -> Result<Tensor> {
    if group == 1 {
        return Ok(x);
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .broadcast_as((b, kv, group, t, d))?
        .contiguous()?
        .reshape((b, kv * group, t, d))
}

/// `x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(-x₂, x₁)`; x `[b, h, t, d]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}
