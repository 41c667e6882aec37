//! `/auth/v1`: the GoTrue subset (supabase-protocol.md §2): email sign-up with autoconfirm,
//! password and refresh-token grants with v1 rotation and reuse detection, `GET /user` and
//! `POST /logout`, on GoTrue's own `auth` tables so hosted and local databases look alike.

mod error;
mod logout;
mod password;
mod session;
mod signup;
mod token;
mod user;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::AppState;
use error::{AuthError, ErrorCode};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", post(signup::signup))
        .route("/token", post(token::token))
        .route("/user", get(user::get_user))
        .route("/logout", post(logout::logout))
        .layer(axum::middleware::from_fn(error::api_version))
}

/// Creates a confirmed email user unless one exists; returns its id. Used for demo users. An
/// existing user keeps its password.
pub async fn ensure_user(
    state: &AppState,
    email: &str,
    password: &str,
) -> anyhow::Result<uuid::Uuid> {
    let email =
        signup::validate_email(email).map_err(|e| anyhow::anyhow!("demo user: {}", e.message))?;
    password::check_strength(password).map_err(|e| anyhow::anyhow!("demo user: {}", e.message))?;
    let db = state.admin_pool();
    if let Some(user) = user::UserRow::find_by_email(db, &email).await? {
        return Ok(user.id);
    }
    let hash = password::hash(password).await?;
    let mut tx = db.begin().await?;
    let created = signup::create_confirmed_user(&mut tx, &email, &hash, Default::default()).await;
    match created {
        Ok(id) => {
            tx.commit().await?;
            Ok(id)
        }
        // Created concurrently by someone else: theirs stands.
        Err(signup::CreateUserError::EmailTaken) => {
            drop(tx);
            let user = user::UserRow::find_by_email(db, &email).await?;
            user.map(|u| u.id)
                .ok_or_else(|| anyhow::anyhow!("demo user {email} vanished"))
        }
        Err(signup::CreateUserError::Database(e)) => Err(e.into()),
    }
}

/// A JSON request body, or 400 `bad_json` with serde's reason (GoTrue: "Could not parse request
/// body as JSON: …"). Unknown fields are ignored.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, AuthError> {
    serde_json::from_slice(body).map_err(|e| {
        AuthError::bad_request(
            ErrorCode::BadJson,
            format!("Could not parse request body as JSON: {e}"),
        )
    })
}

/// The first value of `name` in a raw query string, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}
