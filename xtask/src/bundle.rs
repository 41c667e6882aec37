//! `cargo xtask bundle`: the desktop app as a Debian package, built by Tauri's bundler (the
//! `@tauri-apps/cli` in `ui/`'s lockfile), with the stack, the worker and the CLI beside the app
//! as its sidecars (the local sandbox starts them from the app's own directory).
//!
//! `--check` then does what a user does on Debian 12: `apt-get install ./BrightRun.deb`, start
//! the app on the local sandbox, and `apt-get remove` it — and fails if any step does not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::display::{Proc, Session, Xvfb, port_busy};
use crate::{desktop, setup};

/// The programs installed next to the app, in `/usr/bin`.
const SIDECARS: &[(&str, &str)] = &[
    ("brightrun-stack", "brightrun-stack"),
    ("brightrun-worker", "brightrun-worker"),
    // The training entrypoint `brightrun-worker --backend ray` ships to a Ray cluster (it looks
    // beside itself).
    ("brightrun-worker", "brightrun-train"),
    ("brightrun-cli", "brightrun"),
];

/// The package's name (Tauri's bundler names it after the product, in kebab case).
const PACKAGE: &str = "bright-run";

/// Builds the `.deb` (a release build, or a debug one: quicker, for checking the packaging)
/// and returns its path. `ui_built`: `ui/dist` is current already (the test run built it).
pub fn build(release: bool, ui_built: bool) -> Result<PathBuf> {
    setup::ensure_programs(setup::DESKTOP_BUILD)?;
    if !ui_built {
        desktop::build_ui()?;
    }
    let profile = if release { "release" } else { "debug" };
    let target = setup::target_dir()?;

    // The sidecars, named as Tauri's `externalBin` wants them: `<name>-<host triple>`.
    let mut build = vec!["build"];
    if release {
        build.push("--release");
    }
    for (package, _) in SIDECARS {
        if !build.contains(package) {
            build.extend(["-p", package]);
        }
    }
    if !setup::cargo(&build)? {
        bail!("building the sidecars failed");
    }
    let triple = host_triple()?;
    let sidecars = target.join("sidecars").join(profile);
    std::fs::create_dir_all(&sidecars)?;
    let mut external = Vec::new();
    for (_, binary) in SIDECARS {
        let from = target.join(profile).join(binary);
        let to = sidecars.join(format!("{binary}-{triple}"));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        external.push(sidecars.join(binary).to_string_lossy().into_owned());
    }
    // Only the bundle lists the sidecars: a plain `cargo build` of the app must not need them.
    let overlay = tempfile::Builder::new()
        .prefix("tauri-bundle-")
        .suffix(".json")
        .tempfile()?;
    std::fs::write(
        overlay.path(),
        serde_json::json!({ "bundle": { "externalBin": external } }).to_string(),
    )?;

    let out = target.join(profile).join("bundle").join("deb");
    let _ = std::fs::remove_dir_all(&out);
    let cli = setup::root().join("ui/node_modules/.bin/tauri");
    let mut tauri = Command::new(&cli);
    tauri
        .args(["build", "--bundles", "deb", "--ci", "--config"])
        .arg(overlay.path())
        .current_dir(setup::root().join("src-tauri"));
    if !release {
        tauri.arg("--debug");
    }
    eprintln!("xtask: tauri build --bundles deb ({profile})");
    let status = tauri.status().context("running the tauri CLI")?;
    if !status.success() {
        bail!("tauri build failed ({status})");
    }
    let deb = std::fs::read_dir(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("tauri build left no .deb in {}", out.display()))?;
    Ok(deb)
}

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

fn run(program: &str, args: &[&str]) -> Result<String> {
    run_in(program, args, None)
}

/// `program` with `args` (in `dir`), through sudo for apt-get when not root; what it printed,
/// or an error with it.
fn run_in(program: &str, args: &[&str], dir: Option<&Path>) -> Result<String> {
    let sudo = !nix::unistd::geteuid().is_root() && program == "apt-get";
    let mut command = if sudo {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    } else {
        Command::new(program)
    };
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let out = command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .with_context(|| format!("running {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}):\n{text}",
            args.join(" "),
            out.status
        );
    }
    Ok(text)
}

/// Whether this process may install packages: root, or passwordless sudo.
pub fn can_install() -> bool {
    nix::unistd::geteuid().is_root()
        || Command::new("sudo")
            .args(["-n", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Installs `deb` as a user would, starts the installed app on the local sandbox under a
/// virtual display, then removes the package; prints what each step said.
pub fn check(deb: &Path) -> Result<()> {
    setup::ensure_programs(&["Xvfb", "xdpyinfo", "xdotool", "dbus-run-session", "curl"])?;
    if port_busy(54321) {
        bail!("127.0.0.1:54321 is taken: the installed app's sandbox needs it");
    }
    println!(
        "$ dpkg-deb --field {} Package Version Depends Recommends",
        deb.display()
    );
    let deb_arg = deb.to_string_lossy();
    println!(
        "{}",
        run(
            "dpkg-deb",
            &[
                "--field",
                &deb_arg,
                "Package",
                "Version",
                "Depends",
                "Recommends"
            ]
        )?
        .trim_end()
    );
    println!("$ dpkg-deb --contents {}", deb.display());
    let contents = run("dpkg-deb", &["--contents", &deb_arg])?;
    for line in contents.lines().filter(|l| !l.starts_with('d')) {
        // Only the path: sizes and dates differ per build.
        println!("  {}", line.split_whitespace().last().unwrap_or(line));
    }

    run("apt-get", &["update", "-q"])?;
    let local = format!(
        "./{}",
        deb.file_name().unwrap_or_default().to_string_lossy()
    );
    println!("$ apt-get install -y {local}");
    let said = run_in(
        "apt-get",
        &["install", "-y", "-q", &local],
        Some(deb.parent().context("the .deb has a directory")?),
    )?;
    for line in said.lines().filter(|l| {
        l.contains(PACKAGE) || l.starts_with("Setting up") || l.contains("newly installed")
    }) {
        println!("  {line}");
    }

    // Every sidecar where the app and `brightrun-worker --backend ray` look for them.
    let missing: Vec<&str> = SIDECARS
        .iter()
        .map(|(_, binary)| *binary)
        .filter(|binary| !Path::new("/usr/bin").join(binary).is_file())
        .collect();
    // Removed whatever the start did; the start's failure is reported after.
    let started = if missing.is_empty() {
        println!(
            "  /usr/bin: {}",
            SIDECARS
                .iter()
                .map(|(_, b)| *b)
                .collect::<Vec<_>>()
                .join(", ")
        );
        start_installed()
    } else {
        Err(anyhow::anyhow!(
            "the package installed no /usr/bin/{}",
            missing.join(", /usr/bin/")
        ))
    };
    if let Ok(said) = &started {
        println!("{said}");
    }
    println!("$ apt-get remove -y {PACKAGE}");
    let removed = run("apt-get", &["remove", "-y", "-q", PACKAGE]);
    started?;
    let removed = removed?;
    for line in removed.lines().filter(|l| l.starts_with("Removing")) {
        println!("  {line}");
    }
    for binary in ["brightrun-desktop", "brightrun", "brightrun-stack"] {
        if Path::new("/usr/bin").join(binary).exists() {
            bail!("/usr/bin/{binary} is still there after apt-get remove");
        }
    }
    let status = Command::new("dpkg")
        .args(["--status", PACKAGE])
        .stderr(Stdio::null())
        .output()?;
    if status.status.success() && !String::from_utf8_lossy(&status.stdout).contains("deinstall") {
        bail!("dpkg still lists {PACKAGE} as installed");
    }
    println!("  /usr/bin/brightrun-desktop, brightrun, brightrun-stack: gone");
    Ok(())
}

/// Starts `/usr/bin/brightrun-desktop` as a new user who chose the local sandbox: its window
/// appears, its sidecar stack answers (PostgreSQL from the package's recommends), the installed
/// CLI signs up on it; then the app is ended and the sandbox must go with it.
fn start_installed() -> Result<String> {
    let mut said = String::new();
    let home = tempfile::Builder::new()
        .prefix("brightrun-deb-home-")
        .tempdir()?;
    let data = home.path().join(".local/share");
    let app_data = data.join("brightrun");
    std::fs::create_dir_all(&app_data)?;
    std::fs::write(app_data.join("desktop.json"), r#"{"sandbox":true}"#)?;
    said.push_str(&format!(
        "$ /usr/bin/brightrun --version\n  {}",
        run("/usr/bin/brightrun", &["--version"])?.trim()
    ));

    let display = Xvfb::start()?;
    // A session bus of its own, with a keyring on it, as a desktop session has.
    let session = Session::start()?;
    let log = home.path().join("app.log");
    let began = Instant::now();
    let mut app = Proc(
        Command::new("/usr/bin/brightrun-desktop")
            .env("HOME", home.path())
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("BRIGHTRUN_URL")
            .env_remove("BRIGHTRUN_ANON_KEY")
            .env_remove("BRIGHTRUN_DATA_DIR")
            // The sandbox's cluster in the throwaway home (as root it would be /var/lib/brightrun).
            .env("BRIGHTRUN_STACK_DATA", home.path().join("stack"))
            .env("DISPLAY", display.name())
            .env("DBUS_SESSION_BUS_ADDRESS", &session.address)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting /usr/bin/brightrun-desktop")?,
    );
    let outcome = (|| -> Result<()> {
        wait_for(Duration::from_secs(60), &mut app.0, || {
            let out = Command::new("xdotool")
                .args(["search", "--onlyvisible", "--name", "^BrightRun$"])
                .env("DISPLAY", display.name())
                .output()
                .ok()?;
            out.status.success().then_some(())
        })?;
        said.push_str(&format!(
            "\n$ DISPLAY={} /usr/bin/brightrun-desktop   (a new user, local sandbox chosen)\n  window \"BrightRun\" shown after {:.1} s",
            display.name(),
            began.elapsed().as_secs_f64()
        ));
        wait_for(Duration::from_secs(120), &mut app.0, || {
            Command::new("curl")
                // Any HTTP answer will do: the stack is up.
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "http://127.0.0.1:54321/auth/v1/health",
                ])
                .status()
                .ok()?
                .success()
                .then_some(())
        })?;
        said.push_str(&format!(
            "\n  sandbox: /usr/bin/brightrun-stack answers on 127.0.0.1:54321 after {:.1} s",
            began.elapsed().as_secs_f64()
        ));
        let dataset = home.path().join("chat.jsonl");
        std::fs::write(
            &dataset,
            (0..12)
                .map(|i| {
                    format!(
                        "{{\"messages\":[{{\"role\":\"user\",\"content\":\"Is order {i} shipped?\"}},{{\"role\":\"assistant\",\"content\":\"Yes, order {i} left yesterday.\"}}]}}\n"
                    )
                })
                .collect::<String>(),
        )?;
        let validate = run(
            "/usr/bin/brightrun",
            &["datasets", "validate", &dataset.to_string_lossy()],
        )?;
        said.push_str(&format!(
            "\n$ /usr/bin/brightrun datasets validate chat.jsonl\n  {}",
            validate
                .lines()
                .next()
                .unwrap_or_default()
                .replace(&dataset.to_string_lossy().into_owned(), "chat.jsonl")
        ));
        Ok(())
    })();
    // Quit as the desktop ends a session: SIGTERM.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(app.pid())?),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = app.0.wait()?;
    outcome.map_err(|e| {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        e.context(format!("the installed app said:\n{said}"))
    })?;
    // The sandbox is tied to the app: its stack must be gone with it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while port_busy(54321) {
        if Instant::now() > deadline {
            bail!("the sandbox's stack still holds 127.0.0.1:54321 after the app ended");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    said.push_str(&format!(
        "\n  app ended ({status}); its sandbox stopped with it, port 54321 free"
    ));
    Ok(said)
}

/// Polls `ready` every 100 ms until it answers, the app exits, or `limit` passes.
fn wait_for<T>(
    limit: Duration,
    app: &mut Child,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready() {
            return Ok(value);
        }
        if let Some(status) = app.try_wait()? {
            bail!("the installed app exited early ({status})");
        }
        if Instant::now() > deadline {
            bail!("gave up after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
