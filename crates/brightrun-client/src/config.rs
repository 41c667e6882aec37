//! Which project the client talks to.

use std::path::Path;

use serde::{Deserialize, Serialize};
use url::Url;

/// A Supabase project (or brightrun-stack): its URL and its public anon key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub url: Url,
    /// The anon key is public by design (it ships in every Supabase client); not a secret.
    pub anon_key: String,
}

/// Keychain entries are namespaced by build channel, so a dev build never touches the
/// credentials of a release build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildChannel {
    Dev,
    Release,
}

impl BuildChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dev => "dev",
            Self::Release => "release",
        }
    }
}

impl Project {
    /// `<url>/<service>/v1/<path>`, e.g. `endpoint("rest", "datasets")`.
    pub fn endpoint(&self, service: &str, path: &str) -> Url {
        let base = self.url.as_str().trim_end_matches('/');
        let path = path.trim_start_matches('/');
        Url::parse(&format!("{base}/{service}/v1/{path}"))
            .expect("a project URL plus a path is a URL")
    }
}

/// What `brightrun-stack up` leaves in its data directory (`stack.json`) so local clients find
/// it: its URL and anon key, both public. The service-role key is never written there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStackInfo {
    pub url: String,
    pub anon_key: String,
}

impl LocalStackInfo {
    pub const FILE: &'static str = "stack.json";

    /// The stack last started in `dir`, if any.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read(dir.join(Self::FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Whether this stack serves `url` (ignoring a trailing slash).
    pub fn serves(&self, url: &Url) -> bool {
        self.url.trim_end_matches('/') == url.as_str().trim_end_matches('/')
    }
}

/// What `brightrun-stack up` prints on stdout before `ready`: where it listens, its keys and its
/// database. Read by whoever starts a stack (xtask, the desktop app's sandbox) to start a worker
/// beside it; the service-role key printed here is never written to disk.
#[derive(Debug, Default)]
pub struct StackBanner {
    pub url: Option<String>,
    pub anon_key: Option<String>,
    pub service_role_key: Option<crate::Secret>,
    pub db_url: Option<String>,
    /// The `ready` line was read.
    pub ready: bool,
}

impl StackBanner {
    /// Takes one line of the stack's stdout; true once it said `ready`.
    pub fn read(&mut self, line: &str) -> bool {
        if line == "ready" {
            self.ready = true;
        } else if let Some((key, value)) = line.split_once(": ") {
            let value = value.trim().to_owned();
            match key {
                "API URL" => self.url = Some(value),
                "anon key" => self.anon_key = Some(value),
                "service_role key" => self.service_role_key = Some(crate::Secret::new(value)),
                "DB URL" => self.db_url = Some(value),
                _ => {}
            }
        }
        self.ready
    }
}
