//! TUS 1.0.0 resumable uploads at `/upload/resumable` (JWT) and `/upload/resumable/sign`
//! (`x-signature`), as storage-api serves them with `@tus/server` (supabase-protocol.md §4.8).
//!
//! An upload is two files under `uploads/`: `<uuid>` (the bytes so far, fsynced before every
//! answer, so its length is the durable offset) and `<uuid>.json` (what the upload is for). A
//! killed stack therefore loses at most the chunk in flight. The object appears only when the
//! last byte lands: the file is then hashed, renamed into place and its row written.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use super::blobs::{self, Written};
use super::error::{StorageError, TusError};
use super::objects::{NewObject, Owner, Scope, bucket, check_signed, complete_upload};
use super::scope::{Caller, test_upload_permission};
use crate::AppState;

type Result<T, E = TusError> = std::result::Result<T, E>;

const TUS_VERSION: &str = "1.0.0";
const OCTET_STREAM: &str = "application/offset+octet-stream";

/// What an upload is for, kept beside its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadInfo {
    bucket: String,
    name: String,
    length: u64,
    /// `Upload-Metadata` as received, echoed by HEAD.
    metadata_header: String,
    content_type: String,
    cache_control: String,
    user_metadata: Option<serde_json::Value>,
    owner: Option<String>,
    upsert: bool,
    created_at: i64,
    completed: bool,
}

/// The uploads directory and the one-writer-per-upload locks.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    writers: Mutex<HashMap<uuid::Uuid, Arc<WriterSlot>>>,
}

/// One upload's writer lock, as storage-api's postgres locker behaves: a request that finds it
/// held asks the holder to let go (the holder stops reading, keeps the bytes it has and answers
/// 400 `Request aborted due to lock acquired`), then waits for it up to
/// [`LOCK_ACQUIRE_TIMEOUT`] (else 503 `acquiring lock timeout`). So a client resuming after a
/// cut connection takes over at once from the request the server has not yet seen die.
#[derive(Debug, Default)]
struct WriterSlot {
    lock: Arc<tokio::sync::Mutex<()>>,
    release_requested: std::sync::atomic::AtomicBool,
    released: tokio::sync::Notify,
}

const LOCK_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Held while a request writes to (or finishes, or removes) an upload.
pub struct WriterGuard {
    _lock: tokio::sync::OwnedMutexGuard<()>,
    slot: Arc<WriterSlot>,
}

impl WriterGuard {
    /// Completes when another request asks for this upload.
    async fn release_requested(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let notified = self.slot.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.slot.release_requested.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

impl Uploads {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            writers: Mutex::new(HashMap::new()),
        }
    }

    fn data_path(&self, id: uuid::Uuid) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn info_path(&self, id: uuid::Uuid) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    async fn read_info(&self, id: uuid::Uuid) -> Option<UploadInfo> {
        let text = tokio::fs::read(self.info_path(id)).await.ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Written to a temporary name and renamed, so a crash never leaves half a JSON file.
    async fn write_info(&self, id: uuid::Uuid, info: &UploadInfo) -> std::io::Result<()> {
        let tmp = self.dir.join(format!("{id}.json.tmp"));
        tokio::fs::write(
            &tmp,
            serde_json::to_vec(info).map_err(std::io::Error::other)?,
        )
        .await?;
        tokio::fs::rename(&tmp, self.info_path(id)).await
    }

    async fn remove(&self, id: uuid::Uuid) {
        let _ = tokio::fs::remove_file(self.data_path(id)).await;
        let _ = tokio::fs::remove_file(self.info_path(id)).await;
    }

    /// The single-writer lock of an upload, taken over from a current holder if there is one.
    async fn lock(&self, id: uuid::Uuid) -> Result<WriterGuard> {
        use std::sync::atomic::Ordering;
        let slot = {
            let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
            writers.retain(|_, s| Arc::strong_count(s) > 1 || s.lock.try_lock().is_err());
            writers.entry(id).or_default().clone()
        };
        let lock = match slot.lock.clone().try_lock_owned() {
            Ok(lock) => lock,
            Err(_) => {
                slot.release_requested.store(true, Ordering::SeqCst);
                slot.released.notify_waiters();
                tokio::time::timeout(LOCK_ACQUIRE_TIMEOUT, slot.lock.clone().lock_owned())
                    .await
                    .map_err(|_| {
                        TusError::new(StatusCode::SERVICE_UNAVAILABLE, "acquiring lock timeout")
                    })?
            }
        };
        slot.release_requested.store(false, Ordering::SeqCst);
        Ok(WriterGuard { _lock: lock, slot })
    }

    /// Removes uploads older than `expiry` (unfinished ones can no longer be resumed).
    pub async fn sweep(&self, expiry: Duration) {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else {
            return;
        };
        let now = chrono::Utc::now().timestamp();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if let Some(info) = self.read_info(id).await
                && now - info.created_at > expiry.as_secs() as i64
            {
                self.remove(id).await;
            }
        }
    }
}

/// How the request is authorised: a user's JWT (with RLS tests), or a signed upload token.
enum Access {
    Caller(Caller),
    Signed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Authenticated,
    Signed,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn tus_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static(
            "Authorization, Content-Type, Location, Tus-Extension, Tus-Max-Size, Tus-Resumable, Tus-Version, Upload-Concat, Upload-Defer-Length, Upload-Length, Upload-Metadata, Upload-Offset, X-HTTP-Method-Override, X-Requested-With, X-Forwarded-Host, X-Forwarded-Proto, Forwarded",
        ),
    );
    response
}

/// Why a request was refused before TUS looked at it: JWT failures on the authenticated routes
/// are the object API's JSON errors; the signed routes answer in TUS text.
enum Refusal {
    Jwt(StorageError),
    Tus(TusError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        tus_headers(match self {
            Self::Jwt(e) => e.into_response(),
            Self::Tus(e) => e.into_response(),
        })
    }
}

fn access(state: &AppState, route: Route, headers: &HeaderMap) -> Result<Access, Refusal> {
    match route {
        Route::Authenticated => Caller::required(state.keys(), headers)
            .map(Access::Caller)
            .map_err(Refusal::Jwt),
        Route::Signed => match header_str(headers, "x-signature") {
            Some(token) => Ok(Access::Signed(token.to_owned())),
            None => Err(Refusal::Tus(TusError::new(
                StatusCode::BAD_REQUEST,
                "Missing x-signature header",
            ))),
        },
    }
}

/// Checks the signed token against an upload's target; returns owner and upsert from the token.
fn signed_target(
    state: &AppState,
    token: &str,
    bucket: &str,
    name: &str,
) -> Result<(Option<String>, bool)> {
    check_signed(state, token, bucket, name, Scope::Upload)
        .map_err(|e: StorageError| TusError::new(StatusCode::BAD_REQUEST, e.message))
}

fn require_tus_resumable(headers: &HeaderMap) -> Result<()> {
    if header_str(headers, "tus-resumable") == Some(TUS_VERSION) {
        Ok(())
    } else {
        Err(TusError::new(
            StatusCode::PRECONDITION_FAILED,
            "Tus-Resumable Required",
        ))
    }
}

pub async fn create_authenticated(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    collection(state, Route::Authenticated, method, headers, body).await
}

pub async fn create_signed(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    collection(state, Route::Signed, method, headers, body).await
}

pub async fn item_authenticated(
    State(state): State<AppState>,
    method: Method,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    item(state, Route::Authenticated, method, id, headers, body).await
}

pub async fn item_signed(
    State(state): State<AppState>,
    method: Method,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    item(state, Route::Signed, method, id, headers, body).await
}

fn options() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    h.insert(
        "tus-extension",
        HeaderValue::from_static("creation,creation-with-upload,termination,expiration"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, HEAD, PATCH, OPTIONS, DELETE"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "Authorization, Content-Type, Location, Tus-Extension, Tus-Max-Size, Tus-Resumable, Tus-Version, Upload-Concat, Upload-Defer-Length, Upload-Length, Upload-Metadata, Upload-Offset, X-HTTP-Method-Override, X-Requested-With, X-Forwarded-Host, X-Forwarded-Proto, Forwarded, X-Upsert, Upload-Expires, ApiKey, x-signature",
        ),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    tus_headers(response)
}

async fn collection(
    state: AppState,
    route: Route,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match method {
        Method::OPTIONS => options(),
        Method::POST => {
            let access = match access(&state, route, &headers) {
                Ok(a) => a,
                Err(refusal) => return refusal.into_response(),
            };
            tus_headers(
                create(&state, route, access, &headers, body)
                    .await
                    .unwrap_or_else(IntoResponse::into_response),
            )
        }
        _ => tus_headers(TusError::new(StatusCode::NOT_FOUND, "Not found").into_response()),
    }
}

async fn item(
    state: AppState,
    route: Route,
    method: Method,
    id: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if method == Method::OPTIONS {
        return options();
    }
    if !matches!(method, Method::HEAD | Method::PATCH | Method::DELETE) {
        return tus_headers(TusError::new(StatusCode::NOT_FOUND, "Not found").into_response());
    }
    let access = match access(&state, route, &headers) {
        Ok(a) => a,
        Err(refusal) => return refusal.into_response(),
    };
    let result = async {
        require_tus_resumable(&headers)?;
        let (uid, info) = find(&state, &id).await?;
        if let Access::Signed(token) = &access {
            signed_target(&state, token, &info.bucket, &info.name)?;
        }
        match method {
            Method::HEAD => head(&state, uid, info).await,
            Method::PATCH => patch(&state, &access, uid, info, &headers, body).await,
            _ => terminate(&state, &access, uid, info).await,
        }
    }
    .await;
    tus_headers(result.unwrap_or_else(IntoResponse::into_response))
}

/// `base64url_nopad("<bucket>/<object>/<uuid>")`, storage-api's URL id.
fn url_id(bucket: &str, name: &str, id: uuid::Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{bucket}/{name}/{id}"))
}

async fn find(state: &AppState, url_id: &str) -> Result<(uuid::Uuid, UploadInfo)> {
    let not_found = || TusError::new(StatusCode::NOT_FOUND, "The file for this url was not found");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(url_id.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(not_found)?;
    let (target, id) = decoded.rsplit_once('/').ok_or_else(not_found)?;
    let id: uuid::Uuid = id.parse().map_err(|_| not_found())?;
    let uploads = &state.storage().uploads;
    let info = uploads.read_info(id).await.ok_or_else(not_found)?;
    if target != format!("{}/{}", info.bucket, info.name) {
        return Err(not_found());
    }
    let expiry = state.config().storage.tus_upload_expiry.as_secs() as i64;
    if !info.completed && chrono::Utc::now().timestamp() - info.created_at > expiry {
        uploads.remove(id).await;
        return Err(TusError::new(
            StatusCode::GONE,
            "The file for this url no longer exists",
        ));
    }
    Ok((id, info))
}

/// `Upload-Metadata`: comma-separated `key base64(value)`, values standard base64 with padding.
fn parse_metadata(header: &str) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in header.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        if key.is_empty() || value.len() % 4 != 0 {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        out.insert(key.to_owned(), String::from_utf8(decoded).ok()?);
    }
    Some(out)
}

fn location(headers: &HeaderMap, route: Route, id: &str) -> String {
    let host = header_str(headers, "x-forwarded-host")
        .or_else(|| header_str(headers, "host"))
        .unwrap_or("127.0.0.1");
    let proto = header_str(headers, "x-forwarded-proto").unwrap_or("http");
    let sign = if route == Route::Signed { "sign/" } else { "" };
    format!("{proto}://{host}/storage/v1/upload/resumable/{sign}{id}")
}

async fn create(
    state: &AppState,
    route: Route,
    access: Access,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    require_tus_resumable(headers)?;
    let bad = |m: &str| TusError::new(StatusCode::BAD_REQUEST, m);
    if headers.contains_key("upload-concat") {
        return Err(TusError::new(
            StatusCode::NOT_IMPLEMENTED,
            "Concatenation extension is not supported",
        ));
    }
    let metadata_header =
        header_str(headers, "upload-metadata").ok_or_else(|| bad("Metadata header is required"))?;
    let metadata = parse_metadata(metadata_header).ok_or_else(|| bad("Invalid upload-metadata"))?;
    let length: u64 = match header_str(headers, "upload-length") {
        Some(v) => v.parse().map_err(|_| bad("Invalid upload-length"))?,
        None => {
            return Err(bad(
                "Upload-Length header is required (deferred length is not supported)",
            ));
        }
    };
    let bucket_name = metadata.get("bucketName").map(String::as_str).unwrap_or("");
    let name = metadata.get("objectName").map(String::as_str).unwrap_or("");
    if !blobs::valid_bucket_name(bucket_name) {
        return Err(bad("Bucket name invalid"));
    }
    if !blobs::valid_object_name(name) {
        return Err(bad(&format!("Invalid key: {name}")));
    }
    let bucket = bucket(state, bucket_name)
        .await
        .map_err(|_| TusError::new(StatusCode::NOT_FOUND, "Bucket not found"))?;
    if length > bucket.size_limit(state) {
        return Err(TusError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Maximum size exceeded",
        ));
    }
    let content_type = metadata.get("contentType").cloned();
    let (owner, upsert) = match &access {
        Access::Caller(caller) => {
            let upsert = header_str(headers, "x-upsert") == Some("true");
            test_upload_permission(
                state.api_pool(),
                caller,
                &bucket.id,
                name,
                upsert,
                content_type.as_deref(),
                Some(length),
            )
            .await?;
            (caller.sub.clone(), upsert)
        }
        Access::Signed(token) => signed_target(state, token, &bucket.id, name)?,
    };
    if let Some(mime) = &content_type {
        bucket.check_mime(mime)?;
    }
    let cache_control = match metadata.get("cacheControl") {
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => format!("max-age={v}"),
        _ => "no-cache".to_owned(),
    };
    let info = UploadInfo {
        bucket: bucket.id.clone(),
        name: name.to_owned(),
        length,
        metadata_header: metadata_header.to_owned(),
        content_type: content_type.unwrap_or_else(|| "application/octet-stream".into()),
        cache_control,
        user_metadata: metadata
            .get("metadata")
            .and_then(|m| serde_json::from_str(m).ok()),
        owner,
        upsert,
        created_at: chrono::Utc::now().timestamp(),
        completed: false,
    };
    let uploads = &state.storage().uploads;
    let id = uuid::Uuid::new_v4();
    tokio::fs::File::create(uploads.data_path(id))
        .await?
        .sync_all()
        .await?;
    uploads.write_info(id, &info).await?;
    let url = location(headers, route, &url_id(&info.bucket, &info.name, id));

    let with_data = header_str(headers, "content-type") == Some(OCTET_STREAM);
    let mut response = StatusCode::CREATED.into_response();
    if with_data {
        let guard = uploads.lock(id).await?;
        let offset = append(state, id, &info, 0, body, &guard).await?;
        response
            .headers_mut()
            .insert("upload-offset", offset.into());
        if offset == info.length {
            finish(state, id, info).await?;
            response
                .headers_mut()
                .insert("tus-complete", HeaderValue::from_static("1"));
        }
    } else if info.length == 0 {
        finish(state, id, info).await?;
    }
    let h = response.headers_mut();
    h.insert(
        "location",
        HeaderValue::from_str(&url)
            .map_err(|e| TusError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    h.insert("content-length", HeaderValue::from_static("0"));
    Ok(response)
}

async fn head(state: &AppState, id: uuid::Uuid, info: UploadInfo) -> Result<Response> {
    let uploads = &state.storage().uploads;
    let offset = if info.completed {
        info.length
    } else {
        let offset = tokio::fs::metadata(uploads.data_path(id)).await?.len();
        // All bytes arrived but the stack stopped before the object was written: finish now, so
        // a client that sees the full offset finds the object.
        if offset == info.length {
            let _guard = uploads.lock(id).await?;
            finish(state, id, info.clone()).await?;
        }
        offset
    };
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert("upload-offset", offset.into());
    h.insert("upload-length", info.length.into());
    if let Ok(v) = HeaderValue::from_str(&info.metadata_header) {
        h.insert("upload-metadata", v);
    }
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    Ok(response)
}

async fn patch(
    state: &AppState,
    access: &Access,
    id: uuid::Uuid,
    info: UploadInfo,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let forbidden = |m: &str| TusError::new(StatusCode::FORBIDDEN, m);
    let client_offset = header_str(headers, "upload-offset")
        .ok_or_else(|| forbidden("Upload-Offset header required"))?;
    let content_type = header_str(headers, "content-type")
        .ok_or_else(|| forbidden("Content-Type header required"))?;
    if content_type != OCTET_STREAM {
        return Err(TusError::new(
            StatusCode::BAD_REQUEST,
            "Invalid content-type",
        ));
    }
    let client_offset: u64 = client_offset
        .parse()
        .map_err(|_| TusError::new(StatusCode::BAD_REQUEST, "Invalid upload-offset"))?;
    if let Access::Caller(caller) = access {
        test_upload_permission(
            state.api_pool(),
            caller,
            &info.bucket,
            &info.name,
            info.upsert,
            Some(&info.content_type),
            Some(info.length),
        )
        .await?;
    }
    let uploads = &state.storage().uploads;
    // One writer per upload: a second PATCH takes over from the first (which stops where it
    // is), then meets the offset check like any other; writes never interleave.
    let guard = uploads.lock(id).await?;
    if info.completed {
        return Err(TusError::new(
            StatusCode::CONFLICT,
            "Upload-Offset conflict",
        ));
    }
    let offset = tokio::fs::metadata(uploads.data_path(id)).await?.len();
    if client_offset != offset {
        return Err(TusError::new(
            StatusCode::CONFLICT,
            "Upload-Offset conflict",
        ));
    }
    if let Some(len) = header_str(headers, "content-length").and_then(|l| l.parse::<u64>().ok())
        && offset + len > info.length
    {
        return Err(TusError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "upload's size exceeded",
        ));
    }
    let new_offset = append(state, id, &info, offset, body, &guard).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert("upload-offset", new_offset.into());
    if new_offset == info.length {
        finish(state, id, info).await?;
        response
            .headers_mut()
            .insert("tus-complete", HeaderValue::from_static("1"));
    }
    Ok(response)
}

/// Appends a request body at `offset`, streaming, and makes it durable before answering. Bytes
/// beyond the declared length are refused and cut off again. A body that breaks off keeps what
/// arrived: the client resumes from the new offset.
async fn append(
    state: &AppState,
    id: uuid::Uuid,
    info: &UploadInfo,
    offset: u64,
    body: Body,
    guard: &WriterGuard,
) -> Result<u64> {
    let path = state.storage().uploads.data_path(id);
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .await?;
    let mut stream = body.into_data_stream();
    let mut written = offset;
    let mut outcome = Ok(());
    loop {
        let next = tokio::select! {
            biased;
            () = guard.release_requested() => {
                // Another request takes over; what arrived so far stays.
                outcome = Err(TusError::new(
                    StatusCode::BAD_REQUEST,
                    "Request aborted due to lock acquired",
                ));
                break;
            }
            next = stream.next() => next,
        };
        let Some(chunk) = next else {
            break;
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(error = %e, "TUS PATCH body broke off; keeping what arrived");
                break;
            }
        };
        if written + chunk.len() as u64 > info.length {
            file.set_len(offset).await?;
            file.sync_all().await?;
            return Err(TusError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload's size exceeded",
            ));
        }
        file.write_all(&chunk).await?;
        written += chunk.len() as u64;
    }
    file.sync_all().await?;
    outcome.map(|()| written)
}

/// The last byte landed: hash, move into place, write the row, remember completion.
async fn finish(state: &AppState, id: uuid::Uuid, mut info: UploadInfo) -> Result<()> {
    let uploads = &state.storage().uploads;
    let path = uploads.data_path(id);
    let sha256 = blobs::sha256_file(&path).await?;
    let written = Written {
        path,
        size: info.length,
        sha256,
    };
    let result = complete_upload(
        state,
        NewObject {
            bucket: &info.bucket,
            name: &info.name,
            file: &written,
            mimetype: &info.content_type,
            cache_control: &info.cache_control,
            user_metadata: info.user_metadata.clone(),
            owner: Owner::from_sub(info.owner.clone()),
            upsert: info.upsert,
        },
    )
    .await;
    match result {
        Ok(_) => {
            info.completed = true;
            uploads.write_info(id, &info).await?;
            Ok(())
        }
        Err(e) => {
            // The bytes are gone with a refused completion (e.g. the object appeared meanwhile).
            uploads.remove(id).await;
            Err(e.into())
        }
    }
}

async fn terminate(
    state: &AppState,
    access: &Access,
    id: uuid::Uuid,
    info: UploadInfo,
) -> Result<Response> {
    if let Access::Caller(caller) = access {
        test_upload_permission(
            state.api_pool(),
            caller,
            &info.bucket,
            &info.name,
            info.upsert,
            Some(&info.content_type),
            Some(info.length),
        )
        .await?;
    }
    if info.completed {
        return Err(TusError::new(
            StatusCode::BAD_REQUEST,
            "Cannot terminate an already completed upload",
        ));
    }
    let uploads = &state.storage().uploads;
    let _guard = uploads.lock(id).await?;
    uploads.remove(id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_pairs_are_base64_with_padding() {
        let m = parse_metadata("bucketName bG9yYS1kYXRhc2V0cw==,objectName YS9iLmpzb25s,flag")
            .expect("valid");
        assert_eq!(m["bucketName"], "lora-datasets");
        assert_eq!(m["objectName"], "a/b.jsonl");
        assert_eq!(m["flag"], "", "a key without value is allowed");
        assert!(
            parse_metadata("bucketName bG9yYS1kYXRhc2V0cw").is_none(),
            "unpadded base64 is invalid"
        );
    }

    #[test]
    fn url_ids_match_storage_api() {
        let id: uuid::Uuid = "4bfcff50-0000-4000-8000-000000000000"
            .parse()
            .expect("uuid");
        let encoded = url_id("test", "test/test2.pdf", id);
        assert!(
            encoded.starts_with("dGVzdC90ZXN0L3Rlc3QyLnBkZi80YmZj"),
            "{encoded}"
        );
        assert!(!encoded.contains('='), "no padding");
    }
}
