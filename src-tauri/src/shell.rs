//! The shell's state: the project's [`App`] once a project is chosen, the sandbox it started,
//! and the transfers the window may cancel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use brightrun_client::app::{App, AppConfig, CancellationToken};
use brightrun_client::{BuildChannel, Error, Result};

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

    /// Uses `choice` from now on (and at the next start).
    pub async fn choose(&self, choice: Choice) -> Result<()> {
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
        for token in lock(&self.transfers).values() {
            token.cancel();
        }
        if let Some(sandbox) = lock(&self.sandbox).take() {
            sandbox.stop();
        }
    }
}
