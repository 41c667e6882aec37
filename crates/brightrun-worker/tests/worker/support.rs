//! Test support: users, datasets and jobs made through the real API, worker processes, and
//! bounded waits on database state.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brightrun_stack::testing::{TestStack, TestUser, mint_user, stack};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

pub fn st() -> &'static TestStack {
    stack()
}

pub async fn db() -> PgPool {
    st().db().await
}

pub async fn user(tag: &str) -> TestUser {
    mint_user(st(), tag).await
}

/// A valid v4 dataset of `n` conversations.
pub fn good_jsonl(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"messages": [
                {"role": "system", "content": "You are a helpful support bot."},
                {"role": "user", "content": format!("How do I reset password number {i}?")},
                {"role": "assistant", "content": format!("Open settings, choose reset, and follow step {i}.")},
            ]})
            .to_string()
                + "\n"
        })
        .collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Calls an RPC as `user`; panics with the body on an error status.
pub async fn rpc(user: &TestUser, name: &str, args: Value) -> Value {
    let resp = http()
        .post(st().rest(&format!("rpc/{name}")))
        .header("apikey", &st().anon_key)
        .bearer_auth(&user.access_token)
        .json(&args)
        .send()
        .await
        .expect("rpc request");
    let status = resp.status();
    let body: Value = resp.json().await.expect("rpc json");
    assert!(
        status.is_success(),
        "rpc {name} failed with {status}: {body}"
    );
    body
}

/// The whole upload flow as a client does it: create_dataset, upload to the returned path with
/// the user's token, confirm_dataset_upload. Returns the dataset id (status `validating`).
pub async fn upload_dataset(user: &TestUser, name: &str, content: &str) -> Uuid {
    let ds = rpc(
        user,
        "create_dataset",
        json!({"name": name, "file_name": "data.jsonl", "file_size": content.len()}),
    )
    .await;
    let path = ds["storage_path"].as_str().expect("storage_path");
    let resp = http()
        .post(format!(
            "{}/storage/v1/object/lora-datasets/{path}",
            st().url
        ))
        .header("apikey", &st().anon_key)
        .bearer_auth(&user.access_token)
        .header("content-type", "application/jsonl")
        .body(content.to_owned())
        .send()
        .await
        .expect("upload");
    assert!(
        resp.status().is_success(),
        "dataset upload failed: {}",
        resp.text().await.unwrap_or_default()
    );
    let id: Uuid = ds["id"].as_str().expect("id").parse().expect("uuid");
    rpc(user, "confirm_dataset_upload", json!({"dataset_id": id})).await;
    id
}

/// A dataset uploaded by the user and marked ready directly in the database (for tests about
/// training, where validation is not the point).
pub async fn ready_dataset(pool: &PgPool, user: &TestUser, conversations: usize) -> Uuid {
    let content = good_jsonl(conversations);
    let id = upload_dataset(user, "ready set", &content).await;
    sqlx::query(
        "update public.datasets set status = 'ready', training_ready = true, validated_at = now(),
                total_training_pairs = $2, total_validation_pairs = 0, total_tokens = $3,
                training_tokens = $3
          where id = $1",
    )
    .bind(id)
    .bind(conversations as i32)
    .bind((conversations * 40) as i64)
    .execute(pool)
    .await
    .expect("mark ready");
    id
}

/// A job through create_training_job; `hp` overrides the preset's hyperparameters.
pub async fn create_job(user: &TestUser, dataset: Uuid, hp: Value) -> Uuid {
    let job = rpc(
        user,
        "create_training_job",
        json!({"dataset_id": dataset, "preset_id": "balanced", "gpu_type": "A100-80GB",
               "gpu_count": 1, "hyperparameters": hp}),
    )
    .await;
    job["id"].as_str().expect("job id").parse().expect("uuid")
}

/// Polls `check` until it returns `Some`, at most `timeout`; panics with `what` otherwise.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn job_status(pool: &PgPool, job: Uuid) -> String {
    sqlx::query_scalar("select status from public.training_jobs where id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .expect("job status")
}

/// Waits until the job reaches `status`.
pub async fn wait_status(pool: &PgPool, job: Uuid, status: &str, timeout: Duration) {
    let status = status.to_owned();
    wait_for(&format!("job {job} to be {status}"), timeout, || {
        let pool = pool.clone();
        let status = status.clone();
        async move { (job_status(&pool, job).await == status).then_some(()) }
    })
    .await
}

/// Waits until `job` is running and has logged step `step` or later.
pub async fn wait_training(pool: &PgPool, job: Uuid, step: i32, what: &str) {
    wait_for(what, Duration::from_secs(60), || {
        let pool = pool.clone();
        async move {
            let current: i32 = sqlx::query_scalar(
                "select current_step from public.training_jobs where id = $1 and status = 'running'",
            )
            .bind(job)
            .fetch_optional(&pool)
            .await
            .ok()??;
            (current >= step).then_some(())
        }
    })
    .await
}

/// A `brightrun-worker` process; killed (SIGKILL) when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub id: String,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn start(dir: &Path, users: &[Uuid], extra: &[&str]) -> Self {
        Self::start_with(dir, users, extra, |_| {})
    }

    /// [`WorkerProcess::start`], with a last say on the command (its environment, say).
    pub fn start_with(
        dir: &Path,
        users: &[Uuid],
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let id = format!("test-worker-{}", Uuid::new_v4().simple());
        let log = dir.join(format!("{id}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brightrun-worker"));
        cmd.env("DATABASE_URL", &st().db_url)
            .env("BRIGHTRUN_API_URL", &st().url)
            .env("BRIGHTRUN_SERVICE_ROLE_KEY", &st().service_role_key)
            .env("RUST_LOG", "info,sqlx=warn")
            .args(["--worker-id", &id, "--log-format", "plain"])
            .arg("--work-dir")
            .arg(dir.join(&id))
            .args([
                "--poll-ms",
                "200",
                "--heartbeat-ms",
                "300",
                "--reap-ms",
                "300",
            ])
            .args(["--retry-backoff-ms", "50"])
            .args(["--backend", "scripted"]);
        for u in users {
            cmd.arg("--only-user").arg(u.to_string());
        }
        // Later arguments win in clap for single-valued options.
        cmd.args(extra);
        configure(&mut cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn brightrun-worker");
        Self { child, id, log }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit; returns whether it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if start.elapsed() > timeout {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An object's bytes, read with the service_role key.
pub async fn download(bucket: &str, path: &str) -> Vec<u8> {
    st().object(bucket, path).await
}

pub use brightrun_stack::testing::sha256_hex;
