//! `cargo xtask bench ray`: the demo job (`crates/brightrun-worker/demo`) through the Ray
//! backend on a local Ray head and through the local candle backend, in one run, release
//! builds: submit → first metric, and submit → completed. Runs in a network namespace with only
//! loopback, like the Ray tests.
//!
//! Times come from the database's own clock: the job's `created_at` (the RPC), its first
//! `metrics_points.timestamp`, and its `completed_at`. One untimed job per backend first (it
//! builds the base model, and uploads the entrypoint package to Ray), then RUNS jobs per backend,
//! alternating.

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use brightrun_stack::testing::{TestStack as StackHandle, TestUser, mint_user};
use serde_json::{Value, json};

use crate::bench::{median, psql};
use crate::setup;
use crate::stack::{Profile, TEST_JWT_SECRET, TestStack};

const RUNS: usize = 3;

pub fn run() -> Result<ExitCode> {
    if !crate::ray::isolated()? {
        if !setup::cargo(&["build", "--release", "-p", "brightrun-worker", "--bins"])? {
            bail!("building the release worker failed");
        }
        return crate::ray::reexec_isolated(&["bench", "ray"], &crate::ray::ray_env()?);
    }
    let stack = TestStack::start(Profile::Release)?;
    let result = measure(&stack);
    stack.stop()?;
    result.map(|()| ExitCode::SUCCESS)
}

struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let _ = kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Timing {
    first_metric: f64,
    total: f64,
}

fn measure(stack: &TestStack) -> Result<()> {
    let release = setup::target_dir()?.join("release");
    let work = tempfile::Builder::new().prefix("br-ray-bench-").tempdir()?;
    let cache = work.path().join("candle-cache");
    let handle = StackHandle {
        url: stack.url.clone(),
        anon_key: stack.anon_key.clone(),
        service_role_key: stack.service_role_key.clone(),
        db_url: stack.db_url.clone(),
        jwt_secret: TEST_JWT_SECRET.to_owned(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local_user = runtime.block_on(mint_user(&handle, "bench-candle"));
    let ray_user = runtime.block_on(mint_user(&handle, "bench-ray"));

    let head = crate::ray::LocalHead::start(
        &crate::ray::program_from_env()?,
        2,
        &[(
            "BRIGHTRUN_TRAIN_CACHE".to_owned(),
            cache.display().to_string(),
        )],
    )?;
    let worker = |user: &TestUser, backend: &[&str], token: Option<&str>| -> Result<Worker> {
        let mut command = Command::new(release.join("brightrun-worker"));
        command
            .env("DATABASE_URL", &stack.db_url)
            .env("BRIGHTRUN_API_URL", &stack.url)
            .env("BRIGHTRUN_SERVICE_ROLE_KEY", &stack.service_role_key)
            .env("RUST_LOG", "warn")
            .arg("--work-dir")
            .arg(work.path().join(user.id.to_string()))
            .arg("--cache-dir")
            .arg(&cache)
            .args(["--only-user", &user.id.to_string(), "--concurrency", "1"])
            .args(["--poll-ms", "500"])
            .args(backend)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(token) = token {
            command.env("RAY_AUTH_TOKEN", token);
        }
        Ok(Worker(command.spawn().context("starting a worker")?))
    };
    let result = (|| -> Result<()> {
        let _local = worker(&local_user, &["--backend", "candle"], None)?;
        let _ray = worker(
            &ray_user,
            &["--backend", "ray", "--ray-address", &head.address],
            Some(&head.token),
        )?;
        let demo = setup::root().join("crates/brightrun-worker/demo");
        let content = std::fs::read_to_string(demo.join("support-bot.jsonl"))?;
        let settings: Value = serde_json::from_str(&std::fs::read_to_string(
            demo.join("support-bot.hyperparameters.json"),
        )?)?;
        let local_ds = runtime.block_on(ready_dataset(&handle, &local_user, &content))?;
        let ray_ds = runtime.block_on(ready_dataset(&handle, &ray_user, &content))?;
        let job = |user: &TestUser, ds: uuid::Uuid| -> Result<Timing> {
            let id = runtime.block_on(create_job(&handle, user, ds, &settings))?;
            wait_completed(&stack.db_url, id)?;
            timing(&stack.db_url, id)
        };
        eprintln!("xtask: one untimed job per backend (base model, entrypoint package)");
        let first_local = job(&local_user, local_ds)?;
        let first_ray = job(&ray_user, ray_ds)?;
        let (mut local, mut ray) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            local.push(job(&local_user, local_ds)?);
            ray.push(job(&ray_user, ray_ds)?);
            eprintln!(
                "xtask: run {}: local {:?}, ray {:?}",
                i + 1,
                local[i],
                ray[i]
            );
        }
        let med = |xs: &[Timing], f: fn(&Timing) -> f64| median(xs.iter().map(f).collect());
        println!(
            "\nThe demo job (36 conversations, 15 epochs, 240 steps), median of {RUNS} (first job):"
        );
        println!("| backend | submit → first metric | submit → completed |");
        println!("|---|---|---|");
        println!(
            "| local candle (`--backend candle`) | {:.2} s ({:.2}) | {:.2} s ({:.2}) |",
            med(&local, |t| t.first_metric),
            first_local.first_metric,
            med(&local, |t| t.total),
            first_local.total
        );
        println!(
            "| Ray (`--backend ray`, brightrun-train on a local head) | {:.2} s ({:.2}) | {:.2} s ({:.2}) |",
            med(&ray, |t| t.first_metric),
            first_ray.first_metric,
            med(&ray, |t| t.total),
            first_ray.total
        );
        Ok(())
    })();
    head.stop();
    result
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

pub(crate) async fn rpc(
    stack: &StackHandle,
    user: &TestUser,
    name: &str,
    args: Value,
) -> Result<Value> {
    let response = http()
        .post(stack.rest(&format!("rpc/{name}")))
        .header("apikey", &stack.anon_key)
        .bearer_auth(&user.access_token)
        .json(&args)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("rpc {name}: {status} {body}");
    }
    Ok(body)
}

/// A dataset uploaded as a client does it, then marked ready directly in the database (the
/// worker's validation is not what is measured or checked).
pub(crate) async fn ready_dataset(
    stack: &StackHandle,
    user: &TestUser,
    content: &str,
) -> Result<uuid::Uuid> {
    let ds = rpc(
        stack,
        user,
        "create_dataset",
        json!({"name": "support-bot", "file_name": "support-bot.jsonl", "file_size": content.len()}),
    )
    .await?;
    let path = ds["storage_path"].as_str().context("storage_path")?;
    let response = http()
        .post(format!(
            "{}/storage/v1/object/lora-datasets/{path}",
            stack.url
        ))
        .header("apikey", &stack.anon_key)
        .bearer_auth(&user.access_token)
        .header("content-type", "application/jsonl")
        .body(content.to_owned())
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("uploading the demo set: {}", response.status());
    }
    let id: uuid::Uuid = ds["id"].as_str().context("id")?.parse()?;
    rpc(
        stack,
        user,
        "confirm_dataset_upload",
        json!({"dataset_id": id}),
    )
    .await?;
    let lines = content.lines().filter(|l| !l.trim().is_empty()).count();
    psql(
        &stack.db_url,
        &format!(
            "update public.datasets set status = 'ready', training_ready = true, validated_at = now(),
                    total_training_pairs = {lines}, total_validation_pairs = 0,
                    total_tokens = {t}, training_tokens = {t} where id = '{id}'",
            t = lines * 200
        ),
    )?;
    Ok(id)
}

pub(crate) async fn create_job(
    stack: &StackHandle,
    user: &TestUser,
    dataset: uuid::Uuid,
    settings: &Value,
) -> Result<uuid::Uuid> {
    let job = rpc(
        stack,
        user,
        "create_training_job",
        json!({"dataset_id": dataset, "preset_id": "custom", "gpu_type": "A100-80GB",
               "gpu_count": 1, "hyperparameters": settings}),
    )
    .await?;
    Ok(job["id"].as_str().context("job id")?.parse()?)
}

fn wait_completed(db_url: &str, job: uuid::Uuid) -> Result<()> {
    let start = Instant::now();
    loop {
        let status = psql(
            db_url,
            &format!("select status from public.training_jobs where id = '{job}'"),
        )?;
        match status.as_str() {
            "completed" => return Ok(()),
            "failed" | "cancelled" => bail!("job {job} ended {status}"),
            _ => {}
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("job {job} did not complete within 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn timing(db_url: &str, job: uuid::Uuid) -> Result<Timing> {
    let row = psql(
        db_url,
        &format!(
            "select extract(epoch from (select min(m.timestamp) from public.metrics_points m where m.job_id = j.id) - j.created_at),
                    extract(epoch from j.completed_at - j.created_at)
               from public.training_jobs j where j.id = '{job}'"
        ),
    )?;
    let mut parts = row.split('|').map(|v| v.trim().parse::<f64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(first_metric)), Some(Ok(total))) => Ok(Timing {
            first_metric,
            total,
        }),
        _ => bail!("no timing for job {job}: {row:?}"),
    }
}
