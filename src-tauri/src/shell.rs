//! The shell's state: the project's [`App`] once a project is chosen, the sandbox it started,
//! and the transfers the window may cancel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use brightrun_client::app::curves::Curves;
use brightrun_client::app::jobs::{self, WatchJobs};
use brightrun_client::app::{App, AppConfig, CancellationToken};
use brightrun_client::app::{costs, prefs};
use brightrun_client::watch::{Visibility, WatchEvent};
use brightrun_client::{BuildChannel, Error, Result};
use futures::{FutureExt as _, StreamExt as _};

use crate::events::Notice;
use crate::project::{Choice, Settings};
use crate::sandbox::Sandbox;

/// Debug and release builds keep their sessions apart (as the CLI's do).
pub fn channel() -> BuildChannel {
    if cfg!(debug_assertions) {
        BuildChannel::Dev
    } else {
        BuildChannel::Release
    }
}

/// Where [`Notice`]s go (the window's events).
pub type Notify = Arc<dyn Fn(Notice) + Send + Sync>;

pub struct Shell {
    settings: Settings,
    notify: Notify,
    app: tokio::sync::RwLock<Option<Arc<App>>>,
    sandbox: Mutex<Option<Sandbox>>,
    transfers: Mutex<HashMap<String, CancellationToken>>,
    curves: Arc<Curves>,
    /// The job watcher of the signed-in user, while one runs.
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    visibility: tokio::sync::watch::Sender<Visibility>,
    /// The desktop shows our tray (set once at start).
    tray: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shell {
    pub fn new(settings: Settings, notify: Notify) -> Self {
        Self {
            settings,
            notify,
            app: tokio::sync::RwLock::new(None),
            sandbox: Mutex::new(None),
            transfers: Mutex::new(HashMap::new()),
            curves: Arc::new(Curves::default()),
            watcher: Mutex::new(None),
            visibility: tokio::sync::watch::Sender::new(Visibility::Foreground),
            tray: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Tells the window.
    pub fn notify(&self, notice: Notice) {
        (self.notify)(notice);
    }

    /// For tasks that outlive a command.
    pub fn notifier(&self) -> Notify {
        self.notify.clone()
    }

    /// The project's app layer; `not_configured` until a project is chosen (first run).
    pub async fn app(&self) -> Result<Arc<App>> {
        if let Some(app) = self.app.read().await.as_ref() {
            return Ok(app.clone());
        }
        let mut slot = self.app.write().await;
        if let Some(app) = slot.as_ref() {
            return Ok(app.clone());
        }
        let choice = self.settings.effective_choice().ok_or_else(|| {
            Error::NotConfigured("choose the local sandbox or a Supabase project".into())
        })?;
        if choice.sandbox {
            self.ensure_sandbox().await?;
        }
        let config = AppConfig::resolve(
            Default::default(),
            self.settings.data_dir_override(),
            choice.project(),
            channel(),
        )?;
        let app = Arc::new(App::open(config).await?);
        *slot = Some(app.clone());
        Ok(app)
    }

    /// Opens the project's local database and restores the keychain's session while the window
    /// is still loading, so that its first questions (who is signed in, the cached lists) find
    /// them ready. Failures are left for those questions to report.
    pub async fn warm_up(&self) {
        if let Ok(app) = self.app().await {
            crate::startup_step("local database open");
            let _ = app.session().await;
            crate::startup_step("session restored");
        }
    }

    /// Whether the app has a tray (without one, closing the window quits).
    pub fn has_tray(&self) -> bool {
        self.tray.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_tray(&self, present: bool) {
        self.tray
            .store(present, std::sync::atomic::Ordering::Relaxed);
    }

    /// The training curves of the jobs the window has shown.
    pub fn curves(&self) -> &Curves {
        &self.curves
    }

    /// Watches the signed-in user's jobs (once: a second call while it runs does nothing):
    /// job changes, new metrics (kept in [`Curves`]), outcomes and the connection become
    /// events. It stops when the session ends.
    pub async fn watch(&self) -> Result<()> {
        if lock(&self.watcher)
            .as_ref()
            .is_some_and(|t| !t.is_finished())
        {
            return Ok(());
        }
        let app = self.app().await?;
        let mut stream = jobs::watch(&app, WatchJobs::default()).await?;
        let notify = self.notify.clone();
        let curves = self.curves.clone();
        let mut visibility = self.visibility.subscribe();
        // Whatever was set before watching began (an app started in the tray) holds from the
        // first poll: `changed()` reports only what comes after.
        stream.set_visibility(*visibility.borrow_and_update());
        let task = tokio::spawn(async move {
            // What ended before watching began (while the app was closed) is one notification.
            let started = chrono::Utc::now();
            loop {
                let event = tokio::select! {
                    event = stream.next() => event,
                    Ok(()) = visibility.changed() => {
                        stream.set_visibility(*visibility.borrow_and_update());
                        continue;
                    }
                };
                let Some(event) = event else { break };
                // One poll's events arrive together: outcomes that happened while the app was
                // closed become one grouped notification, not a burst.
                let mut batch = vec![event];
                while let Some(Some(more)) = stream.next().now_or_never() {
                    batch.push(more);
                }
                // And go to the window as one event of each kind: ten running jobs cost the
                // window two events per poll, not twenty.
                let mut alerts = Vec::new();
                let mut changed = Vec::new();
                let mut drawn = Vec::new();
                let mut ended_before = std::collections::HashSet::new();
                for event in batch {
                    if let WatchEvent::JobUpdated { job } = &event
                        && job.completed_at.is_some_and(|at| at < started)
                    {
                        ended_before.insert(job.id);
                    }
                    if curves.apply(&event)
                        && let WatchEvent::Metrics { job_id, .. } = &event
                    {
                        drawn.push(*job_id);
                    }
                    match event {
                        WatchEvent::JobUpdated { job } => changed.push(*job),
                        WatchEvent::Alert { alert } => alerts.push(alert),
                        WatchEvent::Offline { retry_in } => notify(Notice::Connection {
                            online: false,
                            retry_in_secs: Some(retry_in.as_secs_f64()),
                        }),
                        WatchEvent::Online => notify(Notice::Connection {
                            online: true,
                            retry_in_secs: None,
                        }),
                        WatchEvent::SignedOut => {
                            curves.clear();
                            return;
                        }
                        WatchEvent::Metrics { .. } => {}
                    }
                }
                // Metrics first: whoever stops listening at a job's final row has its points.
                if !drawn.is_empty() {
                    notify(Notice::Metrics(drawn));
                }
                if !changed.is_empty() {
                    notify(Notice::Jobs(changed));
                }
                if !alerts.is_empty() {
                    let prefs = prefs::get(&app).await.unwrap_or_default();
                    let completed = alerts
                        .iter()
                        .any(|a| a.status == brightrun_core::JobStatus::Completed);
                    let (backlog, live): (Vec<_>, Vec<_>) = alerts
                        .into_iter()
                        .partition(|a| ended_before.contains(&a.job_id));
                    for (alerts, grouped) in [(backlog, true), (live, false)] {
                        if !alerts.is_empty() {
                            notify(Notice::Finished {
                                alerts,
                                native: prefs.notifications,
                                grouped,
                            });
                        }
                    }
                    if completed && prefs.notifications {
                        budget_alert(&app, &notify).await;
                    }
                }
            }
            curves.clear();
        });
        *lock(&self.watcher) = Some(task);
        Ok(())
    }

    /// Stops watching (signed out, another project).
    pub fn stop_watching(&self) {
        if let Some(task) = lock(&self.watcher).take() {
            task.abort();
        }
        self.curves.clear();
    }

    /// The window was shown or hidden: the watcher polls at that cadence.
    pub fn set_visibility(&self, visibility: Visibility) {
        tracing::debug!(?visibility, "window visibility");
        self.visibility.send_replace(visibility);
    }

    /// Polls now (a job was just created or cancelled here): the watcher would otherwise wait
    /// out its idle interval and could miss a short job's run entirely. A visibility message,
    /// even an unchanged one, wakes it.
    pub fn poll_now(&self) {
        self.visibility.send_modify(|_| {});
    }

    /// Uses `choice` from now on (and at the next start).
    pub async fn choose(&self, choice: Choice) -> Result<()> {
        self.stop_watching();
        self.settings.save(&choice)?;
        *self.app.write().await = None;
        Ok(())
    }

    /// The local stack this app uses: one already running (its stack.json answers), or one it
    /// starts now with a worker, stopped when the app quits.
    async fn ensure_sandbox(&self) -> Result<()> {
        if lock(&self.sandbox).is_some() || crate::sandbox::running().await {
            return Ok(());
        }
        let started = tokio::task::spawn_blocking(Sandbox::start)
            .await
            .map_err(|e| Error::Io(std::io::Error::other(e)))??;
        *lock(&self.sandbox) = Some(started);
        Ok(())
    }

    /// A new cancellable transfer, known to the window by `id`.
    pub fn begin(&self, id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        lock(&self.transfers).insert(id.to_owned(), token.clone());
        token
    }

    pub fn end(&self, id: &str) {
        lock(&self.transfers).remove(id);
    }

    /// Cancels the transfer `id`; false when there is none.
    pub fn cancel(&self, id: &str) -> bool {
        lock(&self.transfers)
            .get(id)
            .map(CancellationToken::cancel)
            .is_some()
    }

    /// Stops what this app started (the sandbox); transfers resume at the next start.
    pub fn shut_down(&self) {
        self.stop_watching();
        for token in lock(&self.transfers).values() {
            token.cancel();
        }
        if let Some(sandbox) = lock(&self.sandbox).take() {
            sandbox.stop();
        }
    }
}

/// Once a month, when the month's cost crosses the budget's alert threshold (the claim is kept
/// in the local database, so a restart does not repeat it).
async fn budget_alert(app: &App, notify: &Notify) {
    let Ok(report) = costs::month(app, costs::CostMonth::default()).await else {
        return;
    };
    let Some(budget) = report.budget.filter(|b| b.alert) else {
        return;
    };
    let key = format!("budget:{}", report.summary.month);
    if !app
        .db()
        .claim_alert(&key, chrono::Utc::now())
        .await
        .unwrap_or(false)
    {
        return;
    }
    let used = (budget.used * 100.0).round();
    notify(Notice::Desktop(crate::alerts::Alert {
        summary: format!("{used}% of this month's budget spent"),
        body: format!(
            "${:.2} of ${:.2}. Open Costs to see where it went.",
            budget.spent, budget.budget
        ),
        open: "#/costs".to_owned(),
        download: None,
    }));
}
