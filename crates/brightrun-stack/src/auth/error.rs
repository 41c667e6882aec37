//! GoTrue's error responses (supabase-protocol.md §2.1): one error type, two body shapes chosen by
//! the request's `X-Supabase-Api-Version`, and the `x-sb-error-code` header on every error.

use std::fmt;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The request header auth-js sends and GoTrue echoes on errors.
pub const API_VERSION_HEADER: HeaderName = HeaderName::from_static("x-supabase-api-version");
const ERROR_CODE_HEADER: HeaderName = HeaderName::from_static("x-sb-error-code");

/// The error body shapes GoTrue knows (`apiversions.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// No header, an unparsable one, or a date before 2024-01-01:
    /// `{"code":<status>,"error_code":…,"msg":…}`.
    Initial,
    /// `{"code":<error_code>,"message":…}`.
    V20240101,
}

impl ApiVersion {
    /// GoTrue's `DetermineClosestAPIVersion`: the newest version not after the requested date.
    pub fn from_header(value: Option<&str>) -> Self {
        let Some(value) = value else {
            return Self::Initial;
        };
        match chrono::NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d") {
            Ok(date) if date >= V20240101_DATE => Self::V20240101,
            _ => Self::Initial,
        }
    }
}

const V20240101_DATE: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(2024, 1, 1) {
    Some(date) => date,
    None => panic!("2024-01-01 is a valid date"),
};

tokio::task_local! {
    /// The API version of the request being served, set by [`api_version`] around each `/auth/v1`
    /// request so that [`AuthError::into_response`] can pick the body shape.
    static API_VERSION: ApiVersion;
}

/// Middleware on the `/auth/v1` router: remembers the request's API version for error rendering.
pub async fn api_version(request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(&API_VERSION_HEADER)
        .and_then(|v| v.to_str().ok());
    let version = ApiVersion::from_header(header);
    API_VERSION.scope(version, next.run(request)).await
}

/// GoTrue's `error_code` values that this subset returns (`apierrors/errorcode.go`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnexpectedFailure,
    ValidationFailed,
    BadJson,
    BadJwt,
    NoAuthorization,
    InvalidCredentials,
    WeakPassword,
    UserAlreadyExists,
    UserNotFound,
    UserBanned,
    EmailNotConfirmed,
    AnonymousProviderDisabled,
    PhoneProviderDisabled,
    SessionNotFound,
    RefreshTokenNotFound,
    RefreshTokenAlreadyUsed,
    Conflict,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedFailure => "unexpected_failure",
            Self::ValidationFailed => "validation_failed",
            Self::BadJson => "bad_json",
            Self::BadJwt => "bad_jwt",
            Self::NoAuthorization => "no_authorization",
            Self::InvalidCredentials => "invalid_credentials",
            Self::WeakPassword => "weak_password",
            Self::UserAlreadyExists => "user_already_exists",
            Self::UserNotFound => "user_not_found",
            Self::UserBanned => "user_banned",
            Self::EmailNotConfirmed => "email_not_confirmed",
            Self::AnonymousProviderDisabled => "anonymous_provider_disabled",
            Self::PhoneProviderDisabled => "phone_provider_disabled",
            Self::SessionNotFound => "session_not_found",
            Self::RefreshTokenNotFound => "refresh_token_not_found",
            Self::RefreshTokenAlreadyUsed => "refresh_token_already_used",
            Self::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An `/auth/v1` error: what the client sees (status, code, message) and, for server faults, the
/// cause, which is logged but never sent.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct AuthError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// `weak_password.reasons` of a weak-password error (`length`, `characters`, `pwned`).
    pub weak_password: Option<Vec<&'static str>>,
    #[source]
    source: Option<Source>,
}

/// The message GoTrue sends for every unexpected failure: details stay in the server log.
const UNEXPECTED_FAILURE_MESSAGE: &str =
    "Unexpected failure, please check server logs for more information";

impl AuthError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            weak_password: None,
            source: None,
        }
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn weak_password(message: impl Into<String>, reasons: Vec<&'static str>) -> Self {
        Self {
            weak_password: Some(reasons),
            ..Self::unprocessable(ErrorCode::WeakPassword, message)
        }
    }

    /// A server-side failure: 500 `unexpected_failure` with GoTrue's generic message.
    pub fn internal(source: impl Into<Source>) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::UnexpectedFailure,
                UNEXPECTED_FAILURE_MESSAGE,
            )
        }
    }

    fn body(&self, version: ApiVersion, error_id: Option<&str>) -> Value {
        let mut body = match version {
            ApiVersion::V20240101 => json!({"code": self.code.as_str(), "message": self.message}),
            ApiVersion::Initial => json!({
                "code": self.status.as_u16(),
                "error_code": self.code.as_str(),
                "msg": self.message,
            }),
        };
        if let Some(reasons) = &self.weak_password {
            body["weak_password"] = json!({ "reasons": reasons });
        }
        if let (ApiVersion::Initial, Some(error_id)) = (version, error_id) {
            body["error_id"] = json!(error_id);
        }
        body
    }
}

impl From<sqlx::Error> for AuthError {
    fn from(error: sqlx::Error) -> Self {
        // lock_not_available: a refresh waited `lock_timeout` for a session another request holds.
        if let sqlx::Error::Database(db) = &error
            && db.code().as_deref() == Some("55P03")
        {
            return Self::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "Too many concurrent token refresh requests on the same session or refresh token",
            );
        }
        Self::internal(error)
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let version = API_VERSION.try_with(|v| *v).unwrap_or(ApiVersion::Initial);
        let error_id = self
            .status
            .is_server_error()
            .then(|| uuid::Uuid::new_v4().to_string());
        if let Some(error_id) = &error_id {
            match &self.source {
                Some(source) => tracing::error!(%error_id, error = %source, "auth request failed"),
                None => tracing::error!(%error_id, message = %self.message, "auth request failed"),
            }
        }
        let mut response = (
            self.status,
            axum::Json(self.body(version, error_id.as_deref())),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(
            ERROR_CODE_HEADER,
            HeaderValue::from_static(self.code.as_str()),
        );
        if version == ApiVersion::V20240101 {
            headers.insert(API_VERSION_HEADER, HeaderValue::from_static("2024-01-01"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_picks_the_closest_known_version() {
        assert_eq!(ApiVersion::from_header(None), ApiVersion::Initial);
        assert_eq!(
            ApiVersion::from_header(Some("2024-01-01")),
            ApiVersion::V20240101
        );
        assert_eq!(
            ApiVersion::from_header(Some("2025-06-30")),
            ApiVersion::V20240101
        );
        assert_eq!(
            ApiVersion::from_header(Some("2023-12-31")),
            ApiVersion::Initial
        );
        assert_eq!(
            ApiVersion::from_header(Some("yesterday")),
            ApiVersion::Initial
        );
    }

    #[test]
    fn bodies_follow_the_version() {
        let error =
            AuthError::weak_password("Password should be at least 6 characters.", vec!["length"]);
        assert_eq!(
            error.body(ApiVersion::V20240101, None),
            json!({"code": "weak_password", "message": "Password should be at least 6 characters.",
                   "weak_password": {"reasons": ["length"]}})
        );
        assert_eq!(
            error.body(ApiVersion::Initial, None),
            json!({"code": 422, "error_code": "weak_password",
                   "msg": "Password should be at least 6 characters.",
                   "weak_password": {"reasons": ["length"]}})
        );
        let internal = AuthError::internal(std::io::Error::other("disk on fire"));
        let body = internal.body(ApiVersion::Initial, Some("id-1"));
        assert_eq!(body["error_id"], "id-1", "legacy 5xx bodies carry error_id");
        assert!(
            !body.to_string().contains("disk on fire"),
            "the cause must never reach the client"
        );
    }
}
