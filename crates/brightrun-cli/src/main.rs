//! `brightrun`: the BrightRun client for terminals and scripts.
//!
//! Every command is a thin adapter over `brightrun-client` (the same handlers the desktop window
//! uses): it parses arguments, gets a session, calls one handler and prints the result, for
//! humans by default and as JSON with `--json`. Nothing here decides a business rule.

mod context;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use brightrun_client::api::{EstimateRequest, NotificationFilter};
use brightrun_client::transfer::{
    DownloadOptions, Downloader, TransferError, UploadOptions, UploadRequest, Uploader,
};
use brightrun_core::{CreateTrainingJobInput, GpuConfig, JobStatus, PresetId, ValidationOptions};
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
    #[arg(long, value_enum, default_value_t = Preset::Balanced)]
    preset: Preset,
    #[arg(long)]
    epochs: Option<u32>,
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
    /// Queue a copy of an earlier job (same dataset, preset, hyperparameters and GPUs).
    Clone { id: Uuid },
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
    let cli = Cli::parse();
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

fn estimate_request(spec: &JobSpec) -> EstimateRequest {
    EstimateRequest {
        dataset_id: spec.dataset,
        gpu_type: spec.gpu.clone(),
        gpu_count: spec.gpus,
        epochs: spec.epochs,
        preset_id: Some(spec.preset.id()),
    }
}

async fn jobs(ctx: &Context, out: &Output, cmd: JobsCommand) -> Result<()> {
    let api = ctx.api().await?;
    match cmd {
        JobsCommand::Estimate(spec) => {
            let estimate = api.estimate_training_cost(&estimate_request(&spec)).await?;
            out.value(&estimate, || output::estimate(&estimate));
        }
        JobsCommand::Create(spec) => {
            let presets = api.presets().await?;
            let preset = presets
                .into_iter()
                .find(|p| p.id == spec.preset.id())
                .context("the server has no such preset")?;
            let mut hyperparameters = preset.hyperparameters;
            if let Some(epochs) = spec.epochs {
                hyperparameters.num_epochs = epochs;
            }
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
                gpu_config: GpuConfig {
                    gpu_type: gpu.id.clone(),
                    num_gpus: spec.gpus,
                    gpu_memory_gb: gpu.memory_gb,
                    cost_per_gpu_hour: gpu.price_per_gpu_hour,
                },
            };
            let job = api.create_training_job(&input).await?;
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
            let mut last: Option<(JobStatus, i64)> = None;
            loop {
                let job = api.job(id).await?;
                let now = (job.status.clone(), job.current_step);
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
        JobsCommand::Clone { id } => {
            let input = api.clone_job(id).await?;
            let job = api.create_training_job(&input).await?;
            out.value(&job, || output::job(&job));
        }
    }
    Ok(())
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
