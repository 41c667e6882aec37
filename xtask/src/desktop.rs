//! The desktop app: its build (`cargo xtask app`), its generated TypeScript (`cargo xtask
//! bindings`) and, in the test run, its tests.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::setup;

fn npm(dir: &str, args: &[&str]) -> Result<()> {
    let dir = setup::root().join(dir);
    let status = Command::new("npm")
        .args(args)
        .current_dir(&dir)
        .status()
        .with_context(|| format!("running npm {}", args.join(" ")))?;
    if !status.success() {
        bail!(
            "npm {} in {} failed ({status})",
            args.join(" "),
            dir.display()
        );
    }
    Ok(())
}

/// The window's files in `ui/dist`, from the committed lockfile.
pub fn build_ui() -> Result<()> {
    build_ui_deps()?;
    npm("ui", &["run", "build", "--silent"])
}

/// The window's checks: `svelte-check`, the vitest suite, and the build (which the desktop app
/// embeds, so the end-to-end run drives the real window).
pub fn test_ui() -> Result<bool> {
    build_ui_deps()?;
    for script in ["check", "test", "build"] {
        if let Err(e) = npm("ui", &["run", script, "--silent"]) {
            eprintln!("xtask: {e:#}");
            return Ok(false);
        }
    }
    Ok(true)
}

fn build_ui_deps() -> Result<()> {
    setup::ensure_programs(&["node", "npm"])?;
    npm("ui", &["ci", "--no-audit", "--no-fund", "--loglevel=error"])
}

/// Builds the window and the debug app with the stack and the worker beside it (the sandbox
/// starts them from there); returns the app's path.
pub fn build_app() -> Result<PathBuf> {
    setup::ensure_programs(setup::DESKTOP_BUILD)?;
    build_ui()?;
    build_binaries()
}

/// The debug app, stack and worker, with the window already in `ui/dist`.
pub fn build_binaries() -> Result<PathBuf> {
    for package in [
        "brightrun-stack",
        "brightrun-worker",
        "brightrun-cli",
        "brightrun-desktop",
    ] {
        if !setup::cargo(&["build", "-p", package])? {
            bail!("building {package} failed");
        }
    }
    Ok(setup::target_dir()?.join("debug").join("brightrun-desktop"))
}

/// The tauri-driver release the end-to-end test is written against.
const TAURI_DRIVER: &str = "2.1.0";

/// tauri-driver, the WebDriver server between the end-to-end test and WebKitWebDriver:
/// installed by cargo into `~/.cache/brightrun/tools` once, then reused.
pub fn tauri_driver() -> Result<PathBuf> {
    let root = brightrun_dirs::Dirs::from_process()
        .cache_home()
        .context("neither XDG_CACHE_HOME nor HOME is set")?
        .join("brightrun")
        .join("tools")
        .join(format!("tauri-driver-{TAURI_DRIVER}"));
    let driver = root.join("bin").join("tauri-driver");
    if driver.is_file() {
        return Ok(driver);
    }
    eprintln!("xtask: installing tauri-driver {TAURI_DRIVER}");
    let root_arg = root.to_string_lossy();
    let args = [
        "install",
        "tauri-driver",
        "--version",
        TAURI_DRIVER,
        "--locked",
        "--root",
        root_arg.as_ref(),
    ];
    // Its own target directory: not the workspace's, whose build cache it would disturb.
    let target = root.join("build");
    let env = [(
        "CARGO_TARGET_DIR".to_owned(),
        target.to_string_lossy().into_owned(),
    )];
    if !setup::cargo_with_env(&args, &env)? {
        bail!("installing tauri-driver {TAURI_DRIVER} failed");
    }
    let _ = std::fs::remove_dir_all(&target);
    Ok(driver)
}

/// The environment of the desktop end-to-end test: the binaries it drives and where its
/// screenshots go (`docs/screenshots`, which the README shows).
pub fn e2e_env() -> Result<Vec<(String, String)>> {
    let debug = setup::target_dir()?.join("debug");
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    Ok(vec![
        (
            "BRIGHTRUN_E2E_APP".into(),
            path(debug.join("brightrun-desktop")),
        ),
        (
            "BRIGHTRUN_E2E_WORKER".into(),
            path(debug.join("brightrun-worker")),
        ),
        ("BRIGHTRUN_E2E_CLI".into(), path(debug.join("brightrun"))),
        ("BRIGHTRUN_E2E_DRIVER".into(), path(tauri_driver()?)),
        (
            "BRIGHTRUN_E2E_SCREENSHOTS".into(),
            path(setup::root().join("docs").join("screenshots")),
        ),
    ])
}

/// Writes `ui/src/lib/bindings.ts` from the shell's commands, events and types.
pub fn bindings() -> Result<()> {
    setup::ensure_programs(setup::DESKTOP_BUILD)?;
    let env = [("BRIGHTRUN_WRITE_BINDINGS".to_owned(), "1".to_owned())];
    if !setup::cargo_with_env(
        &[
            "test",
            "-p",
            "brightrun-desktop",
            "--lib",
            "the_committed_bindings_are_current",
        ],
        &env,
    )? {
        bail!("generating the bindings failed");
    }
    eprintln!("xtask: wrote ui/src/lib/bindings.ts");
    Ok(())
}

/// Renders `icons/source.svg` and writes the icon set the bundle lists (`tauri icon`).
pub fn icons() -> Result<()> {
    setup::ensure_programs(&["rsvg-convert", "node", "npm"])?;
    npm("ui", &["ci", "--no-audit", "--no-fund", "--loglevel=error"])?;
    let icons = setup::root().join("icons");
    let rendered = tempfile::Builder::new()
        .suffix(".png")
        .tempfile()
        .context("a temporary file")?;
    let status = Command::new("rsvg-convert")
        .args(["--width", "1024", "--height", "1024", "--output"])
        .arg(rendered.path())
        .arg(icons.join("source.svg"))
        .status()
        .context("running rsvg-convert")?;
    if !status.success() {
        bail!("rsvg-convert failed ({status})");
    }
    let status = Command::new("npx")
        .args(["--no-install", "tauri", "icon"])
        .arg(rendered.path())
        .arg("--output")
        .arg(&icons)
        .current_dir(setup::root().join("ui"))
        .status()
        .context("running tauri icon")?;
    if !status.success() {
        bail!("tauri icon failed ({status})");
    }
    // The mobile sets are not used by a desktop app.
    for dir in ["android", "ios"] {
        let _ = std::fs::remove_dir_all(icons.join(dir));
    }
    Ok(())
}
