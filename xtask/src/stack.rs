//! Starting brightrun-stack as a child process: for the test run (temporary data, random port,
//! the tests' JWT secret) and for people (persistent data, default port, a demo user).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The secret the test run signs with, so tests can forge expired and foreign tokens.
pub use brightrun_stack::testing::TEST_JWT_SECRET;

use crate::setup;

const DEMO_USER: &str = "demo@brightrun.local";
const DEMO_PASSWORD: &str = "brightrun-demo";

/// Which build of the stack to run: tests use the debug build they were compiled with,
/// benchmarks the release build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

fn build_stack(profile: Profile) -> Result<std::path::PathBuf> {
    let mut args = vec!["build", "-p", "brightrun-stack", "--bin", "brightrun-stack"];
    if profile == Profile::Release {
        args.push("--release");
    }
    if !setup::cargo(&args)? {
        bail!("building brightrun-stack failed");
    }
    let dir = if profile == Profile::Release {
        "release"
    } else {
        "debug"
    };
    Ok(setup::target_dir()?.join(dir).join("brightrun-stack"))
}

/// A stack started for the test run; [`TestStack::stop`] (or dropping it, on an early error)
/// stops it and its PostgreSQL before the temporary data goes.
pub struct TestStack {
    child: Child,
    /// Removed after `Drop::drop` has stopped the stack (fields drop after it).
    _data: tempfile::TempDir,
    pub url: String,
    pub anon_key: String,
    pub service_role_key: String,
    pub db_url: String,
}

impl TestStack {
    pub fn start(profile: Profile) -> Result<Self> {
        let bin = build_stack(profile)?;
        let data = tempfile::Builder::new()
            .prefix("brightrun-xtask-")
            .tempdir()?;
        let mut child = Command::new(&bin)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--jwt-secret",
                TEST_JWT_SECRET,
                "--data-dir",
            ])
            .arg(data.path().join("stack"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("stack stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = brightrun_client::StackBanner::default();
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!("brightrun-stack did not become ready (see its log above)");
                }
            };
            if banner.read(&line) {
                break;
            }
        }
        Ok(Self {
            child,
            _data: data,
            url: banner.url.context("stack printed no API URL")?,
            anon_key: banner.anon_key.context("stack printed no anon key")?,
            service_role_key: banner
                .service_role_key
                .context("stack printed no service_role key")?
                .expose()
                .to_owned(),
            db_url: banner.db_url.context("stack printed no DB URL")?,
        })
    }

    /// What the Rust tests (`BRIGHTRUN_TEST_*`) and the Node suites (`SUPABASE_*`) read.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("BRIGHTRUN_TEST_URL", &self.url),
            ("BRIGHTRUN_TEST_ANON_KEY", &self.anon_key),
            ("BRIGHTRUN_TEST_SERVICE_ROLE_KEY", &self.service_role_key),
            ("BRIGHTRUN_TEST_DB_URL", &self.db_url),
            ("BRIGHTRUN_TEST_JWT_SECRET", &TEST_JWT_SECRET.to_owned()),
            ("SUPABASE_URL", &self.url),
            ("SUPABASE_ANON_KEY", &self.anon_key),
            ("SUPABASE_SERVICE_ROLE_KEY", &self.service_role_key),
            ("DATABASE_URL", &self.db_url),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the stack and reports an unclean exit; dropping it stops it too, without the report.
    pub fn stop(mut self) -> Result<()> {
        let status = self.terminate()?;
        if !status.success() {
            bail!("brightrun-stack exited with {status} on shutdown");
        }
        Ok(())
    }

    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM)
            .context("signalling the stack")?;
        Ok(self.child.wait()?)
    }
}

impl Drop for TestStack {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// `cargo xtask stack [ARGS]`: the stack in the foreground, with the project's data directory
/// unless ARGS name another.
pub fn run_foreground(args: &[String]) -> Result<ExitCode> {
    setup::ensure_system_packages()?;
    let bin = build_stack(Profile::Debug)?;
    let mut cmd = Command::new(bin);
    cmd.arg("up");
    if !args.iter().any(|a| a == "--data-dir") {
        // The directory the CLI and the app look in for the local stack's stack.json.
        let dir = brightrun_dirs::Dirs::from_process()
            .stack_data()
            .context("no home directory: pass --data-dir or set BRIGHTRUN_STACK_DATA")?;
        cmd.arg("--data-dir").arg(dir);
    }
    cmd.args(args);
    // Ctrl-C reaches the whole foreground process group: the stack shuts down cleanly by itself.
    let status = cmd.status().context("running brightrun-stack")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask run`: the stack with a demo user, one brightrun-worker (candle backend)
/// attached to it, and (unless `headless`) the desktop app on that stack, signed in as the demo
/// user with the demo dataset uploaded and ready. Quitting the app, or Ctrl-C, stops them all
/// (same process group); the worker hands its jobs back.
pub fn run_demo(smollm2: bool, headless: bool, ray: bool) -> Result<ExitCode> {
    if ray && !crate::ray::isolated()? {
        // Built out here (the namespace has no network), then run again inside it: Ray binds
        // every interface, so the head, the stack, the worker and the app share a namespace
        // whose only interface is loopback.
        setup::ensure_system_packages()?;
        if smollm2 {
            crate::models::smollm2()?;
        }
        if !headless {
            crate::desktop::build_app()?;
        }
        build_stack(Profile::Debug)?;
        if !setup::cargo(&["build", "-p", "brightrun-worker", "--bins"])? {
            bail!("building brightrun-worker failed");
        }
        let mut args = vec!["run", "--ray"];
        if smollm2 {
            args.push("--smollm2");
        }
        if headless {
            args.push("--headless");
        }
        return crate::ray::reexec_isolated(&args, &crate::ray::ray_env()?);
    }
    setup::ensure_system_packages()?;
    let gguf = if smollm2 {
        Some(crate::models::smollm2()?)
    } else {
        None
    };
    let app_bin = if headless {
        None
    } else {
        Some(crate::desktop::build_app()?)
    };
    let stack_bin = build_stack(Profile::Debug)?;
    // The worker, and brightrun-train, which a Ray head runs.
    if !setup::cargo(&["build", "-p", "brightrun-worker", "--bins"])? {
        bail!("building brightrun-worker failed");
    }
    let worker_bin = setup::target_dir()?.join("debug").join("brightrun-worker");
    // The stack's directory is where the CLI and the app look for its stack.json; the worker's
    // (base-model cache, scratch files) sits beside it.
    let stack_dir = brightrun_dirs::Dirs::from_process()
        .stack_data()
        .context("no home directory: set BRIGHTRUN_STACK_DATA")?;
    let worker_dir = stack_dir.with_file_name("worker");
    eprintln!(
        "xtask: starting brightrun-stack with demo user {DEMO_USER} (password {DEMO_PASSWORD}) and one worker; Ctrl-C stops them"
    );
    let mut stack = Command::new(&stack_bin)
        .arg("up")
        .arg("--data-dir")
        .arg(&stack_dir)
        .args(["--demo-user", &format!("{DEMO_USER}:{DEMO_PASSWORD}")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", stack_bin.display()))?;
    let mut lines = BufReader::new(stack.stdout.take().context("stack stdout")?).lines();
    let mut banner = brightrun_client::StackBanner::default();
    for line in lines.by_ref().map_while(Result::ok) {
        println!("{line}");
        if banner.read(&line) {
            break;
        }
    }
    let (Some(url), Some(anon_key), Some(key), Some(db_url)) = (
        banner.url,
        banner.anon_key,
        banner.service_role_key.map(|k| k.expose().to_owned()),
        banner.db_url,
    ) else {
        let _ = stack.kill();
        bail!("brightrun-stack did not become ready (see its log above)");
    };
    let head = if ray {
        let mut env = vec![(
            "BRIGHTRUN_TRAIN_CACHE".to_owned(),
            worker_dir.join("candle-cache").display().to_string(),
        )];
        if let Some(gguf) = &gguf {
            env.push((
                "BRIGHTRUN_TRAIN_BASE_GGUF".to_owned(),
                gguf.display().to_string(),
            ));
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        match crate::ray::LocalHead::start(&crate::ray::program_from_env()?, cpus, &env) {
            Ok(head) => Some(head),
            Err(e) => {
                let _ = kill(Pid::from_raw(stack.id() as i32), Signal::SIGTERM);
                let _ = stack.wait();
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut worker = Command::new(&worker_bin);
    worker
        .env("DATABASE_URL", db_url)
        .env("BRIGHTRUN_API_URL", &url)
        .env("BRIGHTRUN_SERVICE_ROLE_KEY", key)
        .arg("--work-dir")
        .arg(&worker_dir)
        .args(["--concurrency", "1"])
        .stdin(Stdio::null());
    match &head {
        Some(head) => {
            eprintln!(
                "xtask: the worker trains on the Ray head at {}",
                head.address
            );
            worker
                .args(["--backend", "ray", "--ray-address", &head.address])
                .env("RAY_AUTH_TOKEN", &head.token);
        }
        None => {
            worker.args(["--backend", "candle"]).args(
                gguf.iter()
                    .flat_map(|g| [std::ffi::OsStr::new("--base-gguf"), g.as_os_str()]),
            );
        }
    }
    let mut worker = worker
        .spawn()
        .with_context(|| format!("starting {}", worker_bin.display()))?;
    if head.is_some() {
        eprintln!(
            "xtask: everything runs in a network namespace with only loopback; from another terminal: \
             sudo nsenter --net=/proc/{}/ns/net brightrun …",
            worker.id()
        );
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            println!("{line}");
        }
    });
    let status = match app_bin {
        None => stack.wait()?,
        Some(app_bin) => {
            if let Err(e) = seed_demo(&url, &anon_key) {
                eprintln!("xtask: the demo is not seeded, the app opens signed out: {e:#}");
            }
            eprintln!("xtask: opening {}", app_bin.display());
            let mut app = Command::new(&app_bin)
                .env("BRIGHTRUN_URL", &url)
                .env("BRIGHTRUN_ANON_KEY", &anon_key)
                .stdin(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", app_bin.display()))?;
            // Whichever ends first ends the other: the app quit, or Ctrl-C stopped the stack.
            loop {
                if let Some(status) = app.try_wait()? {
                    let _ = kill(Pid::from_raw(stack.id() as i32), Signal::SIGTERM);
                    stack.wait()?;
                    break status;
                }
                if let Some(status) = stack.try_wait()? {
                    let _ = kill(Pid::from_raw(app.id() as i32), Signal::SIGTERM);
                    app.wait()?;
                    break status;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    let _ = kill(Pid::from_raw(worker.id() as i32), Signal::SIGTERM);
    let _ = worker.wait();
    if let Some(head) = head {
        head.stop();
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Signs the demo user in, as the app and the CLI do (the session goes to the OS keychain,
/// where the app finds it), and uploads the demo dataset, waiting until the worker has
/// validated it. An earlier run's upload is recognised and not repeated.
fn seed_demo(url: &str, anon_key: &str) -> Result<()> {
    use brightrun_client::app::{self, App, AppConfig, ProjectChoice, auth, datasets};

    let dataset = setup::root().join("crates/brightrun-worker/demo/support-bot.jsonl");
    let config = AppConfig::resolve(
        ProjectChoice {
            url: Some(url.to_owned()),
            anon_key: Some(anon_key.to_owned()),
        },
        None,
        ProjectChoice::default(),
        brightrun_client::BuildChannel::Dev,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = App::open(config).await?;
        auth::sign_in(
            &app,
            auth::Credentials {
                email: DEMO_USER.to_owned(),
                password: brightrun_client::Secret::new(DEMO_PASSWORD.to_owned()),
            },
        )
        .await?;
        let earlier = datasets::list(
            &app,
            datasets::ListDatasets {
                search: Some("support-bot".to_owned()),
                ..Default::default()
            },
        )
        .await?;
        if let Some(ready) = earlier.items.iter().find(|d| d.status.as_str() == "ready") {
            eprintln!(
                "xtask: signed in as {DEMO_USER}; demo dataset {} is ready",
                ready.name
            );
            return Ok(());
        }
        eprintln!(
            "xtask: signed in as {DEMO_USER}; uploading {}",
            dataset.display()
        );
        let outcome = datasets::upload(
            &app,
            datasets::UploadDataset {
                path: dataset,
                name: None,
                description: Some("The demo's customer-support conversations".to_owned()),
                new: false,
                structural: None,
                chunk_size: None,
            },
            None,
            &app::CancellationToken::new(),
        )
        .await?;
        let settled = tokio::time::timeout(
            Duration::from_secs(120),
            datasets::follow(
                &app,
                datasets::DatasetRef {
                    id: outcome.dataset_id,
                },
                Duration::from_millis(500),
                |_| {},
            ),
        )
        .await
        .context("the worker did not validate the demo dataset within two minutes")??;
        eprintln!(
            "xtask: demo dataset {} is {}",
            settled.name,
            settled.status.as_str()
        );
        anyhow::Ok(())
    })
}
