//! Which project the app talks to: chosen at first run (the local sandbox, or a Supabase project
//! by URL and anon key) and kept in `<data dir>/desktop.json`; `BRIGHTRUN_URL` with
//! `BRIGHTRUN_ANON_KEY` in the environment win over the choice, as they do for the CLI.

use std::path::PathBuf;

use brightrun_client::app::{LOCAL_URL, ProjectChoice, env};
use brightrun_client::{Error, Result};
use serde::{Deserialize, Serialize};

/// The choice made at first run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
pub struct Choice {
    /// The local sandbox (brightrun-stack and a worker on this machine).
    pub sandbox: bool,
    /// A hosted project: its URL and anon key (public by design).
    pub url: Option<String>,
    pub anon_key: Option<String>,
}

impl Choice {
    pub fn sandbox() -> Self {
        Self {
            sandbox: true,
            url: None,
            anon_key: None,
        }
    }

    /// The project as the app layer resolves it; the sandbox's key comes from its stack.json.
    pub fn project(&self) -> ProjectChoice {
        if self.sandbox {
            return ProjectChoice {
                url: Some(LOCAL_URL.to_owned()),
                anon_key: None,
            };
        }
        ProjectChoice {
            url: self.url.clone(),
            anon_key: self.anon_key.clone(),
        }
    }
}

/// Where the choice is kept, and what the environment says.
#[derive(Debug, Clone)]
pub struct Settings {
    file: PathBuf,
    data_dir: Option<PathBuf>,
    environment: Option<Choice>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// From this process's environment and data directory.
    pub fn from_process() -> Result<Self> {
        let data_dir = var(env::DATA_DIR).map(PathBuf::from);
        let dir = data_dir
            .clone()
            .or_else(|| brightrun_dirs::Dirs::from_process().app_data())
            .ok_or_else(|| Error::NotConfigured("no data directory: set HOME".into()))?;
        let environment = match (var(env::URL), var(env::ANON_KEY)) {
            (Some(url), Some(anon_key)) => Some(Choice {
                sandbox: false,
                url: Some(url),
                anon_key: Some(anon_key),
            }),
            _ => None,
        };
        Ok(Self {
            file: dir.join("desktop.json"),
            data_dir,
            environment,
        })
    }

    /// Everything in `data_dir`; `environment` as `BRIGHTRUN_URL` with `BRIGHTRUN_ANON_KEY`
    /// would give it (tests, and front ends that embed the shell).
    pub fn new(data_dir: PathBuf, environment: Option<Choice>) -> Self {
        Self {
            file: data_dir.join("desktop.json"),
            data_dir: Some(data_dir),
            environment,
        }
    }

    /// `BRIGHTRUN_DATA_DIR`, when set.
    pub fn data_dir_override(&self) -> Option<PathBuf> {
        self.data_dir.clone()
    }

    /// Whether the environment chose the project (the first-run choice is skipped).
    pub fn from_environment(&self) -> bool {
        self.environment.is_some()
    }

    /// The project in use: the environment's, else the saved choice.
    pub fn effective_choice(&self) -> Option<Choice> {
        self.environment.clone().or_else(|| self.saved())
    }

    fn saved(&self) -> Option<Choice> {
        let text = std::fs::read(&self.file).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Keeps `choice` for the next start (written whole, then renamed into place).
    pub fn save(&self, choice: &Choice) -> Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_vec_pretty(choice)
            .map_err(|e| Error::Protocol(format!("the project choice: {e}")))?;
        let temp = self.file.with_extension("json.tmp");
        std::fs::write(&temp, text)?;
        std::fs::rename(&temp, &self.file)?;
        Ok(())
    }
}

/// What the window shows before anything else: whether a project is chosen, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, specta::Type)]
pub struct ProjectStatus {
    pub chosen: Option<Choice>,
    /// The environment chose it; the window offers no other.
    pub from_environment: bool,
}
