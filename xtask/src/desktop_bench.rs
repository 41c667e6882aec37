//! `cargo xtask bench desktop`: the desktop app as a whole process, beside a hello-world Tauri 2
//! app (`benches/hello-tauri`, one page painting a 20-item list) built and run here under the
//! same Xvfb, in one run:
//!
//! 1. start-up: exec → the first dataset list painted (and the server's list painted), against
//!    exec → the anchor's list painted; the first launch of each, then the median of the rest;
//! 2. notification latency: 20 jobs from the CLI end; each `Notify` on the session bus (a real
//!    notification daemon, dunst, recorded by dbus-monitor) against the job's `completed_at`;
//! 3. steady state: 10 jobs running for `--minutes` (default 10) with the window shown: the PSS
//!    of the app and its WebKit processes at the end (`/proc/PID/smaps_rollup`) and their average
//!    CPU over the last 5 minutes, against the anchor's, running alongside.
//!
//! Both apps are release builds with the same WebKit settings; the app is the one the `.deb`
//! ships. Results are printed as Markdown for docs/benchmarks.md.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};

use crate::display::{Proc, Session, Xvfb};
use crate::setup;
use crate::stack::{Profile, TestStack};

const STARTS: usize = 11;
const ALERT_JOBS: usize = 20;
const RUNNING_JOBS: usize = 10;
const PASSWORD: &str = "bench-desktop-password-1";

/// Everything the run shares: the display, the bus, the stack, the binaries.
struct Bench {
    display: Xvfb,
    session: Session,
    stack: TestStack,
    work: tempfile::TempDir,
    app: PathBuf,
    anchor: PathBuf,
    cli: PathBuf,
    worker: PathBuf,
    /// Where the app's start-up steps go (`--app-log`).
    app_log: Option<PathBuf>,
}

impl Bench {
    fn gui(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .env("DISPLAY", self.display.name())
            .env("DBUS_SESSION_BUS_ADDRESS", &self.session.address)
            // As in the end-to-end test (DESKTOP-TESTING.md): no GPU compositing under Xvfb.
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .stdin(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    fn app(&self) -> Command {
        let mut command = self.gui(&self.app);
        command
            .env("BRIGHTRUN_URL", &self.stack.url)
            .env("BRIGHTRUN_ANON_KEY", &self.stack.anon_key)
            .env("BRIGHTRUN_DATA_DIR", self.work.path().join("app"))
            .env("BRIGHTRUN_PAINT_MARKS", "1")
            .env("RUST_LOG", "warn");
        if let Some(log) = &self.app_log
            && let Ok(file) = std::fs::File::options().create(true).append(true).open(log)
        {
            command
                .env("RUST_LOG", "warn,brightrun_desktop=debug")
                .stderr(file);
        }
        command
    }

    fn cli(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = Command::new(&self.cli)
            .env("BRIGHTRUN_URL", &self.stack.url)
            .env("BRIGHTRUN_ANON_KEY", &self.stack.anon_key)
            .env("BRIGHTRUN_DATA_DIR", self.work.path().join("cli"))
            .env("BRIGHTRUN_PASSWORD", PASSWORD)
            .env("DBUS_SESSION_BUS_ADDRESS", &self.session.address)
            .arg("--json")
            .args(args)
            .output()
            .context("running the CLI")?;
        if !out.status.success() {
            bail!(
                "brightrun {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null))
    }

    fn psql(&self, sql: &str) -> Result<String> {
        let out = Command::new("psql")
            .args([
                &self.stack.db_url,
                "-qAtX",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Polls `sql` every 200 ms until it prints `want`.
    fn wait_sql(&self, sql: &str, want: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.psql(sql)? == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                let workers: String = std::fs::read_dir(self.work.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect();
                bail!(
                    "waited {} s for `{sql}` to be {want} (it is {}); the worker said:\n{workers}",
                    limit.as_secs(),
                    self.psql(sql)?
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn worker(&self, steps: u64, step_ms: u64, concurrency: usize) -> Result<Proc> {
        let child = Command::new(&self.worker)
            .env("DATABASE_URL", &self.stack.db_url)
            .env("BRIGHTRUN_API_URL", &self.stack.url)
            .env("BRIGHTRUN_SERVICE_ROLE_KEY", &self.stack.service_role_key)
            .args(["--backend", "scripted", "--poll-ms", "200"])
            .args(["--scripted-steps", &steps.to_string()])
            .args(["--scripted-step-ms", &step_ms.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--work-dir")
            .arg(self.work.path().join("worker"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                self.work.path().join(format!("worker-{steps}.log")),
            )?)
            .spawn()
            .context("starting the worker")?;
        Ok(Proc(child))
    }

    fn create_job(&self, dataset: &str) -> Result<String> {
        let created = self.cli(&[
            "jobs",
            "create",
            "--dataset",
            dataset,
            "--gpu",
            "A6000-48GB",
            "--epochs",
            "1",
        ])?;
        created["job"]["id"]
            .as_str()
            .or_else(|| created["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no job id in {created}"))
    }
}

/// Lines a child prints, with when each arrived.
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `command` and waits for each of `marks` (`painted <mark>` on its stdout); returns the
/// process and the time from exec to each mark.
fn start_until_painted(mut command: Command, marks: &[&str]) -> Result<(Proc, Vec<Duration>)> {
    let began = Instant::now();
    let mut child = Proc(command.stdout(Stdio::piped()).spawn().context("exec")?);
    let lines = lines_of(child.0.stdout.take().context("stdout")?);
    let mut at = vec![None; marks.len()];
    while at.iter().any(Option::is_none) {
        let (when, line) = lines
            .recv_timeout(Duration::from_secs(60))
            .context("no paint mark within 60 s")?;
        if let Some(mark) = line.strip_prefix("painted ")
            && let Some(i) = marks.iter().position(|m| *m == mark)
        {
            at[i].get_or_insert(when - began);
        }
    }
    Ok((child, at.into_iter().flatten().collect()))
}

/// Ends `proc` and waits until its WebKit processes have gone too: a launch while the last
/// one's web and network processes are still shutting down was measured to wait for them
/// (~0.5 s), which no user's launch does.
fn stop_all(proc: Proc) -> Result<()> {
    let pids = tree(proc.pid());
    drop(proc);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        if Instant::now() > deadline {
            bail!("processes {pids:?} still running 30 s after the app ended");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `root` and every process below it.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid, … (so utime is [11]).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// User + system CPU time of `pids`, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| {
            let f = stat_fields(pid)?;
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

/// Proportional set size of `pids`, in KiB.
fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            rollup.lines().find_map(|l| {
                l.strip_prefix("Pss:")?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .sum()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

pub fn run(parts: &crate::bench::DesktopParts) -> Result<()> {
    let crate::bench::DesktopParts {
        minutes,
        steady_only,
        startup_only,
        ..
    } = *parts;
    setup::ensure_programs(setup::DESKTOP_BUILD)?;
    setup::ensure_programs(&[
        "Xvfb",
        "xdpyinfo",
        "dbus-daemon",
        "gnome-keyring-daemon",
        "dbus-monitor",
        "dunst",
        "psql",
    ])?;
    if !startup_only && minutes < 6 {
        bail!("the steady state needs at least 6 minutes (5 are averaged)");
    }
    // The app as the .deb ships it, and the anchor built the same way (release, assets in the
    // binary).
    crate::bundle::build(true, false)?;
    if !setup::cargo(&[
        "build",
        "--release",
        "-p",
        "hello-tauri",
        "--features",
        "tauri/custom-protocol",
    ])? {
        bail!("building the hello-world anchor failed");
    }
    let release = setup::target_dir()?.join("release");
    let stack = TestStack::start(Profile::Release)?;
    let bench = Bench {
        display: Xvfb::start()?,
        session: Session::start()?,
        stack,
        work: tempfile::Builder::new()
            .prefix("brightrun-bench-desktop-")
            .tempdir()?,
        app: release.join("brightrun-desktop"),
        anchor: release.join("hello-tauri"),
        cli: release.join("brightrun"),
        worker: release.join("brightrun-worker"),
        app_log: parts.app_log.clone(),
    };
    let result = measure(&bench, minutes, steady_only, startup_only);
    let Bench { stack, session, .. } = bench;
    drop(session.bus);
    stack.stop()?;
    result
}

fn measure(bench: &Bench, minutes: u64, steady_only: bool, startup_only: bool) -> Result<()> {
    // Notifications go to a real daemon on this bus and display; dbus-monitor timestamps each.
    let _dunst = Proc(
        bench
            .gui(Path::new("dunst"))
            .stdout(Stdio::null())
            .spawn()
            .context("starting dunst")?,
    );
    let mut monitor = Proc(
        Command::new("dbus-monitor")
            .args([
                "--session",
                "type='method_call',interface='org.freedesktop.Notifications',member='Notify'",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", &bench.session.address)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dbus-monitor")?,
    );
    let notifies = notify_calls(monitor.0.stdout.take().context("monitor stdout")?);

    // A user with 20 datasets (the anchor's list has 20 items), validated by a worker.
    let email = format!("bench-desktop-{}@example.test", std::process::id());
    bench.cli(&["signup", "--email", &email])?;
    let user = bench.psql(&format!(
        "select id from auth.users where email = '{email}'"
    ))?;
    let mut worker = Some(bench.worker(10, 2_000, ALERT_JOBS)?);
    let mut datasets = Vec::new();
    for i in 1..=20 {
        // Each file its own bytes: an upload of the same file resumes the same dataset.
        let file = bench.work.path().join(format!("support-{i:02}.jsonl"));
        std::fs::write(&file, conversations(200 + i))?;
        let up = bench.cli(&[
            "datasets",
            "upload",
            &file.to_string_lossy(),
            "--name",
            &format!("support-tickets-{i:02}"),
        ])?;
        datasets.push(
            up["dataset_id"]
                .as_str()
                .with_context(|| format!("no dataset id in {up}"))?
                .to_owned(),
        );
    }
    bench.wait_sql(
        &format!(
            "select count(*) from public.datasets where user_id = '{user}' and status = 'ready'"
        ),
        "20",
        Duration::from_secs(120),
    )?;

    // 1. Start-up, alternating the two apps.
    let start: Option<Startup> = if steady_only {
        None
    } else {
        let mut anchor_times = Vec::new();
        let mut cache_times = Vec::new();
        let mut fresh_times = Vec::new();
        for _ in 0..STARTS {
            let (anchor, at) = start_until_painted(bench.gui(&bench.anchor), &["list"])?;
            stop_all(anchor)?;
            anchor_times.push(at[0]);
            let (app, at) = start_until_painted(bench.app(), &["datasets", "datasets-fresh"])?;
            stop_all(app)?;
            cache_times.push(at[0]);
            fresh_times.push(at[1]);
        }
        let warm = |v: &[Duration]| median(v[1..].to_vec());
        Some((
            [
                (
                    "hello-world Tauri 2 (anchor): list painted",
                    anchor_times[0],
                    warm(&anchor_times),
                ),
                (
                    "BrightRun: dataset list painted (the local cache; the server at a first start)",
                    cache_times[0],
                    warm(&cache_times),
                ),
                (
                    "BrightRun: the server's dataset list painted",
                    fresh_times[0],
                    warm(&fresh_times),
                ),
            ],
            warm(&anchor_times),
            warm(&cache_times),
            warm(&fresh_times),
        ))
    };

    if startup_only {
        println!("\n## Desktop, start-up (cargo xtask bench desktop --startup-only)\n");
        if let Some(start) = &start {
            print_startup(start);
        }
        return Ok(());
    }

    // 2. Notification latency: the app watching; 20 jobs of ~20 s (long enough to be seen
    // running by the 10 s idle heartbeat, as real jobs are) started from the CLI end.
    let (app, _) = start_until_painted(bench.app(), &["datasets-fresh"])?;
    let alerts = if steady_only {
        None
    } else {
        // In waves of ten: the platform refuses more active jobs per user than that.
        let mut jobs = Vec::new();
        while jobs.len() < ALERT_JOBS {
            for _ in 0..RUNNING_JOBS.min(ALERT_JOBS - jobs.len()) {
                jobs.push(bench.create_job(&datasets[0])?);
            }
            bench.wait_sql(
                &format!(
                    "select count(*) from public.training_jobs where user_id = '{user}' and status = 'completed'"
                ),
                &jobs.len().to_string(),
                Duration::from_secs(300),
            )?;
        }
        let mut latencies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen: Vec<(f64, String)> = Vec::new();
        while latencies.len() < ALERT_JOBS && Instant::now() < deadline {
            while let Ok(call) = notifies.recv_timeout(Duration::from_millis(200)) {
                seen.push(call);
            }
            latencies.clear();
            for job in &jobs {
                let short = &job[..8];
                let Some((at, _)) = seen
                    .iter()
                    .find(|(_, text)| text.contains(&format!("job {short}")))
                else {
                    continue;
                };
                let completed: f64 = bench
                    .psql(&format!(
                        "select extract(epoch from completed_at) from public.training_jobs where id = '{job}'"
                    ))?
                    .parse()?;
                latencies.push(at - completed);
            }
        }
        let per_job: usize = jobs
            .iter()
            .map(|j| {
                seen.iter()
                    .filter(|(_, t)| t.contains(&format!("job {}", &j[..8])))
                    .count()
            })
            .max()
            .unwrap_or(0);
        latencies.sort_by(f64::total_cmp);
        if latencies.len() < ALERT_JOBS {
            bail!(
                "{} of {ALERT_JOBS} jobs were announced (Notify calls seen: {})",
                latencies.len(),
                seen.len()
            );
        }
        Some((latencies, per_job))
    };
    drop(worker.take());

    // 3. Steady state: ten jobs running; the anchor, the app with its window shown, and a second
    // profile of the app in the tray (`--background`, as start-at-login runs it), side by side.
    let _worker = bench.worker(100_000, 1_000, RUNNING_JOBS)?;
    let (anchor, _) = start_until_painted(bench.gui(&bench.anchor), &["list"])?;
    let mut tray = bench.app();
    tray.env("BRIGHTRUN_DATA_DIR", bench.work.path().join("app-tray"))
        .arg("--background")
        .stdout(Stdio::null());
    let tray = Proc(tray.spawn().context("starting the app in the tray")?);
    for _ in 0..RUNNING_JOBS {
        bench.create_job(&datasets[1])?;
    }
    bench.wait_sql(
        &format!(
            "select count(*) from public.training_jobs where user_id = '{user}' and status = 'running'"
        ),
        &RUNNING_JOBS.to_string(),
        Duration::from_secs(120),
    )?;
    let began = Instant::now();
    let total = Duration::from_secs(minutes * 60);
    let window = Duration::from_secs(5 * 60);
    std::thread::sleep(total - window);
    let subjects = [
        ("hello-world Tauri 2 (anchor)", anchor.pid()),
        ("BrightRun, window shown", app.pid()),
        ("BrightRun, in the tray (window closed)", tray.pid()),
    ];
    let trees: Vec<Vec<u32>> = subjects.iter().map(|(_, pid)| tree(*pid)).collect();
    let before: Vec<Vec<u64>> = trees
        .iter()
        .map(|t| t.iter().map(|&p| cpu_ticks(&[p])).collect())
        .collect();
    let measured = Instant::now();
    std::thread::sleep(window);
    let seconds = measured.elapsed().as_secs_f64();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    let percent = |ticks: u64| ticks as f64 / hz / seconds * 100.0;
    let still_running = bench.psql(&format!(
        "select count(*) from public.training_jobs where user_id = '{user}' and status = 'running'"
    ))?;

    println!("\n## Desktop, whole process (cargo xtask bench desktop --minutes {minutes})\n");
    if let Some(start) = &start {
        print_startup(start);
    }
    if let Some((latencies, per_job)) = &alerts {
        println!(
            "\nNotification latency over {} jobs of ~20 s started from the CLI (Notify seen by dbus-monitor − the job's completed_at; at most {per_job} Notify per job): p50 {:.2} s, p95 {:.2} s, max {:.2} s.",
            latencies.len(),
            percentile(latencies, 0.5),
            percentile(latencies, 0.95),
            latencies[latencies.len() - 1]
        );
    }
    println!(
        "\n| after {minutes} min, {still_running} jobs running | PSS | CPU, last 5 min (% of one core) | per process (PSS, CPU) |"
    );
    println!("|---|---|---|---|");
    let mut anchor_pss = 0.0;
    for (((name, _), pids), before) in subjects.iter().zip(&trees).zip(&before) {
        let mut total_pss = 0.0;
        let mut total_ticks = 0;
        let mut parts = Vec::new();
        for (&pid, &t0) in pids.iter().zip(before) {
            let pss = pss_kib(&[pid]) as f64 / 1024.0;
            let ticks = cpu_ticks(&[pid]).saturating_sub(t0);
            total_pss += pss;
            total_ticks += ticks;
            parts.push(format!(
                "{} {pss:.0} MiB {:.2} %",
                comm(pid),
                percent(ticks)
            ));
        }
        let ratio = if anchor_pss > 0.0 {
            format!(" ({:.3}×)", total_pss / anchor_pss)
        } else {
            anchor_pss = total_pss;
            String::new()
        };
        println!(
            "| {name} | {total_pss:.1} MiB{ratio} | {:.2} % | {} |",
            percent(total_ticks),
            parts.join("; ")
        );
    }
    eprintln!(
        "xtask: steady state measured over {:.0} s",
        began.elapsed().as_secs_f64()
    );
    drop(tray);
    drop(anchor);
    drop(app);
    drop(monitor);
    Ok(())
}

/// The `Notify` calls dbus-monitor prints: when each reached the bus (seconds since the epoch)
/// and its strings joined.
/// The start-up rows: (what, first launch, median of the rest), and the three medians.
type Startup = (
    [(&'static str, Duration, Duration); 3],
    Duration,
    Duration,
    Duration,
);

fn print_startup((rows, anchor_median, cache_median, fresh_median): &Startup) {
    println!(
        "| start-up (exec → painted) | first launch | median of the next {} |",
        STARTS - 1
    );
    println!("|---|---|---|");
    for (what, first, warm) in rows {
        println!("| {what} | {} | {} |", ms(*first), ms(*warm));
    }
    println!(
        "\nRatio, median: first list {:.2}× the anchor, the server's list {:.2}×.",
        cache_median.as_secs_f64() / anchor_median.as_secs_f64(),
        fresh_median.as_secs_f64() / anchor_median.as_secs_f64()
    );
}

fn notify_calls(stdout: ChildStdout) -> mpsc::Receiver<(f64, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut current: Option<(f64, String)> = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("method call ") {
                if let Some(done) = current.take() {
                    let _ = tx.send(done);
                }
                let time = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("time="))
                    .and_then(|t| t.parse::<f64>().ok())
                    .unwrap_or_else(|| {
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map(|d| d.as_secs_f64())
                            .unwrap_or_default()
                    });
                current = Some((time, String::new()));
            } else if let Some((_, text)) = current.as_mut() {
                text.push_str(line.trim());
                text.push('\n');
                // The last argument (expire_timeout) ends the call.
                if line.trim_start().starts_with("int32 ")
                    && let Some(done) = current.take()
                {
                    let _ = tx.send(done);
                }
            }
        }
    });
    rx
}

/// `n` short support conversations as JSONL.
fn conversations(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Order {i} has not arrived. What can I do?\"}}, {{\"role\": \"assistant\", \"content\": \"Sorry about order {i}. Check the tracking link in your confirmation email; if it shows no movement for 3 days, reply here and we resend it.\"}}]}}\n"
            )
        })
        .collect()
}
