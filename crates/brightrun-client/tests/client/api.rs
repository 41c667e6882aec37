//! Every product operation of `Api` against the real stack and its migrations, with the error
//! cases the UI branches on.

use brightrun_client::api::{
    Api, DatasetChanges, EstimateRequest, MetricsFrom, NotificationFilter,
};
use brightrun_client::error::{ApiError, ErrorCode, Service};
use brightrun_client::session::Session;
use brightrun_client::{Error, Secret};
use brightrun_core::{
    CostEstimateInputs, CostType, CreateDatasetInput, CreateTrainingJobInput, DatasetStatus,
    GpuConfig, JobStatus, NotificationType, PresetId,
};
use chrono::{Datelike, NaiveDate, Utc};
use uuid::Uuid;

use crate::support::{self, db, minted, ready_dataset};

fn dataset_input(name: &str) -> CreateDatasetInput {
    CreateDatasetInput {
        name: name.to_owned(),
        description: Some("first try".into()),
        format: None,
        file_name: "chat data.jsonl".into(),
        file_size: 1234,
        id: None,
    }
}

/// A job on two A100s with the server's balanced preset (its table is the only list of presets).
async fn job_input(api: &Api, dataset_id: Uuid) -> CreateTrainingJobInput {
    let preset = api
        .presets()
        .await
        .expect("presets")
        .into_iter()
        .find(|p| p.id == PresetId::Balanced)
        .expect("balanced preset");
    CreateTrainingJobInput {
        dataset_id,
        preset_id: PresetId::Balanced,
        hyperparameters: preset.hyperparameters,
        gpu_config: GpuConfig {
            gpu_type: "A100-80GB".into(),
            num_gpus: 2,
            // Ignored by the server, which snapshots its own.
            gpu_memory_gb: 0.0,
            cost_per_gpu_hour: 0.0,
        },
    }
}

fn kind_of<T: std::fmt::Debug>(result: Result<T, Error>) -> (ErrorCode, String) {
    let error = result.expect_err("the call must fail");
    (error.code(), error.to_string())
}

#[tokio::test]
async fn dataset_lifecycle() {
    let (user, api) = minted("api-datasets").await;
    let created = api
        .create_dataset(&dataset_input("Support chats"))
        .await
        .expect("create_dataset");
    assert_eq!(
        created.status,
        DatasetStatus::Uploading,
        "a new dataset awaits its file"
    );
    assert_eq!(
        created.storage_path,
        format!("{}/{}/chat data.jsonl", user.id, created.id),
        "the storage path is {{user_id}}/{{dataset_id}}/{{file_name}}"
    );
    assert_eq!(created.user_id, user.id, "owned by the caller");

    let listed = api.list_datasets().await.expect("list");
    assert_eq!(
        listed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![created.id],
        "the list holds the new dataset"
    );
    assert_eq!(
        api.dataset(created.id).await.expect("get"),
        created,
        "get returns the row"
    );

    let renamed = api
        .update_dataset(
            created.id,
            &DatasetChanges {
                name: Some("Support chats v2".into()),
                ..Default::default()
            },
        )
        .await
        .expect("rename");
    assert_eq!(renamed.name, "Support chats v2", "renamed");
    assert_eq!(
        renamed.description.as_deref(),
        Some("first try"),
        "description untouched"
    );
    assert!(
        renamed.updated_at > created.updated_at,
        "the trigger bumped updated_at"
    );
    let cleared = api
        .update_dataset(
            created.id,
            &DatasetChanges {
                description: Some(None),
                ..Default::default()
            },
        )
        .await
        .expect("clear description");
    assert_eq!(cleared.description, None, "description cleared");

    let changed = api
        .datasets_changed_since(Some(created.updated_at))
        .await
        .expect("changes since creation");
    assert_eq!(
        changed.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![created.id],
        "the renamed dataset is a change after its creation"
    );
    let none = api
        .datasets_changed_since(Some(cleared.updated_at))
        .await
        .expect("changes since the last one");
    assert!(
        none.is_empty(),
        "nothing changed after the last change: {none:?}"
    );

    // Confirming before the file is uploaded is a clear conflict.
    let (kind, message) = kind_of(api.confirm_dataset_upload(created.id).await);
    assert_eq!(kind, ErrorCode::Conflict, "no file yet: {message}");
    assert!(
        message.contains("no uploaded file"),
        "the message says why: {message}"
    );

    let deleted = api.delete_dataset(created.id).await.expect("delete");
    assert!(deleted.deleted_at.is_some(), "soft-deleted");
    let again = api
        .delete_dataset(created.id)
        .await
        .expect("delete is idempotent");
    assert_eq!(
        again.deleted_at, deleted.deleted_at,
        "a second delete changes nothing"
    );
    assert!(
        api.list_datasets().await.expect("list").is_empty(),
        "the list hides deleted datasets"
    );
    assert!(
        api.dataset(created.id)
            .await
            .expect("get")
            .deleted_at
            .is_some(),
        "a deleted dataset can still be read (jobs refer to it)"
    );
}

#[tokio::test]
async fn create_dataset_with_a_chosen_id_is_idempotent_for_its_owner_only() {
    let (user, api) = minted("api-chosen-id").await;
    let id = Uuid::new_v4();
    let input = CreateDatasetInput {
        id: Some(id),
        ..dataset_input("Chosen id")
    };
    let created = api.create_dataset(&input).await.expect("create with an id");
    assert_eq!(created.id, id, "the chosen id is the row's");
    assert_eq!(
        created.storage_path,
        brightrun_core::dataset_storage_path(user.id, id, "chat data.jsonl"),
        "the path the client computed is the server's"
    );
    let again = api
        .create_dataset(&input)
        .await
        .expect("the same call again");
    assert_eq!(again, created, "a repeated call returns the same row");
    assert_eq!(api.list_datasets().await.expect("list").len(), 1, "one row");

    let other_file = CreateDatasetInput {
        file_size: 99,
        ..input.clone()
    };
    let (kind, message) = kind_of(api.create_dataset(&other_file).await);
    assert_eq!(
        kind,
        ErrorCode::Conflict,
        "another file under that id: {message}"
    );

    let (_other, other_api) = minted("api-chosen-id-other").await;
    let (kind, message) = kind_of(other_api.create_dataset(&input).await);
    assert_eq!(kind, ErrorCode::Conflict, "another user's id: {message}");
    assert!(
        !message.contains(&user.id.to_string()) && !message.contains("Chosen id"),
        "nothing of the owner's row is told: {message}"
    );
}

#[tokio::test]
async fn confirm_after_upload_hands_the_dataset_to_validation() {
    let (_user, api) = minted("api-confirm").await;
    let created = api
        .create_dataset(&dataset_input("Upload me"))
        .await
        .expect("create");
    let db = db().await;
    // The object row the storage upload would have made (the transfer tests do it for real).
    sqlx::query(
        "insert into storage.objects (bucket_id, name, owner_id, metadata)
         values ('lora-datasets', $1, $2, '{\"size\": 777, \"mimetype\": \"application/jsonl\"}')",
    )
    .bind(&created.storage_path)
    .bind(created.user_id.to_string())
    .execute(&db)
    .await
    .expect("insert storage object");
    db.close().await;
    let confirmed = api
        .confirm_dataset_upload(created.id)
        .await
        .expect("confirm");
    assert_eq!(
        confirmed.status,
        DatasetStatus::Validating,
        "handed to the worker"
    );
    assert_eq!(confirmed.file_size, 777, "the size is the stored object's");
    let again = api
        .confirm_dataset_upload(created.id)
        .await
        .expect("confirm again");
    assert_eq!(
        again.status,
        DatasetStatus::Validating,
        "confirming twice is harmless"
    );
}

#[tokio::test]
async fn invalid_dataset_arguments_are_validation_errors() {
    let (_user, api) = minted("api-invalid").await;
    let mut input = dataset_input("Bad name");
    input.file_name = "../escape.jsonl".into();
    let (kind, message) = kind_of(api.create_dataset(&input).await);
    assert_eq!(
        kind,
        ErrorCode::ValidationFailed,
        "a path in the file name: {message}"
    );
    assert!(
        message.contains("file_name"),
        "the message names the argument: {message}"
    );
    let mut input = dataset_input("Too big");
    input.file_size = 10 * 1024 * 1024 * 1024;
    let (kind, message) = kind_of(api.create_dataset(&input).await);
    assert_eq!(
        kind,
        ErrorCode::ValidationFailed,
        "over the bucket limit: {message}"
    );
    assert!(
        api.list_datasets().await.expect("list").is_empty(),
        "a refused create leaves nothing behind"
    );
}

#[tokio::test]
async fn other_users_rows_are_not_found_and_privileges_are_enforced() {
    let (owner, owner_api) = minted("api-owner").await;
    let (_other, other_api) = minted("api-intruder").await;
    let dataset = owner_api
        .create_dataset(&dataset_input("Private"))
        .await
        .expect("create");

    let (kind, _) = kind_of(other_api.dataset(dataset.id).await);
    assert_eq!(
        kind,
        ErrorCode::NotFound,
        "another user's dataset is invisible"
    );
    let (kind, _) = kind_of(
        other_api
            .update_dataset(
                dataset.id,
                &DatasetChanges {
                    name: Some("mine now".into()),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(
        kind,
        ErrorCode::NotFound,
        "RLS hides the row from an update"
    );
    let (kind, message) = kind_of(other_api.delete_dataset(dataset.id).await);
    assert_eq!(
        kind,
        ErrorCode::NotFound,
        "delete_dataset reports a foreign id as not found: {message}"
    );
    assert!(
        other_api.list_datasets().await.expect("list").is_empty(),
        "nothing leaks into a list"
    );
    assert_eq!(
        owner_api.dataset(dataset.id).await.expect("get").name,
        "Private",
        "the owner's row is unchanged"
    );
    let (kind, _) = kind_of(owner_api.job(Uuid::new_v4()).await);
    assert_eq!(kind, ErrorCode::NotFound, "an unknown job id is not found");
    let (kind, _) = kind_of(owner_api.cancel_training_job(Uuid::new_v4()).await);
    assert_eq!(
        kind,
        ErrorCode::NotFound,
        "cancelling an unknown job: not found (PT404)"
    );

    // A column the user may not write (status): PostgreSQL refuses it with 42501, whatever the
    // row policy says. Sent by hand, since Api only offers the writable columns.
    let response = support::http()
        .patch(format!(
            "{}?id=eq.{}",
            support::stack().rest("datasets"),
            dataset.id
        ))
        .header("apikey", &support::stack().anon_key)
        .bearer_auth(&owner.access_token)
        .json(&serde_json::json!({ "status": "ready", "training_ready": true }))
        .send()
        .await
        .expect("patch");
    let error = Error::Api(ApiError::from_response(Service::Rest, response).await);
    assert_eq!(
        error.code(),
        ErrorCode::Forbidden,
        "writing a server-owned column is denied: {error}"
    );
    assert_eq!(
        error.api().map(|a| a.code.as_str()),
        Some("42501"),
        "SQLSTATE kept"
    );
}

#[tokio::test]
async fn without_a_user_token_calls_say_sign_in_again() {
    // The anon key as the bearer token: PostgREST runs the call as `anon`.
    let session = Session::with_static_token(
        support::project(),
        support::http(),
        Uuid::new_v4(),
        Secret::new(support::stack().anon_key.clone()),
    );
    let api = brightrun_client::api::Api::new(session.clone());
    let (kind, message) = kind_of(api.create_dataset(&dataset_input("anon")).await);
    assert_eq!(
        kind,
        ErrorCode::AuthExpired,
        "no user in the token: {message}"
    );
    session.sign_out().await.expect("static sign-out");
    assert!(
        matches!(api.list_datasets().await, Err(Error::SignedOut)),
        "after sign-out no request is sent"
    );
}

#[tokio::test]
async fn estimate_create_list_clone_and_cancel_jobs() {
    let (user, api) = minted("api-jobs").await;
    let db = db().await;
    let dataset_id = ready_dataset(&db, user.id, "Ready set").await;

    let estimate = api
        .estimate_training_cost(&EstimateRequest {
            dataset_id,
            gpu_type: "A100-80GB".into(),
            gpu_count: 2,
            epochs: None,
            preset_id: Some(PresetId::Balanced),
        })
        .await
        .expect("estimate");
    assert_eq!(estimate.epochs, 5, "the balanced preset's epochs");
    assert_eq!(
        estimate.tokens_per_epoch, 100_000,
        "training_tokens of the dataset"
    );
    assert_eq!(
        estimate.price_per_gpu_hour, 3.0,
        "the catalogue's A100 price"
    );
    assert_eq!(
        (estimate.dataset_id, estimate.preset_id.clone()),
        (Some(dataset_id), Some(PresetId::Balanced)),
        "the answer names the dataset and the preset"
    );

    let job = api
        .create_training_job(&job_input(&api, dataset_id).await)
        .await
        .expect("create job");
    assert_eq!(job.status, JobStatus::Queued, "queued");
    assert_eq!(job.dataset_id, dataset_id, "on the dataset");
    assert_eq!(job.gpu_config.num_gpus, 2, "two GPUs");
    assert_eq!(
        job.gpu_config.cost_per_gpu_hour, 3.0,
        "the server snapshotted its price"
    );
    assert_eq!(
        job.estimated_total_cost, estimate.estimated_cost,
        "the job's estimate is the estimate RPC's"
    );
    assert_eq!(
        job.cost_estimate.as_ref(),
        Some(&estimate),
        "and the job snapshots the whole estimate"
    );
    assert_eq!(
        job.hyperparameters.lora_rank, 16,
        "balanced hyperparameters"
    );

    let clone = api.clone_job(job.id).await.expect("clone");
    assert_eq!(clone.dataset_id, dataset_id, "clone keeps the dataset");
    assert_eq!(
        clone.hyperparameters, job.hyperparameters,
        "and the hyperparameters"
    );
    let second = api
        .create_training_job(&clone)
        .await
        .expect("create from clone");
    assert_eq!(
        second.gpu_config, job.gpu_config,
        "the clone runs on the same GPUs"
    );

    let jobs = api.list_jobs().await.expect("list jobs");
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![second.id, job.id],
        "newest first"
    );
    assert_eq!(api.job(job.id).await.expect("get").id, job.id, "get by id");
    let changed = api
        .jobs_changed_since(Some(job.updated_at))
        .await
        .expect("changes");
    assert!(
        changed.iter().any(|j| j.id == second.id) && !changed.iter().any(|j| j.id == job.id),
        "only the later job changed after the first"
    );

    let (kind, message) = kind_of(api.delete_dataset(dataset_id).await);
    assert_eq!(
        kind,
        ErrorCode::Conflict,
        "queued jobs still use the dataset: {message}"
    );

    let cancelled = api.cancel_training_job(job.id).await.expect("cancel");
    assert_eq!(
        cancelled.status,
        JobStatus::Cancelled,
        "a queued job is cancelled at once"
    );
    let again = api.cancel_training_job(job.id).await.expect("cancel again");
    assert_eq!(
        again.status,
        JobStatus::Cancelled,
        "a double click is not an error"
    );

    sqlx::query(
        "update public.training_jobs set status = 'completed', current_stage = 'completed',
            completed_at = now(), progress = 100 where id = $1",
    )
    .bind(second.id)
    .execute(&db)
    .await
    .expect("complete the job as the worker would");
    let (kind, message) = kind_of(api.cancel_training_job(second.id).await);
    assert_eq!(
        kind,
        ErrorCode::Conflict,
        "a completed job cannot be cancelled: {message}"
    );
    db.close().await;
}

#[tokio::test]
async fn job_errors_are_specific() {
    let (user, api) = minted("api-job-errors").await;
    let not_ready = api
        .create_dataset(&dataset_input("Still uploading"))
        .await
        .expect("create");
    let (kind, message) = kind_of(
        api.create_training_job(&job_input(&api, not_ready.id).await)
            .await,
    );
    assert_eq!(
        kind,
        ErrorCode::Conflict,
        "a dataset that is not ready: {message}"
    );
    assert!(
        message.contains("not ready for training") && message.contains("uploading"),
        "the message says why and in which state: {message}"
    );
    let error = api
        .create_training_job(&job_input(&api, not_ready.id).await)
        .await
        .expect_err("still not ready");
    assert_eq!(
        error.api().and_then(|a| a.hint.as_deref()),
        Some("finish the upload and call confirm_dataset_upload"),
        "the hint says what to do"
    );

    let db = db().await;
    let ready = ready_dataset(&db, user.id, "Ready").await;
    db.close().await;
    let mut input = job_input(&api, ready).await;
    input.gpu_config.gpu_type = "TPU-v9".into();
    let (kind, message) = kind_of(api.create_training_job(&input).await);
    assert_eq!(
        kind,
        ErrorCode::ValidationFailed,
        "unknown GPU type: {message}"
    );
    let mut input = job_input(&api, ready).await;
    input.hyperparameters.learning_rate = 2.0;
    let (kind, message) = kind_of(api.create_training_job(&input).await);
    assert_eq!(
        kind,
        ErrorCode::ValidationFailed,
        "a learning rate of 2: {message}"
    );
    assert!(
        message.contains("learning_rate"),
        "names the field: {message}"
    );
    assert!(
        api.list_jobs().await.expect("list").is_empty(),
        "no job was created by a refusal"
    );
}

/// `count` points of one attempt, steps 1..=count, as the worker writes them.
async fn insert_points(db: &sqlx::PgPool, job_id: Uuid, attempt: i64, count: i64) {
    sqlx::query(
        "insert into public.metrics_points (job_id, attempt, epoch, step, training_loss, learning_rate)
         select $1, $2, 0, s, 1.0, 0.0002 from generate_series(1, $3) s",
    )
    .bind(job_id)
    .bind(attempt)
    .bind(count)
    .execute(db)
    .await
    .expect("insert metrics");
}

#[tokio::test]
async fn metrics_of_several_jobs_come_in_one_request_across_pages_and_only_the_callers() {
    let (user, api) = minted("api-metrics-many").await;
    let (other, other_api) = minted("api-metrics-other").await;
    let db = db().await;
    let dataset_id = ready_dataset(&db, user.id, "Many metrics").await;
    let other_dataset = ready_dataset(&db, other.id, "Not yours").await;
    let a = api
        .create_training_job(&job_input(&api, dataset_id).await)
        .await
        .expect("job a");
    let b = api
        .create_training_job(&job_input(&api, dataset_id).await)
        .await
        .expect("job b");
    let theirs = other_api
        .create_training_job(&job_input(&other_api, other_dataset).await)
        .await
        .expect("their job");
    // More than a page for one job, two attempts for the other, and someone else's points.
    insert_points(&db, a.id, 1, 1200).await;
    insert_points(&db, b.id, 1, 2).await;
    insert_points(&db, b.id, 2, 3).await;
    insert_points(&db, theirs.id, 1, 4).await;

    let points = api
        .metrics_of_jobs(&[
            MetricsFrom {
                job_id: a.id,
                attempt: 1,
                after_step: Some(100),
            },
            MetricsFrom {
                job_id: b.id,
                attempt: 2,
                after_step: None,
            },
            MetricsFrom {
                job_id: theirs.id,
                attempt: 1,
                after_step: None,
            },
        ])
        .await
        .expect("metrics of three jobs");
    let of = |id: Uuid| -> Vec<(i64, i64)> {
        points
            .iter()
            .filter(|p| p.job_id == id)
            .map(|p| (p.attempt, p.step))
            .collect()
    };
    assert_eq!(
        of(a.id),
        (101..=1200).map(|s| (1, s)).collect::<Vec<_>>(),
        "job a after step 100, across the 1000-row page, each point once, by step"
    );
    assert_eq!(
        of(b.id),
        vec![(2, 1), (2, 2), (2, 3)],
        "job b's attempt 2 only"
    );
    assert!(
        of(theirs.id).is_empty(),
        "another user's points are not visible"
    );
    assert_eq!(points.len(), 1103, "nothing else");
    assert!(
        api.metrics_of_jobs(&[])
            .await
            .expect("none asked")
            .is_empty(),
        "asking for no job returns nothing"
    );
}

#[tokio::test]
async fn metrics_models_costs_notifications_and_catalogue() {
    let (user, api) = minted("api-rest").await;
    let db = db().await;
    let dataset_id = ready_dataset(&db, user.id, "Metrics set").await;
    let job = api
        .create_training_job(&job_input(&api, dataset_id).await)
        .await
        .expect("job");

    // Metrics as the worker writes them.
    for step in 1..=5 {
        sqlx::query(
            "insert into public.metrics_points (job_id, attempt, epoch, step, training_loss, learning_rate)
             values ($1, 1, 0, $2, $3, 0.0002)",
        )
        .bind(job.id)
        .bind(step)
        .bind(2.0 - f64::from(step) * 0.1)
        .execute(&db)
        .await
        .expect("insert metric");
    }
    // A later attempt's points share step numbers and must not mix in.
    sqlx::query(
        "insert into public.metrics_points (job_id, attempt, epoch, step, training_loss, learning_rate)
         values ($1, 2, 0, 4, 9.0, 0.0002)",
    )
    .bind(job.id)
    .execute(&db)
    .await
    .expect("insert attempt 2 metric");
    let all = api.metrics_since(job.id, 1, None).await.expect("metrics");
    assert_eq!(
        all.iter().map(|p| p.step).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "by step"
    );
    let newer = api
        .metrics_since(job.id, 1, Some(3))
        .await
        .expect("metrics since 3");
    assert_eq!(
        newer.iter().map(|p| p.step).collect::<Vec<_>>(),
        vec![4, 5],
        "only after step 3"
    );
    assert!(
        (newer[1].training_loss - 1.5).abs() < 1e-9,
        "values arrive as numbers"
    );
    let second = api.metrics_since(job.id, 2, None).await.expect("attempt 2");
    assert_eq!(
        second
            .iter()
            .map(|p| (p.attempt, p.step))
            .collect::<Vec<_>>(),
        vec![(2, 4)],
        "one attempt at a time"
    );

    // A model artifact as the worker records it.
    assert_eq!(
        api.model_artifact_for_job(job.id).await.expect("none yet"),
        None,
        "no model yet"
    );
    let artifact_id = Uuid::new_v4();
    sqlx::query(
        "insert into public.model_artifacts (id, user_id, job_id, dataset_id, name, quality_metrics,
            training_summary, configuration, artifacts)
         values ($1, $2, $3, $4, 'support-lora', $5::jsonb, $6::jsonb, $7::jsonb, $8::jsonb)",
    )
    .bind(artifact_id)
    .bind(user.id)
    .bind(job.id)
    .bind(dataset_id)
    .bind(r#"{"final_training_loss":1.5,"final_validation_loss":1.6,"convergence_quality":"good"}"#)
    .bind(r#"{"duration_seconds":60,"total_epochs":5,"final_learning_rate":0.0001,"gpu_hours":0.1,"total_cost":0.3}"#)
    .bind(serde_json::json!({
        "preset_id": "balanced", "hyperparameters": job.hyperparameters,
        "gpu_config": job.gpu_config, "dataset_name": "Metrics set"
    }).to_string())
    .bind(format!(
        r#"{{"adapter_model_path":"{0}/{1}/adapter_model.safetensors","adapter_config_path":"{0}/{1}/adapter_config.json","tokenizer_path":"{0}/{1}/tokenizer.json"}}"#,
        user.id, job.id
    ))
    .execute(&db)
    .await
    .expect("insert artifact");
    let models = api.list_model_artifacts().await.expect("models");
    assert_eq!(
        models.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![artifact_id],
        "listed"
    );
    assert_eq!(
        api.model_artifact(artifact_id).await.expect("get").name,
        "support-lora",
        "get"
    );
    assert_eq!(
        api.model_artifact_for_job(job.id)
            .await
            .expect("for job")
            .map(|m| m.id),
        Some(artifact_id),
        "found by job"
    );

    // Cost records for this month and the last.
    let today = Utc::now().date_naive();
    let month = NaiveDate::from_ymd_opt(today.year(), today.month(), 1).expect("first of month");
    let previous = month
        .pred_opt()
        .expect("day before")
        .with_day(1)
        .expect("first");
    for (period, cost_type, amount, hours) in [
        (month, "compute", 1.25, Some(0.4)),
        (month, "storage", 0.10, None),
        (previous, "compute", 9.0, Some(3.0)),
    ] {
        sqlx::query(
            "insert into public.cost_records (user_id, job_id, cost_type, amount, details, billing_period)
             values ($1, $2, $3, $4, $5::jsonb, $6)",
        )
        .bind(user.id)
        .bind(job.id)
        .bind(cost_type)
        .bind(amount)
        .bind(hours.map(|h| serde_json::json!({ "gpu_hours": h }).to_string()))
        .bind(period)
        .execute(&db)
        .await
        .expect("insert cost record");
    }
    let records = api.cost_records(Some(today)).await.expect("cost records");
    assert_eq!(records.len(), 2, "this month's records only: {records:?}");
    assert!(
        records.iter().any(|r| r.cost_type == CostType::Storage),
        "both cost types"
    );
    assert_eq!(
        api.cost_records(None).await.expect("all").len(),
        3,
        "every record"
    );
    let summary = api
        .monthly_cost_summary(Some(today))
        .await
        .expect("summary");
    assert_eq!(summary.month, month, "normalised to the first of the month");
    assert!(
        (summary.total - 1.35).abs() < 1e-9,
        "total of this month: {}",
        summary.total
    );
    assert!((summary.by_type.compute - 1.25).abs() < 1e-9, "compute");
    assert_eq!(summary.by_job.len(), 1, "one job");
    assert_eq!(
        summary.by_gpu[0].gpu_type.as_deref(),
        Some("A100-80GB"),
        "by the job's GPU"
    );
    assert!(
        (summary.by_gpu[0].gpu_hours - 0.4).abs() < 1e-9,
        "GPU hours summed"
    );
    let current = api.monthly_cost_summary(None).await.expect("current month");
    assert_eq!(current.month, month, "None is the current month");

    // Notifications.
    let mut ids = Vec::new();
    for (kind, title) in [("job_complete", "Job done"), ("job_failed", "Job failed")] {
        let (id,): (Uuid,) = sqlx::query_as(
            "insert into public.notifications (user_id, type, title, message, metadata)
             values ($1, $2, $3, 'details', $4::jsonb) returning id",
        )
        .bind(user.id)
        .bind(kind)
        .bind(title)
        .bind(serde_json::json!({ "job_id": job.id }).to_string())
        .fetch_one(&db)
        .await
        .expect("insert notification");
        ids.push(id);
    }
    let unread = api
        .notifications(NotificationFilter::Unread)
        .await
        .expect("unread");
    assert_eq!(unread.len(), 2, "both unread");
    assert!(
        unread.iter().any(|n| n.kind == NotificationType::JobFailed),
        "types decode"
    );
    assert_eq!(
        api.mark_notifications_read(Some(&ids[..1]))
            .await
            .expect("mark one"),
        1,
        "one changed"
    );
    assert_eq!(
        api.notifications(NotificationFilter::Unread)
            .await
            .expect("unread")
            .len(),
        1,
        "one left unread"
    );
    assert_eq!(
        api.mark_notifications_read(None).await.expect("mark all"),
        1,
        "the other changed"
    );
    assert!(
        api.notifications(NotificationFilter::Unread)
            .await
            .expect("unread")
            .is_empty(),
        "all read"
    );
    let all = api
        .notifications(NotificationFilter::All)
        .await
        .expect("all");
    assert!(
        all.len() == 2 && all.iter().all(|n| n.read),
        "All lists read ones too"
    );

    // The catalogue.
    let gpus = api.gpu_types().await.expect("gpu types");
    assert_eq!(
        gpus.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["A6000-48GB", "A100-80GB", "H100-80GB"],
        "the seeded GPU types in catalogue order"
    );
    let a100 = &gpus[1];
    assert_eq!(
        (a100.memory_gb, a100.price_per_gpu_hour, a100.max_gpus),
        (80, 3.0, 8),
        "per-GPU memory and price, up to 8 GPUs"
    );
    assert_eq!(
        a100.config(2),
        job.gpu_config,
        "the GPU config the server snapshotted for two A100s"
    );
    let presets = api.presets().await.expect("presets");
    assert_eq!(
        presets.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        vec![
            PresetId::Conservative,
            PresetId::Balanced,
            PresetId::Aggressive,
            PresetId::Custom
        ],
        "the four presets in order"
    );
    for preset in &presets {
        assert!(
            preset.hyperparameters.problems().is_empty(),
            "preset {} passes the client's checks: {:?}",
            preset.id,
            preset.hyperparameters.problems()
        );
    }
    let aggressive = &presets[2].hyperparameters;
    assert_eq!(
        (
            aggressive.lora_rank,
            aggressive.lora_alpha,
            aggressive.num_epochs
        ),
        (32, 64, 10),
        "the spec's aggressive values"
    );
    db.close().await;
}

/// A ready dataset of `user_id` whose size the estimate reads: `training_tokens`, or only
/// `total_tokens` when `training_tokens` is `None` (the server then falls back to it).
async fn dataset_of_size(
    db: &sqlx::PgPool,
    user_id: Uuid,
    training_tokens: Option<i64>,
    total_tokens: i64,
) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        "insert into public.datasets (id, user_id, name, status, storage_path, file_name, file_size,
            total_training_pairs, total_validation_pairs, total_tokens, training_tokens,
            training_ready, validated_at)
         values ($1, $2, 'sized', 'ready', $2::text || '/' || $1::text || '/data.jsonl', 'data.jsonl',
            1000, 90, 10, $3, $4, true, now())",
    )
    .bind(id)
    .bind(user_id)
    .bind(total_tokens)
    .bind(training_tokens)
    .execute(db)
    .await
    .expect("insert a sized dataset");
    id
}

/// The offline preview in brightrun-core gives the server's `estimate_training_cost` answer to
/// the last digit, for every GPU type and count on offer, dataset sizes from empty to billions of
/// tokens (including sizes where a cost or an hour count lands exactly halfway between two
/// roundings), and epochs given or taken from a preset.
#[tokio::test]
async fn the_offline_preview_is_the_servers_estimate() {
    let (user, api) = minted("api-preview").await;
    let db = db().await;
    // (training_tokens, total_tokens): 19,200 tokens on one A100 cost exactly $0.755 and 576
    // tokens train for exactly 0.00005 h; the last one has only total_tokens.
    let sizes = [
        (Some(0), 10),
        (Some(576), 700),
        (Some(19_200), 20_000),
        (Some(123_457), 150_001),
        (Some(36_000_000), 40_000_000),
        (Some(2_500_000_001), 2_700_000_000),
        (None, 987_654),
    ];
    let mut datasets = Vec::new();
    for (training, total) in sizes {
        let id = dataset_of_size(&db, user.id, training, total).await;
        datasets.push(
            api.dataset(id)
                .await
                .expect("the dataset as the client reads it"),
        );
    }
    db.close().await;
    let gpus = api.gpu_types().await.expect("gpu types");
    let presets = api.presets().await.expect("presets");
    let aggressive = presets
        .iter()
        .find(|p| p.id == PresetId::Aggressive)
        .expect("aggressive preset");

    let mut compared = 0;
    let mut mismatches = Vec::new();
    for dataset in &datasets {
        let tokens = dataset
            .tokens_per_epoch()
            .expect("a ready dataset has a size");
        for gpu in &gpus {
            for gpu_count in 1..=gpu.max_gpus {
                // Epochs given, or the preset's (None: the server reads the preset).
                for epochs in [Some(1), Some(3), Some(100), None] {
                    let answer = api
                        .estimate_training_cost(&EstimateRequest {
                            dataset_id: dataset.id,
                            gpu_type: gpu.id.clone(),
                            gpu_count,
                            epochs,
                            preset_id: epochs.is_none().then_some(PresetId::Aggressive),
                        })
                        .await
                        .expect("estimate");
                    let epochs = epochs.unwrap_or(aggressive.hyperparameters.num_epochs);
                    let mut preview = CostEstimateInputs::new(tokens, epochs, gpu, gpu_count)
                        .and_then(|inputs| inputs.estimate())
                        .expect("the preview takes what the server takes");
                    preview.dataset_id = Some(dataset.id);
                    preview.preset_id = answer.preset_id.clone();
                    if preview != answer {
                        mismatches.push(format!("preview {preview:?}\n server {answer:?}"));
                    }
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(
        compared,
        7 * 20 * 4,
        "every size, GPU type and count, epochs"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {compared} previews differ from the server:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );

    // What the server refuses, the preview refuses.
    let a6000 = &gpus[0];
    let error = api
        .estimate_training_cost(&EstimateRequest {
            dataset_id: datasets[0].id,
            gpu_type: a6000.id.clone(),
            gpu_count: a6000.max_gpus + 1,
            epochs: Some(1),
            preset_id: None,
        })
        .await
        .expect_err("more GPUs than offered");
    let preview = CostEstimateInputs::new(1, 1, a6000, a6000.max_gpus + 1)
        .expect_err("more GPUs than offered");
    assert_eq!(
        error.api().map(|a| a.message.as_str()),
        Some(preview.to_string().as_str()),
        "the same refusal, in the same words"
    );
}

#[tokio::test]
async fn list_cache_serves_the_last_lists_and_merges_changes() {
    let (user, api) = minted("api-cache").await;
    let a = api
        .create_dataset(&dataset_input("A"))
        .await
        .expect("create a");
    let b = api
        .create_dataset(&dataset_input("B"))
        .await
        .expect("create b");
    let dir = tempfile::tempdir().expect("tempdir");
    let local = brightrun_client::local::LocalDb::open(&dir.path().join("local.db"))
        .await
        .expect("open");
    let empty = local.cached_datasets(user.id).await.expect("cache");
    assert!(
        empty.items.is_empty() && empty.fetched_at.is_none(),
        "never refreshed: nothing cached, no fetch time"
    );

    let all = api.list_datasets().await.expect("list");
    local
        .replace_datasets(user.id, &all, Utc::now())
        .await
        .expect("cache the list");
    let cached = local.cached_datasets(user.id).await.expect("cache");
    assert_eq!(cached.items.len(), 2, "both datasets are cached");
    assert!(
        cached.items.contains(&a) && cached.items.contains(&b),
        "as the server sent them"
    );
    assert!(cached.fetched_at.is_some(), "with the refresh time");
    let cursor = local.datasets_cursor(user.id).await.expect("cursor");
    assert_eq!(
        cursor,
        Some(a.updated_at.max(b.updated_at)),
        "the cursor is the newest change"
    );

    let renamed = api
        .update_dataset(
            a.id,
            &DatasetChanges {
                name: Some("A2".into()),
                ..Default::default()
            },
        )
        .await
        .expect("rename");
    api.delete_dataset(b.id).await.expect("delete");
    let changed = api.datasets_changed_since(cursor).await.expect("changes");
    assert_eq!(
        changed.len(),
        2,
        "the rename and the delete are the changes"
    );
    local
        .merge_datasets(user.id, &changed, Utc::now())
        .await
        .expect("merge");
    let cached = local.cached_datasets(user.id).await.expect("cache");
    assert_eq!(
        cached.items,
        vec![renamed],
        "renamed in place, the deleted one dropped"
    );
    assert!(
        local
            .cached_datasets(Uuid::new_v4())
            .await
            .expect("cache")
            .items
            .is_empty(),
        "another user's cache is separate"
    );
}
