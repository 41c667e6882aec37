//! Set-up for the session and API tests: the stack under test, real sign-ups, users made directly
//! in the database, rows only the worker would write.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use brightrun_client::api::Api;
use brightrun_client::retry::{Retrier, RetryPolicy};
use brightrun_client::secret::{MemoryStore, SecretStore};
use brightrun_client::session::{Session, SessionOptions};
use brightrun_client::{Project, Secret};
use brightrun_stack::testing::{self, TestStack, TestUser};
use sqlx::PgPool;
use uuid::Uuid;

pub fn stack() -> &'static TestStack {
    testing::stack()
}

pub fn project() -> Project {
    project_at(&stack().url)
}

pub fn project_at(url: &str) -> Project {
    Project {
        url: url.parse().expect("stack URL parses"),
        anon_key: stack().anon_key.clone(),
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Fast retries: tests that go offline must not wait out the production schedule.
pub fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        total_timeout: Duration::from_secs(5),
    }
}

pub fn quick_options() -> SessionOptions {
    SessionOptions {
        retry: quick_retry(),
        ..SessionOptions::default()
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// A new user made through `/auth/v1/signup` (the stack autoconfirms), so sign-in is real.
pub async fn sign_up(tag: &str) -> String {
    let email = testing::unique_email(tag);
    let response = http()
        .post(stack().auth("signup"))
        .header("apikey", &stack().anon_key)
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("signup request");
    assert!(
        response.status().is_success(),
        "signup failed: {}",
        response.status()
    );
    email
}

/// A signed-up user signed in through the client, with its store.
pub async fn signed_in(tag: &str) -> (Arc<Session>, Arc<MemoryStore>) {
    let email = sign_up(tag).await;
    let store = Arc::new(MemoryStore::new());
    let session = Session::sign_in_with(
        quick_options(),
        project(),
        store.clone(),
        http(),
        &email,
        &Secret::new(PASSWORD),
    )
    .await
    .expect("sign in");
    (session, store)
}

pub fn stored_token(store: &MemoryStore) -> Secret {
    store
        .load()
        .expect("memory store")
        .expect("a stored refresh token")
}

/// A user minted in the database, with a static-token session and its API.
pub async fn minted(tag: &str) -> (TestUser, Api) {
    let user = testing::mint_user(stack(), tag).await;
    let session = Session::with_static_token(
        project(),
        http(),
        user.id,
        Secret::new(user.access_token.clone()),
    );
    let api = Api::with_retrier(session, Retrier::new(quick_retry()));
    (user, api)
}

/// The `session_id` claim of an access token (GoTrue JWT).
pub fn session_id_of(token: &Secret) -> Uuid {
    let payload = token
        .expose()
        .split('.')
        .nth(1)
        .expect("a JWT has a payload");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    let claims: serde_json::Value = serde_json::from_slice(&json).expect("JSON claims");
    claims["session_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("a session_id claim")
}

pub async fn db() -> PgPool {
    stack().db().await
}

/// A dataset of `user_id` that the worker has validated: 90 training pairs of 100 000 tokens.
pub async fn ready_dataset(db: &PgPool, user_id: Uuid, name: &str) -> Uuid {
    let shape = testing::DatasetShape {
        name: name.to_owned(),
        training_tokens: 100_000,
        ..testing::DatasetShape::default()
    };
    testing::ready_dataset(db, user_id, &shape).await
}
