//! The job watcher (ARCHITECTURE §6): polls PostgREST incrementally (`updated_at` cursor, metrics
//! by `step` within the job's current attempt), fast while a job runs and the window is visible,
//! slower in the background, backing off when offline; emits typed [`WatchEvent`]s; raises one
//! [`JobAlert`] per terminal transition (completed, failed), deduplicated by `job:{id}:{status}`
//! in the local database so a restart never repeats one, and none for a job the user cancelled.
//!
//! Polling sits behind [`JobFeed`] so Supabase Realtime can replace it without touching the rest.
//! The watcher raises no native notification itself: the shell turns a [`JobAlert`] into one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use brightrun_core::{JobStatus, MetricsPoint, TrainingJob};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use rand::RngCore;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::api::{Api, MetricsFrom};
use crate::error::{ErrorCode, Result};
use crate::local::{LocalDb, alert_key};
use crate::retry::RetryPolicy;

/// Where job changes come from. Polling PostgREST today ([`Api`]); Realtime later.
pub trait JobFeed: Send + Sync {
    /// The caller's jobs with `updated_at` after `cursor` (all for `None`), oldest change first.
    fn jobs_changed_since(
        &self,
        cursor: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, Result<Vec<TrainingJob>>>;
    /// The metrics of several jobs, each of one attempt after a step (all for `None`), by job
    /// and step. Steps restart at 1 with every attempt, so a step cursor means something only
    /// within one.
    fn metrics_of_jobs<'a>(
        &'a self,
        from: &'a [MetricsFrom],
    ) -> BoxFuture<'a, Result<Vec<MetricsPoint>>>;
    /// One of the caller's datasets (to name a job in an alert when the cache does not know it).
    fn dataset(&self, id: Uuid) -> BoxFuture<'_, Result<brightrun_core::Dataset>>;
}

impl JobFeed for Api {
    fn jobs_changed_since(
        &self,
        cursor: Option<DateTime<Utc>>,
    ) -> BoxFuture<'_, Result<Vec<TrainingJob>>> {
        Box::pin(Api::jobs_changed_since(self, cursor))
    }

    fn metrics_of_jobs<'a>(
        &'a self,
        from: &'a [MetricsFrom],
    ) -> BoxFuture<'a, Result<Vec<MetricsPoint>>> {
        Box::pin(Api::metrics_of_jobs(self, from))
    }

    fn dataset(&self, id: Uuid) -> BoxFuture<'_, Result<brightrun_core::Dataset>> {
        Box::pin(Api::dataset(self, id))
    }
}

/// Whether the user is looking: the window is visible (or the CLI is watching in a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Foreground,
    Background,
}

/// A job reached a terminal state the user wants to hear about. The text names the job by its
/// dataset (its short id when the dataset is not known here), says what happened, the final
/// loss and cost or what went wrong, and what to do next; never a token or a local path.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct JobAlert {
    pub job_id: Uuid,
    pub status: JobStatus,
    /// The dataset's name, when known.
    pub dataset: Option<String>,
    pub title: String,
    pub body: String,
}

impl JobAlert {
    /// The alert for `job`, whose dataset is named `dataset` (when known).
    pub fn for_job(job: &TrainingJob, dataset: Option<&str>) -> Self {
        let short = job.id.simple().to_string()[..8].to_owned();
        let name = dataset
            .map(|d| clip(d, 60))
            .unwrap_or_else(|| format!("job {short}"));
        let (title, body) = match job.status {
            JobStatus::Completed => {
                let mut facts = Vec::new();
                if let Some(loss) = job.current_metrics.as_ref().map(|m| m.training_loss) {
                    facts.push(format!("final loss {loss:.3}"));
                }
                if let Some(cost) = job.final_cost {
                    facts.push(format!("${cost:.2}"));
                }
                let facts = if facts.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", facts.join(", "))
                };
                (
                    format!("Training complete: {name}"),
                    format!(
                        "The adapter of job {short} is ready{facts}. Download it, or open the job."
                    ),
                )
            }
            _ => {
                let why = job
                    .error_message
                    .as_deref()
                    .map(|m| clip(&scrub(m), 160))
                    .unwrap_or_else(|| "the worker gave no reason".to_owned());
                (
                    format!("Training failed: {name}"),
                    format!("Job {short}: {why}. Open it to see why; clone it to try again."),
                )
            }
        };
        Self {
            job_id: job.id,
            status: job.status.clone(),
            dataset: dataset.map(str::to_owned),
            title,
            body,
        }
    }
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    let text = text.trim().trim_end_matches('.');
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// A server's error text made fit for a notification: local paths and anything shaped like a
/// token are replaced by a word saying what was there.
fn scrub(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            let bare = word.trim_matches(|c: char| "\"'()[]{},;:".contains(c));
            if bare.starts_with('/') && bare.len() > 1 || bare.starts_with("~/") {
                word.replace(bare, "[path]")
            } else if bare.starts_with("eyJ") && bare.len() > 20
                || bare.len() >= 40
                    && bare
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                word.replace(bare, "[secret]")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the watcher reports (as JSON: `{"event": "job_updated", ...}`). Within one poll: new
/// metrics, then alerts, then the job rows that changed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WatchEvent {
    /// A job is new or changed (status, progress, cost, ...).
    JobUpdated { job: Box<TrainingJob> },
    /// New metrics points of one attempt of a job, by step. When `attempt` differs from the one
    /// of this job's previous `Metrics`, the job was reclaimed and trains again from step 1:
    /// these points start a new curve that replaces the earlier attempt's.
    Metrics {
        job_id: Uuid,
        attempt: i64,
        points: Vec<MetricsPoint>,
    },
    /// Raise a notification (already deduplicated).
    Alert { alert: JobAlert },
    /// A poll failed for a passing reason; the next one is in `retry_in`.
    Offline {
        #[serde(rename = "retry_in_secs", serialize_with = "seconds")]
        #[cfg_attr(feature = "specta", specta(type = f64))]
        retry_in: Duration,
    },
    /// A poll succeeded after one or more failures.
    Online,
    /// The session ended (signed out, refresh token refused): the watcher stopped.
    SignedOut,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// How often to poll. The defaults: every 2 s while a job is active and the window is visible
/// (a loss curve that lags by more feels stuck), 15 s in the background, 10 s / 120 s when no job
/// is active (only jobs started elsewhere, e.g. from the CLI, can appear: one small request finds
/// them while they run, so their end is announced within the fast cadence); offline, the
/// `offline` backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub active_foreground: Duration,
    pub active_background: Duration,
    pub idle_foreground: Duration,
    pub idle_background: Duration,
    /// Backoff between failed polls (its `max_retries` and `total_timeout` are not used: the
    /// watcher never gives up on a network).
    pub offline: RetryPolicy,
}

impl Default for Cadence {
    fn default() -> Self {
        Self {
            active_foreground: Duration::from_secs(2),
            active_background: Duration::from_secs(15),
            idle_foreground: Duration::from_secs(10),
            idle_background: Duration::from_secs(120),
            offline: RetryPolicy {
                base: Duration::from_secs(2),
                max_backoff: Duration::from_secs(60),
                ..RetryPolicy::default()
            },
        }
    }
}

impl Cadence {
    /// The wait before the next poll. `failures` counts consecutive failed polls.
    pub fn next_delay(
        &self,
        any_active: bool,
        visibility: Visibility,
        failures: u32,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Duration {
        if failures > 0 {
            // Never below the normal cadence: backing off must not poll faster than online.
            let floor = self.active_foreground;
            return self.offline.backoff(failures - 1, None, rng).max(floor);
        }
        match (any_active, visibility) {
            (true, Visibility::Foreground) => self.active_foreground,
            (true, Visibility::Background) => self.active_background,
            (false, Visibility::Foreground) => self.idle_foreground,
            (false, Visibility::Background) => self.idle_background,
        }
    }
}

/// Rows whose `updated_at` is up to this much older than the cursor are read again: `updated_at`
/// is the writing transaction's start time, so a transaction that started before the last poll
/// and committed after it would otherwise be skipped. Versions already seen are filtered out.
const CURSOR_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

fn is_active(status: &JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Queued | JobStatus::Initializing | JobStatus::Running
    )
}

/// What the watcher knows of one job's row.
#[derive(Debug, Clone)]
struct SeenJob {
    /// `updated_at`: the row's version.
    version: DateTime<Utc>,
    status: JobStatus,
    /// [`TrainingJob::metrics_attempt`]: whose metrics are the job's current curve.
    attempt: i64,
}

impl SeenJob {
    fn of(job: &TrainingJob) -> Self {
        Self {
            version: job.updated_at,
            status: job.status.clone(),
            attempt: job.metrics_attempt(),
        }
    }
}

/// How far one job's metrics were delivered: the attempt followed and its last step delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MetricsCursor {
    attempt: i64,
    step: Option<i64>,
}

/// Watches the jobs of one user.
pub struct JobWatcher {
    feed: Arc<dyn JobFeed>,
    db: LocalDb,
    user_id: Uuid,
    /// The newest `updated_at` seen (persisted through the job cache).
    cursor: Option<DateTime<Utc>>,
    /// Every job seen.
    seen: HashMap<Uuid, SeenJob>,
    /// Per job whose metrics are followed, how far they were delivered.
    metrics: HashMap<Uuid, MetricsCursor>,
    /// Jobs the local cache holds as ended after a watcher last polled here: a list refreshed
    /// meanwhile (`brightrun jobs list` while the app was closed) put them in the cache, but no
    /// watcher announced them. Checked against the alert claims at the first poll.
    backlog: Vec<TrainingJob>,
    /// When this watcher last recorded that it polled.
    marked_at: Option<DateTime<Utc>>,
}

/// How often a watcher records that it polled (being behind is safe: claims deduplicate).
const MARK_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

impl JobWatcher {
    /// A watcher that resumes from the local database: jobs cached by an earlier run are known,
    /// so only changes since then are reported.
    pub async fn new(feed: Arc<dyn JobFeed>, db: LocalDb, user_id: Uuid) -> Result<Self> {
        let cached = db.cached_jobs(user_id).await?;
        let seen = cached
            .items
            .iter()
            .map(|j| (j.id, SeenJob::of(j)))
            .collect();
        let cursor = db.jobs_cursor(user_id).await?;
        let watched = db.watched_at(user_id).await?;
        let backlog = match watched {
            Some(watched) => cached
                .items
                .into_iter()
                .filter(|j| matches!(j.status, JobStatus::Completed | JobStatus::Failed))
                .filter(|j| {
                    j.completed_at
                        .is_none_or(|at| at >= watched - CURSOR_OVERLAP)
                })
                .collect(),
            // Never watched here: what the cache holds is history, not news.
            None => Vec::new(),
        };
        Ok(Self {
            feed,
            db,
            user_id,
            cursor,
            seen,
            metrics: HashMap::new(),
            backlog,
            marked_at: None,
        })
    }

    /// True while any known job is queued or running.
    pub fn any_active(&self) -> bool {
        self.seen.values().any(|job| is_active(&job.status))
    }

    /// One poll: changed jobs, new metrics of running jobs, alerts for terminal transitions.
    pub async fn poll_once(&mut self) -> Result<Vec<WatchEvent>> {
        let first_sync = self.cursor.is_none();
        let since = self.cursor.map(|c| c - CURSOR_OVERLAP);
        let changed = self.feed.jobs_changed_since(since).await?;
        let fetched_at = Utc::now();
        // Rows read again through the overlap are versions already reported.
        let fresh: Vec<TrainingJob> = changed
            .into_iter()
            .filter(|job| {
                self.seen
                    .get(&job.id)
                    .is_none_or(|seen| seen.version < job.updated_at)
            })
            .collect();

        // Metrics: every active job (the worker may add points without touching the job row),
        // and a job that just ended, for its last points. Jobs that had ended before the first
        // sync on this machine are history. Each job's metrics are those of its current attempt.
        let mut targets: Vec<(Uuid, i64)> = self
            .seen
            .iter()
            .filter(|(id, seen)| is_active(&seen.status) && !fresh.iter().any(|j| j.id == **id))
            .map(|(id, seen)| (*id, seen.attempt))
            .collect();
        targets.extend(
            fresh
                .iter()
                .filter(|j| {
                    is_active(&j.status)
                        || (j.status.is_terminal()
                            && (!first_sync || self.metrics.contains_key(&j.id)))
                })
                .map(|j| (j.id, j.metrics_attempt())),
        );
        // A new attempt (the job was reclaimed) trains again from step 1: its points are read
        // from the start, whatever step the previous attempt had reached.
        let from: Vec<MetricsFrom> = targets
            .iter()
            .map(|&(job_id, attempt)| MetricsFrom {
                job_id,
                attempt,
                after_step: self
                    .metrics
                    .get(&job_id)
                    .filter(|cursor| cursor.attempt == attempt)
                    .and_then(|cursor| cursor.step),
            })
            .collect();
        // One request for every job's new points.
        let mut by_job: HashMap<Uuid, Vec<MetricsPoint>> = HashMap::new();
        if !from.is_empty() {
            for point in self.feed.metrics_of_jobs(&from).await? {
                by_job.entry(point.job_id).or_default().push(point);
            }
        }
        let mut metrics = Vec::new();
        // Applied only once the whole poll has succeeded: a failure later in it must not skip
        // the points read here, which are then never delivered.
        let mut advanced = Vec::new();
        for wanted in from {
            let points = by_job.remove(&wanted.job_id).unwrap_or_default();
            let step = points.last().map(|p| p.step).or(wanted.after_step);
            advanced.push((
                wanted.job_id,
                MetricsCursor {
                    attempt: wanted.attempt,
                    step,
                },
            ));
            if !points.is_empty() {
                metrics.push(WatchEvent::Metrics {
                    job_id: wanted.job_id,
                    attempt: wanted.attempt,
                    points,
                });
            }
        }

        // A poll's metrics and alerts come before the job rows that end it, so whoever stops
        // listening when a job reaches its final state has had its last points and its alert.
        let mut events = metrics;
        // Cancelled is not here: the user did it and needs no alert.
        let backlog = std::mem::take(&mut self.backlog);
        let ended: Vec<&TrainingJob> = fresh
            .iter()
            .filter(|job| matches!(job.status, JobStatus::Completed | JobStatus::Failed))
            .chain(
                backlog
                    .iter()
                    .filter(|b| !fresh.iter().any(|j| j.id == b.id)),
            )
            .collect();
        let keys: Vec<String> = ended
            .iter()
            .map(|job| alert_key(job.id, &job.status))
            .collect();
        // The cache and the alert claims are written together, before anything advances in
        // memory: if the write fails, the next poll repeats the same window and raises the same
        // alerts, instead of finding them claimed and never shown.
        let claimed = self
            .db
            .merge_jobs_claiming_alerts(self.user_id, &fresh, &keys, fetched_at)
            .await?;
        // Alerts name the job by its dataset, from the local cache of the user's datasets.
        // A dataset made elsewhere (the CLI) since the list was cached is asked for; an alert
        // without the name (offline) still goes out, with the job's short id.
        let mut names: HashMap<Uuid, String> = if ended.is_empty() || first_sync {
            HashMap::new()
        } else {
            self.db
                .cached_datasets(self.user_id)
                .await
                .map(|cached| cached.items.into_iter().map(|d| (d.id, d.name)).collect())
                .unwrap_or_default()
        };
        if !first_sync {
            for job in &ended {
                if !names.contains_key(&job.dataset_id)
                    && let Ok(dataset) = self.feed.dataset(job.dataset_id).await
                {
                    names.insert(dataset.id, dataset.name);
                }
            }
        }
        for (job, claimed) in ended.into_iter().zip(claimed) {
            // Claimed on the first sync too, silently: jobs that ended before the app was ever
            // opened here are not news, and must not become news later.
            if claimed && !first_sync {
                let dataset = names.get(&job.dataset_id).map(String::as_str);
                events.push(WatchEvent::Alert {
                    alert: JobAlert::for_job(job, dataset),
                });
            }
        }
        events.extend(fresh.iter().map(|job| WatchEvent::JobUpdated {
            job: Box::new(job.clone()),
        }));
        self.metrics.extend(advanced);
        for job in fresh {
            if job.status.is_terminal() {
                self.metrics.remove(&job.id);
            }
            if self.cursor.is_none_or(|c| job.updated_at > c) {
                self.cursor = Some(job.updated_at);
            }
            self.seen.insert(job.id, SeenJob::of(&job));
        }
        if self.cursor.is_none() {
            // No jobs at all yet: from now on everything is news.
            self.cursor = Some(DateTime::<Utc>::UNIX_EPOCH);
        }
        if self
            .marked_at
            .is_none_or(|at| fetched_at - at >= MARK_EVERY)
        {
            self.db.mark_watched(self.user_id, fetched_at).await?;
            self.marked_at = Some(fetched_at);
        }
        Ok(events)
    }

    /// Polls until `events` is closed or the session ends, at the [`Cadence`] for the current
    /// visibility; a visibility change wakes it at once.
    pub async fn run(
        mut self,
        cadence: Cadence,
        mut visibility: watch::Receiver<Visibility>,
        events: mpsc::Sender<WatchEvent>,
        mut rng: impl RngCore + Send,
    ) {
        let mut failures = 0u32;
        loop {
            let outcome = self.poll_once().await;
            let mut to_send = Vec::new();
            match outcome {
                Ok(batch) => {
                    if failures > 0 {
                        to_send.push(WatchEvent::Online);
                    }
                    failures = 0;
                    to_send.extend(batch);
                }
                // Includes Error::SignedOut.
                Err(error) if error.code() == ErrorCode::AuthExpired => {
                    let _ = events.send(WatchEvent::SignedOut).await;
                    return;
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::debug!(code = error.code().as_str(), failures, "job poll failed");
                }
            }
            let active = self.any_active();
            let delay = cadence.next_delay(active, *visibility.borrow(), failures, &mut rng);
            tracing::debug!(
                events = to_send.len(),
                active,
                visibility = ?*visibility.borrow(),
                next_in = ?delay,
                "jobs polled"
            );
            if failures > 0 {
                to_send.push(WatchEvent::Offline { retry_in: delay });
            }
            for event in to_send {
                if events.send(event).await.is_err() {
                    return; // nobody listens any more
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                changed = visibility.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = events.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::mock::StepRng;

    use super::*;

    #[test]
    fn alert_text_hides_paths_and_tokens_and_keeps_words() {
        let text = scrub(
            "cannot read /var/lib/brightrun/worker/jobs/x/adapter.bin (token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc) after 3 tries",
        );
        assert_eq!(text, "cannot read [path] (token [secret]) after 3 tries");
        assert_eq!(scrub("CUDA out of memory"), "CUDA out of memory");
        assert_eq!(clip(&"x".repeat(300), 10).chars().count(), 10);
        assert_eq!(clip("Done.", 10), "Done", "no doubled full stop");
    }

    #[test]
    fn cadence_is_fast_when_it_matters_and_backs_off_offline() {
        let c = Cadence::default();
        let mut rng = StepRng::new(u64::MAX, 0);
        assert_eq!(
            c.next_delay(true, Visibility::Foreground, 0, &mut rng),
            Duration::from_secs(2),
            "a running job in view: fast"
        );
        assert_eq!(
            c.next_delay(true, Visibility::Background, 0, &mut rng),
            Duration::from_secs(15),
            "in the background: slower"
        );
        assert_eq!(
            c.next_delay(false, Visibility::Background, 0, &mut rng),
            Duration::from_secs(120),
            "nothing running, not looking: slowest"
        );
        let offline: Vec<_> = (1..=8)
            .map(|f| c.next_delay(true, Visibility::Foreground, f, &mut rng))
            .collect();
        assert!(
            offline.windows(2).all(|w| w[0] <= w[1]),
            "offline waits grow: {offline:?}"
        );
        assert!(
            offline.iter().all(|d| *d <= Duration::from_secs(60)),
            "and stay capped: {offline:?}"
        );
        let mut zero = StepRng::new(0, 0);
        assert_eq!(
            c.next_delay(true, Visibility::Foreground, 1, &mut zero),
            Duration::from_secs(2),
            "jitter never polls faster than the online cadence"
        );
    }
}
