//! `brightrun-worker`: the job runner process.
//!
//! ```text
//! brightrun-worker --database-url postgresql://... --api-url http://127.0.0.1:54321 \
//!     --service-role-key "$KEY" --concurrency 2 --backend candle
//! ```
//! SIGTERM or Ctrl-C stops claiming, hands running jobs back to the queue (lease released,
//! status `queued`) and exits.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use brightrun_supabase::Secret;
use brightrun_worker::queue::QueuePolicy;
use brightrun_worker::remote::ray::RayPackage;
use brightrun_worker::remote::{FakeProvider, RayOptions, RayProvider};
use brightrun_worker::trainer::candle::{CandleBackend, CandleOptions};
use brightrun_worker::trainer::scripted::ScriptedBackend;
use brightrun_worker::{Backend, WorkerConfig};
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendName {
    /// A real LoRA adapter trained on the CPU with candle.
    Candle,
    /// Deterministic fake training (tests, load runs).
    Scripted,
    /// The remote-provider path against a scripted fake provider.
    FakeRemote,
    /// Each job as a Ray job on a Ray cluster (`--ray-address`; the token from
    /// `RAY_AUTH_TOKEN` or `--ray-token-file`).
    Ray,
}

#[derive(Debug, Parser)]
#[command(
    name = "brightrun-worker",
    version,
    about = "Runs BrightRun dataset validations and LoRA training jobs",
    args_override_self = true
)]
struct Args {
    /// PostgreSQL URL of a role owning the tables (brightrun-stack prints it as `DB URL:`).
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Project URL, for Storage (brightrun-stack's `API URL:`).
    #[arg(long, env = "BRIGHTRUN_API_URL")]
    api_url: String,
    /// service_role key for Storage. Prefer the environment variable: arguments are visible
    /// to other users in the process list.
    #[arg(long, env = "BRIGHTRUN_SERVICE_ROLE_KEY", hide_env_values = true)]
    service_role_key: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Threads one dataset validation uses. Default: the cores divided among `--concurrency`
    /// jobs (at least one), so validations side by side do not oversubscribe the cores.
    #[arg(long)]
    validation_threads: Option<usize>,
    #[arg(long, value_enum, default_value_t = BackendName::Candle)]
    backend: BackendName,
    /// Defaults to `worker-<host>-<pid>`.
    #[arg(long)]
    worker_id: Option<String>,
    /// Where adapters are written before upload. Default: `$XDG_DATA_HOME/brightrun/worker`
    /// (`~/.local/share/brightrun/worker`; `/var/lib/brightrun/worker` as root), beside the
    /// local stack's data.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// candle's base-model cache (built once, deterministic). Default: `<work-dir>/candle-cache`.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Candle backend: train on this GGUF llama model (e.g. SmolLM2-135M-Instruct, which
    /// `cargo xtask fetch-smollm2` downloads) instead of the built-in tiny byte-level model.
    #[arg(long, value_name = "FILE")]
    base_gguf: Option<PathBuf>,
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    #[arg(long, default_value_t = 2_000)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 2_000)]
    poll_ms: u64,
    #[arg(long, default_value_t = 5_000)]
    reap_ms: u64,
    /// Backoff before the first retry; doubles per failure.
    #[arg(long, default_value_t = 10_000)]
    retry_backoff_ms: u64,
    #[arg(long, default_value_t = 600_000)]
    max_backoff_ms: u64,
    #[arg(long, default_value_t = 20_000)]
    shutdown_grace_ms: u64,
    /// Scripted and fake-remote backends: steps per job (default: from the dataset).
    #[arg(long)]
    scripted_steps: Option<u64>,
    /// Scripted and fake-remote backends: time per step.
    #[arg(long, default_value_t = 20)]
    scripted_step_ms: u64,
    /// Fake-remote backend: where the fake provider keeps its state. Default:
    /// `<work-dir>/fake-remote`.
    #[arg(long)]
    fake_remote_dir: Option<PathBuf>,
    /// Ray backend: the cluster's dashboard address (the Jobs API), e.g. `http://127.0.0.1:8265`.
    #[arg(long, env = "BRIGHTRUN_RAY_ADDRESS", required_if_eq("backend", "ray"))]
    ray_address: Option<url::Url>,
    /// Ray backend: a file holding the cluster's token (otherwise `RAY_AUTH_TOKEN`).
    #[arg(long, value_name = "FILE")]
    ray_token_file: Option<PathBuf>,
    /// Ray backend: the training entrypoint to ship (default: `brightrun-train` beside this
    /// program).
    #[arg(long, value_name = "FILE", conflicts_with = "ray_package")]
    ray_train_binary: Option<PathBuf>,
    /// Ray backend: ship this directory's files as the job's working directory instead, and
    /// run `--ray-entrypoint` in it (e.g. `entrypoints/ray-peft` on a GPU cluster).
    #[arg(long, value_name = "DIR", requires = "ray_entrypoint")]
    ray_package: Option<PathBuf>,
    /// Ray backend: the command that runs a `--ray-package` (it keeps docs/entrypoint.md).
    #[arg(long, value_name = "COMMAND", requires = "ray_package")]
    ray_entrypoint: Option<String>,
    /// Ray backend: a pip requirement Ray installs for the entrypoint (repeatable).
    #[arg(long = "ray-pip", value_name = "REQUIREMENT")]
    ray_pip: Vec<String>,
    /// Ray backend: CPUs each job's entrypoint asks for (and trains on).
    #[arg(long, default_value_t = 1)]
    ray_entrypoint_cpus: u32,
    /// Ray backend: how long the project's signed upload URLs last (hosted Supabase: 2 h;
    /// self-hosted: `UPLOAD_SIGNED_URL_EXPIRATION_TIME`). The worker renews a running job's
    /// upload URLs at half of it.
    #[arg(long, default_value_t = 7200)]
    ray_upload_url_lifetime_s: u64,
    /// Ray backend: a job that has not started after this long is stopped and retried.
    #[arg(long, default_value_t = 900)]
    ray_pending_timeout_s: u64,
    /// Claim only this user's work (repeatable): dedicated capacity for a tenant.
    #[arg(long = "only-user")]
    only_users: Vec<uuid::Uuid>,
    /// `json`: one JSON object per line (for log collectors); `plain`: text without colours;
    /// `auto`: coloured text on a terminal, plain otherwise.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Plain,
    Json,
}

/// The worker's directory when `--work-dir` is not given (`brightrun_dirs`: beside the local
/// stack's data), so `cargo xtask run` and a bare `brightrun-worker` use the same place and
/// nothing is written into the current directory.
fn default_work_dir() -> Result<PathBuf> {
    brightrun_dirs::Dirs::from_process()
        .worker_data()
        .context("no --work-dir given and neither XDG_DATA_HOME nor HOME is set")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// candle reads its thread counts from the environment: `RAYON_NUM_THREADS` on every matmul
/// (unset, it works the count out from `/proc` each time and splits small products over
/// threads) and `CANDLE_NUM_THREADS` for a spinning pool at first use. A job trains on one
/// thread by design (the worker runs `--concurrency` jobs side by side; more threads per job
/// spin against each other), so a worker started without them re-executes itself with the
/// missing ones at 1 (same PID; setting them in-process would take `unsafe`). An operator's own
/// values are kept.
fn single_threaded_candle() -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let missing: Vec<&str> = ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"]
        .into_iter()
        .filter(|k| std::env::var_os(k).is_none_or(|v| v.is_empty()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the worker binary")?;
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    for key in missing {
        command.env(key, "1");
    }
    Err(command.exec()).context("re-executing with single-threaded candle")
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.backend == BackendName::Candle {
        single_threaded_candle()?;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(serve(args))
}

/// The Ray provider of `--backend ray`, after checking that the cluster answers and takes the
/// token: a wrong address or token is the operator's mistake, not a reason to fail users' jobs.
async fn ray_provider(args: &Args) -> Result<RayProvider> {
    let address = args
        .ray_address
        .clone()
        .context("--backend ray needs --ray-address")?;
    let token = match &args.ray_token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading the Ray token from {}", file.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("RAY_AUTH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    }
    .map(Secret::new);
    let package = match (&args.ray_package, &args.ray_entrypoint) {
        (Some(dir), Some(entrypoint)) => {
            RayPackage::directory(dir, entrypoint.clone(), args.ray_pip.clone())
                .with_context(|| format!("reading the package {}", dir.display()))?
        }
        _ => {
            let binary = match &args.ray_train_binary {
                Some(path) => path.clone(),
                None => std::env::current_exe()
                    .context("locating the worker binary")?
                    .with_file_name("brightrun-train"),
            };
            anyhow::ensure!(
                binary.is_file(),
                "the training entrypoint {} does not exist (build it with `cargo build -p brightrun-worker`, or give --ray-train-binary)",
                binary.display()
            );
            let mut package = RayPackage::brightrun_train(binary);
            package.pip = args.ray_pip.clone();
            package
        }
    };
    let mut options = RayOptions::new(address.clone(), token, package);
    options.entrypoint_cpus = args.ray_entrypoint_cpus.max(1);
    options.pending_timeout = Duration::from_secs(args.ray_pending_timeout_s);
    options.ticket_lifetime = Duration::from_secs(args.ray_upload_url_lifetime_s.max(2));
    let api_url = url::Url::parse(&args.api_url).context("--api-url is not a URL")?;
    let key = Secret::new(args.service_role_key.clone());
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")?;
    let storage = brightrun_supabase::Storage::new(http, &api_url, key.clone(), Arc::new(key));
    let provider = RayProvider::new(options, storage)?;
    match provider.api().check().await {
        Ok(version) => tracing::info!(%address, ray_version = %version, "using the Ray cluster"),
        Err(e @ brightrun_worker::remote::RemoteError::Rejected(_)) => {
            return Err(e).with_context(|| format!("the Ray cluster at {address} refused us"));
        }
        Err(e) => {
            tracing::warn!(%address, error = %e, "the Ray cluster does not answer yet; jobs wait for it")
        }
    }
    Ok(provider)
}

async fn serve(args: Args) -> Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Structured: every event carries its fields (job_id, attempt, worker_id, ...), as
    // `key=value` in text; with `--log-format json`, as members of the line's object, and the
    // job's span fields (job_id, attempt) under `span`.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Plain => logs.with_ansi(false).init(),
        LogFormat::Auto => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let work_dir = match args.work_dir.clone() {
        Some(dir) => dir,
        None => default_work_dir()?,
    };

    let ms = Duration::from_millis;
    let backend = match args.backend {
        BackendName::Candle => {
            let candle = Arc::new(CandleBackend::with_options(
                args.cache_dir
                    .unwrap_or_else(|| work_dir.join("candle-cache")),
                CandleOptions {
                    gguf: args.base_gguf.clone(),
                    ..CandleOptions::default()
                },
            ));
            // A base model given by file is checked (and cached) before the first claim: a
            // wrong path is the operator's mistake, not a reason to fail users' jobs.
            if let Some(path) = args.base_gguf {
                let prepared = candle.clone();
                tokio::task::spawn_blocking(move || {
                    prepared.prepare_base_model(&std::sync::atomic::AtomicBool::new(false))
                })
                .await?
                .with_context(|| format!("cannot use {} as the base model", path.display()))?;
            }
            Backend::Local(candle)
        }
        BackendName::Scripted => Backend::Local(Arc::new(ScriptedBackend {
            total_steps: args.scripted_steps,
            step_time: ms(args.scripted_step_ms),
        })),
        BackendName::Ray => Backend::Remote(Arc::new(ray_provider(&args).await?)),
        BackendName::FakeRemote => Backend::Remote(Arc::new(FakeProvider {
            dir: args
                .fake_remote_dir
                .unwrap_or_else(|| work_dir.join("fake-remote")),
            total_steps: args.scripted_steps.unwrap_or(10),
            step_time: ms(args.scripted_step_ms),
        })),
    };
    let mut config = WorkerConfig::new(
        args.database_url,
        args.api_url,
        Secret::new(args.service_role_key),
        work_dir.join("jobs"),
    );
    config.worker_id = args.worker_id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".into());
        format!("worker-{host}-{}", std::process::id())
    });
    config.concurrency = args.concurrency.max(1);
    config.validation_threads = args.validation_threads.map(|n| n.max(1));
    config.policy = QueuePolicy {
        lease: ms(args.lease_ms),
        base_backoff: ms(args.retry_backoff_ms),
        max_backoff: ms(args.max_backoff_ms),
        ..QueuePolicy::default()
    };
    config.heartbeat = ms(args.heartbeat_ms);
    config.poll_interval = ms(args.poll_ms);
    config.reap_interval = ms(args.reap_ms);
    config.shutdown_grace = ms(args.shutdown_grace_ms);
    config.only_users = Some(args.only_users).filter(|u| !u.is_empty());
    brightrun_worker::run(config, backend, shutdown_signal())
        .await
        .context("worker failed")?;
    Ok(())
}
