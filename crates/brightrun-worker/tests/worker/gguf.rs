//! GGUF base models: a tiny llama written to GGUF the way llama.cpp's converter does (q/k rows
//! permuted, GGUF tensor names, byte-level BPE vocabulary and merges, a ChatML template) loads
//! back as the very model it was written from, and its chat template encodes conversations as
//! the template renders them.

use std::collections::HashMap;

use brightrun_worker::trainer::candle::gguf;
use brightrun_worker::trainer::candle::model::{Model, ModelConfig, init_weights};
use brightrun_worker::trainer::candle::tokenizer::bytes_to_unicode;
use brightrun_worker::trainer::{Role, Turn};
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};

fn config(vocab_size: usize) -> ModelConfig {
    ModelConfig {
        vocab_size,
        hidden_size: 32,
        intermediate_size: 48,
        num_layers: 2,
        num_heads: 4,
        max_position_embeddings: 128,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        num_kv_heads: Some(2),
        tie_word_embeddings: true,
    }
}

/// llama.cpp's `permute` for rotary rows, written out index by index: GGUF row
/// `head·d + 2i + j` holds Hugging Face row `head·d + j·d/2 + i`.
fn llama_cpp_permute(w: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = w.dims2().expect("2-d");
    let rows: Vec<Vec<f32>> = w.to_vec2().expect("rows");
    let d = out / heads;
    let mut permuted = Vec::with_capacity(out * inp);
    for head in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                permuted.extend_from_slice(&rows[head * d + j * (d / 2) + i]);
            }
        }
    }
    Tensor::from_vec(permuted, (out, inp), &Device::Cpu).expect("tensor")
}

fn gguf_name(hf: &str) -> String {
    if hf == "model.embed_tokens.weight" {
        return "token_embd.weight".into();
    }
    if hf == "model.norm.weight" {
        return "output_norm.weight".into();
    }
    let rest = hf.strip_prefix("model.layers.").expect("layer tensor");
    let (layer, part) = rest.split_once('.').expect("layer.part");
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("unexpected tensor {other}"),
    };
    format!("blk.{layer}.{part}")
}

/// Byte-level tokens, one merge ("h" + "e"), and the ChatML specials.
fn vocabulary() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = bytes_to_unicode().iter().map(char::to_string).collect();
    tokens.push("he".into());
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    (tokens, vec!["h e".into()])
}

const TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";

fn write_gguf(path: &std::path::Path, cfg: &ModelConfig, weights: &HashMap<String, Tensor>) {
    use gguf_file::Value;
    let (tokens, merges) = vocabulary();
    let n = tokens.len();
    let mut types = vec![Value::I32(1); n];
    types[n - 2] = Value::I32(3);
    types[n - 1] = Value::I32(3);
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("test llama".into())),
        ("llama.block_count", Value::U32(cfg.num_layers as u32)),
        (
            "llama.context_length",
            Value::U32(cfg.max_position_embeddings as u32),
        ),
        ("llama.embedding_length", Value::U32(cfg.hidden_size as u32)),
        (
            "llama.feed_forward_length",
            Value::U32(cfg.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count",
            Value::U32(cfg.num_heads as u32),
        ),
        (
            "llama.attention.head_count_kv",
            Value::U32(cfg.kv_heads() as u32),
        ),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(n as u32 - 2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(n as u32 - 1)),
        ("tokenizer.chat_template", Value::String(TEMPLATE.into())),
    ];
    let mut tensors = Vec::new();
    for (name, t) in weights {
        let t = if name.ends_with("q_proj.weight") {
            llama_cpp_permute(t, cfg.num_heads)
        } else if name.ends_with("k_proj.weight") {
            llama_cpp_permute(t, cfg.kv_heads())
        } else {
            t.clone()
        };
        let q = QTensor::quantize(&t, GgmlDType::F32).expect("store as f32");
        tensors.push((gguf_name(name), q));
    }
    let meta_refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).expect("create gguf");
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).expect("write gguf");
}

#[test]
fn a_gguf_llama_loads_as_the_model_it_was_written_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tokens, _) = vocabulary();
    let cfg = config(tokens.len());
    let weights = init_weights(&cfg, 7, &Device::Cpu).expect("weights");
    let path = dir.path().join("test.gguf");
    write_gguf(&path, &cfg, &weights);

    let loaded = gguf::load(&path, &dir.path().join("cache"), &Device::Cpu).expect("loads");
    assert_eq!(
        loaded.model.config.kv_heads(),
        2,
        "grouped-query attention read"
    );
    assert!(
        loaded.model.config.tie_word_embeddings,
        "no output.weight: tied"
    );
    let original = Model::new(cfg, &weights).expect("original model");
    let ids = Tensor::new(&[[256u32, 72, 101, 108, 108, 111, 10, 257]], &Device::Cpu).expect("ids");
    let a = original.forward(&ids, None, None).expect("forward");
    let b = loaded.model.forward(&ids, None, None).expect("forward");
    let diff: f32 = (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar()
        .expect("scalar");
    assert!(
        diff < 1e-4,
        "the loaded model computes the original's logits (q/k rows un-permuted): max diff {diff}"
    );
    // The Hugging Face directory it caches loads back the same way.
    assert!(
        loaded.dir.join("model.safetensors").is_file(),
        "cached as a HF directory"
    );
    assert!(
        loaded.dir.join("tokenizer.json").is_file(),
        "with its tokenizer"
    );
    let again = gguf::load(&path, &dir.path().join("cache"), &Device::Cpu).expect("cached load");
    let c = again.model.forward(&ids, None, None).expect("forward");
    let a = original.forward(&ids, None, None).expect("forward");
    let diff: f32 = (a - c)
        .expect("sub")
        .abs()
        .expect("abs")
        .max_all()
        .expect("max")
        .to_scalar()
        .expect("scalar");
    assert!(diff < 1e-4, "and from the cache: max diff {diff}");
}

#[test]
fn the_chatml_template_encodes_what_it_renders_and_trains_on_assistant_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tokens, _) = vocabulary();
    let cfg = config(tokens.len());
    let weights = init_weights(&cfg, 7, &Device::Cpu).expect("weights");
    let path = dir.path().join("test.gguf");
    write_gguf(&path, &cfg, &weights);
    let loaded = gguf::load(&path, &dir.path().join("cache"), &Device::Cpu).expect("loads");

    let turns = [
        Turn {
            role: Role::User,
            content: "hi there".into(),
            trainable: false,
        },
        Turn {
            role: Role::Assistant,
            content: "hello".into(),
            trainable: true,
        },
    ];
    let enc = loaded.chat.encode(&turns, 1000).expect("encodes");
    let tokenizer = loaded.chat.tokenizer();
    let text = tokenizer.decode(&enc.ids, false).expect("decodes");
    assert_eq!(
        text,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n",
        "the template's rendering, with its default system prompt"
    );
    let trained: Vec<u32> = enc
        .ids
        .iter()
        .zip(&enc.trainable)
        .filter(|(_, t)| **t)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        tokenizer.decode(&trained, false).expect("decodes"),
        "hello<|im_end|>",
        "the loss covers the assistant's content and its end marker only"
    );
    let he = tokenizer.token_to_id("he").expect("merged token");
    assert!(
        enc.ids.contains(&he),
        "merges apply: 'he' is one token in {:?}",
        enc.ids
    );
}
