//! Adapter downloads: signed URLs, Range resume from `.part`, parallel segments, SHA-256, atomic
//! rename.
//!
//! A file goes to `<dir>/<name>.part` first. Below `segment_threshold` it is one stream and the
//! `.part` file's length is the resume point. At or above it the `.part` file is allocated at full
//! size and `segments` ranges are fetched in parallel, each one's position kept in
//! `<name>.part.json` (written every `checkpoint_bytes`). A stream that delivers nothing for
//! `stall_timeout` is dropped and its range asked for again. When every byte is there the SHA-256
//! is compared with the digest the worker recorded; a mismatch throws the bytes away and fetches
//! again (a byte corrupted in transit is refetched, not kept). Only then is the file fsynced and
//! renamed into place, so `<dir>/<name>` is either absent or complete and verified.
//!
//! Names come from the server and are not trusted: [`sanitize_file_name`] keeps one plain
//! component, so nothing is ever written outside `dir`.
//!
//! Where the digests are: the artifact's manifest (`brightrun_core::ArtifactManifest`), which the
//! worker wrote when it stored the files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use url::Url;
use uuid::Uuid;

use brightrun_core::{ArtifactFile, ArtifactManifest};
use brightrun_supabase::{Backoff, RetryPolicy};

use crate::api::Api;
use crate::error::{ApiError, Error, Result, Service};
use crate::session::Session;
use crate::transfer::progress::{Meter, Phase, ProgressFn};

/// How to download. [`Default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Files at least this large are fetched in parallel segments. 64 MiB.
    pub segment_threshold: u64,
    /// Parallel segments for large files. 4.
    pub segments: u32,
    /// No byte for this long: drop the stream and ask for the range again. 30 s.
    pub stall_timeout: Duration,
    pub retry: RetryPolicy,
    /// Lifetime asked for signed URLs; renewed when it runs out. 1 h.
    pub signed_url_ttl: Duration,
    /// Refuse files the server recorded no SHA-256 for. true.
    pub require_digest: bool,
    /// Whole-file refetches after a digest mismatch before giving up. 2.
    pub max_refetches: u32,
    /// Segment positions are saved after this many bytes. 256 KiB.
    pub checkpoint_bytes: u64,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            segment_threshold: 64 * 1024 * 1024,
            segments: 4,
            stall_timeout: Duration::from_secs(30),
            retry: RetryPolicy::transfers(),
            signed_url_ttl: Duration::from_secs(3600),
            require_digest: true,
            max_refetches: 2,
            checkpoint_bytes: 256 * 1024,
        }
    }
}

/// A file in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Downloaded {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Whether `sha256` was checked against a recorded digest.
    pub verified: bool,
    /// The file was already there with the right digest; nothing was fetched.
    pub already_present: bool,
    /// Where this run started when it resumed a `.part` file.
    pub resumed_from: u64,
}

/// One plain file name from a name the server gave: the last `/` or `\` component, control
/// characters and `: * ? " < > |` replaced by `_`, leading dots and spaces and trailing dots and
/// spaces removed, Windows device names prefixed with `_`, at most 200 bytes. `None` when
/// nothing usable is left (`..`, `/`, empty).
pub fn sanitize_file_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned
        .trim_start_matches(['.', ' '])
        .trim_end_matches(['.', ' ']);
    if trimmed.is_empty() {
        return None;
    }
    let stem = trimmed.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    let mut out = if reserved {
        format!("_{trimmed}")
    } else {
        trimmed.to_owned()
    };
    while out.len() > 200 {
        out.pop();
    }
    Some(out)
}

/// Segment positions of a segmented `.part` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartState {
    size: u64,
    etag: Option<String>,
    /// `[start, end)` and the next byte to fetch.
    segments: Vec<SegmentState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SegmentState {
    start: u64,
    end: u64,
    pos: u64,
}

/// Downloads artifact files for one session.
#[derive(Debug, Clone)]
pub struct Downloader {
    api: Api,
    options: DownloadOptions,
}

/// The signed URL every segment shares, renewed when it expires.
struct SignedUrl {
    url: Url,
    generation: u64,
}

struct Job<'a> {
    dl: &'a Downloader,
    bucket: &'a str,
    file: &'a ArtifactFile,
    name: String,
    part: PathBuf,
    sidecar: PathBuf,
    signed: tokio::sync::Mutex<Option<SignedUrl>>,
    meter: Arc<Mutex<Meter>>,
    checkpoint: tokio::sync::Mutex<()>,
}

impl Downloader {
    pub fn new(session: Arc<Session>, options: DownloadOptions) -> Self {
        Self::with_api(Api::new(session), options)
    }

    pub fn with_api(api: Api, options: DownloadOptions) -> Self {
        Self { api, options }
    }

    /// The manifest of artifact `artifact_id` (a `model_artifacts` row the user can see).
    pub async fn manifest(&self, artifact_id: Uuid) -> Result<ArtifactManifest> {
        Ok(self.api.model_artifact(artifact_id).await?.artifacts)
    }

    /// Downloads every file of an artifact into `dir`.
    pub async fn download_artifact(
        &self,
        artifact_id: Uuid,
        dir: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<Downloaded>> {
        let manifest = self.manifest(artifact_id).await?;
        self.download_manifest(&manifest, dir, progress).await
    }

    /// Downloads every file of `manifest` into `dir`.
    pub async fn download_manifest(
        &self,
        manifest: &ArtifactManifest,
        dir: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Vec<Downloaded>> {
        let files = manifest.download_files();
        if files.is_empty() {
            return Err(Error::Protocol("the artifact lists no files".into()));
        }
        let mut out = Vec::with_capacity(files.len());
        for file in &files {
            out.push(
                self.download_file(&manifest.bucket, file, dir, progress.clone())
                    .await?,
            );
        }
        Ok(out)
    }

    /// Downloads one file into `dir` (created if missing), resuming a `.part` file there.
    pub async fn download_file(
        &self,
        bucket: &str,
        file: &ArtifactFile,
        dir: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Downloaded> {
        let name =
            sanitize_file_name(&file.name).ok_or_else(|| Error::UnsafeName(file.name.clone()))?;
        if self.options.require_digest && file.sha256.is_none() {
            return Err(Error::NoDigest(name));
        }
        tokio::fs::create_dir_all(dir).await?;
        let dir = tokio::fs::canonicalize(dir).await?;
        let dest = dir.join(&name);
        if dest.parent() != Some(dir.as_path()) {
            return Err(Error::UnsafeName(file.name.clone()));
        }
        let mut meter = Meter::new(progress, file.size.unwrap_or(0));
        meter.item(Some(name.clone()));
        let meter = Arc::new(Mutex::new(meter));

        if let (Ok(meta), Some(expected)) = (tokio::fs::symlink_metadata(&dest).await, &file.sha256)
            && meta.is_file()
        {
            lock(&meter).phase(Phase::Verifying, 0, meta.len());
            if &sha256_file(&dest).await? == expected {
                lock(&meter).phase(Phase::Done, meta.len(), meta.len());
                return Ok(Downloaded {
                    path: dest,
                    size: meta.len(),
                    sha256: expected.clone(),
                    verified: true,
                    already_present: true,
                    resumed_from: 0,
                });
            }
        }

        let job = Job {
            dl: self,
            bucket,
            file,
            part: dir.join(format!("{name}.part")),
            sidecar: dir.join(format!("{name}.part.json")),
            name,
            signed: tokio::sync::Mutex::new(None),
            meter,
            checkpoint: tokio::sync::Mutex::new(()),
        };
        let mut refetches = 0;
        loop {
            let (size, resumed_from) = job.fetch().await?;
            lock(&job.meter).phase(Phase::Verifying, size, size);
            let actual = sha256_file(&job.part).await?;
            let mismatch = match &file.sha256 {
                Some(expected) if *expected != actual => Some(Error::DigestMismatch {
                    name: job.name.clone(),
                    expected: expected.clone(),
                    actual: actual.clone(),
                }),
                _ => match file.size {
                    Some(expected) if expected != size => Some(Error::SizeMismatch {
                        name: job.name.clone(),
                        expected,
                        actual: size,
                    }),
                    _ => None,
                },
            };
            if let Some(e) = mismatch {
                job.discard().await;
                refetches += 1;
                if refetches > self.options.max_refetches {
                    return Err(e);
                }
                tracing::warn!(error = %e, "downloaded bytes failed verification; fetching again");
                continue;
            }
            let f = tokio::fs::OpenOptions::new()
                .write(true)
                .open(&job.part)
                .await?;
            f.sync_all().await?;
            drop(f);
            tokio::fs::rename(&job.part, &dest).await?;
            if let Ok(d) = tokio::fs::File::open(&dir).await {
                // Makes the rename durable; not every platform can fsync a directory.
                let _ = d.sync_all().await;
            }
            let _ = tokio::fs::remove_file(&job.sidecar).await;
            lock(&job.meter).phase(Phase::Done, size, size);
            return Ok(Downloaded {
                path: dest,
                size,
                sha256: actual,
                verified: file.sha256.is_some(),
                already_present: false,
                resumed_from,
            });
        }
    }
}

enum FetchError {
    /// The signed URL expired or was refused: sign again.
    BadToken(ApiError),
    /// The object changed under a resumed download: start over.
    Changed,
    Other(Error),
}

impl<E: Into<Error>> From<E> for FetchError {
    fn from(e: E) -> Self {
        Self::Other(e.into())
    }
}

impl Job<'_> {
    async fn discard(&self) {
        let _ = tokio::fs::remove_file(&self.part).await;
        let _ = tokio::fs::remove_file(&self.sidecar).await;
    }

    /// A signed URL newer than `seen` (0: any).
    async fn signed_url(&self, seen: u64) -> Result<(Url, u64)> {
        let mut guard = self.signed.lock().await;
        if let Some(s) = guard.as_ref()
            && s.generation > seen
        {
            return Ok((s.url.clone(), s.generation));
        }
        let storage = self.dl.api.storage();
        let ttl = self.dl.options.signed_url_ttl;
        let mut backoff = Backoff::new(self.dl.options.retry);
        let url = loop {
            match storage
                .sign_download(self.bucket, &self.file.path, ttl)
                .await
            {
                Ok(url) => break url,
                Err(e) if e.is_retryable() => backoff
                    .wait(e)
                    .await
                    .map_err(|last| exhausted(&backoff, last.into()))?,
                Err(e) => return Err(e.into()),
            }
        };
        let generation = guard.as_ref().map_or(1, |s| s.generation + 1);
        *guard = Some(SignedUrl {
            url: url.clone(),
            generation,
        });
        Ok((url, generation))
    }

    /// Every byte into `.part`; returns the size and where this run started.
    async fn fetch(&self) -> Result<(u64, u64)> {
        let mut backoff = Backoff::new(self.dl.options.retry);
        let mut seen = 0;
        loop {
            match self.try_fetch(&mut seen, &mut backoff).await {
                Ok(done) => return Ok(done),
                Err(FetchError::Changed) => {
                    tracing::info!("the object changed since the download began; starting over");
                    self.discard().await;
                }
                Err(FetchError::BadToken(api)) => {
                    tracing::info!(message = %api.message, "signed URL refused; signing again");
                    if backoff.next_delay(None).is_none() {
                        return Err(api.into());
                    }
                }
                Err(FetchError::Other(e)) => return Err(e),
            }
        }
    }

    async fn try_fetch(
        &self,
        seen: &mut u64,
        backoff: &mut Backoff,
    ) -> Result<(u64, u64), FetchError> {
        let (url, generation) = self.signed_url(*seen).await?;
        *seen = generation;
        let (size, etag) = self.probe(&url, backoff).await?;
        let segmented = size >= self.dl.options.segment_threshold && self.dl.options.segments > 1;
        let state = if segmented {
            self.segmented_state(size, &etag).await?
        } else {
            let have = match tokio::fs::metadata(&self.part).await {
                Ok(m) if m.len() <= size => m.len(),
                Ok(_) => {
                    tokio::fs::remove_file(&self.part).await?;
                    0
                }
                Err(_) => 0,
            };
            if let Some(old) = read_sidecar(&self.sidecar).await
                && (old.size != size || old.etag != etag || old.segments.len() != 1)
                && have > 0
            {
                return Err(FetchError::Changed);
            }
            let state = PartState {
                size,
                etag: etag.clone(),
                segments: vec![SegmentState {
                    start: 0,
                    end: size,
                    pos: have,
                }],
            };
            write_sidecar(&self.sidecar, &state).await?;
            if have == 0 {
                tokio::fs::File::create(&self.part).await?;
            }
            state
        };
        let done: u64 = state.segments.iter().map(|s| s.pos - s.start).sum();
        lock(&self.meter).start_transfer(done);
        let shared = Arc::new(Mutex::new(state));
        let count = shared.lock().map(|s| s.segments.len()).unwrap_or(1);
        let tasks =
            (0..count).map(|i| self.run_segment(i, shared.clone(), etag.clone(), segmented));
        let results = futures::future::join_all(tasks).await;
        for r in results {
            r?;
        }
        Ok((size, done))
    }

    /// Size and ETag of the object (HEAD on the signed URL).
    /// Size and ETag of the object, from a one-byte ranged GET: a HEAD would do, but Storage
    /// answers a refused HEAD with a bare 400 that cannot say why (the body is where it says
    /// not found, or an expired token), so the first byte is asked for instead.
    async fn probe(
        &self,
        url: &Url,
        backoff: &mut Backoff,
    ) -> Result<(u64, Option<String>), FetchError> {
        loop {
            let result = self
                .dl
                .api
                .session()
                .http()
                .get(url.clone())
                .header(reqwest::header::RANGE, "bytes=0-0")
                .timeout(self.dl.options.stall_timeout)
                .send()
                .await;
            let e: Error = match result {
                Ok(r)
                    if r.status().is_success()
                        || r.status() == reqwest::StatusCode::RANGE_NOT_SATISFIABLE =>
                {
                    let etag = r
                        .headers()
                        .get(reqwest::header::ETAG)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // `Content-Range: bytes 0-0/<size>` (206), `bytes */0` (416, empty), or a
                    // whole 200 answer from a server that ignores Range.
                    let total = r
                        .headers()
                        .get(reqwest::header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.rsplit('/').next())
                        .and_then(|v| v.parse().ok());
                    let size = match (r.status(), total) {
                        (_, Some(total)) => total,
                        (reqwest::StatusCode::OK, None) => {
                            brightrun_supabase::storage::content_length(&r).ok_or_else(|| {
                                Error::Protocol("no Content-Length for the object".into())
                            })?
                        }
                        _ => {
                            return Err(FetchError::Other(Error::Protocol(
                                "a ranged answer without Content-Range".into(),
                            )));
                        }
                    };
                    return Ok((size, etag));
                }
                Ok(r) => {
                    let api = storage_error(r).await;
                    if is_bad_token(&api) {
                        return Err(FetchError::BadToken(api));
                    }
                    Error::Api(api)
                }
                // The signed URL carries a token: `From` keeps it out of the error (and logs).
                Err(e) => e.into(),
            };
            if !e.is_retryable() {
                return Err(FetchError::Other(e));
            }
            wait(backoff, e).await?;
        }
    }

    async fn segmented_state(
        &self,
        size: u64,
        etag: &Option<String>,
    ) -> Result<PartState, FetchError> {
        let part_ok = tokio::fs::metadata(&self.part)
            .await
            .is_ok_and(|m| m.len() == size);
        if let Some(old) = read_sidecar(&self.sidecar).await
            && part_ok
        {
            if old.size != size || &old.etag != etag {
                return Err(FetchError::Changed);
            }
            if old.segments.len() > 1 {
                return Ok(old);
            }
        }
        let n = u64::from(self.dl.options.segments);
        let step = size.div_ceil(n);
        let segments = (0..n)
            .map(|i| {
                let start = (i * step).min(size);
                let end = ((i + 1) * step).min(size);
                SegmentState {
                    start,
                    end,
                    pos: start,
                }
            })
            .filter(|s| s.end > s.start)
            .collect();
        let f = tokio::fs::File::create(&self.part).await?;
        f.set_len(size).await?;
        let state = PartState {
            size,
            etag: etag.clone(),
            segments,
        };
        write_sidecar(&self.sidecar, &state).await?;
        Ok(state)
    }

    /// Fetches segment `i` to its end, resuming from its position after every failure.
    async fn run_segment(
        &self,
        i: usize,
        shared: Arc<Mutex<PartState>>,
        etag: Option<String>,
        segmented: bool,
    ) -> Result<(), FetchError> {
        let mut backoff = Backoff::new(self.dl.options.retry);
        let mut seen = 0;
        loop {
            let seg = shared
                .lock()
                .map(|s| s.segments[i])
                .unwrap_or_else(|e| e.into_inner().segments[i]);
            if seg.pos >= seg.end {
                return Ok(());
            }
            let (url, generation) = self.signed_url(seen).await?;
            seen = generation;
            let before = seg.pos;
            let result = self
                .fetch_range(i, seg, &url, &shared, &etag, segmented)
                .await;
            let moved = shared
                .lock()
                .map(|s| s.segments[i].pos > before)
                .unwrap_or(false);
            if moved {
                backoff.reset();
            }
            match result {
                Ok(()) => {}
                Err(FetchError::BadToken(api)) => {
                    tracing::info!(message = %api.message, "signed URL refused; signing again");
                    wait(&mut backoff, api.into()).await?;
                }
                Err(FetchError::Other(e)) if e.is_retryable() => {
                    tracing::info!(segment = i, error = %e, "download range failed; retrying");
                    wait(&mut backoff, e).await?;
                }
                Err(other) => return Err(other),
            }
        }
    }

    async fn fetch_range(
        &self,
        i: usize,
        seg: SegmentState,
        url: &Url,
        shared: &Arc<Mutex<PartState>>,
        etag: &Option<String>,
        segmented: bool,
    ) -> Result<(), FetchError> {
        let stall = self.dl.options.stall_timeout;
        let request = self.dl.api.session().http().get(url.clone()).header(
            reqwest::header::RANGE,
            format!("bytes={}-{}", seg.pos, seg.end - 1),
        );
        let response = tokio::time::timeout(stall, request.send())
            .await
            .map_err(|_| Error::Stalled(stall))?
            .map_err(Error::from)?;
        let status = response.status();
        if !status.is_success() {
            let api = storage_error(response).await;
            if is_bad_token(&api) {
                return Err(FetchError::BadToken(api));
            }
            return Err(FetchError::Other(Error::Api(api)));
        }
        let answer_etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if etag.is_some() && answer_etag.is_some() && &answer_etag != etag {
            return Err(FetchError::Changed);
        }
        if status == reqwest::StatusCode::PARTIAL_CONTENT {
            let start = response
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(seg.pos) {
                return Err(FetchError::Other(Error::Protocol(format!(
                    "asked for bytes from {}, got Content-Range starting at {start:?}",
                    seg.pos
                ))));
            }
        } else if seg.pos != 0 || seg.end != shared.lock().map(|s| s.size).unwrap_or(0) {
            return Err(FetchError::Other(Error::Protocol(
                "the server ignored the Range header".into(),
            )));
        }

        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&self.part)
            .await?;
        file.seek(std::io::SeekFrom::Start(seg.pos)).await?;
        let mut stream = response.bytes_stream();
        let mut pos = seg.pos;
        let mut since_checkpoint = 0u64;
        let result: Result<(), FetchError> = loop {
            let next = match tokio::time::timeout(stall, stream.next()).await {
                Ok(next) => next,
                Err(_) => break Err(Error::Stalled(stall).into()),
            };
            let bytes = match next {
                None => break Ok(()),
                Some(Ok(b)) => b,
                Some(Err(e)) => break Err(Error::from(e).into()),
            };
            let take = usize::try_from((seg.end - pos).min(bytes.len() as u64)).unwrap_or(0);
            // Flushed before it is counted: what progress reports is in the file (the page
            // cache), so a killed process resumes exactly there.
            if let Err(e) = async {
                file.write_all(&bytes[..take]).await?;
                file.flush().await
            }
            .await
            {
                break Err(e.into());
            }
            pos += take as u64;
            since_checkpoint += take as u64;
            lock(&self.meter).add(take as u64);
            if pos >= seg.end {
                break Ok(());
            }
            if segmented && since_checkpoint >= self.dl.options.checkpoint_bytes {
                since_checkpoint = 0;
                if let Err(e) = self.checkpoint(&mut file, shared, i, pos).await {
                    break Err(e);
                }
            }
        };
        // Whatever arrived is kept: record it, so the retry (or the next run) starts there.
        self.checkpoint(&mut file, shared, i, pos).await?;
        if result.is_ok() && pos < seg.end {
            return Err(FetchError::Other(Error::Protocol(format!(
                "the range ended at {pos}, before {}",
                seg.end
            ))));
        }
        result
    }

    /// The segment's bytes up to `pos` are written: say so in the sidecar.
    async fn checkpoint(
        &self,
        file: &mut tokio::fs::File,
        shared: &Arc<Mutex<PartState>>,
        i: usize,
        pos: u64,
    ) -> Result<(), FetchError> {
        file.flush().await?;
        let _one_writer = self.checkpoint.lock().await;
        let state = {
            let mut s = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.segments[i].pos = pos;
            s.clone()
        };
        write_sidecar(&self.sidecar, &state).await?;
        Ok(())
    }
}

async fn wait(backoff: &mut Backoff, last: Error) -> Result<(), FetchError> {
    backoff
        .wait(last)
        .await
        .map_err(|last| FetchError::Other(exhausted(backoff, last)))
}

fn exhausted(backoff: &Backoff, last: Error) -> Error {
    Error::RetriesExhausted {
        attempts: backoff.attempts(),
        last: Box::new(last),
    }
}

async fn storage_error(response: reqwest::Response) -> ApiError {
    ApiError::from_response(Service::Storage, response).await
}

/// An expired or refused signed URL (`InvalidJWT`, `InvalidSignature`).
fn is_bad_token(api: &ApiError) -> bool {
    matches!(api.code.as_str(), "InvalidJWT" | "InvalidSignature")
}

async fn read_sidecar(path: &Path) -> Option<PartState> {
    let text = tokio::fs::read(path).await.ok()?;
    serde_json::from_slice(&text).ok()
}

async fn write_sidecar(path: &Path, state: &PartState) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec(state).map_err(|e| Error::Protocol(e.to_string()))?;
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, path).await?;
    Ok(())
}

/// SHA-256 of a file, lowercase hex.
pub async fn sha256_file(path: &Path) -> Result<String> {
    Ok(brightrun_supabase::storage::sha256_file(path).await?.1)
}

fn lock(meter: &Mutex<Meter>) -> std::sync::MutexGuard<'_, Meter> {
    meter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_leave_the_folder() {
        let cases = [
            (
                "adapter_model.safetensors",
                Some("adapter_model.safetensors"),
            ),
            ("../../x", Some("x")),
            ("/etc/passwd", Some("passwd")),
            ("..\\..\\win.ini", Some("win.ini")),
            ("C:\\Windows\\evil.dll", Some("evil.dll")),
            ("..", None),
            (".", None),
            ("", None),
            ("dir/", None),
            ("a\0b", Some("a_b")),
            ("nul.txt", Some("_nul.txt")),
            ("COM1", Some("_COM1")),
            (".bashrc", Some("bashrc")),
            ("x:y", Some("x_y")),
        ];
        for (input, want) in cases {
            assert_eq!(
                sanitize_file_name(input).as_deref(),
                want,
                "sanitising {input:?}"
            );
        }
        let long = "a".repeat(500);
        assert_eq!(
            sanitize_file_name(&long).map(|s| s.len()),
            Some(200),
            "long names are cut to 200 bytes"
        );
    }
}
