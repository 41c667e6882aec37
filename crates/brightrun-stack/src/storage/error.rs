//! Storage's two error conventions (supabase-protocol.md §4.1, §4.8): the object API answers HTTP
//! 400 for every non-5xx error with the logical status as a *string* in a JSON body; TUS answers
//! the real status with a plain-text body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An object-API error: `{"statusCode":"404","error":"not_found","message":"…","code":"NoSuchKey"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError {
    /// The logical status, sent as a string in the body.
    pub status: u16,
    pub error: &'static str,
    pub code: &'static str,
    pub message: String,
}

impl StorageError {
    fn new(
        status: u16,
        error: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
        }
    }
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(403, "Unauthorized", "AccessDenied", message)
    }
    pub fn rls_violation() -> Self {
        Self::access_denied("new row violates row-level security policy")
    }
    pub fn object_not_found() -> Self {
        Self::new(404, "not_found", "NoSuchKey", "Object not found")
    }
    pub fn blob_missing() -> Self {
        Self::new(404, "Not found", "NoSuchKey", "The resource was not found")
    }
    pub fn bucket_not_found() -> Self {
        Self::new(404, "Bucket not found", "NoSuchBucket", "Bucket not found")
    }
    pub fn duplicate() -> Self {
        Self::new(
            409,
            "Duplicate",
            "KeyAlreadyExists",
            "The resource already exists",
        )
    }
    pub fn too_large() -> Self {
        Self::new(
            413,
            "Payload too large",
            "EntityTooLarge",
            "The object exceeded the maximum allowed size",
        )
    }
    pub fn mime_not_allowed(mime: &str) -> Self {
        Self::new(
            415,
            "invalid_mime_type",
            "InvalidMimeType",
            format!("mime type {mime} is not supported"),
        )
    }
    pub fn invalid_key(key: &str) -> Self {
        Self::new(
            400,
            "InvalidKey",
            "InvalidKey",
            format!("Invalid key: {key}"),
        )
    }
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidSignature", "InvalidSignature", message)
    }
    pub fn invalid_jwt(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidJWT", "InvalidJWT", message)
    }
    pub fn invalid_range() -> Self {
        Self::new(
            416,
            "invalid_range",
            "InvalidRange",
            "invalid range provided",
        )
    }
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequest", "InvalidRequest", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", "InternalError", message)
    }

    /// The HTTP status actually sent: 400 for every logical 4xx except 416, else the real one.
    fn http_status(&self) -> StatusCode {
        let real = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if self.status == 416 || real.is_server_error() {
            real
        } else {
            StatusCode::BAD_REQUEST
        }
    }
}

impl IntoResponse for StorageError {
    fn into_response(self) -> Response {
        // Key order follows storage-api's schema: statusCode, error, message, code.
        let body = format!(
            "{{\"statusCode\":{},\"error\":{},\"message\":{},\"code\":{}}}",
            json!(self.status.to_string()),
            json!(self.error),
            json!(self.message),
            json!(self.code)
        );
        let mut response = (self.http_status(), body).into_response();
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        response
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(db) = err.as_database_error() {
            match db.code().as_deref() {
                Some("42501") => return Self::rls_violation(),
                Some("23505") => return Self::duplicate(),
                _ => {}
            }
        }
        tracing::error!(error = %err, "storage database error");
        Self::internal("Internal Server Error")
    }
}

impl From<std::io::Error> for StorageError {
    fn from(err: std::io::Error) -> Self {
        tracing::error!(error = %err, "storage i/o error");
        Self::internal("Internal Server Error")
    }
}

/// A TUS error: the real status and the message as plain text (`@tus/server` adds a newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusError {
    pub status: StatusCode,
    pub message: String,
}

impl TusError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<StorageError> for TusError {
    /// Checks shared with the object API keep their logical status on the TUS side.
    fn from(err: StorageError) -> Self {
        let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            message: err.message,
        }
    }
}

impl From<std::io::Error> for TusError {
    fn from(err: std::io::Error) -> Self {
        StorageError::from(err).into()
    }
}

impl From<sqlx::Error> for TusError {
    fn from(err: sqlx::Error) -> Self {
        StorageError::from(err).into()
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.message)).into_response();
        let headers = response.headers_mut();
        headers.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
