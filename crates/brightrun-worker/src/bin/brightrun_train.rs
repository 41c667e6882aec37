//! `brightrun-train`: the candle trainer as a standalone program, for CPU clusters and CI. It
//! keeps the training entrypoint contract (`brightrun_worker::entrypoint`, docs/entrypoint.md):
//! the job in `BRIGHTRUN_TRAIN_SPEC`, one JSON event per line on stdout, the adapter's files
//! uploaded through the signed URLs the worker hands out.
//!
//! ```text
//! BRIGHTRUN_TRAIN_SPEC='{"version":1,...}' brightrun-train
//! ```
//! Optional: `BRIGHTRUN_TRAIN_CACHE` (where the base model is built once; default: a folder in
//! the temporary directory) and `BRIGHTRUN_TRAIN_BASE_GGUF` (train on this GGUF llama model).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use brightrun_supabase::storage::sha256_file;
use brightrun_worker::dataset::{format_of, parse_training_data};
use brightrun_worker::entrypoint::{Event, SPEC_ENV, Tickets, TrainInput, VERSION};
use brightrun_worker::trainer::candle::{CandleBackend, CandleOptions};
use brightrun_worker::trainer::{Stage, TrainerBackend, TrainerError, TrainingSpec};

/// Why the run failed, and whether another attempt can help.
struct Failure {
    message: String,
    retryable: bool,
}

fn permanent(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        retryable: false,
    }
}

fn retryable(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        retryable: true,
    }
}

fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", event.to_line());
    let _ = out.flush();
}

fn main() -> ExitCode {
    let work = std::env::temp_dir().join(format!("brightrun-train-{}", std::process::id()));
    let result = run(&work);
    let _ = std::fs::remove_dir_all(&work);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("brightrun-train: {}", failure.message);
            emit(&Event::Error {
                message: failure.message,
                retryable: failure.retryable,
            });
            ExitCode::FAILURE
        }
    }
}

fn run(work: &Path) -> Result<(), Failure> {
    let raw = std::env::var(SPEC_ENV).map_err(|_| permanent(format!("{SPEC_ENV} is not set")))?;
    let input: TrainInput = serde_json::from_str(&raw)
        .map_err(|e| permanent(format!("{SPEC_ENV} is not a training input: {e}")))?;
    if input.version != VERSION {
        return Err(permanent(format!(
            "training input version {} is not supported (this is version {VERSION})",
            input.version
        )));
    }
    emit(&Event::Stage {
        stage: Stage::Initializing,
    });
    std::fs::create_dir_all(work).map_err(|e| retryable(format!("creating {work:?}: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| retryable(format!("starting the runtime: {e}")))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| retryable(format!("starting the HTTP client: {e}")))?;

    let dataset = work.join("dataset.jsonl");
    runtime.block_on(download(&http, &input.dataset.url, &dataset))?;
    let format = format_of(&input.dataset.format);
    let file = std::fs::File::open(&dataset)
        .map_err(|e| retryable(format!("opening the dataset: {e}")))?;
    let data = parse_training_data(file, &format)
        .map_err(|e| retryable(format!("reading the dataset: {e}")))?;
    if data.train.is_empty() {
        return Err(permanent("the dataset has no training conversations"));
    }

    let cache = std::env::var_os("BRIGHTRUN_TRAIN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("brightrun-train-cache"));
    let backend = CandleBackend::with_options(
        cache,
        CandleOptions {
            gguf: std::env::var_os("BRIGHTRUN_TRAIN_BASE_GGUF").map(PathBuf::from),
            ..CandleOptions::default()
        },
    );
    let spec = TrainingSpec {
        job_id: input.job_id,
        attempt: input.attempt,
        hyperparameters: input.hyperparameters.clone(),
        train: data.train,
        validation: data.validation,
        output_dir: work.join("adapter"),
    };
    // Ray stops a run with SIGTERM, whose default action ends the process: nothing to clean
    // up that the next attempt minds.
    let never = AtomicBool::new(false);
    let adapter = backend
        .train(&spec, &mut |event| emit(&Event::from(event)), &never)
        .map_err(|e| match e {
            TrainerError::InvalidSpec(m) => permanent(format!("invalid training settings: {m}")),
            other => retryable(other.to_string()),
        })?;

    emit(&Event::Stage {
        stage: Stage::Saving,
    });
    runtime.block_on(upload_all(&http, &input, &adapter.files))?;
    emit(&Event::Done {
        final_train_loss: adapter.final_train_loss,
        final_validation_loss: adapter.final_validation_loss,
    });
    Ok(())
}

/// A retry schedule for one transfer: 1 s, 2 s, 4 s, 8 s.
const BACKOFF: [u64; 4] = [1, 2, 4, 8];

async fn download(http: &reqwest::Client, url: &str, to: &Path) -> Result<(), Failure> {
    use futures::TryStreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut last = String::new();
    for (i, wait) in std::iter::once(0).chain(BACKOFF).enumerate() {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let response = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().is_client_error() => {
                return Err(retryable(format!(
                    "the dataset URL was refused ({}): it may have expired",
                    r.status()
                )));
            }
            Ok(r) => {
                last = format!("HTTP {}", r.status());
                continue;
            }
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut file = tokio::fs::File::create(to)
            .await
            .map_err(|e| retryable(format!("writing the dataset: {e}")))?;
        let mut body = response.bytes_stream();
        let copied: Result<(), String> = async {
            while let Some(chunk) = body.try_next().await.map_err(|e| e.to_string())? {
                file.write_all(&chunk).await.map_err(|e| e.to_string())?;
            }
            file.flush().await.map_err(|e| e.to_string())
        }
        .await;
        match copied {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("attempt {}: {e}", i + 1),
        }
    }
    Err(retryable(format!("downloading the dataset failed: {last}")))
}

async fn tickets(http: &reqwest::Client, input: &TrainInput) -> Result<Tickets, Failure> {
    let mut last = String::new();
    for wait in std::iter::once(0).chain(BACKOFF) {
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match http.get(&input.artifacts.tickets_url).send().await {
            Ok(r) if r.status().is_success() => {
                return r
                    .json()
                    .await
                    .map_err(|e| retryable(format!("the upload tickets do not parse: {e}")));
            }
            Ok(r) => last = format!("HTTP {}", r.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(retryable(format!(
        "fetching the upload tickets failed: {last}"
    )))
}

async fn upload_all(
    http: &reqwest::Client,
    input: &TrainInput,
    files: &[PathBuf],
) -> Result<(), Failure> {
    for file in files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let (size, sha256) = sha256_file(file)
            .await
            .map_err(|e| retryable(format!("reading {name}: {e}")))?;
        let mut last = String::new();
        let mut sent = false;
        let mut ticketed = true;
        for wait in std::iter::once(0).chain(BACKOFF) {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            // Fetched for every try: a refused URL may have expired, and the worker renews them.
            let tickets = tickets(http, input).await?;
            let Some(url) = tickets.files.get(&name) else {
                eprintln!("brightrun-train: no upload ticket for {name}; left out");
                sent = true;
                ticketed = false;
                break;
            };
            let content_type = if name.ends_with(".json") {
                "application/json"
            } else {
                "application/octet-stream"
            };
            let body = tokio::fs::read(file)
                .await
                .map_err(|e| retryable(format!("reading {name}: {e}")))?;
            match http
                .put(url)
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    sent = true;
                    break;
                }
                Ok(r) => {
                    last = format!(
                        "HTTP {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                Err(e) => last = e.to_string(),
            }
        }
        if !sent {
            return Err(retryable(format!("uploading {name} failed: {last}")));
        }
        if !ticketed {
            continue;
        }
        emit(&Event::Artifact { name, size, sha256 });
    }
    Ok(())
}
