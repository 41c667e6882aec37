//! `cargo xtask bench`: whole-process benchmarks of a release brightrun-stack against named peers,
//! measured in one run. Results go to stdout as Markdown rows for docs/benchmarks.md.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use brightrun_stack::jwt::{JwtSecret, Keys};
use serde_json::json;

use crate::setup;
use crate::stack::{Profile, TEST_JWT_SECRET, TestStack};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Which {
    /// A 1000-row RLS-filtered list through /rest/v1 vs the same SQL through pgbench.
    RestList,
    /// 1 GiB upload and download through /storage/v1 vs nginx, both driven by curl.
    Storage,
    /// The candle CPU trainer on the demo job vs the same job in PyTorch + PEFT.
    Trainer,
    /// `brightrun datasets validate` and `upload` as whole processes on 200 and 400 MB files vs
    /// Python + tiktoken, curl and tus-js-client; the structural pass in MB/s per core; peak RSS.
    Validate,
    /// The demo job through the Ray backend (local head) and the local candle backend:
    /// submit → first metric, and total (not part of `all`: it needs a network namespace).
    Ray,
    /// The desktop app as a whole process vs a hello-world Tauri 2 app: start-up, notification
    /// latency, memory and CPU with ten jobs running (not part of `all`: it takes ~15 minutes).
    Desktop,
    All,
}

/// What `bench desktop` measures, and how long.
#[derive(Debug, Clone)]
pub struct DesktopParts {
    pub minutes: u64,
    pub steady_only: bool,
    pub startup_only: bool,
    pub app_log: Option<std::path::PathBuf>,
}

pub fn run(which: Which, desktop: DesktopParts) -> Result<ExitCode> {
    setup::ensure_system_packages()?;
    if matches!(which, Which::Ray) {
        return crate::ray_bench::run();
    }
    if matches!(which, Which::Desktop) {
        return crate::desktop_bench::run(&desktop).map(|()| ExitCode::SUCCESS);
    }
    if matches!(which, Which::Trainer | Which::All) {
        trainer()?;
    }
    if matches!(which, Which::Trainer) {
        return Ok(ExitCode::SUCCESS);
    }
    let stack = TestStack::start(Profile::Release)?;
    let result = (|| {
        if matches!(which, Which::RestList | Which::All) {
            rest_list(&stack)?;
        }
        if matches!(which, Which::Storage | Which::All) {
            storage(&stack)?;
        }
        if matches!(which, Which::Validate | Which::All) {
            crate::validate_bench::run(&stack)?;
        }
        Ok(())
    })();
    stack.stop()?;
    result.map(|_| ExitCode::SUCCESS)
}

pub(crate) fn psql(db_url: &str, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .args([db_url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// p50, p99 and mean of latencies in microseconds.
fn summary(mut micros: Vec<f64>) -> (f64, f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() as f64 - 1.0) * q).round() as usize];
    let mean = micros.iter().sum::<f64>() / micros.len() as f64;
    (at(0.50), at(0.99), mean)
}

const WARMUP: usize = 200;
const REQUESTS: usize = 2000;

fn rest_list(stack: &TestStack) -> Result<()> {
    setup::ensure_programs(&["pgbench"])?;
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Two tenants with 1000 datasets each: the list must return A's 1000 and none of B's.
    psql(
        &stack.db_url,
        &format!(
            "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
             values ('{a}', 'authenticated', 'authenticated', 'bench-a@example.test', '{{}}', '{{}}', now(), now()),
                    ('{b}', 'authenticated', 'authenticated', 'bench-b@example.test', '{{}}', '{{}}', now(), now());
             insert into public.datasets (user_id, name, storage_path, file_name, file_size)
             select u, 'bench dataset ' || g, u || '/' || gen_random_uuid() || '/train.jsonl', 'train.jsonl', 1048576 + g
             from unnest(array['{a}'::uuid, '{b}'::uuid]) u, generate_series(1, 1000) g;
             analyze public.datasets;"
        ),
    )?;
    let now = chrono::Utc::now().timestamp();
    let keys = Keys::new(
        JwtSecret::new(TEST_JWT_SECRET),
        format!("{}/auth/v1", stack.url),
        now,
    );
    let claims = json!({"sub": a.to_string(), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600});
    let token = keys.sign(&claims);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("{}/rest/v1/datasets?select=*", stack.url);
    let stack_micros = rt.block_on(async {
        let client = reqwest::Client::new();
        let get = || {
            client
                .get(&url)
                .header("apikey", &stack.anon_key)
                .bearer_auth(&token)
                .send()
        };
        let first: serde_json::Value = get().await?.error_for_status()?.json().await?;
        let rows = first.as_array().map(Vec::len).unwrap_or(0);
        if rows != 1000 {
            bail!("expected the 1000 rows of tenant A through RLS, got {rows}");
        }
        let mut micros = Vec::with_capacity(REQUESTS);
        for i in 0..WARMUP + REQUESTS {
            let start = Instant::now();
            let body = get().await?.error_for_status()?.bytes().await?;
            let elapsed = start.elapsed();
            anyhow::ensure!(body.len() > 100_000, "short body");
            if i >= WARMUP {
                micros.push(elapsed.as_secs_f64() * 1e6);
            }
        }
        Ok(micros)
    })?;

    // The same transaction PostgREST-style: role and claims set locally, then the list as JSON.
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("list.sql");
    fs::write(
        &script,
        format!(
            "BEGIN;\nSELECT set_config('search_path', '\"public\", \"extensions\"', true), set_config('role', 'authenticated', true), set_config('request.jwt.claims', '{claims}', true);\nSELECT coalesce(json_agg(pgrst_r), '[]')::text FROM (SELECT \"datasets\".* FROM \"public\".\"datasets\" LIMIT 1000) pgrst_r;\nCOMMIT;\n"
        ),
    )?;
    let authenticator = stack.db_url.replace("user=postgres", "user=authenticator");
    let pgbench = |transactions: usize, log: bool| -> Result<()> {
        let mut cmd = Command::new("pgbench");
        cmd.args(["-n", "-c", "1", "-t", &transactions.to_string(), "-f"])
            .arg(&script)
            .current_dir(dir.path());
        if log {
            cmd.args(["-l", "--log-prefix", "pgb"]);
        }
        let out = cmd
            .arg(&authenticator)
            .output()
            .context("running pgbench")?;
        if !out.status.success() {
            bail!("pgbench failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    pgbench(WARMUP, false)?;
    pgbench(REQUESTS, true)?;
    let mut pg_micros = Vec::new();
    for entry in fs::read_dir(dir.path())? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pgb"))
        {
            for line in fs::read_to_string(&path)?.lines() {
                // client_id transaction_no latency_us script_no epoch epoch_us
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    pg_micros.push(us);
                }
            }
        }
    }
    anyhow::ensure!(
        pg_micros.len() == REQUESTS,
        "pgbench logged {} transactions",
        pg_micros.len()
    );

    let (s50, s99, smean) = summary(stack_micros);
    let (p50, p99, pmean) = summary(pg_micros);
    println!(
        "\n## rest-list: 1000 of 2000 rows visible through RLS, {REQUESTS} sequential requests after {WARMUP} warm-up\n"
    );
    println!("| path | p50 | p99 | mean |");
    println!("|---|---|---|---|");
    println!(
        "| brightrun-stack GET /rest/v1/datasets (HTTP, reqwest keep-alive) | {:.2} ms | {:.2} ms | {:.2} ms |",
        s50 / 1e3,
        s99 / 1e3,
        smean / 1e3
    );
    println!(
        "| pgbench: the same SQL over the unix socket (libpq) | {:.2} ms | {:.2} ms | {:.2} ms |",
        p50 / 1e3,
        p99 / 1e3,
        pmean / 1e3
    );
    println!(
        "| ratio stack / pgbench | {:.2}× | {:.2}× | {:.2}× |",
        s50 / p50,
        s99 / p99,
        smean / pmean
    );
    Ok(())
}

const GIB: u64 = 1024 * 1024 * 1024;
const ROUNDS: usize = 3;

/// A 1 GiB file of non-repeating-looking bytes (a fast xorshift stream).
fn make_file(path: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..(GIB >> 20) {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

/// curl's measured seconds for one transfer (it streams `-T` uploads from disk).
pub(crate) fn curl(args: &[&str]) -> Result<f64> {
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
        .args(args)
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut parts = text.split_whitespace();
    let code = parts.next().unwrap_or("");
    if !out.status.success() || !(code.starts_with('2')) {
        bail!(
            "curl {args:?} failed: HTTP {code} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parts
        .next()
        .and_then(|t| t.parse().ok())
        .context("curl printed no time")
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub(crate) fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM")
}

struct Nginx {
    child: std::process::Child,
    port: u16,
}

fn start_nginx(dir: &Path) -> Result<Nginx> {
    setup::ensure_programs(&["nginx", "curl"])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    for sub in ["www/dav", "tmp", "logs"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n    client_max_body_size 0;\n    location /dav/ {{ dav_methods PUT; create_full_put_path on; }}\n  }}\n}}\n",
            d = dir.display()
        ),
    )?;
    let child = Command::new("nginx")
        .args(["-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx")?;
    for _ in 0..500 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Nginx { child, port });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("nginx did not listen on port {port}")
}

fn storage(stack: &TestStack) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.bin");
    make_file(&file)?;
    let file_arg = file.to_str().context("utf-8 path")?.to_owned();
    let auth = format!("Authorization: Bearer {}", stack.service_role_key);
    let owner = uuid::Uuid::new_v4();
    let object = |i: usize| {
        format!(
            "{}/storage/v1/object/lora-models/{owner}/bench-{i}.bin",
            stack.url
        )
    };
    let rss_before = vm_hwm_kib(stack.pid())?;

    let (mut up, mut down) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        up.push(curl(&[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            "content-type: application/octet-stream",
            "-T",
            &file_arg,
            &object(i),
        ])?);
        down.push(curl(&["-H", &auth, &object(i)])?);
    }
    let rss_peak = vm_hwm_kib(stack.pid())?;

    let nginx = start_nginx(&dir.path().join("nginx"))?;
    let (mut nup, mut ndown) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let url = format!("http://127.0.0.1:{}/dav/bench-{i}.bin", nginx.port);
        nup.push(curl(&["-T", &file_arg, &url])?);
        ndown.push(curl(&[&url])?);
    }
    let mut nginx = nginx;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(nginx.child.id() as i32),
        nix::sys::signal::Signal::SIGQUIT,
    );
    let _ = nginx.child.wait();

    let mib = |secs: f64| GIB as f64 / (1024.0 * 1024.0) / secs;
    let (su, sd, nu, nd) = (median(up), median(down), median(nup), median(ndown));
    println!("\n## storage: 1 GiB file, curl, median of {ROUNDS} rounds\n");
    println!(
        "| transfer | brightrun-stack | nginx (static GET / WebDAV PUT) | ratio stack / nginx |"
    );
    println!("|---|---|---|---|");
    println!(
        "| upload | {:.0} MiB/s ({su:.2} s) | {:.0} MiB/s ({nu:.2} s) | {:.2} |",
        mib(su),
        mib(nu),
        nu / su
    );
    println!(
        "| download | {:.0} MiB/s ({sd:.2} s) | {:.0} MiB/s ({nd:.2} s) | {:.2} |",
        mib(sd),
        mib(nd),
        nd / sd
    );
    println!(
        "\nbrightrun-stack peak RSS (VmHWM): {:.1} MiB before the transfers, {:.1} MiB after {} GiB moved.",
        rss_before as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        ROUNDS * 2
    );
    Ok(())
}

/// The Python side of the trainer benchmark, pinned: installed once into a private virtualenv
/// (~3.5 GB: PyPI's Linux torch wheel is the CUDA build; it runs on the CPU here).
pub(crate) const PYTHON_PEER: [&str; 4] = [
    "torch==2.15.0",
    "peft==0.21.2",
    "transformers==5.23.0",
    "safetensors==0.8.0",
];

fn python_peer() -> Result<std::path::PathBuf> {
    venv(
        "peft-venv",
        &PYTHON_PEER,
        "import torch, peft, transformers, safetensors",
    )
}

/// A private virtualenv in the target directory with `packages` (pinned), made once; its python.
/// `import` is the check that it is complete.
pub(crate) fn venv(name: &str, packages: &[&str], import: &str) -> Result<std::path::PathBuf> {
    let venv = setup::target_dir()?.join(name);
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", import])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.is_file() && ready(&python) {
        return Ok(python);
    }
    setup::ensure_programs(&["python3"])?;
    let venv_ok = Command::new("python3")
        .args(["-m", "venv", "--help"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !venv_ok {
        setup::apt_install(&["python3-venv"])?;
    }
    eprintln!(
        "xtask: creating {} with {}",
        venv.display(),
        packages.join(" ")
    );
    let status = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()?;
    if !status.success() {
        bail!("python3 -m venv failed ({status})");
    }
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(packages)
        .status()?;
    if !status.success() || !ready(&python) {
        bail!("installing {} failed ({status})", packages.join(" "));
    }
    Ok(python)
}

fn run_json(cmd: &mut Command, report: &Path) -> Result<serde_json::Value> {
    let status = cmd
        .stdout(Stdio::inherit())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(serde_json::from_slice(&fs::read(report)?)?)
}

/// The candle trainer (`examples/train_demo.rs`, release, one thread) and PyTorch + PEFT
/// (`demo/peft_peer.py`, CPU, one thread) on the same encoded demo job, alternating, 3 runs
/// each; medians. Also runs `demo/load_with_peft.py` on candle's adapter first: the peer only
/// counts if PEFT loads what candle wrote and reproduces its losses.
fn trainer() -> Result<()> {
    let python = python_peer()?;
    if !setup::cargo(&[
        "build",
        "--release",
        "-p",
        "brightrun-worker",
        "--example",
        "train_demo",
    ])? {
        bail!("building the train_demo example failed");
    }
    let example = setup::target_dir()?.join("release/examples/train_demo");
    let demo = setup::root().join("crates/brightrun-worker/demo");
    let out = tempfile::tempdir()?;
    let cache = setup::target_dir()?.join("candle-base-cache");
    let candle = || {
        run_json(
            Command::new(&example)
                .arg(out.path())
                .arg("--cache-dir")
                .arg(&cache)
                .env("CANDLE_NUM_THREADS", "1")
                .env("RAYON_NUM_THREADS", "1"),
            &out.path().join("candle_run.json"),
        )
    };
    let peer = || {
        run_json(
            Command::new(&python)
                .arg(demo.join("peft_peer.py"))
                .arg(out.path())
                .args(["--threads", "1"])
                .env("PYTHONWARNINGS", "ignore"),
            &out.path().join("peft_run.json"),
        )
    };
    let first = candle()?;
    let status = Command::new(&python)
        .arg(demo.join("load_with_peft.py"))
        .arg(out.path().join("adapter"))
        .env("PYTHONWARNINGS", "ignore")
        .status()?;
    if !status.success() {
        bail!("PEFT could not load the candle adapter or reproduce its losses");
    }
    let mut runs: [Vec<serde_json::Value>; 2] = [vec![first], vec![]];
    for i in 0..5 {
        if i % 2 == 0 {
            runs[1].push(peer()?);
        } else {
            runs[0].push(candle()?);
        }
    }
    println!(
        "\n| trainer | steps | steps/s (median of 3) | tokens/s (median per step) | loss: first step → last epoch | validation |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &runs {
        let med = |key: &str| median(r.iter().filter_map(|x| x[key].as_f64()).collect());
        let last = &r[0];
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.3} → {:.3} | {:.3} |",
            last["backend"].as_str().unwrap_or("?"),
            last["optimizer_steps"],
            med("steps_per_second"),
            med("tokens_per_second_median"),
            med("first_step_loss"),
            med("final_train_loss"),
            med("final_validation_loss"),
        );
    }
    Ok(())
}
