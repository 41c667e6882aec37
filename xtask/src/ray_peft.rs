//! `cargo xtask check-ray-peft`: the PyTorch + PEFT entrypoint (`entrypoints/ray-peft/train.py`)
//! end to end, on the CPU: a local Ray head from a virtualenv with the pinned Ray Train, torch,
//! transformers and PEFT; a test stack; `brightrun-worker --backend ray --ray-package
//! entrypoints/ray-peft`; one job on the demo dataset and the tiny byte-level Llama the candle
//! trainer builds (the Hub is not reachable: `BRIGHTRUN_BASE_MODEL_DIR` maps its id to the local
//! directory). It checks that the job completes, that every step became a metrics row, that the
//! stored files are the ones the entrypoint reported (size, SHA-256), and that PEFT loads the
//! adapter and reproduces the trainer's own losses (`demo/load_with_peft.py`).
//!
//! Opt-in, not part of `cargo xtask test`: the virtualenv holds ~3.5 GB of wheels (PyPI's Linux
//! torch is the CUDA build; it runs on the CPU here). Everything is installed and built first;
//! the run itself happens in `unshare --net` with only loopback, as the Ray tests do (Ray binds
//! every interface), so it needs root or passwordless sudo.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use crate::bench::psql;
use crate::ray::LocalHead;
use crate::ray_bench;
use crate::setup;
use crate::stack::{Profile, TestStack};

/// What the cluster's Python has: Ray Train, and the pins of the trainer benchmark's PyTorch
/// peer (`bench::PYTHON_PEER`).
fn packages() -> Vec<String> {
    std::iter::once(format!("ray[default,train]=={}", crate::ray::RAY_VERSION))
        .chain(crate::bench::PYTHON_PEER.iter().map(|p| (*p).to_owned()))
        .collect()
}
const VENV: &str = "ray-peft-venv";
const IMPORTS: &str =
    "import ray.dashboard, ray.train.torch, torch, peft, transformers, safetensors";
/// The Hugging Face id the job names; the check maps it to the candle trainer's base directory.
const BASE_MODEL: &str = "brightrun/byte-llama-tiny";
/// Passed from the outer run to the one inside the namespace.
const PYTHON_ENV: &str = "BRIGHTRUN_RAY_PEFT_PYTHON";
const MODELS_ENV: &str = "BRIGHTRUN_BASE_MODEL_DIR";

/// Outside: the virtualenv, the builds and the base model, then the run inside a namespace.
pub fn check() -> Result<ExitCode> {
    let started = Instant::now();
    setup::ensure_system_packages()?;
    setup::ensure_programs(&["python3", "py:venv"])?;

    let t = Instant::now();
    let packages = packages();
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    let python = crate::bench::venv(VENV, &packages, IMPORTS)?;
    let venv_time = t.elapsed();

    let t = Instant::now();
    let built =
        setup::cargo(&[
            "build",
            "-p",
            "brightrun-worker",
            "-p",
            "brightrun-stack",
            "--bins",
        ])? && setup::cargo(&["build", "-p", "brightrun-worker", "--example", "train_demo"])?;
    ensure!(built, "building the worker, the stack or train_demo failed");
    let build_time = t.elapsed();

    let t = Instant::now();
    let models = base_models()?;
    let base_time = t.elapsed();
    eprintln!(
        "xtask: ready in {:.0} s (virtualenv {:.1} s, builds {:.1} s, base model {:.1} s); \
         running inside a network namespace",
        started.elapsed().as_secs_f64(),
        venv_time.as_secs_f64(),
        build_time.as_secs_f64(),
        base_time.as_secs_f64()
    );
    let status = crate::ray::reexec_isolated(
        &["ray-peft-inside"],
        &[
            (PYTHON_ENV.to_owned(), python.display().to_string()),
            (MODELS_ENV.to_owned(), models.display().to_string()),
        ],
    )?;
    eprintln!(
        "xtask: check-ray-peft {} after {:.0} s in all",
        if status == ExitCode::SUCCESS {
            "passed"
        } else {
            "FAILED"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(status)
}

/// A directory of base models by Hugging Face id, `<dir>/brightrun/byte-llama-tiny` naming the
/// candle trainer's built-in base (a Hugging Face Llama directory with its tokenizer), built once
/// into the cache the Ray tests use. `train_demo` builds it and writes its path to
/// `encoded.json` (one quick epoch of training comes with it).
fn base_models() -> Result<PathBuf> {
    let target = setup::target_dir()?;
    let out = tempfile::tempdir()?;
    let hyperparameters = out.path().join("hyperparameters.json");
    std::fs::write(
        &hyperparameters,
        json!({"base_model": BASE_MODEL, "learning_rate": 0.01, "batch_size": 64,
               "num_epochs": 1, "lora_rank": 8, "lora_alpha": 32, "lora_dropout": 0.0})
        .to_string(),
    )?;
    let status = Command::new(target.join("debug/examples/train_demo"))
        .arg(out.path())
        .arg("--cache-dir")
        .arg(target.join("tmp/candle-base-cache"))
        .arg("--hyperparameters")
        .arg(&hyperparameters)
        .env("CANDLE_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .status()
        .context("running train_demo")?;
    ensure!(status.success(), "train_demo failed ({status})");
    let encoded: Value = serde_json::from_slice(&std::fs::read(out.path().join("encoded.json"))?)?;
    let base_dir = PathBuf::from(
        encoded["base_model_dir"]
            .as_str()
            .context("encoded.json names no base_model_dir")?,
    );
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        ensure!(
            base_dir.join(file).is_file(),
            "the base model directory {} has no {file}",
            base_dir.display()
        );
    }
    let models = target.join("ray-peft-models");
    let link = models.join(BASE_MODEL);
    std::fs::create_dir_all(link.parent().context("a parent")?)?;
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&base_dir, &link)
        .with_context(|| format!("linking {} to {}", link.display(), base_dir.display()))?;
    Ok(models)
}

/// A Ray head of the virtualenv: the entrypoint is `python train.py`, so the virtualenv's
/// python comes first on PATH, and the base model's directory and the Ray Train settings are
/// in the environment every job inherits.
fn start_head(venv_bin: &Path, models: &Path) -> Result<LocalHead> {
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let venv = venv_bin.parent().context("the virtualenv")?;
    let env: Vec<(String, String)> = [
        ("PATH", path),
        ("VIRTUAL_ENV", venv.display().to_string()),
        (MODELS_ENV, models.display().to_string()),
        ("HF_HUB_OFFLINE", "1".into()),
        ("TRANSFORMERS_OFFLINE", "1".into()),
        ("HF_HUB_DISABLE_TELEMETRY", "1".into()),
        ("BRIGHTRUN_RAY_NUM_WORKERS", "1".into()),
        ("BRIGHTRUN_RAY_CPUS_PER_WORKER", "1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    LocalHead::start(&venv_bin.join("ray"), 2, &env)
}

/// A `brightrun-worker` on the Ray backend shipping `entrypoints/ray-peft`; killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Inside the namespace: loopback up, then the stack, the head, the worker and the job.
pub fn inside() -> Result<ExitCode> {
    let python = PathBuf::from(
        std::env::var_os(PYTHON_ENV)
            .context("ray-peft-inside runs from `cargo xtask check-ray-peft`")?,
    );
    let models = PathBuf::from(std::env::var_os(MODELS_ENV).context("BRIGHTRUN_BASE_MODEL_DIR")?);
    ensure!(
        crate::ray::isolated()?,
        "ray-peft-inside runs only in the network namespace `cargo xtask check-ray-peft` makes"
    );
    let t = Instant::now();
    let stack = TestStack::start(Profile::Debug)?;
    let stack_time = t.elapsed();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let t = Instant::now();
    let head = start_head(python.parent().context("the virtualenv's bin")?, &models);
    let head_time = t.elapsed();
    let result = head
        .and_then(|head| runtime.block_on(run(&stack, &head, &python, (stack_time, head_time))));
    stack.stop()?;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("xtask: check-ray-peft FAILED: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// What the run found, for the summary.
#[derive(Default)]
struct Summary {
    lines: Vec<String>,
}

impl Summary {
    fn add(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("xtask: {line}");
        self.lines.push(line);
    }
}

async fn run(
    stack: &TestStack,
    head: &LocalHead,
    python: &Path,
    (stack_time, head_time): (Duration, Duration),
) -> Result<()> {
    let mut summary = Summary::default();
    summary.add(format!("stack up in {:.1} s", stack_time.as_secs_f64()));
    let http = reqwest::Client::new();
    summary.add(format!(
        "Ray {} head answering in {:.1} s (token auth, loopback only)",
        head.version,
        head_time.as_secs_f64()
    ));

    let testing = brightrun_stack::testing::TestStack {
        url: stack.url.clone(),
        anon_key: stack.anon_key.clone(),
        service_role_key: stack.service_role_key.clone(),
        db_url: stack.db_url.clone(),
        jwt_secret: crate::stack::TEST_JWT_SECRET.to_owned(),
    };
    let user = brightrun_stack::testing::mint_user(&testing, "ray-peft").await;
    let dataset = setup::root().join("crates/brightrun-worker/demo/support-bot.jsonl");
    let content = std::fs::read_to_string(&dataset)
        .with_context(|| format!("reading {}", dataset.display()))?;
    let dataset_id = ray_bench::ready_dataset(&testing, &user, &content).await?;
    let hyperparameters = json!({
        "base_model": BASE_MODEL, "learning_rate": 0.01, "batch_size": 2, "num_epochs": 2,
        "lora_rank": 8, "lora_alpha": 32, "lora_dropout": 0.05, "warmup_steps": 2,
        "weight_decay": 0.0, "max_grad_norm": 1.0,
    });
    let job = ray_bench::create_job(&testing, &user, dataset_id, &hyperparameters).await?;
    summary.add(format!(
        "job {job} queued: the demo dataset ({}), {hyperparameters}",
        dataset.display()
    ));

    let work = tempfile::tempdir()?;
    let worker = start_worker(stack, head, user.id, work.path())?;
    let t = Instant::now();
    let outcome = wait_done(stack, job, Duration::from_secs(15 * 60)).await;
    let run_time = t.elapsed();
    let submission = format!("brightrun-{job}-a1");
    let checked = match outcome {
        Ok((status, running)) if status == "completed" => {
            summary.add(format!(
                "job completed in {:.1} s after the worker started; progress seen while \
                 running (steps, polled every 250 ms): {}",
                run_time.as_secs_f64(),
                running.join(", ")
            ));
            verify(&http, stack, python, head, job, &submission, &mut summary).await
        }
        Ok((status, _)) => Err(anyhow::anyhow!(
            "the job ended {status}: {}",
            psql(
                &stack.db_url,
                &format!(
                    "select coalesce(error_message, '') from public.training_jobs where id = '{job}'"
                )
            )?
        )),
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        eprintln!(
            "--- the worker's log (last lines) ---\n{}",
            tail(&worker.log, 30)
        );
        eprintln!(
            "--- the Ray job's log (last lines) ---\n{}",
            ray_logs(&http, head, &submission)
                .await
                .map(|l| l
                    .lines()
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n"))
                .unwrap_or_else(|e| format!("(none: {e:#})"))
        );
        eprintln!(
            "--- the Ray head's log (last lines) ---\n{}",
            tail(&head.log(), 20)
        );
        return Err(e);
    }
    drop(worker);
    eprintln!("\nxtask check-ray-peft summary:");
    for line in &summary.lines {
        eprintln!("  {line}");
    }
    Ok(())
}

fn start_worker(
    stack: &TestStack,
    head: &LocalHead,
    user: uuid::Uuid,
    dir: &Path,
) -> Result<Worker> {
    let bin = setup::target_dir()?.join("debug/brightrun-worker");
    let log = dir.join("worker.log");
    let child = Command::new(&bin)
        .env("DATABASE_URL", &stack.db_url)
        .env("BRIGHTRUN_API_URL", &stack.url)
        .env("BRIGHTRUN_SERVICE_ROLE_KEY", &stack.service_role_key)
        .env("RAY_AUTH_TOKEN", &head.token)
        .env("RUST_LOG", "info,sqlx=warn")
        .args(["--worker-id", "ray-peft-check", "--log-format", "plain"])
        .arg("--work-dir")
        .arg(dir.join("work"))
        .args(["--poll-ms", "500", "--only-user", &user.to_string()])
        .args(["--backend", "ray", "--ray-address", &head.address])
        .arg("--ray-package")
        .arg(setup::root().join("entrypoints/ray-peft"))
        .args(["--ray-entrypoint", "python train.py"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Worker { child, log })
}

/// Waits for the job to end; prints its progress as it goes. Returns the final status and the
/// progress seen while it was running.
async fn wait_done(
    stack: &TestStack,
    job: uuid::Uuid,
    timeout: Duration,
) -> Result<(String, Vec<String>)> {
    let start = Instant::now();
    let mut last = String::new();
    let mut running = Vec::new();
    loop {
        let row = psql(
            &stack.db_url,
            &format!(
                "select status || ' ' || current_step || '/' || coalesce(total_steps::text, '?')
                   from public.training_jobs where id = '{job}'"
            ),
        )?;
        if row != last {
            eprintln!(
                "xtask: [{:>5.1} s] job {row}",
                start.elapsed().as_secs_f64()
            );
            last = row.clone();
            if let Some(progress) = row.strip_prefix("running ") {
                running.push(progress.to_owned());
            }
        }
        let status = row.split(' ').next().unwrap_or_default().to_owned();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            return Ok((status, running));
        }
        ensure!(
            start.elapsed() < timeout,
            "the job did not end within {} min (last: {row})",
            timeout.as_secs() / 60
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `GET /api/jobs/<path>` of the head, as JSON.
async fn ray_get(http: &reqwest::Client, head: &LocalHead, path: &str) -> Result<Value> {
    Ok(http
        .get(format!("{}/api/jobs/{path}", head.address))
        .bearer_auth(&head.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

async fn ray_logs(http: &reqwest::Client, head: &LocalHead, submission: &str) -> Result<String> {
    let logs = ray_get(http, head, &format!("{submission}/logs")).await?;
    Ok(logs["logs"].as_str().unwrap_or_default().to_owned())
}

/// The checks on a completed job.
async fn verify(
    http: &reqwest::Client,
    stack: &TestStack,
    python: &Path,
    head: &LocalHead,
    job: uuid::Uuid,
    submission: &str,
    summary: &mut Summary,
) -> Result<()> {
    // The Ray job: ours, run by the Python entrypoint, and its event lines.
    let ray = ray_get(http, head, submission).await?;
    ensure!(
        ray["status"] == "SUCCEEDED" && ray["entrypoint"] == "python train.py",
        "the Ray job is not a succeeded `python train.py`: {ray}"
    );
    let logs = ray_logs(http, head, submission).await?;
    let events: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"brightrun\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |kind: &str| events.iter().filter(|e| e["event"] == kind).count();
    let stages: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "stage")
        .filter_map(|e| e["stage"].as_str())
        .collect();
    ensure!(
        events.last().is_some_and(|e| e["event"] == "done"),
        "the entrypoint's last event is not `done`"
    );
    summary.add(format!(
        "Ray job {submission} SUCCEEDED (`python train.py`): stages {stages:?}, {} step, {} \
         validation, {} artifact events",
        count("step"),
        count("validation"),
        count("artifact")
    ));

    // Metrics: one row per step, every step of the run.
    let row = psql(
        &stack.db_url,
        &format!(
            "select count(*), count(distinct m.step), max(j.total_steps),
                    count(m.validation_loss),
                    (array_agg(m.training_loss order by m.step))[1],
                    (array_agg(m.training_loss order by m.step desc))[1]
               from public.metrics_points m join public.training_jobs j on j.id = m.job_id
              where m.job_id = '{job}'"
        ),
    )?;
    let f: Vec<&str> = row.split('|').collect();
    ensure!(f.len() == 6, "unexpected metrics row {row:?}");
    let (points, steps, total) = (f[0], f[1], f[2]);
    ensure!(points != "0", "no metrics rows");
    ensure!(points == steps, "{points} metrics rows for {steps} steps");
    ensure!(steps == total, "{steps} steps of {total}");
    ensure!(
        count("step").to_string() == total,
        "{} step events for {total} steps",
        count("step")
    );
    summary.add(format!(
        "metrics: {points} rows for {total} steps ({} with a validation loss); training loss {} → {}",
        f[3], f[4], f[5]
    ));

    // Artifacts: every stored file is what the entrypoint reported.
    let row = psql(
        &stack.db_url,
        &format!(
            "select artifacts::text || E'\\t' || quality_metrics::text || E'\\t' || training_summary::text
               from public.model_artifacts where job_id = '{job}'"
        ),
    )?;
    let mut parts = row.split('\t');
    let artifacts: Value = serde_json::from_str(parts.next().unwrap_or_default())
        .with_context(|| format!("no artifact row for the job: {row:?}"))?;
    let quality: Value = serde_json::from_str(parts.next().unwrap_or("null"))?;
    let training: Value = serde_json::from_str(parts.next().unwrap_or("null"))?;
    ensure!(training["backend"] == "ray", "training_summary: {training}");
    let files = artifacts["files"].as_array().context("artifacts.files")?;
    let adapter = tempfile::tempdir()?;
    let mut names = Vec::new();
    for file in files {
        let name = file["name"].as_str().context("name")?;
        let path = file["path"].as_str().context("path")?;
        ensure!(
            path.contains(&format!("/{job}/attempt-1/")),
            "{path} is not under the attempt's prefix"
        );
        let bytes = http
            .get(format!(
                "{}/storage/v1/object/lora-models/{path}",
                stack.url
            ))
            .header("apikey", &stack.service_role_key)
            .bearer_auth(&stack.service_role_key)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("downloading {path}"))?
            .bytes()
            .await?;
        ensure!(
            Some(bytes.len() as u64) == file["size"].as_u64(),
            "{name}: {} bytes stored, {} recorded",
            bytes.len(),
            file["size"]
        );
        let sha = brightrun_stack::testing::sha256_hex(&bytes);
        ensure!(
            file["sha256"].as_str() == Some(sha.as_str()),
            "{name}: SHA-256 {sha} stored, {} recorded",
            file["sha256"]
        );
        let reported = events
            .iter()
            .any(|e| e["event"] == "artifact" && e["name"] == name && e["sha256"] == sha.as_str());
        ensure!(
            reported,
            "{name} ({sha}) is not what the entrypoint reported"
        );
        std::fs::write(adapter.path().join(name), &bytes)?;
        names.push(name.to_owned());
    }
    for wanted in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "brightrun_adapter.json",
    ] {
        ensure!(
            names.iter().any(|n| n == wanted),
            "{wanted} is missing from {names:?}"
        );
    }
    let info: Value = serde_json::from_slice(&std::fs::read(
        adapter.path().join("brightrun_adapter.json"),
    )?)?;
    ensure!(
        info["backend"] == "ray-peft",
        "brightrun_adapter.json was not written by the PEFT entrypoint: {}",
        info["backend"]
    );
    summary.add(format!(
        "artifacts: {} files, sizes and SHA-256 match the entrypoint's reports: {}",
        names.len(),
        names.join(", ")
    ));
    summary.add(format!(
        "final losses: training {}, validation {}",
        quality["final_training_loss"], quality["final_validation_loss"]
    ));

    // PEFT loads the downloaded adapter and computes the trainer's own losses on its probe.
    let out = Command::new(python)
        .arg(setup::root().join("crates/brightrun-worker/demo/load_with_peft.py"))
        .arg(adapter.path())
        .env("PYTHONWARNINGS", "ignore")
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .context("running load_with_peft.py")?;
    let said = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "PEFT could not load the adapter or reproduce its losses:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        summary.add(format!("load_with_peft.py: {}", line.trim()));
    }
    Ok(())
}
