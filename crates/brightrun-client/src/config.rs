//! Which project the client talks to.

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
