//! The object API: upload, signed upload, signed download, download with Range, list, delete
//! (supabase-protocol.md §4.3–4.7).

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::FromRequest as _;
use axum::extract::{Multipart, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row as _;

use super::blobs::{self, WriteError, Written};
use super::error::StorageError;
use super::scope::{Caller, jose_message, test_upload_permission};
use crate::AppState;
use crate::jwt::{JwtError, Leeway};

type Result<T, E = StorageError> = std::result::Result<T, E>;

/// A bucket as the object API needs it (read as superuser, like storage-api).
#[derive(Debug, Clone)]
pub(super) struct Bucket {
    pub id: String,
    pub public: bool,
    pub file_size_limit: Option<i64>,
    pub allowed_mime_types: Option<Vec<String>>,
}

pub(super) async fn bucket(state: &AppState, id: &str) -> Result<Bucket> {
    if !blobs::valid_bucket_name(id) {
        return Err(StorageError::bucket_not_found());
    }
    let row = sqlx::query(
        "select id, coalesce(public, false) as public, file_size_limit, allowed_mime_types
         from storage.buckets where id = $1",
    )
    .bind(id)
    .fetch_optional(state.admin_pool())
    .await?
    .ok_or_else(StorageError::bucket_not_found)?;
    Ok(Bucket {
        id: row.get("id"),
        public: row.get("public"),
        file_size_limit: row.get("file_size_limit"),
        allowed_mime_types: row.get("allowed_mime_types"),
    })
}

impl Bucket {
    /// min(bucket limit, global limit).
    pub fn size_limit(&self, state: &AppState) -> u64 {
        let global = state.config().storage.global_file_size_limit;
        match self.file_size_limit {
            Some(limit) if limit > 0 => (limit as u64).min(global),
            _ => global,
        }
    }

    /// storage-api's `validateMimeType`: exact match or `type/*`; parameters are not stripped.
    pub fn check_mime(&self, mime: &str) -> Result<()> {
        let Some(allowed) = self.allowed_mime_types.as_ref().filter(|a| !a.is_empty()) else {
            return Ok(());
        };
        let (kind, _) = mime.split_once('/').unwrap_or((mime, ""));
        let ok = allowed
            .iter()
            .any(|a| a == mime || a.strip_suffix("/*").is_some_and(|k| k == kind));
        if ok {
            Ok(())
        } else {
            Err(StorageError::mime_not_allowed(mime))
        }
    }
}

fn checked_name(name: &str) -> Result<String> {
    if blobs::valid_object_name(name) {
        Ok(name.to_owned())
    } else {
        Err(StorageError::invalid_key(name))
    }
}

/// Routes `/object/…`. One handler, because bucket names and the API's own words (`sign`,
/// `list`, …) share the first segment, as in storage-api.
pub async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    UrlPath(rest): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let body = request.into_body();
    let (first, tail) = rest.split_once('/').unwrap_or((rest.as_str(), ""));
    let result = match (&method, first) {
        (&Method::POST, "sign") => match tail.split_once('/') {
            Some((bucket, name)) => sign_download(&state, &headers, bucket, name, body).await,
            None => sign_download_batch(&state, &headers, tail, body).await,
        },
        (&Method::GET | &Method::HEAD, "sign") => match tail.split_once('/') {
            Some((bucket, name)) => {
                get_signed(&state, &method, &headers, &query, bucket, name).await
            }
            None => Err(StorageError::object_not_found()),
        },
        (&Method::POST, "upload") | (&Method::PUT, "upload") => {
            match tail.strip_prefix("sign/").and_then(|t| t.split_once('/')) {
                Some((bucket, name)) if method == Method::POST => {
                    sign_upload(&state, &headers, bucket, name).await
                }
                Some((bucket, name)) => {
                    put_signed(&state, &headers, &query, bucket, name, body).await
                }
                None => Err(StorageError::object_not_found()),
            }
        }
        (&Method::POST, "list") => list(&state, &headers, tail, body).await,
        (&Method::GET | &Method::HEAD, "authenticated") => match tail.split_once('/') {
            Some((bucket, name)) => match Caller::required(state.keys(), &headers) {
                Ok(caller) => {
                    download(
                        &state,
                        &method,
                        &headers,
                        &query,
                        Some(caller),
                        bucket,
                        name,
                    )
                    .await
                }
                Err(e) => Err(e),
            },
            None => Err(StorageError::object_not_found()),
        },
        (&Method::GET | &Method::HEAD, "public") => match tail.split_once('/') {
            Some((bucket, name)) => {
                download_public(&state, &method, &headers, &query, bucket, name).await
            }
            None => Err(StorageError::object_not_found()),
        },
        (&Method::GET, "info") => match tail.split_once('/') {
            Some((bucket, name)) => info(&state, &headers, bucket, name).await,
            None => Err(StorageError::object_not_found()),
        },
        (&Method::POST | &Method::PUT, bucket) if !tail.is_empty() => {
            let upsert = method == Method::PUT
                || headers.get("x-upsert").and_then(|v| v.to_str().ok()) == Some("true");
            upload(&state, &headers, bucket, tail, upsert, body).await
        }
        (&Method::GET | &Method::HEAD, bucket) if !tail.is_empty() => {
            match Caller::from_headers(state.keys(), &headers) {
                Ok(caller) => {
                    download(&state, &method, &headers, &query, caller, bucket, tail).await
                }
                Err(e) => Err(e),
            }
        }
        (&Method::DELETE, bucket) if tail.is_empty() => {
            delete_many(&state, &headers, bucket, body).await
        }
        (&Method::DELETE, bucket) => delete_one(&state, &headers, bucket, tail).await,
        _ => Err(StorageError::object_not_found()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// What an upload request carries besides its bytes.
struct UploadMeta {
    content_type: String,
    cache_control: String,
    user_metadata: Option<Value>,
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn binary_meta(headers: &HeaderMap) -> UploadMeta {
    let user_metadata = header_str(headers, "x-metadata")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|json| serde_json::from_slice(&json).ok());
    UploadMeta {
        content_type: header_str(headers, "content-type")
            .unwrap_or("text/plain;charset=UTF-8")
            .to_owned(),
        cache_control: header_str(headers, "cache-control")
            .unwrap_or("no-cache")
            .to_owned(),
        user_metadata,
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    header_str(headers, "content-type").is_some_and(|ct| ct.starts_with("multipart/form-data"))
}

/// Receives the bytes of an upload (binary or multipart form) into a temporary file, enforcing
/// the size limit while streaming.
async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    bucket: &Bucket,
) -> Result<(Written, UploadMeta)> {
    let limit = bucket.size_limit(state);
    let blobs = &state.storage().blobs;
    let write_err = |e: WriteError| match e {
        WriteError::TooLarge => StorageError::too_large(),
        WriteError::Io(e) => e.into(),
        WriteError::Body(msg) => {
            StorageError::invalid_request(format!("upload interrupted: {msg}"))
        }
    };
    if !is_multipart(headers) {
        if header_str(headers, "content-length")
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > limit)
        {
            return Err(StorageError::too_large());
        }
        let meta = binary_meta(headers);
        bucket.check_mime(&meta.content_type)?;
        let written = blobs
            .write_temp(body.into_data_stream(), limit)
            .await
            .map_err(write_err)?;
        return Ok((written, meta));
    }
    let request = axum::extract::Request::builder()
        .header(
            header::CONTENT_TYPE,
            headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(HeaderValue::from_static("")),
        )
        .body(body)
        .map_err(|e| StorageError::invalid_request(e.to_string()))?;
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| StorageError::invalid_request(e.body_text()))?;
    let mut meta = UploadMeta {
        content_type: String::new(),
        cache_control: "no-cache".into(),
        user_metadata: None,
    };
    let mut override_type = None;
    let mut written = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| StorageError::invalid_request(e.body_text()))?
    {
        match (field.file_name().is_some(), field.name().unwrap_or("")) {
            (false, "cacheControl") => {
                let secs = field.text().await.unwrap_or_default();
                meta.cache_control = format!("max-age={}", secs.trim());
            }
            (false, "metadata") => {
                meta.user_metadata =
                    serde_json::from_str(&field.text().await.unwrap_or_default()).ok();
            }
            (false, "contentType") => override_type = Some(field.text().await.unwrap_or_default()),
            _ if written.is_none() => {
                let part_type = field
                    .content_type()
                    .unwrap_or("text/plain;charset=UTF-8")
                    .to_owned();
                meta.content_type = override_type.clone().unwrap_or(part_type);
                bucket.check_mime(&meta.content_type)?;
                let stream = field.map(|r| r.map_err(|e| e.body_text()));
                written = Some(blobs.write_temp(stream, limit).await.map_err(write_err)?);
            }
            _ => {}
        }
    }
    let written = written.ok_or_else(|| StorageError::invalid_request("No content provided"))?;
    Ok((written, meta))
}

/// Owner of a row written by the stack itself (after a permission check or a signed token).
#[derive(Debug, Clone, Default)]
pub(super) struct Owner {
    pub owner: Option<uuid::Uuid>,
    pub owner_id: Option<String>,
}

impl Owner {
    pub fn from_sub(sub: Option<String>) -> Self {
        Self {
            owner: sub.as_deref().and_then(|s| s.parse().ok()),
            owner_id: sub,
        }
    }
}

/// A complete file on its way to becoming an object.
pub(super) struct NewObject<'a> {
    pub bucket: &'a str,
    pub name: &'a str,
    pub file: &'a Written,
    pub mimetype: &'a str,
    pub cache_control: &'a str,
    pub user_metadata: Option<Value>,
    pub owner: Owner,
    pub upsert: bool,
}

/// Moves a complete file into place and writes its row as superuser (storage-api
/// `completeUpload`); an overwritten version's bytes are removed afterwards. Returns the id.
pub(super) async fn complete_upload(state: &AppState, object: NewObject<'_>) -> Result<uuid::Uuid> {
    let NewObject {
        bucket,
        name,
        file,
        mimetype,
        cache_control,
        user_metadata,
        owner,
        upsert,
    } = object;
    let storage = state.storage();
    let version = uuid::Uuid::new_v4().to_string();
    let mut tx = state.admin_pool().begin().await?;
    let previous: Option<String> = sqlx::query_scalar(
        "select version from storage.objects where bucket_id = $1 and name = $2 for update",
    )
    .bind(bucket)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    if previous.is_some() && !upsert {
        storage.blobs.discard(&file.path).await;
        return Err(StorageError::duplicate());
    }
    let now = Utc::now();
    let metadata = json!({
        "eTag": format!("\"{}\"", file.sha256),
        "size": file.size,
        "mimetype": mimetype,
        "cacheControl": cache_control,
        "lastModified": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "contentLength": file.size,
        "httpStatusCode": 200,
        "sha256": file.sha256,
    });
    let committed = storage
        .blobs
        .commit(&file.path, bucket, name, &version)
        .await?;
    let id: Result<uuid::Uuid, sqlx::Error> = sqlx::query_scalar(
        "insert into storage.objects (bucket_id, name, owner, owner_id, version, metadata, user_metadata)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (bucket_id, name) do update set owner = excluded.owner, owner_id = excluded.owner_id,
           version = excluded.version, metadata = excluded.metadata, user_metadata = excluded.user_metadata,
           updated_at = now(), last_accessed_at = now()
         returning id",
    )
    .bind(bucket)
    .bind(name)
    .bind(owner.owner)
    .bind(&owner.owner_id)
    .bind(&version)
    .bind(metadata)
    .bind(user_metadata)
    .fetch_one(&mut *tx)
    .await;
    let committed_ok = match id {
        Ok(id) => tx.commit().await.map(|_| id),
        Err(e) => Err(e),
    };
    match committed_ok {
        Ok(id) => {
            if let Some(old) = previous {
                storage.blobs.remove_version(bucket, name, &old).await;
            }
            Ok(id)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&committed).await;
            Err(e.into())
        }
    }
}

async fn upload(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    name: &str,
    upsert: bool,
    body: Body,
) -> Result<Response> {
    let caller = Caller::required(state.keys(), headers)?;
    let bucket = bucket(state, bucket_id).await?;
    let name = checked_name(name)?;
    let content_length = header_str(headers, "content-length").and_then(|l| l.parse().ok());
    let mime = (!is_multipart(headers)).then(|| binary_meta(headers).content_type);
    if content_length.is_some_and(|l: u64| l > bucket.size_limit(state)) {
        return Err(StorageError::too_large());
    }
    if let Some(mime) = &mime {
        bucket.check_mime(mime)?;
    }
    test_upload_permission(
        state.api_pool(),
        &caller,
        &bucket.id,
        &name,
        upsert,
        mime.as_deref(),
        content_length,
    )
    .await?;
    let (written, meta) = receive(state, headers, body, &bucket).await?;
    let owner = Owner::from_sub(caller.sub.clone());
    let id = complete_upload(
        state,
        NewObject {
            bucket: &bucket.id,
            name: &name,
            file: &written,
            mimetype: &meta.content_type,
            cache_control: &meta.cache_control,
            user_metadata: meta.user_metadata,
            owner,
            upsert,
        },
    )
    .await?;
    Ok(Json(json!({"Id": id, "Key": format!("{}/{}", bucket.id, name)})).into_response())
}

/// Claims of the signed-URL tokens storage-api issues (`signJWT`).
#[derive(Debug, Deserialize)]
struct SignedClaims {
    url: String,
    scope: Option<String>,
    owner: Option<String>,
    upsert: Option<bool>,
    exp: Option<i64>,
}

fn verify_signed(state: &AppState, token: &str) -> Result<SignedClaims> {
    state
        .keys()
        .verify::<SignedClaims>(token, Leeway::None)
        .map_err(|e| match e {
            JwtError::Invalid(_) => StorageError::invalid_jwt("Invalid Compact JWS"),
            other => StorageError::invalid_jwt(jose_message(&other)),
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    Upload,
    Download,
}

/// A signed token for `bucket/name` with the right scope; legacy tokens without `scope` count as
/// upload when they carry `upsert`.
pub(super) fn check_signed(
    state: &AppState,
    token: &str,
    bucket: &str,
    name: &str,
    want: Scope,
) -> Result<(Option<String>, bool)> {
    let claims = verify_signed(state, token)?;
    let scope = match claims.scope.as_deref() {
        Some("upload") => Scope::Upload,
        Some("download") => Scope::Download,
        Some(_) => return Err(StorageError::invalid_signature("Invalid signature")),
        None if claims.upsert.is_some() => Scope::Upload,
        None => Scope::Download,
    };
    if scope != want {
        let what = if want == Scope::Upload {
            "upload"
        } else {
            "download"
        };
        return Err(StorageError::invalid_signature(format!(
            "Token is not scoped for {what}"
        )));
    }
    if claims.url != format!("{bucket}/{name}") {
        return Err(StorageError::invalid_signature("Invalid signature"));
    }
    Ok((claims.owner, claims.upsert.unwrap_or(false)))
}

fn signed_token(state: &AppState, payload: Value, lifetime_secs: i64) -> String {
    let now = Utc::now().timestamp();
    let mut payload = payload;
    payload["iat"] = json!(now);
    payload["exp"] = json!(now + lifetime_secs);
    state.keys().sign(&payload)
}

async fn sign_upload(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    name: &str,
) -> Result<Response> {
    let caller = Caller::required(state.keys(), headers)?;
    let bucket = bucket(state, bucket_id).await?;
    let name = checked_name(name)?;
    let upsert = header_str(headers, "x-upsert") == Some("true");
    let mime = header_str(headers, "content-type").filter(|ct| !ct.starts_with("application/json"));
    let length = header_str(headers, "content-length").and_then(|l| l.parse().ok());
    test_upload_permission(
        state.api_pool(),
        &caller,
        &bucket.id,
        &name,
        upsert,
        mime,
        length,
    )
    .await?;
    let mut payload =
        json!({"url": format!("{}/{}", bucket.id, name), "upsert": upsert, "scope": "upload"});
    if let Some(sub) = &caller.sub {
        payload["owner"] = json!(sub);
    }
    let lifetime = state.config().storage.signed_upload_url_expiry.as_secs() as i64;
    let token = signed_token(state, payload, lifetime);
    Ok(Json(json!({
        "url": format!("/object/upload/sign/{}/{}?token={}", bucket.id, name, token),
        "token": token,
    }))
    .into_response())
}

async fn put_signed(
    state: &AppState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    bucket_id: &str,
    name: &str,
    body: Body,
) -> Result<Response> {
    let token = query
        .get("token")
        .ok_or_else(|| StorageError::invalid_jwt("Invalid Compact JWS"))?;
    let (owner, upsert) = check_signed(state, token, bucket_id, name, Scope::Upload)?;
    let bucket = bucket(state, bucket_id).await?;
    let name = checked_name(name)?;
    let (written, meta) = receive(state, headers, body, &bucket).await?;
    complete_upload(
        state,
        NewObject {
            bucket: &bucket.id,
            name: &name,
            file: &written,
            mimetype: &meta.content_type,
            cache_control: &meta.cache_control,
            user_metadata: meta.user_metadata,
            owner: Owner::from_sub(owner),
            upsert,
        },
    )
    .await?;
    Ok(Json(json!({"Key": format!("{}/{}", bucket.id, name)})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignRequest {
    expires_in: i64,
    #[serde(default)]
    paths: Vec<String>,
}

async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T> {
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| StorageError::invalid_request(e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StorageError::invalid_request(format!("body is not valid: {e}")))
}

/// The row a caller may see (SELECT policies), with what a download needs.
struct Visible {
    version: Option<String>,
    metadata: Value,
    updated_at: Option<DateTime<Utc>>,
}

async fn visible_object(
    state: &AppState,
    caller: Option<&Caller>,
    bucket: &str,
    name: &str,
) -> Result<Option<Visible>> {
    let sql = "select version, coalesce(metadata, '{}'::jsonb) as metadata, updated_at
               from storage.objects where bucket_id = $1 and name = $2";
    let row = match caller {
        Some(caller) => {
            let mut tx = caller
                .begin(state.api_pool(), "GET", name, "storage.object.get")
                .await?;
            let row = sqlx::query(sql)
                .bind(bucket)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
            tx.rollback().await?;
            row
        }
        None => {
            sqlx::query(sql)
                .bind(bucket)
                .bind(name)
                .fetch_optional(state.admin_pool())
                .await?
        }
    };
    Ok(row.map(|r| Visible {
        version: r.get("version"),
        metadata: r.get("metadata"),
        updated_at: r.get("updated_at"),
    }))
}

/// The caller and a validated `{expiresIn, paths?}` body of a sign request.
async fn sign_request(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Caller, SignRequest)> {
    let caller = Caller::required(state.keys(), headers)?;
    let request: SignRequest = json_body(body).await?;
    if request.expires_in < 1 {
        return Err(StorageError::invalid_request("body/expiresIn must be >= 1"));
    }
    Ok((caller, request))
}

/// `/object/sign/<bucket>/<name>?token=…`, relative to `/storage/v1` as storage-api returns it.
fn signed_download_url(state: &AppState, bucket: &str, name: &str, expires_in: i64) -> String {
    let token = signed_token(
        state,
        json!({"url": format!("{bucket}/{name}"), "scope": "download"}),
        expires_in,
    );
    format!("/object/sign/{bucket}/{name}?token={token}")
}

async fn sign_download(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    name: &str,
    body: Body,
) -> Result<Response> {
    let (caller, request) = sign_request(state, headers, body).await?;
    let bucket = bucket(state, bucket_id).await?;
    visible_object(state, Some(&caller), &bucket.id, name)
        .await?
        .ok_or_else(StorageError::object_not_found)?;
    let url = signed_download_url(state, &bucket.id, name, request.expires_in);
    Ok(Json(json!({"signedURL": url})).into_response())
}

async fn sign_download_batch(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    body: Body,
) -> Result<Response> {
    let (caller, request) = sign_request(state, headers, body).await?;
    let bucket = bucket(state, bucket_id).await?;
    let mut out = Vec::with_capacity(request.paths.len());
    for path in request.paths {
        let visible = visible_object(state, Some(&caller), &bucket.id, &path).await?;
        out.push(match visible {
            Some(_) => {
                let url = signed_download_url(state, &bucket.id, &path, request.expires_in);
                json!({"error": null, "path": path, "signedURL": url})
            }
            None => json!({
                "error": "Either the object does not exist or you do not have access to it",
                "path": path,
                "signedURL": null,
            }),
        });
    }
    Ok(Json(Value::Array(out)).into_response())
}

async fn get_signed(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    bucket_id: &str,
    name: &str,
) -> Result<Response> {
    let token = query
        .get("token")
        .ok_or_else(|| StorageError::invalid_jwt("Invalid Compact JWS"))?;
    check_signed(state, token, bucket_id, name, Scope::Download)?;
    let exp = verify_signed(state, token)?.exp;
    let object = visible_object(state, None, bucket_id, name)
        .await?
        .ok_or_else(StorageError::object_not_found)?;
    let mut response = render(state, method, headers, query, bucket_id, name, &object).await?;
    let h = response.headers_mut();
    h.remove(header::CACHE_CONTROL);
    if let Some(exp) = exp.and_then(|e| DateTime::<Utc>::from_timestamp(e, 0))
        && let Ok(v) = HeaderValue::from_str(&exp.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
    {
        h.insert(header::EXPIRES, v);
    }
    Ok(response)
}

async fn download(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    caller: Option<Caller>,
    bucket_id: &str,
    name: &str,
) -> Result<Response> {
    let bucket = bucket(state, bucket_id).await?;
    let object = if bucket.public {
        visible_object(state, None, &bucket.id, name).await?
    } else {
        let caller = caller.ok_or_else(StorageError::bucket_not_found)?;
        visible_object(state, Some(&caller), &bucket.id, name).await?
    };
    let object = object.ok_or_else(StorageError::object_not_found)?;
    render(state, method, headers, query, &bucket.id, name, &object).await
}

async fn download_public(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    bucket_id: &str,
    name: &str,
) -> Result<Response> {
    let bucket = bucket(state, bucket_id).await?;
    if !bucket.public {
        return Err(StorageError::bucket_not_found());
    }
    let object = visible_object(state, None, &bucket.id, name)
        .await?
        .ok_or_else(StorageError::object_not_found)?;
    render(state, method, headers, query, &bucket.id, name, &object).await
}

/// A single byte range `[start, end]` (inclusive) of an object of `size` bytes, from a `Range`
/// header: `bytes=a-b`, `bytes=a-` or `bytes=-n`; `b` is clamped. Anything else, several ranges,
/// `a >= size` or an empty object is unsatisfiable (416), as in storage-api's file backend.
pub(super) fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    let start: u64 = a.parse().ok()?;
    let end = if b.is_empty() {
        size - 1
    } else {
        b.parse::<u64>().ok()?.min(size - 1)
    };
    (start < size && end >= start).then_some((start, end))
}

async fn render(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    bucket: &str,
    name: &str,
    object: &Visible,
) -> Result<Response> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let version = object
        .version
        .as_deref()
        .ok_or_else(StorageError::blob_missing)?;
    let path = state.storage().blobs.object_path(bucket, name, version);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| StorageError::blob_missing())?;
    let size = file.metadata().await?.len();
    let etag = object
        .metadata
        .get("eTag")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("\"{version}\""));
    if header_str(headers, "if-none-match") == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = match header_str(headers, "range") {
        Some(value) => Some(parse_range(value, size).ok_or_else(StorageError::invalid_range)?),
        None => None,
    };
    let (status, start, len) = match range {
        Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut mimetype = object
        .metadata
        .get("mimetype")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream")
        .to_owned();
    if mimetype.starts_with("text/html") {
        mimetype = "text/plain".into();
    }
    let mut builder = Response::builder()
        .status(status)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, mimetype)
        .header(header::ETAG, &etag)
        .header(header::CONTENT_LENGTH, len)
        .header("x-robots-tag", "none");
    if let Some(cache) = object.metadata.get("cacheControl").and_then(Value::as_str) {
        builder = builder.header(header::CACHE_CONTROL, cache);
    }
    if let Some(modified) = object.updated_at {
        builder = builder.header(
            header::LAST_MODIFIED,
            modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        );
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, start + len - 1, size),
        );
    }
    if let Some(download) = query.get("download") {
        let disposition = if download.is_empty() {
            "attachment;".to_owned()
        } else {
            let enc: String = url::form_urlencoded::byte_serialize(download.as_bytes()).collect();
            format!("attachment; filename={enc}; filename*=UTF-8''{enc}")
        };
        builder = builder.header(header::CONTENT_DISPOSITION, disposition);
    }
    if *method == Method::HEAD {
        return builder
            .body(Body::empty())
            .map_err(|e| StorageError::internal(e.to_string()));
    }
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
    builder
        .body(Body::from_stream(stream))
        .map_err(|e| StorageError::internal(e.to_string()))
}

async fn info(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    name: &str,
) -> Result<Response> {
    let caller = Caller::required(state.keys(), headers)?;
    let bucket = bucket(state, bucket_id).await?;
    let mut tx = caller
        .begin(state.api_pool(), "GET", name, "storage.object.info")
        .await?;
    let row: Option<Value> = sqlx::query_scalar(
        "select jsonb_build_object('id', id, 'name', name, 'bucket_id', bucket_id, 'version', version,
                'size', (metadata->>'size')::bigint, 'content_type', metadata->>'mimetype',
                'cache_control', metadata->>'cacheControl', 'etag', metadata->>'eTag',
                'metadata', user_metadata, 'last_modified', updated_at, 'created_at', created_at)
         from storage.objects where bucket_id = $1 and name = $2",
    )
    .bind(&bucket.id)
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    tx.rollback().await?;
    Ok(Json(row.ok_or_else(StorageError::object_not_found)?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListRequest {
    prefix: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
    sort_by: Option<SortBy>,
    search: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SortBy {
    column: Option<String>,
    order: Option<String>,
}

/// One level under a prefix, folders as entries with null fields (storage-api `storage.search`).
async fn list(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::required(state.keys(), headers)?;
    let request: ListRequest = json_body(body).await?;
    let bucket = bucket(state, bucket_id).await?;
    let mut prefix = request.prefix.unwrap_or_default();
    if !prefix.is_empty() && !prefix.ends_with('/') {
        prefix.push('/');
    }
    let search = request.search.unwrap_or_default();
    let limit = request.limit.unwrap_or(100).clamp(0, 1500);
    let offset = request.offset.unwrap_or(0).max(0);
    let column = match request.sort_by.as_ref().and_then(|s| s.column.as_deref()) {
        Some("updated_at") => "updated_at",
        Some("created_at") => "created_at",
        Some("last_accessed_at") => "last_accessed_at",
        _ => "name",
    };
    let descending = request.sort_by.as_ref().and_then(|s| s.order.as_deref()) == Some("desc");
    let direction = if descending { "desc" } else { "asc" };
    // The column and direction come from the closed sets above, never from the request text.
    let order = if column == "name" {
        format!("lower(entry) collate \"C\" {direction}")
    } else {
        format!("is_folder desc, {column} {direction} nulls last, lower(entry) collate \"C\" asc")
    };
    let sql = format!(
        "with matching as (
           select substr(name, length($2) + 1) as rest, id, updated_at, created_at, last_accessed_at, metadata
           from storage.objects
           where bucket_id = $1 and lower(name) like lower($3) escape '\\'
         ), levelled as (
           select split_part(rest, '/', 1) as entry, strpos(rest, '/') > 0 as is_folder,
                  id, updated_at, created_at, last_accessed_at, metadata
           from matching
         ), entries as (
           select distinct on (entry, is_folder) entry, is_folder,
                  case when is_folder then null else id end as id,
                  case when is_folder then null else updated_at end as updated_at,
                  case when is_folder then null else created_at end as created_at,
                  case when is_folder then null else last_accessed_at end as last_accessed_at,
                  case when is_folder then null else metadata end as metadata
           from levelled where entry <> ''
           order by entry, is_folder
         )
         select coalesce(jsonb_agg(jsonb_build_object(
                  'name', entry, 'id', id,
                  'updated_at', to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                  'created_at', to_char(created_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                  'last_accessed_at', to_char(last_accessed_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                  'metadata', metadata) order by {order}), '[]'::jsonb)
         from (select * from entries order by {order} limit $4 offset $5) page"
    );
    let pattern = format!("{}{}%", like_escape(&prefix), like_escape(&search));
    let mut tx = caller
        .begin(state.api_pool(), "POST", &prefix, "storage.object.list")
        .await?;
    let rows: Value = sqlx::query_scalar(&sql)
        .bind(&bucket.id)
        .bind(&prefix)
        .bind(pattern)
        .bind(limit)
        .bind(offset)
        .fetch_one(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(Json(rows).into_response())
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[derive(Debug, Deserialize)]
struct DeleteRequest {
    prefixes: Vec<String>,
}

/// Deletes the caller's rows (DELETE policies) and then their bytes.
async fn delete_rows(
    state: &AppState,
    caller: &Caller,
    bucket: &str,
    names: &[String],
) -> Result<Vec<Value>> {
    let mut tx = caller
        .begin(state.api_pool(), "DELETE", bucket, "storage.object.delete")
        .await?;
    let rows: Vec<Value> = sqlx::query_scalar(
        "delete from storage.objects where bucket_id = $1 and name = any($2)
         returning jsonb_build_object('name', name, 'bucket_id', bucket_id, 'owner', owner, 'owner_id', owner_id,
           'version', version, 'id', id, 'updated_at', updated_at, 'created_at', created_at,
           'last_accessed_at', last_accessed_at, 'metadata', metadata, 'user_metadata', user_metadata)",
    )
    .bind(bucket)
    .bind(names)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for row in &rows {
        if let (Some(name), Some(version)) = (row["name"].as_str(), row["version"].as_str()) {
            state
                .storage()
                .blobs
                .remove_version(bucket, name, version)
                .await;
        }
    }
    Ok(rows)
}

async fn delete_many(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    body: Body,
) -> Result<Response> {
    let caller = Caller::required(state.keys(), headers)?;
    let request: DeleteRequest = json_body(body).await?;
    if request.prefixes.is_empty() || request.prefixes.len() > 1000 {
        return Err(StorageError::invalid_request(
            "body/prefixes must have 1 to 1000 items",
        ));
    }
    let bucket = bucket(state, bucket_id).await?;
    let rows = delete_rows(state, &caller, &bucket.id, &request.prefixes).await?;
    Ok(Json(Value::Array(rows)).into_response())
}

async fn delete_one(
    state: &AppState,
    headers: &HeaderMap,
    bucket_id: &str,
    name: &str,
) -> Result<Response> {
    let caller = Caller::required(state.keys(), headers)?;
    let bucket = bucket(state, bucket_id).await?;
    let rows = delete_rows(state, &caller, &bucket.id, &[name.to_owned()]).await?;
    if rows.is_empty() {
        let exists = visible_object(state, None, &bucket.id, name)
            .await?
            .is_some();
        return Err(if exists {
            StorageError::access_denied("Access denied")
        } else {
            StorageError::object_not_found()
        });
    }
    Ok(Json(json!({"message": "Successfully deleted"})).into_response())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_storage_api() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(
            parse_range("bytes=90-200", 100),
            Some((90, 99)),
            "end is clamped"
        );
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(
            parse_range("bytes=-10", 100),
            Some((90, 99)),
            "suffix range"
        );
        assert_eq!(parse_range("bytes=-500", 100), Some((0, 99)));
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=-0",
        ] {
            assert_eq!(parse_range(bad, 100), None, "{bad} must be unsatisfiable");
        }
        assert_eq!(
            parse_range("bytes=0-0", 0),
            None,
            "empty objects have no ranges"
        );
    }
}
