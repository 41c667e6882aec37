//! Where the CLI points and how it gets a session.
//!
//! - The project: `--url`/`BRIGHTRUN_URL` (default: the local brightrun-stack at
//!   `http://127.0.0.1:54321`) and its anon key from `--anon-key`/`BRIGHTRUN_ANON_KEY`, or, for a
//!   local stack, from the `stack.json` it leaves in its data directory. Only commands that talk
//!   to the server need it: `datasets validate` works offline.
//! - The session: the refresh token in the OS keychain (written by `brightrun login`), restored
//!   and refreshed by `brightrun_client::session`. For scripts and tests,
//!   `BRIGHTRUN_ACCESS_TOKEN` + `BRIGHTRUN_USER_ID` give a fixed token instead (never stored).
//! - The local database: `--data-dir`/`BRIGHTRUN_DATA_DIR`, else `$XDG_DATA_HOME/brightrun`,
//!   else `~/.local/share/brightrun`; one file per project URL.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use brightrun_client::api::Api;
use brightrun_client::local::LocalDb;
use brightrun_client::secret::KeychainStore;
use brightrun_client::session::Session;
use brightrun_client::transfer::UploadStateStore;
use brightrun_client::{BuildChannel, LocalStackInfo, Project, Secret};

pub const LOCAL_URL: &str = "http://127.0.0.1:54321";

pub struct Context {
    url: url::Url,
    /// `None` until a command needs the server and no key was found.
    project: Option<Project>,
    http: reqwest::Client,
    data_dir: PathBuf,
}

fn channel() -> BuildChannel {
    if cfg!(debug_assertions) {
        BuildChannel::Dev
    } else {
        BuildChannel::Release
    }
}

impl Context {
    pub fn new(url: &str, anon_key: Option<&str>, data_dir: Option<PathBuf>) -> Result<Self> {
        let url: url::Url = url
            .parse()
            .with_context(|| format!("--url {url:?} is not a URL"))?;
        let anon_key = anon_key
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                brightrun_client::config::local_stack_dir()
                    .and_then(|dir| LocalStackInfo::read(&dir))
                    .filter(|info| info.serves(&url))
                    .map(|info| info.anon_key)
            });
        let data_dir = data_dir
            .or_else(|| {
                std::env::var_os("XDG_DATA_HOME").map(|d| PathBuf::from(d).join("brightrun"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share/brightrun"))
            })
            .context("no data directory: set BRIGHTRUN_DATA_DIR")?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .build()
            .context("building the HTTP client")?;
        let project = anon_key.map(|anon_key| Project {
            url: url.clone(),
            anon_key,
        });
        Ok(Self {
            url,
            project,
            http,
            data_dir,
        })
    }

    /// The project, for commands that talk to the server.
    pub fn project(&self) -> Result<&Project> {
        match &self.project {
            Some(project) => Ok(project),
            None => bail!(
                "no anon key for {}: pass --anon-key or set BRIGHTRUN_ANON_KEY (a local brightrun-stack prints it as `anon key:` and leaves it in its data directory's stack.json; for a hosted project it is in the dashboard's API settings)",
                self.url
            ),
        }
    }

    fn keychain(&self) -> Result<Arc<KeychainStore>> {
        Ok(Arc::new(KeychainStore::new(self.project()?, channel())))
    }

    /// The session: a fixed token from the environment, or the one `login` left in the keychain.
    pub async fn session(&self) -> Result<Arc<Session>> {
        if let (Ok(token), Ok(user)) = (
            std::env::var("BRIGHTRUN_ACCESS_TOKEN"),
            std::env::var("BRIGHTRUN_USER_ID"),
        ) {
            let user = user
                .parse()
                .context("BRIGHTRUN_USER_ID is not a user id (uuid)")?;
            return Ok(Session::with_static_token(
                self.project()?.clone(),
                self.http.clone(),
                user,
                Secret::new(token),
            ));
        }
        let project = self.project()?.clone();
        match Session::restore(project, self.keychain()?, self.http.clone()).await? {
            Some(session) => Ok(session),
            None => bail!(
                "not signed in to {}: run `brightrun login --email <you>`",
                self.url
            ),
        }
    }

    pub async fn api(&self) -> Result<Api> {
        Ok(Api::new(self.session().await?))
    }

    pub async fn login(&self, email: &str) -> Result<Arc<Session>> {
        let password = match std::env::var("BRIGHTRUN_PASSWORD") {
            Ok(p) => p,
            Err(_) => {
                eprint!("Password for {email}: ");
                let mut line = String::new();
                std::io::stdin()
                    .lock()
                    .read_line(&mut line)
                    .context("reading the password from stdin")?;
                line.trim_end_matches(['\r', '\n']).to_owned()
            }
        };
        Ok(Session::sign_in(
            self.project()?.clone(),
            self.keychain()?,
            self.http.clone(),
            email,
            &Secret::new(password),
        )
        .await?)
    }

    /// Signs out if signed in; false when there was no session.
    pub async fn logout(&self) -> Result<bool> {
        let project = self.project()?.clone();
        match Session::restore(project, self.keychain()?, self.http.clone()).await? {
            Some(session) => {
                session.sign_out().await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The local database of this project.
    pub async fn local_db(&self) -> Result<LocalDb> {
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
        let path = self.data_dir.join(file);
        LocalDb::open(&path)
            .await
            .with_context(|| format!("opening the local database {}", path.display()))
    }

    pub async fn upload_store(&self) -> Result<UploadStateStore> {
        Ok(UploadStateStore::from_local(&self.local_db().await?))
    }
}
