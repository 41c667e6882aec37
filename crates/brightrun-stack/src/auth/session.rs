//! Sessions, access tokens and v1 refresh tokens (`tokens/service.go`, `models/sessions.go`,
//! `models/refresh_token.go`; supabase-protocol.md §2.2, §2.3, §2.6).

use chrono::Utc;
use rand::Rng as _;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::error::AuthError;
use super::user::{INSTANCE_ID, UserJson, UserRow, identities_of};
use crate::AppState;

/// How a session was authenticated (`models/factor.go` method strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    Password,
}

impl AuthMethod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
        }
    }
}

/// `tokens.AccessTokenResponse`.
#[derive(Debug, Serialize)]
pub struct SessionJson {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub expires_at: i64,
    pub refresh_token: String,
    pub user: UserJson,
}

/// `AccessTokenClaims`, in GoTrue's field order; `aud` is a single string.
#[derive(Debug, Serialize)]
struct AccessTokenClaims<'a> {
    iss: &'a str,
    sub: String,
    aud: &'a str,
    exp: i64,
    iat: i64,
    email: &'a str,
    phone: &'a str,
    app_metadata: Value,
    user_metadata: Value,
    role: &'a str,
    aal: String,
    amr: Vec<AmrEntry>,
    session_id: String,
    is_anonymous: bool,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
struct AmrEntry {
    method: String,
    timestamp: i64,
}

/// A new session for `user_id` after a successful sign-in: the `auth.sessions` row, its AMR
/// claim, its first refresh token, and the user's `last_sign_in_at`. Returns the session id and
/// the refresh token.
pub async fn start(
    conn: &mut PgConnection,
    user_id: Uuid,
    method: AuthMethod,
    user_agent: Option<&str>,
) -> Result<(Uuid, String), AuthError> {
    let session_id = Uuid::new_v4();
    sqlx::query(
        "insert into auth.sessions (id, user_id, created_at, updated_at, aal, user_agent)
         values ($1, $2, now(), now(), 'aal1', $3)",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(user_agent)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "insert into auth.mfa_amr_claims (id, session_id, created_at, updated_at, authentication_method)
         values ($1, $2, now(), now(), $3)",
    )
    .bind(Uuid::new_v4())
    .bind(session_id)
    .bind(method.as_str())
    .execute(&mut *conn)
    .await?;
    let token = insert_refresh_token(conn, user_id, session_id, None).await?;
    sqlx::query("update auth.users set last_sign_in_at = now(), updated_at = now() where id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok((session_id, token))
}

/// Stores a new v1 refresh token of `session_id`, child of `parent` when rotating.
pub async fn insert_refresh_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    parent: Option<&str>,
) -> Result<String, AuthError> {
    let token = new_refresh_token();
    sqlx::query(
        "insert into auth.refresh_tokens
           (instance_id, token, user_id, revoked, created_at, updated_at, parent, session_id)
         values ($1, $2, $3, false, now(), now(), $4, $5)",
    )
    .bind(INSTANCE_ID)
    .bind(&token)
    .bind(user_id.to_string())
    .bind(parent)
    .bind(session_id)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// The alphabet of GoTrue's v1 tokens: lowercase base32 (`crypto.SecureAlphanumeric`).
const REFRESH_TOKEN_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
pub const REFRESH_TOKEN_LEN: usize = 12;

/// 12 characters from a CSPRNG: 60 bits, as GoTrue's v1 tokens.
fn new_refresh_token() -> String {
    let mut rng = rand::rngs::OsRng;
    (0..REFRESH_TOKEN_LEN)
        .map(|_| char::from(REFRESH_TOKEN_ALPHABET[rng.gen_range(0..REFRESH_TOKEN_ALPHABET.len())]))
        .collect()
}

/// The Session JSON for `session_id` of `user_id`: a fresh access token whose `amr` and `aal`
/// come from the session's stored claims, `refresh_token`, and the user with identities.
pub async fn respond(
    state: &AppState,
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    refresh_token: String,
) -> Result<SessionJson, AuthError> {
    let user = UserRow::find_by_id(&mut *conn, user_id)
        .await?
        .ok_or_else(|| AuthError::internal(format!("user {user_id} vanished while signing in")))?;
    let aal: Option<String> = sqlx::query_scalar("select aal from auth.sessions where id = $1")
        .bind(session_id)
        .fetch_optional(&mut *conn)
        .await?
        .flatten();
    // Newest first, timestamps in unix seconds (`Session.CalculateAALAndAMR`).
    let amr: Vec<AmrEntry> = sqlx::query_as(
        "select authentication_method as method, floor(extract(epoch from updated_at))::bigint as timestamp
         from auth.mfa_amr_claims where session_id = $1 order by updated_at desc, id",
    )
    .bind(session_id)
    .fetch_all(&mut *conn)
    .await?;
    let identities = identities_of(&mut *conn, user_id).await?;

    let now = Utc::now().timestamp();
    let expiry = i64::try_from(state.config().jwt_expiry.as_secs()).unwrap_or(i64::MAX / 2);
    let expires_at = now + expiry;
    let claims = AccessTokenClaims {
        iss: &state.keys().issuer,
        sub: user.id.to_string(),
        aud: user.aud.as_deref().unwrap_or("authenticated"),
        exp: expires_at,
        iat: now,
        email: user.email.as_deref().unwrap_or_default(),
        phone: user.phone.as_deref().unwrap_or_default(),
        app_metadata: user.app_metadata(),
        user_metadata: user.user_metadata(),
        role: user.role.as_deref().unwrap_or("authenticated"),
        aal: aal.unwrap_or_else(|| "aal1".to_owned()),
        amr,
        session_id: session_id.to_string(),
        is_anonymous: user.is_anonymous,
    };
    Ok(SessionJson {
        access_token: state.keys().sign(&claims),
        token_type: "bearer",
        expires_in: expires_at - now,
        expires_at,
        refresh_token,
        user: user.to_json(identities),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_twelve_lowercase_base32_chars() {
        for _ in 0..100 {
            let token = new_refresh_token();
            assert_eq!(
                token.len(),
                REFRESH_TOKEN_LEN,
                "v1 tokens are 12 chars: {token}"
            );
            assert!(
                token.bytes().all(|b| REFRESH_TOKEN_ALPHABET.contains(&b)),
                "only lowercase base32 characters: {token}"
            );
        }
        assert_ne!(
            new_refresh_token(),
            new_refresh_token(),
            "tokens are random"
        );
    }
}
