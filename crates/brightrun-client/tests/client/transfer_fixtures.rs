//! Set-up for the transfer tests: users with static tokens (optionally behind a proxy), dataset
//! files, the local upload table, and server-side checks made with the superuser pool or the
//! service_role key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brightrun_client::local::LocalDb;
use brightrun_client::session::Session;
use brightrun_client::transfer::UploadStateStore;
use brightrun_client::{Project, Secret};
use brightrun_stack::testing::{self, TestStack, TestUser};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

pub fn stack() -> &'static TestStack {
    testing::stack()
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// A user's session with a fixed token, talking to `url` (the stack or a proxy in front of it).
pub fn session_at(url: &str, user: &TestUser) -> Arc<Session> {
    let project = Project {
        url: url.parse().expect("URL parses"),
        anon_key: stack().anon_key.clone(),
    };
    Session::with_static_token(
        project,
        http(),
        user.id,
        Secret::new(user.access_token.clone()),
    )
}

/// A fresh local database in `dir`.
pub async fn local_store(dir: &Path) -> UploadStateStore {
    let db = LocalDb::open(&dir.join("local.db"))
        .await
        .expect("local db opens");
    UploadStateStore::from_local(&db)
}

/// A valid v4 dataset of about `bytes` bytes, unique to this call.
pub fn dataset_file(dir: &Path, name: &str, bytes: usize) -> PathBuf {
    let tag = Uuid::new_v4().simple().to_string();
    let mut out = String::with_capacity(bytes + 512);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Question {i} ({tag}): what is {i} plus {i}?\"}}, {{\"role\": \"assistant\", \"content\": \"{i} plus {i} is {}. Padding to make the line longer: lorem ipsum dolor sit amet.\"}}]}}\n",
            2 * i
        ));
        i += 1;
    }
    let path = dir.join(name);
    std::fs::write(&path, out).expect("write dataset");
    path
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn file_sha256(path: &Path) -> String {
    sha256_hex(&std::fs::read(path).expect("read file"))
}

/// The stored object's bytes, read with the service_role key.
pub async fn stored_object(bucket: &str, path: &str) -> Vec<u8> {
    let url = format!(
        "{}/storage/v1/object/authenticated/{bucket}/{path}",
        stack().url
    );
    let response = http()
        .get(url)
        .bearer_auth(&stack().service_role_key)
        .send()
        .await
        .expect("object request");
    assert!(
        response.status().is_success(),
        "the object {bucket}/{path} is readable: {}",
        response.status()
    );
    response.bytes().await.expect("object body").to_vec()
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

/// Puts `bytes` at `lora-models/<path>` with the service_role key (as the worker does).
pub async fn put_model_object(path: &str, bytes: Vec<u8>) {
    let url = format!("{}/storage/v1/object/lora-models/{path}", stack().url);
    let response = http()
        .post(url)
        .bearer_auth(&stack().service_role_key)
        .header("content-type", "application/octet-stream")
        .header("x-upsert", "true")
        .body(bytes)
        .send()
        .await
        .expect("upload request");
    assert!(
        response.status().is_success(),
        "service_role upload to lora-models/{path} works: {}",
        response.status()
    );
}

/// A dataset, a completed job and a `model_artifacts` row whose `artifacts` is `artifacts`
/// (the rows only the worker would write, as it writes them). Returns `(job id, artifact id)`.
pub async fn artifact_row(user: &TestUser, artifacts: serde_json::Value) -> (Uuid, Uuid) {
    let db = stack().db().await;
    let dataset: Uuid = sqlx::query_scalar(
        "insert into public.datasets (user_id, name, status, storage_path, file_name, file_size)
         values ($1, 'for models', 'validating', $1::text || '/' || gen_random_uuid() || '/train.jsonl',
           'train.jsonl', 4096)
         returning id",
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
    let artifact: Uuid = sqlx::query_scalar(
        "insert into public.model_artifacts (user_id, job_id, dataset_id, name, quality_metrics,
           training_summary, configuration, artifacts)
         values ($1, $2, $3, 'adapter',
           '{\"final_training_loss\": 0.8, \"final_validation_loss\": 0.9, \"convergence_quality\": \"good\"}',
           '{\"duration_seconds\": 60, \"total_epochs\": 5, \"final_learning_rate\": 0.0001,
             \"gpu_hours\": 0.4, \"total_cost\": 1.1}',
           jsonb_build_object('preset_id', 'balanced',
             'hyperparameters', (select hyperparameters from public.training_presets where id = 'balanced'),
             'gpu_config', '{\"gpu_type\": \"A100-80GB\", \"num_gpus\": 1, \"gpu_memory_gb\": 80, \"cost_per_gpu_hour\": 3.0}'::jsonb,
             'dataset_name', 'for models'),
           $4)
         returning id",
    )
    .bind(user.id)
    .bind(job)
    .bind(dataset)
    .bind(artifacts)
    .fetch_one(&db)
    .await
    .expect("insert artifact");
    db.close().await;
    (job, artifact)
}

/// Deterministic pseudo-random bytes (an "adapter").
pub fn adapter_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A progress sink that records every report and flags when bytes move in this run
/// (`Transferring`, past where the run started).
pub fn moving_sink() -> (
    brightrun_client::transfer::ProgressFn,
    tokio::sync::watch::Receiver<bool>,
    Arc<std::sync::Mutex<Vec<brightrun_client::transfer::Progress>>>,
) {
    use brightrun_client::transfer::{Phase, Progress};
    let (tx, rx) = tokio::sync::watch::channel(false);
    let seen: Arc<std::sync::Mutex<Vec<Progress>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |p: &Progress| {
            if p.phase == Phase::Transferring && p.bytes > p.resumed_from {
                tx.send_replace(true);
            }
            seen.lock().expect("lock").push(p.clone());
        }) as brightrun_client::transfer::ProgressFn
    };
    (sink, rx, seen)
}

/// Short delays for tests against a local server.
pub fn fast_retry() -> brightrun_client::retry::RetryPolicy {
    brightrun_client::retry::RetryPolicy {
        max_retries: 12,
        base: std::time::Duration::from_millis(5),
        max_backoff: std::time::Duration::from_millis(100),
        total_timeout: std::time::Duration::from_millis(200),
    }
}
