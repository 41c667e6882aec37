//! Installing what a fresh machine lacks, and running the tools the test run is made of.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_owned()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Every program a test, the harness or a benchmark runs, and the Debian package it comes in.
/// A program is used only after [`ensure_programs`] named it: a machine where it was once
/// installed by hand must not hide a missing install step.
const PROGRAMS: &[(&str, &str)] = &[
    // The stack's PostgreSQL cluster (`initdb`, `postgres`) and the fixtures' client.
    ("initdb", "postgresql"),
    ("psql", "postgresql-client"),
    // The supabase-js / tus-js-client conformance suite.
    ("node", "nodejs"),
    ("npm", "npm"),
    // A private D-Bus session with a real Secret Service for the keychain tests.
    ("dbus-run-session", "dbus"),
    ("gnome-keyring-daemon", "gnome-keyring"),
    // Benchmarks and the model fetch.
    ("curl", "curl"),
    ("nginx", "nginx"),
    ("pgbench", "postgresql-contrib"),
    ("python3", "python3"),
    ("sha256sum", "coreutils"),
    // Building the desktop app: WebKitGTK, GTK, the tray's appindicator, SVG icons, libsoup,
    // xdo (menus' accelerators), found with pkg-config or by their header.
    ("pkg-config", "pkg-config"),
    ("cc", "build-essential"),
    ("lib:webkit2gtk-4.1", "libwebkit2gtk-4.1-dev"),
    ("lib:gtk+-3.0", "libgtk-3-dev"),
    (
        "lib:ayatana-appindicator3-0.1",
        "libayatana-appindicator3-dev",
    ),
    ("lib:librsvg-2.0", "librsvg2-dev"),
    ("lib:libsoup-3.0", "libsoup-3.0-dev"),
    ("file:/usr/include/xdo.h", "libxdo-dev"),
    // The desktop end-to-end run: a virtual display, WebDriver for WebKitGTK, X tools for
    // drag-and-drop and screenshots, a GTK drag source in Python, the Notify recorder.
    ("Xvfb", "xvfb"),
    ("xauth", "xauth"),
    ("xdpyinfo", "x11-utils"),
    ("xwininfo", "x11-utils"),
    ("WebKitWebDriver", "webkit2gtk-driver"),
    ("xdotool", "xdotool"),
    ("import", "imagemagick"),
    ("dbus-monitor", "dbus-bin"),
    // The desktop benchmark: its own session bus, and a real notification daemon on it.
    ("dbus-daemon", "dbus-daemon"),
    ("dunst", "dunst"),
    ("py:gi", "python3-gi"),
    ("py:gi-gtk3", "gir1.2-gtk-3.0"),
    ("rsvg-convert", "librsvg2-bin"),
    // The Ray backend's tests: a network namespace with only loopback (Ray binds every
    // interface), and the pinned `ray[default]` in a virtualenv.
    ("unshare", "util-linux"),
    ("ip", "iproute2"),
    ("py:venv", "python3-venv"),
];

/// What `cargo xtask test` runs besides cargo.
pub const TEST_PROGRAMS: &[&str] = &[
    "initdb",
    "psql",
    "node",
    "npm",
    "dbus-run-session",
    "gnome-keyring-daemon",
];

/// What the desktop app's build needs.
pub const DESKTOP_BUILD: &[&str] = &[
    "pkg-config",
    "cc",
    "lib:webkit2gtk-4.1",
    "lib:gtk+-3.0",
    "lib:ayatana-appindicator3-0.1",
    "lib:librsvg-2.0",
    "lib:libsoup-3.0",
    "file:/usr/include/xdo.h",
];

/// What the desktop end-to-end run needs besides the build.
pub const DESKTOP_TEST: &[&str] = &[
    "Xvfb",
    "xauth",
    "xdpyinfo",
    "xwininfo",
    "WebKitWebDriver",
    "xdotool",
    "import",
    "dbus-monitor",
    "py:gi",
    "py:gi-gtk3",
];

fn present(program: &str) -> bool {
    if let Some(library) = program.strip_prefix("lib:") {
        return Command::new("pkg-config")
            .args(["--exists", library])
            .status()
            .is_ok_and(|s| s.success());
    }
    if let Some(path) = program.strip_prefix("file:") {
        return Path::new(path).is_file();
    }
    // GTK helpers run with Debian's Python (`python3` may be another one without `gi`).
    let python = |code: &str| {
        Command::new("/usr/bin/python3")
            .args(["-c", code])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    match program {
        "py:venv" => {
            return Command::new("python3")
                .args(["-m", "venv", "--help"])
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        }
        "py:gi" => return python("import gi"),
        "py:gi-gtk3" => {
            return python(
                "import gi; gi.require_version('Gtk', '3.0'); from gi.repository import Gtk",
            );
        }
        _ => {}
    }
    // Debian keeps PostgreSQL's server programs off PATH, in /usr/lib/postgresql/<version>/bin.
    let server_dirs = || {
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin"))
    };
    have(program)
        || (matches!(program, "initdb" | "pgbench")
            && server_dirs().any(|dir| dir.join(program).is_file()))
}

/// Installs, with one `apt-get install`, the packages of the programs in `programs` that are
/// missing. A program the table does not know is a bug in xtask, reported as one.
pub fn ensure_programs(programs: &[&str]) -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    for &program in programs {
        let Some(&(_, package)) = PROGRAMS.iter().find(|(p, _)| *p == program) else {
            bail!("xtask runs {program}, but its PROGRAMS table names no package for it");
        };
        if !present(program) && !missing.contains(&package) {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// The programs of a test run and of the local stack.
pub fn ensure_system_packages() -> Result<()> {
    ensure_programs(TEST_PROGRAMS)
}

pub fn apt_install(packages: &[&str]) -> Result<()> {
    eprintln!("xtask: installing Debian packages: {}", packages.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let run = |args: &[&str]| -> Result<()> {
        let mut full: Vec<&str> = sudo.to_vec();
        full.extend_from_slice(args);
        let status = Command::new(full[0])
            .args(&full[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("running {}", full.join(" ")))?;
        if !status.success() {
            bail!("`{}` failed ({status})", full.join(" "));
        }
        Ok(())
    };
    run(&["apt-get", "update", "-q"])?;
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend(packages);
    run(&install)
}

/// `npm ci` from the committed lockfile of every Node suite.
pub fn ensure_npm_packages() -> Result<()> {
    let dir = root().join("conformance");
    if !dir.join("package-lock.json").is_file() {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .context("running npm ci")?;
    if !status.success() {
        bail!("npm ci in {} failed ({status})", dir.display());
    }
    Ok(())
}

pub fn cargo(args: &[&str]) -> Result<bool> {
    cargo_with_env(args, &[])
}

pub fn cargo_with_env(args: &[&str], env: &[(String, String)]) -> Result<bool> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    Ok(status.success())
}

/// Runs cargo inside a private D-Bus session with an unlocked gnome-keyring (the Secret Service
/// the keychain code talks to), so no test touches the user's own keyring.
pub fn cargo_in_keyring_session(args: &[&str], env: &[(String, String)]) -> Result<bool> {
    eprintln!(
        "xtask: cargo {} (in a private D-Bus session with gnome-keyring)",
        args.join(" ")
    );
    // Unlock before anything asks for org.freedesktop.secrets, or D-Bus activation starts a
    // locked daemon and every keyring call fails.
    let script = r#"printf '%s' brightrun-test-keyring | gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 70
exec "$@""#;
    // gnome-keyring keeps its keyrings under $XDG_DATA_HOME/keyrings: a fresh directory per run
    // means a fresh keyring unlocked with our password, and never the user's own.
    let keyring_home = tempfile::Builder::new()
        .prefix("brightrun-keyring-")
        .tempdir()?;
    let status = Command::new("dbus-run-session")
        .args(["--", "sh", "-c", script, "sh", env!("CARGO")])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("XDG_DATA_HOME", keyring_home.path())
        .current_dir(root())
        .status()
        .context("running dbus-run-session")?;
    Ok(status.success())
}

pub fn psql_file(db_url: &str, file: &str) -> Result<bool> {
    let path = root().join(file);
    if !path.is_file() {
        return Ok(true);
    }
    let status = Command::new("psql")
        .args([db_url, "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&path)
        .status()
        .context("running psql")?;
    Ok(status.success())
}

pub fn npm_test(dir: &str, env: &[(String, String)]) -> Result<bool> {
    let dir = root().join(dir);
    if !dir.join("package.json").is_file() {
        bail!("{} has no package.json", dir.display());
    }
    eprintln!("xtask: npm test in {}", dir.display());
    let status = Command::new("npm")
        .args(["test", "--silent"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&dir)
        .status()
        .context("running npm test")?;
    Ok(status.success())
}

/// The cargo target directory (honours CARGO_TARGET_DIR and config).
pub fn target_dir() -> Result<PathBuf> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}
