//! Typed PostgREST and RPC calls for every product operation.
//!
//! Each call sends `apikey` and `Authorization: Bearer <access token>` (from the [`Session`], which
//! refreshes it when due), reads errors with [`ApiError::from_response`] and retries per the
//! [`Retrier`] only when the error says it may (and, for inserts, only when the request certainly
//! was not applied). A token the server refuses as expired is refreshed and the call sent once more.
//!
//! Rows and RPC answers are brightrun-core types, whose fields are the columns and JSON keys of
//! `migrations/*.sql`; what is sent is built here (the RPCs' named arguments, PATCH bodies).
//!
//! Lists are read in pages of [`PAGE`] rows: PostgREST silently truncates a result at `max_rows`
//! (1000 on Supabase), so a list is never assumed to fit one answer.

use std::sync::Arc;

use brightrun_core::{
    CostEstimate, CostRecord, CreateDatasetInput, CreateTrainingJobInput, Dataset, GpuType,
    HyperparameterConfig, MetricsPoint, ModelArtifact, MonthlyCostSummary, Notification, PresetId,
    TrainingJob, TrainingPreset,
};
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use brightrun_supabase::Storage;

use crate::error::{ApiError, Error, Result, Service};
use crate::retry::{Idempotency, Retrier};
use crate::secret::Secret;
use crate::session::Session;

/// Rows per page of a list: Supabase's default `max_rows`.
pub const PAGE: usize = 1000;
/// Jobs per metrics request: keeps the `or=` filter well inside any proxy's URL limit.
const JOBS_PER_METRICS_REQUEST: usize = 25;

/// Where to read one job's metrics from: its attempt, after `after_step` (all for `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsFrom {
    pub job_id: Uuid,
    pub attempt: i64,
    pub after_step: Option<i64>,
}

/// The typed API of one signed-in session. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Api {
    session: Arc<Session>,
    retrier: Arc<Retrier>,
    /// Storage with this session's token.
    storage: Storage,
}

/// What a rename/describe may change: the only dataset columns a user may write. `None` leaves a
/// field as it is; `description: Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DatasetChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Option<String>>,
}

/// Arguments of the `estimate_training_cost` RPC. The epochs are `epochs`, or the preset's
/// `num_epochs` when `epochs` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateRequest {
    pub dataset_id: Uuid,
    pub gpu_type: String,
    pub gpu_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset_id: Option<PresetId>,
}

/// Which notifications to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationFilter {
    Unread,
    All,
}

/// Arguments of the `create_training_job` RPC: the preset plus overrides (the whole
/// configuration, when cloned from a job), and the GPU choice. The server computes the GPU
/// memory, the price snapshot and the estimate itself.
#[derive(Debug, Serialize)]
struct CreateJobArgs<'a> {
    dataset_id: Uuid,
    preset_id: &'a PresetId,
    gpu_type: &'a str,
    gpu_count: u32,
    hyperparameters: &'a HyperparameterConfig,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A row of the caller's that does not exist (or is another user's): PostgREST's own code for
/// "asked for one row, got none", so [`Error::kind`] says `NotFound`.
fn not_found(what: &str, id: impl std::fmt::Display) -> Error {
    Error::Api(ApiError {
        service: Service::Rest,
        status: 404,
        code: "PGRST116".into(),
        message: format!("{what} {id} not found"),
        details: Some("The result contains 0 rows".into()),
        hint: None,
        retry_after: None,
    })
}

/// PostgREST refused the JWT itself (expired, bad signature), as opposed to what it asked for.
fn is_token_refused(error: &ApiError) -> bool {
    error.status == 401 && matches!(error.code.as_str(), "PGRST301" | "PGRST303")
}

enum Method {
    Get,
    Post,
    Patch,
}

impl Api {
    pub fn new(session: Arc<Session>) -> Self {
        Self::with_retrier(session, Retrier::default())
    }

    pub fn with_retrier(session: Arc<Session>, retrier: Retrier) -> Self {
        let project = session.project();
        let storage = Storage::new(
            session.http().clone(),
            &project.url,
            Secret::new(project.anon_key.clone()),
            session.clone(),
        );
        Self {
            session,
            retrier: Arc::new(retrier),
            storage,
        }
    }

    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Storage, authenticated as this session's user.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Sends one request (with retries) and returns the successful answer's body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        prefer: Option<&str>,
        idempotency: Idempotency,
    ) -> Result<bytes::Bytes> {
        let project = self.session.project();
        let mut url = project.endpoint("rest", path);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        let http = self.session.http();
        self.retrier
            .run(idempotency, |_| {
                let url = url.clone();
                let method = match method {
                    Method::Get => reqwest::Method::GET,
                    Method::Post => reqwest::Method::POST,
                    Method::Patch => reqwest::Method::PATCH,
                };
                async move {
                    let mut refused_once = false;
                    loop {
                        let token: Secret = self.session.access_token().await?;
                        let mut request = http
                            .request(method.clone(), url.clone())
                            .header("apikey", &project.anon_key)
                            .bearer_auth(token.expose());
                        if let Some(prefer) = prefer {
                            request = request.header("Prefer", prefer);
                        }
                        if let Some(body) = body {
                            request = request.json(body);
                        }
                        let response = request.send().await?;
                        if response.status().is_success() {
                            return Ok(response.bytes().await?);
                        }
                        let error = ApiError::from_response(Service::Rest, response).await;
                        if is_token_refused(&error) && !refused_once {
                            // Our clock said the token was good; the server's disagrees. Refresh
                            // and send once more.
                            refused_once = true;
                            self.session.reject_access_token(&token).await;
                            continue;
                        }
                        return Err(error.into());
                    }
                }
            })
            .await
    }

    async fn get<T: DeserializeOwned>(&self, table: &str, query: &[(&str, String)]) -> Result<T> {
        let body = self
            .call(
                Method::Get,
                table,
                query,
                None,
                None,
                Idempotency::Idempotent,
            )
            .await?;
        decode(table, &body)
    }

    /// Every row matching `query`, page by page (`limit`/`offset`; `query` must hold an `order`
    /// that makes pages stable).
    async fn get_all<T: DeserializeOwned>(
        &self,
        table: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>> {
        let mut rows = Vec::new();
        loop {
            let mut paged = query.to_vec();
            paged.push(("limit", PAGE.to_string()));
            paged.push(("offset", rows.len().to_string()));
            let page: Vec<T> = self.get(table, &paged).await?;
            let done = page.len() < PAGE;
            rows.extend(page);
            if done {
                return Ok(rows);
            }
        }
    }

    async fn get_one<T: DeserializeOwned>(&self, table: &str, what: &str, id: Uuid) -> Result<T> {
        let rows: Vec<T> = self
            .get(table, &[("id", format!("eq.{id}")), ("limit", "1".into())])
            .await?;
        rows.into_iter().next().ok_or_else(|| not_found(what, id))
    }

    async fn rpc<T: DeserializeOwned>(
        &self,
        function: &str,
        args: serde_json::Value,
        idempotency: Idempotency,
    ) -> Result<T> {
        let path = format!("rpc/{function}");
        let body = self
            .call(Method::Post, &path, &[], Some(&args), None, idempotency)
            .await?;
        decode(function, &body)
    }

    fn me(&self) -> (&'static str, String) {
        ("user_id", format!("eq.{}", self.session.user_id()))
    }

    // ---------------------------------------------------------------------------------------
    // Datasets
    // ---------------------------------------------------------------------------------------

    /// The caller's datasets that are not deleted, newest first.
    pub async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        self.get_all(
            "datasets",
            &[
                self.me(),
                ("deleted_at", "is.null".into()),
                ("order", "created_at.desc,id.desc".into()),
            ],
        )
        .await
    }

    /// The caller's datasets changed after `cursor` (all of them for `None`), deleted ones
    /// included so a cache can drop them; oldest change first.
    pub async fn datasets_changed_since(
        &self,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<Vec<Dataset>> {
        let mut query = vec![self.me(), ("order", "updated_at.asc,id.asc".into())];
        if let Some(cursor) = cursor {
            query.push(("updated_at", format!("gt.{}", timestamp(cursor))));
        }
        self.get_all("datasets", &query).await
    }

    pub async fn dataset(&self, id: Uuid) -> Result<Dataset> {
        self.get_one("datasets", "dataset", id).await
    }

    /// Registers a dataset (`create_dataset`); its `storage_path` is where the file goes. With
    /// a chosen `id` the call is idempotent, so it is retried like a read.
    pub async fn create_dataset(&self, input: &CreateDatasetInput) -> Result<Dataset> {
        let args = serde_json::to_value(input)
            .map_err(|e| Error::Protocol(format!("create_dataset arguments: {e}")))?;
        let idempotency = if input.id.is_some() {
            Idempotency::Idempotent
        } else {
            Idempotency::NotIdempotent
        };
        self.rpc("create_dataset", args, idempotency).await
    }

    /// The file is uploaded: hand the dataset to validation (`confirm_dataset_upload`).
    pub async fn confirm_dataset_upload(&self, id: Uuid) -> Result<Dataset> {
        self.rpc(
            "confirm_dataset_upload",
            serde_json::json!({ "dataset_id": id }),
            Idempotency::Idempotent,
        )
        .await
    }

    /// Renames or re-describes a dataset (the only columns a user may change).
    pub async fn update_dataset(&self, id: Uuid, changes: &DatasetChanges) -> Result<Dataset> {
        let body = serde_json::to_value(changes)
            .map_err(|e| Error::Protocol(format!("dataset changes: {e}")))?;
        let answer = self
            .call(
                Method::Patch,
                "datasets",
                &[("id", format!("eq.{id}"))],
                Some(&body),
                Some("return=representation"),
                Idempotency::Idempotent,
            )
            .await?;
        let rows: Vec<Dataset> = decode("datasets", &answer)?;
        // Row-level security hides other users' rows: zero rows updated means not found.
        rows.into_iter()
            .next()
            .ok_or_else(|| not_found("dataset", id))
    }

    /// Soft-deletes a dataset (`delete_dataset`); refused while an unfinished job uses it.
    pub async fn delete_dataset(&self, id: Uuid) -> Result<Dataset> {
        self.rpc(
            "delete_dataset",
            serde_json::json!({ "dataset_id": id }),
            Idempotency::Idempotent,
        )
        .await
    }

    // ---------------------------------------------------------------------------------------
    // Jobs
    // ---------------------------------------------------------------------------------------

    /// What a job would cost, computed by the server (`estimate_training_cost`).
    pub async fn estimate_training_cost(&self, request: &EstimateRequest) -> Result<CostEstimate> {
        let args = serde_json::to_value(request)
            .map_err(|e| Error::Protocol(format!("estimate arguments: {e}")))?;
        self.rpc("estimate_training_cost", args, Idempotency::Idempotent)
            .await
    }

    /// Queues a training job (`create_training_job`). The GPU type and count come from
    /// `input.gpu_config`; its memory and price are ignored, the server snapshots its own.
    pub async fn create_training_job(&self, input: &CreateTrainingJobInput) -> Result<TrainingJob> {
        let args = serde_json::to_value(CreateJobArgs {
            dataset_id: input.dataset_id,
            preset_id: &input.preset_id,
            gpu_type: &input.gpu_config.gpu_type,
            gpu_count: input.gpu_config.num_gpus,
            hyperparameters: &input.hyperparameters,
        })
        .map_err(|e| Error::Protocol(format!("create_training_job arguments: {e}")))?;
        self.rpc("create_training_job", args, Idempotency::NotIdempotent)
            .await
    }

    /// The caller's jobs, newest first.
    pub async fn list_jobs(&self) -> Result<Vec<TrainingJob>> {
        self.get_all(
            "training_jobs",
            &[self.me(), ("order", "created_at.desc,id.desc".into())],
        )
        .await
    }

    /// The caller's jobs changed after `cursor` (all for `None`), oldest change first.
    pub async fn jobs_changed_since(
        &self,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<Vec<TrainingJob>> {
        let mut query = vec![self.me(), ("order", "updated_at.asc,id.asc".into())];
        if let Some(cursor) = cursor {
            query.push(("updated_at", format!("gt.{}", timestamp(cursor))));
        }
        self.get_all("training_jobs", &query).await
    }

    pub async fn job(&self, id: Uuid) -> Result<TrainingJob> {
        self.get_one("training_jobs", "training job", id).await
    }

    /// Cancels a job (`cancel_training_job`): a queued job at once, a running one at the
    /// worker's next heartbeat. Cancelling a cancelled job is not an error.
    pub async fn cancel_training_job(&self, id: Uuid) -> Result<TrainingJob> {
        self.rpc(
            "cancel_training_job",
            serde_json::json!({ "job_id": id }),
            Idempotency::Idempotent,
        )
        .await
    }

    /// A new create request with the configuration of job `id` (same dataset, preset,
    /// hyperparameters and GPUs), to edit and submit.
    pub async fn clone_job(&self, id: Uuid) -> Result<CreateTrainingJobInput> {
        let job = self.job(id).await?;
        Ok(CreateTrainingJobInput {
            dataset_id: job.dataset_id,
            preset_id: job.preset_id,
            hyperparameters: job.hyperparameters,
            gpu_config: job.gpu_config,
        })
    }

    /// The metrics of one attempt of a job after step `after_step` (all for `None`), by step.
    /// Steps restart at 1 with every attempt (a reclaimed job trains again).
    pub async fn metrics_since(
        &self,
        job_id: Uuid,
        attempt: i64,
        after_step: Option<i64>,
    ) -> Result<Vec<MetricsPoint>> {
        let mut points: Vec<MetricsPoint> = Vec::new();
        let mut cursor = after_step;
        loop {
            let mut query = vec![
                ("job_id", format!("eq.{job_id}")),
                ("attempt", format!("eq.{attempt}")),
                ("order", "step.asc".to_owned()),
                ("limit", PAGE.to_string()),
            ];
            if let Some(step) = cursor {
                query.push(("step", format!("gt.{step}")));
            }
            let page: Vec<MetricsPoint> = self.get("metrics_points", &query).await?;
            let done = page.len() < PAGE;
            cursor = page.last().map(|p| p.step).or(cursor);
            points.extend(page);
            if done {
                return Ok(points);
            }
        }
    }

    /// The metrics of several jobs at once, each from its own attempt and step (one request per
    /// page, not one per job: a watcher following ten running jobs asks once per poll). Ordered
    /// by job, then step.
    pub async fn metrics_of_jobs(&self, from: &[MetricsFrom]) -> Result<Vec<MetricsPoint>> {
        let mut points: Vec<MetricsPoint> = Vec::new();
        for chunk in from.chunks(JOBS_PER_METRICS_REQUEST) {
            let mut wanted = chunk.to_vec();
            while !wanted.is_empty() {
                let tree = wanted
                    .iter()
                    .map(|w| {
                        let after = w
                            .after_step
                            .map(|step| format!(",step.gt.{step}"))
                            .unwrap_or_default();
                        format!(
                            "and(job_id.eq.{},attempt.eq.{}{after})",
                            w.job_id, w.attempt
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                let query = vec![
                    ("or", format!("({tree})")),
                    ("order", "job_id.asc,step.asc".to_owned()),
                    ("limit", PAGE.to_string()),
                ];
                let page: Vec<MetricsPoint> = self.get("metrics_points", &query).await?;
                let Some(last) = page.last().filter(|_| page.len() == PAGE) else {
                    points.extend(page);
                    break;
                };
                // A full page: the rows of each job are contiguous, so every job in it but the
                // last is complete; the last goes on from its last step. A job absent from the
                // page either had no rows or comes after the last: asked again, harmlessly.
                let (last_job, last_step) = (last.job_id, last.step);
                wanted
                    .retain(|w| w.job_id == last_job || !page.iter().any(|p| p.job_id == w.job_id));
                for w in &mut wanted {
                    if w.job_id == last_job {
                        w.after_step = Some(last_step);
                    }
                }
                points.extend(page);
            }
        }
        Ok(points)
    }

    // ---------------------------------------------------------------------------------------
    // Models, costs, notifications, catalogue
    // ---------------------------------------------------------------------------------------

    /// The caller's trained adapters that are not deleted, newest first.
    pub async fn list_model_artifacts(&self) -> Result<Vec<ModelArtifact>> {
        self.get_all(
            "model_artifacts",
            &[
                self.me(),
                ("deleted_at", "is.null".into()),
                ("order", "created_at.desc,id.desc".into()),
            ],
        )
        .await
    }

    pub async fn model_artifact(&self, id: Uuid) -> Result<ModelArtifact> {
        self.get_one("model_artifacts", "model", id).await
    }

    /// The adapter a job produced, if it has one yet.
    pub async fn model_artifact_for_job(&self, job_id: Uuid) -> Result<Option<ModelArtifact>> {
        let rows: Vec<ModelArtifact> = self
            .get(
                "model_artifacts",
                &[("job_id", format!("eq.{job_id}")), ("limit", "1".into())],
            )
            .await?;
        Ok(rows.into_iter().next())
    }

    /// The caller's cost records, newest first; of one billing month when `month` (any day in
    /// it) is given.
    pub async fn cost_records(&self, month: Option<NaiveDate>) -> Result<Vec<CostRecord>> {
        let mut query = vec![self.me(), ("order", "recorded_at.desc,id.desc".into())];
        if let Some(month) = month {
            let first = month.with_day0(0).unwrap_or(month);
            query.push(("billing_period", format!("eq.{first}")));
        }
        self.get_all("cost_records", &query).await
    }

    /// Totals for one month (`None`: the current month, by the server's clock).
    pub async fn monthly_cost_summary(
        &self,
        month: Option<NaiveDate>,
    ) -> Result<MonthlyCostSummary> {
        self.rpc(
            "monthly_cost_summary",
            serde_json::json!({ "month": month }),
            Idempotency::Idempotent,
        )
        .await
    }

    /// The caller's notifications, newest first.
    pub async fn notifications(&self, filter: NotificationFilter) -> Result<Vec<Notification>> {
        let mut query = vec![self.me(), ("order", "created_at.desc,id.desc".into())];
        if filter == NotificationFilter::Unread {
            query.push(("read", "is.false".into()));
        }
        self.get_all("notifications", &query).await
    }

    /// Marks notifications read: those in `ids`, or all for `None`. Returns how many changed.
    pub async fn mark_notifications_read(&self, ids: Option<&[Uuid]>) -> Result<u32> {
        self.rpc(
            "mark_notifications_read",
            serde_json::json!({ "ids": ids }),
            Idempotency::Idempotent,
        )
        .await
    }

    /// The GPU types on offer, in catalogue order.
    pub async fn gpu_types(&self) -> Result<Vec<GpuType>> {
        self.get_all("gpu_types", &[("order", "sort_order.asc,id.asc".into())])
            .await
    }

    /// The hyperparameter presets on offer, in catalogue order.
    pub async fn presets(&self) -> Result<Vec<TrainingPreset>> {
        self.get_all(
            "training_presets",
            &[("order", "sort_order.asc,id.asc".into())],
        )
        .await
    }
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_changes_send_only_what_changes() {
        let rename = DatasetChanges {
            name: Some("new".into()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&rename).ok(),
            Some(serde_json::json!({ "name": "new" })),
            "an unchanged description is not sent (it would be overwritten)"
        );
        let clear = DatasetChanges {
            description: Some(None),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&clear).ok(),
            Some(serde_json::json!({ "description": null })),
            "Some(None) clears the description"
        );
    }

    #[test]
    fn cursors_are_utc_with_microseconds() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456+01:00")
            .expect("parses")
            .with_timezone(&Utc);
        assert_eq!(
            timestamp(at),
            "2026-11-22T09:00:00.123456Z",
            "PostgreSQL keeps microseconds; a coarser cursor would re-read or skip rows"
        );
    }

    #[test]
    fn not_found_reads_as_not_found() {
        assert_eq!(
            not_found("dataset", Uuid::nil()).code(),
            crate::error::ErrorCode::NotFound,
            "a missing row is NotFound for the UI"
        );
    }
}
