//! Supabase Storage: the object API as both clients use it (sign, upload, download, list,
//! remove), with the caller's credentials: a user's session in `brightrun-client`, the
//! service-role key in `brightrun-worker`. Large files go through [`crate::tus`].
//!
//! Errors are Storage's own shape (`{statusCode, error, message, code}`, sent as HTTP 400 with
//! the logical status in the body), read by [`ApiError::from_response`]. A token Storage refuses
//! is handed back to [`Credentials::refused`] and the request sent once more.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use url::Url;

use crate::error::{ApiError, Error, ErrorCode, Result, Service};
use crate::retry::Backoff;
use crate::secret::Secret;
use crate::tus::{ResumableUpload, TusAuth, TusHooks, TusMetadata, TusOptions};

/// Where the bearer token of each request comes from.
pub trait Credentials: Send + Sync + std::fmt::Debug {
    /// The token to send now (a session refreshes it when due).
    fn bearer(&self) -> BoxFuture<'_, Result<Secret>>;
    /// The server refused `token` as expired or invalid: the next [`Credentials::bearer`]
    /// should be a new one. A fixed key has nothing to do.
    fn refused<'a>(&'a self, token: &'a Secret) -> BoxFuture<'a, ()> {
        let _ = token;
        Box::pin(async {})
    }
}

/// A fixed key (the worker's service_role key): never refreshed.
impl Credentials for Secret {
    fn bearer(&self) -> BoxFuture<'_, Result<Secret>> {
        let token = self.clone();
        Box::pin(async move { Ok(token) })
    }
}

/// A file uploaded to Storage, with what a downloader checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the bytes sent.
    pub sha256: String,
}

/// How [`Storage::upload_file`] moves a file. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadOptions {
    /// Files larger than this go through TUS. 6 MiB.
    pub tus_threshold: u64,
    /// Chunks, retries and timeouts of TUS uploads; the retry policy serves small files too.
    pub tus: TusOptions,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            tus_threshold: 6 * 1024 * 1024,
            tus: TusOptions::default(),
        }
    }
}

/// The Storage API of one project with one set of credentials. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    http: reqwest::Client,
    /// `<project>/storage/v1`, without a trailing slash.
    base: Url,
    apikey: Secret,
    credentials: Arc<dyn Credentials>,
}

/// `Content-Length` of an answer, when it has a valid one.
pub fn content_length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

impl Storage {
    /// `project_url` is `https://<ref>.supabase.co` or a brightrun-stack's URL; `apikey` the
    /// anon key (users) or the service_role key (the worker).
    pub fn new(
        http: reqwest::Client,
        project_url: &Url,
        apikey: Secret,
        credentials: Arc<dyn Credentials>,
    ) -> Self {
        let base = Url::parse(&format!(
            "{}/storage/v1",
            project_url.as_str().trim_end_matches('/')
        ))
        .expect("a project URL plus a path is a URL");
        Self {
            http,
            base,
            apikey,
            credentials,
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn apikey(&self) -> &Secret {
        &self.apikey
    }

    pub fn credentials(&self) -> &Arc<dyn Credentials> {
        &self.credentials
    }

    /// `<project>/storage/v1/<prefix…>/<object path>`, each segment percent-encoded.
    pub fn url(&self, prefix: &[&str], object_path: &str) -> Url {
        let mut url = self.base.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .expect("an http(s) URL has path segments");
            segments.pop_if_empty();
            segments.extend(prefix);
            if !object_path.is_empty() {
                segments.extend(object_path.split('/'));
            }
        }
        url
    }

    /// `<project>/storage/v1` + a path the server returned (`/object/sign/…?token=`).
    pub fn relative(&self, relative: &str) -> Result<Url> {
        Url::parse(&format!(
            "{}/{}",
            self.base.as_str().trim_end_matches('/'),
            relative.trim_start_matches('/')
        ))
        .map_err(|e| Error::Protocol(format!("the server's URL {relative:?} does not parse: {e}")))
    }

    /// Sends an authenticated request built by `build`; a token Storage refuses is refreshed
    /// and the request sent once more (so `build` may be called twice: a body stream is made
    /// anew each time). Error answers are read as Storage errors.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder>,
    ) -> Result<reqwest::Response> {
        let mut refused_once = false;
        loop {
            let token = self.credentials.bearer().await?;
            let response = build(&self.http)?
                .header("apikey", self.apikey.expose())
                .bearer_auth(token.expose())
                .send()
                .await?;
            if response.status().is_success() {
                return Ok(response);
            }
            let error = ApiError::from_response(Service::Storage, response).await;
            if error.code() == ErrorCode::AuthExpired && !refused_once {
                refused_once = true;
                self.credentials.refused(&token).await;
                continue;
            }
            return Err(error.into());
        }
    }

    async fn post_json(&self, url: Url, body: &Value) -> Result<Value> {
        let response = self
            .send(|http| Ok(http.post(url.clone()).json(body)))
            .await?;
        Ok(response.json().await?)
    }

    /// A signed download URL for one object, valid for `ttl`.
    pub async fn sign_download(&self, bucket: &str, path: &str, ttl: Duration) -> Result<Url> {
        #[derive(Deserialize)]
        struct Signed {
            #[serde(rename = "signedURL")]
            signed_url: String,
        }
        let url = self.url(&["object", "sign", bucket], path);
        let answer = self
            .post_json(url, &json!({ "expiresIn": ttl.as_secs().max(1) }))
            .await?;
        let signed: Signed = serde_json::from_value(answer)
            .map_err(|e| Error::Protocol(format!("the sign answer has no signedURL: {e}")))?;
        self.relative(&signed.signed_url)
    }

    /// A token for one upload to `bucket/path` (`POST /object/upload/sign/…`), for
    /// [`TusAuth::Signed`].
    pub async fn sign_upload(&self, bucket: &str, path: &str) -> Result<Secret> {
        #[derive(Deserialize)]
        struct Signed {
            token: Secret,
        }
        let url = self.url(&["object", "upload", "sign", bucket], path);
        let answer = self.post_json(url, &json!({})).await?;
        let signed: Signed = serde_json::from_value(answer)
            .map_err(|e| Error::Protocol(format!("the signed upload answer has no token: {e}")))?;
        Ok(signed.token)
    }

    /// A signed upload URL for `bucket/path` (`PUT` the bytes to it, no other credentials),
    /// replacing what is there when `upsert`. It lasts as long as the project's signed upload
    /// URLs (2 h on hosted Supabase).
    pub async fn sign_upload_url(&self, bucket: &str, path: &str, upsert: bool) -> Result<Url> {
        #[derive(Deserialize)]
        struct Signed {
            url: String,
        }
        let url = self.url(&["object", "upload", "sign", bucket], path);
        let response = self
            .send(|http| {
                let request = http.post(url.clone()).json(&json!({}));
                Ok(if upsert {
                    request.header("x-upsert", "true")
                } else {
                    request
                })
            })
            .await?;
        let signed: Signed = response
            .json()
            .await
            .map_err(|e| Error::Protocol(format!("the signed upload answer has no url: {e}")))?;
        self.relative(&signed.url)
    }

    /// The size of an object the credentials may read; `None` when there is none. Asks for the
    /// first byte: Storage answers a refused HEAD with a bare 400 that cannot say "not found".
    pub async fn object_size(&self, bucket: &str, path: &str) -> Result<Option<u64>> {
        let url = self.url(&["object", "authenticated", bucket], path);
        let ranged = |http: &reqwest::Client| {
            Ok(http
                .get(url.clone())
                .header(reqwest::header::RANGE, "bytes=0-0"))
        };
        match self.send(ranged).await {
            // `Content-Range: bytes 0-0/<size>`; a server that ignores Range sends it whole.
            Ok(response) => Ok(response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|v| v.parse().ok())
                .or_else(|| content_length(&response))),
            Err(Error::Api(api)) if api.code() == ErrorCode::NotFound => Ok(None),
            // 416: the object is empty.
            Err(Error::Api(api)) if api.status == 416 => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// Starts downloading an object; the body is a byte stream (constant memory).
    pub async fn download(
        &self,
        bucket: &str,
        path: &str,
    ) -> Result<impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + use<>> {
        let url = self.url(&["object", bucket], path);
        let response = self.send(|http| Ok(http.get(url.clone()))).await?;
        Ok(response.bytes_stream().map_err(std::io::Error::other))
    }

    /// Uploads a local file, replacing an object already there (so a retried upload is
    /// idempotent), and returns its size and SHA-256 as sent. Files up to
    /// `options.tus_threshold` are one `POST`, re-sent whole after a transient failure; larger
    /// ones go through TUS and resume from the offset the server confirms.
    pub async fn upload_file(
        &self,
        bucket: &str,
        path: &str,
        file: &Path,
        content_type: &str,
        options: &UploadOptions,
    ) -> Result<Uploaded> {
        // Digest first, from disk, then send the same bytes: the digest recorded is the one of
        // the stored object.
        let (size, sha256) = sha256_file(file).await?;
        if size > options.tus_threshold {
            let metadata = TusMetadata {
                bucket: bucket.to_owned(),
                object: path.to_owned(),
                content_type: content_type.to_owned(),
                cache_control: None,
                upsert: true,
            };
            let upload = ResumableUpload {
                storage: self,
                file,
                size,
                metadata: &metadata,
                options: &options.tus,
                progress: None,
            };
            upload.run(None, &mut BearerUpload).await?;
        } else {
            let mut backoff = Backoff::new(options.tus.retry);
            loop {
                match self.post_file(bucket, path, file, size, content_type).await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(error = %e, "upload interrupted; retrying");
                        backoff
                            .wait(e)
                            .await
                            .map_err(|last| exhausted(&backoff, last))?;
                    }
                    Err(e) => return Err(e),
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
    ) -> Result<()> {
        let url = self.url(&["object", bucket], path);
        self.send(|http| {
            let f = tokio::fs::File::from_std(std::fs::File::open(file)?);
            Ok(http
                .post(url.clone())
                .header("content-type", content_type)
                .header("content-length", size)
                .header("x-upsert", "true")
                .body(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::new(f),
                )))
        })
        .await?;
        Ok(())
    }

    /// Uploads bytes (small objects), replacing what is there.
    pub async fn upload_bytes(
        &self,
        bucket: &str,
        path: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<()> {
        let url = self.url(&["object", bucket], path);
        self.send(|http| {
            Ok(http
                .post(url.clone())
                .header("content-type", content_type)
                .header("x-upsert", "true")
                .body(bytes.clone()))
        })
        .await?;
        Ok(())
    }

    /// Object names under `prefix` (one level, as Storage lists).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Entry {
            name: String,
        }
        let url = self.url(&["object", "list", bucket], "");
        let answer = self
            .post_json(
                url,
                &json!({ "prefix": prefix, "limit": 1000, "offset": 0 }),
            )
            .await?;
        let entries: Vec<Entry> = serde_json::from_value(answer)
            .map_err(|e| Error::Protocol(format!("the list answer: {e}")))?;
        Ok(entries.into_iter().map(|e| e.name).collect())
    }

    /// Deletes objects (missing ones are ignored by Storage).
    pub async fn remove(&self, bucket: &str, paths: &[String]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let url = self.url(&["object", bucket], "");
        self.send(|http| Ok(http.delete(url.clone()).json(&json!({ "prefixes": paths }))))
            .await?;
        Ok(())
    }
}

/// TUS with the bearer token (`/upload/resumable`), nothing kept between runs.
struct BearerUpload;

impl TusHooks for BearerUpload {
    async fn auth(&mut self, _renew: bool) -> Result<TusAuth> {
        Ok(TusAuth::Bearer)
    }
}

fn exhausted(backoff: &Backoff, last: Error) -> Error {
    Error::RetriesExhausted {
        attempts: backoff.attempts(),
        last: Box::new(last),
    }
}

/// Size and lowercase hex SHA-256 of a file, read in 256 KiB pieces.
pub async fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage() -> Storage {
        Storage::new(
            reqwest::Client::new(),
            &"http://127.0.0.1:54321/".parse().expect("url"),
            Secret::new("anon"),
            Arc::new(Secret::new("service")),
        )
    }

    #[test]
    fn object_paths_are_encoded_per_segment() {
        assert_eq!(
            storage()
                .url(&["object", "lora-models"], "u/d/my file (1).jsonl")
                .as_str(),
            "http://127.0.0.1:54321/storage/v1/object/lora-models/u/d/my%20file%20(1).jsonl",
            "spaces encoded, separators kept"
        );
        assert_eq!(
            storage().url(&["object", "list", "b"], "").as_str(),
            "http://127.0.0.1:54321/storage/v1/object/list/b",
            "no object path, no trailing slash"
        );
    }

    #[test]
    fn server_paths_join_the_storage_base() {
        assert_eq!(
            storage()
                .relative("/object/sign/b/x.json?token=t")
                .expect("parses")
                .as_str(),
            "http://127.0.0.1:54321/storage/v1/object/sign/b/x.json?token=t",
            "a signed URL is relative to /storage/v1"
        );
    }
}
