//! Users as GoTrue stores and shows them (`models/user.go`, `models/identity.go`), and
//! `GET /user` with GoTrue's bearer-token checks (`auth.go requireAuthentication`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::error::{AuthError, ErrorCode};
use crate::AppState;
use crate::jwt::{JwtError, Leeway};

/// GoTrue writes `instance_id` as the nil uuid on every row it creates.
pub const INSTANCE_ID: Uuid = Uuid::nil();

/// An `auth.users` row, the columns `/auth/v1` reads.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub aud: Option<String>,
    pub role: Option<String>,
    pub email: Option<String>,
    pub encrypted_password: Option<String>,
    pub email_confirmed_at: Option<DateTime<Utc>>,
    pub invited_at: Option<DateTime<Utc>>,
    pub phone: Option<String>,
    pub phone_confirmed_at: Option<DateTime<Utc>>,
    pub confirmation_sent_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub recovery_sent_at: Option<DateTime<Utc>>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    pub raw_app_meta_data: Option<Value>,
    pub raw_user_meta_data: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub banned_until: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub is_anonymous: bool,
}

const USER_COLUMNS: &str = "id, aud, role, email, encrypted_password, email_confirmed_at, \
    invited_at, phone, phone_confirmed_at, confirmation_sent_at, confirmed_at, recovery_sent_at, \
    last_sign_in_at, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, banned_until, \
    deleted_at, is_anonymous";

impl UserRow {
    pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Self>, AuthError> {
        let sql = format!("select {USER_COLUMNS} from auth.users where id = $1");
        Ok(sqlx::query_as(&sql).bind(id).fetch_optional(db).await?)
    }

    /// `email` must already be lowercased, as GoTrue stores it.
    pub async fn find_by_email(
        db: impl PgExecutor<'_>,
        email: &str,
    ) -> Result<Option<Self>, AuthError> {
        let sql = format!(
            "select {USER_COLUMNS} from auth.users where email = $1 and aud = 'authenticated'"
        );
        Ok(sqlx::query_as(&sql).bind(email).fetch_optional(db).await?)
    }

    pub fn is_banned(&self, now: DateTime<Utc>) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }

    pub fn app_metadata(&self) -> Value {
        object_or_empty(self.raw_app_meta_data.as_ref())
    }

    pub fn user_metadata(&self) -> Value {
        object_or_empty(self.raw_user_meta_data.as_ref())
    }

    /// The User JSON of §2.3 with its identities.
    pub fn to_json(&self, identities: Vec<IdentityJson>) -> UserJson {
        UserJson {
            id: self.id,
            aud: self.aud.clone().unwrap_or_default(),
            role: self.role.clone().unwrap_or_default(),
            email: self.email.clone().unwrap_or_default(),
            email_confirmed_at: self.email_confirmed_at.map(GoTime),
            invited_at: self.invited_at.map(GoTime),
            phone: self.phone.clone().unwrap_or_default(),
            phone_confirmed_at: self.phone_confirmed_at.map(GoTime),
            confirmation_sent_at: self.confirmation_sent_at.map(GoTime),
            confirmed_at: self.confirmed_at.map(GoTime),
            recovery_sent_at: self.recovery_sent_at.map(GoTime),
            last_sign_in_at: self.last_sign_in_at.map(GoTime),
            app_metadata: self.app_metadata(),
            user_metadata: self.user_metadata(),
            identities,
            created_at: GoTime(self.created_at.unwrap_or(DateTime::UNIX_EPOCH)),
            updated_at: GoTime(self.updated_at.unwrap_or(DateTime::UNIX_EPOCH)),
            banned_until: self.banned_until.map(GoTime),
            deleted_at: self.deleted_at.map(GoTime),
            is_anonymous: self.is_anonymous,
        }
    }
}

fn object_or_empty(value: Option<&Value>) -> Value {
    match value {
        Some(Value::Object(map)) => Value::Object(map.clone()),
        _ => Value::Object(Map::new()),
    }
}

/// A timestamp as Go's `time.RFC3339Nano` writes it in UTC: fraction without trailing zeros
/// (`2024-06-10T12:34:56.123456Z`), none at all when it is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoTime(pub DateTime<Utc>);

impl std::fmt::Display for GoTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = format!("{:09}", self.0.timestamp_subsec_nanos());
        let fraction = nanos.trim_end_matches('0');
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S"))?;
        if !fraction.is_empty() {
            write!(f, ".{fraction}")?;
        }
        f.write_str("Z")
    }
}

impl Serialize for GoTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `models.User` as JSON: field order and `omitempty` as in GoTrue.
#[derive(Debug, Clone, Serialize)]
pub struct UserJson {
    pub id: Uuid,
    pub aud: String,
    pub role: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_confirmed_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invited_at: Option<GoTime>,
    pub phone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone_confirmed_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation_sent_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_sent_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sign_in_at: Option<GoTime>,
    pub app_metadata: Value,
    pub user_metadata: Value,
    pub identities: Vec<IdentityJson>,
    pub created_at: GoTime,
    pub updated_at: GoTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned_until: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<GoTime>,
    pub is_anonymous: bool,
}

/// `models.Identity` as JSON: `identity_id` is the row id, `id` the provider's id for the user.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityJson {
    pub identity_id: Uuid,
    pub id: String,
    pub user_id: Uuid,
    pub identity_data: Value,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sign_in_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<GoTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// An `auth.identities` row.
#[derive(Debug, sqlx::FromRow)]
struct IdentityRow {
    id: Uuid,
    provider_id: String,
    user_id: Uuid,
    identity_data: Value,
    provider: String,
    last_sign_in_at: Option<DateTime<Utc>>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    email: Option<String>,
}

impl From<IdentityRow> for IdentityJson {
    fn from(row: IdentityRow) -> Self {
        Self {
            identity_id: row.id,
            id: row.provider_id,
            user_id: row.user_id,
            identity_data: row.identity_data,
            provider: row.provider,
            last_sign_in_at: row.last_sign_in_at.map(GoTime),
            created_at: row.created_at.map(GoTime),
            updated_at: row.updated_at.map(GoTime),
            email: row.email,
        }
    }
}

pub async fn identities_of(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> Result<Vec<IdentityJson>, AuthError> {
    let rows: Vec<IdentityRow> = sqlx::query_as(
        "select id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, \
         updated_at, email from auth.identities where user_id = $1 order by created_at, id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(IdentityJson::from).collect())
}

/// The user with identities, as `/user`, `/signup` and `/token` return it.
pub async fn user_json(db: &sqlx::PgPool, user: &UserRow) -> Result<UserJson, AuthError> {
    Ok(user.to_json(identities_of(db, user.id).await?))
}

/// Who a valid access token belongs to, and the session it was issued for.
#[derive(Debug)]
pub struct Authenticated {
    pub user: UserRow,
    /// `None` for a token without a `session_id` claim (GoTrue accepts those).
    pub session_id: Option<Uuid>,
}

/// GoTrue's `requireAuthentication` + `maybeLoadUserOrSession`: bearer token, signature and
/// expiry (no leeway), `sub`, the user row, then the session row.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Authenticated, AuthError> {
    let token = bearer_token(headers).ok_or_else(|| {
        AuthError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            ErrorCode::NoAuthorization,
            "This endpoint requires a valid Bearer token",
        )
    })?;
    let claims = state
        .keys()
        .verify_claims(token, Leeway::None)
        .map_err(|e| {
            // golang-jwt v5's wording, which GoTrue passes through.
            let reason = match e {
                JwtError::Expired => "token has invalid claims: token is expired".to_owned(),
                JwtError::NotYetValid => {
                    "token has invalid claims: token is not valid yet".to_owned()
                }
                JwtError::BadSignature => {
                    "token signature is invalid: signature is invalid".to_owned()
                }
                JwtError::Invalid(reason) => format!("token is malformed: {reason}"),
            };
            AuthError::forbidden(
                ErrorCode::BadJwt,
                format!("invalid JWT: unable to parse or verify signature, {reason}"),
            )
        })?;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let Some(subject) = subject else {
        return Err(AuthError::forbidden(
            ErrorCode::BadJwt,
            "invalid claim: missing sub claim",
        ));
    };
    let user_id = Uuid::parse_str(subject).map_err(|_| {
        AuthError::bad_request(ErrorCode::BadJwt, "invalid claim: sub claim must be a UUID")
    })?;
    let db = state.admin_pool();
    let user = UserRow::find_by_id(db, user_id).await?.ok_or_else(|| {
        AuthError::forbidden(
            ErrorCode::UserNotFound,
            "User from sub claim in JWT does not exist",
        )
    })?;
    let session_claim = claims
        .get("session_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let session_id = match session_claim {
        "" => None,
        text => match Uuid::parse_str(text) {
            Ok(id) if id.is_nil() => None,
            Ok(id) => Some(id),
            Err(_) => {
                return Err(AuthError::forbidden(
                    ErrorCode::BadJwt,
                    "invalid claim: session_id claim must be a UUID",
                ));
            }
        },
    };
    if let Some(session_id) = session_id {
        let exists: bool =
            sqlx::query_scalar("select exists (select from auth.sessions where id = $1)")
                .bind(session_id)
                .fetch_one(db)
                .await?;
        if !exists {
            return Err(AuthError::forbidden(
                ErrorCode::SessionNotFound,
                "Session from session_id claim in JWT does not exist",
            ));
        }
    }
    Ok(Authenticated { user, session_id })
}

/// `Authorization: Bearer <token>`, scheme case-insensitive, one token without spaces.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let valid = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.chars().any(char::is_whitespace);
    valid.then_some(token)
}

/// `GET /user`: the signed-in user with identities.
pub async fn get_user(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<UserJson>, AuthError> {
    let auth = authenticate(&state, &headers).await?;
    if auth.user.is_banned(Utc::now()) {
        return Err(AuthError::forbidden(
            ErrorCode::UserBanned,
            "User is banned",
        ));
    }
    Ok(Json(user_json(state.admin_pool(), &auth.user).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_trims_the_fraction_like_rfc3339nano() {
        let at = |nanos| DateTime::from_timestamp(1_718_022_896, nanos).expect("valid time");
        assert_eq!(
            GoTime(at(123_456_000)).to_string(),
            "2024-06-10T12:34:56.123456Z"
        );
        assert_eq!(
            GoTime(at(100_000_000)).to_string(),
            "2024-06-10T12:34:56.1Z"
        );
        assert_eq!(GoTime(at(0)).to_string(), "2024-06-10T12:34:56Z");
    }

    #[test]
    fn bearer_tokens_are_parsed_like_gotrue() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("authorization", value.parse().expect("header value"));
            headers
        };
        assert_eq!(bearer_token(&with("Bearer abc.def")), Some("abc.def"));
        assert_eq!(bearer_token(&with("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("Bearer ")), None);
        assert_eq!(bearer_token(&with("Bearer a b")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}
