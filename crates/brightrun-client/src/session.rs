//! The signed-in session: sign-in, the refresh cache, sign-out.
//!
//! The refresh token lives only in the [`SecretStore`] (the OS keychain); it is read from there
//! when a refresh is due and the rotated one is written back at once. The access token lives only
//! in memory. [`Session::access_token`] refreshes when less than [`SessionOptions::min_ttl`] is
//! left, under a lock and re-checking after taking it, so any number of concurrent requests cause
//! one refresh (parallel uploads never stampede `/token` or trip refresh-token reuse detection).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use uuid::Uuid;

use brightrun_supabase::storage::Credentials;
use futures::future::BoxFuture;

use crate::config::Project;
use crate::error::{ApiError, Error, Result, Service};
use crate::retry::{Idempotency, Retrier, RetryPolicy};
use crate::secret::{Secret, SecretStore};

/// GoTrue picks its error shape by this header; auth-js always sends it.
const API_VERSION: (&str, &str) = ("X-Supabase-Api-Version", "2024-01-01");

/// How a session behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionOptions {
    /// Refresh when less than this is left of the access token's lifetime. Default 60 s: longer
    /// than any single request takes, so a token never expires in flight, and far shorter than
    /// the usual lifetime (3600 s), so refreshes stay rare.
    pub min_ttl: Duration,
    /// For the auth endpoints (sign-in, refresh, sign-out).
    pub retry: RetryPolicy,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// The current user's session. Shared as `Arc<Session>`; every request asks it for an access
/// token, which it refreshes when less than a minimum lifetime is left (one refresh at a time).
pub struct Session {
    project: Project,
    http: reqwest::Client,
    user_id: Uuid,
    email: Option<String>,
    auth: Auth,
}

enum Auth {
    /// A fixed token (tests, service use): never refreshed.
    Static(RwLock<Option<Secret>>),
    Refreshing(Box<Refreshing>),
}

struct Refreshing {
    store: Arc<dyn SecretStore>,
    options: SessionOptions,
    retrier: Retrier,
    /// `None` once signed out (or once the server has refused the refresh token).
    current: RwLock<Option<AccessToken>>,
    /// Held for the whole of a refresh: one at a time.
    refresh_lock: Mutex<()>,
    refreshes: AtomicU64,
}

#[derive(Clone)]
struct AccessToken {
    token: Secret,
    /// Local monotonic time, from the server's `expires_in`: immune to a skewed wall clock.
    expires_at: Instant,
}

impl AccessToken {
    fn from_response(response: &TokenResponse, received: Instant) -> Self {
        Self {
            token: response.access_token.clone(),
            expires_at: received + Duration::from_secs(response.expires_in),
        }
    }

    fn lasts(&self, min_ttl: Duration) -> bool {
        self.expires_at.saturating_duration_since(Instant::now()) > min_ttl
    }

    fn is_valid(&self) -> bool {
        self.expires_at > Instant::now()
    }
}

/// GoTrue's session JSON (supabase-protocol.md §2.3), the parts we use.
#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: Secret,
    expires_in: u64,
    refresh_token: Secret,
    user: TokenUser,
}

#[derive(Debug, Deserialize)]
struct TokenUser {
    id: Uuid,
    #[serde(default)]
    email: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("project", &self.project.url.as_str())
            .field("user_id", &self.user_id)
            .field(
                "kind",
                &match self.auth {
                    Auth::Static(_) => "static",
                    Auth::Refreshing(_) => "refreshing",
                },
            )
            .finish_non_exhaustive()
    }
}

/// Runs a keychain call on a blocking thread (the Secret Service backend blocks on D-Bus).
async fn in_store<T, F>(store: &Arc<dyn SecretStore>, call: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&dyn SecretStore) -> Result<T> + Send + 'static,
{
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || call(store.as_ref()))
        .await
        .map_err(|e| Error::Keychain(format!("keychain call did not finish: {e}")))?
}

/// The server refused the refresh token for good (not found, already used, session gone or
/// expired, user banned or deleted): the session is over. Not for transient failures.
fn is_dead_session(error: &Error) -> bool {
    matches!(error, Error::Api(api)
        if api.service == Service::Auth && (400..500).contains(&api.status) && !api.is_retryable())
}

/// `POST /auth/v1/token?grant_type=<grant>`.
async fn grant(
    project: &Project,
    http: &reqwest::Client,
    retrier: &Retrier,
    grant_type: &str,
    idempotency: Idempotency,
    body: &serde_json::Value,
) -> Result<(TokenResponse, Instant)> {
    let mut url = project.endpoint("auth", "token");
    url.query_pairs_mut().append_pair("grant_type", grant_type);
    retrier
        .run(idempotency, |_| {
            let request = http
                .post(url.clone())
                .header("apikey", &project.anon_key)
                .header(API_VERSION.0, API_VERSION.1)
                .json(body);
            async move {
                let response = request.send().await?;
                let received = Instant::now();
                if !response.status().is_success() {
                    return Err(ApiError::from_response(Service::Auth, response)
                        .await
                        .into());
                }
                let session: TokenResponse = response
                    .json()
                    .await
                    .map_err(|e| Error::Protocol(format!("session JSON: {e}")))?;
                Ok((session, received))
            }
        })
        .await
}

/// What a sign-up gave.
#[derive(Debug)]
pub enum SignUp {
    /// The project confirms new users at once (brightrun-stack, Supabase with confirmations
    /// off): signed in.
    SignedIn(Arc<Session>),
    /// The project sent a confirmation email; sign in once it is confirmed.
    ConfirmEmail,
}

impl Session {
    /// Creates an account (`POST /auth/v1/signup`). When the project signs new users in at once,
    /// the refresh token goes to `store` as with [`Session::sign_in`].
    pub async fn sign_up(
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
        email: &str,
        password: &Secret,
    ) -> Result<SignUp> {
        let options = SessionOptions::default();
        let retrier = Retrier::new(options.retry);
        let url = project.endpoint("auth", "signup");
        let body = serde_json::json!({ "email": email, "password": password.expose() });
        // Creates a user: resent only if it certainly did not apply.
        let (answer, received) = retrier
            .run(Idempotency::NotIdempotent, |_| {
                let request = http
                    .post(url.clone())
                    .header("apikey", &project.anon_key)
                    .header(API_VERSION.0, API_VERSION.1)
                    .json(&body);
                async move {
                    let response = request.send().await?;
                    let received = Instant::now();
                    if !response.status().is_success() {
                        return Err(Error::from(
                            ApiError::from_response(Service::Auth, response).await,
                        ));
                    }
                    let answer: serde_json::Value = response
                        .json()
                        .await
                        .map_err(|e| Error::Protocol(format!("sign-up answer: {e}")))?;
                    Ok((answer, received))
                }
            })
            .await?;
        if answer.get("access_token").is_none() {
            tracing::info!("signed up; the project sent a confirmation email");
            return Ok(SignUp::ConfirmEmail);
        }
        let response: TokenResponse = serde_json::from_value(answer)
            .map_err(|e| Error::Protocol(format!("sign-up session JSON: {e}")))?;
        let session =
            Self::keep(options, project, store, http, retrier, response, received).await?;
        tracing::info!(user_id = %session.user_id, "signed up");
        Ok(SignUp::SignedIn(session))
    }

    /// A new session from a token answer: the refresh token goes to `store` first.
    async fn keep(
        options: SessionOptions,
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
        retrier: Retrier,
        response: TokenResponse,
        received: Instant,
    ) -> Result<Arc<Self>> {
        let refresh_token = response.refresh_token.clone();
        if let Err(error) = in_store(&store, move |s| s.store(&refresh_token)).await {
            // Without the keychain the session could not be restored or refreshed: end it on the
            // server rather than leave it dangling.
            let _ = logout(&project, &http, &response.access_token).await;
            return Err(error);
        }
        Ok(Self::from_response(
            options, project, store, http, retrier, &response, received,
        ))
    }

    /// Signs in with email and password; the refresh token goes to `store`.
    pub async fn sign_in(
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
        email: &str,
        password: &Secret,
    ) -> Result<Arc<Self>> {
        Self::sign_in_with(
            SessionOptions::default(),
            project,
            store,
            http,
            email,
            password,
        )
        .await
    }

    pub async fn sign_in_with(
        options: SessionOptions,
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
        email: &str,
        password: &Secret,
    ) -> Result<Arc<Self>> {
        let retrier = Retrier::new(options.retry);
        let body = serde_json::json!({ "email": email, "password": password.expose() });
        // A password grant creates a server session: resent only if it certainly did not apply.
        let (response, received) = grant(
            &project,
            &http,
            &retrier,
            "password",
            Idempotency::NotIdempotent,
            &body,
        )
        .await?;
        let session =
            Self::keep(options, project, store, http, retrier, response, received).await?;
        tracing::info!(user_id = %session.user_id, "signed in");
        Ok(session)
    }

    /// The session kept in `store` by an earlier run, if it is still alive. The stored refresh
    /// token is tried before the session is declared dead: `Ok(None)` means there was none or
    /// the server refused it (the entry is then deleted). A network failure is an `Err` and
    /// deletes nothing: being offline is not being signed out.
    pub async fn restore(
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
    ) -> Result<Option<Arc<Self>>> {
        Self::restore_with(SessionOptions::default(), project, store, http).await
    }

    pub async fn restore_with(
        options: SessionOptions,
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
    ) -> Result<Option<Arc<Self>>> {
        let Some(refresh_token) = in_store(&store, |s| s.load()).await? else {
            return Ok(None);
        };
        let retrier = Retrier::new(options.retry);
        let body = serde_json::json!({ "refresh_token": refresh_token.expose() });
        let result = grant(
            &project,
            &http,
            &retrier,
            "refresh_token",
            Idempotency::Idempotent,
            &body,
        )
        .await;
        let (response, received) = match result {
            Ok(ok) => ok,
            Err(error) if is_dead_session(&error) => {
                tracing::info!(code = ?error.api().map(|a| &a.code), "stored session is no longer valid");
                in_store(&store, |s| s.delete()).await?;
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let rotated = response.refresh_token.clone();
        in_store(&store, move |s| s.store(&rotated)).await?;
        tracing::info!(user_id = %response.user.id, "session restored");
        let session =
            Self::from_response(options, project, store, http, retrier, &response, received);
        if let Auth::Refreshing(r) = &session.auth {
            r.refreshes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Some(session))
    }

    fn from_response(
        options: SessionOptions,
        project: Project,
        store: Arc<dyn SecretStore>,
        http: reqwest::Client,
        retrier: Retrier,
        response: &TokenResponse,
        received: Instant,
    ) -> Arc<Self> {
        Arc::new(Self {
            project,
            http,
            user_id: response.user.id,
            email: response.user.email.clone(),
            auth: Auth::Refreshing(Box::new(Refreshing {
                store,
                options,
                retrier,
                current: RwLock::new(Some(AccessToken::from_response(response, received))),
                refresh_lock: Mutex::new(()),
                refreshes: AtomicU64::new(0),
            })),
        })
    }

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
            email: None,
            auth: Auth::Static(RwLock::new(Some(token))),
        })
    }

    /// A valid access token, refreshing first if needed; [`Error::SignedOut`] when there is none.
    pub async fn access_token(&self) -> Result<Secret> {
        match &self.auth {
            Auth::Static(token) => token.read().await.clone().ok_or(Error::SignedOut),
            Auth::Refreshing(r) => r.access_token(&self.project, &self.http).await,
        }
    }

    /// The server refused `token` as expired or invalid (e.g. the local clock runs late): if it
    /// is still the current one, the next [`Session::access_token`] refreshes first.
    pub async fn reject_access_token(&self, token: &Secret) {
        if let Auth::Refreshing(r) = &self.auth {
            let mut current = r.current.write().await;
            if let Some(access) = current.as_mut().filter(|a| &a.token == token) {
                access.expires_at = Instant::now();
            }
        }
    }

    /// Ends the session: revokes it on the server (`POST /auth/v1/logout?scope=local`, other
    /// devices stay signed in) and deletes the keychain entry. The entry is deleted even when the
    /// server cannot be reached; only a keychain failure is an error.
    pub async fn sign_out(&self) -> Result<()> {
        match &self.auth {
            Auth::Static(token) => {
                *token.write().await = None;
                Ok(())
            }
            Auth::Refreshing(r) => {
                match self.access_token().await {
                    Ok(token) => {
                        if let Err(error) = logout(&self.project, &self.http, &token).await {
                            tracing::info!(
                                code = error.code().as_str(),
                                "server sign-out failed; signing out locally"
                            );
                        }
                    }
                    Err(error) => {
                        tracing::info!(
                            code = error.code().as_str(),
                            "no access token to revoke; signing out locally"
                        );
                    }
                }
                // Under the refresh lock: a refresh in flight cannot write a rotated token back
                // after the entry is deleted, and one that starts later finds no session.
                let _no_refresh = r.refresh_lock.lock().await;
                *r.current.write().await = None;
                in_store(&r.store, |s| s.delete()).await?;
                tracing::info!(user_id = %self.user_id, "signed out");
                Ok(())
            }
        }
    }

    /// How many times this session has refreshed its access token (restoring counts as one).
    pub fn refresh_count(&self) -> u64 {
        match &self.auth {
            Auth::Static(_) => 0,
            Auth::Refreshing(r) => r.refreshes.load(Ordering::SeqCst),
        }
    }

    pub fn user_id(&self) -> Uuid {
        self.user_id
    }

    /// The signed-in user's email address (unknown for static-token sessions).
    pub fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }

    pub fn project(&self) -> &Project {
        &self.project
    }

    /// The one shared HTTP client (connection pool) of this session.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// A session lends its access token to the Storage client: refreshed when due, and after Storage
/// refused it.
impl Credentials for Session {
    fn bearer(&self) -> BoxFuture<'_, brightrun_supabase::Result<Secret>> {
        Box::pin(async move { self.access_token().await.map_err(Into::into) })
    }

    fn refused<'a>(&'a self, token: &'a Secret) -> BoxFuture<'a, ()> {
        Box::pin(self.reject_access_token(token))
    }
}

/// `POST /auth/v1/logout?scope=local`, once: a sign-out must not hang on a dead network.
async fn logout(project: &Project, http: &reqwest::Client, token: &Secret) -> Result<()> {
    let mut url = project.endpoint("auth", "logout");
    url.query_pairs_mut().append_pair("scope", "local");
    let response = http
        .post(url)
        .header("apikey", &project.anon_key)
        .header(API_VERSION.0, API_VERSION.1)
        .bearer_auth(token.expose())
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(ApiError::from_response(Service::Auth, response)
            .await
            .into())
    }
}

impl Refreshing {
    async fn access_token(&self, project: &Project, http: &reqwest::Client) -> Result<Secret> {
        let min_ttl = self.options.min_ttl;
        // Fast path: a read lock, shared by every concurrent request.
        match &*self.current.read().await {
            None => return Err(Error::SignedOut),
            Some(access) if access.lasts(min_ttl) => return Ok(access.token.clone()),
            Some(_) => {}
        }
        let _one_at_a_time = self.refresh_lock.lock().await;
        // Whoever held the lock before us may have refreshed already.
        let stale = match &*self.current.read().await {
            None => return Err(Error::SignedOut),
            Some(access) if access.lasts(min_ttl) => return Ok(access.token.clone()),
            Some(access) => access.clone(),
        };
        match self.refresh(project, http).await {
            Ok(token) => Ok(token),
            // Refreshing early failed for a passing reason, but the token has not expired yet:
            // use it; the next call tries again.
            Err(error) if !is_dead_session(&error) && stale.is_valid() => {
                tracing::warn!(
                    code = error.code().as_str(),
                    "token refresh failed; using the current token until it expires"
                );
                Ok(stale.token)
            }
            Err(error) => Err(error),
        }
    }

    /// Called with `refresh_lock` held.
    async fn refresh(&self, project: &Project, http: &reqwest::Client) -> Result<Secret> {
        // Read from the keychain, not from memory: another process of the same build (the CLI
        // next to the app) may have rotated it, and sign-out elsewhere deletes it.
        let Some(refresh_token) = in_store(&self.store, |s| s.load()).await? else {
            *self.current.write().await = None;
            return Err(Error::SignedOut);
        };
        let body = serde_json::json!({ "refresh_token": refresh_token.expose() });
        let result = grant(
            project,
            http,
            &self.retrier,
            "refresh_token",
            Idempotency::Idempotent,
            &body,
        )
        .await;
        let (response, received) = match result {
            Ok(ok) => ok,
            Err(error) if is_dead_session(&error) => {
                tracing::info!(code = ?error.api().map(|a| &a.code), "refresh token refused; session ended");
                *self.current.write().await = None;
                in_store(&self.store, |s| s.delete()).await?;
                return Err(Error::SignedOut);
            }
            Err(error) => return Err(error),
        };
        let rotated = response.refresh_token.clone();
        in_store(&self.store, move |s| s.store(&rotated)).await?;
        let access = AccessToken::from_response(&response, received);
        let token = access.token.clone();
        *self.current.write().await = Some(access);
        let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(refreshes = n, "access token refreshed");
        Ok(token)
    }
}
