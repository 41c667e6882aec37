//! Supabase Storage over HTTP with the service_role key: dataset downloads (streamed) and
//! artifact uploads. The worker talks to Storage, never to its files directly, so it works the
//! same against hosted Supabase and brightrun-stack.
//!
//! Uploads up to [`UploadPolicy::tus_threshold`] are one `POST` with `x-upsert` (idempotent, so
//! simply repeated on a transient error). Larger files go through TUS (`/upload/resumable`, 6 MiB
//! chunks, what Supabase requires): after a cut connection or a 5xx the offset is re-read with
//! `HEAD` and the upload continues from there, so a network blip near the end of a large adapter
//! costs one chunk, not the attempt (which would mean training again).

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

/// How uploads survive transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadPolicy {
    /// Files larger than this use TUS.
    pub tus_threshold: u64,
    /// Bytes per TUS `PATCH` (the last may be smaller).
    pub chunk_size: u64,
    /// Transient failures tolerated per file before the upload (and so the attempt) fails;
    /// progress resets the count.
    pub retries: u32,
    /// Backoff after the first failure; doubles up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for UploadPolicy {
    fn default() -> Self {
        Self {
            tus_threshold: 6 * 1024 * 1024,
            chunk_size: 6 * 1024 * 1024,
            retries: 8,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Storage {
    http: reqwest::Client,
    base: String,
    key: ServiceKey,
    upload: UploadPolicy,
}

const TUS_VERSION: &str = "1.0.0";

/// Reads `len` bytes at `offset` of a file.
async fn read_chunk(file: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncSeekExt as _;
    let mut f = tokio::fs::File::open(file).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf).await?;
    if (buf.len() as u64) < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file shrank during the upload",
        ));
    }
    Ok(buf)
}

fn upload_offset(resp: &reqwest::Response) -> Option<u64> {
    resp.headers()
        .get("upload-offset")?
        .to_str()
        .ok()?
        .parse()
        .ok()
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
            upload: UploadPolicy::default(),
        })
    }

    pub fn with_upload_policy(mut self, policy: UploadPolicy) -> Self {
        self.upload = policy;
        self
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
    /// is idempotent) and returns its size and SHA-256 as uploaded. Transient failures are
    /// retried per [`UploadPolicy`]; large files resume where they stopped (TUS).
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
        if size > self.upload.tus_threshold {
            self.upload_resumable(bucket, path, file, size, content_type)
                .await?;
        } else {
            let mut backoff = Backoff::new(&self.upload);
            loop {
                match self.post_file(bucket, path, file, size, content_type).await {
                    Ok(()) => break,
                    Err(e) => backoff.wait_or_fail(e).await?,
                }
            }
        }
        Ok(Uploaded {
            path: path.to_owned(),
            size,
            sha256,
        })
    }

    async fn post_file(
        &self,
        bucket: &str,
        path: &str,
        file: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|source| StorageError::File {
                path: file.display().to_string(),
                source,
            })?;
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
        Ok(())
    }

    /// TUS 1.0.0 against `/storage/v1/upload/resumable`: create, then PATCH chunk by chunk; on a
    /// transient failure HEAD the upload and go on from the offset the server confirms. An
    /// upload the server no longer knows (404/410) starts over.
    async fn upload_resumable(
        &self,
        bucket: &str,
        path: &str,
        file: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<(), StorageError> {
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let metadata = format!(
            "bucketName {},objectName {},contentType {}",
            b64(bucket),
            b64(path),
            b64(content_type)
        );
        let what = || format!("resumable upload to {bucket}/{path}");
        let mut backoff = Backoff::new(&self.upload);
        let mut location: Option<String> = None;
        let mut offset = 0u64;
        let mut confirmed = 0u64;
        // Whether `offset` must be re-read from the server before the next PATCH.
        let mut resync = false;
        loop {
            let step: Result<(), StorageError> = async {
                let Some(url) = location.clone() else {
                    let resp = self
                        .authed(self.http.post(format!("{}/upload/resumable", self.base)))
                        .header("tus-resumable", TUS_VERSION)
                        .header("upload-length", size)
                        .header("upload-metadata", &metadata)
                        .header("x-upsert", "true")
                        .header("content-length", 0)
                        .send()
                        .await?;
                    let resp = Self::check(resp, what).await?;
                    let url = resp
                        .headers()
                        .get("location")
                        .and_then(|l| l.to_str().ok())
                        .map(|l| url::Url::parse(&self.base).and_then(|b| b.join(l)))
                        .and_then(Result::ok)
                        .ok_or_else(|| StorageError::Status {
                            status: resp.status().as_u16(),
                            what: what(),
                            body: "TUS creation answered without a usable Location".into(),
                        })?;
                    location = Some(url.into());
                    offset = 0;
                    resync = false;
                    return Ok(());
                };
                if resync {
                    let resp = self
                        .authed(self.http.head(&url))
                        .header("tus-resumable", TUS_VERSION)
                        .send()
                        .await?;
                    let resp = Self::check(resp, what).await?;
                    offset = upload_offset(&resp).ok_or_else(|| StorageError::Status {
                        status: resp.status().as_u16(),
                        what: what(),
                        body: "TUS HEAD answered without Upload-Offset".into(),
                    })?;
                    resync = false;
                    return Ok(());
                }
                let len = self.upload.chunk_size.min(size - offset);
                let chunk =
                    read_chunk(file, offset, len)
                        .await
                        .map_err(|source| StorageError::File {
                            path: file.display().to_string(),
                            source,
                        })?;
                let resp = self
                    .authed(self.http.patch(&url))
                    .header("tus-resumable", TUS_VERSION)
                    .header("upload-offset", offset)
                    .header("content-type", "application/offset+octet-stream")
                    .header("x-upsert", "true")
                    .body(chunk)
                    .send()
                    .await?;
                let resp = Self::check(resp, what).await?;
                match upload_offset(&resp) {
                    Some(next) if next > offset && next <= size => offset = next,
                    _ => resync = true,
                }
                Ok(())
            }
            .await;
            match step {
                Ok(()) => {
                    if location.is_some() && !resync && offset == size {
                        return Ok(());
                    }
                    // Only new bytes on the server count as progress: a connection that is cut
                    // at the same place every time must still run out of tries.
                    if offset > confirmed {
                        confirmed = offset;
                        backoff.reset();
                    }
                }
                // Gone (unknown or expired upload): start a new one.
                Err(
                    e @ StorageError::Status {
                        status: 404 | 410, ..
                    },
                ) if location.is_some() => {
                    location = None;
                    backoff.count_failure(e)?;
                }
                // Offset conflict: another request moved it (or our last PATCH landed but its
                // answer was lost). Ask where it stands; no wait needed.
                Err(e @ StorageError::Status { status: 409, .. }) if location.is_some() => {
                    resync = true;
                    backoff.count_failure(e)?;
                }
                Err(e) => {
                    resync = location.is_some();
                    backoff.wait_or_fail(e).await?;
                }
            }
        }
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

/// Counts transient failures of one upload and sleeps between them (exponential, capped).
struct Backoff {
    failures: u32,
    policy: UploadPolicy,
}

impl Backoff {
    fn new(policy: &UploadPolicy) -> Self {
        Self {
            failures: 0,
            policy: policy.clone(),
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    /// Counts a failure that needs no wait (the next request fixes it); returns `e` when no
    /// tries are left.
    fn count_failure(&mut self, e: StorageError) -> Result<(), StorageError> {
        if self.failures >= self.policy.retries {
            return Err(e);
        }
        self.failures += 1;
        Ok(())
    }

    /// Sleeps before the next try when `e` is transient and tries are left; returns `e` otherwise.
    async fn wait_or_fail(&mut self, e: StorageError) -> Result<(), StorageError> {
        if !e.is_retryable() || self.failures >= self.policy.retries {
            return Err(e);
        }
        let factor = 2u32.saturating_pow(self.failures.min(16));
        self.failures += 1;
        let delay = self
            .policy
            .base_delay
            .saturating_mul(factor)
            .min(self.policy.max_delay);
        tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "upload interrupted; retrying");
        tokio::time::sleep(delay).await;
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
