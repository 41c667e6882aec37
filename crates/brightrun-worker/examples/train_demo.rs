//! Trains the demo job with the candle backend outside the queue, for the trainer benchmark and
//! the PEFT check.
//!
//! ```text
//! CANDLE_NUM_THREADS=1 cargo run --release -p brightrun-worker --example train_demo -- OUT_DIR
//! ```
//! Reads `demo/support-bot.jsonl` and `demo/support-bot.hyperparameters.json` (override with
//! `--dataset FILE` and `--hyperparameters FILE`), caches the base model in
//! `OUT_DIR/candle-cache` (or `--cache-dir DIR`; `--gguf FILE` trains on a GGUF llama model such
//! as SmolLM2-135M-Instruct instead of the built-in base), and writes
//! - `OUT_DIR/adapter/`: the PEFT adapter, as a job would upload it
//!   (`demo/load_with_peft.py OUT_DIR/adapter` loads it with Hugging Face `peft`);
//! - `OUT_DIR/encoded.json`: the exact token ids and loss masks trained on, the settings and the
//!   base model directory, so that `demo/peft_peer.py` trains the same job in PyTorch;
//! - `OUT_DIR/candle_run.json`: steps/s, tokens/s and the loss curve of this run.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use brightrun_core::model::{DatasetFormat, HyperparameterConfig};
use brightrun_worker::dataset::parse_training_data;
use brightrun_worker::trainer::candle::tokenizer::Encoded;
use brightrun_worker::trainer::candle::{CandleBackend, CandleOptions};
use brightrun_worker::trainer::{Stage, TrainerBackend, TrainerEvent, TrainingSpec};
use serde_json::{Value, json};

struct Args {
    out: PathBuf,
    dataset: PathBuf,
    hyperparameters: PathBuf,
    cache_dir: Option<PathBuf>,
    gguf: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let mut out = None;
    let mut a = Args {
        out: PathBuf::new(),
        dataset: demo.join("support-bot.jsonl"),
        hyperparameters: demo.join("support-bot.hyperparameters.json"),
        cache_dir: None,
        gguf: None,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().map(PathBuf::from).context("missing value");
        match arg.to_str() {
            Some("--dataset") => a.dataset = value()?,
            Some("--hyperparameters") => a.hyperparameters = value()?,
            Some("--cache-dir") => a.cache_dir = Some(value()?),
            Some("--gguf") => a.gguf = Some(value()?),
            Some(s) if s.starts_with("--") => bail!("unknown option {s}"),
            _ => out = Some(PathBuf::from(arg)),
        }
    }
    a.out = out.context("usage: train_demo OUT_DIR [--dataset F] [--hyperparameters F]")?;
    Ok(a)
}

fn encoded_json(conversations: &[Encoded]) -> Value {
    conversations
        .iter()
        .map(|e| json!({"ids": e.ids, "trainable": e.trainable}))
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<()> {
    let a = args()?;
    let hp: HyperparameterConfig = serde_json::from_str(
        &std::fs::read_to_string(&a.hyperparameters)
            .with_context(|| format!("reading {}", a.hyperparameters.display()))?,
    )
    .context("hyperparameters")?;
    let file = std::fs::File::open(&a.dataset)
        .with_context(|| format!("reading {}", a.dataset.display()))?;
    let data = parse_training_data(file, &DatasetFormat::V4)?;
    let adapter_dir = a.out.join("adapter");
    if adapter_dir.exists() {
        std::fs::remove_dir_all(&adapter_dir)?;
    }
    std::fs::create_dir_all(&adapter_dir)?;
    let backend = CandleBackend::with_options(
        a.cache_dir.unwrap_or_else(|| a.out.join("candle-cache")),
        CandleOptions {
            gguf: a.gguf,
            ..CandleOptions::default()
        },
    );
    let cancel = AtomicBool::new(false);
    let base_dir = backend.prepare_base_model(&cancel)?;
    let max_len = backend.options().max_seq_len;
    let train = backend.encode_all(&data.train, &cancel)?;
    let validation = backend.encode_all(&data.validation, &cancel)?;
    std::fs::write(
        a.out.join("encoded.json"),
        serde_json::to_vec(&json!({
            "base_model_dir": base_dir,
            "max_seq_len": max_len,
            "hyperparameters": hp,
            "train": encoded_json(&train),
            "validation": encoded_json(&validation),
        }))?,
    )?;

    let spec = TrainingSpec {
        job_id: uuid::Uuid::nil(),
        attempt: 1,
        hyperparameters: hp,
        train: data.train,
        validation: data.validation,
        output_dir: adapter_dir.clone(),
    };
    let (mut started, mut ended) = (None, None);
    let mut steps = Vec::new();
    let mut tokens_per_second = Vec::new();
    let adapter = backend.train(
        &spec,
        &mut |e| match e {
            TrainerEvent::Stage(Stage::Training) => started = Some(Instant::now()),
            TrainerEvent::Stage(Stage::Validating | Stage::Saving) => {
                ended = ended.or(Some(Instant::now()))
            }
            TrainerEvent::Step {
                epoch,
                loss,
                tokens_per_second: tps,
                ..
            } => {
                steps.push((epoch, loss));
                tokens_per_second.push(tps);
            }
            TrainerEvent::Stage(_) | TrainerEvent::Validation { .. } => {}
        },
        &cancel,
    )?;
    let seconds = match (started, ended) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => f64::NAN,
    };
    let report = json!({
        "backend": "candle",
        "optimizer_steps": steps.len(),
        "train_seconds": seconds,
        "steps_per_second": steps.len() as f64 / seconds,
        "tokens_per_second_median": median(tokens_per_second),
        "first_step_loss": steps.first().map(|s| s.1),
        "final_train_loss": adapter.final_train_loss,
        "final_validation_loss": adapter.final_validation_loss,
        "losses": steps.iter().map(|s| s.1).collect::<Vec<_>>(),
    });
    std::fs::write(
        a.out.join("candle_run.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!(
        "candle: {} steps in {seconds:.2} s ({:.1} steps/s, median {:.0} tokens/s); loss {:.3} → {:.3} (last epoch)\nadapter: {}",
        steps.len(),
        steps.len() as f64 / seconds,
        report["tokens_per_second_median"]
            .as_f64()
            .unwrap_or(f64::NAN),
        steps.first().map_or(f64::NAN, |s| s.1),
        adapter.final_train_loss,
        adapter_dir.display()
    );
    Ok(())
}
