//! The client's error type. Server error bodies are kept losslessly (GoTrue, PostgREST and Storage
//! each have their own shape); whether to retry is a typed property, never decided from text.
//!
//! Three questions are answered here and nowhere else:
//! - [`Error::is_retryable`]: is the failure transient, so the same request may succeed later?
//! - [`Error::retry_after`]: did the server say how long to wait?
//! - [`Error::kind`]: which of the few situations the UI branches on is this ([`ErrorKind`])?

use std::time::Duration;

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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{service:?} error {status} {code}: {message}", service = .0.service, status = .0.status, code = .0.code, message = .0.message)]
    Api(ApiError),
    #[error("network: {0}")]
    Network(#[from] reqwest::Error),
    #[error("not signed in")]
    SignedOut,
    #[error("keychain: {0}")]
    Keychain(String),
    #[error("local database: {0}")]
    LocalDb(#[from] sqlx::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

/// The small, closed set of situations the window and the CLI branch on (ARCHITECTURE §8). Crosses
/// the IPC boundary as its [`ErrorKind::code`]; everything else about an error is its message.
/// Add a variant only when a consumer acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not signed in, or the session is gone (signed out elsewhere, revoked): sign in again.
    AuthExpired,
    /// The server could not be reached: show cached data, try again later.
    Offline,
    /// The request was refused as invalid (bad argument, wrong password, bad file name, ...).
    ValidationFailed,
    /// A per-user limit or a rate limit was reached.
    QuotaExceeded,
    /// The target is in a state that does not allow this (duplicate, already finished, ...).
    Conflict,
    /// No such row of the caller's (another user's rows are reported as not found, too).
    NotFound,
    /// Signed in, but this is not allowed (row-level security, column privileges, storage policy).
    PermissionDenied,
    /// A file over the size limit.
    TooLarge,
    /// A file of a type the bucket does not accept.
    UnsupportedType,
    /// The server failed (5xx) or answered something this client cannot read.
    Server,
    /// Anything else (local I/O, keychain, local database).
    Other,
}

impl ErrorKind {
    /// The wire code, e.g. `auth_expired`.
    pub fn code(self) -> &'static str {
        match self {
            Self::AuthExpired => "auth_expired",
            Self::Offline => "offline",
            Self::ValidationFailed => "validation_failed",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::TooLarge => "too_large",
            Self::UnsupportedType => "unsupported_type",
            Self::Server => "server",
            Self::Other => "other",
        }
    }

    /// By HTTP status alone, for answers whose code says nothing more specific.
    fn from_status(status: u16) -> Self {
        match status {
            401 => Self::AuthExpired,
            403 => Self::PermissionDenied,
            404 | 410 => Self::NotFound,
            409 | 412 | 423 => Self::Conflict,
            413 => Self::TooLarge,
            415 => Self::UnsupportedType,
            429 => Self::QuotaExceeded,
            400..=499 => Self::ValidationFailed,
            500..=599 => Self::Server,
            _ => Self::Other,
        }
    }
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
fn is_transport_failure(error: &reqwest::Error) -> bool {
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

impl ApiError {
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

    /// The UI's view of this answer.
    pub fn kind(&self) -> ErrorKind {
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
                | "reauthentication_needed" => ErrorKind::AuthExpired,
                "user_banned" => ErrorKind::PermissionDenied,
                "user_already_exists" | "email_exists" | "conflict" => ErrorKind::Conflict,
                "over_request_rate_limit" | "over_email_send_rate_limit" => {
                    ErrorKind::QuotaExceeded
                }
                "invalid_credentials"
                | "validation_failed"
                | "weak_password"
                | "email_address_invalid"
                | "email_not_confirmed" => ErrorKind::ValidationFailed,
                _ => ErrorKind::from_status(self.status),
            },
            Service::Rest => match code {
                // JWT missing, invalid or expired.
                "PGRST301" | "PGRST302" | "PGRST303" => ErrorKind::AuthExpired,
                // Insufficient privilege: 403 for a signed-in user; 401 when the request ran
                // as anon, i.e. without a user.
                "42501" if self.status == 401 => ErrorKind::AuthExpired,
                "42501" => ErrorKind::PermissionDenied,
                "PT404" | "PGRST116" => ErrorKind::NotFound,
                "23505" | "23503" | "PT409" => ErrorKind::Conflict,
                "PT429" => ErrorKind::QuotaExceeded,
                "22023" | "22P02" | "23502" | "23514" | "P0001" => ErrorKind::ValidationFailed,
                _ => ErrorKind::from_status(self.status),
            },
            // Storage sends its logical status in the body; `from_body` already took it.
            Service::Storage | Service::Tus => ErrorKind::from_status(self.status),
        }
    }

    /// `Retry-After`, when the server sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after.map(Duration::from_secs)
    }
}

impl Error {
    /// Whether the same request may succeed if sent again later: transient network failures
    /// (connect, timeout, a connection dropped while sending or reading) and the transient server
    /// answers of [`ApiError::is_retryable`]. Never true for a signed-out session, local errors,
    /// or an answer this client cannot read.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(api) => api.is_retryable(),
            Self::Network(e) => is_transport_failure(e),
            Self::SignedOut
            | Self::Keychain(_)
            | Self::LocalDb(_)
            | Self::Io(_)
            | Self::Protocol(_) => false,
        }
    }

    /// True when the request certainly did not reach the server's application, so even a
    /// request that is not idempotent (an insert) can be sent again: the connection was never
    /// made, or the server answered with a transient error (PostgREST runs each request in one
    /// transaction that an error rolls back). A timeout or a gateway's 502/504 is ambiguous: the
    /// request may have been applied.
    pub fn is_retryable_unapplied(&self) -> bool {
        match self {
            Self::Network(e) => e.is_connect(),
            Self::Api(api) => api.is_retryable() && !matches!(api.status, 502 | 504),
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

    /// The UI's view of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api(api) => api.kind(),
            Self::Network(e) if is_transport_failure(e) => ErrorKind::Offline,
            Self::Network(e) if e.is_builder() => ErrorKind::Other,
            // An answer that arrived whole but could not be read (e.g. not the JSON expected).
            Self::Network(e) if e.is_decode() => ErrorKind::Server,
            Self::Network(_) => ErrorKind::Offline,
            Self::SignedOut => ErrorKind::AuthExpired,
            Self::Protocol(_) => ErrorKind::Server,
            Self::Keychain(_) | Self::LocalDb(_) | Self::Io(_) => ErrorKind::Other,
        }
    }

    /// The server's answer, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(api) => Some(api),
            _ => None,
        }
    }
}

impl From<ApiError> for Error {
    fn from(api: ApiError) -> Self {
        Self::Api(api)
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
    fn kinds_follow_the_table() {
        use ErrorKind::*;
        use Service::*;
        let table: &[(Service, u16, &str, ErrorKind)] = &[
            (Auth, 400, "invalid_credentials", ValidationFailed),
            (Auth, 400, "refresh_token_not_found", AuthExpired),
            (Auth, 400, "refresh_token_already_used", AuthExpired),
            (Auth, 403, "bad_jwt", AuthExpired),
            (Auth, 403, "session_not_found", AuthExpired),
            (Auth, 422, "user_already_exists", Conflict),
            (Auth, 429, "over_request_rate_limit", QuotaExceeded),
            (Auth, 500, "unexpected_failure", Server),
            (Rest, 401, "PGRST303", AuthExpired),
            (Rest, 401, "PGRST301", AuthExpired),
            (Rest, 401, "42501", AuthExpired),
            (Rest, 403, "42501", PermissionDenied),
            (Rest, 404, "PT404", NotFound),
            (Rest, 406, "PGRST116", NotFound),
            (Rest, 409, "PT409", Conflict),
            (Rest, 409, "23505", Conflict),
            (Rest, 429, "PT429", QuotaExceeded),
            (Rest, 400, "22023", ValidationFailed),
            (Rest, 400, "PGRST100", ValidationFailed),
            (Rest, 404, "PGRST202", NotFound),
            (Rest, 503, "PGRST000", Server),
            (Rest, 500, "XX000", Server),
            (Storage, 403, "AccessDenied", PermissionDenied),
            (Storage, 404, "NoSuchKey", NotFound),
            (Storage, 409, "KeyAlreadyExists", Conflict),
            (Storage, 413, "EntityTooLarge", TooLarge),
            (Storage, 415, "InvalidMimeType", UnsupportedType),
            (Storage, 400, "InvalidKey", ValidationFailed),
            (Tus, 409, "", Conflict),
            (Tus, 413, "", TooLarge),
            (Tus, 410, "", NotFound),
        ];
        for &(service, status, code, want) in table {
            assert_eq!(
                api(service, status, code).kind(),
                want,
                "{service:?} {status} {code:?} should be {want:?}"
            );
        }
    }

    #[test]
    fn storage_kind_uses_the_logical_status_from_the_body() {
        let body = r#"{"statusCode":"413","error":"Payload too large","message":"The object exceeded the maximum allowed size","code":"EntityTooLarge"}"#;
        let error = ApiError::from_body(Service::Storage, 400, body, None);
        assert_eq!(
            error.status, 413,
            "the body's statusCode wins over HTTP 400"
        );
        assert_eq!(
            error.kind(),
            ErrorKind::TooLarge,
            "413 in the body is a size error"
        );
        assert!(
            !error.is_retryable(),
            "a size error does not go away on retry"
        );
    }

    #[test]
    fn retry_after_is_read_from_the_error() {
        let mut error = api(Service::Rest, 503, "");
        error.retry_after = Some(7);
        let error = Error::Api(error);
        assert_eq!(
            error.retry_after(),
            Some(Duration::from_secs(7)),
            "Retry-After seconds become a Duration"
        );
        assert_eq!(
            Error::SignedOut.retry_after(),
            None,
            "only server answers carry Retry-After"
        );
    }

    #[test]
    fn local_errors_are_not_retryable() {
        assert!(
            !Error::SignedOut.is_retryable(),
            "signing in again is the user's move"
        );
        assert!(
            !Error::Protocol("x".into()).is_retryable(),
            "an unreadable answer will be unreadable again"
        );
        assert_eq!(
            Error::SignedOut.kind(),
            ErrorKind::AuthExpired,
            "signed out means sign in"
        );
        assert_eq!(
            ErrorKind::AuthExpired.code(),
            "auth_expired",
            "wire codes are snake_case"
        );
        assert_eq!(
            serde_json::to_value(ErrorKind::QuotaExceeded).ok(),
            Some(serde_json::json!("quota_exceeded")),
            "serde and code() agree"
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
        let error = Error::Network(response.bytes().await.expect_err("the body is cut short"));
        assert!(
            error.is_retryable(),
            "a cut connection is transient: {error:?}"
        );
        assert_eq!(
            error.kind(),
            ErrorKind::Offline,
            "a cut connection is a network problem"
        );
    }

    #[tokio::test]
    async fn a_whole_but_unreadable_body_is_not_retryable() {
        let url = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!").await;
        let response = reqwest::get(&url).await.expect("headers arrive");
        let error = Error::Network(
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
            error.kind(),
            ErrorKind::Server,
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
        let error = Error::Network(error);
        assert!(error.is_retryable(), "a refused connection is transient");
        assert!(
            error.is_retryable_unapplied(),
            "a refused connection never reached the server"
        );
        assert_eq!(
            error.kind(),
            ErrorKind::Offline,
            "a refused connection means offline"
        );
    }
}
