//! Rows and objects as the server side leaves them, for tests of the crates that talk to it:
//! datasets the worker has validated, jobs and adapters it finished, objects it stored. Written
//! with the superuser pool or the service_role key, never as a user.

use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::TestStack;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A ready dataset's size, as the worker's validation wrote it.
#[derive(Debug, Clone)]
pub struct DatasetShape {
    pub name: String,
    pub training_tokens: i64,
    pub training_pairs: i64,
    pub validation_pairs: i64,
}

impl Default for DatasetShape {
    /// 90 training and 10 validation pairs, 180 000 training tokens.
    fn default() -> Self {
        Self {
            name: "ready".into(),
            training_tokens: 180_000,
            training_pairs: 90,
            validation_pairs: 10,
        }
    }
}

/// A dataset of `user` that passed validation: ready for training. (Its file is not stored;
/// tests that train use the worker's own helpers, which upload one.)
pub async fn ready_dataset(db: &PgPool, user: Uuid, shape: &DatasetShape) -> Uuid {
    sqlx::query_scalar(
        "insert into public.datasets (user_id, name, format, status, storage_path, file_name,
           file_size, total_tokens, training_tokens, total_training_pairs, total_validation_pairs,
           training_ready, validated_at)
         values ($1, $2, 'brightrun_lora_v4', 'ready',
           $1::text || '/' || gen_random_uuid() || '/train.jsonl', 'train.jsonl', 4096,
           $3 + $3 / 9, $3, $4, $5, true, now())
         returning id",
    )
    .bind(user)
    .bind(&shape.name)
    .bind(shape.training_tokens)
    .bind(shape.training_pairs)
    .bind(shape.validation_pairs)
    .fetch_one(db)
    .await
    .expect("insert a ready dataset")
}

/// The user's dataset rows, oldest first: `(id, status, storage_path)`.
pub async fn dataset_rows(db: &PgPool, user: Uuid) -> Vec<(Uuid, String, String)> {
    sqlx::query_as(
        "select id, status::text, storage_path from public.datasets where user_id = $1 order by created_at",
    )
    .bind(user)
    .fetch_all(db)
    .await
    .expect("datasets query")
}

/// A dataset, a completed job and a `model_artifacts` row whose `artifacts` is `artifacts`, as
/// the worker writes them. Returns `(job id, artifact id)`.
pub async fn artifact_row(db: &PgPool, user: Uuid, artifacts: serde_json::Value) -> (Uuid, Uuid) {
    let dataset = ready_dataset(db, user, &DatasetShape::default()).await;
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
    .bind(user)
    .bind(dataset)
    .fetch_one(db)
    .await
    .expect("insert a completed job");
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
             'dataset_name', 'ready'),
           $4)
         returning id",
    )
    .bind(user)
    .bind(job)
    .bind(dataset)
    .bind(artifacts)
    .fetch_one(db)
    .await
    .expect("insert an artifact");
    (job, artifact)
}

impl TestStack {
    /// An object's bytes, read with the service_role key.
    pub async fn object(&self, bucket: &str, path: &str) -> Vec<u8> {
        let response = reqwest::Client::new()
            .get(format!(
                "{}/storage/v1/object/authenticated/{bucket}/{path}",
                self.url
            ))
            .header("apikey", &self.service_role_key)
            .bearer_auth(&self.service_role_key)
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

    /// Stores `bytes` at `bucket/path` with the service_role key, replacing what is there.
    pub async fn put_object(&self, bucket: &str, path: &str, bytes: Vec<u8>, content_type: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/object/{bucket}/{path}", self.url))
            .header("apikey", &self.service_role_key)
            .bearer_auth(&self.service_role_key)
            .header("content-type", content_type)
            .header("x-upsert", "true")
            .body(bytes)
            .send()
            .await
            .expect("upload request");
        assert!(
            response.status().is_success(),
            "service_role upload to {bucket}/{path} works: {}",
            response.status()
        );
    }
}
