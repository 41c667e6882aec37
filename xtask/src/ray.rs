//! The Ray backend's local cluster: the pinned `ray[default]` in a cached virtualenv, the tests
//! against a real head inside a network namespace with only loopback, and `cargo xtask run --ray`.
//!
//! Ray binds its internal ports on every interface whatever it is told (`../shared/docs/
//! ray-jobs.md`), so the tests run in `unshare --net`: the head, the stack, the workers and the
//! tests see only `lo`. This needs root (CI runs as root) or passwordless sudo.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

use crate::setup;
use crate::stack::{Profile, TestStack};

/// The Ray the backend is tested against (ray-jobs.md was written against it).
pub const RAY_VERSION: &str = "2.60.0";
pub const RAY: &str = "ray[default]==2.60.0";

/// The `ray` program of the pinned virtualenv, created on first use (~40 s, ~380 MB).
pub fn program() -> Result<PathBuf> {
    setup::ensure_programs(&["python3", "py:venv"])?;
    let python = crate::bench::venv("ray-2.60.0-venv", &[RAY], "import ray.dashboard")?;
    Ok(python.with_file_name("ray"))
}

/// How to get a network namespace: directly as root, through passwordless sudo otherwise.
fn unshare() -> Option<Command> {
    if setup::is_root() {
        return Some(Command::new("unshare"));
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    sudo_ok.then(|| {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "-E", "unshare"]);
        sudo
    })
}

pub fn can_isolate() -> bool {
    unshare().is_some()
}

/// The Ray tests: built here, run inside a fresh network namespace by `xtask ray-inside`.
pub fn test(filters: &[String]) -> Result<bool> {
    // Everything the run inside needs is built outside (the namespace has no network).
    if !setup::cargo(&[
        "build",
        "-p",
        "brightrun-worker",
        "-p",
        "brightrun-stack",
        "--bins",
    ])? || !setup::cargo(&[
        "nextest",
        "run",
        "-p",
        "brightrun-worker",
        "--test",
        "ray",
        "--no-run",
    ])? {
        return Ok(false);
    }
    let mut args = vec!["ray-inside"];
    args.extend(filters.iter().map(String::as_str));
    Ok(reexec_isolated(&args, &ray_env()?)? == ExitCode::SUCCESS)
}

/// Inside the namespace: loopback up, a stack, the tests.
pub fn inside(filters: &[String]) -> Result<ExitCode> {
    if !isolated()? {
        bail!("ray-inside runs only inside the namespace `cargo xtask test-ray` makes");
    }
    let stack = TestStack::start(Profile::Debug)?;
    let mut env = stack.env();
    env.push(("CARGO_NET_OFFLINE".into(), "true".into()));
    let mut args = vec![
        "nextest",
        "run",
        "-p",
        "brightrun-worker",
        "--test",
        "ray",
        "--ignore-default-filter",
        "--no-fail-fast",
    ];
    args.extend(filters.iter().map(String::as_str));
    let passed = setup::cargo_with_env(&args, &env)?;
    stack.stop()?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A Ray head started by xtask (for `run --ray` and the benchmark): token auth, a private
/// temporary directory, every process it starts tagged in its environment so [`LocalHead::stop`]
/// finds them all (`ray stop` would kill every Ray process on the machine).
pub struct LocalHead {
    child: std::process::Child,
    tag: String,
    pub address: String,
    pub token: String,
    /// What `/api/version` answered.
    pub version: String,
    dir: tempfile::TempDir,
}

impl LocalHead {
    /// Starts a head with `cpus` CPUs; `env` goes to it and to every entrypoint it runs.
    pub fn start(ray: &std::path::Path, cpus: u32, env: &[(String, String)]) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        // Short: Ray's socket paths live under it and must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("br-ray-")
            .tempdir_in("/tmp")?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let log = std::fs::File::create(dir.path().join("head.log"))?;
        eprintln!(
            "xtask: starting a Ray head ({RAY}, token auth, log {})",
            dir.path().join("head.log").display()
        );
        let child = Command::new(ray)
            .args(["start", "--head", "--block", "--port", "6390"])
            .args(["--dashboard-host", "127.0.0.1", "--dashboard-port", "8265"])
            .args(["--num-cpus", &cpus.to_string(), "--disable-usage-stats"])
            .arg("--temp-dir")
            .arg(dir.path().join("t"))
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN", &token)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("BRIGHTRUN_RAY_HEAD_TAG", &tag)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the Ray head")?;
        let mut head = Self {
            child,
            tag,
            address: "http://127.0.0.1:8265".into(),
            token,
            version: String::new(),
            dir,
        };
        head.version = head.wait_ready()?;
        Ok(head)
    }

    /// The head's own output.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("head.log")
    }

    fn wait_ready(&self) -> Result<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = reqwest::Client::new();
            let start = std::time::Instant::now();
            loop {
                let answer = client
                    .get(format!("{}/api/version", self.address))
                    .bearer_auth(&self.token)
                    .timeout(std::time::Duration::from_secs(2))
                    .send()
                    .await;
                if let Ok(r) = answer
                    && r.status().is_success()
                {
                    let version: serde_json::Value = r.json().await?;
                    return Ok(version["ray_version"].as_str().unwrap_or("?").to_owned());
                }
                if start.elapsed() > std::time::Duration::from_secs(90) {
                    bail!(
                        "the Ray head did not answer within 90 s; its log is {}",
                        self.log().display()
                    );
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    }

    fn processes(&self) -> Vec<i32> {
        let needle = format!("BRIGHTRUN_RAY_HEAD_TAG={}", self.tag);
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            })
            .collect()
    }

    /// Stops the head and everything it started (dropping it does too).
    pub fn stop(self) {}
}

impl Drop for LocalHead {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let start = std::time::Instant::now();
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            if start.elapsed() > std::time::Duration::from_secs(5) {
                for pid in left {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            if start.elapsed() > std::time::Duration::from_secs(30) {
                eprintln!("xtask: some Ray processes outlived SIGKILL");
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.wait();
    }
}

/// `BRIGHTRUN_RAY`: the pinned `ray` (installed first), for [`program_from_env`] inside.
pub fn ray_env() -> Result<Vec<(String, String)>> {
    Ok(vec![(
        "BRIGHTRUN_RAY".to_owned(),
        program()?.display().to_string(),
    )])
}

/// Runs `xtask <args>` again, with `env`, inside a new network namespace whose only interface
/// is loopback. Inside, [`isolated`] is true.
pub fn reexec_isolated(args: &[&str], env: &[(String, String)]) -> Result<ExitCode> {
    setup::ensure_programs(&["unshare", "ip"])?;
    let mut command = unshare().context(
        "a Ray head on loopback only needs root or passwordless sudo (for unshare --net)",
    )?;
    let status = command
        .args(["--net", "--"])
        .arg(xtask_exe()?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("BRIGHTRUN_XTASK_ISOLATED", "1")
        .env("CARGO_NET_OFFLINE", "true")
        .status()
        .context("running unshare")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// This program; after a rebuild while it ran, the new build (Linux names a replaced
/// executable `<path> (deleted)`).
fn xtask_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating xtask")?;
    if exe.exists() {
        return Ok(exe);
    }
    let name = exe.to_string_lossy();
    Ok(PathBuf::from(name.trim_end_matches(" (deleted)")))
}

/// Whether this xtask runs inside the namespace [`reexec_isolated`] made; brings loopback up.
pub fn isolated() -> Result<bool> {
    if std::env::var_os("BRIGHTRUN_XTASK_ISOLATED").is_none() {
        return Ok(false);
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running ip")?;
    if !up.success() {
        bail!("ip link set lo up failed ({up})");
    }
    Ok(true)
}

/// The `ray` program named by [`reexec_isolated`].
pub fn program_from_env() -> Result<PathBuf> {
    std::env::var_os("BRIGHTRUN_RAY")
        .map(PathBuf::from)
        .context("BRIGHTRUN_RAY is not set")
}
