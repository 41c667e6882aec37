//! Running `brightrun` as a child process pointed at the stack (or a proxy) with a user's token,
//! and reading its JSON progress lines.

use std::path::Path;
use std::process::Stdio;

use brightrun_stack::testing::{self, TestStack, TestUser};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use uuid::Uuid;

pub fn stack() -> &'static TestStack {
    testing::stack()
}

/// `brightrun <args>` against `url` as `user`, with its local database in `data_dir`.
pub fn brightrun(url: &str, user: &TestUser, data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brightrun"));
    command
        .args(args)
        .env("BRIGHTRUN_URL", url)
        .env("BRIGHTRUN_ANON_KEY", &stack().anon_key)
        .env("BRIGHTRUN_DATA_DIR", data_dir)
        .env("BRIGHTRUN_ACCESS_TOKEN", &user.access_token)
        .env("BRIGHTRUN_USER_ID", user.id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// One `--progress json` line.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProgressLine {
    pub phase: String,
    pub bytes: u64,
    pub resumed_from: u64,
}

/// Reads progress lines until one shows bytes moving in this run (`transferring`, past where
/// it started). Returns it, or `None` if the process ended first.
pub async fn bytes_moved(stderr: &mut BufReader<ChildStderr>) -> Option<ProgressLine> {
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(progress) = value.get("progress") else {
            continue;
        };
        let Ok(p) = serde_json::from_value::<ProgressLine>(progress.clone()) else {
            continue;
        };
        if p.phase == "transferring" && p.bytes > p.resumed_from {
            return Some(p);
        }
    }
}

/// Waits for the child and returns its stdout as JSON (the `--json` result).
pub async fn finish(child: Child) -> (std::process::ExitStatus, serde_json::Value, String) {
    let output = child.wait_with_output().await.expect("wait for brightrun");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        output.status,
        json,
        format!("stdout: {stdout}\nstderr: {stderr}"),
    )
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A valid v4 dataset of about `bytes` bytes, unique to this call.
pub fn dataset_file(dir: &Path, name: &str, bytes: usize) -> std::path::PathBuf {
    let tag = Uuid::new_v4().simple().to_string();
    let mut out = String::with_capacity(bytes + 512);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Question {i} ({tag}): what is {i} times two?\"}}, {{\"role\": \"assistant\", \"content\": \"It is {}. Some padding so the line is longer than a few bytes.\"}}]}}\n",
            2 * i
        ));
        i += 1;
    }
    let path = dir.join(name);
    std::fs::write(&path, out).expect("write dataset");
    path
}

/// The user's dataset rows: `(id, status, storage_path)`.
pub async fn dataset_rows(user: Uuid) -> Vec<(Uuid, String, String)> {
    let db = stack().db().await;
    let rows = sqlx::query_as(
        "select id, status::text, storage_path from public.datasets where user_id = $1 order by created_at",
    )
    .bind(user)
    .fetch_all(&db)
    .await
    .expect("datasets query");
    db.close().await;
    rows
}

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// An object's bytes, read with the service_role key.
pub async fn stored_object(bucket: &str, path: &str) -> Vec<u8> {
    let response = http()
        .get(format!(
            "{}/storage/v1/object/authenticated/{bucket}/{path}",
            stack().url
        ))
        .bearer_auth(&stack().service_role_key)
        .send()
        .await
        .expect("object request");
    assert!(
        response.status().is_success(),
        "{bucket}/{path} is readable: {}",
        response.status()
    );
    response.bytes().await.expect("body").to_vec()
}

/// Stores an adapter in lora-models (service_role) with a completed job and an artifact row
/// listing it with its SHA-256. Returns the artifact id.
pub async fn stored_artifact(user: &TestUser, name: &str, bytes: &[u8]) -> Uuid {
    let path = format!("{}/{}/{name}", user.id, Uuid::new_v4());
    let response = http()
        .post(format!(
            "{}/storage/v1/object/lora-models/{path}",
            stack().url
        ))
        .bearer_auth(&stack().service_role_key)
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .expect("upload request");
    assert!(
        response.status().is_success(),
        "service_role upload works: {}",
        response.status()
    );
    let db = stack().db().await;
    let dataset: Uuid = sqlx::query_scalar(
        "insert into public.datasets (user_id, name, status, storage_path, file_name, file_size)
         values ($1, 'for models', 'validating', $1::text || '/' || gen_random_uuid() || '/train.jsonl',
           'train.jsonl', 4096) returning id",
    )
    .bind(user.id)
    .fetch_one(&db)
    .await
    .expect("insert dataset");
    let job: Uuid = sqlx::query_scalar(
        "insert into public.training_jobs (user_id, dataset_id, preset_id, hyperparameters,
           gpu_config, status, current_stage, progress, total_epochs, estimated_total_cost,
           current_cost, cost_per_gpu_hour, num_gpus, started_at, completed_at)
         values ($1, $2, 'balanced',
           (select hyperparameters from public.training_presets where id = 'balanced'),
           '{\"gpu_type\": \"A100-80GB\", \"num_gpus\": 1, \"gpu_memory_gb\": 80, \"cost_per_gpu_hour\": 3.0}',
           'completed', 'completed', 100, 5, 4.20, 1.10, 3.0, 1, now(), now())
         returning id",
    )
    .bind(user.id)
    .bind(dataset)
    .fetch_one(&db)
    .await
    .expect("insert job");
    let artifacts = serde_json::json!({"files": [
        {"name": name, "path": path, "size": bytes.len(), "sha256": sha256_hex(bytes)}
    ]});
    let artifact: Uuid = sqlx::query_scalar(
        "insert into public.model_artifacts (user_id, job_id, dataset_id, name, quality_metrics,
           training_summary, configuration, artifacts)
         values ($1, $2, $3, 'adapter', '{\"final_training_loss\": 0.8}', '{\"total_cost\": 1.1}',
           '{}', $4) returning id",
    )
    .bind(user.id)
    .bind(job)
    .bind(dataset)
    .bind(artifacts)
    .fetch_one(&db)
    .await
    .expect("insert artifact");
    db.close().await;
    artifact
}

/// Deterministic pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
