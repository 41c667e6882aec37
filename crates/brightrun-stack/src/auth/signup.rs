//! `POST /signup` with email autoconfirm, as the Supabase CLI runs GoTrue
//! (supabase-protocol.md §2.4; GoTrue `signup.go`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::error::{AuthError, ErrorCode};
use super::session::{self, AuthMethod, SessionJson};
use super::user::{INSTANCE_ID, UserRow};
use super::{parse_json, password, user_agent};
use crate::AppState;

#[derive(Debug, Deserialize)]
struct SignupParams {
    email: Option<String>,
    phone: Option<String>,
    password: Option<String>,
    /// Becomes `user_metadata`.
    data: Option<Map<String, Value>>,
}

const USER_EXISTS: &str = "User already registered";

pub async fn signup(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SessionJson>, AuthError> {
    let params: SignupParams = parse_json(&body)?;
    let email = params.email.unwrap_or_default();
    let phone = params.phone.unwrap_or_default();
    if email.is_empty() && phone.is_empty() {
        return Err(AuthError::unprocessable(
            ErrorCode::AnonymousProviderDisabled,
            "Anonymous sign-ins are disabled",
        ));
    }
    let password = params.password.unwrap_or_default();
    if password.is_empty() {
        return Err(AuthError::bad_request(
            ErrorCode::ValidationFailed,
            "Signup requires a valid password",
        ));
    }
    password::check_strength(&password)?;
    if !email.is_empty() && !phone.is_empty() {
        return Err(AuthError::bad_request(
            ErrorCode::ValidationFailed,
            "Only an email address or phone number should be provided on signup.",
        ));
    }
    if !phone.is_empty() {
        // Like the CLI's default config: no SMS provider, so no phone signups.
        return Err(AuthError::bad_request(
            ErrorCode::PhoneProviderDisabled,
            "Phone signups are disabled",
        ));
    }
    let email = validate_email(&email)?;
    let hash = password::hash(&password).await?;

    let db = state.admin_pool();
    let mut tx = db.begin().await?;
    if UserRow::find_by_email(&mut *tx, &email).await?.is_some() {
        return Err(AuthError::unprocessable(
            ErrorCode::UserAlreadyExists,
            USER_EXISTS,
        ));
    }
    let user_id = create_confirmed_user(&mut tx, &email, &hash, params.data.unwrap_or_default())
        .await
        .map_err(|e| match e {
            // Lost a race with a concurrent signup of the same address.
            CreateUserError::EmailTaken => {
                AuthError::unprocessable(ErrorCode::UserAlreadyExists, USER_EXISTS)
            }
            CreateUserError::Database(e) => AuthError::from(e),
        })?;
    let (session_id, refresh_token) =
        session::start(&mut tx, user_id, AuthMethod::Password, user_agent(&headers)).await?;
    let session = session::respond(&state, &mut tx, user_id, session_id, refresh_token).await?;
    tx.commit().await?;
    tracing::info!(%user_id, "user signed up");
    Ok(Json(session))
}

#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("a user with this email address already exists")]
    EmailTaken,
    #[error("database error creating a user")]
    Database(#[from] sqlx::Error),
}

/// Inserts a confirmed email user and its `email` identity as GoTrue's signup with autoconfirm
/// leaves them: `user_metadata` is the signup `data` plus `email_verified: true` (`User.Confirm`),
/// the identity's data has `email_verified: false` (it is never updated).
pub async fn create_confirmed_user(
    conn: &mut PgConnection,
    email: &str,
    password_hash: &str,
    mut user_metadata: Map<String, Value>,
) -> Result<Uuid, CreateUserError> {
    let user_id = Uuid::new_v4();
    user_metadata.insert("email_verified".into(), Value::Bool(true));
    let inserted = sqlx::query(
        "insert into auth.users
           (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
            raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at,
            is_anonymous)
         values ($1, $2, 'authenticated', 'authenticated', $3, $4, now(), $5, $6, false, now(),
                 now(), false)",
    )
    .bind(INSTANCE_ID)
    .bind(user_id)
    .bind(email)
    .bind(password_hash)
    .bind(json!({"provider": "email", "providers": ["email"]}))
    .bind(Value::Object(user_metadata))
    .execute(&mut *conn)
    .await;
    if let Err(sqlx::Error::Database(db)) = &inserted
        && db.is_unique_violation()
    {
        return Err(CreateUserError::EmailTaken);
    }
    inserted?;
    sqlx::query(
        "insert into auth.identities
           (id, provider_id, user_id, identity_data, provider, last_sign_in_at, created_at,
            updated_at)
         values ($1, $2, $3, $4, 'email', now(), now(), now())",
    )
    .bind(Uuid::new_v4())
    .bind(user_id.to_string())
    .bind(user_id)
    .bind(json!({
        "sub": user_id.to_string(),
        "email": email,
        "email_verified": false,
        "phone_verified": false,
    }))
    .execute(&mut *conn)
    .await?;
    Ok(user_id)
}

/// GoTrue's `validateEmail`: required, at most 255 bytes, checkmail's format; lowercased.
pub fn validate_email(email: &str) -> Result<String, AuthError> {
    let fail = |message: &str| AuthError::bad_request(ErrorCode::ValidationFailed, message);
    if email.is_empty() {
        return Err(fail("An email address is required"));
    }
    if email.len() > 255 {
        return Err(fail("An email address is too long"));
    }
    if !is_valid_email_format(email) {
        return Err(fail("Unable to validate email address: invalid format"));
    }
    Ok(email.to_lowercase())
}

/// `badoux/checkmail` `ValidateFormat`: a local part of atext and dots, `@`, then dot-separated
/// labels of letters, digits and inner hyphens (at most 63 characters each).
fn is_valid_email_format(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".!#$%&'*+/=?^_`{|}~-".contains(c));
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-')
    };
    local_ok && domain.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_like_checkmail_and_lowercased() {
        assert_eq!(
            validate_email("Ada.Lovelace+x@Example.COM").expect("valid"),
            "ada.lovelace+x@example.com"
        );
        assert!(
            validate_email("a@b").is_ok(),
            "a single-label domain is accepted"
        );
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@-x.com",
            "a@x..com",
            "a b@x.com",
            "a@x_y.com",
        ] {
            let error = validate_email(bad).expect_err(bad);
            assert_eq!(
                error.code,
                ErrorCode::ValidationFailed,
                "{bad:?} must be rejected"
            );
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            validate_email(&long).expect_err("too long").message,
            "An email address is too long"
        );
    }
}
