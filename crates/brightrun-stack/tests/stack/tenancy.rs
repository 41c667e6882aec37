//! Tenancy and the schema's hardening, through `/rest/v1` exactly as a client sees it: one user
//! can never read or change another user's rows, and a user can change only what a user should
//! (dataset name/description, a notification's `read`). Each hole the spec left open has a test
//! named for it. Rows are arranged with the superuser pool (standing in for the worker) and
//! checked with it afterwards; what a user can do is exercised only over HTTP.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::{TestStack, TestUser, json_of, mint_user, rest_as, rest_as_service, stack};

/// The tables a user owns rows in.
const TABLES: [&str; 6] = [
    "datasets",
    "training_jobs",
    "metrics_points",
    "model_artifacts",
    "cost_records",
    "notifications",
];

/// One row in every table, owned by one user, as the worker would have left them.
#[derive(Debug, Clone, Copy)]
struct Owned {
    dataset: Uuid,
    job: Uuid,
    metric: Uuid,
    artifact: Uuid,
    cost: Uuid,
    notification: Uuid,
}

impl Owned {
    fn id_in(&self, table: &str) -> Uuid {
        match table {
            "datasets" => self.dataset,
            "training_jobs" => self.job,
            "metrics_points" => self.metric,
            "model_artifacts" => self.artifact,
            "cost_records" => self.cost,
            "notifications" => self.notification,
            other => panic!("no owned row in {other}"),
        }
    }
}

/// A dataset that passed validation: what the worker writes after `confirm_dataset_upload`.
async fn ready_dataset(db: &PgPool, user: &TestUser, training_tokens: i64) -> Uuid {
    let shape = brightrun_stack::testing::DatasetShape {
        name: "support chats".into(),
        training_tokens,
        training_pairs: 900,
        validation_pairs: 100,
    };
    brightrun_stack::testing::ready_dataset(db, user.id, &shape).await
}

/// A dataset in `status`, not training-ready (uploading or validating).
async fn dataset_in_status(db: &PgPool, user: &TestUser, status: &str) -> Uuid {
    sqlx::query_scalar(
        "insert into public.datasets (user_id, name, status, storage_path, file_name, file_size)
         values ($1, 'not yet', $2, $1::text || '/' || gen_random_uuid() || '/train.jsonl',
           'train.jsonl', 4096)
         returning id",
    )
    .bind(user.id)
    .bind(status)
    .fetch_one(db)
    .await
    .expect("insert dataset")
}

/// A running job on `dataset` with a metric point, an artifact, a cost record and a
/// notification: one row of every table, owned by `user`.
async fn arrange_tenant(db: &PgPool, user: &TestUser) -> Owned {
    let dataset = ready_dataset(db, user, 180_000).await;
    let job: Uuid = sqlx::query_scalar(
        "insert into public.training_jobs (user_id, dataset_id, preset_id, hyperparameters,
           gpu_config, status, current_stage, progress, total_epochs, estimated_total_cost,
           current_cost, cost_per_gpu_hour, num_gpus, started_at, attempt, worker_id)
         values ($1, $2, 'balanced',
           (select hyperparameters from public.training_presets where id = 'balanced'),
           '{\"gpu_type\": \"A100-80GB\", \"num_gpus\": 1, \"gpu_memory_gb\": 80, \"cost_per_gpu_hour\": 3.0}',
           'running', 'training', 40, 5, 4.20, 1.10, 3.0, 1, now(), 1, 'worker-test')
         returning id",
    )
    .bind(user.id)
    .bind(dataset)
    .fetch_one(db)
    .await
    .expect("insert job");
    let metric: Uuid = sqlx::query_scalar(
        "insert into public.metrics_points (job_id, attempt, epoch, step, training_loss, learning_rate)
         values ($1, 1, 1, 10, 0.91, 0.0002) returning id",
    )
    .bind(job)
    .fetch_one(db)
    .await
    .expect("insert metric point");
    let artifact: Uuid = sqlx::query_scalar(
        "insert into public.model_artifacts (user_id, job_id, dataset_id, name, quality_metrics,
           training_summary, configuration, artifacts)
         values ($1, $2, $3, 'support-bot v1', '{\"final_training_loss\": 0.8}',
           '{\"total_cost\": 1.1}', '{}', '{\"adapter_model_path\": \"x/adapter_model.safetensors\"}')
         returning id",
    )
    .bind(user.id)
    .bind(job)
    .bind(dataset)
    .fetch_one(db)
    .await
    .expect("insert artifact");
    let cost: Uuid = sqlx::query_scalar(
        "insert into public.cost_records (user_id, job_id, cost_type, amount, details, billing_period)
         values ($1, $2, 'compute', 1.10, '{\"gpu_hours\": 0.37}', date_trunc('month', now())::date)
         returning id",
    )
    .bind(user.id)
    .bind(job)
    .fetch_one(db)
    .await
    .expect("insert cost record");
    let notification: Uuid = sqlx::query_scalar(
        "insert into public.notifications (user_id, type, title, message, metadata)
         values ($1, 'job_complete', 'LoRA job finished', 'loss 0.82, $1.10', '{}') returning id",
    )
    .bind(user.id)
    .fetch_one(db)
    .await
    .expect("insert notification");
    Owned {
        dataset,
        job,
        metric,
        artifact,
        cost,
        notification,
    }
}

/// The row as the superuser sees it, for before/after comparisons.
async fn row(db: &PgPool, table: &str, id: Uuid) -> Value {
    let sql = format!("select to_jsonb(t) from public.{table} t where t.id = $1");
    sqlx::query_scalar(&sql)
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("read {table} {id}: {e}"))
}

async fn snapshot(db: &PgPool, owned: &Owned) -> Vec<Value> {
    let mut rows = Vec::new();
    for table in TABLES {
        rows.push(row(db, table, owned.id_in(table)).await);
    }
    rows
}

async fn get(stack: &TestStack, user: &TestUser, path: &str) -> (StatusCode, Value) {
    json_of(
        rest_as(stack, Method::GET, path, Some(user))
            .send()
            .await
            .expect("GET"),
    )
    .await
}

async fn patch(stack: &TestStack, user: &TestUser, path: &str, body: Value) -> (StatusCode, Value) {
    let request = rest_as(stack, Method::PATCH, path, Some(user))
        .header("Prefer", "return=representation")
        .json(&body);
    json_of(request.send().await.expect("PATCH")).await
}

async fn delete(stack: &TestStack, user: &TestUser, path: &str) -> (StatusCode, Value) {
    let request =
        rest_as(stack, Method::DELETE, path, Some(user)).header("Prefer", "return=representation");
    json_of(request.send().await.expect("DELETE")).await
}

async fn rpc(
    stack: &TestStack,
    user: &TestUser,
    function: &str,
    args: Value,
) -> (StatusCode, Value) {
    let request = rest_as(stack, Method::POST, &format!("rpc/{function}"), Some(user)).json(&args);
    json_of(request.send().await.expect("RPC")).await
}

/// A write the server refused or that touched nothing: an error status that does not reveal the
/// row, or success with no row affected.
fn assert_refused(what: &str, (status, body): &(StatusCode, Value)) {
    let refused = matches!(status.as_u16(), 401 | 403 | 404)
        || (status.is_success() && (body.is_null() || body.as_array().is_some_and(Vec::is_empty)));
    assert!(
        refused,
        "{what} must be refused or affect no row, got {status} {body}"
    );
}

/// PostgREST's answer to a missing privilege for a signed-in user: 403 with SQLSTATE 42501.
fn assert_permission_denied(what: &str, (status, body): &(StatusCode, Value)) {
    assert_eq!(
        *status,
        StatusCode::FORBIDDEN,
        "{what}: a missing privilege is 403, got {body}"
    );
    assert_eq!(
        body["code"], "42501",
        "{what}: a missing privilege carries SQLSTATE 42501, got {body}"
    );
}

fn assert_error(what: &str, (status, body): &(StatusCode, Value), want: StatusCode, code: &str) {
    assert_eq!(*status, want, "{what}: expected {want}, got {body}");
    assert_eq!(
        body["code"], code,
        "{what}: expected SQLSTATE {code}, got {body}"
    );
}

fn number(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} must be a number in {value}"))
}

// ------------------------------------------------------------------------------------------
// The cross-tenant matrix
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn another_user_can_neither_read_nor_change_nor_act_on_my_rows() {
    let stack = stack();
    let db = stack.db().await;
    let owner = mint_user(stack, "tenancy-owner").await;
    let intruder = mint_user(stack, "tenancy-intruder").await;
    let owned = arrange_tenant(&db, &owner).await;
    let before = snapshot(&db, &owned).await;

    // The owner sees each row: the reads below are empty because of tenancy, not because the
    // query is wrong.
    for table in TABLES {
        let id = owned.id_in(table);
        let (status, body) = get(stack, &owner, &format!("{table}?id=eq.{id}")).await;
        assert_eq!(status, StatusCode::OK, "owner reads own {table}: {body}");
        assert_eq!(
            body.as_array().map(Vec::len),
            Some(1),
            "owner sees own {table} row: {body}"
        );
    }

    for table in TABLES {
        let id = owned.id_in(table);
        let (status, body) = get(stack, &intruder, &format!("{table}?id=eq.{id}")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "reading another user's {table} is an empty read: {body}"
        );
        assert_eq!(
            body,
            json!([]),
            "another user's {table} row must be invisible"
        );
        let (status, body) = get(stack, &intruder, table).await;
        assert_eq!(status, StatusCode::OK, "listing {table}: {body}");
        let leaked = body
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["id"] == json!(id.to_string()));
        assert!(
            !leaked,
            "listing {table} must not include another user's row: {body}"
        );

        // Column values a user could try on any table; each is refused or filtered out.
        let body = match table {
            "datasets" => json!({"name": "mine now", "description": "mine"}),
            "notifications" => json!({"read": true}),
            "training_jobs" => json!({"status": "cancelled"}),
            "metrics_points" => json!({"training_loss": 0}),
            "model_artifacts" => json!({"name": "mine now"}),
            _ => json!({"amount": 0}),
        };
        let response = patch(stack, &intruder, &format!("{table}?id=eq.{id}"), body).await;
        assert_refused(&format!("PATCH another user's {table}"), &response);
        let response = delete(stack, &intruder, &format!("{table}?id=eq.{id}")).await;
        assert_refused(&format!("DELETE another user's {table}"), &response);
    }

    // Every function that takes a row id answers "not found" for another user's row.
    let dataset = owned.dataset.to_string();
    let attempts = [
        ("confirm_dataset_upload", json!({"dataset_id": dataset})),
        ("delete_dataset", json!({"dataset_id": dataset})),
        (
            "estimate_training_cost",
            json!({"dataset_id": dataset, "gpu_type": "A100-80GB", "gpu_count": 1, "epochs": 3}),
        ),
        (
            "create_training_job",
            json!({"dataset_id": dataset, "preset_id": "balanced", "gpu_type": "A100-80GB", "gpu_count": 1}),
        ),
        (
            "cancel_training_job",
            json!({"job_id": owned.job.to_string()}),
        ),
    ];
    for (function, args) in attempts {
        let response = rpc(stack, &intruder, function, args).await;
        assert_error(
            &format!("{function} on another user's row"),
            &response,
            StatusCode::NOT_FOUND,
            "PT404",
        );
    }
    let (status, body) = rpc(
        stack,
        &intruder,
        "mark_notifications_read",
        json!({"ids": [owned.notification.to_string()]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "mark_notifications_read: {body}");
    assert_eq!(
        body,
        json!(0),
        "another user's notification ids are ignored"
    );
    let (status, body) = rpc(stack, &intruder, "monthly_cost_summary", json!({})).await;
    assert_eq!(status, StatusCode::OK, "monthly_cost_summary: {body}");
    assert_eq!(
        number(&body, "total"),
        0.0,
        "another user's costs are not in my summary: {body}"
    );
    assert_eq!(
        body["by_job"],
        json!([]),
        "another user's jobs are not in my summary: {body}"
    );

    let after = snapshot(&db, &owned).await;
    for ((table, before), after) in TABLES.iter().zip(&before).zip(&after) {
        assert_eq!(
            before, after,
            "the owner's {table} row must be unchanged after the attempts"
        );
    }
}

#[tokio::test]
async fn anon_gets_nothing_but_the_catalogue() {
    let stack = stack();
    let db = stack.db().await;
    let owner = mint_user(stack, "tenancy-anon-owner").await;
    arrange_tenant(&db, &owner).await;
    for table in TABLES {
        let (status, body) = json_of(
            rest_as(stack, Method::GET, table, None)
                .send()
                .await
                .expect("GET"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "anon reading {table} lacks the privilege: {body}"
        );
        assert_eq!(body["code"], "42501", "anon reading {table}: {body}");
    }
    let (status, body) = json_of(
        rest_as(stack, Method::POST, "rpc/create_dataset", None)
            .json(&json!({"name": "x", "file_name": "x.jsonl", "file_size": 10}))
            .send()
            .await
            .expect("RPC"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "anon may not call create_dataset: {body}"
    );

    let (status, body) = json_of(
        rest_as(
            stack,
            Method::GET,
            "gpu_types?select=id,price_per_gpu_hour",
            None,
        )
        .send()
        .await
        .expect("GET"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the GPU catalogue is public: {body}"
    );
    let ids: Vec<&str> = body
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for id in ["A6000-48GB", "A100-80GB", "H100-80GB"] {
        assert!(ids.contains(&id), "catalogue must offer {id}: {body}");
    }
}

// ------------------------------------------------------------------------------------------
// The spec's holes, one test each
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_cannot_mark_own_dataset_ready_or_training_ready() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "hole-ready").await;
    let dataset = dataset_in_status(&db, &user, "validating").await;
    let before = row(&db, "datasets", dataset).await;

    let path = format!("datasets?id=eq.{dataset}");
    for body in [
        json!({"status": "ready"}),
        json!({"training_ready": true}),
        json!({"status": "ready", "training_ready": true}),
        json!({"name": "fine", "training_ready": true}),
        json!({"total_tokens": 1, "training_tokens": 1}),
    ] {
        let response = patch(stack, &user, &path, body.clone()).await;
        assert_permission_denied(&format!("PATCH own dataset with {body}"), &response);
    }
    assert_eq!(
        row(&db, "datasets", dataset).await,
        before,
        "the dataset must be unchanged"
    );
}

#[tokio::test]
async fn user_cannot_change_own_jobs_cost_status_or_progress() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "hole-job").await;
    let owned = arrange_tenant(&db, &user).await;
    let before = row(&db, "training_jobs", owned.job).await;

    let path = format!("training_jobs?id=eq.{}", owned.job);
    for body in [
        json!({"current_cost": 0}),
        json!({"estimated_total_cost": 0}),
        json!({"final_cost": 0}),
        json!({"cost_per_gpu_hour": 0.01}),
        json!({"status": "completed"}),
        json!({"progress": 100}),
        json!({"cancel_requested_at": null}),
    ] {
        let response = patch(stack, &user, &path, body.clone()).await;
        assert_permission_denied(&format!("PATCH own job with {body}"), &response);
    }
    let response = delete(stack, &user, &path).await;
    assert_permission_denied("DELETE own job", &response);
    assert_eq!(
        row(&db, "training_jobs", owned.job).await,
        before,
        "the job must be unchanged"
    );
}

/// Reading another user's rows of a table that the spec left without RLS.
async fn assert_cannot_read_other_users(table: &str) {
    let stack = stack();
    let db = stack.db().await;
    let owner = mint_user(stack, &format!("hole-{table}-owner")).await;
    let reader = mint_user(stack, &format!("hole-{table}-reader")).await;
    let owned = arrange_tenant(&db, &owner).await;
    let id = owned.id_in(table);

    let (status, body) = get(stack, &owner, &format!("{table}?id=eq.{id}")).await;
    assert_eq!(
        (status, body.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "owner reads own {table}: {body}"
    );

    for path in [format!("{table}?id=eq.{id}"), table.to_owned()] {
        let (status, body) = get(stack, &reader, &path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        let leaked = body
            .as_array()
            .expect("array")
            .iter()
            .any(|r| r["id"] == json!(id.to_string()));
        assert!(
            !leaked,
            "GET {path} as another user must not return the owner's row: {body}"
        );
    }
}

#[tokio::test]
async fn user_cannot_read_another_users_metrics_points() {
    assert_cannot_read_other_users("metrics_points").await;
    // Also not by naming the job: the policy follows the job's owner.
    let stack = stack();
    let db = stack.db().await;
    let owner = mint_user(stack, "hole-metrics-job-owner").await;
    let reader = mint_user(stack, "hole-metrics-job-reader").await;
    let owned = arrange_tenant(&db, &owner).await;
    let (status, body) = get(
        stack,
        &reader,
        &format!("metrics_points?job_id=eq.{}", owned.job),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!([])),
        "metrics of another user's job are invisible"
    );
}

#[tokio::test]
async fn user_cannot_read_another_users_cost_records() {
    assert_cannot_read_other_users("cost_records").await;
}

#[tokio::test]
async fn user_cannot_read_another_users_notifications() {
    assert_cannot_read_other_users("notifications").await;
}

#[tokio::test]
async fn user_cannot_insert_a_training_job_directly() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "hole-insert-job").await;
    let dataset = ready_dataset(&db, &user, 180_000).await;

    let row = json!({
        "user_id": user.id, "dataset_id": dataset, "preset_id": "balanced",
        "hyperparameters": {"base_model": "mistralai/Mistral-7B-v0.1", "learning_rate": 0.0002,
          "batch_size": 8, "num_epochs": 5, "lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.1},
        "gpu_config": {"gpu_type": "H100-80GB", "num_gpus": 8, "gpu_memory_gb": 640, "cost_per_gpu_hour": 0.01},
        "total_epochs": 5, "estimated_total_cost": 0, "cost_per_gpu_hour": 0.01, "num_gpus": 8,
    });
    let response = json_of(
        rest_as(stack, Method::POST, "training_jobs", Some(&user))
            .header("Prefer", "return=representation")
            .json(&row)
            .send()
            .await
            .expect("POST"),
    )
    .await;
    assert_permission_denied("POST training_jobs", &response);
    // Nor any other table: rows are created by functions and by the worker only.
    for (table, row) in [
        (
            "datasets",
            json!({"user_id": user.id, "name": "x", "status": "ready"}),
        ),
        (
            "metrics_points",
            json!({"job_id": Uuid::new_v4(), "training_loss": 0}),
        ),
        ("model_artifacts", json!({"user_id": user.id, "name": "x"})),
        ("cost_records", json!({"user_id": user.id, "amount": -100})),
        ("notifications", json!({"user_id": user.id, "title": "x"})),
    ] {
        let response = json_of(
            rest_as(stack, Method::POST, table, Some(&user))
                .json(&row)
                .send()
                .await
                .expect("POST"),
        )
        .await;
        assert_permission_denied(&format!("POST {table}"), &response);
    }
    let jobs: i64 =
        sqlx::query_scalar("select count(*) from public.training_jobs where user_id = $1")
            .bind(user.id)
            .fetch_one(&db)
            .await
            .expect("count jobs");
    assert_eq!(jobs, 0, "no job may exist after a refused insert");
}

#[tokio::test]
async fn create_training_job_refuses_a_dataset_that_is_not_ready() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "hole-not-ready").await;
    for status in ["uploading", "validating", "error"] {
        let dataset = dataset_in_status(&db, &user, status).await;
        let response = rpc(
            stack,
            &user,
            "create_training_job",
            json!({"dataset_id": dataset, "preset_id": "balanced", "gpu_type": "A100-80GB", "gpu_count": 1}),
        )
        .await;
        assert_error(
            &format!("job on a dataset in {status}"),
            &response,
            StatusCode::CONFLICT,
            "PT409",
        );
        let message = response.1["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("not ready"),
            "the error must say the dataset is not ready: {message}"
        );
    }
    // Validated but flagged not training-ready by the worker (e.g. too few examples).
    let dataset = ready_dataset(&db, &user, 1000).await;
    sqlx::query("update public.datasets set training_ready = false where id = $1")
        .bind(dataset)
        .execute(&db)
        .await
        .expect("unflag dataset");
    let response = rpc(
        stack,
        &user,
        "create_training_job",
        json!({"dataset_id": dataset, "preset_id": "balanced", "gpu_type": "A100-80GB"}),
    )
    .await;
    assert_error(
        "job on a ready but not training-ready dataset",
        &response,
        StatusCode::CONFLICT,
        "PT409",
    );
    // Deleted.
    let dataset = ready_dataset(&db, &user, 1000).await;
    let (status, body) = rpc(
        stack,
        &user,
        "delete_dataset",
        json!({"dataset_id": dataset}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "delete_dataset: {body}");
    let response = rpc(
        stack,
        &user,
        "create_training_job",
        json!({"dataset_id": dataset, "preset_id": "balanced", "gpu_type": "A100-80GB"}),
    )
    .await;
    assert_error(
        "job on a deleted dataset",
        &response,
        StatusCode::CONFLICT,
        "PT409",
    );

    let jobs: i64 =
        sqlx::query_scalar("select count(*) from public.training_jobs where user_id = $1")
            .bind(user.id)
            .fetch_one(&db)
            .await
            .expect("count jobs");
    assert_eq!(jobs, 0, "no job may have been created");
}

#[tokio::test]
async fn job_snapshots_the_estimate_and_the_gpu_rate() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "hole-snapshot").await;
    let dataset = ready_dataset(&db, &user, 3_600_000).await;
    // A GPU type of this test's own, so changing its price cannot disturb other tests.
    let gpu = format!("test-{}", &Uuid::new_v4().simple().to_string()[..12]);
    sqlx::query(
        "insert into public.gpu_types (id, display_name, memory_gb, price_per_gpu_hour,
           tokens_per_second_per_gpu, max_gpus)
         values ($1, 'Test GPU', 80, 2.00, 1000, 4)",
    )
    .bind(&gpu)
    .execute(&db)
    .await
    .expect("insert test GPU");

    let args = json!({"dataset_id": dataset, "gpu_type": gpu, "gpu_count": 2, "epochs": 2});
    let (status, estimate) = rpc(stack, &user, "estimate_training_cost", args.clone()).await;
    assert_eq!(status, StatusCode::OK, "estimate: {estimate}");
    let (status, job) = rpc(
        stack,
        &user,
        "create_training_job",
        json!({"dataset_id": dataset, "preset_id": "balanced", "gpu_type": gpu, "gpu_count": 2,
               "hyperparameters": {"num_epochs": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "create_training_job: {job}");
    assert_eq!(job["status"], "queued", "a new job is queued: {job}");
    assert_eq!(
        number(&job, "estimated_total_cost"),
        number(&estimate, "estimated_cost"),
        "job carries the estimate"
    );
    assert_eq!(
        number(&job, "cost_per_gpu_hour"),
        2.0,
        "job carries the GPU's rate"
    );
    assert_eq!(
        number(&job["gpu_config"], "cost_per_gpu_hour"),
        2.0,
        "gpu_config carries the rate"
    );
    assert_eq!(job["num_gpus"], json!(2), "job carries the GPU count");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let before = row(&db, "training_jobs", job_id.parse().expect("uuid")).await;

    sqlx::query("update public.gpu_types set price_per_gpu_hour = 9.99 where id = $1")
        .bind(&gpu)
        .execute(&db)
        .await
        .expect("raise the price");
    let (status, repriced) = rpc(stack, &user, "estimate_training_cost", args).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "estimate after the change: {repriced}"
    );
    assert!(
        number(&repriced, "estimated_cost") > number(&estimate, "estimated_cost"),
        "new estimates use the new price: {repriced}"
    );
    let (status, body) = get(stack, &user, &format!("training_jobs?id=eq.{job_id}")).await;
    assert_eq!(status, StatusCode::OK, "read job: {body}");
    assert_eq!(
        number(&body[0], "cost_per_gpu_hour"),
        2.0,
        "the job keeps the rate it was created with"
    );
    assert_eq!(
        number(&body[0], "estimated_total_cost"),
        number(&estimate, "estimated_cost"),
        "the job keeps the estimate it was created with"
    );
    assert_eq!(
        row(&db, "training_jobs", job_id.parse().expect("uuid")).await,
        before,
        "job unchanged by a price change"
    );

    sqlx::query("update public.training_jobs set status = 'cancelled', completed_at = now() where id = $1::uuid")
        .bind(&job_id)
        .execute(&db)
        .await
        .expect("retire the job");
    sqlx::query("update public.gpu_types set active = false where id = $1")
        .bind(&gpu)
        .execute(&db)
        .await
        .expect("retire GPU");
}

// ------------------------------------------------------------------------------------------
// What a user may do
// ------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_can_rename_own_dataset() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "rename").await;
    let dataset = ready_dataset(&db, &user, 1000).await;
    let before = row(&db, "datasets", dataset).await;

    let (status, body) = patch(
        stack,
        &user,
        &format!("datasets?id=eq.{dataset}"),
        json!({"name": "support chats v2", "description": "deduplicated"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "rename own dataset: {body}");
    assert_eq!(
        body[0]["name"], "support chats v2",
        "the new name is returned: {body}"
    );
    assert_eq!(
        body[0]["description"], "deduplicated",
        "the new description is returned: {body}"
    );
    let after = row(&db, "datasets", dataset).await;
    assert_eq!(after["name"], "support chats v2", "the new name is stored");
    assert_eq!(
        after["status"], before["status"],
        "renaming leaves the status alone"
    );
    assert_ne!(
        after["updated_at"], before["updated_at"],
        "the updated_at trigger ran"
    );
}

#[tokio::test]
async fn user_can_mark_own_notifications_read() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "notif").await;
    let owned = arrange_tenant(&db, &user).await;
    let (status, body) = patch(
        stack,
        &user,
        &format!("notifications?id=eq.{}", owned.notification),
        json!({"read": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "mark one read: {body}");
    assert_eq!(body[0]["read"], json!(true), "returned as read: {body}");
    let response = patch(
        stack,
        &user,
        &format!("notifications?id=eq.{}", owned.notification),
        json!({"title": "x"}),
    )
    .await;
    assert_permission_denied("PATCH a notification's title", &response);

    for _ in 0..2 {
        sqlx::query("insert into public.notifications (user_id, type, title, message) values ($1, 'job_failed', 't', 'm')")
            .bind(user.id)
            .execute(&db)
            .await
            .expect("insert notification");
    }
    let (status, body) = rpc(stack, &user, "mark_notifications_read", json!({})).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!(2)),
        "null ids marks all of mine: two were unread"
    );
    let (status, body) = rpc(
        stack,
        &user,
        "mark_notifications_read",
        json!({"ids": null}),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!(0)),
        "marking again changes nothing"
    );
    let unread: i64 = sqlx::query_scalar(
        "select count(*) from public.notifications where user_id = $1 and not read",
    )
    .bind(user.id)
    .fetch_one(&db)
    .await
    .expect("count unread");
    assert_eq!(unread, 0, "every notification of the user is read");
}

#[tokio::test]
async fn create_dataset_returns_a_path_under_the_callers_folder() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "create-dataset").await;
    let (status, body) = rpc(
        stack,
        &user,
        "create_dataset",
        json!({"name": "support chats", "description": "v1", "format": "brightrun_lora_v4",
               "file_name": "train.jsonl", "file_size": 123_456}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "create_dataset: {body}");
    let id = body["id"].as_str().expect("id");
    assert_eq!(
        body["storage_path"],
        format!("{}/{id}/train.jsonl", user.id),
        "path is {{user}}/{{dataset}}/{{file}}"
    );
    assert_eq!(body["storage_bucket"], "lora-datasets", "bucket: {body}");
    assert_eq!(body["status"], "uploading", "status: {body}");
    assert_eq!(body["training_ready"], json!(false), "not ready: {body}");
    assert_eq!(body["user_id"], json!(user.id.to_string()), "owner: {body}");

    let (status, listed) = get(stack, &user, &format!("datasets?id=eq.{id}")).await;
    assert_eq!(
        (status, listed.as_array().map(Vec::len)),
        (StatusCode::OK, Some(1)),
        "the new dataset is listed: {listed}"
    );

    // Confirming before the upload is refused; after it, the worker gets the dataset.
    let (status, refused) = rpc(
        stack,
        &user,
        "confirm_dataset_upload",
        json!({"dataset_id": id}),
    )
    .await;
    assert_error(
        "confirm before upload",
        &(status, refused),
        StatusCode::CONFLICT,
        "PT409",
    );
    sqlx::query("insert into storage.objects (bucket_id, name, owner_id, metadata) values ('lora-datasets', $1, $2, '{\"size\": 120000}')")
        .bind(format!("{}/{id}/train.jsonl", user.id))
        .bind(user.id.to_string())
        .execute(&db)
        .await
        .expect("store the object as storage-api would");
    for attempt in ["first", "repeated"] {
        let (status, confirmed) = rpc(
            stack,
            &user,
            "confirm_dataset_upload",
            json!({"dataset_id": id}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{attempt} confirm: {confirmed}");
        assert_eq!(
            confirmed["status"], "validating",
            "{attempt} confirm hands over to validation: {confirmed}"
        );
        assert_eq!(
            confirmed["file_size"],
            json!(120_000),
            "file_size is the stored object's size: {confirmed}"
        );
    }

    for (file_name, why) in [
        ("../escape.jsonl", "a parent reference"),
        ("a/b.jsonl", "a folder"),
        ("x..y.jsonl", "two dots"),
        ("new\nline.jsonl", "a control character"),
        ("", "nothing"),
    ] {
        let response = rpc(
            stack,
            &user,
            "create_dataset",
            json!({"name": "x", "file_name": file_name, "file_size": 10}),
        )
        .await;
        assert_error(
            &format!("a file name with {why}"),
            &response,
            StatusCode::BAD_REQUEST,
            "22023",
        );
    }
    let response = rpc(
        stack,
        &user,
        "create_dataset",
        json!({"name": "x", "file_name": "big.jsonl", "file_size": 524_288_001_i64}),
    )
    .await;
    assert_error(
        "a file over 500 MB",
        &response,
        StatusCode::BAD_REQUEST,
        "22023",
    );
    let response = rpc(
        stack,
        &user,
        "create_dataset",
        json!({"name": "x", "file_name": "x.jsonl", "file_size": 10, "format": "alpaca"}),
    )
    .await;
    assert_error(
        "an unknown format",
        &response,
        StatusCode::BAD_REQUEST,
        "22023",
    );
}

#[tokio::test]
async fn estimate_reacts_to_epochs_gpu_count_and_dataset_size() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "estimate").await;
    let small = ready_dataset(&db, &user, 2_000_000).await;
    let large = ready_dataset(&db, &user, 20_000_000).await;

    let estimate = |dataset: Uuid, gpu_count: i64, epochs: i64| {
        let user = user.clone();
        async move {
            let (status, body) = rpc(
                stack,
                &user,
                "estimate_training_cost",
                json!({"dataset_id": dataset, "gpu_type": "A100-80GB", "gpu_count": gpu_count, "epochs": epochs}),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "estimate: {body}");
            body
        }
    };
    let base = estimate(small, 1, 3).await;
    assert_eq!(
        number(&base, "tokens_per_epoch"),
        2_000_000.0,
        "tokens come from the dataset: {base}"
    );
    assert_eq!(
        number(&base, "price_per_gpu_hour"),
        3.0,
        "the catalogue's A100 rate: {base}"
    );
    let hours = number(&base, "estimated_hours");
    let by_formula = 2_000_000.0 * 3.0 / 3200.0 / 3600.0 + number(&base, "overhead_hours");
    assert!(
        (hours - by_formula).abs() < 0.001,
        "hours follow the documented formula: {hours} vs {by_formula}"
    );
    assert!(
        (number(&base, "estimated_cost") - hours * 3.0).abs() < 0.01,
        "cost = hours x rate x gpus: {base}"
    );

    let more_epochs = estimate(small, 1, 6).await;
    assert!(
        number(&more_epochs, "estimated_cost") > number(&base, "estimated_cost"),
        "more epochs cost more: {more_epochs} vs {base}"
    );
    let more_gpus = estimate(small, 2, 3).await;
    assert!(
        number(&more_gpus, "estimated_hours") < hours,
        "more GPUs finish sooner: {more_gpus} vs {base}"
    );
    assert!(
        number(&more_gpus, "scaling_efficiency") < 1.0,
        "two GPUs scale below 100 %: {more_gpus}"
    );
    let bigger = estimate(large, 1, 3).await;
    assert!(
        number(&bigger, "estimated_cost") > number(&base, "estimated_cost"),
        "a larger dataset costs more: {bigger} vs {base}"
    );

    let (status, body) = rpc(
        stack,
        &user,
        "estimate_training_cost",
        json!({"dataset_id": small, "gpu_type": "A100-80GB", "preset_id": "aggressive"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "estimate with a preset: {body}");
    assert_eq!(
        body["epochs"],
        json!(10),
        "epochs come from the preset when not given: {body}"
    );
    let response = rpc(
        stack,
        &user,
        "estimate_training_cost",
        json!({"dataset_id": small, "gpu_type": "A100-80GB", "gpu_count": 64, "epochs": 1}),
    )
    .await;
    assert_error(
        "more GPUs than the type offers",
        &response,
        StatusCode::BAD_REQUEST,
        "22023",
    );
}

#[tokio::test]
async fn create_training_job_validates_hyperparameters() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "hyper").await;
    let dataset = ready_dataset(&db, &user, 100_000).await;
    for (hyperparameters, why) in [
        (json!({"learning_rate": 2}), "a learning rate of 2"),
        (json!({"num_epochs": 0}), "zero epochs"),
        (json!({"batch_size": 2.5}), "a fractional batch size"),
        (json!({"lora_rank": "16"}), "a rank given as a string"),
        (json!({"learning_rte": 0.0002}), "an unknown key"),
    ] {
        let response = rpc(
            stack,
            &user,
            "create_training_job",
            json!({"dataset_id": dataset, "preset_id": "custom", "gpu_type": "A100-80GB",
                   "hyperparameters": hyperparameters}),
        )
        .await;
        assert_error(
            &format!("hyperparameters with {why}"),
            &response,
            StatusCode::BAD_REQUEST,
            "22023",
        );
    }
    let (status, job) = rpc(
        stack,
        &user,
        "create_training_job",
        json!({"dataset_id": dataset, "preset_id": "conservative", "gpu_type": "H100-80GB",
               "hyperparameters": {"lora_rank": 4}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "create_training_job: {job}");
    assert_eq!(
        job["hyperparameters"]["lora_rank"],
        json!(4),
        "the override wins: {job}"
    );
    assert_eq!(
        job["hyperparameters"]["num_epochs"],
        json!(3),
        "the preset fills the rest: {job}"
    );
    assert_eq!(
        job["total_epochs"],
        json!(3),
        "total_epochs follows num_epochs: {job}"
    );
}

#[tokio::test]
async fn cancel_training_job_follows_the_job_state() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "cancel").await;
    let owned = arrange_tenant(&db, &user).await; // its job is running
    let (status, queued) = rpc(
        stack,
        &user,
        "create_training_job",
        json!({"dataset_id": owned.dataset, "preset_id": "balanced", "gpu_type": "A100-80GB"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "create_training_job: {queued}");

    let (status, cancelled) = rpc(
        stack,
        &user,
        "cancel_training_job",
        json!({"job_id": queued["id"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "cancel a queued job: {cancelled}");
    assert_eq!(
        cancelled["status"], "cancelled",
        "a queued job is cancelled at once: {cancelled}"
    );
    assert!(
        !cancelled["completed_at"].is_null(),
        "a cancelled job has completed_at: {cancelled}"
    );

    let (status, running) = rpc(
        stack,
        &user,
        "cancel_training_job",
        json!({"job_id": owned.job}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "cancel a running job: {running}");
    assert_eq!(
        running["status"], "running",
        "a running job is left to its worker: {running}"
    );
    assert!(
        !running["cancel_requested_at"].is_null(),
        "the worker is asked to stop: {running}"
    );

    sqlx::query(
        "update public.training_jobs set status = 'completed', completed_at = now() where id = $1",
    )
    .bind(owned.job)
    .execute(&db)
    .await
    .expect("complete the job as the worker would");
    let response = rpc(
        stack,
        &user,
        "cancel_training_job",
        json!({"job_id": owned.job}),
    )
    .await;
    assert_error(
        "cancel a completed job",
        &response,
        StatusCode::CONFLICT,
        "PT409",
    );
}

#[tokio::test]
async fn service_role_writes_what_users_cannot() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "service").await;
    let dataset = dataset_in_status(&db, &user, "validating").await;
    let (status, body) = json_of(
        rest_as_service(stack, Method::PATCH, &format!("datasets?id=eq.{dataset}"))
            .header("Prefer", "return=representation")
            .json(&json!({"status": "error", "validation_errors": [{"line": 1, "error": "not JSON"}]}))
            .send()
            .await
            .expect("PATCH"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the worker's key may set a status: {body}"
    );
    assert_eq!(body[0]["status"], "error", "status written: {body}");
}

#[tokio::test]
async fn delete_dataset_is_soft_and_refused_while_a_job_uses_it() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "delete-dataset").await;
    let owned = arrange_tenant(&db, &user).await; // its job is running on its dataset
    let response = rpc(
        stack,
        &user,
        "delete_dataset",
        json!({"dataset_id": owned.dataset}),
    )
    .await;
    assert_error(
        "delete a dataset a running job reads",
        &response,
        StatusCode::CONFLICT,
        "PT409",
    );
    assert!(
        row(&db, "datasets", owned.dataset).await["deleted_at"].is_null(),
        "a refused delete leaves the dataset alone"
    );

    sqlx::query(
        "update public.training_jobs set status = 'completed', completed_at = now() where id = $1",
    )
    .bind(owned.job)
    .execute(&db)
    .await
    .expect("finish the job as the worker would");
    for attempt in ["first", "repeated"] {
        let (status, body) = rpc(
            stack,
            &user,
            "delete_dataset",
            json!({"dataset_id": owned.dataset}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{attempt} delete: {body}");
        assert!(
            !body["deleted_at"].is_null(),
            "{attempt} delete marks the row deleted: {body}"
        );
    }
    let kept: i64 = sqlx::query_scalar("select count(*) from public.datasets where id = $1")
        .bind(owned.dataset)
        .fetch_one(&db)
        .await
        .expect("count datasets");
    assert_eq!(
        kept, 1,
        "a soft delete keeps the row the job and the model refer to"
    );
    let response = rpc(
        stack,
        &user,
        "confirm_dataset_upload",
        json!({"dataset_id": owned.dataset}),
    )
    .await;
    assert_error(
        "confirm a deleted dataset",
        &response,
        StatusCode::NOT_FOUND,
        "PT404",
    );
}

#[tokio::test]
async fn monthly_cost_summary_totals_own_costs_by_type_job_and_gpu() {
    let stack = stack();
    let db = stack.db().await;
    let user = mint_user(stack, "summary").await;
    let owned = arrange_tenant(&db, &user).await; // 1.10 compute on an A100 job, this month
    sqlx::query(
        "insert into public.cost_records (user_id, job_id, cost_type, amount, billing_period)
         values ($1, $2, 'storage', 0.40, date_trunc('month', now())::date),
                ($1, $2, 'compute', 7.00, (date_trunc('month', now()) - interval '1 month')::date)",
    )
    .bind(user.id)
    .bind(owned.job)
    .execute(&db)
    .await
    .expect("insert more cost records");

    let (status, summary) = rpc(stack, &user, "monthly_cost_summary", json!({})).await;
    assert_eq!(status, StatusCode::OK, "monthly_cost_summary: {summary}");
    assert!(
        (number(&summary, "total") - 1.5).abs() < 1e-9,
        "this month only: {summary}"
    );
    assert!(
        (number(&summary["by_type"], "compute") - 1.1).abs() < 1e-9,
        "compute: {summary}"
    );
    assert!(
        (number(&summary["by_type"], "storage") - 0.4).abs() < 1e-9,
        "storage: {summary}"
    );
    assert_eq!(
        number(&summary["by_type"], "data_transfer"),
        0.0,
        "types without records are 0: {summary}"
    );
    assert_eq!(
        summary["by_job"][0]["job_id"],
        json!(owned.job.to_string()),
        "per job: {summary}"
    );
    assert_eq!(
        summary["by_gpu"][0]["gpu_type"], "A100-80GB",
        "per GPU type of the job: {summary}"
    );
    assert!(
        (number(&summary["by_gpu"][0], "gpu_hours") - 0.37).abs() < 1e-9,
        "GPU hours: {summary}"
    );

    let last_month = rpc(
        stack,
        &user,
        "monthly_cost_summary",
        json!({"month": month_before_now(&db).await}),
    )
    .await;
    assert_eq!(last_month.0, StatusCode::OK, "last month: {}", last_month.1);
    assert!(
        (number(&last_month.1, "total") - 7.0).abs() < 1e-9,
        "any day names its month: {}",
        last_month.1
    );
}

/// A day in the previous month, as the database sees the calendar.
async fn month_before_now(db: &PgPool) -> String {
    sqlx::query_scalar(
        "select ((date_trunc('month', now()) - interval '1 month')::date + 14)::text",
    )
    .fetch_one(db)
    .await
    .expect("last month")
}

/// The folder-per-user policies on storage.objects, exercised with the statements storage-api
/// runs under the user's role (supabase-protocol.md §4.2): the same claims, the same INSERT.
#[tokio::test]
async fn storage_policies_keep_each_user_in_their_own_folder() {
    let stack = stack();
    let db = stack.db().await;
    let owner = mint_user(stack, "storage-owner").await;
    let other = mint_user(stack, "storage-other").await;

    async fn insert_as(
        db: &PgPool,
        user: &TestUser,
        bucket: &str,
        name: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = db.begin().await.expect("begin");
        sqlx::query("select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)")
            .bind(json!({"sub": user.id, "role": "authenticated"}).to_string())
            .execute(&mut *tx)
            .await
            .expect("become the user");
        let result = sqlx::query(
            "insert into storage.objects (bucket_id, name, owner_id) values ($1, $2, $3)",
        )
        .bind(bucket)
        .bind(name)
        .bind(user.id.to_string())
        .execute(&mut *tx)
        .await
        .map(drop);
        tx.rollback().await.expect("rollback");
        result
    }
    fn is_rls_denial(result: &Result<(), sqlx::Error>) -> bool {
        matches!(result, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501"))
    }

    let own_dataset = format!("{}/{}/train.jsonl", owner.id, Uuid::new_v4());
    let result = insert_as(&db, &owner, "lora-datasets", &own_dataset).await;
    assert!(
        result.is_ok(),
        "a user uploads into their own dataset folder: {result:?}"
    );
    let foreign = format!("{}/{}/train.jsonl", other.id, Uuid::new_v4());
    let result = insert_as(&db, &owner, "lora-datasets", &foreign).await;
    assert!(
        is_rls_denial(&result),
        "a user may not upload into another user's folder: {result:?}"
    );
    let result = insert_as(&db, &owner, "lora-datasets", "train.jsonl").await;
    assert!(
        is_rls_denial(&result),
        "a user may not upload outside any folder: {result:?}"
    );
    let own_model = format!("{}/{}/adapter_model.safetensors", owner.id, Uuid::new_v4());
    let result = insert_as(&db, &owner, "lora-models", &own_model).await;
    assert!(
        is_rls_denial(&result),
        "only the worker writes models, even into the user's folder: {result:?}"
    );

    let limits: Vec<(String, bool, i64, Vec<String>)> = sqlx::query_as(
        "select id, public, file_size_limit, allowed_mime_types from storage.buckets
          where id in ('lora-datasets', 'lora-models') order by id",
    )
    .fetch_all(&db)
    .await
    .expect("read buckets");
    assert_eq!(limits.len(), 2, "both buckets exist: {limits:?}");
    let (_, public, size, mimes) = &limits[0];
    assert!(
        !public && *size == 524_288_000,
        "lora-datasets is private, 500 MB: {limits:?}"
    );
    assert!(
        mimes.iter().any(|m| m == "application/jsonl")
            && !mimes.iter().any(|m| m == "application/octet-stream"),
        "datasets take JSONL and never octet-stream: {mimes:?}"
    );
    let (_, public, size, mimes) = &limits[1];
    assert!(
        !public && *size == 5_368_709_120,
        "lora-models is private, 5 GB: {limits:?}"
    );
    assert!(
        mimes.iter().any(|m| m == "application/octet-stream"),
        "models take binary weights: {mimes:?}"
    );
}

/// sqlx's bookkeeping lives in `public`, where default privileges would grant it to the API
/// roles: it must be neither reachable through REST nor readable as those roles.
#[tokio::test]
async fn migrations_table_is_not_exposed() {
    let stack = stack();
    let user = mint_user(stack, "migrations-hidden").await;
    let response = rest_as(
        stack,
        Method::GET,
        "_sqlx_migrations?select=version",
        Some(&user),
    )
    .send()
    .await
    .expect("request");
    let (status, body) = json_of(response).await;
    assert_eq!(status.as_u16(), 404, "not in the schema cache: {body}");
    let db = stack.db().await;
    for role in ["anon", "authenticated", "service_role"] {
        let mut tx = db.begin().await.expect("begin");
        sqlx::query(&format!("set local role {role}"))
            .execute(&mut *tx)
            .await
            .expect("set role");
        let denied = sqlx::query("select count(*) from public._sqlx_migrations")
            .fetch_one(&mut *tx)
            .await
            .expect_err("the API roles may not read the migrations table");
        assert_eq!(
            denied.as_database_error().and_then(|e| e.code()).as_deref(),
            Some("42501"),
            "{role}: permission denied"
        );
        tx.rollback().await.expect("rollback");
    }
    db.close().await;
}
