//! The app layer: one [`App`] per project, and one handler per user operation, written once and
//! called by the CLI, the desktop shell and tests (ARCHITECTURE.md §11).
//!
//! A handler is `async fn(&App, Request) -> Result<Response>` with serde types; long operations
//! also take a [`ProgressFn`] and a [`CancellationToken`], and watching is a stream of events.
//! Front ends parse their input, call a handler and show the result or the [`crate::WireError`]:
//! no business rule, retry, price rule or error classification lives in them.
//!
//! | module | operations |
//! |---|---|
//! | [`auth`] | sign up, sign in, sign out, who am I |
//! | [`datasets`] | validate, convert v3 → v4, upload (and the interrupted ones), list, show, rename, delete |
//! | [`jobs`] | GPU catalogue and presets, check, estimate and create from a [`brightrun_core::JobDraft`], list, show, metrics, cancel, clone, watch |
//! | [`curves`] | training curves kept as the watcher brings them, drawn as charts |
//! | [`models`] | list, show, download |
//! | [`notifications`] | list, mark read |
//! | [`costs`] | a month's costs against the budget |
//! | [`prefs`] | local preferences |

pub mod auth;
pub mod costs;
pub mod curves;
pub mod datasets;
pub mod jobs;
pub mod models;
pub mod notifications;
pub mod prefs;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brightrun_supabase::{Retrier, RetryPolicy, Secret};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
pub use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use crate::api::Api;
use crate::config::{BuildChannel, LocalStackInfo, Project};
use crate::error::{Error, Result};
use crate::local::LocalDb;
use crate::secret::{KeychainStore, MemoryStore, SecretStore};
use crate::session::Session;
pub use crate::transfer::ProgressFn;

/// The local brightrun-stack's default address.
pub const LOCAL_URL: &str = "http://127.0.0.1:54321";

/// The environment variables every front end honours, over what a user chose in the app.
pub mod env {
    /// The project URL.
    pub const URL: &str = "BRIGHTRUN_URL";
    /// The project's anon (public) key.
    pub const ANON_KEY: &str = "BRIGHTRUN_ANON_KEY";
    /// Where the local database, preferences and caches live (see `brightrun_dirs`).
    pub const DATA_DIR: &str = "BRIGHTRUN_DATA_DIR";
    /// With [`USER_ID`]: a fixed access token instead of the keychain's session (scripts,
    /// tests). Never stored.
    pub const ACCESS_TOKEN: &str = "BRIGHTRUN_ACCESS_TOKEN";
    pub const USER_ID: &str = "BRIGHTRUN_USER_ID";
}

/// A project as a front end names it: command-line flags, or the choice saved by the app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ProjectChoice {
    pub url: Option<String>,
    pub anon_key: Option<String>,
}

/// Where the refresh token is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keychain {
    /// The OS keychain: shared by the CLI and the app of the same build channel.
    Os,
    /// Memory: gone with the process (tests).
    Memory,
}

/// What an [`App`] is built from.
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub url: Url,
    /// `None` until the project's anon key is known; operations that talk to the server then
    /// fail with `not_configured`.
    pub anon_key: Option<String>,
    pub data_dir: PathBuf,
    pub channel: BuildChannel,
    pub keychain: Keychain,
    /// A fixed access token and its user, instead of a session ([`env::ACCESS_TOKEN`]).
    pub static_token: Option<(Uuid, Secret)>,
    pub retry: Retries,
}

/// How persistent the app is with a server that fails for a passing reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// One request sent again whole (REST, RPC, signing). [`RetryPolicy::default`].
    pub requests: RetryPolicy,
    /// Uploads and downloads, counted without progress. [`RetryPolicy::transfers`].
    pub transfers: RetryPolicy,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            requests: RetryPolicy::default(),
            transfers: RetryPolicy::transfers(),
        }
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl AppConfig {
    /// The configuration a front end runs with. Each value comes from the first that has it:
    /// `flags`, the environment ([`env`]), `saved` (the app's first-run choice), and for the URL
    /// the local stack. The anon key of a local stack is read from the `stack.json` it leaves
    /// in its data directory when it serves that URL.
    pub fn resolve(
        flags: ProjectChoice,
        data_dir: Option<PathBuf>,
        saved: ProjectChoice,
        channel: BuildChannel,
    ) -> Result<Self> {
        Self::resolve_in(
            flags,
            data_dir,
            saved,
            channel,
            |name| std::env::var(name).ok(),
            &brightrun_dirs::Dirs::from_process(),
        )
    }

    /// [`AppConfig::resolve`] with the environment and the directories given.
    pub fn resolve_in<E: Fn(&str) -> Option<std::ffi::OsString>>(
        flags: ProjectChoice,
        data_dir: Option<PathBuf>,
        saved: ProjectChoice,
        channel: BuildChannel,
        env: impl Fn(&str) -> Option<String>,
        dirs: &brightrun_dirs::Dirs<E>,
    ) -> Result<Self> {
        let var = |name: &str| non_empty(env(name));
        let stack = dirs.stack_data().and_then(|dir| LocalStackInfo::read(&dir));
        let url_text = non_empty(flags.url)
            .or_else(|| var(env::URL))
            .or(non_empty(saved.url))
            .unwrap_or_else(|| LOCAL_URL.to_owned());
        let url: Url = url_text
            .parse()
            .map_err(|e| Error::InvalidInput(format!("{url_text:?} is not a URL: {e}")))?;
        let anon_key = non_empty(flags.anon_key)
            .or_else(|| var(env::ANON_KEY))
            .or(non_empty(saved.anon_key))
            .or_else(|| stack.filter(|s| s.serves(&url)).map(|s| s.anon_key));
        let data_dir = data_dir
            .filter(|d| !d.as_os_str().is_empty())
            .or_else(|| dirs.app_data())
            .ok_or_else(|| {
                Error::NotConfigured(format!(
                    "no data directory: set {} (or HOME)",
                    env::DATA_DIR
                ))
            })?;
        let static_token = match (var(env::ACCESS_TOKEN), var(env::USER_ID)) {
            (Some(token), Some(user)) => {
                let user = user.parse().map_err(|_| {
                    Error::InvalidInput(format!("{} is not a user id (uuid)", env::USER_ID))
                })?;
                Some((user, Secret::new(token)))
            }
            _ => None,
        };
        Ok(Self {
            url,
            anon_key,
            data_dir,
            channel,
            keychain: Keychain::Os,
            static_token,
            retry: Retries::default(),
        })
    }

    /// The local database of this project: one file per project URL in the data directory.
    pub fn database_path(&self) -> PathBuf {
        let host = self.url.host_str().unwrap_or("local");
        let port = self.url.port_or_known_default().unwrap_or(0);
        let file: String = format!("{host}-{port}.db")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.data_dir.join(file)
    }
}

/// A cached list and how fresh it is: `stale` until the server confirmed it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Shown from the local cache; the server may know more.
    pub stale: bool,
    /// When the server last sent this list (`None`: never).
    pub fetched_at: Option<DateTime<Utc>>,
}

/// Where a list comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    /// The local cache only: at once, offline too (`stale`).
    Cache,
    /// The server (the cache is updated); fails when the server cannot be reached.
    #[default]
    Server,
}

/// One project's client: its configuration, the one HTTP client, the local database, the
/// keychain entry and the session. Cheap to share (`Arc<App>`); every handler takes `&App`.
pub struct App {
    config: AppConfig,
    http: reqwest::Client,
    db: LocalDb,
    keychain: Arc<dyn SecretStore>,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("url", &self.config.url.as_str())
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Opens the project's local database (creating the data directory) and builds the client.
    pub async fn open(config: AppConfig) -> Result<Self> {
        let db = LocalDb::open(&config.database_path()).await?;
        Self::with_db(config, db)
    }

    /// With a given local database (tests: in memory).
    pub fn with_db(config: AppConfig, db: LocalDb) -> Result<Self> {
        let keychain: Arc<dyn SecretStore> = match config.keychain {
            Keychain::Os => Arc::new(KeychainStore::for_url(&config.url, config.channel)),
            Keychain::Memory => Arc::new(MemoryStore::new()),
        };
        Self::with_store(config, db, keychain)
    }

    /// With a given database and refresh-token store (tests: a keychain that fails).
    pub fn with_store(
        config: AppConfig,
        db: LocalDb,
        keychain: Arc<dyn SecretStore>,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(Error::from)?;
        Ok(Self {
            config,
            http,
            db,
            keychain,
            session: tokio::sync::Mutex::new(None),
        })
    }

    pub fn config(&self) -> &AppConfig {
        &self.config
    }

    pub fn db(&self) -> &LocalDb {
        &self.db
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The project, for operations that talk to the server.
    pub fn project(&self) -> Result<Project> {
        match &self.config.anon_key {
            Some(anon_key) => Ok(Project {
                url: self.config.url.clone(),
                anon_key: anon_key.clone(),
            }),
            None => Err(Error::NotConfigured(format!(
                "no anon key for {}: pass --anon-key or set {} (a local brightrun-stack prints \
                 it as `anon key:` and leaves it in its data directory's stack.json; for a \
                 hosted project it is in the dashboard's API settings)",
                self.config.url,
                env::ANON_KEY
            ))),
        }
    }

    pub(crate) fn keychain(&self) -> &Arc<dyn SecretStore> {
        &self.keychain
    }

    /// The signed-in session: the one this app holds, or the one the keychain keeps (restored
    /// and refreshed; the CLI and the app of one build share it). [`Error::SignedOut`] when
    /// there is none; a network failure is an error, never a sign-out.
    pub async fn session(&self) -> Result<Arc<Session>> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref() {
            return Ok(session.clone());
        }
        let project = self.project()?;
        let session = match &self.config.static_token {
            Some((user, token)) => {
                Session::with_static_token(project, self.http.clone(), *user, token.clone())
            }
            None => Session::restore(project, self.keychain.clone(), self.http.clone())
                .await?
                .ok_or(Error::SignedOut)?,
        };
        self.db
            .set_last_account(Some((session.user_id(), session.email())))
            .await?;
        *slot = Some(session.clone());
        Ok(session)
    }

    /// The signed-in user, for reading the local cache: the session's, or when the server cannot
    /// be reached, the one signed in last (offline is not signed out).
    pub async fn user_id(&self) -> Result<Uuid> {
        match self.session().await {
            Ok(session) => Ok(session.user_id()),
            Err(e) if e.code() == crate::ErrorCode::Offline => {
                match self.db.last_account().await? {
                    Some((id, _)) => Ok(id),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// The typed API of the signed-in session.
    pub async fn api(&self) -> Result<Api> {
        let retrier = Retrier::new(self.config.retry.requests);
        Ok(Api::with_retrier(self.session().await?, retrier))
    }

    pub(crate) async fn set_session(&self, session: Option<Arc<Session>>) -> Result<()> {
        let account = session.as_ref().map(|s| (s.user_id(), s.email()));
        self.db.set_last_account(account).await?;
        *self.session.lock().await = session;
        Ok(())
    }
}

/// Checks a project before it is kept: `url` answers as a BrightRun project (its GPU catalogue,
/// which anyone with the anon key may read) and takes `anon_key`.
pub async fn check_project(url: &str, anon_key: &str) -> Result<()> {
    let parsed: Url = url
        .trim()
        .parse()
        .map_err(|e| Error::InvalidInput(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::InvalidInput(format!(
            "{url:?} is not an http(s) URL"
        )));
    }
    let project = Project {
        url: parsed,
        anon_key: anon_key.trim().to_owned(),
    };
    let mut endpoint = project.endpoint("rest", "gpu_types");
    endpoint
        .query_pairs_mut()
        .append_pair("select", "id")
        .append_pair("limit", "1");
    let response = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(20))
        .build()?
        .get(endpoint)
        .header("apikey", &project.anon_key)
        .send()
        .await?;
    if response.status().is_success() {
        return Ok(());
    }
    let api = crate::error::ApiError::from_response(crate::error::Service::Rest, response).await;
    Err(match api.status {
        401 | 403 => Error::InvalidInput(format!(
            "the server refused the anon key ({}): copy it again from the project's API settings",
            api.message
        )),
        404 => Error::InvalidInput(
            "no BrightRun schema at that URL: apply the migrations to the project first".into(),
        ),
        _ => Error::Api(api),
    })
}

/// Runs `work` until it ends or `cancel` is cancelled ([`Error::Cancelled`]). Dropping the work
/// is safe for every transfer: what the server confirmed is kept and the next run resumes there.
pub(crate) async fn cancellable<T>(
    cancel: &CancellationToken,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        result = work => result,
        () = cancel.cancelled() => Err(Error::Cancelled),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    fn resolve(
        flags: ProjectChoice,
        saved: ProjectChoice,
        vars: &[(&str, &str)],
        stack_dir: &Path,
    ) -> AppConfig {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let stack_dir = stack_dir.as_os_str().to_owned();
        let dirs = brightrun_dirs::Dirs::with_env(
            move |name: &str| match name {
                "HOME" => Some(OsString::from("/home/u")),
                "BRIGHTRUN_STACK_DATA" => Some(stack_dir.clone()),
                _ => None,
            },
            false,
        );
        AppConfig::resolve_in(
            flags,
            None,
            saved,
            BuildChannel::Dev,
            |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            &dirs,
        )
        .expect("resolves")
    }

    fn choice(url: &str, key: &str) -> ProjectChoice {
        ProjectChoice {
            url: Some(url.to_owned()),
            anon_key: Some(key.to_owned()),
        }
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_saved_choice() {
        let stack = tempfile::tempdir().expect("tempdir");
        let env = [
            (env::URL, "https://env.supabase.co"),
            (env::ANON_KEY, "env-key"),
        ];
        let saved = choice("https://saved.supabase.co", "saved-key");
        let from_flags = resolve(
            choice("https://flag.supabase.co", "flag-key"),
            saved.clone(),
            &env,
            stack.path(),
        );
        assert_eq!(
            from_flags.url.as_str(),
            "https://flag.supabase.co/",
            "flags first"
        );
        assert_eq!(
            from_flags.anon_key.as_deref(),
            Some("flag-key"),
            "flags first"
        );
        let from_env = resolve(ProjectChoice::default(), saved.clone(), &env, stack.path());
        assert_eq!(
            from_env.url.as_str(),
            "https://env.supabase.co/",
            "then the environment"
        );
        let from_saved = resolve(ProjectChoice::default(), saved, &[], stack.path());
        assert_eq!(
            from_saved.anon_key.as_deref(),
            Some("saved-key"),
            "then the app's choice"
        );
        assert_eq!(
            from_saved.data_dir,
            PathBuf::from("/home/u/.local/share/brightrun"),
            "the data directory from brightrun_dirs"
        );
    }

    #[test]
    fn a_local_stacks_key_is_found_only_for_the_url_it_serves() {
        let stack = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            stack.path().join(LocalStackInfo::FILE),
            r#"{"url": "http://127.0.0.1:54321", "anon_key": "local-anon"}"#,
        )
        .expect("write stack.json");
        let local = resolve(
            ProjectChoice::default(),
            ProjectChoice::default(),
            &[],
            stack.path(),
        );
        assert_eq!(
            local.url.as_str(),
            LOCAL_URL.to_owned() + "/",
            "the local stack by default"
        );
        assert_eq!(
            local.anon_key.as_deref(),
            Some("local-anon"),
            "its key from stack.json"
        );
        let other = resolve(
            ProjectChoice {
                url: Some("https://x.supabase.co".into()),
                anon_key: None,
            },
            ProjectChoice::default(),
            &[],
            stack.path(),
        );
        assert_eq!(
            other.anon_key, None,
            "another project's key is not the stack's"
        );
        let token = resolve(
            ProjectChoice::default(),
            ProjectChoice::default(),
            &[
                (env::ACCESS_TOKEN, "t"),
                (env::USER_ID, "6c1c1f8e-1f0e-4c53-9a53-7c8a1f3e2b10"),
            ],
            stack.path(),
        );
        assert!(
            token.static_token.is_some(),
            "a fixed token from the environment"
        );
    }
}
