//! The Ray backend against a real local Ray head (token auth, loopback only) and a real
//! brightrun-stack: `cargo xtask test` runs these in a network namespace of their own, one at a
//! time (`.config/nextest.toml`).

mod head;
#[path = "../worker/support.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

use brightrun_supabase::Secret;
use brightrun_worker::remote::ray::{RayApi, RayJob};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use head::RayHead;
use support::*;

const MINUTE: Duration = Duration::from_secs(60);

/// A worker on the Ray backend, for `user`'s jobs only.
fn ray_worker(dir: &std::path::Path, head: &RayHead, user: Uuid, extra: &[&str]) -> WorkerProcess {
    let mut args = vec![
        "--backend",
        "ray",
        "--ray-address",
        &head.address,
        "--ray-train-binary",
        env!("CARGO_BIN_EXE_brightrun-train"),
    ];
    args.extend_from_slice(extra);
    let token = head.token.clone();
    WorkerProcess::start_with(dir, &[user], &args, move |cmd| {
        cmd.env("RAY_AUTH_TOKEN", token);
    })
}

fn api(head: &RayHead) -> RayApi {
    RayApi::new(
        head.address.parse().expect("address"),
        Some(Secret::new(head.token.clone())),
    )
    .expect("client")
}

/// The Ray jobs submitted for one of our jobs.
async fn ray_jobs_of(head: &RayHead, job: Uuid) -> Vec<RayJob> {
    let job = job.to_string();
    api(head)
        .jobs()
        .await
        .expect("list Ray jobs")
        .into_iter()
        .filter(|j| {
            j.metadata
                .as_ref()
                .and_then(|m| m.get("brightrun_job_id"))
                .is_some_and(|id| *id == job)
        })
        .collect()
}

/// The tiny byte-level candle model; `epochs` sets how long the run is.
fn settings(epochs: u32) -> Value {
    json!({
        "base_model": "brightrun/byte-llama-tiny",
        "learning_rate": 0.01,
        "batch_size": 2,
        "num_epochs": epochs,
        "lora_rank": 8,
        "lora_alpha": 32,
        "warmup_steps": 2,
    })
}

async fn scalar_i64(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect(sql)
}

async fn external_id(pool: &PgPool, job: Uuid) -> Option<String> {
    sqlx::query_scalar("select external_job_id from public.training_jobs where id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .expect("job")
}

#[tokio::test]
async fn a_job_runs_as_a_ray_job_and_completes_with_metrics_verified_artifacts_and_a_notification()
{
    let head = RayHead::start().await;
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("ray-complete").await;
    let ds = ready_dataset(&pool, &u, 16).await;
    let job = create_job(&u, ds, settings(2)).await;
    let w = ray_worker(dir.path(), &head, u.id, &[]);
    wait_status(&pool, job, "completed", 4 * MINUTE).await;
    let log = w.log_text();
    assert!(!log.contains(&head.token), "the Ray token is never logged");

    let ray = ray_jobs_of(&head, job).await;
    assert_eq!(ray.len(), 1, "one Ray job for the one attempt");
    assert_eq!(ray[0].status, "SUCCEEDED");
    assert_eq!(
        ray[0].submission_id.as_deref(),
        Some(format!("brightrun-{job}-a1").as_str())
    );
    assert_eq!(
        external_id(&pool, job).await.as_deref(),
        ray[0].submission_id.as_deref()
    );

    let (points, steps, total): (i64, i64, i32) = sqlx::query_as(
        "select count(*), count(distinct m.step), max(j.total_steps)
           from public.metrics_points m join public.training_jobs j on j.id = m.job_id
          where m.job_id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("metrics");
    assert!(points > 0, "the entrypoint's steps became metrics rows");
    assert_eq!(points, steps, "one row per step");
    assert_eq!(steps, i64::from(total), "every step of the run");

    let (artifacts, summary): (Value, Value) = sqlx::query_as(
        "select artifacts, training_summary from public.model_artifacts where job_id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("one artifact row");
    assert_eq!(summary["backend"], "ray");
    let files = artifacts["files"].as_array().expect("files");
    let names: Vec<&str> = files.iter().filter_map(|f| f["name"].as_str()).collect();
    for wanted in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
    ] {
        assert!(names.contains(&wanted), "{wanted} in {names:?}");
    }
    for f in files {
        let path = f["path"].as_str().expect("path");
        assert!(path.contains(&format!("/{job}/attempt-1/")), "{path}");
        let bytes = download("lora-models", path).await;
        assert_eq!(Some(bytes.len() as u64), f["size"].as_u64(), "{path}");
        assert_eq!(
            f["sha256"].as_str(),
            Some(sha256_hex(&bytes).as_str()),
            "{path}"
        );
    }
    let config: Value = serde_json::from_slice(
        &download(
            "lora-models",
            &format!("{}/{job}/attempt-1/adapter_config.json", u.id),
        )
        .await,
    )
    .expect("adapter_config.json");
    assert_eq!(config["peft_type"], "LORA");

    // The staging folder (tickets and the cluster's uploads) went with the attempt's leftovers.
    let key = Secret::new(st().service_role_key.clone());
    let storage = brightrun_supabase::Storage::new(
        reqwest::Client::new(),
        &st().url.parse().expect("url"),
        key.clone(),
        std::sync::Arc::new(key),
    );
    let left = storage
        .list("lora-models", &format!("{}/{job}/", u.id))
        .await
        .expect("list");
    assert_eq!(left, ["attempt-1"], "only the attempt's folder is left");

    let notes = scalar_i64(
        &pool,
        "select count(*) from public.notifications where user_id = $1 and type = 'job_complete'",
        u.id,
    )
    .await;
    assert_eq!(notes, 1, "one completion notification");
}

#[tokio::test]
async fn cancel_while_running_cancels_the_job_within_5_s_and_stops_the_ray_job() {
    let head = RayHead::start().await;
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("ray-cancel").await;
    let ds = ready_dataset(&pool, &u, 16).await;
    let job = create_job(&u, ds, settings(100)).await;
    let _w = ray_worker(dir.path(), &head, u.id, &[]);
    wait_training(&pool, job, 2, "the Ray job to be training").await;
    let asked = Instant::now();
    rpc(&u, "cancel_training_job", json!({"job_id": job})).await;
    wait_status(&pool, job, "cancelled", Duration::from_secs(5)).await;
    eprintln!("cancelled after {:?}", asked.elapsed());
    let ray = wait_for("the Ray job to be STOPPED", MINUTE, || {
        let head = &head;
        async move {
            let ray = ray_jobs_of(head, job).await;
            (ray.len() == 1 && ray[0].status == "STOPPED").then_some(ray)
        }
    })
    .await;
    assert_eq!(ray.len(), 1);
    let artifacts = scalar_i64(
        &pool,
        "select count(*) from public.model_artifacts where job_id = $1",
        job,
    )
    .await;
    assert_eq!(artifacts, 0, "no adapter for a cancelled job");
}

#[tokio::test]
async fn the_upload_urls_of_a_running_job_are_renewed_before_they_expire() {
    let head = RayHead::start().await;
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("ray-tickets").await;
    let ds = ready_dataset(&pool, &u, 16).await;
    let job = create_job(&u, ds, settings(100)).await;
    // Upload URLs that last 2 s: renewed every second.
    let _w = ray_worker(
        dir.path(),
        &head,
        u.id,
        &["--ray-upload-url-lifetime-s", "2"],
    );
    wait_training(&pool, job, 2, "the Ray job to be training").await;
    let tickets_path = format!("{}/{job}/ray-a1/upload-tickets.json", u.id);
    let read = || async {
        let bytes = download("lora-models", &tickets_path).await;
        serde_json::from_slice::<Value>(&bytes).expect("tickets JSON")
    };
    let first = read().await;
    let files = first["files"].as_object().expect("files");
    assert!(files.contains_key("adapter_model.safetensors"), "{first}");
    assert!(
        files.values().all(|u| u
            .as_str()
            .is_some_and(|u| u.contains("/object/upload/sign/lora-models/")
                && u.contains(&format!("/{job}/ray-a1/")))),
        "each ticket writes into the job's staging folder only: {first}"
    );
    let renewed = wait_for("the tickets to be renewed", Duration::from_secs(20), || {
        let first = first.clone();
        async move {
            let now = read().await;
            (now["expires_at"].as_i64() > first["expires_at"].as_i64()
                && now["files"] != first["files"])
                .then_some(now)
        }
    })
    .await;
    assert!(renewed["expires_at"].as_i64() > first["expires_at"].as_i64());
    rpc(&u, "cancel_training_job", json!({"job_id": job})).await;
    wait_status(&pool, job, "cancelled", Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_is_replaced_by_one_that_reattaches() {
    let head = RayHead::start().await;
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("ray-reattach").await;
    let ds = ready_dataset(&pool, &u, 16).await;
    let job = create_job(&u, ds, settings(40)).await;
    let lease = ["--lease-ms", "1500"];
    let mut a = ray_worker(dir.path(), &head, u.id, &lease);
    wait_training(&pool, job, 3, "the Ray job to be training").await;
    assert!(external_id(&pool, job).await.is_some());
    let before = ray_jobs_of(&head, job).await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].status, "RUNNING",
        "the worker dies under a running job"
    );
    a.kill();
    let _b = ray_worker(dir.path(), &head, u.id, &lease);
    wait_status(&pool, job, "completed", 4 * MINUTE).await;

    let ray = ray_jobs_of(&head, job).await;
    assert_eq!(
        ray.len(),
        1,
        "the second worker attached to the first attempt's Ray job"
    );
    assert_eq!(
        ray[0].submission_id.as_deref(),
        Some(format!("brightrun-{job}-a1").as_str())
    );
    let (attempt, total): (i32, i32) =
        sqlx::query_as("select attempt, total_steps from public.training_jobs where id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("job");
    assert_eq!(attempt, 2, "finished by the second attempt");
    let (points, steps, other): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct step), count(*) filter (where attempt <> 2)
           from public.metrics_points where job_id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("metrics");
    assert_eq!(points, steps, "no duplicate metrics rows");
    assert_eq!(steps, i64::from(total), "the replayed log gave every step");
    assert_eq!(other, 0, "the dead attempt's rows are gone");
}

#[tokio::test]
async fn a_ray_head_restarted_under_a_running_job_gets_the_job_submitted_again() {
    let mut head = RayHead::start().await;
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("ray-head").await;
    let ds = ready_dataset(&pool, &u, 16).await;
    // Long enough (800 steps) to be mid-run when the head goes.
    let job = create_job(&u, ds, settings(100)).await;
    let w = ray_worker(dir.path(), &head, u.id, &[]);
    wait_training(&pool, job, 2, "the Ray job to be training").await;
    let before = ray_jobs_of(&head, job).await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        before[0].status, "RUNNING",
        "the head goes under a running job"
    );
    head.restart().await;
    wait_status(&pool, job, "completed", 5 * MINUTE).await;

    let ray = ray_jobs_of(&head, job).await;
    assert_eq!(
        ray.len(),
        1,
        "the new head knows only the resubmission; the worker's log:\n{}",
        w.log_text()
    );
    assert_eq!(
        ray[0].submission_id.as_deref(),
        Some(format!("brightrun-{job}-a2").as_str()),
        "submitted again by the next attempt"
    );
    let log = w.log_text();
    assert!(
        log.contains(&format!("ray lost remote job brightrun-{job}-a1")),
        "the first attempt failed with a clear message: {log}"
    );
}

#[tokio::test]
async fn a_broken_entrypoint_fails_the_job_with_its_last_words() {
    let head = RayHead::start().await;
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken-train");
    std::fs::write(
        &broken,
        "#!/bin/sh\n\
         echo '{\"brightrun\":1,\"event\":\"stage\",\"stage\":\"training\"}'\n\
         echo 'Traceback (most recent call last):' >&2\n\
         echo 'RuntimeError: CUDA error: out of memory' >&2\n\
         exit 3\n",
    )
    .expect("script");
    let u = user("ray-broken").await;
    let ds = ready_dataset(&pool, &u, 16).await;
    let job = create_job(&u, ds, settings(2)).await;
    sqlx::query("update public.training_jobs set max_attempts = 1 where id = $1")
        .bind(job)
        .execute(&pool)
        .await
        .expect("one attempt");
    let broken = broken.to_str().expect("utf-8").to_owned();
    let _w = ray_worker(dir.path(), &head, u.id, &["--ray-train-binary", &broken]);
    wait_status(&pool, job, "failed", 2 * MINUTE).await;
    let message: String =
        sqlx::query_scalar("select error_message from public.training_jobs where id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("job");
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        message.contains("RuntimeError: CUDA error: out of memory"),
        "the entrypoint's last output is in the message: {message}"
    );
    let notes = scalar_i64(
        &pool,
        "select count(*) from public.notifications where user_id = $1 and type = 'job_failed'",
        u.id,
    )
    .await;
    assert_eq!(notes, 1, "one failure notification");
}
