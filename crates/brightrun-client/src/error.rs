//! The client's error type. Server error bodies are kept losslessly (GoTrue, PostgREST and Storage
//! each have their own shape); whether to retry is a typed property, never decided from text.

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
