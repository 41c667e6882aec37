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
    for package in ["brightrun-stack", "brightrun-worker", "brightrun-desktop"] {
        if !setup::cargo(&["build", "-p", package])? {
            bail!("building {package} failed");
        }
    }
    Ok(setup::target_dir()?.join("debug").join("brightrun-desktop"))
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
