//! The local sandbox: brightrun-stack and one worker on this machine, started by the app when
//! none is running (with the stack's data in `brightrun_dirs`' stack directory, where the CLI
//! finds it too) and stopped when the app quits. One that is already running (`cargo xtask
//! run`, another app) is used as it is.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use brightrun_client::config::LocalStackInfo;
use brightrun_client::{Error, Result, Secret, StackBanner};

/// A stack and worker this app started.
#[derive(Debug)]
pub struct Sandbox {
    stack: Child,
    worker: Child,
}

/// Whether a local stack answers at the address its stack.json names.
pub async fn running() -> bool {
    let Some(info) = brightrun_dirs::Dirs::from_process()
        .stack_data()
        .and_then(|dir| LocalStackInfo::read(&dir))
    else {
        return false;
    };
    let health = format!("{}/rest/v1/", info.url.trim_end_matches('/'));
    reqwest::Client::new()
        .get(health)
        .header("apikey", &info.anon_key)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok()
}

/// `name` next to this program (a development build, or the bundle's sidecars), else on PATH.
fn program(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("{what}: {e}")))
}

impl Sandbox {
    /// Starts the stack and waits until it is ready, then the worker.
    pub fn start() -> Result<Self> {
        let dirs = brightrun_dirs::Dirs::from_process();
        let stack_dir = dirs
            .stack_data()
            .ok_or_else(|| Error::NotConfigured("no data directory: set HOME".into()))?;
        let worker_dir = dirs
            .worker_data()
            .unwrap_or_else(|| stack_dir.join("worker"));
        let mut stack = Command::new(program("brightrun-stack"))
            .arg("up")
            .arg("--data-dir")
            .arg(&stack_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| failed("starting brightrun-stack", e))?;
        let ready = read_ready(&mut stack);
        let (url, key, db_url) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                let _ = stack.kill();
                let _ = stack.wait();
                return Err(e);
            }
        };
        let worker = Command::new(program("brightrun-worker"))
            .env("DATABASE_URL", db_url)
            .env("BRIGHTRUN_API_URL", url)
            .env("BRIGHTRUN_SERVICE_ROLE_KEY", key.expose())
            .arg("--work-dir")
            .arg(&worker_dir)
            .args(["--backend", "candle", "--concurrency", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn();
        match worker {
            Ok(worker) => Ok(Self { stack, worker }),
            Err(e) => {
                let _ = stack.kill();
                let _ = stack.wait();
                Err(failed("starting brightrun-worker", e))
            }
        }
    }

    /// Stops the worker (it hands its job back), then the stack.
    pub fn stop(mut self) {
        for child in [&mut self.worker, &mut self.stack] {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }
}

/// The stack's `API URL`, `service_role key` and `DB URL` lines, up to `ready`.
fn read_ready(stack: &mut Child) -> Result<(String, Secret, String)> {
    let stdout = stack
        .stdout
        .take()
        .ok_or_else(|| failed("brightrun-stack", "no stdout"))?;
    let mut banner = StackBanner::default();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref().map_while(std::io::Result::ok) {
        if banner.read(&line) {
            break;
        }
    }
    // Whatever it prints later is read and dropped, so it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    match (
        banner.ready,
        banner.url,
        banner.service_role_key,
        banner.db_url,
    ) {
        (true, Some(url), Some(key), Some(db)) => Ok((url, key, db)),
        _ => Err(failed("brightrun-stack", "it stopped before it was ready")),
    }
}
