//! Printing: human text by default, JSON with `--json`; progress as a bar on a terminal or as
//! JSON lines on stderr (`--progress json`, for scripts and tests).

use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Arc;

use brightrun_client::Error;
use brightrun_client::app::Listing;
use brightrun_client::app::auth::{Account, SignedUp};
use brightrun_client::app::costs::CostReport;
use brightrun_client::app::datasets::{Converted, InterruptedUpload};
use brightrun_client::app::jobs::CreatedJob;
use brightrun_client::app::models::DownloadedModel;
use brightrun_client::transfer::{Phase, Progress, ProgressFn, UploadOutcome};
use brightrun_core::{
    CostEstimate, Dataset, HyperparameterConfig, ModelArtifact, Notification, Severity,
    TrainingJob, ValidationReport, dataset::SplitSource,
};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    Bar,
    /// One JSON object per line on stderr.
    Json,
    None,
}

pub struct Output {
    json: bool,
}

/// Prints a line on stdout. When the reader has gone (`brightrun jobs list | head -1`), exits
/// quietly with 141, the status of a process stopped by SIGPIPE, instead of panicking as
/// `println!` does; every transfer this could interrupt resumes on the next run.
pub fn print_line(text: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write to stdout: {e}");
    }
}

impl Output {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// The command's result.
    pub fn value<T: Serialize + ?Sized>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            match serde_json::to_string_pretty(value) {
                Ok(text) => print_line(&text),
                Err(e) => eprintln!("error: cannot print JSON: {e}"),
            }
        } else {
            print_line(&human());
        }
    }

    /// One line of a stream (`jobs watch`): compact JSON per line with `--json`.
    pub fn line<T: Serialize + ?Sized>(&self, value: &T, human: impl FnOnce() -> String) {
        if self.json {
            if let Ok(text) = serde_json::to_string(value) {
                print_line(&text);
            }
        } else {
            print_line(&human());
        }
    }

    /// A failed command: `{"error": {code, message, hint, retryable}}` on stdout with `--json`,
    /// the message and the hint on stderr otherwise.
    pub fn error(&self, error: &Error) {
        let wire = error.to_wire();
        if self.json {
            print_line(&serde_json::json!({ "error": wire }).to_string());
        } else {
            eprintln!("error: {}", wire.message);
            if let Some(hint) = &wire.hint {
                eprintln!("  hint: {hint}");
            }
        }
    }

    pub fn progress(&self, mode: ProgressMode, label: &str) -> Progressor {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() && !self.json => {
                ProgressMode::Bar
            }
            ProgressMode::Auto => ProgressMode::None,
            other => other,
        };
        match mode {
            ProgressMode::Bar => {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_message(label.to_owned());
                Progressor::Bar(bar)
            }
            ProgressMode::Json => Progressor::Json,
            _ => Progressor::None,
        }
    }
}

/// A command line clap refuses: its own text, or with `--json` one JSON error document on
/// stdout (as every other error), so a script reading stdout always gets JSON. Exit code 2.
pub fn usage_error(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os().any(|a| a == "--json");
    if !wants_json || matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    let message = first.strip_prefix("error: ").unwrap_or(first);
    let document =
        serde_json::json!({"error": {"code": "usage", "message": message, "retryable": false}});
    print_line(&document.to_string());
    std::process::ExitCode::from(2)
}

pub enum Progressor {
    Bar(ProgressBar),
    Json,
    None,
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Validating => "validating",
        Phase::Preparing => "preparing",
        Phase::Transferring => "transferring",
        Phase::Verifying => "verifying",
        Phase::Confirming => "confirming",
        Phase::Done => "done",
    }
}

impl Progressor {
    pub fn sink(&self) -> Option<ProgressFn> {
        match self {
            Self::Bar(bar) => {
                let bar = bar.clone();
                Some(Arc::new(move |p: &Progress| {
                    bar.set_length(p.total);
                    bar.set_position(p.bytes);
                    let name = match &p.item {
                        Some(item) => format!("{} {item}", phase_name(p.phase)),
                        None => phase_name(p.phase).to_owned(),
                    };
                    bar.set_message(name);
                }))
            }
            Self::Json => Some(Arc::new(|p: &Progress| {
                if let Ok(line) =
                    serde_json::to_string(&serde_json::json!({"event": "progress", "progress": p}))
                {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{line}");
                    let _ = err.flush();
                }
            })),
            Self::None => None,
        }
    }

    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// A size as people read it: `812 B`, `4.2 KiB`, `31.5 MiB`, `1.20 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit >= 2 {
        format!("{value:.2} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn report(file: &Path, report: &ValidationReport) -> String {
    let mut out = String::new();
    for issue in report.errors.iter().chain(&report.warnings) {
        let what = match issue.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let line = issue.line.map_or_else(String::new, |l| format!(":{l}"));
        let field = issue
            .field
            .as_deref()
            .map_or_else(String::new, |f| format!(" [{f}]"));
        out.push_str(&format!(
            "{}{line}: {what} {}{field}: {}\n",
            file.display(),
            issue.code.as_str(),
            issue.message
        ));
        if let Some(s) = &issue.suggestion {
            out.push_str(&format!("    hint: {s}\n"));
        }
    }
    if report.omitted_issues() > 0 {
        out.push_str(&format!(
            "... and {} more issues not listed\n",
            report.omitted_issues()
        ));
    }
    let s = &report.statistics;
    let format = report
        .format
        .as_ref()
        .map_or("unknown format", |f| f.as_str());
    out.push_str(&format!(
        "{}, {}; {format}\n",
        plural(report.error_count, "error"),
        plural(report.warning_count, "warning"),
    ));
    out.push_str(&format!(
        "  conversations  {} ({}, {}; split by {})\n",
        s.conversations,
        plural(s.training.pairs, "training pair"),
        plural(s.validation.pairs, "validation pair"),
        match s.split_source {
            SplitSource::Marked => "the lines' \"split\" marks",
            SplitSource::HashHoldout => "a 10 % hash holdout",
        },
    ));
    out.push_str(&format!(
        "  turns          {:.1} per conversation (min {}, max {})\n",
        s.turns.avg_per_conversation, s.turns.min_per_conversation, s.turns.max_per_conversation,
    ));
    let Some(tokens) = &s.tokens else {
        out.push_str(
            "  tokens         not counted (structural pass: no token figures, no context check)",
        );
        return out;
    };
    out.push_str(&format!(
        "  tokens         {} total ({}): p50 {} / p95 {} / max {} per conversation, {:.1} per turn\n",
        tokens.total,
        tokens.tokenizer,
        tokens.p50_per_conversation,
        tokens.p95_per_conversation,
        tokens.max_per_conversation,
        tokens.avg_per_turn,
    ));
    out.push_str(&format!(
        "  assistant      {} tokens ({} trained on)\n",
        tokens.assistant, tokens.trainable_assistant,
    ));
    out.push_str(&format!(
        "  billable       {} tokens per epoch × {} = {}",
        tokens.billable_per_epoch, tokens.epochs, tokens.estimated_billable,
    ));
    out
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

pub fn uploaded(file: &Path, outcome: &UploadOutcome) -> String {
    if outcome.already_uploaded {
        return format!(
            "{} was already uploaded as dataset {} (use --new to upload it again).",
            file.display(),
            outcome.dataset_id
        );
    }
    let resumed = match outcome.resumed_from {
        Some(n) if n > 0 => format!(" (resumed at {})", size(n)),
        _ => String::new(),
    };
    format!(
        "Uploaded {} ({}){resumed} as dataset {}; the server is validating it.",
        file.display(),
        size(outcome.bytes),
        outcome.dataset_id
    )
}

/// A note under a list shown from the cache.
fn stale<T>(listing: &Listing<T>) -> String {
    if !listing.stale {
        return String::new();
    }
    match listing.fetched_at {
        Some(at) => format!("\n(cached list from {})", at.format("%Y-%m-%d %H:%M UTC")),
        None => "\n(nothing cached yet)".to_owned(),
    }
}

pub fn datasets(listing: &Listing<Dataset>) -> String {
    let list = &listing.items;
    if list.is_empty() {
        return format!("No datasets.{}", stale(listing));
    }
    let rows = list
        .iter()
        .map(|d| {
            format!(
                "{}  {:<10}  {:>10}  {}",
                d.id,
                d.status.as_str(),
                size(u64::try_from(d.file_size).unwrap_or(0)),
                d.name
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!("{rows}{}", stale(listing))
}

pub fn dataset(d: &Dataset) -> String {
    let mut out = format!(
        "{}\n  id: {}\n  status: {}\n  file: {} ({})\n  format: {}\n  training ready: {}",
        d.name,
        d.id,
        d.status.as_str(),
        d.file_name,
        size(u64::try_from(d.file_size).unwrap_or(0)),
        d.format.as_str(),
        d.training_ready
    );
    if let (Some(t), Some(v)) = (d.total_training_pairs, d.total_validation_pairs) {
        out.push_str(&format!("\n  pairs: {t} training, {v} validation"));
    }
    if let Some(tokens) = d.total_tokens {
        out.push_str(&format!("\n  tokens: {tokens}"));
    }
    for e in d.validation_errors.iter().flatten() {
        let line = e.line.map_or_else(String::new, |l| format!("line {l}: "));
        out.push_str(&format!("\n  {line}{}", e.error));
    }
    out
}

/// The estimate with the inputs that explain it, in the server's rounding.
pub fn estimate(e: &CostEstimate) -> String {
    format!(
        "${:.2} {} for about {} h on {} x {} ({} GPU-hours)\n  {} tokens/epoch x {} epochs at {} tokens/s/GPU (scaling efficiency {}): {} h training + {} h overhead, ${}/GPU-hour",
        e.estimated_cost,
        e.currency,
        e.estimated_hours,
        e.gpu_count,
        e.gpu_type,
        e.gpu_hours,
        e.tokens_per_epoch,
        e.epochs,
        e.tokens_per_second_per_gpu,
        e.scaling_efficiency,
        e.training_hours,
        e.overhead_hours,
        price(e.price_per_gpu_hour)
    )
}

/// Dollars with cents, and with the sub-cent digits a catalogue price may have (`numeric(10,4)`).
fn price(dollars: f64) -> String {
    let cents = dollars * 100.0;
    if (cents - cents.round()).abs() < 1e-9 {
        format!("{dollars:.2}")
    } else {
        dollars.to_string()
    }
}

pub fn job_line(j: &TrainingJob) -> String {
    let loss = j
        .current_metrics
        .as_ref()
        .map_or_else(String::new, |m| format!("  loss {:.4}", m.training_loss));
    // A running job goes through training, validating and saving; the stage is what changes
    // between its last step and its end.
    let state = if !j.status.is_terminal() && j.current_stage.as_str() != j.status.as_str() {
        format!("{} ({})", j.status, j.current_stage)
    } else {
        j.status.to_string()
    };
    format!(
        "{}  {:<20} {:>5.1}%  step {}{}  ${:.2}",
        j.id,
        state,
        j.progress,
        j.current_step,
        loss,
        j.final_cost.unwrap_or(j.current_cost)
    )
}

pub fn job(j: &TrainingJob) -> String {
    format!(
        "{}\n  dataset: {}\n  preset: {}\n  GPUs: {} x {}\n  estimated: ${:.2}\n  hyperparameters:\n{}{}",
        job_line(j),
        j.dataset_id,
        j.preset_id.as_str(),
        j.gpu_config.num_gpus,
        j.gpu_config.gpu_type,
        j.estimated_total_cost,
        hyperparameters(&j.hyperparameters),
        j.error_message
            .as_deref()
            .map_or_else(String::new, |e| format!("\n  error: {e}"))
    )
}

/// One line per value, named as in the job's JSON and the server's messages (the options of
/// `jobs create` are these names with dashes).
fn hyperparameters(hp: &HyperparameterConfig) -> String {
    let rows = [
        ("base_model", Some(hp.base_model.clone())),
        ("learning_rate", Some(hp.learning_rate.to_string())),
        ("batch_size", Some(hp.batch_size.to_string())),
        ("num_epochs", Some(hp.num_epochs.to_string())),
        ("lora_rank", Some(hp.lora_rank.to_string())),
        ("lora_alpha", Some(hp.lora_alpha.to_string())),
        ("lora_dropout", Some(hp.lora_dropout.to_string())),
        ("warmup_steps", hp.warmup_steps.map(|v| v.to_string())),
        ("weight_decay", hp.weight_decay.map(|v| v.to_string())),
        (
            "gradient_accumulation_steps",
            hp.gradient_accumulation_steps.map(|v| v.to_string()),
        ),
        ("max_grad_norm", hp.max_grad_norm.map(|v| v.to_string())),
    ];
    rows.iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("    {name:<28} {v}")))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn jobs(listing: &Listing<TrainingJob>) -> String {
    if listing.items.is_empty() {
        return format!("No jobs.{}", stale(listing));
    }
    let rows = listing.items.iter().map(job_line).collect::<Vec<_>>();
    format!("{}{}", rows.join("\n"), stale(listing))
}

/// A job's settings that are allowed but look wrong, on stderr, with how to change them.
pub fn warnings(created: &CreatedJob) {
    let id = created.job.id;
    for warning in &created.warnings {
        eprintln!(
            "warning: {warning}. To change it: brightrun jobs cancel {id}, then brightrun jobs clone {id} --warmup-steps N."
        );
    }
}

pub fn models(list: &[ModelArtifact]) -> String {
    if list.is_empty() {
        return "No models.".into();
    }
    list.iter()
        .map(|m| {
            format!(
                "{}  {}  job {}  loss {:.4}",
                m.id, m.name, m.job_id, m.quality_metrics.final_training_loss
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn downloaded(model: &DownloadedModel) -> String {
    model
        .files
        .iter()
        .map(|f| {
            let how = if f.already_present {
                "already there, verified"
            } else if f.verified {
                "downloaded, SHA-256 verified"
            } else {
                "downloaded, NOT verified (no digest recorded)"
            };
            format!("{} ({}): {how}", f.path.display(), size(f.size))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn account(a: &Account) -> String {
    format!(
        "{} ({}) at {}",
        a.email.as_deref().unwrap_or("signed in with a token"),
        a.user_id,
        a.project_url
    )
}

pub fn signed_up(outcome: &SignedUp) -> String {
    match outcome {
        SignedUp::SignedIn { account } => format!(
            "Signed up and signed in as {}.",
            account.email.as_deref().unwrap_or("?")
        ),
        SignedUp::ConfirmEmail { email } => format!(
            "Signed up. Confirm the address with the email sent to {email}, then `brightrun login --email {email}`."
        ),
    }
}

pub fn converted(input: &Path, c: &Converted) -> String {
    let dropped = match c.summary.blank_lines_dropped {
        0 => String::new(),
        n => format!(", {} dropped", plural(n, "blank line")),
    };
    format!(
        "Converted {} to {}: {}, {}{dropped}.",
        input.display(),
        c.output.display(),
        plural(c.summary.conversations, "conversation"),
        plural(c.summary.messages, "message"),
    )
}

pub fn interrupted(list: &[InterruptedUpload]) -> String {
    if list.is_empty() {
        return "No interrupted uploads.".into();
    }
    list.iter()
        .map(|u| {
            let state = if u.file_present {
                format!("{} of {} uploaded", size(u.confirmed), size(u.bytes))
            } else {
                "the file is gone or changed".to_owned()
            };
            format!(
                "{}  {} ({state}); resume: brightrun datasets upload {}",
                u.dataset_name,
                u.path.display(),
                u.path.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn model(m: &ModelArtifact) -> String {
    let files = m
        .artifacts
        .download_files()
        .iter()
        .map(|f| {
            format!(
                "    {} ({})",
                f.name,
                f.size.map_or_else(|| "size unknown".to_owned(), size)
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let base = m
        .artifacts
        .base_model
        .as_deref()
        .unwrap_or(&m.configuration.hyperparameters.base_model);
    let trained_on = match (&m.training_summary.backend, m.training_summary.attempt) {
        (Some(backend), Some(attempt)) if attempt > 1 => {
            format!(" on {backend} (attempt {attempt})")
        }
        (Some(backend), _) => format!(" on {backend}"),
        (None, _) => String::new(),
    };
    format!(
        "{}\n  id: {}\n  job: {}\n  dataset: {}\n  base model: {base}\n  final loss: {:.4} ({})\n  training: {} epochs, {:.2} GPU-hours, ${:.2}{trained_on}\n  files:\n{files}",
        m.name,
        m.id,
        m.job_id,
        m.dataset_id,
        m.quality_metrics.final_training_loss,
        m.quality_metrics.convergence_quality,
        m.training_summary.total_epochs,
        m.training_summary.gpu_hours,
        m.training_summary.total_cost,
    )
}

pub fn costs(report: &CostReport) -> String {
    let s = &report.summary;
    let mut out = format!(
        "{}: ${:.2} {} (compute ${:.2}, storage ${:.2}, transfer ${:.2})",
        s.month.format("%B %Y"),
        s.total,
        s.currency,
        s.by_type.compute,
        s.by_type.storage,
        s.by_type.data_transfer
    );
    if let Some(b) = &report.budget {
        let state = if b.over {
            " — over budget"
        } else if b.alert {
            " — past the alert threshold"
        } else {
            ""
        };
        out.push_str(&format!(
            "\n  budget ${:.2}: {:.0} % used{state}",
            b.budget,
            b.used * 100.0
        ));
    }
    for job in &s.by_job {
        out.push_str(&format!("\n  {}  ${:.2}", job.job_id, job.amount));
    }
    out
}

pub fn notifications(list: &[Notification]) -> String {
    if list.is_empty() {
        return "No notifications.".into();
    }
    list.iter()
        .map(|n| {
            format!(
                "{} {}  {}: {}",
                if n.read { " " } else { "*" },
                n.created_at.format("%Y-%m-%d %H:%M"),
                n.title,
                n.message
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(super::size(812), "812 B", "bytes below a KiB");
        assert_eq!(super::size(4300), "4.2 KiB", "KiB");
        assert_eq!(super::size(33_030_144), "31.5 MiB", "MiB");
        assert_eq!(super::size(1_288_490_189), "1.20 GiB", "GiB");
    }

    #[test]
    fn an_estimate_prints_its_cost_with_the_inputs_that_explain_it() {
        let estimate = brightrun_core::CostEstimateInputs {
            tokens_per_epoch: 36_000_000,
            epochs: 3,
            gpu_type: "A100-80GB".into(),
            price_per_gpu_hour: 3.0,
            tokens_per_second_per_gpu: 3200.0,
            gpu_count: 2,
        }
        .estimate()
        .expect("valid inputs");
        assert_eq!(
            super::estimate(&estimate),
            "$32.75 USD for about 5.4583 h on 2 x A100-80GB (10.9167 GPU-hours)\n  36000000 tokens/epoch x 3 epochs at 3200 tokens/s/GPU (scaling efficiency 0.9): 5.2083 h training + 0.25 h overhead, $3.00/GPU-hour",
            "the server's rounded figures, unpadded"
        );
        assert_eq!(
            super::price(1.2345),
            "1.2345",
            "a sub-cent price keeps its digits"
        );
    }
}
