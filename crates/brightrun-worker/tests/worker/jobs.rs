//! Worker processes end to end: validation, training, retries, cancellation, crashes, load.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::*;

const MINUTE: Duration = Duration::from_secs(60);

async fn scalar_i64(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect(sql)
}

/// Checks a completed job's artifact row against the stored objects; returns its `artifacts`.
async fn check_artifacts(pool: &PgPool, job: Uuid, attempt: i32) -> Value {
    let rows: Vec<(Value,)> =
        sqlx::query_as("select artifacts from public.model_artifacts where job_id = $1")
            .bind(job)
            .fetch_all(pool)
            .await
            .expect("artifacts");
    assert_eq!(rows.len(), 1, "exactly one artifact row for the job");
    let artifacts = rows[0].0.clone();
    let files = artifacts["files"].as_array().expect("files list").clone();
    assert!(
        files.len() >= 3,
        "adapter, config and tokenizer files: {artifacts}"
    );
    for f in &files {
        let path = f["path"].as_str().expect("path");
        assert!(
            path.contains(&format!("/{job}/attempt-{attempt}/")),
            "files live under the job's attempt prefix: {path}"
        );
        let bytes = download("lora-models", path).await;
        assert_eq!(
            Some(bytes.len() as u64),
            f["size"].as_u64(),
            "recorded size matches the object: {path}"
        );
        assert_eq!(
            f["sha256"].as_str(),
            Some(sha256_hex(&bytes).as_str()),
            "recorded SHA-256 matches the object: {path}"
        );
    }
    artifacts
}

#[tokio::test]
async fn an_uploaded_dataset_is_validated_and_a_job_through_the_rpc_completes() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("e2e").await;
    let _w = WorkerProcess::start(dir.path(), &[u.id], &["--scripted-steps", "8"]);

    let ds = upload_dataset(&u, "support-bot", &good_jsonl(25)).await;
    wait_for("the dataset to be validated", MINUTE, || {
        let pool = pool.clone();
        async move {
            let s: String = sqlx::query_scalar("select status from public.datasets where id = $1")
                .bind(ds)
                .fetch_one(&pool)
                .await
                .ok()?;
            (s != "validating").then_some(())
        }
    })
    .await;
    let (status, ready, pairs, tokens, sample, stats): (String, bool, Option<i32>, Option<i64>, Value, Value) =
        sqlx::query_as(
            "select status, training_ready, total_training_pairs, training_tokens, sample_data, statistics
               from public.datasets where id = $1",
        )
        .bind(ds)
        .fetch_one(&pool)
        .await
        .expect("dataset");
    assert_eq!(status, "ready", "a valid file is ready");
    assert!(ready, "and training-ready");
    assert!(pairs.unwrap_or(0) > 0, "training pairs counted: {pairs:?}");
    assert!(
        tokens.unwrap_or(0) > 0,
        "training tokens counted: {tokens:?}"
    );
    assert_eq!(
        sample.as_array().map(Vec::len),
        Some(3),
        "first three conversations sampled"
    );
    assert_eq!(stats["conversations"], 25, "statistics stored: {stats}");
    let ready_notes = scalar_i64(
        &pool,
        "select count(*) from public.notifications where user_id = $1 and type = 'dataset_ready'",
        u.id,
    )
    .await;
    assert_eq!(ready_notes, 1, "one dataset_ready notification");

    let job = create_job(&u, ds, json!({})).await;
    wait_status(&pool, job, "completed", MINUTE).await;
    let (attempt, progress, final_cost, estimate, artifact_id, step, metrics): (
        i32,
        f64,
        Option<f64>,
        f64,
        Option<Uuid>,
        i32,
        Option<Value>,
    ) = sqlx::query_as(
        "select attempt, progress::float8, final_cost::float8, estimated_total_cost::float8, artifact_id,
                current_step, current_metrics
           from public.training_jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("job");
    assert_eq!(attempt, 1, "ran once");
    assert_eq!(progress, 100.0, "progress is complete");
    assert_eq!(step, 8, "the last step is recorded");
    assert!(
        metrics.is_some_and(|m| m["training_loss"].is_number()),
        "current metrics kept"
    );
    assert_eq!(
        final_cost,
        Some(estimate),
        "a completed job costs its snapshotted estimate"
    );
    let points: Vec<(i32, i32, Option<f64>)> = sqlx::query_as(
        "select step, attempt, validation_loss::float8 from public.metrics_points where job_id = $1 order by step",
    )
    .bind(job)
    .fetch_all(&pool)
    .await
    .expect("metrics");
    assert_eq!(points.len(), 8, "one metrics row per step");
    assert!(points.iter().all(|p| p.1 == 1), "all from attempt 1");
    assert!(
        points.iter().any(|p| p.2.is_some()),
        "validation losses recorded"
    );
    let artifacts = check_artifacts(&pool, job, 1).await;
    let row_id: Uuid =
        sqlx::query_scalar("select id from public.model_artifacts where job_id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("artifact id");
    assert_eq!(artifact_id, Some(row_id), "the job points at its artifact");
    assert!(
        artifacts["adapter_model_path"].is_string(),
        "spec keys kept: {artifacts}"
    );
    let (kind, message): (String, String) = sqlx::query_as(
        "select type, message from public.notifications where user_id = $1 and type like 'job_%'",
    )
    .bind(u.id)
    .fetch_one(&pool)
    .await
    .expect("one job notification");
    assert_eq!(kind, "job_complete", "completion notified");
    assert!(
        message.contains("support-bot") && message.contains('$'),
        "says which job and cost: {message}"
    );
    let (records, amount, period_ok): (i64, Option<f64>, Option<bool>) = sqlx::query_as(
        "select count(*), sum(amount)::float8, bool_and(billing_period = date_trunc('month', now())::date)
           from public.cost_records where job_id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("cost records");
    assert_eq!(records, 1, "one compute cost record");
    assert_eq!(amount, final_cost, "billed what the job cost");
    assert_eq!(period_ok, Some(true), "billed in this month's period");
}

/// The must-show run: the demo dataset uploaded as a user does, validated by the worker, a job
/// submitted through `create_training_job` with the demo settings (inside the RPC's bounds),
/// trained for real by the candle backend in a worker process.
#[tokio::test]
async fn the_demo_job_through_the_rpc_trains_with_candle_and_its_loss_falls_40_percent() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("candle-demo").await;
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candle-base-cache");
    let cache = cache.to_str().expect("utf-8 path");
    let w = WorkerProcess::start(
        dir.path(),
        &[u.id],
        &[
            "--backend",
            "candle",
            "--cache-dir",
            cache,
            "--log-format",
            "json",
        ],
    );

    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let content = std::fs::read_to_string(demo.join("support-bot.jsonl")).expect("demo set");
    let settings: Value = serde_json::from_str(
        &std::fs::read_to_string(demo.join("support-bot.hyperparameters.json"))
            .expect("demo settings"),
    )
    .expect("demo settings parse");
    let ds = upload_dataset(&u, "support-bot", &content).await;
    let ready = wait_for("the demo set to be validated", MINUTE, || {
        let pool = pool.clone();
        async move {
            let (s, ready): (String, bool) =
                sqlx::query_as("select status, training_ready from public.datasets where id = $1")
                    .bind(ds)
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (s != "validating").then_some((s, ready))
        }
    })
    .await;
    assert_eq!(
        ready,
        ("ready".to_owned(), true),
        "the demo set is training-ready"
    );

    let job = create_job(&u, ds, settings.clone()).await;
    // The first candle job of a run may also pre-train the base model (~seconds, cached).
    wait_status(&pool, job, "completed", 5 * MINUTE).await;
    let (hp, total_steps, artifact_id): (Value, i32, Option<Uuid>) = sqlx::query_as(
        "select hyperparameters, total_steps, artifact_id from public.training_jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("job");
    for key in ["learning_rate", "lora_alpha", "batch_size", "num_epochs"] {
        assert_eq!(hp[key], settings[key], "the job runs the submitted {key}");
    }
    let points: Vec<(i32, i32, f64)> = sqlx::query_as(
        "select epoch, step, training_loss::float8 from public.metrics_points
          where job_id = $1 and attempt = 1 order by step",
    )
    .bind(job)
    .fetch_all(&pool)
    .await
    .expect("metrics");
    // 31 training conversations (the validator's holdout keeps 5) in batches of 2, 15 epochs.
    assert_eq!(points.len(), 15 * 16, "one metrics row per optimizer step");
    assert_eq!(
        total_steps,
        15 * 16,
        "the RPC's step count matches the trainer's"
    );
    let config: brightrun_core::HyperparameterConfig =
        serde_json::from_value(hp.clone()).expect("a hyperparameter config");
    assert_eq!(
        config.total_steps(31),
        15 * 16,
        "core's rule (what the window warns with) is the RPC's"
    );
    assert!(
        points.iter().enumerate().all(|(i, p)| p.1 == i as i32 + 1),
        "steps 1..=240 without gaps or duplicates"
    );
    let first = points[0].2;
    let last_epoch: Vec<f64> = points.iter().filter(|p| p.0 == 15).map(|p| p.2).collect();
    let last = last_epoch.iter().sum::<f64>() / last_epoch.len() as f64;
    let drop = 1.0 - last / first;
    eprintln!(
        "demo job {job}: first step {first:.3} → last epoch {last:.3} (−{:.1} %)",
        drop * 100.0
    );
    assert!(
        drop >= 0.40,
        "training loss must fall by ≥ 40 % over the run: first step {first:.3} → last epoch {last:.3} ({:.0} %)",
        drop * 100.0
    );
    let (quality,): (Value,) =
        sqlx::query_as("select quality_metrics from public.model_artifacts where job_id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("artifact row");
    let recorded = quality["final_training_loss"].as_f64().expect("final loss");
    assert!(
        (recorded - last).abs() < 1e-3,
        "the artifact records the last epoch's loss ({recorded} vs {last})"
    );

    let artifacts = check_artifacts(&pool, job, 1).await;
    let row_id: Uuid =
        sqlx::query_scalar("select id from public.model_artifacts where job_id = $1")
            .bind(job)
            .fetch_one(&pool)
            .await
            .expect("artifact id");
    assert_eq!(artifact_id, Some(row_id), "the job points at its artifact");
    let weights = artifacts["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .find(|p| p.ends_with("/adapter_model.safetensors"))
        .expect("the adapter weights are among the files")
        .to_owned();
    let bytes = download("lora-models", &weights).await;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).expect("stored adapter parses");
    let mut names = tensors.names();
    names.sort();
    assert_eq!(names.len(), 2 * 2 * 2, "2 layers × q,v × A,B: {names:?}");
    let a = tensors
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")
        .expect("PEFT key for layer 0 q_proj A");
    assert_eq!(a.shape(), [8, 64], "A is [r, in] with the submitted rank");

    let kinds: Vec<String> = sqlx::query_scalar(
        "select type from public.notifications where user_id = $1 order by created_at",
    )
    .bind(u.id)
    .fetch_all(&pool)
    .await
    .expect("notifications");
    assert_eq!(
        kinds,
        ["dataset_ready", "job_complete"],
        "one notification each"
    );
    // `--log-format json`: one object per line, fields at the top level, the job's span fields
    // under `span`.
    let log = w.log_text();
    let events: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        events.iter().any(|e| e["backend"] == "candle"),
        "the worker says it runs the candle backend:\n{log}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["span"]["job_id"] == job.to_string() && e["message"] == "job completed"),
        "events about the job carry its id as a field:\n{log}"
    );
}

#[tokio::test]
async fn a_broken_dataset_ends_in_error_with_its_errors() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("bad-ds").await;
    let _w = WorkerProcess::start(dir.path(), &[u.id], &[]);
    let content = format!(
        "{}{{\"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}\nnot json\n",
        good_jsonl(2)
    );
    let ds = upload_dataset(&u, "broken set", &content).await;
    let errors: Value = wait_for("the dataset to fail validation", MINUTE, || {
        let pool = pool.clone();
        async move {
            let (s, e): (String, Option<Value>) = sqlx::query_as(
                "select status, validation_errors from public.datasets where id = $1",
            )
            .bind(ds)
            .fetch_one(&pool)
            .await
            .ok()?;
            (s == "error").then_some(e.unwrap_or_default())
        }
    })
    .await;
    let lines: Vec<u64> = errors
        .as_array()
        .expect("errors list")
        .iter()
        .filter_map(|e| e["line"].as_u64())
        .collect();
    assert!(
        lines.contains(&3) && lines.contains(&4),
        "both bad lines reported: {errors}"
    );
    let (ready, message): (bool, String) = sqlx::query_as(
        "select d.training_ready, n.message from public.datasets d
           join public.notifications n on n.user_id = d.user_id and n.type = 'dataset_error'
          where d.id = $1",
    )
    .bind(ds)
    .fetch_one(&pool)
    .await
    .expect("dataset_error notification");
    assert!(!ready, "a broken dataset is not training-ready");
    assert!(
        message.contains("line 3"),
        "the notification names the first error: {message}"
    );
}

#[tokio::test]
async fn trainer_errors_are_retried_per_policy_then_fail_with_a_useful_message() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("fail").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let flaky = create_job(&u, ds, json!({"base_model": "scripted/fail-training"})).await;
    let invalid = create_job(&u, ds, json!({"base_model": "scripted/invalid"})).await;
    let _w = WorkerProcess::start(dir.path(), &[u.id], &["--scripted-steps", "5"]);
    wait_status(&pool, flaky, "failed", MINUTE).await;
    wait_status(&pool, invalid, "failed", MINUTE).await;

    let (attempt, retries, message): (i32, i32, String) = sqlx::query_as(
        "select attempt, retry_count, error_message from public.training_jobs where id = $1",
    )
    .bind(flaky)
    .fetch_one(&pool)
    .await
    .expect("flaky job");
    assert_eq!(
        attempt, 3,
        "a retryable error is tried max_attempts (3) times"
    );
    assert_eq!(retries, 3, "three failures counted");
    assert!(
        message.contains("loss became NaN") && message.contains("gave up after 3 attempts"),
        "the message says what failed and that retries ran out: {message}"
    );
    let (attempt, message): (i32, String) =
        sqlx::query_as("select attempt, error_message from public.training_jobs where id = $1")
            .bind(invalid)
            .fetch_one(&pool)
            .await
            .expect("invalid job");
    assert_eq!(attempt, 1, "invalid settings are not retried");
    assert!(
        message.contains("invalid training settings"),
        "says why: {message}"
    );
    let notes = scalar_i64(
        &pool,
        "select count(*) from public.notifications where user_id = $1 and type = 'job_failed'",
        u.id,
    )
    .await;
    assert_eq!(
        notes, 2,
        "one job_failed notification per job, none per retry"
    );
}

#[tokio::test]
async fn cancel_while_queued_and_while_running() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("cancel").await;
    let ds = ready_dataset(&pool, &u, 12).await;

    let queued = create_job(&u, ds, json!({})).await;
    let body = rpc(&u, "cancel_training_job", json!({"job_id": queued})).await;
    assert_eq!(
        body["status"], "cancelled",
        "a queued job is cancelled at once"
    );

    let running = create_job(&u, ds, json!({})).await;
    let _w = WorkerProcess::start(
        dir.path(),
        &[u.id],
        &[
            "--scripted-steps",
            "400",
            "--scripted-step-ms",
            "50",
            "--heartbeat-ms",
            "2000",
        ],
    );
    wait_training(&pool, running, 2, "the job to be training").await;
    let asked = Instant::now();
    rpc(&u, "cancel_training_job", json!({"job_id": running})).await;
    wait_status(&pool, running, "cancelled", Duration::from_secs(10)).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "cancellation honoured within 5 s, took {took:?}"
    );

    let attempt: i32 = sqlx::query_scalar("select attempt from public.training_jobs where id = $1")
        .bind(queued)
        .fetch_one(&pool)
        .await
        .expect("queued job");
    assert_eq!(attempt, 0, "a job cancelled while queued is never claimed");
    let (completed, artifacts, notes): (bool, i64, i64) = sqlx::query_as(
        "select j.completed_at is not null,
                (select count(*) from public.model_artifacts a where a.job_id = j.id),
                (select count(*) from public.notifications n where n.user_id = j.user_id and n.type like 'job_%')
           from public.training_jobs j where j.id = $1",
    )
    .bind(running)
    .fetch_one(&pool)
    .await
    .expect("running job");
    assert!(completed, "a cancelled job has completed_at");
    assert_eq!(artifacts, 0, "no artifact for a cancelled job");
    assert_eq!(notes, 0, "no notification for a job the user cancelled");
}

#[tokio::test]
async fn a_killed_workers_job_is_reaped_and_finishes_once_elsewhere() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("kill").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let job = create_job(&u, ds, json!({})).await;
    let slow = [
        "--scripted-steps",
        "30",
        "--scripted-step-ms",
        "60",
        "--lease-ms",
        "1500",
    ];
    let mut a = WorkerProcess::start(dir.path(), &[u.id], &slow);
    wait_training(&pool, job, 3, "worker A to be training").await;
    a.kill();
    let a_points = scalar_i64(
        &pool,
        "select count(*) from public.metrics_points where job_id = $1",
        job,
    )
    .await;
    assert!(a_points >= 3, "A wrote metrics before it died: {a_points}");

    let b = WorkerProcess::start(dir.path(), &[u.id], &slow);
    wait_status(&pool, job, "completed", MINUTE).await;
    let (attempt, worker, retries): (i32, String, i32) = sqlx::query_as(
        "select attempt, worker_id, retry_count from public.training_jobs where id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("job");
    assert_eq!(attempt, 2, "reclaimed once after the lease expired");
    assert_eq!(worker, b.id, "B finished it");
    assert_eq!(retries, 1, "the lost lease counts as one failed attempt");
    let (points, distinct_steps, other_attempts): (i64, i64, i64) = sqlx::query_as(
        "select count(*), count(distinct step), count(*) filter (where attempt <> 2)
           from public.metrics_points where job_id = $1",
    )
    .bind(job)
    .fetch_one(&pool)
    .await
    .expect("metrics");
    assert_eq!(points, 30, "one point per step");
    assert_eq!(distinct_steps, 30, "no duplicate steps");
    assert_eq!(other_attempts, 0, "the dead attempt's points are gone");
    check_artifacts(&pool, job, 2).await;
    let notes = scalar_i64(
        &pool,
        "select count(*) from public.notifications where user_id = $1 and type = 'job_complete'",
        u.id,
    )
    .await;
    assert_eq!(notes, 1, "one completion notification");
}

#[tokio::test]
async fn graceful_shutdown_hands_a_running_job_back() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let u = user("handback").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let job = create_job(&u, ds, json!({})).await;
    let slow = ["--scripted-steps", "500", "--scripted-step-ms", "50"];
    let mut a = WorkerProcess::start(dir.path(), &[u.id], &slow);
    wait_status(&pool, job, "running", MINUTE).await;
    assert!(
        a.terminate(Duration::from_secs(20)),
        "the worker exits cleanly on SIGTERM"
    );
    let (status, worker, lease, retries): (String, Option<String>, Option<chrono::DateTime<chrono::Utc>>, i32) =
        sqlx::query_as(
            "select status, worker_id, lease_expires_at, retry_count from public.training_jobs where id = $1",
        )
        .bind(job)
        .fetch_one(&pool)
        .await
        .expect("job");
    assert_eq!(status, "queued", "handed back to the queue, not dropped");
    assert!(worker.is_none() && lease.is_none(), "lease released");
    assert_eq!(retries, 0, "a hand-back is not a failure");
    assert!(
        a.log_text().contains("handed back"),
        "logged: {}",
        a.log_text()
    );

    let _b = WorkerProcess::start(dir.path(), &[u.id], &["--scripted-steps", "4"]);
    wait_status(&pool, job, "completed", MINUTE).await;
    check_artifacts(&pool, job, 2).await;
}

#[tokio::test]
async fn four_workers_run_fifty_jobs_exactly_once() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // create_training_job allows 10 unfinished jobs per user.
    let mut users = Vec::new();
    let mut jobs = Vec::new();
    for i in 0..5 {
        let u = user(&format!("load{i}")).await;
        let ds = ready_dataset(&pool, &u, 12).await;
        for _ in 0..10 {
            jobs.push(create_job(&u, ds, json!({})).await);
        }
        users.push(u.id);
    }
    let started = Instant::now();
    let fast = [
        "--scripted-steps",
        "5",
        "--scripted-step-ms",
        "10",
        "--concurrency",
        "2",
    ];
    let workers: Vec<_> = (0..4)
        .map(|_| WorkerProcess::start(dir.path(), &users, &fast))
        .collect();
    wait_for("all 50 jobs to complete", MINUTE, || {
        let pool = pool.clone();
        let users = users.clone();
        async move {
            let done: i64 = sqlx::query_scalar(
                "select count(*) from public.training_jobs where user_id = any($1) and status = 'completed'",
            )
            .bind(&users)
            .fetch_one(&pool)
            .await
            .ok()?;
            (done == 50).then_some(())
        }
    })
    .await;
    let took = started.elapsed();
    let (attempts_ok, workers_used, artifacts, points, notes): (bool, i64, i64, i64, i64) = sqlx::query_as(
        "select bool_and(j.attempt = 1), count(distinct j.worker_id),
                (select count(*) from public.model_artifacts a where a.user_id = any($1)),
                (select count(*) from public.metrics_points m join public.training_jobs k on k.id = m.job_id
                  where k.user_id = any($1) and m.attempt = 1),
                (select count(*) from public.notifications n where n.user_id = any($1) and n.type = 'job_complete')
           from public.training_jobs j where j.user_id = any($1)",
    )
    .bind(&users)
    .fetch_one(&pool)
    .await
    .expect("summary");
    assert!(
        attempts_ok,
        "every job was claimed exactly once (attempt 1)"
    );
    assert_eq!(artifacts, 50, "one artifact per job");
    assert_eq!(
        points, 250,
        "5 metrics points per job, all from the only attempt"
    );
    assert_eq!(notes, 50, "one completion notification per job");
    assert!(
        workers_used >= 2,
        "the work was shared between processes: {workers_used}"
    );
    let ids: Vec<String> = workers.iter().map(|w| w.id.clone()).collect();
    eprintln!("50 jobs on 4 workers in {took:?} ({workers_used} workers used: {ids:?})");
}

#[tokio::test]
async fn the_fake_remote_provider_runs_a_job_and_a_restarted_worker_reattaches() {
    let pool = db().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let remote_dir = dir.path().join("provider");
    let remote_arg = remote_dir.to_str().expect("utf-8 path").to_owned();
    let u = user("remote").await;
    let ds = ready_dataset(&pool, &u, 12).await;
    let job = create_job(&u, ds, json!({})).await;
    let args = [
        "--backend",
        "fake-remote",
        "--fake-remote-dir",
        &remote_arg,
        "--scripted-steps",
        "30",
        "--scripted-step-ms",
        "80",
        "--lease-ms",
        "1500",
    ];
    let mut a = WorkerProcess::start(dir.path(), &[u.id], &args);
    wait_for("the remote job to be running", MINUTE, || {
        let pool = pool.clone();
        async move {
            let (step, ext): (i32, Option<String>) = sqlx::query_as(
                "select current_step, external_job_id from public.training_jobs where id = $1",
            )
            .bind(job)
            .fetch_one(&pool)
            .await
            .ok()?;
            (step >= 3 && ext.is_some()).then_some(())
        }
    })
    .await;
    a.kill();
    let _b = WorkerProcess::start(dir.path(), &[u.id], &args);
    wait_status(&pool, job, "completed", MINUTE).await;
    let submissions = std::fs::read_to_string(remote_dir.join("submissions.log")).expect("log");
    assert_eq!(
        submissions
            .lines()
            .filter(|l| *l == job.to_string())
            .count(),
        1,
        "the second worker re-attached instead of submitting again"
    );
    let attempt: i32 = sqlx::query_scalar("select attempt from public.training_jobs where id = $1")
        .bind(job)
        .fetch_one(&pool)
        .await
        .expect("job");
    assert_eq!(attempt, 2, "finished by the second attempt");
    let distinct = scalar_i64(
        &pool,
        "select count(distinct step) from public.metrics_points where job_id = $1 and attempt = 2",
        job,
    )
    .await;
    assert_eq!(distinct, 30, "replayed events give every step once");
    check_artifacts(&pool, job, 2).await;
}

#[tokio::test]
async fn a_worker_whose_base_model_file_is_unusable_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bogus = dir.path().join("not-a-model.gguf");
    std::fs::write(&bogus, b"GGUF? no: a text file").expect("write");
    let bogus = bogus.to_str().expect("utf-8").to_owned();
    // Confined to a user nobody else has: should it start after all, it takes no one's jobs.
    let mut w = WorkerProcess::start(
        dir.path(),
        &[Uuid::new_v4()],
        &["--backend", "candle", "--base-gguf", &bogus],
    );
    let status = wait_for("the worker to exit", MINUTE, || {
        let exited = w.child.try_wait().ok().flatten();
        async move { exited }
    })
    .await;
    assert!(!status.success(), "it exits with an error");
    let log = w.log_text();
    assert!(
        log.contains("cannot use") && log.contains("not-a-model.gguf") && log.contains("GGUF"),
        "and says which file and why:\n{log}"
    );
}

/// The environment of a running process, as the kernel holds it.
fn process_env(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .expect("environ")
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[tokio::test]
async fn a_candle_worker_runs_candle_single_threaded_unless_told_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = |w: &WorkerProcess| {
        let log = w.log_text();
        async move { log.contains("worker started").then_some(()) }
    };
    // Neither variable set: the worker re-executes itself (same PID) with both at 1.
    let w = WorkerProcess::start_with(
        dir.path(),
        &[Uuid::new_v4()],
        &["--backend", "candle"],
        |cmd| {
            cmd.env_remove("RAYON_NUM_THREADS")
                .env_remove("CANDLE_NUM_THREADS");
        },
    );
    wait_for("the worker to start", MINUTE, || started(&w)).await;
    let env = process_env(w.child.id());
    assert!(
        env.contains(&"RAYON_NUM_THREADS=1".to_owned())
            && env.contains(&"CANDLE_NUM_THREADS=1".to_owned()),
        "both set to 1: {env:?}"
    );

    // An operator's value is kept; only the missing one is set.
    let w = WorkerProcess::start_with(
        dir.path(),
        &[Uuid::new_v4()],
        &["--backend", "candle"],
        |cmd| {
            cmd.env("RAYON_NUM_THREADS", "3")
                .env_remove("CANDLE_NUM_THREADS");
        },
    );
    wait_for("the worker to start", MINUTE, || started(&w)).await;
    let env = process_env(w.child.id());
    assert!(
        env.contains(&"RAYON_NUM_THREADS=3".to_owned())
            && env.contains(&"CANDLE_NUM_THREADS=1".to_owned()),
        "the operator's 3 stays: {env:?}"
    );
}
