//! `brightrun`: the BrightRun client for terminals and scripts.
//!
//! Every command is a thin adapter over `brightrun-client` (the same handlers the desktop window
//! uses): it parses arguments, gets a session, calls one handler and prints the result, for
//! humans by default and as JSON with `--json`. Nothing here decides a business rule.

mod context;
mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use brightrun_client::api::{EstimateRequest, NotificationFilter};
use brightrun_client::transfer::{
    DownloadOptions, Downloader, TransferError, UploadOptions, UploadRequest, Uploader,
};
use brightrun_core::{
    CreateTrainingJobInput, HyperparameterConfig, JobStage, JobStatus, PresetId, ValidationOptions,
};
use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::context::Context;
use crate::output::{Output, ProgressMode};

#[derive(Parser)]
#[command(
    name = "brightrun",
    version,
    about = "BrightRun LoRA training from the terminal"
)]
struct Cli {
    /// The project: a hosted Supabase URL, or the local brightrun-stack.
    #[arg(long, global = true, env = "BRIGHTRUN_URL", default_value = context::LOCAL_URL)]
    url: String,
    /// The project's anon (public) key. brightrun-stack prints it as `anon key:` when it starts.
    #[arg(
        long,
        global = true,
        env = "BRIGHTRUN_ANON_KEY",
        hide_env_values = true
    )]
    anon_key: Option<String>,
    /// Where the local database (upload state, caches) lives.
    #[arg(long, global = true, env = "BRIGHTRUN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print results as JSON (one document on stdout).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sign in with email and password (the password is read from BRIGHTRUN_PASSWORD or stdin).
    Login {
        #[arg(long)]
        email: String,
    },
    /// Sign out here and on the server.
    Logout,
    /// Who is signed in.
    Whoami,
    /// Validate, upload and list JSONL chat datasets.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Estimate, start, follow, cancel and clone LoRA training jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// List trained adapters and download them, verified.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Your notifications, newest first.
    Notifications {
        /// Only unread ones.
        #[arg(long)]
        unread: bool,
        /// Mark all as read afterwards.
        #[arg(long)]
        mark_read: bool,
    },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Validate a JSONL file locally and print the full report (exit code 1 on errors).
    Validate { file: PathBuf },
    /// Validate and upload a JSONL file; running it again resumes an interrupted upload.
    Upload {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Make a new dataset even if this file was uploaded before.
        #[arg(long)]
        new: bool,
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Bytes per PATCH (default 6 MiB, what hosted Supabase requires).
        #[arg(long, hide = true)]
        chunk_size: Option<u64>,
    },
    /// Your datasets, newest first.
    List,
    /// One dataset: status, statistics, validation errors.
    Show { id: Uuid },
}

#[derive(Clone, Copy, ValueEnum)]
enum Preset {
    Conservative,
    Balanced,
    Aggressive,
    Custom,
}

impl Preset {
    fn id(self) -> PresetId {
        match self {
            Self::Conservative => PresetId::Conservative,
            Self::Balanced => PresetId::Balanced,
            Self::Aggressive => PresetId::Aggressive,
            Self::Custom => PresetId::Custom,
        }
    }
}

#[derive(clap::Args)]
struct JobSpec {
    #[arg(long)]
    dataset: Uuid,
    /// GPU type from the server's catalogue, e.g. A100-80GB.
    #[arg(long)]
    gpu: String,
    #[arg(long, default_value_t = 1)]
    gpus: u32,
    /// The hyperparameters to start from (the server's preset); each Hyperparameters option
    /// changes one value of it.
    #[arg(long, value_enum, default_value_t = Preset::Balanced)]
    preset: Preset,
    #[command(flatten)]
    overrides: Overrides,
}

/// Changes to the preset's hyperparameters, one value each. Values that cannot be right are
/// refused here; the server checks the whole configuration against its bounds when the job is
/// created, and says which value is out of range.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Hyperparameters (default: the preset's)")]
struct Overrides {
    /// Base model id, e.g. mistralai/Mistral-7B-v0.1.
    #[arg(long, value_name = "MODEL", value_parser = model_id)]
    base_model: Option<String>,
    /// Learning rate (the peak, after warm-up), e.g. 0.0002.
    #[arg(long, value_name = "LR", value_parser = above_zero, allow_negative_numbers = true)]
    learning_rate: Option<f64>,
    /// Training pairs per batch.
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    batch_size: Option<u32>,
    /// Passes over the training set.
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    epochs: Option<u32>,
    /// LoRA rank r. The preset's --lora-alpha stays unless given too.
    #[arg(long, value_name = "R", value_parser = at_least_one, allow_negative_numbers = true)]
    lora_rank: Option<u32>,
    /// LoRA alpha (the adapter's scale is alpha / r).
    #[arg(long, value_name = "ALPHA", value_parser = at_least_one, allow_negative_numbers = true)]
    lora_alpha: Option<u32>,
    /// Dropout on the LoRA layers, at least 0 and below 1.
    #[arg(long, value_name = "P", value_parser = probability, allow_negative_numbers = true)]
    lora_dropout: Option<f64>,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, value_name = "STEPS", value_parser = zero_or_more_whole, allow_negative_numbers = true)]
    warmup_steps: Option<u32>,
    /// AdamW weight decay.
    #[arg(long, value_name = "W", value_parser = zero_or_more, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Batches per optimizer step.
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    gradient_accumulation_steps: Option<u32>,
    /// Gradient clipping norm.
    #[arg(long, value_name = "NORM", value_parser = above_zero, allow_negative_numbers = true)]
    max_grad_norm: Option<f64>,
    /// A JSON object of hyperparameters (the names `jobs show` prints) that replace the
    /// preset's, e.g. crates/brightrun-worker/demo/support-bot.hyperparameters.json; the
    /// options above still win over it.
    #[arg(long, value_name = "FILE")]
    hyperparameters: Option<PathBuf>,
}

/// The keys of a hyperparameters file (HyperparameterConfig's fields).
const HYPERPARAMETER_KEYS: [&str; 11] = [
    "base_model",
    "learning_rate",
    "batch_size",
    "num_epochs",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "warmup_steps",
    "weight_decay",
    "gradient_accumulation_steps",
    "max_grad_norm",
];

fn read_hyperparameters(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let serde_json::Value::Object(map) = value else {
        anyhow::bail!(
            "{} must hold a JSON object of hyperparameters",
            path.display()
        );
    };
    if let Some(key) = map
        .keys()
        .find(|k| !HYPERPARAMETER_KEYS.contains(&k.as_str()))
    {
        anyhow::bail!(
            "unknown hyperparameter {key:?} in {} (known: {})",
            path.display(),
            HYPERPARAMETER_KEYS.join(", ")
        );
    }
    Ok(map)
}

impl Overrides {
    /// `preset` with the file's values, then the options', replaced.
    fn apply(&self, preset: HyperparameterConfig) -> Result<HyperparameterConfig> {
        let mut hp = preset;
        if let Some(path) = &self.hyperparameters {
            let mut merged = serde_json::to_value(&hp)?;
            for (key, value) in read_hyperparameters(path)? {
                merged[key] = value;
            }
            hp = serde_json::from_value(merged).with_context(|| {
                format!(
                    "the hyperparameters in {} have the wrong types",
                    path.display()
                )
            })?;
        }
        if let Some(v) = &self.base_model {
            hp.base_model.clone_from(v);
        }
        if let Some(v) = self.learning_rate {
            hp.learning_rate = v;
        }
        if let Some(v) = self.batch_size {
            hp.batch_size = v;
        }
        if let Some(v) = self.epochs {
            hp.num_epochs = v;
        }
        if let Some(v) = self.lora_rank {
            hp.lora_rank = v;
        }
        if let Some(v) = self.lora_alpha {
            hp.lora_alpha = v;
        }
        if let Some(v) = self.lora_dropout {
            hp.lora_dropout = v;
        }
        hp.warmup_steps = self.warmup_steps.or(hp.warmup_steps);
        hp.weight_decay = self.weight_decay.or(hp.weight_decay);
        hp.gradient_accumulation_steps = self
            .gradient_accumulation_steps
            .or(hp.gradient_accumulation_steps);
        hp.max_grad_norm = self.max_grad_norm.or(hp.max_grad_norm);
        Ok(hp)
    }

    /// The epochs an estimate should use: the option's, else the file's, else the preset's
    /// (`None`: the server takes the preset's).
    fn epochs(&self) -> Result<Option<u32>> {
        if self.epochs.is_some() {
            return Ok(self.epochs);
        }
        let Some(path) = &self.hyperparameters else {
            return Ok(None);
        };
        match read_hyperparameters(path)?.get("num_epochs") {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .with_context(|| {
                    format!("num_epochs in {} must be a whole number", path.display())
                }),
        }
    }
}

fn number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n),
        _ => Err("not a number".to_owned()),
    }
}

fn above_zero(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    if n > 0.0 {
        Ok(n)
    } else {
        Err("must be greater than 0".to_owned())
    }
}

fn zero_or_more(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    if n >= 0.0 {
        Ok(n)
    } else {
        Err("must not be negative".to_owned())
    }
}

/// A dropout rate: 1 would drop every activation.
fn probability(text: &str) -> Result<f64, String> {
    let n = number(text)?;
    if (0.0..1.0).contains(&n) {
        Ok(n)
    } else {
        Err("must be at least 0 and below 1".to_owned())
    }
}

fn whole(text: &str, min: u32) -> Result<u32, String> {
    let n: i64 = text.parse().map_err(|_| "not a whole number".to_owned())?;
    if n < i64::from(min) {
        return Err(format!("must be at least {min}"));
    }
    u32::try_from(n).map_err(|_| "too large".to_owned())
}

fn at_least_one(text: &str) -> Result<u32, String> {
    whole(text, 1)
}

fn zero_or_more_whole(text: &str) -> Result<u32, String> {
    whole(text, 0)
}

fn model_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if id.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(id.to_owned())
    }
}

#[derive(Subcommand)]
enum JobsCommand {
    /// What a job would cost (the server computes it).
    Estimate(JobSpec),
    /// Queue a training job.
    Create(JobSpec),
    /// Your jobs, newest first.
    List,
    /// One job: status, progress, metrics, cost.
    Show { id: Uuid },
    /// Follow a job until it ends.
    Watch {
        id: Uuid,
        /// Seconds between polls.
        #[arg(long, default_value_t = 5)]
        interval: u64,
    },
    /// Cancel a queued or running job.
    Cancel { id: Uuid },
    /// Queue a copy of an earlier job (same dataset, preset, hyperparameters and GPUs); the
    /// hyperparameter options change single values of the copy.
    Clone {
        id: Uuid,
        #[command(flatten)]
        overrides: Overrides,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Your trained adapters.
    List,
    /// Download a model's files, verified against their SHA-256, into a folder.
    Download {
        /// The model (artifact) id, or the id of the job that made it.
        id: Uuid,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Download even when the server recorded no SHA-256 (the result is marked unverified).
        #[arg(long)]
        allow_unverified: bool,
        #[arg(long, hide = true)]
        segment_threshold: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, &out)) {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: &Output) -> Result<ExitCode> {
    let ctx = Context::new(&cli.url, cli.anon_key.as_deref(), cli.data_dir.clone())?;
    match cli.command {
        Command::Login { email } => {
            let session = ctx.login(&email).await?;
            out.value(
                &serde_json::json!({"user_id": session.user_id(), "email": session.email()}),
                || format!("Signed in as {email}."),
            );
        }
        Command::Logout => {
            let had = ctx.logout().await?;
            out.value(&serde_json::json!({"signed_out": had}), || {
                if had {
                    "Signed out.".to_owned()
                } else {
                    "Not signed in.".to_owned()
                }
            });
        }
        Command::Whoami => {
            let session = ctx.session().await?;
            let url = session.project().url.clone();
            out.value(
                &serde_json::json!({"user_id": session.user_id(), "email": session.email(), "url": url.as_str()}),
                || {
                    format!(
                        "{} ({}) at {}",
                        session.email().unwrap_or("signed in with a token"),
                        session.user_id(),
                        url
                    )
                },
            );
        }
        Command::Datasets(cmd) => return datasets(&ctx, out, cmd).await,
        Command::Jobs(cmd) => jobs(&ctx, out, cmd).await?,
        Command::Models(cmd) => models(&ctx, out, cmd).await?,
        Command::Notifications { unread, mark_read } => {
            let api = ctx.api().await?;
            let filter = if unread {
                NotificationFilter::Unread
            } else {
                NotificationFilter::All
            };
            let list = api.notifications(filter).await?;
            out.value(&list, || output::notifications(&list));
            if mark_read {
                api.mark_notifications_read(None).await?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn datasets(ctx: &Context, out: &Output, cmd: DatasetsCommand) -> Result<ExitCode> {
    match cmd {
        DatasetsCommand::Validate { file } => {
            let progress = out.progress(ProgressMode::Auto, "validating");
            let (report, _) = brightrun_client::transfer::upload::validate_file(
                &file,
                &ValidationOptions::default(),
                progress.sink(),
            )
            .await
            .with_context(|| format!("reading {}", file.display()))?;
            progress.finish();
            out.value(&report, || output::report(&file, &report));
            return Ok(if report.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        DatasetsCommand::Upload {
            file,
            name,
            description,
            new,
            progress,
            chunk_size,
        } => {
            let session = ctx.session().await?;
            let store = ctx.upload_store().await?;
            let mut options = UploadOptions::default();
            if let Some(chunk) = chunk_size {
                options.chunk_size = chunk.max(1);
            }
            let uploader = Uploader::new(session, store, options);
            let request = UploadRequest {
                path: file.clone(),
                name,
                description,
                format: None,
                force_new: new,
            };
            let bar = out.progress(progress, "uploading");
            let result = uploader.upload(&request, bar.sink()).await;
            bar.finish();
            match result {
                Ok(outcome) => {
                    let json = serde_json::json!({
                        "dataset_id": outcome.dataset_id,
                        "bytes": outcome.bytes,
                        "resumed_from": outcome.resumed_from,
                        "already_uploaded": outcome.already_uploaded,
                        "warnings": outcome.report.warning_count,
                        "dataset": outcome.dataset,
                    });
                    out.value(&json, || output::uploaded(&file, &outcome));
                }
                Err(TransferError::Invalid(report)) => {
                    out.value(&report, || output::report(&file, &report));
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e).with_context(|| format!("uploading {}", file.display())),
            }
        }
        DatasetsCommand::List => {
            let list = ctx.api().await?.list_datasets().await?;
            out.value(&list, || output::datasets(&list));
        }
        DatasetsCommand::Show { id } => {
            let dataset = ctx.api().await?.dataset(id).await?;
            out.value(&dataset, || output::dataset(&dataset));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Of the hyperparameters only the epochs change the price; the server takes the preset's when
/// none are given.
fn estimate_request(spec: &JobSpec) -> Result<EstimateRequest> {
    Ok(EstimateRequest {
        dataset_id: spec.dataset,
        gpu_type: spec.gpu.clone(),
        gpu_count: spec.gpus,
        epochs: spec.overrides.epochs()?,
        preset_id: Some(spec.preset.id()),
    })
}

/// What `jobs watch` prints a line for: a change of status, stage or step. The stage counts
/// because a job ends with its last step logged while still `running` (validating, saving): the
/// line for that and the `completed` line that follows show the same numbers, and without the
/// stage the first one reads as the job's final state.
type WatchKey = (JobStatus, JobStage, i64);

async fn jobs(ctx: &Context, out: &Output, cmd: JobsCommand) -> Result<()> {
    let api = ctx.api().await?;
    match cmd {
        JobsCommand::Estimate(spec) => {
            let estimate = api
                .estimate_training_cost(&estimate_request(&spec)?)
                .await?;
            out.value(&estimate, || output::estimate(&estimate));
        }
        JobsCommand::Create(spec) => {
            // The server's preset is the starting point (its table is the source of truth).
            let preset_id = spec.preset.id();
            let preset = api
                .presets()
                .await?
                .into_iter()
                .find(|p| p.id == preset_id)
                .with_context(|| format!("the server offers no preset {preset_id}"))?;
            let hyperparameters = spec.overrides.apply(preset.hyperparameters)?;
            let gpu = api
                .gpu_types()
                .await?
                .into_iter()
                .find(|g| g.id == spec.gpu)
                .with_context(|| format!("the server offers no GPU type {:?}", spec.gpu))?;
            let input = CreateTrainingJobInput {
                dataset_id: spec.dataset,
                preset_id: spec.preset.id(),
                hyperparameters,
                gpu_config: gpu.config(spec.gpus),
            };
            let job = api
                .create_training_job(&input)
                .await
                .context("creating the training job")?;
            warn_about_schedule(&job);
            out.value(&job, || output::job(&job));
        }
        JobsCommand::List => {
            let list = api.list_jobs().await?;
            out.value(&list, || output::jobs(&list));
        }
        JobsCommand::Show { id } => {
            let job = api.job(id).await?;
            out.value(&job, || output::job(&job));
        }
        JobsCommand::Watch { id, interval } => {
            let mut last: Option<WatchKey> = None;
            loop {
                let job = api.job(id).await?;
                let now = (
                    job.status.clone(),
                    job.current_stage.clone(),
                    job.current_step,
                );
                if last.as_ref() != Some(&now) {
                    out.line(&job, || output::job_line(&job));
                    last = Some(now);
                }
                if job.status.is_terminal() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))).await;
            }
        }
        JobsCommand::Cancel { id } => {
            let job = api.cancel_training_job(id).await?;
            out.value(&job, || output::job(&job));
        }
        JobsCommand::Clone { id, overrides } => {
            let mut input = api.clone_job(id).await?;
            input.hyperparameters = overrides.apply(input.hyperparameters)?;
            let job = api
                .create_training_job(&input)
                .await
                .context("creating the training job")?;
            warn_about_schedule(&job);
            out.value(&job, || output::job(&job));
        }
    }
    Ok(())
}

/// A command line clap refuses: its own text, or with `--json` one JSON error document on
/// stdout (as every other error), so a script reading stdout always gets JSON. Exit code 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os().any(|a| a == "--json");
    if !wants_json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    let document = serde_json::json!({"error": {"code": "usage", "message": message}});
    output::print_line(&document.to_string());
    ExitCode::from(2)
}

/// A warm-up as long as the run (see `HyperparameterConfig::schedule_warning`), on stderr.
fn warn_about_schedule(job: &brightrun_core::TrainingJob) {
    let total_steps = job.total_steps.and_then(|n| u64::try_from(n).ok());
    if let Some(warning) = total_steps.and_then(|n| job.hyperparameters.schedule_warning(n)) {
        eprintln!(
            "warning: {warning}. To change it: brightrun jobs cancel {}, then brightrun jobs clone {} --warmup-steps N.",
            job.id, job.id
        );
    }
}

async fn models(ctx: &Context, out: &Output, cmd: ModelsCommand) -> Result<()> {
    let api = ctx.api().await?;
    match cmd {
        ModelsCommand::List => {
            let list = api.list_model_artifacts().await?;
            out.value(&list, || output::models(&list));
        }
        ModelsCommand::Download {
            id,
            to,
            progress,
            allow_unverified,
            segment_threshold,
        } => {
            // The id may name the artifact or the job that made it.
            let artifact_id = match api.model_artifact_for_job(id).await {
                Ok(Some(a)) => a.id,
                _ => id,
            };
            let mut options = DownloadOptions {
                require_digest: !allow_unverified,
                ..DownloadOptions::default()
            };
            if let Some(t) = segment_threshold {
                options.segment_threshold = t;
            }
            let downloader = Downloader::new(api.session().clone(), options);
            let bar = out.progress(progress, "downloading");
            let result = downloader
                .download_artifact(artifact_id, &to, bar.sink())
                .await;
            bar.finish();
            let files = result.with_context(|| format!("downloading model {artifact_id}"))?;
            out.value(&files, || output::downloaded(&files));
        }
    }
    Ok(())
}
