//! `cargo xtask bench validate`: the release `brightrun` CLI as a whole process, validating and
//! uploading generated v4 files, beside its peers in the same run: a plain Python validator with
//! tiktoken (`benches/validate_peer.py`), curl sending the same bytes to the same stack, and
//! tus-js-client with Supabase's documented options (`conformance/bench/tus_upload.mjs`).
//!
//! Each measurement is a fresh process: wall time from spawn to exit, CPU time (user + system,
//! from this process's `cutime`/`cstime`, exact for waited children) and peak RSS (`VmHWM`,
//! read every 5 ms while the process runs: growth in its last 5 ms would be missed).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use brightrun_stack::jwt::{JwtSecret, Keys};
use serde_json::{Value, json};

use crate::bench::{curl, median, psql, venv, vm_hwm_kib};
use crate::setup;
use crate::stack::{TEST_JWT_SECRET, TestStack};

const MB: u64 = 1_000_000;
const ROUNDS: usize = 3;
/// The Python peer's tokenizer, pinned.
const TIKTOKEN: &str = "tiktoken==0.14.0";

/// One finished process.
#[derive(Debug, Clone)]
struct Run {
    wall: f64,
    cpu: f64,
    peak_rss_kib: u64,
    stdout: String,
}

/// CPU seconds (user + system) of this process's waited-for children so far.
fn children_cpu_seconds() -> Result<f64> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("/proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); cutime and cstime are fields 16 and 17.
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i - 3).context("stat field")?.parse()?) };
    let hz = 100.0; // USER_HZ on Linux
    Ok((ticks(16)? + ticks(17)?) / hz)
}

fn measure(cmd: &mut Command) -> Result<Run> {
    let cpu_before = children_cpu_seconds()?;
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    // Drain stdout and stderr on threads so a chatty child never blocks on a full pipe.
    let mut out_pipe = child.stdout.take().context("stdout")?;
    let mut err_pipe = child.stderr.take().context("stderr")?;
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut text);
        text
    });
    let mut peak = 0;
    let status = loop {
        if let Ok(hwm) = vm_hwm_kib(pid) {
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed().as_secs_f64();
    let cpu = children_cpu_seconds()? - cpu_before;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed ({status}):\n{stdout}\n{stderr}");
    }
    Ok(Run {
        wall,
        cpu,
        peak_rss_kib: peak,
        stdout,
    })
}

/// Deterministic v4 chat lines (a system prompt, 1–4 user/assistant turns of 5–210 words with
/// accented words and some emoji and CJK) until `bytes`, cut at a line end.
fn generate(path: &Path, bytes: u64) -> Result<u64> {
    let words = [
        "adapter",
        "gradient",
        "the",
        "loss",
        "checkpoint",
        "tokens",
        "batch",
        "learning",
        "rate",
        "warmup",
        "über",
        "naïve",
        "of",
        "a",
        "and",
        "to",
        "résumé",
        "GPU",
        "epoch",
        "validation",
        "学习率",
        "🚀",
        "fn main() { println!(\\\"hi\\\"); }",
        "    indented",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut written = 0u64;
    let mut lines = 0u64;
    let mut line = String::new();
    while written < bytes {
        line.clear();
        line.push_str(
            "{\"messages\": [{\"role\": \"system\", \"content\": \"You are a helpful assistant.\"}",
        );
        for _ in 0..1 + next() % 4 {
            for (role, len) in [("user", 5 + next() % 40), ("assistant", 10 + next() % 200)] {
                line.push_str(", {\"role\": \"");
                line.push_str(role);
                line.push_str("\", \"content\": \"");
                for i in 0..len {
                    if i > 0 {
                        line.push(' ');
                    }
                    line.push_str(words[(next() % words.len() as u64) as usize]);
                }
                line.push_str("\"}");
            }
        }
        line.push_str("]}\n");
        if written + line.len() as u64 > bytes {
            break;
        }
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

/// The cl100k ranks tiktoken-rs ships, for the Python peer (tiktoken would download them).
fn cl100k_ranks() -> Result<PathBuf> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1"])
        .current_dir(setup::root())
        .stderr(Stdio::inherit())
        .output()
        .context("cargo metadata")?;
    let meta: Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "tiktoken-rs"))
        .and_then(|p| p["manifest_path"].as_str())
        .context("tiktoken-rs is not in the dependency graph")?;
    let ranks = Path::new(manifest)
        .parent()
        .context("manifest dir")?
        .join("assets/cl100k_base.tiktoken");
    ensure!(ranks.is_file(), "{} is missing", ranks.display());
    Ok(ranks)
}

fn secs(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

fn max_rss_mib(runs: &[Run]) -> f64 {
    runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0
}

pub fn run(stack: &TestStack) -> Result<()> {
    setup::ensure_programs(&["curl", "node", "npm"])?;
    if !setup::root()
        .join("conformance/node_modules/tus-js-client")
        .is_dir()
    {
        setup::ensure_npm_packages()?;
    }
    let python = venv("validate-peer-venv", &[TIKTOKEN], "import tiktoken")?;
    let ranks = cl100k_ranks()?;
    if !setup::cargo(&["build", "--release", "-p", "brightrun-cli"])? {
        bail!("building the brightrun CLI failed");
    }
    let cli = setup::target_dir()?.join("release/brightrun");

    // A user of the stack, made in auth.users, with a token signed for it.
    let user = uuid::Uuid::new_v4();
    psql(
        &stack.db_url,
        &format!(
            "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
             values ('{user}', 'authenticated', 'authenticated', 'bench-validate@example.test', '{{}}', '{{}}', now(), now());"
        ),
    )?;
    let now = chrono::Utc::now().timestamp();
    let keys = Keys::new(
        JwtSecret::new(TEST_JWT_SECRET),
        format!("{}/auth/v1", stack.url),
        now,
    );
    let token = keys.sign(&json!({"sub": user.to_string(), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3 * 3600}));

    let dir = tempfile::Builder::new()
        .prefix("brightrun-bench-validate-")
        .tempdir_in(setup::target_dir()?)?;
    let small = dir.path().join("bench-200mb.jsonl");
    let large = dir.path().join("bench-400mb.jsonl");
    let small_lines = generate(&small, 200 * MB)?;
    let large_lines = generate(&large, 400 * MB)?;
    let size = |p: &Path| fs::metadata(p).map(|m| m.len());
    let (small_bytes, large_bytes) = (size(&small)?, size(&large)?);
    eprintln!(
        "xtask: {small_lines} conversations in {small_bytes} bytes, {large_lines} in {large_bytes}"
    );

    let data_dir = dir.path().join("cli-data");
    let brightrun = |args: &[&str]| {
        let mut cmd = Command::new(&cli);
        cmd.arg("--json")
            .args(args)
            .env("BRIGHTRUN_URL", &stack.url)
            .env("BRIGHTRUN_ANON_KEY", &stack.anon_key)
            .env("BRIGHTRUN_DATA_DIR", &data_dir)
            .env("BRIGHTRUN_ACCESS_TOKEN", &token)
            .env("BRIGHTRUN_USER_ID", user.to_string())
            .stdin(Stdio::null());
        cmd
    };
    let path_str = |p: &Path| p.to_str().context("utf-8 path").map(str::to_owned);
    let (small_arg, large_arg) = (path_str(&small)?, path_str(&large)?);
    let peer = |file: &str, structural: bool| {
        let mut cmd = Command::new(&python);
        cmd.arg(setup::root().join("benches/validate_peer.py"))
            .arg(file)
            .arg("--ranks")
            .arg(&ranks);
        if structural {
            cmd.arg("--structural");
        }
        cmd
    };

    // Warm the page cache and the tokenizer tables once, unmeasured.
    measure(&mut brightrun(&["datasets", "validate", &small_arg]))?;
    measure(&mut brightrun(&["datasets", "validate", &large_arg]))?;

    // 1. The full report on 200 MB: ours vs Python + tiktoken; alternating.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(measure(&mut brightrun(&[
            "datasets", "validate", &small_arg,
        ]))?);
        theirs.push(measure(&mut peer(&small_arg, false))?);
    }
    let report: Value = serde_json::from_str(&ours[0].stdout).context("validate --json")?;
    let python_report: Value = serde_json::from_str(theirs[0].stdout.trim())?;
    let our_tokens = &report["statistics"]["tokens"]["total"];
    ensure!(
        report["error_count"] == 0 && python_report["errors"] == 0,
        "the generated file must be valid for both: {} / {}",
        report["error_count"],
        python_report["errors"]
    );
    ensure!(
        *our_tokens == python_report["tokens"]["total"]
            && report["statistics"]["conversations"] == python_report["conversations"],
        "both count the same conversations and cl100k tokens: ours {} in {}, Python {} in {}",
        our_tokens,
        report["statistics"]["conversations"],
        python_report["tokens"]["total"],
        python_report["conversations"]
    );

    // 2. The structural pass on 400 MB (ours, and the Python peer without tiktoken).
    let (mut structural, mut structural_peer) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        structural.push(measure(&mut brightrun(&[
            "datasets",
            "validate",
            "--structural",
            &large_arg,
        ]))?);
        structural_peer.push(measure(&mut peer(&large_arg, true))?);
    }
    let structural_report: Value = serde_json::from_str(&structural[0].stdout)?;
    ensure!(
        structural_report["statistics"]["tokens"].is_null(),
        "a structural report has no token figures"
    );

    // 3. The full report on 400 MB, for its peak RSS.
    let mut large_validate = Vec::new();
    for _ in 0..ROUNDS {
        large_validate.push(measure(&mut brightrun(&[
            "datasets", "validate", &large_arg,
        ]))?);
    }

    // 4. Uploads of 400 MB: the whole `datasets upload` vs curl vs tus-js-client; alternating.
    let auth = format!("Authorization: Bearer {token}");
    let apikey = format!("apikey: {}", stack.anon_key);
    let conformance = setup::root().join("conformance");
    let (mut upload, mut curls, mut tus) = (Vec::new(), Vec::new(), Vec::new());
    let mut upload_full = Vec::new();
    for round in 0..ROUNDS {
        // The full check before sending (exact counts), as below 64 MiB.
        let run = measure(&mut brightrun(&[
            "datasets",
            "upload",
            &large_arg,
            "--new",
            "--full",
            "--progress",
            "none",
        ]))?;
        let outcome: Value = serde_json::from_str(&run.stdout).context("upload --json")?;
        ensure!(
            outcome["report"]["statistics"]["tokens"].is_object(),
            "--full counted tokens: {}",
            outcome["report"]["statistics"]
        );
        upload_full.push(run);
        let run = measure(&mut brightrun(&[
            "datasets",
            "upload",
            &large_arg,
            "--new",
            "--progress",
            "none",
        ]))?;
        let outcome: Value = serde_json::from_str(&run.stdout).context("upload --json")?;
        ensure!(
            outcome["bytes"] == large_bytes,
            "the upload sent the file: {outcome}"
        );
        ensure!(
            outcome["report"]["statistics"]["tokens"].is_null(),
            "a 400 MB upload's own check is the structural pass"
        );
        upload.push(run);
        curls.push(curl(&[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            &apikey,
            "-H",
            "content-type: application/jsonl",
            "-T",
            &large_arg,
            &format!(
                "{}/storage/v1/object/lora-datasets/{user}/curl-{round}.jsonl",
                stack.url
            ),
        ])?);
        let run = measure(
            Command::new("node")
                .arg("bench/tus_upload.mjs")
                .arg(&large)
                .arg(&stack.url)
                .arg(&stack.anon_key)
                .arg(&token)
                .arg(format!("{user}/tus-{round}.jsonl"))
                .current_dir(&conformance),
        )?;
        tus.push(run);
    }

    let mbps = |bytes: u64, s: f64| bytes as f64 / MB as f64 / s;
    let (ours_s, theirs_s) = (secs(&ours, |r| r.wall), secs(&theirs, |r| r.wall));
    println!(
        "\n## validate: {small_lines} conversations in {small_bytes} bytes (200 MB), {large_lines} in {large_bytes} bytes (400 MB); median of {ROUNDS}; {} cores\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("| what | brightrun | peer | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| full report, 200 MB (cl100k counts; {} tokens, equal for both) | {ours_s:.2} s ({:.0} MB/s), CPU {:.2} s | Python + {TIKTOKEN}: {theirs_s:.2} s ({:.0} MB/s) | {:.2}× faster | ≥ 5× |",
        our_tokens,
        mbps(small_bytes, ours_s),
        secs(&ours, |r| r.cpu),
        mbps(small_bytes, theirs_s),
        theirs_s / ours_s,
    );
    let (st_wall, st_cpu) = (secs(&structural, |r| r.wall), secs(&structural, |r| r.cpu));
    let st_peer = secs(&structural_peer, |r| r.wall);
    println!(
        "| structural pass, 400 MB (whole process) | {st_wall:.2} s ({:.0} MB/s), CPU {st_cpu:.2} s = **{:.0} MB/s per core** | Python, no tokens: {st_peer:.2} s ({:.0} MB/s) | {:.2}× faster | ≥ 400 MB/s per core |",
        mbps(large_bytes, st_wall),
        mbps(large_bytes, st_cpu),
        mbps(large_bytes, st_peer),
        st_peer / st_wall,
    );
    let (up_s, curl_s, tus_s) = (
        secs(&upload, |r| r.wall),
        median(curls),
        secs(&tus, |r| r.wall),
    );
    println!(
        "| `datasets upload`, 400 MB (structural check — the default from 64 MiB — beside the TUS transfer, register, confirm) | {up_s:.2} s | curl POST of the same bytes: {curl_s:.2} s | {:.2}× curl's time | ≤ 3× (stretch 2×) |",
        up_s / curl_s
    );
    let full_s = secs(&upload_full, |r| r.wall);
    println!(
        "| `datasets upload --full`, 400 MB (exact counts first) | {full_s:.2} s | curl: {curl_s:.2} s | {:.2}× curl's time | |",
        full_s / curl_s
    );
    println!(
        "| | | tus-js-client 4.3.1, Supabase's options (whole `node` process): {tus_s:.2} s | {:.2}× faster | ≥ 2× |",
        tus_s / up_s
    );
    println!(
        "| peak RSS (VmHWM), 400 MB | validate {:.1} MiB, validate --structural {:.1} MiB, upload {:.1} MiB, upload --full {:.1} MiB | tus-js-client {:.1} MiB; Python (200 MB) {:.1} MiB | | ≤ 64 MiB |",
        max_rss_mib(&large_validate),
        max_rss_mib(&structural),
        max_rss_mib(&upload),
        max_rss_mib(&upload_full),
        max_rss_mib(&tus),
        max_rss_mib(&theirs),
    );
    println!(
        "\nvalidate 400 MB (full): {:.2} s; every run (wall s): ours {:?}, Python {:?}, upload {:?}, tus {:?}",
        secs(&large_validate, |r| r.wall),
        ours.iter().map(|r| r.wall).collect::<Vec<_>>(),
        theirs.iter().map(|r| r.wall).collect::<Vec<_>>(),
        upload.iter().map(|r| r.wall).collect::<Vec<_>>(),
        tus.iter().map(|r| r.wall).collect::<Vec<_>>(),
    );
    Ok(())
}
