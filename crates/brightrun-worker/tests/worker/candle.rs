//! The candle CPU trainer: real LoRA training on a tiny byte-level Llama, PEFT-format output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use brightrun_core::model::{DatasetFormat, HyperparameterConfig};
use brightrun_worker::dataset::parse_training_data;
use brightrun_worker::trainer::candle::base::{BaseModelSpec, load_or_build};
use brightrun_worker::trainer::candle::model::Lora;
use brightrun_worker::trainer::candle::optim::Batch;
use brightrun_worker::trainer::candle::rng::Rng;
use brightrun_worker::trainer::candle::tokenizer::encode_conversation;
use brightrun_worker::trainer::candle::{CandleBackend, CandleOptions, evaluate};
use brightrun_worker::trainer::{
    Role, Stage, TrainedAdapter, TrainerBackend, TrainerError, TrainerEvent, TrainingSpec, Turn,
};
use candle_core::{Device, Tensor};

/// Base models are deterministic, so every test (and every nextest process) can share one cache.
fn shared_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candle-base-cache")
}

/// A JSON file the trainer wrote.
fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn hyperparameters(
    rank: u32,
    alpha: u32,
    lr: f64,
    batch: u32,
    epochs: u32,
) -> HyperparameterConfig {
    HyperparameterConfig {
        base_model: "mistralai/Mistral-7B-v0.1".into(),
        learning_rate: lr,
        batch_size: batch,
        num_epochs: epochs,
        lora_rank: rank,
        lora_alpha: alpha,
        lora_dropout: 0.05,
        warmup_steps: Some(2),
        weight_decay: Some(0.01),
        gradient_accumulation_steps: None,
        max_grad_norm: Some(1.0),
    }
}

/// `demo/support-bot.jsonl`, split as the worker splits a stored dataset.
fn demo_dataset() -> (Vec<Vec<Turn>>, Vec<Vec<Turn>>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/support-bot.jsonl");
    let file = std::fs::File::open(&path).expect("demo dataset is readable");
    let data = parse_training_data(file, &DatasetFormat::V4).expect("demo dataset parses");
    assert_eq!(data.skipped, 0, "every demo line is a conversation");
    (data.train, data.validation)
}

fn small_dataset(n: usize) -> Vec<Vec<Turn>> {
    (0..n)
        .map(|i| {
            vec![
                Turn {
                    role: Role::User,
                    content: format!("question {i}?"),
                    trainable: false,
                },
                Turn {
                    role: Role::Assistant,
                    content: format!("answer number {i}."),
                    trainable: true,
                },
            ]
        })
        .collect()
}

fn spec(
    output_dir: PathBuf,
    hp: HyperparameterConfig,
    train: Vec<Vec<Turn>>,
    validation: Vec<Vec<Turn>>,
) -> TrainingSpec {
    TrainingSpec {
        job_id: uuid::Uuid::nil(),
        attempt: 1,
        hyperparameters: hp,
        train,
        validation,
        output_dir,
    }
}

fn tiny_backend() -> CandleBackend {
    CandleBackend::with_options(
        shared_cache(),
        CandleOptions {
            base: BaseModelSpec::tiny(),
            max_seq_len: 64,
            ..CandleOptions::default()
        },
    )
}

fn run(
    backend: &CandleBackend,
    spec: &TrainingSpec,
) -> (Result<TrainedAdapter, TrainerError>, Vec<TrainerEvent>) {
    let mut events = Vec::new();
    let cancel = AtomicBool::new(false);
    let result = backend.train(spec, &mut |e| events.push(e), &cancel);
    (result, events)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn step_losses(events: &[TrainerEvent]) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Step { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect()
}

/// The demo job's settings: `demo/support-bot.hyperparameters.json`, which the end-to-end test
/// submits through the RPC and `docs/benchmarks.md` measures.
fn demo_hyperparameters() -> HyperparameterConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/support-bot.hyperparameters.json");
    let text = std::fs::read_to_string(&path).expect("demo settings are readable");
    serde_json::from_str(&text).expect("demo settings parse")
}

#[test]
fn demo_dataset_loss_falls_by_at_least_40_percent() {
    let (train, validation) = demo_dataset();
    assert_eq!(
        (train.len(), validation.len()),
        (31, 5),
        "demo split as written"
    );
    let out = tempfile::tempdir().expect("tempdir");
    let backend = CandleBackend::new(shared_cache());
    let job = spec(
        out.path().join("adapter"),
        demo_hyperparameters(),
        train.clone(),
        validation,
    );
    let started = std::time::Instant::now();
    let mut events = Vec::new();
    let (mut training_started, mut training_ended) = (None, None);
    let result = backend.train(
        &job,
        &mut |e| {
            match e {
                TrainerEvent::Stage(Stage::Training) => {
                    training_started = Some(std::time::Instant::now())
                }
                TrainerEvent::Stage(Stage::Validating) => {
                    training_ended = Some(std::time::Instant::now())
                }
                _ => {}
            }
            events.push(e);
        },
        &AtomicBool::new(false),
    );
    let adapter = result.expect("demo training succeeds");
    let losses = step_losses(&events);
    let train_seconds = match (training_started, training_ended) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    let tokens_per_second: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Step {
                tokens_per_second, ..
            } => Some(*tokens_per_second),
            _ => None,
        })
        .collect();
    eprintln!(
        "benchmark: {} optimizer steps in {train_seconds:.2}s of training (incl. 14 validation passes): {:.1} steps/s, median {:.0} tokens/s per step",
        losses.len(),
        losses.len() as f64 / train_seconds,
        median(tokens_per_second)
    );

    // Where the curve starts: the base model (B = 0) on the whole training set, without dropout.
    let cancel = AtomicBool::new(false);
    let base = load_or_build(
        &backend.options().base,
        &shared_cache(),
        &Device::Cpu,
        &cancel,
    )
    .expect("cached base");
    let encoded: Vec<_> = train
        .iter()
        .map(|c| encode_conversation(c, backend.options().max_seq_len))
        .collect();
    let start = evaluate(&base.model, None, &encoded, 4, &Device::Cpu, &cancel).expect("base loss");
    eprintln!(
        "demo: {} steps in {:.1}s; base loss {start:.3}, first step {:.3}, last epoch {:.3}, validation {:?}\ncurve: {:?}",
        losses.len(),
        started.elapsed().as_secs_f64(),
        losses[0],
        adapter.final_train_loss,
        adapter.final_validation_loss,
        losses
            .iter()
            .map(|l| (l * 100.0).round() / 100.0)
            .collect::<Vec<_>>()
    );
    assert_eq!(losses.len(), 15 * 16, "15 epochs × ceil(31 / 2) steps");
    assert!(
        (losses[0] - start).abs() < 0.5,
        "the first step starts near the base loss ({:.3} vs {start:.3})",
        losses[0]
    );
    let drop = 1.0 - adapter.final_train_loss / start;
    assert!(
        drop >= 0.40,
        "training loss must fall by ≥ 40 % (base {start:.3} → last epoch {:.3}, {:.0} %)",
        adapter.final_train_loss,
        drop * 100.0
    );
    let validations: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Validation { loss, .. } => Some(*loss),
            _ => None,
        })
        .collect();
    assert_eq!(validations.len(), 15, "one validation per epoch");
    assert!(
        validations[14] < 0.8 * validations[0],
        "validation loss should improve on the held-out phrasings: {validations:?}"
    );
}

#[test]
fn events_follow_the_stages_and_the_schedule() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut hp = hyperparameters(4, 8, 5e-3, 2, 3);
    hp.warmup_steps = Some(2);
    hp.gradient_accumulation_steps = Some(2);
    let job = spec(
        out.path().to_path_buf(),
        hp,
        small_dataset(8),
        small_dataset(2),
    );
    let (result, events) = run(&tiny_backend(), &job);
    result.expect("training succeeds");
    let stages: Vec<Stage> = events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Stage(s) => Some(*s),
            _ => None,
        })
        .collect();
    assert_eq!(
        stages,
        vec![
            Stage::Initializing,
            Stage::Training,
            Stage::Validating,
            Stage::Saving
        ],
        "stage order"
    );
    let steps: Vec<(u32, u64, u64, f64, f64)> = events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Step {
                epoch,
                step,
                total_steps,
                learning_rate,
                tokens_per_second,
                ..
            } => Some((
                *epoch,
                *step,
                *total_steps,
                *learning_rate,
                *tokens_per_second,
            )),
            _ => None,
        })
        .collect();
    // 8 examples / batch 2 = 4 micro-batches, accumulated by 2 = 2 steps per epoch, 3 epochs.
    assert_eq!(
        steps.len(),
        6,
        "optimizer steps honour batch size, accumulation and epochs"
    );
    assert!(
        steps
            .iter()
            .enumerate()
            .all(|(i, s)| s.1 == i as u64 + 1 && s.2 == 6 && s.0 == (i as u32 / 2) + 1),
        "steps are numbered 1.., epochs 1.., total 6: {steps:?}"
    );
    assert!(
        (steps[0].3 - 2.5e-3).abs() < 1e-12,
        "warmup step 1 of 2: half the peak, got {}",
        steps[0].3
    );
    assert!(
        (steps[1].3 - 5e-3).abs() < 1e-12,
        "warmup ends at the peak, got {}",
        steps[1].3
    );
    assert!(steps[5].3 < steps[2].3, "cosine decay after warmup");
    assert!(steps.iter().all(|s| s.4 > 0.0), "throughput reported");
    let validation_steps: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            TrainerEvent::Validation { step, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(
        validation_steps,
        vec![2, 4, 6],
        "validation after each epoch"
    );
}

fn required_config_keys() -> [&'static str; 10] {
    [
        "peft_type",
        "task_type",
        "base_model_name_or_path",
        "r",
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "bias",
        "fan_in_fan_out",
        "inference_mode",
    ]
}

/// Checks an adapter directory as PEFT would need it; returns the problems found.
fn peft_problems(dir: &Path, layers: usize, hidden: usize, rank: usize, alpha: u32) -> Vec<String> {
    let mut problems = Vec::new();
    let bytes =
        std::fs::read(dir.join("adapter_model.safetensors")).expect("adapter weights exist");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut expected = HashMap::new();
    for i in 0..layers {
        for proj in ["q_proj", "v_proj"] {
            let p = format!("base_model.model.model.layers.{i}.self_attn.{proj}");
            expected.insert(format!("{p}.lora_A.weight"), vec![rank, hidden]);
            expected.insert(format!("{p}.lora_B.weight"), vec![hidden, rank]);
        }
    }
    for name in tensors.names() {
        if !expected.contains_key(name) {
            problems.push(format!("unexpected tensor {name}"));
        }
    }
    for (name, shape) in &expected {
        match tensors.tensor(name) {
            Ok(t) if t.shape() == shape.as_slice() && t.dtype() == safetensors::Dtype::F32 => {}
            Ok(t) => problems.push(format!(
                "{name}: shape {:?} {:?}, expected {shape:?} F32",
                t.shape(),
                t.dtype()
            )),
            Err(_) => problems.push(format!("missing tensor {name}")),
        }
    }
    let config = read_json(&dir.join("adapter_config.json"));
    for key in required_config_keys() {
        if config.get(key).is_none() {
            problems.push(format!("adapter_config.json lacks {key}"));
        }
    }
    let checks = [
        ("peft_type", serde_json::json!("LORA")),
        ("task_type", serde_json::json!("CAUSAL_LM")),
        ("r", serde_json::json!(rank)),
        ("lora_alpha", serde_json::json!(alpha)),
        ("target_modules", serde_json::json!(["q_proj", "v_proj"])),
        ("fan_in_fan_out", serde_json::json!(false)),
    ];
    for (key, value) in checks {
        if config.get(key).is_some_and(|v| *v != value) {
            problems.push(format!(
                "adapter_config.json {key} = {}, expected {value}",
                config[key]
            ));
        }
    }
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        match std::fs::read(dir.join(file)).map(|b| serde_json::from_slice::<serde_json::Value>(&b))
        {
            Ok(Ok(_)) => {}
            _ => problems.push(format!("{file} missing or not JSON")),
        }
    }
    problems
}

#[test]
fn adapter_is_in_peft_format() {
    let out = tempfile::tempdir().expect("tempdir");
    let adapter_dir = out.path().join("adapter");
    let job = spec(
        adapter_dir.clone(),
        hyperparameters(4, 8, 1e-2, 4, 2),
        small_dataset(8),
        vec![],
    );
    let (result, _) = run(&tiny_backend(), &job);
    let adapter = result.expect("training succeeds");
    let tiny = BaseModelSpec::tiny().model;
    let problems = peft_problems(&adapter_dir, tiny.num_layers, tiny.hidden_size, 4, 8);
    assert!(problems.is_empty(), "PEFT format problems: {problems:#?}");
    for name in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
    ] {
        assert!(
            adapter.files.contains(&adapter_dir.join(name)),
            "{name} is listed in the result: {:?}",
            adapter.files
        );
    }
    assert!(
        adapter.files.iter().all(|f| f.is_file()),
        "every listed file exists"
    );
    assert_eq!(
        adapter.final_validation_loss, None,
        "no validation set, no validation loss"
    );

    // Training moved B away from its zero init.
    let bytes = std::fs::read(adapter_dir.join("adapter_model.safetensors")).expect("weights");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let b = tensors
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        .expect("B of layer 0");
    assert!(
        b.data().iter().any(|&x| x != 0),
        "lora_B must be trained away from zeros"
    );
    let info = read_json(&adapter_dir.join("brightrun_adapter.json"));
    let base_dir = PathBuf::from(info["base_model_dir"].as_str().expect("base dir recorded"));
    assert!(
        base_dir.join("config.json").is_file() && base_dir.join("model.safetensors").is_file(),
        "the base model is a Hugging Face model directory at {}",
        base_dir.display()
    );
}

#[test]
fn the_format_check_fails_on_a_missing_key_or_a_single_model_prefix() {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("adapter");
    let job = spec(
        dir.clone(),
        hyperparameters(2, 4, 1e-2, 4, 1),
        small_dataset(4),
        vec![],
    );
    run(&tiny_backend(), &job).0.expect("training succeeds");
    let tiny = BaseModelSpec::tiny().model;
    assert!(
        peft_problems(&dir, tiny.num_layers, tiny.hidden_size, 2, 4).is_empty(),
        "the genuine adapter passes"
    );

    let config_path = dir.join("adapter_config.json");
    let mut config = read_json(&config_path);
    config
        .as_object_mut()
        .expect("object")
        .remove("target_modules");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let problems = peft_problems(&dir, tiny.num_layers, tiny.hidden_size, 2, 4);
    assert!(
        problems.iter().any(|p| p.contains("lacks target_modules")),
        "a missing key must be reported: {problems:?}"
    );

    // PEFT silently ignores keys with one `model.`: the check must not.
    let weights = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).expect("weights");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .tensors()
        .into_iter()
        .map(|(n, t)| (n.replace("model.model.", "model."), t))
        .collect();
    let data = safetensors::serialize(renamed, None).expect("serialize");
    std::fs::write(&weights, data).expect("write weights");
    let problems = peft_problems(&dir, tiny.num_layers, tiny.hidden_size, 2, 4);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("missing tensor base_model.model.model.layers.0")),
        "single-prefix keys must be reported as missing: {problems:?}"
    );
}

#[test]
fn cancel_returns_within_a_step() {
    let out = tempfile::tempdir().expect("tempdir");
    let job = spec(
        out.path().to_path_buf(),
        hyperparameters(4, 8, 1e-2, 2, 10),
        small_dataset(8),
        vec![],
    );
    let cancel = AtomicBool::new(false);
    let mut steps = 0;
    let result = tiny_backend().train(
        &job,
        &mut |e| {
            if matches!(e, TrainerEvent::Step { .. }) {
                steps += 1;
                cancel.store(true, Ordering::Relaxed);
            }
        },
        &cancel,
    );
    assert!(
        matches!(result, Err(TrainerError::Cancelled)),
        "cancelled run returns Cancelled: {result:?}"
    );
    assert!(
        steps <= 2,
        "the run stops within a step of the cancel, took {steps} steps of 40"
    );
    assert!(
        !out.path().join("adapter_model.safetensors").exists(),
        "a cancelled run writes no adapter"
    );
}

#[test]
fn unusable_settings_are_invalid_not_failed() {
    let out = tempfile::tempdir().expect("tempdir");
    let mut hp = hyperparameters(4, 8, 1e-2, 2, 1);
    hp.batch_size = 0;
    let (result, _) = run(
        &tiny_backend(),
        &spec(out.path().to_path_buf(), hp, small_dataset(2), vec![]),
    );
    assert!(
        matches!(&result, Err(TrainerError::InvalidSpec(m)) if m.contains("batch_size")),
        "batch size 0 is invalid: {result:?}"
    );
    let untrainable: Vec<Vec<Turn>> = small_dataset(2)
        .into_iter()
        .map(|c| {
            c.into_iter()
                .map(|t| Turn {
                    trainable: false,
                    ..t
                })
                .collect()
        })
        .collect();
    let hp = hyperparameters(4, 8, 1e-2, 2, 1);
    let (result, _) = run(
        &tiny_backend(),
        &spec(out.path().to_path_buf(), hp, untrainable, vec![]),
    );
    assert!(
        matches!(&result, Err(TrainerError::InvalidSpec(m)) if m.contains("trainable")),
        "no trainable token is invalid: {result:?}"
    );
}

#[test]
fn base_model_is_cached_and_training_is_deterministic() {
    let cache = tempfile::tempdir().expect("tempdir");
    let backend = CandleBackend::with_options(
        cache.path().to_path_buf(),
        CandleOptions {
            base: BaseModelSpec::tiny(),
            max_seq_len: 64,
            ..CandleOptions::default()
        },
    );
    let cancel = AtomicBool::new(false);
    let dir = backend
        .prepare_base_model(&cancel)
        .expect("base model builds");
    let weights = std::fs::read(dir.join("model.safetensors")).expect("cached weights");
    let modified = std::fs::metadata(dir.join("model.safetensors"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let again = backend
        .prepare_base_model(&cancel)
        .expect("base model loads");
    assert_eq!(again, dir, "same spec, same cache entry");
    assert_eq!(
        std::fs::metadata(dir.join("model.safetensors"))
            .and_then(|m| m.modified())
            .expect("mtime"),
        modified,
        "the second call loads the cache instead of rebuilding"
    );
    let shared = BaseModelSpec::tiny().dir(&shared_cache());
    tiny_backend()
        .prepare_base_model(&cancel)
        .expect("shared base model");
    assert_eq!(
        std::fs::read(shared.join("model.safetensors")).expect("shared weights"),
        weights,
        "pre-training is deterministic: two caches hold the same bytes"
    );

    let train = |dir: &Path| {
        let job = spec(
            dir.to_path_buf(),
            hyperparameters(4, 8, 1e-2, 4, 1),
            small_dataset(8),
            vec![],
        );
        run(&backend, &job).0.expect("training succeeds");
        std::fs::read(dir.join("adapter_model.safetensors")).expect("adapter")
    };
    let out = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        train(&out.path().join("a")),
        train(&out.path().join("b")),
        "same job, same adapter bytes"
    );
}

#[test]
fn grouped_query_attention_with_tied_embeddings_trains_and_sizes_v_by_the_kv_heads() {
    // The shape of SmolLM2 (9 query heads over 3 kv heads, LM head tied to the embeddings),
    // in miniature: 4 query heads over 2 kv heads.
    let mut base = BaseModelSpec::tiny();
    base.model.num_kv_heads = Some(2);
    base.model.num_heads = 4;
    base.model.tie_word_embeddings = true;
    let backend = CandleBackend::with_options(
        shared_cache(),
        CandleOptions {
            base: base.clone(),
            max_seq_len: 64,
            ..CandleOptions::default()
        },
    );
    let out = tempfile::tempdir().expect("tempdir");
    let adapter_dir = out.path().join("adapter");
    let job = spec(
        adapter_dir.clone(),
        hyperparameters(4, 16, 1e-2, 4, 40),
        small_dataset(16),
        vec![],
    );
    let (result, events) = run(&backend, &job);
    result.expect("training succeeds");
    let losses = step_losses(&events);
    let epoch = losses.len() / 40;
    let first: f64 = losses[..epoch].iter().sum::<f64>() / epoch as f64;
    let last: f64 = losses[losses.len() - epoch..].iter().sum::<f64>() / epoch as f64;
    // The tiny base knows little (20 pre-training steps), so the fall is small; what matters
    // here is that gradients flow through the shared kv heads.
    assert!(
        last < 0.97 * first,
        "the loss falls: {first:.3} → {last:.3}"
    );

    let bytes = std::fs::read(adapter_dir.join("adapter_model.safetensors")).expect("weights");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let shape = |name: &str| {
        tensors
            .tensor(&format!(
                "base_model.model.model.layers.0.self_attn.{name}.weight"
            ))
            .expect(name)
            .shape()
            .to_vec()
    };
    let (h, kv) = (base.model.hidden_size, base.model.kv_dim());
    assert_eq!(kv, h / 2, "two kv heads of four");
    assert_eq!(shape("q_proj.lora_B"), [h, 4], "q's B is [hidden, r]");
    assert_eq!(
        shape("v_proj.lora_B"),
        [kv, 4],
        "v's B is [kv heads × head dim, r]"
    );
    assert_eq!(shape("v_proj.lora_A"), [4, h], "v's A is [r, hidden]");
    let v_b = tensors
        .tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")
        .expect("v B");
    assert!(
        v_b.data().iter().any(|&x| x != 0),
        "v's B trained away from zeros: gradients reach it through repeat_kv"
    );
    let info = read_json(&adapter_dir.join("brightrun_adapter.json"));
    let config = read_json(
        &PathBuf::from(info["base_model_dir"].as_str().expect("dir")).join("config.json"),
    );
    assert_eq!(
        config["num_key_value_heads"], 2,
        "the HF config says GQA: {config}"
    );
    assert_eq!(config["tie_word_embeddings"], true, "and tied embeddings");
}

#[test]
fn the_loss_on_loss_rows_only_equals_the_masked_loss_over_all_logits() {
    let cancel = AtomicBool::new(false);
    let base = load_or_build(
        &BaseModelSpec::tiny(),
        &shared_cache(),
        &Device::Cpu,
        &cancel,
    )
    .expect("tiny base");
    let (train, _) = demo_dataset();
    let encoded: Vec<_> = train[..3]
        .iter()
        .map(|c| encode_conversation(c, 384))
        .collect();
    let batch = Batch::new(&encoded.iter().collect::<Vec<_>>(), &Device::Cpu).expect("batch");
    let fast: f32 = base
        .model
        .nll_sum(&batch, None, None)
        .expect("nll")
        .to_scalar()
        .expect("scalar");
    // Reference: every position through the LM head, log-softmax, pick the target, mask, sum.
    let logits = base
        .model
        .forward(&batch.inputs, None, None)
        .expect("logits");
    let (b, t, v) = logits.dims3().expect("dims");
    let lsm = candle_nn::ops::log_softmax(&logits.reshape((b * t, v)).expect("rows"), 1)
        .expect("log-softmax");
    let picked = lsm
        .gather(&batch.targets.reshape((b * t, 1)).expect("targets"), 1)
        .expect("gather")
        .reshape(b * t)
        .expect("flat");
    let reference: f32 = (picked * batch.mask.reshape(b * t).expect("mask"))
        .expect("mask")
        .sum_all()
        .expect("sum")
        .neg()
        .expect("neg")
        .to_scalar()
        .expect("scalar");
    assert!(
        batch.target_count > 0 && batch.target_count < b * t,
        "a partial mask"
    );
    assert!(
        (fast - reference).abs() < 1e-3 * reference.abs(),
        "same loss: {fast} vs {reference}"
    );
}

#[test]
fn checkpointed_gradients_are_the_plain_gradients() {
    // GQA, tied embeddings, dropout on: every path the checkpointed pass replays.
    let mut spec = BaseModelSpec::tiny();
    spec.model.num_heads = 4;
    spec.model.num_kv_heads = Some(2);
    spec.model.tie_word_embeddings = true;
    let cancel = AtomicBool::new(false);
    let base = load_or_build(&spec, &shared_cache(), &Device::Cpu, &cancel).expect("base");
    let lora = Lora::new(&spec.model, 4, 8.0, 0.1, 3, &Device::Cpu).expect("lora");
    // B starts at zero, which would zero A's gradients: give it values.
    for layer in &lora.layers {
        for pair in [&layer.q, &layer.v] {
            let b = pair.b.as_tensor();
            let values = Tensor::randn(0f32, 0.05, b.shape(), &Device::Cpu).expect("randn");
            pair.b.set(&values).expect("set B");
        }
    }
    let (train, _) = demo_dataset();
    let encoded: Vec<_> = train[..3]
        .iter()
        .map(|c| encode_conversation(c, 96))
        .filter(|e| e.target_count() > 0)
        .collect();
    assert!(!encoded.is_empty(), "some targets within 96 ids");
    let batch = Batch::new(&encoded.iter().collect::<Vec<_>>(), &Device::Cpu).expect("batch");
    let divisor = batch.target_count as f64;

    let mut plain_rng = Rng::new(99);
    let nll = base
        .model
        .nll_sum(&batch, Some(&lora), Some(&mut plain_rng))
        .expect("nll");
    let plain_loss = f64::from(nll.to_scalar::<f32>().expect("scalar"));
    let store = (nll / divisor).expect("div").backward().expect("backward");
    let plain: Vec<Tensor> = lora
        .vars()
        .iter()
        .map(|v| {
            store
                .get(v.as_tensor())
                .expect("a gradient for every LoRA tensor")
                .clone()
        })
        .collect();

    let mut rng = Rng::new(99);
    let (loss, grads) = base
        .model
        .nll_sum_and_grads_checkpointed(&batch, &lora, &mut rng, divisor)
        .expect("checkpointed");
    assert!(
        (loss - plain_loss).abs() < 1e-4 * plain_loss,
        "{loss} vs {plain_loss}"
    );
    assert_eq!(
        rng.next_u64(),
        plain_rng.next_u64(),
        "the same dropout draws were used (and no more)"
    );
    assert_eq!(grads.len(), plain.len());
    for (i, (a, b)) in grads.iter().zip(&plain).enumerate() {
        let diff: f32 = (a - b)
            .expect("sub")
            .abs()
            .expect("abs")
            .max_all()
            .expect("max")
            .to_scalar()
            .expect("s");
        let size: f32 = b
            .abs()
            .expect("abs")
            .max_all()
            .expect("max")
            .to_scalar()
            .expect("s");
        assert!(size > 0.0, "tensor {i} has a gradient");
        assert!(
            diff <= 1e-4 * size,
            "tensor {i}: max diff {diff} of max {size}"
        );
    }
}
