//! `/storage/v1`: object API, signed URLs, Range, TUS, limits, and the cross-tenant matrix.

use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestStack, TestUser, http, json_of, mint_user, stack};

const DATASETS: &str = "lora-datasets";
const JSONL: &str = "application/jsonl";

fn storage_url(stack: &TestStack, path: &str) -> String {
    format!("{}/storage/v1/{}", stack.url, path.trim_start_matches('/'))
}

fn as_user(
    stack: &TestStack,
    method: Method,
    path: &str,
    user: &TestUser,
) -> reqwest::RequestBuilder {
    http()
        .request(method, storage_url(stack, path))
        .bearer_auth(&user.access_token)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic, non-repeating test bytes.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32 % 31) as u8
                ^ seed
        })
        .collect()
}

async fn upload(
    stack: &TestStack,
    user: &TestUser,
    name: &str,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    json_of(
        as_user(
            stack,
            Method::POST,
            &format!("object/{DATASETS}/{name}"),
            user,
        )
        .header("content-type", JSONL)
        .header("x-upsert", "false")
        .body(bytes)
        .send()
        .await
        .expect("upload request"),
    )
    .await
}

/// The stored row and the bytes on the superuser side, to check nothing changed.
async fn stored_version(stack: &TestStack, bucket: &str, name: &str) -> Option<String> {
    let db = stack.db().await;
    let version: Option<Option<String>> = sqlx::query_scalar(
        "select version from storage.objects where bucket_id = $1 and name = $2",
    )
    .bind(bucket)
    .bind(name)
    .fetch_optional(&db)
    .await
    .expect("query objects");
    db.close().await;
    version.flatten()
}

/// storage-api's convention: HTTP 400 with the logical status as a string.
fn assert_storage_error(status: StatusCode, body: &Value, logical: &str, code: &str) {
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "storage errors are HTTP 400: {body}"
    );
    assert_eq!(
        body["statusCode"], logical,
        "logical status in body: {body}"
    );
    assert_eq!(body["code"], code, "error code: {body}");
}

#[tokio::test]
async fn upload_download_range_and_etag() {
    let stack = stack();
    let user = mint_user(stack, "st-basic").await;
    let bytes = payload(300_000, 7);
    let name = format!("{}/d1/train.jsonl", user.id);
    let (status, body) = upload(stack, &user, &name, bytes.clone()).await;
    assert_eq!(status, StatusCode::OK, "upload succeeds: {body}");
    assert_eq!(body["Key"], format!("{DATASETS}/{name}"));
    assert!(
        body["Id"]
            .as_str()
            .is_some_and(|id| id.parse::<uuid::Uuid>().is_ok()),
        "Id is a uuid: {body}"
    );

    let full = as_user(
        stack,
        Method::GET,
        &format!("object/authenticated/{DATASETS}/{name}"),
        &user,
    )
    .send()
    .await
    .expect("download");
    assert_eq!(full.status(), StatusCode::OK);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-type"], JSONL);
    let etag = full.headers()["etag"].to_str().expect("etag").to_owned();
    assert_eq!(
        etag,
        format!("\"{}\"", sha256(&bytes)),
        "the ETag is the SHA-256 of the content"
    );
    assert_eq!(
        full.bytes().await.expect("body").as_ref(),
        bytes.as_slice(),
        "bytes round-trip"
    );

    let part = as_user(
        stack,
        Method::GET,
        &format!("object/{DATASETS}/{name}"),
        &user,
    )
    .header("range", "bytes=1000-1999")
    .send()
    .await
    .expect("ranged download");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(
        part.bytes().await.expect("body").as_ref(),
        &bytes[1000..2000],
        "exact range bytes"
    );

    let suffix = as_user(
        stack,
        Method::GET,
        &format!("object/{DATASETS}/{name}"),
        &user,
    )
    .header("range", "bytes=-10")
    .send()
    .await
    .expect("suffix range");
    assert_eq!(
        suffix.bytes().await.expect("body").as_ref(),
        &bytes[bytes.len() - 10..]
    );

    let (status, body) = json_of(
        as_user(
            stack,
            Method::GET,
            &format!("object/{DATASETS}/{name}"),
            &user,
        )
        .header("range", "bytes=300000-")
        .send()
        .await
        .expect("unsatisfiable range"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::RANGE_NOT_SATISFIABLE,
        "416 is sent as a real status: {body}"
    );
    assert_eq!(body["code"], "InvalidRange");

    let cached = as_user(
        stack,
        Method::GET,
        &format!("object/{DATASETS}/{name}"),
        &user,
    )
    .header("if-none-match", &etag)
    .send()
    .await
    .expect("conditional");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);

    let (status, body) = upload(stack, &user, &name, b"{}".to_vec()).await;
    assert_storage_error(status, &body, "409", "KeyAlreadyExists");
}

#[tokio::test]
async fn signed_urls_for_download_and_upload() {
    let stack = stack();
    let user = mint_user(stack, "st-signed").await;
    let name = format!("{}/d2/data.jsonl", user.id);
    let bytes = payload(50_000, 3);
    assert_eq!(
        upload(stack, &user, &name, bytes.clone()).await.0,
        StatusCode::OK
    );

    let (status, body) = json_of(
        as_user(
            stack,
            Method::POST,
            &format!("object/sign/{DATASETS}/{name}"),
            &user,
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .expect("sign"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let signed = body["signedURL"].as_str().expect("signedURL").to_owned();
    assert!(
        signed.starts_with(&format!("/object/sign/{DATASETS}/{name}?token=")),
        "relative to /storage/v1: {signed}"
    );
    let response = http()
        .get(format!("{}/storage/v1{signed}", stack.url))
        .header("range", "bytes=10-19")
        .send()
        .await
        .expect("fetch signed");
    assert_eq!(
        response.status(),
        StatusCode::PARTIAL_CONTENT,
        "no credentials needed"
    );
    assert!(
        response.headers().contains_key("expires"),
        "signed downloads carry Expires"
    );
    assert_eq!(
        response.bytes().await.expect("body").as_ref(),
        &bytes[10..20]
    );

    // A download token does not open another object, nor upload.
    let token = signed.split("token=").nth(1).expect("token");
    let other = format!("{}/d2/other.jsonl", user.id);
    let (status, body) = json_of(
        http()
            .get(storage_url(
                stack,
                &format!("object/sign/{DATASETS}/{other}?token={token}"),
            ))
            .send()
            .await
            .expect("replay"),
    )
    .await;
    assert_storage_error(status, &body, "400", "InvalidSignature");
    let (status, body) = json_of(
        http()
            .put(storage_url(
                stack,
                &format!("object/upload/sign/{DATASETS}/{name}?token={token}"),
            ))
            .header("content-type", JSONL)
            .body("{}")
            .send()
            .await
            .expect("upload with download token"),
    )
    .await;
    assert_storage_error(status, &body, "400", "InvalidSignature");
    assert_eq!(body["message"], "Token is not scoped for upload");

    let target = format!("{}/d3/signed.jsonl", user.id);
    let (status, body) = json_of(
        as_user(
            stack,
            Method::POST,
            &format!("object/upload/sign/{DATASETS}/{target}"),
            &user,
        )
        .json(&json!({}))
        .send()
        .await
        .expect("sign upload"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let url = body["url"].as_str().expect("url");
    assert!(url.contains("?token="), "{url}");
    let (status, body) = json_of(
        http()
            .put(format!("{}/storage/v1{url}", stack.url))
            .header("content-type", JSONL)
            .body(bytes.clone())
            .send()
            .await
            .expect("put signed"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["Key"], format!("{DATASETS}/{target}"));
    let db = stack.db().await;
    let owner: Option<String> = sqlx::query_scalar(
        "select owner_id from storage.objects where bucket_id = $1 and name = $2",
    )
    .bind(DATASETS)
    .bind(&target)
    .fetch_one(&db)
    .await
    .expect("row");
    assert_eq!(
        owner,
        Some(user.id.to_string()),
        "the owner comes from the token"
    );
    db.close().await;
}

#[tokio::test]
async fn list_is_one_level_and_delete_removes_rows_and_bytes() {
    let stack = stack();
    let user = mint_user(stack, "st-list").await;
    for name in ["a.jsonl", "b.jsonl", "sub/c.jsonl", "sub/deeper/d.jsonl"] {
        let (status, body) = upload(
            stack,
            &user,
            &format!("{}/{name}", user.id),
            b"{}\n".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = json_of(
        as_user(stack, Method::POST, &format!("object/list/{DATASETS}"), &user)
            .json(&json!({"prefix": user.id.to_string(), "limit": 100, "offset": 0, "sortBy": {"column": "name", "order": "asc"}}))
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let names: Vec<&str> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["a.jsonl", "b.jsonl", "sub"],
        "one level, folders as entries"
    );
    let folder = &body[2];
    assert!(
        folder["id"].is_null() && folder["metadata"].is_null(),
        "folders have null fields: {folder}"
    );
    assert!(
        body[0]["metadata"]["size"].as_u64() == Some(3),
        "files carry metadata: {}",
        body[0]
    );

    let doomed = format!("{}/a.jsonl", user.id);
    let version = stored_version(stack, DATASETS, &doomed)
        .await
        .expect("stored");
    let (status, body) = json_of(
        as_user(stack, Method::DELETE, &format!("object/{DATASETS}"), &user)
            .json(&json!({"prefixes": [doomed, format!("{}/missing.jsonl", user.id)]}))
            .send()
            .await
            .expect("delete"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body.as_array().map(Vec::len),
        Some(1),
        "missing names are silently absent: {body}"
    );
    assert_eq!(
        stored_version(stack, DATASETS, &doomed).await,
        None,
        "row gone"
    );
    let (status, body) = json_of(
        as_user(
            stack,
            Method::GET,
            &format!("object/{DATASETS}/{doomed}"),
            &user,
        )
        .send()
        .await
        .expect("get deleted"),
    )
    .await;
    assert_storage_error(status, &body, "404", "NoSuchKey");
    assert!(!version.is_empty());
}

#[tokio::test]
async fn limits_size_and_type() {
    let stack = stack();
    let user = mint_user(stack, "st-limits").await;
    let (status, body) = json_of(
        as_user(
            stack,
            Method::POST,
            &format!("object/{DATASETS}/{}/x.png", user.id),
            &user,
        )
        .header("content-type", "image/png")
        .body(vec![0u8; 16])
        .send()
        .await
        .expect("wrong type"),
    )
    .await;
    assert_storage_error(status, &body, "415", "InvalidMimeType");
    assert_eq!(body["message"], "mime type image/png is not supported");

    // 501 MB announced: refused from the header, before a byte of the body is read. Sent by hand
    // (headers only) so the early answer is read deterministically instead of racing the upload.
    let size: u64 = 501 * 1024 * 1024;
    let (status, body) = raw_request_head(
        stack,
        &format!(
            "POST /storage/v1/object/{DATASETS}/{}/big.jsonl HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\ncontent-type: {JSONL}\r\ncontent-length: {size}\r\n\r\n",
            user.id, user.access_token
        ),
    )
    .await;
    assert_storage_error(status, &body, "413", "EntityTooLarge");

    let tus = tus_create(stack, &user, &format!("{}/big.jsonl", user.id), size).await;
    assert_eq!(
        tus.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "TUS answers the real status"
    );
    assert_eq!(tus.text().await.expect("text"), "Maximum size exceeded\n");
    let png = http()
        .post(storage_url(stack, "upload/resumable"))
        .bearer_auth(&user.access_token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 16)
        .header(
            "upload-metadata",
            format!(
                "bucketName {},objectName {},contentType {}",
                b64(DATASETS),
                b64(&format!("{}/x.png", user.id)),
                b64("image/png")
            ),
        )
        .send()
        .await
        .expect("tus create png");
    assert_eq!(
        png.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "type checked at creation"
    );
    assert_eq!(
        png.text().await.expect("text"),
        "mime type image/png is not supported\n"
    );
    assert_eq!(
        stored_version(stack, DATASETS, &format!("{}/big.jsonl", user.id)).await,
        None,
        "nothing stored"
    );
}

/// Sends a request head without its body and reads the answer the server gives at once.
async fn raw_request_head(stack: &TestStack, head: &str) -> (StatusCode, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = stack.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(head.as_bytes()).await.expect("send head");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if n == 0 || text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        StatusCode::from_u16(status).expect("status"),
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn tus_create(
    stack: &TestStack,
    user: &TestUser,
    name: &str,
    length: u64,
) -> reqwest::Response {
    http()
        .post(storage_url(stack, "upload/resumable"))
        .bearer_auth(&user.access_token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", length)
        .header(
            "upload-metadata",
            format!(
                "bucketName {},objectName {},contentType {}",
                b64(DATASETS),
                b64(name),
                b64(JSONL)
            ),
        )
        .send()
        .await
        .expect("tus create")
}

async fn tus_patch(
    url: &str,
    user: &TestUser,
    offset: u64,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http()
        .patch(url)
        .bearer_auth(&user.access_token)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", offset)
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .expect("tus patch")
}

/// Waits until the holding request has bytes on disk past `offset` (it then owns the upload until
/// its body ends). Polls with HEAD, which never takes the writer lock.
/// Waits until the upload holds at least `offset` bytes (asking the server, not the clock).
async fn wait_until_holding(url: &str, user: &TestUser, offset: u64) {
    for _ in 0..100_000 {
        if tus_offset(url, user).await >= offset {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the holding request never started writing");
}

async fn tus_offset(url: &str, user: &TestUser) -> u64 {
    let head = http()
        .head(url)
        .bearer_auth(&user.access_token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("tus head");
    assert_eq!(head.status(), StatusCode::OK, "HEAD of a live upload");
    head.headers()["upload-offset"]
        .to_str()
        .expect("offset")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn tus_wrong_offset_gets_409_and_a_second_writer_takes_over() {
    let stack = stack();
    let user = mint_user(stack, "st-tus").await;
    let name = format!("{}/tus/data.jsonl", user.id);
    let bytes = payload(3 * 1024 * 1024, 11);
    let created = tus_create(stack, &user, &name, bytes.len() as u64).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let url = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        url.starts_with(&format!("{}/storage/v1/upload/resumable/", stack.url)),
        "absolute Location: {url}"
    );

    let first = tus_patch(&url, &user, 0, bytes[..1024 * 1024].to_vec()).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(first.headers()["upload-offset"], "1048576");

    let wrong = tus_patch(&url, &user, 0, bytes[..1024].to_vec()).await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT, "offset mismatch");
    assert_eq!(
        tus_offset(&url, &user).await,
        1024 * 1024,
        "a refused PATCH changes nothing"
    );

    // A writer that holds the upload open (its body not finished), as a request whose client
    // vanished does until the server notices. A second writer takes over, as storage-api's
    // locker lets it: the first stops with what it wrote, the second meets the offset check.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let held_chunk = bytes[1024 * 1024..2 * 1024 * 1024].to_vec();
    let held_body = futures::stream::once(async move { Ok::<_, std::io::Error>(held_chunk) })
        .chain(futures::stream::once(async move {
            let _ = rx.await;
            Ok::<_, std::io::Error>(Vec::new())
        }));
    use futures::StreamExt as _;
    let holder = {
        let url = url.clone();
        let user = user.clone();
        tokio::spawn(async move {
            tus_patch(
                &url,
                &user,
                1024 * 1024,
                reqwest::Body::wrap_stream(held_body),
            )
            .await
        })
    };
    // Wait until the holder has written its whole first piece (it owns the upload until its
    // body ends), not for a time: only then is "the bytes it wrote" a known number.
    wait_until_holding(&url, &user, 2 * 1024 * 1024).await;
    let second = tus_patch(
        &url,
        &user,
        1024 * 1024,
        bytes[1024 * 1024..2 * 1024 * 1024].to_vec(),
    )
    .await;
    assert_eq!(
        second.status(),
        StatusCode::CONFLICT,
        "the second writer got the lock, then the offset had moved on: 409"
    );
    assert_eq!(
        second.text().await.expect("text"),
        "Upload-Offset conflict\n"
    );
    let held = holder.await.expect("holder task");
    assert_eq!(
        held.status(),
        StatusCode::BAD_REQUEST,
        "the first writer was asked to let go"
    );
    assert_eq!(
        held.text().await.expect("text"),
        "Request aborted due to lock acquired\n"
    );
    drop(tx);
    assert_eq!(
        tus_offset(&url, &user).await,
        2 * 1024 * 1024,
        "the bytes the first writer wrote are kept"
    );

    let last = tus_patch(
        &url,
        &user,
        2 * 1024 * 1024,
        bytes[2 * 1024 * 1024..].to_vec(),
    )
    .await;
    assert_eq!(last.status(), StatusCode::NO_CONTENT);
    assert_eq!(last.headers()["tus-complete"], "1");
    let stored = as_user(
        stack,
        Method::GET,
        &format!("object/{DATASETS}/{name}"),
        &user,
    )
    .send()
    .await
    .expect("download");
    assert_eq!(
        sha256(&stored.bytes().await.expect("bytes")),
        sha256(&bytes),
        "byte-identical after the conflicts"
    );
}

#[tokio::test]
async fn tus_signed_upload_with_x_signature() {
    let stack = stack();
    let user = mint_user(stack, "st-tus-signed").await;
    let name = format!("{}/tus/signed.jsonl", user.id);
    let (status, body) = json_of(
        as_user(
            stack,
            Method::POST,
            &format!("object/upload/sign/{DATASETS}/{name}"),
            &user,
        )
        .json(&json!({}))
        .send()
        .await
        .expect("sign"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().expect("token").to_owned();
    let bytes = payload(100_000, 5);
    let meta = format!(
        "bucketName {},objectName {},contentType {}",
        b64(DATASETS),
        b64(&name),
        b64(JSONL)
    );
    let created = http()
        .post(storage_url(stack, "upload/resumable/sign"))
        .header("x-signature", &token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", bytes.len())
        .header("upload-metadata", &meta)
        .header("content-type", "application/offset+octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .expect("create with upload");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.headers()["tus-complete"],
        "1",
        "creation-with-upload finished it"
    );
    assert!(
        created.headers()["location"]
            .to_str()
            .expect("loc")
            .contains("/upload/resumable/sign/")
    );
    assert!(
        stored_version(stack, DATASETS, &name).await.is_some(),
        "object exists once the last byte landed"
    );

    let other = format!("{}/tus/other.jsonl", user.id);
    let refused = http()
        .post(storage_url(stack, "upload/resumable/sign"))
        .header("x-signature", &token)
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 10)
        .header(
            "upload-metadata",
            format!("bucketName {},objectName {}", b64(DATASETS), b64(&other)),
        )
        .send()
        .await
        .expect("create for another path");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(refused.text().await.expect("text"), "Invalid signature\n");
    let missing = http()
        .post(storage_url(stack, "upload/resumable/sign"))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", 10)
        .header("upload-metadata", &meta)
        .send()
        .await
        .expect("no signature");
    assert_eq!(
        missing.text().await.expect("text"),
        "Missing x-signature header\n"
    );
}

/// User B against everything of user A's, by every route: nothing succeeds, nothing changes.
#[tokio::test]
async fn cross_tenant_storage_matrix() {
    let stack = stack();
    let a = mint_user(stack, "st-owner").await;
    let b = mint_user(stack, "st-intruder").await;
    let name = format!("{}/ds/secret.jsonl", a.id);
    let bytes = payload(10_000, 9);
    assert_eq!(
        upload(stack, &a, &name, bytes.clone()).await.0,
        StatusCode::OK
    );
    let version = stored_version(stack, DATASETS, &name)
        .await
        .expect("A's object");
    let mut successes = Vec::new();

    let (_, listed) = json_of(
        as_user(stack, Method::POST, &format!("object/list/{DATASETS}"), &b)
            .json(&json!({"prefix": a.id.to_string()}))
            .send()
            .await
            .expect("list"),
    )
    .await;
    if listed.as_array().is_some_and(|l| !l.is_empty()) {
        successes.push(format!("list: {listed}"));
    }
    for route in [
        format!("object/{DATASETS}/{name}"),
        format!("object/authenticated/{DATASETS}/{name}"),
        format!("object/info/{DATASETS}/{name}"),
    ] {
        let response = as_user(stack, Method::GET, &route, &b)
            .send()
            .await
            .expect("read");
        if response.status().is_success() {
            successes.push(format!("read {route}"));
        }
    }
    let signed = as_user(
        stack,
        Method::POST,
        &format!("object/sign/{DATASETS}/{name}"),
        &b,
    )
    .json(&json!({"expiresIn": 60}))
    .send()
    .await
    .expect("sign");
    if signed.status().is_success() {
        successes.push("sign download".into());
    }
    let (_, batch) = json_of(
        as_user(stack, Method::POST, &format!("object/sign/{DATASETS}"), &b)
            .json(&json!({"expiresIn": 60, "paths": [name]}))
            .send()
            .await
            .expect("batch sign"),
    )
    .await;
    if batch[0]["signedURL"].is_string() {
        successes.push("batch sign".into());
    }
    for upsert in ["true", "false"] {
        let response = as_user(
            stack,
            Method::POST,
            &format!("object/{DATASETS}/{name}"),
            &b,
        )
        .header("content-type", JSONL)
        .header("x-upsert", upsert)
        .body("{\"evil\":1}")
        .send()
        .await
        .expect("overwrite");
        if response.status().is_success() {
            successes.push(format!("overwrite upsert={upsert}"));
        }
    }
    let response = as_user(stack, Method::PUT, &format!("object/{DATASETS}/{name}"), &b)
        .header("content-type", JSONL)
        .body("{}")
        .send()
        .await
        .expect("update");
    if response.status().is_success() {
        successes.push("update (PUT)".into());
    }
    let response = as_user(
        stack,
        Method::POST,
        &format!("object/upload/sign/{DATASETS}/{name}"),
        &b,
    )
    .header("x-upsert", "true")
    .json(&json!({}))
    .send()
    .await
    .expect("sign upload");
    if response.status().is_success() {
        successes.push("sign upload".into());
    }
    let tus = tus_create(stack, &b, &name, 10).await;
    if tus.status().is_success() {
        successes.push("tus create".into());
    }
    let (_, deleted) = json_of(
        as_user(stack, Method::DELETE, &format!("object/{DATASETS}"), &b)
            .json(&json!({"prefixes": [name]}))
            .send()
            .await
            .expect("bulk delete"),
    )
    .await;
    if deleted.as_array().is_some_and(|d| !d.is_empty()) {
        successes.push("bulk delete".into());
    }
    let response = as_user(
        stack,
        Method::DELETE,
        &format!("object/{DATASETS}/{name}"),
        &b,
    )
    .send()
    .await
    .expect("delete");
    if response.status().is_success() {
        successes.push("single delete".into());
    }
    // B's own folder is fine, so the denials above are about ownership, not a broken route.
    assert_eq!(
        upload(
            stack,
            &b,
            &format!("{}/ds/mine.jsonl", b.id),
            b"{}".to_vec()
        )
        .await
        .0,
        StatusCode::OK
    );

    assert!(
        successes.is_empty(),
        "user B succeeded on A's object: {successes:?}"
    );
    assert_eq!(
        stored_version(stack, DATASETS, &name).await,
        Some(version),
        "A's object is untouched"
    );
    let again = as_user(stack, Method::GET, &format!("object/{DATASETS}/{name}"), &a)
        .send()
        .await
        .expect("A reads");
    assert_eq!(
        again.bytes().await.expect("bytes").as_ref(),
        bytes.as_slice(),
        "A's bytes are unchanged"
    );
}

/// A stack process of its own, killed with SIGKILL mid-PATCH and restarted on the same data.
/// Dropping it stops the process, so a failing test leaves no server behind.
struct OwnStack {
    child: std::process::Child,
    url: String,
}

impl Drop for OwnStack {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

fn spawn_stack(data: &std::path::Path) -> OwnStack {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brightrun-stack"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            crate::support::TEST_JWT_SECRET,
            "--data-dir",
        ])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn stack");
    let stdout = child.stdout.take().expect("stdout");
    let mut url = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(u) = line.strip_prefix("API URL: ") {
            url = Some(u.to_owned());
        }
        if line == "ready" {
            break;
        }
    }
    OwnStack {
        child,
        url: url.expect("stack printed its URL"),
    }
}

#[tokio::test]
async fn killed_stack_mid_upload_resumes_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("stack");
    let mut own = spawn_stack(&data);
    let local = TestStack {
        url: own.url.clone(),
        db_url: format!(
            "postgresql:///postgres?host={}&port=5432&user=postgres",
            data.join("run").display()
        ),
        ..stack().clone()
    };
    let user = mint_user(&local, "st-kill").await;
    let name = format!("{}/kill/data.jsonl", user.id);
    let bytes = payload(4 * 1024 * 1024, 13);
    let created = tus_create(&local, &user, &name, bytes.len() as u64).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let url = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let chunk = 1024 * 1024;
    assert_eq!(
        tus_patch(&url, &user, 0, bytes[..chunk].to_vec())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );

    // Send half of the next chunk, then kill the stack while the body is still open.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let half = bytes[chunk..chunk + chunk / 2].to_vec();
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(half) }).chain(
        futures::stream::once(async move {
            let _ = rx.await;
            Ok::<_, std::io::Error>(Vec::new())
        }),
    );
    use futures::StreamExt as _;
    let in_flight = {
        let (url, user) = (url.clone(), user.clone());
        tokio::spawn(async move {
            http()
                .patch(&url)
                .bearer_auth(&user.access_token)
                .header("tus-resumable", "1.0.0")
                .header("upload-offset", chunk)
                .header("content-type", "application/offset+octet-stream")
                .header("content-length", chunk)
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
        })
    };
    // Kill once the server is writing the second chunk.
    wait_until_holding(&url, &user, chunk as u64 + 1).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(own.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    own.child.wait().expect("reap");
    drop(tx);
    let _ = in_flight.await;

    let own = spawn_stack(&data);
    let url = url.replace(&local.url, &own.url);
    let resumed = tus_offset(&url, &user).await;
    assert!(
        resumed >= chunk as u64,
        "the completed chunk survived the kill (offset {resumed})"
    );
    assert!(
        resumed <= (chunk + chunk / 2) as u64,
        "no more than was sent (offset {resumed})"
    );
    let finish = tus_patch(&url, &user, resumed, bytes[resumed as usize..].to_vec()).await;
    assert_eq!(finish.status(), StatusCode::NO_CONTENT);
    let stored = http()
        .get(format!("{}/storage/v1/object/{DATASETS}/{name}", own.url))
        .bearer_auth(&user.access_token)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("download");
    assert_eq!(
        sha256(&stored.bytes().await.expect("bytes")),
        sha256(&bytes),
        "byte-identical after kill and resume"
    );
    drop(own);
}

#[tokio::test]
async fn unfinished_tus_upload_expires_after_a_day() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("stack");
    let own = spawn_stack(&data);
    let local = TestStack {
        url: own.url.clone(),
        db_url: format!(
            "postgresql:///postgres?host={}&port=5432&user=postgres",
            data.join("run").display()
        ),
        ..stack().clone()
    };
    let user = mint_user(&local, "st-expiry").await;
    let name = format!("{}/expiry/data.jsonl", user.id);
    let created = tus_create(&local, &user, &name, 1000).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let url = created.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    assert_eq!(
        tus_patch(&url, &user, 0, vec![b'x'; 100]).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tus_offset(&url, &user).await,
        100,
        "alive before the expiry"
    );

    // Age the upload by 25 hours in its record (the default expiry is 24 h).
    let uploads = data.join("storage").join("uploads");
    let record = std::fs::read_dir(&uploads)
        .expect("uploads dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("upload record");
    let mut info: Value =
        serde_json::from_slice(&std::fs::read(&record).expect("read")).expect("json");
    info["created_at"] = json!(info["created_at"].as_i64().expect("created_at") - 25 * 3600);
    std::fs::write(&record, serde_json::to_vec(&info).expect("json")).expect("write");

    let head = http()
        .head(&url)
        .bearer_auth(&user.access_token)
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .expect("head");
    assert_eq!(head.status(), StatusCode::GONE, "an expired upload is gone");
    let patch = tus_patch(&url, &user, 100, vec![b'x'; 900]).await;
    assert_eq!(
        patch.status(),
        StatusCode::NOT_FOUND,
        "and its bytes were removed"
    );
    assert!(
        std::fs::read_dir(&uploads)
            .expect("uploads dir")
            .next()
            .is_none(),
        "no files are left behind"
    );
    assert_eq!(
        stored_version(&local, DATASETS, &name).await,
        None,
        "no object appeared"
    );
    drop(own);
}
