//! The client's one error type, and the one wire shape every front end receives.
//!
//! [`Error`] keeps what failed with its source: a server's answer losslessly ([`ApiError`]), a
//! network failure, the keychain, the local database, a transfer's own refusals. Three questions
//! are asked of it and answered here (for server answers, in `brightrun_supabase::error`):
//! [`Error::is_retryable`], [`Error::retry_after`] and [`Error::code`], the [`ErrorCode`] a
//! front end branches on. [`WireError`] is what crosses the IPC boundary and the CLI's `--json`:
//! `{code, message, hint, retryable}`. The same failure has the same code on every path (REST,
//! upload, download, watch).

use std::path::PathBuf;
use std::time::Duration;

use brightrun_core::ValidationReport;
pub use brightrun_supabase::error::{ApiError, ErrorCode, Service};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{}", .0.message)]
    Api(ApiError),
    /// The server could not be reached, or the connection broke.
    #[error("could not reach the server: {}", causes(.0))]
    Network(#[source] reqwest::Error),
    #[error("not signed in")]
    SignedOut,
    #[error("the OS keychain cannot be used: {0}")]
    Keychain(String),
    #[error("local database: {0}")]
    LocalDb(#[from] sqlx::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// No project to talk to: no URL, or no anon key for it.
    #[error("{0}")]
    NotConfigured(String),
    /// A value the user gave is refused before anything is sent (the message names it).
    #[error("{0}")]
    InvalidInput(String),
    /// Local validation found errors: nothing was uploaded. The full report is attached.
    #[error("the dataset has {} error(s); nothing was uploaded", .0.error_count)]
    Invalid(Box<ValidationReport>),
    /// A local file over a limit the server would refuse it for.
    #[error("{0}")]
    FileTooLarge(String),
    /// A local file of a type that is not accepted.
    #[error("{0}")]
    UnsupportedFile(String),
    #[error("{} changed while it was being uploaded; upload it again", .0.display())]
    FileChanged(PathBuf),
    #[error("SHA-256 of {name} is {actual}, but the server recorded {expected}")]
    DigestMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("the server recorded no SHA-256 for {0}, so it cannot be verified")]
    NoDigest(String),
    #[error("{name}: the server sent {actual} bytes, but {expected} were recorded")]
    SizeMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("artifact name {0:?} cannot be made into a safe file name")]
    UnsafeName(String),
    #[error("no bytes arrived for {0:?}")]
    Stalled(Duration),
    #[error("gave up after {attempts} attempts without progress: {last}")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<Error>,
    },
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes in one line (`error sending request: connection refused`): reqwest's
/// own message rarely says what happened.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

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

/// Storage and TUS failures, with the client's own errors (carried through the shared crate as
/// [`brightrun_supabase::Error::Caller`]) taken back out unchanged.
impl From<brightrun_supabase::Error> for Error {
    fn from(e: brightrun_supabase::Error) -> Self {
        use brightrun_supabase::Error as Wire;
        match e.into_caller::<Error>() {
            Ok(mine) => mine,
            Err(Wire::Api(api)) => Self::Api(api),
            Err(Wire::Network(e)) => Self::Network(e),
            Err(Wire::Io(e)) => Self::Io(e),
            Err(Wire::Protocol(m)) => Self::Protocol(m),
            Err(Wire::RetriesExhausted { attempts, last }) => Self::RetriesExhausted {
                attempts,
                last: Box::new(Self::from(*last)),
            },
            Err(other @ Wire::Caller(_)) => Self::Protocol(other.to_string()),
        }
    }
}

impl From<Error> for brightrun_supabase::Error {
    fn from(e: Error) -> Self {
        Self::Caller(Box::new(e))
    }
}

impl Error {
    /// Whether the same operation may succeed if tried again later: transient network failures,
    /// the transient server answers of [`ApiError::is_retryable`], a stalled transfer, and
    /// retries that ran out on one of those. Never a signed-out session, a refusal, or local
    /// errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api(api) => api.is_retryable(),
            Self::Network(e) => brightrun_supabase::error::is_transport_failure(e),
            Self::Stalled(_) => true,
            Self::RetriesExhausted { last, .. } => last.is_retryable(),
            _ => false,
        }
    }

    /// True when the request certainly did not reach the server's application, so even a
    /// request that is not idempotent (an insert) can be sent again.
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
            Self::RetriesExhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// The front end's view of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Api(api) => api.code(),
            Self::Network(e) => brightrun_supabase::error::network_code(e),
            Self::SignedOut => ErrorCode::AuthExpired,
            Self::Keychain(_) => ErrorCode::KeychainUnavailable,
            Self::LocalDb(_) | Self::Io(_) => ErrorCode::Local,
            Self::Protocol(_) | Self::DigestMismatch { .. } | Self::SizeMismatch { .. } => {
                ErrorCode::Server
            }
            Self::NotConfigured(_) => ErrorCode::NotConfigured,
            Self::InvalidInput(_) | Self::Invalid(_) | Self::UnsafeName(_) | Self::NoDigest(_) => {
                ErrorCode::ValidationFailed
            }
            Self::FileTooLarge(_) => ErrorCode::TooLarge,
            Self::UnsupportedFile(_) => ErrorCode::UnsupportedType,
            Self::FileChanged(_) => ErrorCode::Conflict,
            Self::Stalled(_) => ErrorCode::Offline,
            Self::RetriesExhausted { last, .. } => last.code(),
            Self::Cancelled => ErrorCode::Cancelled,
        }
    }

    /// The server's answer, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Api(api) => Some(api),
            Self::RetriesExhausted { last, .. } => last.api(),
            _ => None,
        }
    }

    /// What to tell the user to do, when there is something specific: the server's hint, or
    /// ours for the codes whose remedy is always the same.
    pub fn hint(&self) -> Option<String> {
        if let Some(hint) = self.api().and_then(|a| a.hint.clone()) {
            return Some(hint);
        }
        let hint = match self.code() {
            ErrorCode::AuthExpired => "Sign in again.",
            ErrorCode::Offline => "Check the connection; cached lists still work.",
            ErrorCode::KeychainUnavailable => {
                "The session is kept in the OS keychain (Secret Service on Linux): make sure \
                 one is running and unlocked."
            }
            ErrorCode::RateLimited => "Wait a moment, then try again.",
            ErrorCode::NotConfigured => {
                "Choose a project: the local sandbox, or a Supabase project's URL and anon key."
            }
            _ => return None,
        };
        Some(hint.to_owned())
    }

    /// The wire shape of this error.
    pub fn to_wire(&self) -> WireError {
        WireError::from(self)
    }
}

/// An error as front ends receive it: across IPC, and as the CLI's `--json` error document.
/// `code` is from a closed set ([`ErrorCode`]) that front ends branch on; `message` and `hint`
/// are for people; `retryable` says whether trying the same again later may succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub retryable: bool,
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        Self {
            code: error.code(),
            message: error.to_string(),
            hint: error.hint(),
            retryable: error.is_retryable(),
        }
    }
}

impl From<Error> for WireError {
    fn from(error: Error) -> Self {
        Self::from(&error)
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

impl brightrun_supabase::Retryable for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
    fn is_retryable_unapplied(&self) -> bool {
        Error::is_retryable_unapplied(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(service: Service, status: u16, code: &str) -> Error {
        Error::Api(ApiError {
            service,
            status,
            code: code.to_owned(),
            message: format!("{code} says no"),
            details: None,
            hint: None,
            retry_after: Some(3),
        })
    }

    #[test]
    fn local_failures_have_their_own_codes() {
        let table: &[(Error, ErrorCode, bool)] = &[
            (Error::SignedOut, ErrorCode::AuthExpired, false),
            (
                Error::Keychain("no Secret Service".into()),
                ErrorCode::KeychainUnavailable,
                false,
            ),
            (
                Error::Io(std::io::Error::other("disk full")),
                ErrorCode::Local,
                false,
            ),
            (Error::Cancelled, ErrorCode::Cancelled, false),
            (
                Error::NotConfigured("no anon key".into()),
                ErrorCode::NotConfigured,
                false,
            ),
            (Error::FileTooLarge("x".into()), ErrorCode::TooLarge, false),
            (
                Error::UnsupportedFile("x".into()),
                ErrorCode::UnsupportedType,
                false,
            ),
            (
                Error::Stalled(Duration::from_secs(30)),
                ErrorCode::Offline,
                true,
            ),
            (Error::Protocol("garbage".into()), ErrorCode::Server, false),
        ];
        for (error, code, retryable) in table {
            assert_eq!(error.code(), *code, "{error:?}");
            assert_eq!(error.is_retryable(), *retryable, "{error:?} retryable");
        }
    }

    #[test]
    fn retries_that_ran_out_keep_the_last_failures_code_and_retryability() {
        let exhausted = Error::RetriesExhausted {
            attempts: 8,
            last: Box::new(api(Service::Tus, 503, "")),
        };
        assert_eq!(
            exhausted.code(),
            ErrorCode::Server,
            "the last failure's code"
        );
        assert!(exhausted.is_retryable(), "a 503 may pass: try again later");
        assert_eq!(
            exhausted.retry_after(),
            Some(Duration::from_secs(3)),
            "and its Retry-After"
        );
    }

    #[test]
    fn the_wire_shape_is_code_message_hint_retryable() {
        let wire = api(Service::Rest, 429, "PT429").to_wire();
        assert_eq!(
            serde_json::to_value(&wire).ok(),
            Some(serde_json::json!({
                "code": "rate_limited",
                "message": "PT429 says no",
                "hint": "Wait a moment, then try again.",
                "retryable": true
            })),
            "snake_case code, the server's message, our hint for the code"
        );
        let no_hint = api(Service::Rest, 409, "PT409").to_wire();
        assert_eq!(
            serde_json::to_value(&no_hint)
                .ok()
                .and_then(|v| v.get("hint").cloned()),
            None,
            "no hint, no key"
        );
    }

    #[test]
    fn client_errors_pass_through_the_shared_crate_unchanged() {
        let wire: brightrun_supabase::Error = Error::SignedOut.into();
        let back = Error::from(wire);
        assert!(matches!(back, Error::SignedOut), "{back:?}");
        let exhausted = brightrun_supabase::Error::RetriesExhausted {
            attempts: 2,
            last: Box::new(brightrun_supabase::Error::Caller(Box::new(
                Error::Keychain("locked".into()),
            ))),
        };
        let back = Error::from(exhausted);
        assert_eq!(
            back.code(),
            ErrorCode::KeychainUnavailable,
            "a client error inside retries that ran out keeps its code"
        );
    }
}
