//! The local sandbox: brightrun-stack and one worker on this machine, started by the app when
//! none is running (with the stack's data in `brightrun_dirs`' stack directory, where the CLI
//! finds it too) and stopped when the app quits. One that is already running (`cargo xtask
//! run`, another app) is used as it is.

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use brightrun_client::config::LocalStackInfo;
use brightrun_client::{Error, Result, Secret, StackBanner};

/// A stack and worker this app started, owned by the thread that spawned them: each child is
/// tied to that thread with `PR_SET_PDEATHSIG`, so an app that is killed (or crashes) takes its
/// sandbox with it instead of leaving a stack on the port. The thread lives until [`stop`].
///
/// [`stop`]: Sandbox::stop
#[derive(Debug)]
pub struct Sandbox {
    stop: mpsc::Sender<()>,
    supervisor: std::thread::JoinHandle<()>,
}

/// The two processes, while the supervising thread holds them.
struct Children {
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
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop, stopped) = mpsc::channel::<()>();
        let supervisor = std::thread::Builder::new()
            .name("sandbox".into())
            .spawn(move || {
                let children = match Children::spawn() {
                    Ok(children) => children,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // Until `stop` sends, or drops its sender.
                let _ = stopped.recv();
                children.stop();
            })
            .map_err(|e| failed("starting the sandbox", e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { stop, supervisor }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(failed("starting the sandbox", "its thread ended")),
        }
    }

    /// Stops the worker (it hands its job back), then the stack, and waits for both.
    pub fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.supervisor.join();
    }
}

/// `program`, ended with SIGTERM (which the stack and the worker handle gracefully) when the
/// thread that spawns it ends: the app quitting without [`Sandbox::stop`], or killed.
fn tied(program: PathBuf) -> Command {
    let mut command = Command::new(program);
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    command
}

impl Children {
    fn spawn() -> Result<Self> {
        let dirs = brightrun_dirs::Dirs::from_process();
        let stack_dir = dirs
            .stack_data()
            .ok_or_else(|| Error::NotConfigured("no data directory: set HOME".into()))?;
        let mut stack = tied(program("brightrun-stack"));
        let mut stack = stack
            .arg("up")
            .arg("--data-dir")
            .arg(&stack_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| failed("starting brightrun-stack", e))?;
        let (url, key, db_url) = match read_ready(&mut stack) {
            Ok(ready) => ready,
            Err(e) => {
                let _ = stack.kill();
                let _ = stack.wait();
                return Err(e);
            }
        };
        // The worker's scratch lives with the sandbox's data; base models are downloaded once
        // per user, into the shared model cache.
        let mut worker = tied(program("brightrun-worker"));
        worker
            .env("DATABASE_URL", db_url)
            .env("BRIGHTRUN_API_URL", url)
            .env("BRIGHTRUN_SERVICE_ROLE_KEY", key.expose())
            .arg("--work-dir")
            .arg(stack_dir.join("worker"))
            .args(["--backend", "candle", "--concurrency", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(cache) = dirs.model_cache() {
            worker.arg("--cache-dir").arg(cache);
        }
        match worker.spawn() {
            Ok(worker) => Ok(Self { stack, worker }),
            Err(e) => {
                let _ = stack.kill();
                let _ = stack.wait();
                Err(failed("starting brightrun-worker", e))
            }
        }
    }

    fn stop(mut self) {
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
