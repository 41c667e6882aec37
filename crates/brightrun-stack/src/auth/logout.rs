//! `POST /logout?scope=global|local|others` (supabase-protocol.md §2.8; GoTrue `logout.go`).
//! Deleting a session deletes its refresh tokens and AMR claims (foreign keys cascade); access
//! tokens already issued stay valid until `exp` everywhere except `/auth/v1`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};

use super::error::{AuthError, ErrorCode};
use super::query_param;
use super::user::authenticate;
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Every session of the user (the default).
    Global,
    /// The session of the presented access token.
    Local,
    /// Every session but that one.
    Others,
}

pub async fn logout(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<StatusCode, AuthError> {
    let auth = authenticate(&state, &headers).await?;
    let scope = match query_param(query.as_deref(), "scope").as_deref() {
        None | Some("") | Some("global") => Scope::Global,
        Some("local") => Scope::Local,
        Some("others") => Scope::Others,
        Some(other) => {
            return Err(AuthError::bad_request(
                ErrorCode::ValidationFailed,
                format!("Unsupported logout scope {other:?}"),
            ));
        }
    };
    let db = state.admin_pool();
    let user_id = auth.user.id;
    match (scope, auth.session_id) {
        (Scope::Local, Some(session_id)) => {
            sqlx::query("delete from auth.sessions where id = $1")
                .bind(session_id)
                .execute(db)
                .await?;
        }
        (Scope::Others, Some(session_id)) => {
            sqlx::query("delete from auth.sessions where user_id = $1 and id <> $2")
                .bind(user_id)
                .bind(session_id)
                .execute(db)
                .await?;
        }
        // GoTrue: a token without a session_id claim logs out everywhere, whatever the scope.
        _ => {
            sqlx::query("delete from auth.sessions where user_id = $1")
                .bind(user_id)
                .execute(db)
                .await?;
        }
    }
    tracing::info!(%user_id, ?scope, "signed out");
    Ok(StatusCode::NO_CONTENT)
}
