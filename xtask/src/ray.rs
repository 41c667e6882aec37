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
    setup::ensure_programs(&["unshare", "ip"])?;
    let ray = program()?;
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
    let mut command = unshare().context("the Ray tests need root or passwordless sudo")?;
    let status = command
        .args(["--net", "--"])
        .arg(std::env::current_exe().context("locating xtask")?)
        .arg("ray-inside")
        .args(filters)
        .env("BRIGHTRUN_RAY", &ray)
        .status()
        .context("running unshare")?;
    Ok(status.success())
}

/// Inside the namespace: loopback up, a stack, the tests.
pub fn inside(filters: &[String]) -> Result<ExitCode> {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .context("running ip")?;
    if !up.success() {
        bail!("ip link set lo up failed ({up})");
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
