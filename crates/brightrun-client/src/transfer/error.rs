//! What a transfer gives up with. Each refusal the user can act on has its own variant (413,
//! 415, 403, 409, a changed file, a digest mismatch); whether to retry is a typed property.

use std::path::PathBuf;
use std::time::Duration;

use brightrun_core::ValidationReport;

use crate::error::{ApiError, Error, Service};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Local validation found errors: nothing was uploaded. The full report is attached.
    #[error("the dataset has {} error(s); nothing was uploaded", .0.error_count)]
    Invalid(Box<ValidationReport>),
    /// 413: the file is over the bucket's (or the server's) size limit.
    #[error("the file is too large for the server (413): {0}")]
    TooLarge(String),
    /// 415: the bucket does not accept this content type.
    #[error("the server does not accept this file type (415): {0}")]
    UnsupportedType(String),
    /// 403: a storage policy refused the operation.
    #[error("refused by the server's access policy (403): {0}")]
    Forbidden(String),
    /// 409: the object exists and is not the one this upload was writing.
    #[error("conflict (409): {0}")]
    Conflict(String),
    #[error("{} changed while it was being uploaded; run the upload again", .0.display())]
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
    /// The connection broke while a body was streaming.
    #[error("the connection broke mid-transfer: {0}")]
    Interrupted(#[source] reqwest::Error),
    #[error("gave up after {attempts} attempts without progress: {last}")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<TransferError>,
    },
    #[error(transparent)]
    Client(#[from] Error),
}

impl From<std::io::Error> for TransferError {
    fn from(e: std::io::Error) -> Self {
        Self::Client(Error::Io(e))
    }
}

impl From<reqwest::Error> for TransferError {
    fn from(e: reqwest::Error) -> Self {
        Self::Client(Error::Network(e))
    }
}

impl From<sqlx::Error> for TransferError {
    fn from(e: sqlx::Error) -> Self {
        Self::Client(Error::LocalDb(e))
    }
}

impl From<ApiError> for TransferError {
    fn from(e: ApiError) -> Self {
        Self::Client(Error::Api(e))
    }
}

impl TransferError {
    /// True for failures that may pass by themselves: a stall, and what
    /// [`crate::Error::is_retryable`] says of network errors and server answers (5xx, 408, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Stalled(_) | Self::Interrupted(_) => true,
            Self::Client(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// What the server asked for with `Retry-After`, if anything.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Client(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The specific refusal for a Storage or TUS answer (413, 415, 403); other answers stay
    /// [`TransferError::Client`].
    pub(crate) fn from_api(api: ApiError) -> Self {
        let message = api.message.clone();
        match (api.service, api.status) {
            (Service::Storage | Service::Tus, 413) => Self::TooLarge(message),
            (Service::Storage | Service::Tus, 415) => Self::UnsupportedType(message),
            (Service::Storage | Service::Tus, 403) => Self::Forbidden(message),
            _ => Self::Client(Error::Api(api)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(service: Service, status: u16) -> ApiError {
        ApiError {
            service,
            status,
            code: String::new(),
            message: "m".into(),
            details: None,
            hint: None,
            retry_after: Some(3),
        }
    }

    #[test]
    fn retryability_follows_the_status_table() {
        let table = [
            (Service::Tus, 500, true),
            (Service::Tus, 502, true),
            (Service::Tus, 503, true),
            (Service::Storage, 544, true),
            (Service::Rest, 429, true),
            (Service::Tus, 408, true),
            (Service::Tus, 400, false),
            (Service::Tus, 403, false),
            (Service::Tus, 404, false),
            (Service::Tus, 409, false),
            (Service::Tus, 413, false),
            (Service::Storage, 415, false),
            (Service::Rest, 401, false),
        ];
        for (service, status, retryable) in table {
            let e = TransferError::from_api(api(service, status));
            assert_eq!(
                e.is_retryable(),
                retryable,
                "{service:?} {status} should be retryable={retryable}"
            );
        }
    }

    #[test]
    fn refusals_get_their_own_variants() {
        assert!(
            matches!(
                TransferError::from_api(api(Service::Tus, 413)),
                TransferError::TooLarge(_)
            ),
            "413 is TooLarge"
        );
        assert!(
            matches!(
                TransferError::from_api(api(Service::Storage, 415)),
                TransferError::UnsupportedType(_)
            ),
            "415 is UnsupportedType"
        );
        assert!(
            matches!(
                TransferError::from_api(api(Service::Storage, 403)),
                TransferError::Forbidden(_)
            ),
            "403 is Forbidden"
        );
        assert_eq!(
            TransferError::from_api(api(Service::Rest, 503)).retry_after(),
            Some(Duration::from_secs(3)),
            "Retry-After is kept"
        );
    }
}
