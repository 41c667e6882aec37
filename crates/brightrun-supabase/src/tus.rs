//! Resumable uploads: TUS 1.0.0 as Supabase Storage speaks it (supabase-protocol.md §4.7), and
//! the one loop that drives an upload to its end.
//!
//! Two ways in: `/upload/resumable` with the bearer token ([`TusAuth::Bearer`], the worker) and
//! `/upload/resumable/sign` with a signed upload token in `x-signature` ([`TusAuth::Signed`], a
//! user's dataset upload). The file goes in `chunk_size` PATCHes (6 MiB: what Supabase
//! requires), each read from disk in one go while the one before it is answered, so memory stays
//! at two chunks whatever the file's size.
//!
//! [`ResumableUpload::run`] never retries blindly: after any failed PATCH the offset is re-read
//! with HEAD, a 409 offset conflict is a resync, a refused token is renewed, an upload the server
//! forgot starts over, and transient failures back off with jitter, honouring `Retry-After`.
//! Attempts are counted without progress ([`Backoff`]): only bytes the server confirms as new
//! reset the count, so a link cut at the same place every time still runs out of tries. Each
//! confirmed state is handed to [`TusHooks::confirmed`], so a caller that keeps it (the client's
//! local database) resumes after a crash or a restart. Dropping the future cancels the upload;
//! what the server confirmed stays confirmed.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use url::Url;

use crate::error::{ApiError, Error, Result, Service};
use crate::retry::{Backoff, RetryPolicy};
use crate::secret::Secret;
use crate::storage::Storage;

const TUS_VERSION: &str = "1.0.0";
const READ_PIECE: usize = 64 * 1024;

/// How requests of one upload are authenticated.
#[derive(Debug, Clone)]
pub enum TusAuth {
    /// `Authorization: Bearer` from the storage client's credentials, at `/upload/resumable`.
    Bearer,
    /// A signed upload token (`Storage::sign_upload`) in `x-signature`, at
    /// `/upload/resumable/sign`.
    Signed(Secret),
}

/// What the object will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TusMetadata {
    pub bucket: String,
    pub object: String,
    pub content_type: String,
    pub cache_control: Option<String>,
    /// Replace an object already at that path (`x-upsert`).
    pub upsert: bool,
}

impl TusMetadata {
    /// The `Upload-Metadata` header: `key base64(value)` pairs.
    fn header(&self) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut out = format!(
            "bucketName {},objectName {},contentType {}",
            b64(&self.bucket),
            b64(&self.object),
            b64(&self.content_type)
        );
        if let Some(cache) = &self.cache_control {
            out.push_str(&format!(",cacheControl {}", b64(cache)));
        }
        out
    }
}

/// How an upload moves. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct TusOptions {
    /// Bytes per PATCH; the last may be smaller. 6 MiB, what Supabase's TUS endpoint requires.
    pub chunk_size: u64,
    /// Backoff between failed steps, counted without progress. [`RetryPolicy::transfers`].
    pub retry: RetryPolicy,
    /// Bound on one PATCH (request and answer). 10 min: 6 MiB at 10 KiB/s.
    pub patch_timeout: Duration,
    /// Bound on every other request. 60 s.
    pub request_timeout: Duration,
    /// Refused tokens renewed in a row before giving up. 3.
    pub max_token_renewals: u32,
}

impl Default for TusOptions {
    fn default() -> Self {
        Self {
            chunk_size: 6 * 1024 * 1024,
            retry: RetryPolicy::transfers(),
            patch_timeout: Duration::from_secs(600),
            request_timeout: Duration::from_secs(60),
            max_token_renewals: 3,
        }
    }
}

/// What the caller of [`ResumableUpload::run`] decides.
pub trait TusHooks: Send {
    /// The authentication for the next requests; `renew` after the server refused the last.
    fn auth(&mut self, renew: bool) -> impl Future<Output = Result<TusAuth>> + Send;

    /// The server confirmed `offset` bytes of the upload at `upload` (`None`: there is no
    /// upload yet, or the server forgot it). Keep it to resume after a restart.
    fn confirmed(
        &mut self,
        upload: Option<&Url>,
        offset: u64,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (upload, offset);
        async { Ok(()) }
    }

    /// Before each PATCH: refuse to send when the file is no longer the one being uploaded.
    fn before_chunk(&mut self) -> Result<()> {
        Ok(())
    }

    /// Before the PATCH that would complete the upload, the one after which the object exists:
    /// wait for whatever must hold first (a dataset upload waits for its file's check and
    /// registers the dataset). An error ends the upload with it (a retryable one is retried
    /// with the PATCH); nothing of the last chunk is sent. Called again if that PATCH fails.
    fn before_completing(&mut self) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }

    /// Creation answered 409, the object exists: `true` when it is this upload's own (an
    /// earlier run finished without hearing the answer), which ends the upload.
    fn exists(&mut self, answer: &ApiError) -> impl Future<Output = Result<bool>> + Send {
        let _ = answer;
        async { Ok(false) }
    }
}

/// What a TUS refusal means. TUS answers in plain text with the real status; where the status
/// alone is ambiguous (409, 400) the wording of storage-api / `@tus/server` decides, here and
/// nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusRefusal {
    /// 409 `Upload-Offset conflict`: our offset is stale; HEAD and continue from the server's.
    OffsetConflict,
    /// 409 `Upload is locked by another request` (or 423): an earlier request still holds it.
    Locked,
    /// 409 `The resource already exists`.
    Exists,
    /// 400 `"exp" claim timestamp check failed`, `Invalid signature`, `Invalid Compact JWS`,
    /// `Missing x-signature header`, or a refused bearer token: get a new token.
    BadToken,
    /// 404 / 410: the server forgot the upload; create a new one.
    Gone,
    Other,
}

impl TusRefusal {
    pub fn of(api: &ApiError) -> Self {
        let m = api.message.to_ascii_lowercase();
        match api.status {
            409 if m.contains("already exists") => Self::Exists,
            409 if m.contains("locked") => Self::Locked,
            409 => Self::OffsetConflict,
            423 => Self::Locked,
            400 if m.contains("\"exp\" claim")
                || m.contains("signature")
                || m.contains("compact jws")
                || m.contains("jwt") =>
            {
                Self::BadToken
            }
            401 => Self::BadToken,
            404 | 410 => Self::Gone,
            _ => Self::Other,
        }
    }
}

/// One file to one object.
pub struct ResumableUpload<'a> {
    pub storage: &'a Storage,
    pub file: &'a Path,
    /// The file's size when the upload began (the upload's `Upload-Length`).
    pub size: u64,
    pub metadata: &'a TusMetadata,
    pub options: &'a TusOptions,
    /// Bytes sent or confirmed so far (absolute; may go down after a failed PATCH).
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// Where one run stands.
struct State {
    auth: Option<TusAuth>,
    renew: bool,
    renewals: u32,
    url: Option<Url>,
    offset: u64,
    /// The offset must be read from the server before the next PATCH.
    resync: bool,
    /// The next chunk, being read from disk while the current PATCH is answered: its offset.
    ahead: Option<(u64, ChunkRead)>,
}

impl ResumableUpload<'_> {
    /// Uploads the file, continuing the upload at `resume` (a URL an earlier run kept) when
    /// given; returns when the server holds every byte.
    pub async fn run(&self, resume: Option<Url>, hooks: &mut impl TusHooks) -> Result<()> {
        let mut state = State {
            auth: None,
            renew: false,
            renewals: 0,
            resync: resume.is_some(),
            url: resume,
            offset: 0,
            ahead: None,
        };
        let mut backoff = Backoff::new(self.options.retry);
        loop {
            let before = (state.url.is_some(), state.offset);
            match self.step(&mut state, hooks).await {
                Ok(Step::Done) => {
                    self.report(self.size);
                    return Ok(());
                }
                Ok(Step::Continue) => {
                    let (had_url, offset) = before;
                    // Only bytes the server confirms as new are progress.
                    if state.offset > offset || (!had_url && state.url.is_some()) {
                        backoff.reset();
                        state.renewals = 0;
                    }
                }
                Err(Error::Api(api)) if api.service == Service::Tus => {
                    self.refused(&mut state, &mut backoff, hooks, api).await?;
                }
                Err(e) if e.is_retryable() => {
                    tracing::info!(error = %e, "upload step failed; retrying");
                    state.resync = state.url.is_some();
                    wait(&mut backoff, e).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn report(&self, bytes: u64) {
        if let Some(progress) = &self.progress {
            progress(bytes);
        }
    }

    async fn step(&self, state: &mut State, hooks: &mut impl TusHooks) -> Result<Step> {
        let Some(auth) = state.auth.clone() else {
            state.auth = Some(hooks.auth(state.renew).await?);
            state.renew = false;
            return Ok(Step::Continue);
        };
        let Some(url) = state.url.clone() else {
            match self.create(&auth).await {
                Ok(url) => {
                    hooks.confirmed(Some(&url), 0).await?;
                    state.url = Some(url);
                    state.offset = 0;
                    state.resync = false;
                    self.report(0);
                    return Ok(Step::Continue);
                }
                Err(Error::Api(api))
                    if api.service == Service::Tus
                        && TusRefusal::of(&api) == TusRefusal::Exists =>
                {
                    return if hooks.exists(&api).await? {
                        Ok(Step::Done)
                    } else {
                        Err(Error::Api(ApiError {
                            message: format!(
                                "{}/{} already holds a different file: {}",
                                self.metadata.bucket, self.metadata.object, api.message
                            ),
                            ..api
                        }))
                    };
                }
                Err(e) => return Err(e),
            }
        };
        if state.resync {
            let offset = self.offset(&auth, &url).await?;
            state.offset = offset;
            state.resync = false;
            hooks.confirmed(Some(&url), offset).await?;
            self.report(offset);
            return Ok(Step::Continue);
        }
        if state.offset >= self.size {
            return Ok(Step::Done);
        }
        hooks.before_chunk()?;
        let start = state.offset;
        let len = self.chunk_len(start);
        if start + len >= self.size {
            hooks.before_completing().await?;
        }
        let read = match state.ahead.take() {
            Some((at, read)) if at == start => read,
            _ => read_chunk(self.file.to_owned(), start, len),
        };
        // Read the next chunk while this one goes and the server stores it.
        let next = start + len;
        if next < self.size {
            let ahead = read_chunk(self.file.to_owned(), next, self.chunk_len(next));
            state.ahead = Some((next, ahead));
        }
        let chunk = read.await.map_err(std::io::Error::other)??;
        match self.patch(&auth, &url, start, chunk).await {
            Ok(offset) => {
                state.offset = offset;
                hooks.confirmed(Some(&url), offset).await?;
                self.report(offset);
                Ok(Step::Continue)
            }
            Err(e) => {
                // What was sent is not what was stored: back to the confirmed offset until a
                // HEAD says more.
                self.report(start);
                Err(e)
            }
        }
    }

    async fn refused(
        &self,
        state: &mut State,
        backoff: &mut Backoff,
        hooks: &mut impl TusHooks,
        api: ApiError,
    ) -> Result<()> {
        state.resync = state.url.is_some();
        match TusRefusal::of(&api) {
            TusRefusal::OffsetConflict | TusRefusal::Locked => {
                // Resync with a HEAD, after a little wait: the usual cause is an earlier request
                // of ours the server has not finished with.
                wait(backoff, Error::Api(api)).await
            }
            TusRefusal::BadToken => {
                if let Some(TusAuth::Bearer) = state.auth {
                    let token = self.storage.credentials().bearer().await?;
                    self.storage.credentials().refused(&token).await;
                }
                state.auth = None;
                state.renew = true;
                state.renewals += 1;
                if state.renewals > self.options.max_token_renewals {
                    return Err(Error::Api(api));
                }
                Ok(())
            }
            TusRefusal::Gone => {
                tracing::info!("the server forgot the upload; starting a new one");
                state.url = None;
                state.offset = 0;
                state.resync = false;
                hooks.confirmed(None, 0).await?;
                self.report(0);
                wait(backoff, Error::Api(api)).await
            }
            // Creation handles its own 409; here it would be a PATCH's, which cannot be.
            TusRefusal::Exists | TusRefusal::Other => {
                let e = Error::Api(api);
                if e.is_retryable() {
                    wait(backoff, e).await
                } else {
                    Err(e)
                }
            }
        }
    }

    fn endpoint(&self, auth: &TusAuth) -> Url {
        match auth {
            TusAuth::Bearer => self.storage.url(&["upload", "resumable"], ""),
            TusAuth::Signed(_) => self.storage.url(&["upload", "resumable", "sign"], ""),
        }
    }

    async fn request(
        &self,
        auth: &TusAuth,
        method: reqwest::Method,
        url: Url,
    ) -> Result<reqwest::RequestBuilder> {
        request(self.storage, auth, method, url).await
    }

    async fn create(&self, auth: &TusAuth) -> Result<Url> {
        let endpoint = self.endpoint(auth);
        let mut request = self
            .request(auth, reqwest::Method::POST, endpoint.clone())
            .await?
            .header("upload-length", self.size)
            .header("upload-metadata", self.metadata.header())
            .header("content-length", 0)
            .timeout(self.options.request_timeout);
        if self.metadata.upsert {
            request = request.header("x-upsert", "true");
        }
        let response = request.send().await?;
        if response.status() != reqwest::StatusCode::CREATED {
            return Err(ApiError::from_response(Service::Tus, response).await.into());
        }
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol("TUS creation answered without a Location".into()))?;
        endpoint
            .join(location)
            .map_err(|e| Error::Protocol(format!("TUS Location {location:?}: {e}")))
    }

    async fn offset(&self, auth: &TusAuth, url: &Url) -> Result<u64> {
        let response = self
            .request(auth, reqwest::Method::HEAD, url.clone())
            .await?
            .timeout(self.options.request_timeout)
            .send()
            .await?;
        if response.status() == reqwest::StatusCode::BAD_REQUEST {
            // A HEAD answer has no body to say why; on the signed route the only 400 is the
            // token check (missing, invalid or expired signature).
            return Err(ApiError::from_body(
                Service::Tus,
                400,
                "Invalid signature (HEAD answered 400, which carries no reason)",
                None,
            )
            .into());
        }
        if !response.status().is_success() {
            return Err(ApiError::from_response(Service::Tus, response).await.into());
        }
        let offset = upload_offset(&response)?;
        if offset > self.size {
            return Err(Error::Protocol(format!(
                "the server holds {offset} bytes of a {}-byte upload",
                self.size
            )));
        }
        Ok(offset)
    }

    /// Bytes of the chunk that starts at `start`.
    fn chunk_len(&self, start: u64) -> u64 {
        self.options.chunk_size.max(1).min(self.size - start)
    }

    /// Sends `chunk`, the file's bytes from `start`; the server's new offset.
    async fn patch(
        &self,
        auth: &TusAuth,
        url: &Url,
        start: u64,
        chunk: bytes::Bytes,
    ) -> Result<u64> {
        let len = chunk.len() as u64;
        let progress = self.progress.clone();
        let mut sent = start;
        // Handed over in pieces, so progress moves while the chunk goes.
        let pieces = (0..chunk.len()).step_by(READ_PIECE).map(move |at| {
            Ok::<_, std::io::Error>(chunk.slice(at..(at + READ_PIECE).min(chunk.len())))
        });
        let body = futures::stream::iter(pieces).inspect(move |piece| {
            if let (Ok(bytes), Some(progress)) = (piece, &progress) {
                sent += bytes.len() as u64;
                progress(sent);
            }
        });
        let mut request = self
            .request(auth, reqwest::Method::PATCH, url.clone())
            .await?
            .header("upload-offset", start)
            .header("content-type", "application/offset+octet-stream")
            .header("content-length", len)
            .body(reqwest::Body::wrap_stream(body))
            .timeout(self.options.patch_timeout);
        if self.metadata.upsert {
            request = request.header("x-upsert", "true");
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(ApiError::from_response(Service::Tus, response).await.into());
        }
        let offset = upload_offset(&response)?;
        if offset <= start || offset > self.size {
            return Err(Error::Protocol(format!(
                "PATCH at {start} answered with offset {offset} (upload length {})",
                self.size
            )));
        }
        Ok(offset)
    }
}

enum Step {
    Continue,
    Done,
}

/// A read of `len` bytes of `file` from `start`, in one go on a blocking thread (a chunk is
/// 6 MiB: one read instead of a hundred 64 KiB hops through tokio's file adapter).
type ChunkRead = tokio::task::JoinHandle<std::io::Result<bytes::Bytes>>;

fn read_chunk(file: std::path::PathBuf, start: u64, len: u64) -> ChunkRead {
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Seek as _};
        let mut f = std::fs::File::open(file)?;
        f.seek(std::io::SeekFrom::Start(start))?;
        let mut buf = vec![0; usize::try_from(len).map_err(std::io::Error::other)?];
        f.read_exact(&mut buf)?;
        Ok(bytes::Bytes::from(buf))
    })
}

async fn request(
    storage: &Storage,
    auth: &TusAuth,
    method: reqwest::Method,
    url: Url,
) -> Result<reqwest::RequestBuilder> {
    let request = storage
        .http()
        .request(method, url)
        .header("tus-resumable", TUS_VERSION)
        .header("apikey", storage.apikey().expose());
    Ok(match auth {
        TusAuth::Bearer => {
            let token = storage.credentials().bearer().await?;
            request.bearer_auth(token.expose())
        }
        TusAuth::Signed(token) => request.header("x-signature", token.expose()),
    })
}

/// Ends an unfinished upload (TUS termination, `DELETE` on its URL): the server drops the bytes
/// it holds, and no object ever appears. An upload the server no longer knows (404, 410) is
/// already gone.
pub async fn terminate(
    storage: &Storage,
    upload: &Url,
    auth: &TusAuth,
    timeout: Duration,
) -> Result<()> {
    let response = request(storage, auth, reqwest::Method::DELETE, upload.clone())
        .await?
        .timeout(timeout)
        .send()
        .await?;
    let status = response.status();
    if status.is_success() || matches!(status.as_u16(), 404 | 410) {
        Ok(())
    } else {
        Err(ApiError::from_response(Service::Tus, response).await.into())
    }
}

async fn wait(backoff: &mut Backoff, last: Error) -> Result<()> {
    backoff
        .wait(last)
        .await
        .map_err(|last| Error::RetriesExhausted {
            attempts: backoff.attempts(),
            last: Box::new(last),
        })
}

fn upload_offset(response: &reqwest::Response) -> Result<u64> {
    response
        .headers()
        .get("upload-offset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::Protocol("TUS answer without a valid Upload-Offset".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_refusals_are_classified_by_storage_api_wording() {
        let table = [
            (409, "Upload-Offset conflict", TusRefusal::OffsetConflict),
            (
                409,
                "Upload is locked by another request",
                TusRefusal::Locked,
            ),
            (409, "The resource already exists", TusRefusal::Exists),
            (423, "", TusRefusal::Locked),
            (
                400,
                "\"exp\" claim timestamp check failed",
                TusRefusal::BadToken,
            ),
            (400, "Invalid signature", TusRefusal::BadToken),
            (400, "Invalid Compact JWS", TusRefusal::BadToken),
            (400, "Missing x-signature header", TusRefusal::BadToken),
            (400, "Invalid upload-metadata", TusRefusal::Other),
            (404, "The file for this url was not found", TusRefusal::Gone),
            (
                410,
                "The file for this url no longer exists",
                TusRefusal::Gone,
            ),
            (413, "Maximum size exceeded", TusRefusal::Other),
        ];
        for (status, text, want) in table {
            let api = ApiError::from_body(Service::Tus, status, text, None);
            assert_eq!(TusRefusal::of(&api), want, "{status} {text:?}");
        }
    }

    #[test]
    fn metadata_is_base64_pairs() {
        let metadata = TusMetadata {
            bucket: "lora-datasets".into(),
            object: "u/d/f.jsonl".into(),
            content_type: "application/jsonl".into(),
            cache_control: Some("3600".into()),
            upsert: false,
        };
        assert_eq!(
            metadata.header(),
            "bucketName bG9yYS1kYXRhc2V0cw==,objectName dS9kL2YuanNvbmw=,contentType YXBwbGljYXRpb24vanNvbmw=,cacheControl MzYwMA==",
            "Supabase reads bucketName, objectName, contentType and cacheControl"
        );
    }
}
