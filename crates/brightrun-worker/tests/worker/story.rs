//! A whole user story through the client's app layer alone (the handlers the CLI and the window
//! call), against the real stack and a candle worker: sign up, upload, ready, estimate, create
//! from a draft, watch to completed, download verified, sign out.

use std::sync::{Arc, Mutex};

use brightrun_client::app::{CancellationToken, Refresh, auth, datasets, jobs, models};
use brightrun_client::testing::app_at;
use brightrun_client::transfer::{Phase, Progress, ProgressFn};
use brightrun_client::watch::WatchEvent;
use brightrun_client::{ErrorCode, Secret};
use brightrun_core::{
    DatasetStatus, HyperparameterOverrides, JobDraft, JobStatus, PresetId, TrainingJob,
};
use futures::StreamExt as _;

use crate::support::*;

const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

fn recorder() -> (ProgressFn, Arc<Mutex<Vec<Progress>>>) {
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |p: &Progress| seen.lock().expect("lock").push(p.clone())) as ProgressFn
    };
    (sink, seen)
}

#[tokio::test]
async fn a_user_story_through_the_app_layer_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app_at(&st().url, &dir.path().join("app"), None).await;
    let cancel = CancellationToken::new();

    // Sign up: the stack confirms at once, so the app is signed in.
    let email = brightrun_stack::testing::unique_email("story");
    let signed_up = auth::sign_up(
        &app,
        auth::Credentials {
            email: email.clone(),
            password: Secret::new("story-password-1"),
        },
    )
    .await
    .expect("sign up");
    let auth::SignedUp::SignedIn { account } = signed_up else {
        panic!("the stack signs new users in: {signed_up:?}");
    };
    assert_eq!(
        account.email.as_deref(),
        Some(email.as_str()),
        "signed in as the new user"
    );
    let cache = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("candle-base-cache");
    let _worker = WorkerProcess::start(
        dir.path(),
        &[account.user_id],
        &[
            "--backend",
            "candle",
            "--cache-dir",
            cache.to_str().expect("utf-8"),
        ],
    );

    // Upload the demo set: validated locally, uploaded, then validated by the worker.
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let (sink, progress) = recorder();
    let uploaded = datasets::upload(
        &app,
        datasets::UploadDataset {
            path: demo.join("support-bot.jsonl"),
            name: Some("support-bot".into()),
            description: None,
            new: true,
            structural: None,
            chunk_size: None,
        },
        Some(sink),
        &cancel,
    )
    .await
    .expect("upload");
    assert!(uploaded.report.is_valid(), "the demo set has no errors");
    assert!(
        progress
            .lock()
            .expect("lock")
            .iter()
            .any(|p| p.phase == Phase::Done && p.bytes == uploaded.bytes),
        "progress ends with every byte done"
    );
    let dataset = wait_for("the dataset to be ready", MINUTE, || {
        let app = &app;
        async move {
            let d = datasets::show(
                app,
                datasets::DatasetRef {
                    id: uploaded.dataset_id,
                },
            )
            .await
            .ok()?;
            (d.status != DatasetStatus::Validating && d.status != DatasetStatus::Uploading)
                .then_some(d)
        }
    })
    .await;
    assert_eq!(
        dataset.status,
        DatasetStatus::Ready,
        "validated by the worker"
    );
    let listed = datasets::list(&app, datasets::ListDatasets::default())
        .await
        .expect("list");
    assert!(
        !listed.stale && listed.items.iter().any(|d| d.id == dataset.id),
        "the fresh list has it"
    );

    // A draft: the custom preset with the demo's settings, checked and estimated by the server.
    let overrides: HyperparameterOverrides = serde_json::from_str(
        &std::fs::read_to_string(demo.join("support-bot.hyperparameters.json")).expect("read"),
    )
    .expect("the demo settings are a set of overrides");
    let draft = JobDraft {
        dataset_id: dataset.id,
        preset: PresetId::Custom,
        gpu_type: "A100-80GB".into(),
        gpu_count: 1,
        overrides,
    };
    let estimate = jobs::estimate(&app, draft.clone()).await.expect("estimate");
    assert_eq!(
        Some(estimate.tokens_per_epoch),
        dataset.tokens_per_epoch(),
        "estimated from the dataset's tokens"
    );
    assert_eq!(estimate.epochs, 15, "the draft's epochs");
    assert!(estimate.estimated_cost > 0.0, "a price: {estimate:?}");
    let created = jobs::create(&app, draft).await.expect("create");
    assert_eq!(
        created.job.hyperparameters.num_epochs, 15,
        "the draft's settings reach the job"
    );
    assert_eq!(
        created.job.estimated_total_cost, estimate.estimated_cost,
        "the job carries the estimate that was shown"
    );

    // Watch it to the end: the stream starts with the job, carries its curve, ends with it.
    let mut watch = jobs::watch(
        &app,
        jobs::WatchJobs {
            job_id: Some(created.job.id),
            interval_seconds: Some(1),
        },
    )
    .await
    .expect("watch");
    let mut last: Option<TrainingJob> = None;
    let mut points = 0;
    let mut alerts = 0;
    let ended = tokio::time::timeout(5 * MINUTE, async {
        while let Some(event) = watch.next().await {
            match event {
                WatchEvent::JobUpdated { job } => last = Some(*job),
                WatchEvent::Metrics { points: p, .. } => points += p.len(),
                WatchEvent::Alert { alert } => {
                    assert_eq!(alert.job_id, created.job.id, "the alert is about our job");
                    alerts += 1;
                }
                WatchEvent::SignedOut => panic!("the session must hold"),
                WatchEvent::Offline { .. } | WatchEvent::Online => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the job ended within 5 minutes");
    let job = last.expect("job updates");
    assert_eq!(
        job.status,
        JobStatus::Completed,
        "completed: {:?}",
        job.error_message
    );
    assert!(points > 0, "metrics arrived while it trained");
    assert_eq!(alerts, 1, "one alert for the completion");

    // Download the adapter by the job's id; every file verified against the manifest.
    let to = dir.path().join("adapter");
    let downloaded = models::download(
        &app,
        models::DownloadModel {
            id: job.id,
            to: Some(to.clone()),
            allow_unverified: false,
            segment_threshold: None,
        },
        None,
        &cancel,
    )
    .await
    .expect("download");
    let model = models::show(&app, models::ModelRef { id: job.id })
        .await
        .expect("the model by its job's id");
    let manifest = model.artifacts.download_files();
    assert_eq!(
        downloaded.files.len(),
        manifest.len(),
        "every file of the manifest"
    );
    for file in &downloaded.files {
        let bytes = std::fs::read(&file.path).expect("the file is in place");
        let recorded = manifest
            .iter()
            .find(|m| file.path.ends_with(&m.name))
            .and_then(|m| m.sha256.clone());
        assert!(file.verified, "{} verified", file.path.display());
        assert_eq!(
            Some(sha256_hex(&bytes)),
            recorded,
            "{} is what the worker stored",
            file.path.display()
        );
    }
    assert!(
        to.join("adapter_model.safetensors").is_file(),
        "the adapter is there"
    );

    // Sign out: the session is gone, and so is the cached list's owner.
    let out = auth::sign_out(&app).await.expect("sign out");
    assert!(out.was_signed_in, "there was a session to end");
    let after = auth::whoami(&app).await.expect_err("signed out");
    assert_eq!(
        after.code(),
        ErrorCode::AuthExpired,
        "sign in again: {after:?}"
    );
    let cached = datasets::list(
        &app,
        datasets::ListDatasets {
            refresh: Refresh::Cache,
            ..Default::default()
        },
    )
    .await;
    assert!(cached.is_err(), "signed out, no list is shown");
}
