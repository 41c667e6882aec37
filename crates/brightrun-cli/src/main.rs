//! `brightrun`: the BrightRun client for terminals and scripts.
//!
//! Argument parsing and printing over `brightrun_client::app`, the handlers the desktop window
//! calls too: each command builds one request, calls one handler and prints the result, for
//! humans by default and as JSON with `--json` (errors as `{"error": {code, message, hint,
//! retryable}}`). Nothing here decides a business rule, retries, or classifies an error.

mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use brightrun_client::app::{
    App, AppConfig, CancellationToken, ProjectChoice, Refresh, auth, costs, datasets, jobs, models,
    notifications,
};
use brightrun_client::watch::WatchEvent;
use brightrun_client::{BuildChannel, Error, Secret};
use brightrun_core::{
    DatasetStatus, HyperparameterOverrides, JobDraft, JobStage, JobStatus, PresetId, ValidationMode,
};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::output::{Output, ProgressMode};

#[derive(Parser)]
#[command(
    name = "brightrun",
    version,
    about = "BrightRun LoRA training from the terminal",
    after_help = "Environment: BRIGHTRUN_URL, BRIGHTRUN_ANON_KEY and BRIGHTRUN_DATA_DIR stand in \
                  for the options; BRIGHTRUN_PASSWORD for login's prompt; BRIGHTRUN_ACCESS_TOKEN \
                  with BRIGHTRUN_USER_ID for a fixed token instead of the keychain's session."
)]
struct Cli {
    /// The project: a hosted Supabase URL, or the local brightrun-stack (the default).
    #[arg(long, global = true)]
    url: Option<String>,
    /// The project's anon (public) key. A local brightrun-stack's is found by itself.
    #[arg(long, global = true)]
    anon_key: Option<String>,
    /// Where the local database (upload state, caches, preferences) lives.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Print results as JSON (one document on stdout).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account (the password is read from BRIGHTRUN_PASSWORD or stdin).
    Signup {
        #[arg(long)]
        email: String,
    },
    /// Sign in with email and password (the password is read from BRIGHTRUN_PASSWORD or stdin).
    Login {
        #[arg(long)]
        email: String,
    },
    /// Sign out here and on the server.
    Logout,
    /// Who is signed in.
    Whoami,
    /// Validate, convert, upload and manage JSONL chat datasets.
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
        /// Mark the ones printed as read.
        #[arg(long)]
        mark_read: bool,
    },
    /// This month's costs (or another's), by type and job, against your budget.
    Costs {
        /// Any day of the month, e.g. 2026-11-01.
        #[arg(long)]
        month: Option<chrono::NaiveDate>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Status {
    Uploading,
    Validating,
    Ready,
    Error,
}

impl Status {
    fn of(self) -> DatasetStatus {
        match self {
            Self::Uploading => DatasetStatus::Uploading,
            Self::Validating => DatasetStatus::Validating,
            Self::Ready => DatasetStatus::Ready,
            Self::Error => DatasetStatus::Error,
        }
    }
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Validate a JSONL file locally and print the full report (exit code 1 on errors).
    Validate {
        file: PathBuf,
        /// Every rule but the context-length check, without counting tokens: a fast first pass
        /// over a huge file. The report has no token figures.
        #[arg(long)]
        structural: bool,
        /// The base model the data is for (e.g. `openai/gpt-4o-mini`): count with its tokenizer
        /// where BrightRun has it, and warn about conversations longer than its context where
        /// it is known. Without it, or for another model, tokens are cl100k_base's.
        #[arg(long, value_name = "MODEL_ID")]
        model: Option<String>,
    },
    /// Convert a ShareGPT (v3) file to the `messages` format (v4).
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// Replace OUTPUT if it exists.
        #[arg(long)]
        force: bool,
    },
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
        /// Check the file with every rule but token counting before sending it (the default
        /// from 64 MiB on; the worker counts tokens on the server either way).
        #[arg(long, conflicts_with = "full")]
        structural: bool,
        /// Check the file in full, with exact token counts, before sending it (the default
        /// below 64 MiB).
        #[arg(long)]
        full: bool,
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Bytes per PATCH (default 6 MiB, what hosted Supabase requires).
        #[arg(long, hide = true)]
        chunk_size: Option<u64>,
    },
    /// Uploads that did not finish (run `datasets upload FILE` to resume one).
    Interrupted,
    /// Your datasets, newest first.
    List {
        /// Only those whose name or file name contains this.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// The list as last fetched, without asking the server (works offline).
        #[arg(long)]
        cached: bool,
    },
    /// One dataset: status, statistics, validation errors.
    Show { id: Uuid },
    /// Rename a dataset or change its description.
    Rename {
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a dataset (refused while an unfinished job uses it).
    Delete { id: Uuid },
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

/// Changes to the preset's hyperparameters, one value each. Every value is checked against the
/// server's bounds before anything is sent.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Hyperparameters (default: the preset's)")]
struct Overrides {
    /// Base model id, e.g. mistralai/Mistral-7B-v0.1.
    #[arg(long, value_name = "MODEL")]
    base_model: Option<String>,
    /// Learning rate (the peak, after warm-up), e.g. 0.0002.
    #[arg(long, value_name = "LR", allow_negative_numbers = true)]
    learning_rate: Option<f64>,
    /// Training pairs per batch.
    #[arg(long, value_name = "N")]
    batch_size: Option<u32>,
    /// Passes over the training set.
    #[arg(long, value_name = "N")]
    epochs: Option<u32>,
    /// LoRA rank r. The preset's --lora-alpha stays unless given too.
    #[arg(long, value_name = "R")]
    lora_rank: Option<u32>,
    /// LoRA alpha (the adapter's scale is alpha / r).
    #[arg(long, value_name = "ALPHA")]
    lora_alpha: Option<u32>,
    /// Dropout on the LoRA layers.
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    lora_dropout: Option<f64>,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, value_name = "STEPS")]
    warmup_steps: Option<u32>,
    /// AdamW weight decay.
    #[arg(long, value_name = "W", allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Batches per optimizer step.
    #[arg(long, value_name = "N")]
    gradient_accumulation_steps: Option<u32>,
    /// Gradient clipping norm.
    #[arg(long, value_name = "NORM", allow_negative_numbers = true)]
    max_grad_norm: Option<f64>,
    /// A JSON object of hyperparameters (the names `jobs show` prints) that replace the
    /// preset's, e.g. crates/brightrun-worker/demo/support-bot.hyperparameters.json; the
    /// options above still win over it.
    #[arg(long, value_name = "FILE")]
    hyperparameters: Option<PathBuf>,
}

impl Overrides {
    /// The file's values, then the options' on top.
    fn read(self) -> Result<HyperparameterOverrides, Error> {
        let file = match &self.hyperparameters {
            None => HyperparameterOverrides::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)?;
                serde_json::from_str(&text)
                    .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?
            }
        };
        Ok(file.then(HyperparameterOverrides {
            base_model: self.base_model,
            learning_rate: self.learning_rate,
            batch_size: self.batch_size,
            num_epochs: self.epochs,
            lora_rank: self.lora_rank,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            warmup_steps: self.warmup_steps,
            weight_decay: self.weight_decay,
            gradient_accumulation_steps: self.gradient_accumulation_steps,
            max_grad_norm: self.max_grad_norm,
        }))
    }
}

impl JobSpec {
    fn draft(self) -> Result<JobDraft, Error> {
        Ok(JobDraft {
            dataset_id: self.dataset,
            preset: self.preset.id(),
            gpu_type: self.gpu,
            gpu_count: self.gpus,
            overrides: self.overrides.read()?,
        })
    }
}

#[derive(Subcommand)]
enum JobsCommand {
    /// What a job would cost (the server computes it).
    Estimate(JobSpec),
    /// Queue a training job.
    Create(JobSpec),
    /// Your jobs, newest first.
    List {
        /// The list as last fetched, without asking the server (works offline).
        #[arg(long)]
        cached: bool,
    },
    /// One job: status, progress, metrics, cost.
    Show { id: Uuid },
    /// Follow a job until it ends.
    Watch {
        id: Uuid,
        /// Seconds between polls while it runs.
        #[arg(long)]
        interval: Option<u32>,
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
    /// One model: quality, training summary, files.
    Show {
        /// The model's id, or the id of the job that made it.
        id: Uuid,
    },
    /// Download a model's files, verified against their SHA-256, into a folder.
    Download {
        /// The model's id, or the id of the job that made it.
        id: Uuid,
        /// The folder (default: the download folder of the preferences).
        #[arg(long)]
        to: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
        progress: ProgressMode,
        /// Download even when the server recorded no SHA-256 (the result is marked unverified).
        #[arg(long)]
        allow_unverified: bool,
        #[arg(long, hide = true)]
        segment_threshold: Option<u64>,
    },
}

/// Debug builds and release builds keep their sessions apart.
fn channel() -> BuildChannel {
    if cfg!(debug_assertions) {
        BuildChannel::Dev
    } else {
        BuildChannel::Release
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return output::usage_error(&e),
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

/// Cancelled when the user presses Ctrl-C: transfers stop cleanly and resume on the next run.
fn interrupt() -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
        }
    });
    cancel
}

fn password() -> Result<Secret, Error> {
    if let Ok(p) = std::env::var("BRIGHTRUN_PASSWORD") {
        return Ok(Secret::new(p));
    }
    eprint!("Password: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(Secret::new(line.trim_end_matches(['\r', '\n'])))
}

async fn run(cli: Cli, out: &Output) -> Result<ExitCode, Error> {
    let config = AppConfig::resolve(
        ProjectChoice {
            url: cli.url,
            anon_key: cli.anon_key,
        },
        cli.data_dir,
        ProjectChoice::default(),
        channel(),
    )?;
    let app = App::open(config).await?;
    match cli.command {
        Command::Signup { email } => {
            let request = auth::Credentials {
                email,
                password: password()?,
            };
            let outcome = auth::sign_up(&app, request).await?;
            out.value(&outcome, || output::signed_up(&outcome));
        }
        Command::Login { email } => {
            let request = auth::Credentials {
                email,
                password: password()?,
            };
            let account = auth::sign_in(&app, request).await?;
            out.value(&account, || {
                format!("Signed in as {}.", account.email.as_deref().unwrap_or("?"))
            });
        }
        Command::Logout => {
            let done = auth::sign_out(&app).await?;
            out.value(&done, || {
                if done.was_signed_in {
                    "Signed out."
                } else {
                    "Not signed in."
                }
                .to_owned()
            });
        }
        Command::Whoami => {
            let account = auth::whoami(&app).await?;
            out.value(&account, || output::account(&account));
        }
        Command::Datasets(command) => return datasets_command(&app, out, command).await,
        Command::Jobs(command) => jobs_command(&app, out, command).await?,
        Command::Models(command) => models_command(&app, out, command).await?,
        Command::Notifications { unread, mark_read } => {
            let list = notifications::list(
                &app,
                notifications::ListNotifications {
                    unread_only: unread,
                },
            )
            .await?;
            out.value(&list, || output::notifications(&list));
            if mark_read {
                let ids = list.iter().map(|n| n.id).collect();
                notifications::mark_read(&app, notifications::MarkRead { ids }).await?;
            }
        }
        Command::Costs { month } => {
            let report = costs::month(&app, costs::CostMonth { month }).await?;
            out.value(&report, || output::costs(&report));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn datasets_command(
    app: &App,
    out: &Output,
    command: DatasetsCommand,
) -> Result<ExitCode, Error> {
    match command {
        DatasetsCommand::Validate {
            file,
            structural,
            model,
        } => {
            let bar = out.progress(ProgressMode::Auto, "validating");
            let mode = if structural {
                ValidationMode::Structural
            } else {
                ValidationMode::Full
            };
            let result = datasets::validate_with(
                app,
                datasets::ValidateFile {
                    path: file.clone(),
                    mode,
                    base_model: model,
                },
                bar.sink(),
                &interrupt(),
            )
            .await;
            bar.finish();
            let report = result?;
            out.value(&report, || output::report(&file, &report));
            return Ok(if report.is_valid() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        DatasetsCommand::Convert {
            input,
            output,
            force,
        } => {
            let converted = datasets::convert(
                app,
                datasets::ConvertFile {
                    input: input.clone(),
                    output: Some(output),
                    overwrite: force,
                },
            )
            .await?;
            out.value(&converted, || output::converted(&input, &converted));
        }
        DatasetsCommand::Upload {
            file,
            name,
            description,
            new,
            structural,
            full,
            progress,
            chunk_size,
        } => {
            let bar = out.progress(progress, "uploading");
            let request = datasets::UploadDataset {
                path: file.clone(),
                name,
                description,
                new,
                structural: (structural || full).then_some(structural),
                chunk_size,
            };
            let result = datasets::upload(app, request, bar.sink(), &interrupt()).await;
            bar.finish();
            match result {
                Ok(outcome) => out.value(&outcome, || output::uploaded(&file, &outcome)),
                Err(Error::Invalid(report)) => {
                    out.value(&report, || output::report(&file, &report));
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e),
            }
        }
        DatasetsCommand::Interrupted => {
            let list = datasets::interrupted(app).await?;
            out.value(&list, || output::interrupted(&list));
        }
        DatasetsCommand::List {
            search,
            status,
            cached,
        } => {
            let listing = datasets::list(
                app,
                datasets::ListDatasets {
                    refresh: if cached {
                        Refresh::Cache
                    } else {
                        Refresh::Server
                    },
                    search,
                    status: status.map(Status::of),
                },
            )
            .await?;
            out.value(&listing.items, || output::datasets(&listing));
        }
        DatasetsCommand::Show { id } => {
            let dataset = datasets::show(app, datasets::DatasetRef { id }).await?;
            out.value(&dataset, || output::dataset(&dataset));
        }
        DatasetsCommand::Rename {
            id,
            name,
            description,
        } => {
            let request = datasets::RenameDataset {
                id,
                name,
                description: description.map(Some),
            };
            let dataset = datasets::rename(app, request).await?;
            out.value(&dataset, || output::dataset(&dataset));
        }
        DatasetsCommand::Delete { id } => {
            let dataset = datasets::delete(app, datasets::DatasetRef { id }).await?;
            out.value(&dataset, || format!("Deleted dataset {}.", dataset.name));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `jobs watch` prints a line for: a change of status, stage or step. The stage counts
/// because a job ends with its last step logged while still `running` (validating, saving).
type WatchKey = (JobStatus, JobStage, i64);

async fn jobs_command(app: &App, out: &Output, command: JobsCommand) -> Result<(), Error> {
    match command {
        JobsCommand::Estimate(spec) => {
            let estimate = jobs::estimate(app, spec.draft()?).await?;
            out.value(&estimate, || output::estimate(&estimate));
        }
        JobsCommand::Create(spec) => {
            let created = jobs::create(app, spec.draft()?).await?;
            output::warnings(&created);
            out.value(&created.job, || output::job(&created.job));
        }
        JobsCommand::List { cached } => {
            let listing = jobs::list(
                app,
                jobs::ListJobs {
                    refresh: if cached {
                        Refresh::Cache
                    } else {
                        Refresh::Server
                    },
                    status: None,
                },
            )
            .await?;
            out.value(&listing.items, || output::jobs(&listing));
        }
        JobsCommand::Show { id } => {
            let job = jobs::show(app, jobs::JobRef { id }).await?;
            out.value(&job, || output::job(&job));
        }
        JobsCommand::Watch { id, interval } => {
            let mut events = jobs::watch(
                app,
                jobs::WatchJobs {
                    job_id: Some(id),
                    interval_seconds: interval,
                },
            )
            .await?;
            let mut last: Option<WatchKey> = None;
            while let Some(event) = events.next().await {
                match event {
                    WatchEvent::JobUpdated { job } => {
                        let now = (
                            job.status.clone(),
                            job.current_stage.clone(),
                            job.current_step,
                        );
                        if last.as_ref() != Some(&now) {
                            out.line(&job, || output::job_line(&job));
                            last = Some(now);
                        }
                    }
                    WatchEvent::Offline { retry_in } => {
                        eprintln!("offline; trying again in {} s", retry_in.as_secs().max(1));
                    }
                    WatchEvent::SignedOut => return Err(Error::SignedOut),
                    WatchEvent::Metrics { .. } | WatchEvent::Alert { .. } | WatchEvent::Online => {}
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let job = jobs::cancel(app, jobs::JobRef { id }).await?;
            out.value(&job, || output::job(&job));
        }
        JobsCommand::Clone { id, overrides } => {
            let mut draft = jobs::clone(app, jobs::JobRef { id }).await?;
            draft.overrides = draft.overrides.then(overrides.read()?);
            let created = jobs::create(app, draft).await?;
            output::warnings(&created);
            out.value(&created.job, || output::job(&created.job));
        }
    }
    Ok(())
}

async fn models_command(app: &App, out: &Output, command: ModelsCommand) -> Result<(), Error> {
    match command {
        ModelsCommand::List => {
            let list = models::list(app).await?;
            out.value(&list, || output::models(&list));
        }
        ModelsCommand::Show { id } => {
            let model = models::show(app, models::ModelRef { id }).await?;
            out.value(&model, || output::model(&model));
        }
        ModelsCommand::Download {
            id,
            to,
            progress,
            allow_unverified,
            segment_threshold,
        } => {
            let bar = out.progress(progress, "downloading");
            let request = models::DownloadModel {
                id,
                to,
                allow_unverified,
                segment_threshold,
            };
            let result = models::download(app, request, bar.sink(), &interrupt()).await;
            bar.finish();
            let downloaded = result?;
            out.value(&downloaded.files, || output::downloaded(&downloaded));
        }
    }
    Ok(())
}
