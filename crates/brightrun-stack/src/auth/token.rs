//! `POST /token`: the `password` and `refresh_token` grants (supabase-protocol.md §2.5, §2.6;
//! GoTrue `token.go`, `tokens/service.go RefreshTokenGrant`).

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Json, Response};
use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::error::{AuthError, ErrorCode};
use super::session::{self, AuthMethod, REFRESH_TOKEN_LEN, SessionJson};
use super::user::UserRow;
use super::{parse_json, query_param, user_agent};
use crate::AppState;

pub async fn token(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match query_param(query.as_deref(), "grant_type").as_deref() {
        Some("password") => password_grant(&state, &headers, &body)
            .await
            .into_response(),
        Some("refresh_token") => refresh_token_grant(&state, &body).await.into_response(),
        _ => AuthError::bad_request(ErrorCode::InvalidCredentials, "unsupported_grant_type")
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct PasswordGrantParams {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
}

const INVALID_LOGIN: &str = "Invalid login credentials";

async fn password_grant(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<SessionJson>, AuthError> {
    let params: PasswordGrantParams = parse_json(body)?;
    let email = params.email.unwrap_or_default();
    let phone = params.phone.unwrap_or_default();
    let password = params.password.unwrap_or_default();
    if email.is_empty() {
        if phone.is_empty() {
            return Err(AuthError::bad_request(
                ErrorCode::ValidationFailed,
                "missing email or phone",
            ));
        }
        // Like the CLI's default config: no SMS provider, so no phone logins.
        return Err(AuthError::unprocessable(
            ErrorCode::PhoneProviderDisabled,
            "Phone logins are disabled",
        ));
    }

    let db = state.admin_pool();
    let user = UserRow::find_by_email(db, &email.to_lowercase()).await?;
    // Checked even for an unknown user (against a dummy hash), so timing does not reveal who
    // has an account; the password is checked before anything else about the user is revealed.
    let stored = user.as_ref().and_then(|u| u.encrypted_password.as_deref());
    let valid = super::password::verify(&password, stored).await?;
    let user = match user {
        Some(user) if valid => user,
        _ => {
            return Err(AuthError::bad_request(
                ErrorCode::InvalidCredentials,
                INVALID_LOGIN,
            ));
        }
    };
    if user.is_banned(Utc::now()) {
        return Err(AuthError::bad_request(
            ErrorCode::UserBanned,
            "User is banned",
        ));
    }
    if user.email_confirmed_at.is_none() {
        return Err(AuthError::bad_request(
            ErrorCode::EmailNotConfirmed,
            "Email not confirmed",
        ));
    }

    let mut tx = db.begin().await?;
    let (session_id, refresh_token) =
        session::start(&mut tx, user.id, AuthMethod::Password, user_agent(headers)).await?;
    let session = session::respond(state, &mut tx, user.id, session_id, refresh_token).await?;
    tx.commit().await?;
    Ok(Json(session))
}

#[derive(Debug, Deserialize)]
struct RefreshTokenGrantParams {
    refresh_token: Option<String>,
}

const NOT_FOUND: &str = "Invalid Refresh Token: Refresh Token Not Found";
const NO_SESSION: &str = "Invalid Refresh Token: No Valid Session Found";
const ALREADY_USED: &str = "Invalid Refresh Token: Already Used";

fn not_found() -> AuthError {
    AuthError::bad_request(ErrorCode::RefreshTokenNotFound, NOT_FOUND)
}

/// The grant's response carries the informational `sb-auth-*` headers on success and, as far as
/// they were known, on failure too.
async fn refresh_token_grant(
    state: &AppState,
    body: &[u8],
) -> (HeaderMap, Result<Json<SessionJson>, AuthError>) {
    let mut headers = HeaderMap::new();
    let result = async {
        let params: RefreshTokenGrantParams = parse_json(body)?;
        let token = params.refresh_token.unwrap_or_default();
        check_format(&token)?;
        refresh(state, &token, &mut headers).await
    }
    .await;
    (headers, result.map(Json))
}

/// `RefreshTokenGrantParams.Validate`: 12-char v1 tokens, or longer v2 tokens.
fn check_format(token: &str) -> Result<(), AuthError> {
    let valid = match token.len() {
        REFRESH_TOKEN_LEN => token
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        len if len > REFRESH_TOKEN_LEN => is_v2_shaped(token),
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(AuthError::bad_request(
            ErrorCode::ValidationFailed,
            "Refresh token is not valid",
        ))
    }
}

/// The layout of GoTrue's v2 tokens: base64url of `0x00 | session uuid | uvarint counter |
/// hmac[16] | sha256[4]`. This server issues none, so a v2-shaped token is simply not found.
fn is_v2_shaped(token: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token) else {
        return false;
    };
    if bytes.first() != Some(&0) || bytes.len() < 1 + 16 + 1 + 16 + 4 {
        return false;
    }
    // uvarint: at most 10 bytes, the last one without the continuation bit.
    let varint = &bytes[17..];
    let Some(end) = varint.iter().take(10).position(|b| b & 0x80 == 0) else {
        return false;
    };
    varint.len() - (end + 1) == 16 + 4
}

#[derive(Debug, sqlx::FromRow)]
struct LockedToken {
    id: i64,
    token: String,
    revoked: bool,
    /// Whether it is still within `refresh_token_reuse_interval` of its last update (for a
    /// revoked token: of its revocation).
    within_reuse_interval: bool,
}

fn set_header(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// v1 rotation with GoTrue's reuse rules (§2.6), serialised per session by a row lock on the
/// session taken before the token's, so concurrent refreshes and family revocation never
/// deadlock.
async fn refresh(
    state: &AppState,
    token: &str,
    headers: &mut HeaderMap,
) -> Result<SessionJson, AuthError> {
    let db = state.admin_pool();
    let found: Option<(Option<Uuid>, Option<String>)> =
        sqlx::query_as("select session_id, user_id from auth.refresh_tokens where token = $1")
            .bind(token)
            .fetch_optional(db)
            .await?;
    let Some((session_id, user_id)) = found else {
        return Err(not_found());
    };
    let user_id = user_id
        .and_then(|id| Uuid::parse_str(&id).ok())
        .ok_or_else(not_found)?;
    let user = UserRow::find_by_id(db, user_id)
        .await?
        .ok_or_else(not_found)?;
    set_header(headers, "sb-auth-user-id", &user.id.to_string());
    if user.is_banned(Utc::now()) {
        return Err(AuthError::bad_request(
            ErrorCode::UserBanned,
            "Invalid Refresh Token: User Banned",
        ));
    }
    let Some(session_id) = session_id else {
        // A token from before sessions existed: GoTrue deletes it.
        sqlx::query("delete from auth.refresh_tokens where token = $1")
            .bind(token)
            .execute(db)
            .await?;
        return Err(AuthError::bad_request(
            ErrorCode::SessionNotFound,
            NO_SESSION,
        ));
    };
    set_header(headers, "sb-auth-session-id", &session_id.to_string());

    let mut tx = db.begin().await?;
    // GoTrue gives up after 5 s of contention with 409 conflict (see `AuthError::from`).
    sqlx::query("set local lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let session: Option<Uuid> =
        sqlx::query_scalar("select id from auth.sessions where id = $1 for update")
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
    if session.is_none() {
        // Signed out meanwhile: the session's tokens went with it.
        return Err(not_found());
    }
    let reuse_interval = state.config().refresh_token_reuse_interval.as_secs_f64();
    let locked: Option<LockedToken> = sqlx::query_as(
        "select id, token, coalesce(revoked, false) as revoked,
                coalesce(clock_timestamp() <= updated_at + make_interval(secs => $2), false)
                  as within_reuse_interval
         from auth.refresh_tokens where token = $1 for update",
    )
    .bind(token)
    .bind(reuse_interval)
    .fetch_optional(&mut *tx)
    .await?;
    let locked = locked.ok_or_else(not_found)?;

    let mut issued = None;
    if locked.revoked {
        let active: Option<(String, Option<String>)> = sqlx::query_as(
            "select token, parent from auth.refresh_tokens
             where session_id = $1 and revoked = false order by id desc limit 1",
        )
        .bind(session_id)
        .fetch_optional(&mut *tx)
        .await?;
        match active {
            // The client lost the response of its last refresh: hand out that result again.
            Some((active, parent)) if parent.as_deref() == Some(locked.token.as_str()) => {
                issued = Some(active);
            }
            // A concurrent refresh of the same token: another child of it. Only while the family
            // is alive: GoTrue also lets a token revoked by reuse detection back in within the
            // interval (its family revocation refreshes `updated_at`); here that revocation is
            // final, as the protocol intends ("no refresh is possible").
            Some(_) if locked.within_reuse_interval => {}
            _ => {
                sqlx::query(
                    "update auth.refresh_tokens set revoked = true, updated_at = now()
                     where session_id = $1 and revoked = false",
                )
                .bind(session_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::warn!(%session_id, token_id = locked.id,
                    "refresh token reuse detected: revoked every refresh token of the session");
                return Err(AuthError::bad_request(
                    ErrorCode::RefreshTokenAlreadyUsed,
                    ALREADY_USED,
                ));
            }
        }
    }
    let issued = match issued {
        Some(active) => active,
        None => {
            sqlx::query(
                "update auth.refresh_tokens set revoked = true, updated_at = now() where id = $1",
            )
            .bind(locked.id)
            .execute(&mut *tx)
            .await?;
            session::insert_refresh_token(&mut tx, user.id, session_id, Some(&locked.token)).await?
        }
    };
    sqlx::query(
        "update auth.sessions set refreshed_at = timezone('utc', now()), updated_at = now()
         where id = $1",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    set_header(
        headers,
        "sb-auth-refresh-token-prefix",
        issued.get(..5).unwrap_or_default(),
    );
    let session = session::respond(state, &mut tx, user.id, session_id, issued).await?;
    tx.commit().await?;
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_format_follows_gotrue() {
        assert!(
            check_format("abcdefgh2345").is_ok(),
            "12 lowercase alphanumerics are v1"
        );
        assert!(
            check_format("abcdef012389").is_ok(),
            "digits 0-9 pass the format check"
        );
        for bad in [
            "",
            "short",
            "ABCDEFGH2345",
            "abcdefgh234!",
            "abcdefghijklmnopqrstuvwxyz",
        ] {
            let error = check_format(bad).expect_err(bad);
            assert_eq!(
                error.code,
                ErrorCode::ValidationFailed,
                "{bad:?} is not a refresh token"
            );
        }
        let mut v2 = vec![0u8];
        v2.extend_from_slice(Uuid::new_v4().as_bytes());
        v2.push(5); // counter
        v2.extend_from_slice(&[7u8; 20]); // hmac + checksum
        let v2 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v2);
        assert!(
            check_format(&v2).is_ok(),
            "a v2-shaped token passes the format check"
        );
    }
}
