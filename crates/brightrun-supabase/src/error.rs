//! Errors on the wire. Server error bodies are kept losslessly (GoTrue, PostgREST and Storage
//! each have their own shape, TUS answers in plain text); whether to retry is a typed property,
//! never decided from text.
//!
//! Three questions are answered here and nowhere else:
//! - `is_retryable`: is the failure transient, so the same request may succeed later?
//! - `retry_after`: did the server say how long to wait?
//! - `code`: which of the few situations a front end branches on is this ([`ErrorCode`])?

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Auth,
    Rest,
    Storage,
    Tus,
}

/// An error answer from the server, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub service: Service,
    /// The HTTP status (for Storage: the logical status from the body's `statusCode`).
    pub status: u16,
    /// GoTrue `error_code`, PostgREST `code` (SQLSTATE or PGRSTxxx), Storage `code`.
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
    /// `Retry-After`, in seconds, when the server sent one.
    pub retry_after: Option<u64>,
}

/// The small, closed set of situations the window and the CLI branch on (ARCHITECTURE §8, §11).
/// It crosses the IPC boundary and the CLI's `--json` as its snake_case name; everything else
/// about an error is its message and hint. Add a variant only when a front end acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The server could not be reached: show cached data, try again later.
    Offline,
    /// Not signed in, or the session is gone (revoked, signed out elsewhere): sign in again.
    AuthExpired,
    /// Signed in, but this is not allowed (row-level security, a storage policy, a banned user).
    Forbidden,
    /// No such row or object of the caller's (another user's are not found, too).
    NotFound,
    /// The target is in a state that does not allow this (exists already, finished, in use).
    Conflict,
    /// A file over the size limit.
    TooLarge,
    /// A file of a type that is not accepted.
    UnsupportedType,
    /// A rate limit or a per-user limit was reached: wait, then try again.
    RateLimited,
    /// The request or the input was refused as invalid (a bad value, a dataset with errors, a
    /// wrong password); the message says what.
    ValidationFailed,
    /// The OS keychain (Secret Service, Keychain, Credential Manager) could not be used.
    KeychainUnavailable,
    /// The server failed (5xx) or answered something this client cannot read.
    Server,
    /// The user cancelled the operation.
    Cancelled,
    /// No project is configured yet (no URL or anon key): choose one first.
    NotConfigured,
    /// This machine failed: a file could not be read or written, the local database failed.
    Local,
}

impl ErrorCode {
    /// The wire name, e.g. `auth_expired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Offline => "offline",
            Self::AuthExpired => "auth_expired",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::TooLarge => "too_large",
            Self::UnsupportedType => "unsupported_type",
            Self::RateLimited => "rate_limited",
            Self::ValidationFailed => "validation_failed",
            Self::KeychainUnavailable => "keychain_unavailable",
            Self::Server => "server",
            Self::Cancelled => "cancelled",
            Self::NotConfigured => "not_configured",
            Self::Local => "local",
        }
    }

    /// By HTTP status alone, for answers whose code says nothing more specific.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 => Self::AuthExpired,
            403 => Self::Forbidden,
            404 | 410 => Self::NotFound,
            409 | 412 | 423 => Self::Conflict,
            413 => Self::TooLarge,
            415 => Self::UnsupportedType,
            429 => Self::RateLimited,
            400..=499 => Self::ValidationFailed,
            _ => Self::Server,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiError {
    /// Reads an error answer in the shape `service` uses: GoTrue `{code,message}` (or the legacy
    /// `{code:int,error_code,msg}`), PostgREST `{code,details,hint,message}`, Storage
    /// `{statusCode:"4xx",error,message,code}` sent as HTTP 400, TUS plain text.
    pub async fn from_response(service: Service, response: reqwest::Response) -> Self {
        let http_status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = response.text().await.unwrap_or_default();
        Self::from_body(service, http_status, &text, retry_after)
    }

    pub fn from_body(
        service: Service,
        http_status: u16,
        text: &str,
        retry_after: Option<u64>,
    ) -> Self {
        let json: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (status, code, message) = match service {
            Service::Auth => (
                http_status,
                field("error_code")
                    .or_else(|| field("code"))
                    .unwrap_or_default(),
                field("msg")
                    .or_else(|| field("message"))
                    .or_else(|| field("error_description"))
                    .or_else(|| field("error")),
            ),
            Service::Rest => (
                http_status,
                field("code").unwrap_or_default(),
                field("message"),
            ),
            Service::Storage => (
                field("statusCode")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(http_status),
                field("code").or_else(|| field("error")).unwrap_or_default(),
                field("message"),
            ),
            Service::Tus => (http_status, String::new(), Some(text.trim_end().to_owned())),
        };
        Self {
            service,
            status,
            code,
            message: message.unwrap_or_else(|| text.trim().chars().take(500).collect()),
            details: field("details"),
            hint: field("hint"),
            retry_after,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self.service {
            // PostgREST: a SQLSTATE decides (its 500s include permanent ones such as 42P17 or
            // XX000, and 40001/40P01 arrive as 500 too); PGRSTxxx and gateway answers go by
            // status (PGRST000-003: no database connection, 503/504).
            Service::Rest if is_sqlstate(&self.code) => {
                is_transient_sqlstate(&self.code) || matches!(self.status, 429 | 503)
            }
            // GoTrue 409 `conflict`: too many concurrent refreshes of one session; it clears.
            Service::Auth if self.status == 409 => self.code == "conflict",
            // TUS 409 is an offset mismatch: the caller must resync with HEAD, never resend.
            Service::Tus if self.status == 409 => false,
            _ => is_transient_status(self.status),
        }
    }

    /// Whether even a request that is not idempotent (an insert) may be sent again: the answer
    /// is transient and says the request was not applied (PostgREST runs each request in one
    /// transaction that an error rolls back); a gateway's 502/504 is ambiguous.
    pub fn is_retryable_unapplied(&self) -> bool {
        self.is_retryable() && !matches!(self.status, 502 | 504)
    }

    /// The front end's view of this answer.
    pub fn code(&self) -> ErrorCode {
        let code = self.code.as_str();
        match self.service {
            Service::Auth => match code {
                "no_authorization"
                | "bad_jwt"
                | "session_not_found"
                | "session_expired"
                | "refresh_token_not_found"
                | "refresh_token_already_used"
                | "user_not_found"
                | "reauthentication_needed" => ErrorCode::AuthExpired,
                "user_banned" => ErrorCode::Forbidden,
                "user_already_exists" | "email_exists" | "conflict" => ErrorCode::Conflict,
                "over_request_rate_limit" | "over_email_send_rate_limit" => ErrorCode::RateLimited,
                "invalid_credentials"
                | "validation_failed"
                | "weak_password"
                | "email_address_invalid"
                | "email_not_confirmed" => ErrorCode::ValidationFailed,
                _ => ErrorCode::from_status(self.status),
            },
            Service::Rest => match code {
                // JWT missing, invalid or expired.
                "PGRST301" | "PGRST302" | "PGRST303" => ErrorCode::AuthExpired,
                // Insufficient privilege: 403 for a signed-in user; 401 when the request ran
                // as anon, i.e. without a user.
                "42501" if self.status == 401 => ErrorCode::AuthExpired,
                "42501" => ErrorCode::Forbidden,
                "PT404" | "PGRST116" => ErrorCode::NotFound,
                "23505" | "23503" | "PT409" => ErrorCode::Conflict,
                "PT429" => ErrorCode::RateLimited,
                "22023" | "22P02" | "23502" | "23514" | "P0001" => ErrorCode::ValidationFailed,
                _ => ErrorCode::from_status(self.status),
            },
            // Storage refuses a user's expired or invalid JWT as 403 `AccessDenied`, the code it
            // also uses for a policy that says no; only jose's wording tells them apart (see
            // supabase-protocol.md §4.1). Signed URLs' own tokens are `InvalidJWT`.
            Service::Storage
                if code == "InvalidJWT"
                    || (code == "AccessDenied" && is_jwt_refusal(&self.message)) =>
            {
                ErrorCode::AuthExpired
            }
            // A signed upload token refused (expired, wrong path) in TUS's plain text.
            Service::Tus
                if crate::tus::TusRefusal::of(self) == crate::tus::TusRefusal::BadToken =>
            {
                ErrorCode::AuthExpired
            }
            // Storage sends its logical status in the body; `from_body` already took it.
            Service::Storage | Service::Tus => ErrorCode::from_status(self.status),
        }
    }

    /// `Retry-After`, when the server sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after.map(Duration::from_secs)
    }
}

/// jose's messages for a JWT that failed verification, as storage-api passes them on.
fn is_jwt_refusal(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "\"exp\" claim",
        "compact jws",
        "signature verification failed",
        "jwt malformed",
        "jwt expired",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

/// SQLSTATEs after which the same statement may well succeed: connection problems (class 08),
/// serialization failures and deadlocks (the transaction was rolled back), insufficient resources
/// (class 53, except 53400 configuration limit exceeded), and the server shutting down or
/// starting (57P01-57P03). A statement timeout (57014) is deliberately not here: it would time
/// out again.
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
        || (code.starts_with("53") && code != "53400")
}

/// A 5-character SQLSTATE (as opposed to a PostgREST `PGRSTxxx` code or nothing).
fn is_sqlstate(code: &str) -> bool {
    code.len() == 5 && !code.starts_with("PGRST") && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// HTTP statuses that say "not now" rather than "not this": timeouts, rate limits and server or
/// gateway failures. 501 (not implemented) and 505 (HTTP version) will not change on a retry.
fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429) || ((500..=599).contains(&status) && !matches!(status, 501 | 505))
}

/// The connection failed: refused, timed out, or dropped while sending or reading. A connection
/// cut in the middle of a body reaches us as a *decode* error (reqwest's decoder wraps body
/// errors) whose cause is an I/O error, so the cause chain is read too; a body that arrived whole
/// but is not valid JSON has no I/O cause and is not a transport failure.
pub fn is_transport_failure(error: &reqwest::Error) -> bool {
    if error.is_timeout()
        || error.is_connect()
        || error.is_body()
        || (error.is_request() && !error.is_builder())
    {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        if let Some(inner) = cause.downcast_ref::<reqwest::Error>()
            && (inner.is_body() || inner.is_timeout() || inner.is_connect())
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The front end's view of an HTTP client failure.
pub fn network_code(error: &reqwest::Error) -> ErrorCode {
    if is_transport_failure(error) {
        ErrorCode::Offline
    } else if error.is_builder() {
        ErrorCode::Local
    } else if error.is_decode() {
        // An answer that arrived whole but could not be read (not the JSON expected).
        ErrorCode::Server
    } else {
        ErrorCode::Offline
    }
}

/// What a Storage or TUS call gives up with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{service:?} error {status} {code}: {message}", service = .0.service, status = .0.status, code = .0.code, message = .0.message)]
    Api(ApiError),
    #[error("network: {0}")]
    Network(#[source] reqwest::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// An error of the caller's (its credentials, its state), carried through unchanged so the
    /// caller can take it back out ([`Error::into_caller`]).
    #[error("{0}")]
    Caller(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("gave up after {attempts} attempts without progress: {last}")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ApiError> for Error {
    fn from(api: ApiError) -> Self {
        Self::Api(api)
    }
}

impl From<reqwest::Error> for Error {
    /// The URL is dropped: a signed URL carries its token in the query string.
    fn from(e: reqwest::Error) -> Self {
        Self::Network(e.without_url())
    }
}

impl Error {
    /// Whether the same request may succeed if sent again later. Retries that ran out on a
    /// transient failure say yes: later, the link or the server may be back.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(api) => api.is_retryable(),
            Self::Network(e) => is_transport_failure(e),
            Self::RetriesExhausted { last, .. } => last.is_retryable(),
            Self::Io(_) | Self::Protocol(_) | Self::Caller(_) => false,
        }
    }

    /// True when the request certainly did not reach the server's application, so even a
    /// request that is not idempotent (an insert) can be sent again: the connection was never
    /// made ([`reqwest::Error::is_connect`]; a timeout is ambiguous), or the answer says so
    /// ([`ApiError::is_retryable_unapplied`]).
    pub fn is_retryable_unapplied(&self) -> bool {
        match self {
            Self::Network(e) => e.is_connect(),
            Self::Api(api) => api.is_retryable_unapplied(),
            _ => false,
        }
    }

    /// How long the server asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api(api) => api.retry_after(),
            _ => None,
        }
    }

    /// The front end's view of this error. A caller's own error is the caller's to classify;
    /// seen from here it is [`ErrorCode::Local`].
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Api(api) => api.code(),
            Self::Network(e) => network_code(e),
            Self::Io(_) | Self::Caller(_) => ErrorCode::Local,
            Self::Protocol(_) => ErrorCode::Server,
            Self::RetriesExhausted { last, .. } => last.code(),
        }
    }

    /// The caller's error this carries, if it is one of type `E`.
    pub fn into_caller<E: std::error::Error + 'static>(self) -> std::result::Result<E, Self> {
        match self {
            Self::Caller(boxed) => match boxed.downcast::<E>() {
                Ok(e) => Ok(*e),
                Err(other) => Err(Self::Caller(other)),
            },
            other => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(service: Service, status: u16, code: &str) -> ApiError {
        ApiError {
            service,
            status,
            code: code.to_owned(),
            message: String::new(),
            details: None,
            hint: None,
            retry_after: None,
        }
    }

    #[test]
    fn retryability_follows_the_table() {
        use Service::*;
        // (service, status, code, retryable)
        let table: &[(Service, u16, &str, bool)] = &[
            (Rest, 500, "", true),
            (Rest, 501, "", false),
            (Rest, 502, "", true),
            (Rest, 503, "", true),
            (Rest, 504, "", true),
            (Rest, 505, "", false),
            (Rest, 408, "", true),
            (Rest, 429, "", true),
            (Rest, 400, "", false),
            (Rest, 404, "", false),
            (Rest, 503, "PGRST000", true),
            (Rest, 503, "PGRST001", true),
            (Rest, 504, "PGRST003", true),
            (Rest, 503, "08006", true),
            (Rest, 503, "08001", true),
            (Rest, 500, "40001", true),
            (Rest, 500, "40P01", true),
            (Rest, 503, "53300", true),
            (Rest, 500, "53400", false),
            (Rest, 500, "57014", false),
            (Rest, 500, "42P17", false),
            (Rest, 500, "XX000", false),
            (Rest, 503, "57P01", true),
            (Rest, 403, "42501", false),
            (Rest, 401, "42501", false),
            (Rest, 409, "23505", false),
            (Rest, 409, "PT409", false),
            (Rest, 404, "PT404", false),
            (Rest, 429, "PT429", true),
            (Rest, 400, "22023", false),
            (Rest, 401, "PGRST303", false),
            (Rest, 406, "PGRST116", false),
            (Auth, 400, "invalid_credentials", false),
            (Auth, 400, "refresh_token_not_found", false),
            (Auth, 409, "conflict", true),
            (Auth, 429, "over_request_rate_limit", true),
            (Auth, 500, "unexpected_failure", true),
            (Auth, 403, "bad_jwt", false),
            (Storage, 500, "DatabaseError", true),
            (Storage, 544, "DatabaseTimeout", true),
            (Storage, 503, "SlowDown", true),
            (Storage, 409, "KeyAlreadyExists", false),
            (Storage, 413, "EntityTooLarge", false),
            (Storage, 403, "AccessDenied", false),
            (Tus, 409, "", false),
            (Tus, 423, "", false),
            (Tus, 460, "", false),
            (Tus, 500, "", true),
            (Tus, 503, "", true),
            (Tus, 429, "", true),
            (Tus, 404, "", false),
        ];
        for &(service, status, code, want) in table {
            assert_eq!(
                api(service, status, code).is_retryable(),
                want,
                "{service:?} {status} {code:?} should {}be retryable",
                if want { "" } else { "not " }
            );
        }
    }

    #[test]
    fn codes_follow_the_table() {
        use ErrorCode::*;
        use Service::*;
        let table: &[(Service, u16, &str, ErrorCode)] = &[
            (Auth, 400, "invalid_credentials", ValidationFailed),
            (Auth, 400, "refresh_token_not_found", AuthExpired),
            (Auth, 400, "refresh_token_already_used", AuthExpired),
            (Auth, 403, "bad_jwt", AuthExpired),
            (Auth, 403, "session_not_found", AuthExpired),
            (Auth, 422, "user_already_exists", Conflict),
            (Auth, 429, "over_request_rate_limit", RateLimited),
            (Auth, 500, "unexpected_failure", Server),
            (Rest, 401, "PGRST303", AuthExpired),
            (Rest, 401, "PGRST301", AuthExpired),
            (Rest, 401, "42501", AuthExpired),
            (Rest, 403, "42501", Forbidden),
            (Rest, 404, "PT404", NotFound),
            (Rest, 406, "PGRST116", NotFound),
            (Rest, 409, "PT409", Conflict),
            (Rest, 409, "23505", Conflict),
            (Rest, 429, "PT429", RateLimited),
            (Rest, 400, "22023", ValidationFailed),
            (Rest, 400, "PGRST100", ValidationFailed),
            (Rest, 404, "PGRST202", NotFound),
            (Rest, 503, "PGRST000", Server),
            (Rest, 500, "XX000", Server),
            (Storage, 403, "AccessDenied", Forbidden),
            (Storage, 403, "SignatureVerificationFailed", Forbidden),
            (Storage, 400, "InvalidJWT", AuthExpired),
            (Storage, 404, "NoSuchKey", NotFound),
            (Storage, 409, "KeyAlreadyExists", Conflict),
            (Storage, 413, "EntityTooLarge", TooLarge),
            (Storage, 415, "InvalidMimeType", UnsupportedType),
            (Storage, 429, "SlowDown", RateLimited),
            (Storage, 400, "InvalidKey", ValidationFailed),
            (Tus, 409, "", Conflict),
            (Tus, 413, "", TooLarge),
            (Tus, 410, "", NotFound),
            (Tus, 415, "", UnsupportedType),
            (Tus, 403, "", Forbidden),
        ];
        for &(service, status, code, want) in table {
            assert_eq!(
                api(service, status, code).code(),
                want,
                "{service:?} {status} {code:?} should be {want:?}"
            );
        }
    }

    #[test]
    fn wire_names_are_snake_case_and_match_serde() {
        let all = [
            ErrorCode::Offline,
            ErrorCode::AuthExpired,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::TooLarge,
            ErrorCode::UnsupportedType,
            ErrorCode::RateLimited,
            ErrorCode::ValidationFailed,
            ErrorCode::KeychainUnavailable,
            ErrorCode::Server,
            ErrorCode::Cancelled,
            ErrorCode::NotConfigured,
            ErrorCode::Local,
        ];
        for code in all {
            assert_eq!(
                serde_json::to_value(code).ok(),
                Some(serde_json::Value::String(code.as_str().to_owned())),
                "serde and as_str agree for {code:?}"
            );
        }
    }

    #[test]
    fn storage_tells_a_refused_token_from_a_policy_by_the_wording() {
        let refused = ApiError::from_body(
            Service::Storage,
            400,
            r#"{"statusCode":"403","error":"Unauthorized","message":"\"exp\" claim timestamp check failed","code":"AccessDenied"}"#,
            None,
        );
        assert_eq!(
            refused.code(),
            ErrorCode::AuthExpired,
            "an expired JWT means sign in again"
        );
        let policy = ApiError::from_body(
            Service::Storage,
            400,
            r#"{"statusCode":"403","error":"Unauthorized","message":"new row violates row-level security policy","code":"AccessDenied"}"#,
            None,
        );
        assert_eq!(
            policy.code(),
            ErrorCode::Forbidden,
            "a policy's no is forbidden"
        );
    }

    #[test]
    fn storage_code_uses_the_logical_status_from_the_body() {
        let body = r#"{"statusCode":"413","error":"Payload too large","message":"The object exceeded the maximum allowed size","code":"EntityTooLarge"}"#;
        let error = ApiError::from_body(Service::Storage, 400, body, None);
        assert_eq!(
            error.status, 413,
            "the body's statusCode wins over HTTP 400"
        );
        assert_eq!(
            error.code(),
            ErrorCode::TooLarge,
            "413 in the body is a size error"
        );
        assert!(
            !error.is_retryable(),
            "a size error does not go away on retry"
        );
    }

    #[test]
    fn retry_after_is_read_from_the_error() {
        let mut answer = api(Service::Rest, 503, "");
        answer.retry_after = Some(7);
        let error = Error::Api(answer);
        assert_eq!(
            error.retry_after(),
            Some(Duration::from_secs(7)),
            "Retry-After seconds become a Duration"
        );
        assert_eq!(
            Error::Protocol("x".into()).retry_after(),
            None,
            "only server answers carry Retry-After"
        );
        assert!(
            !Error::Protocol("x".into()).is_retryable(),
            "an unreadable answer will be unreadable again"
        );
    }

    #[test]
    fn a_callers_error_comes_back_out_unchanged() {
        #[derive(Debug, thiserror::Error, PartialEq)]
        #[error("mine")]
        struct Mine(u8);
        let carried = Error::Caller(Box::new(Mine(7)));
        assert_eq!(carried.code(), ErrorCode::Local, "opaque from here");
        assert_eq!(
            carried.into_caller::<Mine>().ok(),
            Some(Mine(7)),
            "the caller gets its own error back"
        );
        assert!(
            Error::Protocol("x".into()).into_caller::<Mine>().is_err(),
            "other errors stay what they are"
        );
    }

    /// Serves one HTTP answer from raw bytes, then closes the connection.
    async fn serve_once(answer: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            socket.write_all(answer).await.expect("write");
            // Dropping the socket closes the connection.
        });
        url
    }

    #[tokio::test]
    async fn a_connection_cut_mid_body_is_retryable_and_offline() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789").await;
        let response = reqwest::get(&url).await.expect("headers arrive");
        let error = Error::from(response.bytes().await.expect_err("the body is cut short"));
        assert!(
            error.is_retryable(),
            "a cut connection is transient: {error:?}"
        );
        assert_eq!(
            error.code(),
            ErrorCode::Offline,
            "a cut connection is a network problem"
        );
    }

    #[tokio::test]
    async fn a_whole_but_unreadable_body_is_not_retryable() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!").await;
        let response = reqwest::get(&url).await.expect("headers arrive");
        let error = Error::from(
            response
                .json::<serde_json::Value>()
                .await
                .expect_err("not JSON"),
        );
        assert!(
            !error.is_retryable(),
            "the same bytes would come again: {error:?}"
        );
        assert_eq!(
            error.code(),
            ErrorCode::Server,
            "the server sent something unreadable"
        );
    }

    #[tokio::test]
    async fn network_failures_are_retryable_and_offline() {
        // Port 1 on loopback: nothing listens, so the connection is refused at once.
        let error = reqwest::Client::new()
            .get("http://127.0.0.1:1/")
            .send()
            .await
            .expect_err("nothing listens on port 1");
        let error = Error::from(error);
        assert!(error.is_retryable(), "a refused connection is transient");
        assert!(
            error.is_retryable_unapplied(),
            "a refused connection never reached the server"
        );
        assert_eq!(
            error.code(),
            ErrorCode::Offline,
            "a refused connection means offline"
        );
    }
}
