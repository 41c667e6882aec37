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
