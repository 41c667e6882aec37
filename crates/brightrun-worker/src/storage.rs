//! Supabase Storage over HTTP with the service_role key: dataset downloads (streamed) and
//! artifact uploads. The worker talks to Storage, never to its files directly, so it works the
//! same against hosted Supabase and brightrun-stack.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use futures::TryStreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

/// The service_role key: prints as `<redacted>`, never serialized.
#[derive(Clone)]
pub struct ServiceKey(String);

impl ServiceKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// Storage answered with an error status.
    #[error("storage answered {status} for {what}: {body}")]
    Status {
        status: u16,
        what: String,
        body: String,
    },
    #[error("reading {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StorageError {
    /// Whether trying again later may help (network, 5xx, 429); a 4xx will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::File { .. } => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
            || matches!(self, Self::Status { status: 400, body, .. } if body.contains("not_found") || body.contains("404"))
    }
}

/// A file uploaded to Storage, with what the downloader checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct Storage {
    http: reqwest::Client,
    base: String,
    key: ServiceKey,
}

/// Encodes each segment of an object path for a URL, keeping the `/` separators.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            let mut out = String::with_capacity(segment.len());
            for b in segment.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~()+".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Storage {
    /// `api_url` is the project URL (`https://<ref>.supabase.co` or the stack's `API URL`).
    pub fn new(api_url: &str, key: ServiceKey) -> Result<Self, StorageError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base: format!("{}/storage/v1", api_url.trim_end_matches('/')),
            key,
        })
    }

    fn object_url(&self, bucket: &str, path: &str) -> String {
        format!("{}/object/{bucket}/{}", self.base, encode_path(path))
    }

    fn authed(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("apikey", self.key.expose())
            .bearer_auth(self.key.expose())
    }

    async fn check(
        resp: reqwest::Response,
        what: impl FnOnce() -> String,
    ) -> Result<reqwest::Response, StorageError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        Err(StorageError::Status {
            status,
            what: what(),
            body: body.chars().take(500).collect(),
        })
    }

    /// Starts downloading an object; the body is a byte stream (constant memory).
    pub async fn download(
        &self,
        bucket: &str,
        path: &str,
    ) -> Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + use<>, StorageError>
    {
        let resp = self
            .authed(self.http.get(self.object_url(bucket, path)))
            .send()
            .await?;
        let resp = Self::check(resp, || format!("object {bucket}/{path}")).await?;
        Ok(resp.bytes_stream().map_err(std::io::Error::other))
    }

    /// Uploads a local file (replacing an object already there, so a retried attempt's upload
    /// is idempotent) and returns its size and SHA-256 as uploaded.
    pub async fn upload_file(
        &self,
        bucket: &str,
        path: &str,
        file: &Path,
        content_type: &str,
    ) -> Result<Uploaded, StorageError> {
        let file_err = |source| StorageError::File {
            path: file.display().to_string(),
            source,
        };
        // Digest first, from disk, then send the same bytes: the digest recorded is the one
        // of the stored object.
        let mut f = tokio::fs::File::open(file).await.map_err(file_err)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).await.map_err(file_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = hex::encode(hasher.finalize());
        let f = tokio::fs::File::open(file).await.map_err(file_err)?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(f));
        let resp = self
            .authed(self.http.post(self.object_url(bucket, path)))
            .header("content-type", content_type)
            .header("content-length", size)
            .header("x-upsert", "true")
            .body(body)
            .send()
            .await?;
        Self::check(resp, || format!("upload to {bucket}/{path}")).await?;
        Ok(Uploaded {
            path: path.to_owned(),
            size,
            sha256,
        })
    }

    /// Uploads bytes (tests and small objects).
    pub async fn upload_bytes(
        &self,
        bucket: &str,
        path: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let resp = self
            .authed(self.http.post(self.object_url(bucket, path)))
            .header("content-type", content_type)
            .header("x-upsert", "true")
            .body(bytes)
            .send()
            .await?;
        Self::check(resp, || format!("upload to {bucket}/{path}")).await?;
        Ok(())
    }

    /// A signed download URL (for a remote provider that fetches the dataset itself).
    pub async fn signed_url(
        &self,
        bucket: &str,
        path: &str,
        expires_in: Duration,
    ) -> Result<String, StorageError> {
        let resp = self
            .authed(self.http.post(format!(
                "{}/object/sign/{bucket}/{}",
                self.base,
                encode_path(path)
            )))
            .json(&serde_json::json!({ "expiresIn": expires_in.as_secs().max(1) }))
            .send()
            .await?;
        let resp = Self::check(resp, || format!("signing {bucket}/{path}")).await?;
        let body: serde_json::Value = resp.json().await?;
        let rel = body
            .get("signedURL")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        Ok(format!("{}{rel}", self.base))
    }

    /// Object names under `prefix` (one level, as Storage lists).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        let resp = self
            .authed(
                self.http
                    .post(format!("{}/object/list/{bucket}", self.base)),
            )
            .json(&serde_json::json!({ "prefix": prefix, "limit": 1000, "offset": 0 }))
            .send()
            .await?;
        let resp = Self::check(resp, || format!("listing {bucket}/{prefix}")).await?;
        let body: Vec<serde_json::Value> = resp.json().await?;
        Ok(body
            .iter()
            .filter_map(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .collect())
    }

    /// Deletes objects (missing ones are ignored by Storage).
    pub async fn remove(&self, bucket: &str, paths: &[String]) -> Result<(), StorageError> {
        if paths.is_empty() {
            return Ok(());
        }
        let resp = self
            .authed(self.http.delete(format!("{}/object/{bucket}", self.base)))
            .json(&serde_json::json!({ "prefixes": paths }))
            .send()
            .await?;
        Self::check(resp, || format!("deleting from {bucket}")).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_key_is_redacted() {
        let key = ServiceKey::new("eyJsecret");
        assert_eq!(
            format!("{key:?}"),
            "<redacted>",
            "the key never reaches a log"
        );
    }

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(
            encode_path("u/d/my file (1).jsonl"),
            "u/d/my%20file%20(1).jsonl",
            "spaces encoded, separators kept"
        );
    }
}
