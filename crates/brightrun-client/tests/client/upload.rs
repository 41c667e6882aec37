//! Dataset uploads against the real stack: cuts at random offsets, an interrupted run resumed
//! with an expired token, a crash between create_dataset and its answer, refusals.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use brightrun_client::Secret;
use brightrun_client::transfer::upload::{SignFn, sign_upload};
use brightrun_client::transfer::{
    DatasetTarget, Phase, Progress, ProgressFn, UploadOptions, UploadRequest, Uploader,
};
use brightrun_stack::testing::mint_user;
use serde_json::json;

use brightrun_client::testing::*;
use brightrun_stack::testing::{AnswerProxy, Direction, FaultProxy, sha256_hex};

fn options(chunk: u64) -> UploadOptions {
    UploadOptions {
        chunk_size: chunk,
        retry: fast_retry(),
        ..UploadOptions::default()
    }
}

/// The upload finished: one dataset row, validating, whose object is the file byte for byte.
async fn assert_uploaded_once(user: uuid::Uuid, file: &std::path::Path, dataset_id: uuid::Uuid) {
    let rows = dataset_rows(user).await;
    assert_eq!(rows.len(), 1, "exactly one dataset row, got {rows:?}");
    assert_eq!(rows[0].0, dataset_id, "the outcome names the dataset row");
    assert_eq!(rows[0].1, "validating", "the upload was confirmed");
    let stored = stack().object("lora-datasets", &rows[0].2).await;
    assert_eq!(
        sha256_hex(&stored),
        file_sha256(file),
        "the stored object is the file"
    );
}

#[tokio::test]
async fn upload_survives_twenty_cuts_at_random_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "cuts.jsonl", 3 * 1024 * 1024);
    let user = mint_user(stack(), "upload-cuts").await;
    let proxy = FaultProxy::start(&stack().url).await;
    proxy.cut_connections(24, Direction::Up, 16 * 1024, 256 * 1024, 20261122);
    let uploader = Uploader::new(
        session_at(&proxy.url(), &user),
        local_store(dir.path()).await,
        options(1024 * 1024),
    );
    let outcome = uploader
        .upload(&UploadRequest::new(&file), None)
        .await
        .expect("the upload completes despite the cuts");
    assert!(
        proxy.cuts_done() >= 20,
        "at least 20 connections were cut, got {}",
        proxy.cuts_done()
    );
    assert_uploaded_once(user.id, &file, outcome.dataset_id).await;
    assert!(
        uploader.unfinished().await.expect("state").is_empty(),
        "nothing is left to resume"
    );

    let again = uploader
        .upload(&UploadRequest::new(&file), None)
        .await
        .expect("running the same upload again");
    assert!(
        again.already_uploaded,
        "the same file again finds the dataset instead of making another"
    );
    assert_eq!(again.dataset_id, outcome.dataset_id, "the same dataset");
    assert_eq!(dataset_rows(user.id).await.len(), 1, "still one row");
}

/// A signer that hands out an expired (forged) token first, then real ones.
fn expired_first(
    session: Arc<brightrun_client::session::Session>,
    calls: Arc<AtomicU32>,
) -> SignFn {
    Arc::new(move |bucket: String, path: String| {
        let session = session.clone();
        let calls = calls.clone();
        Box::pin(async move {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                let now = brightrun_stack::testing::chrono_now();
                let token = stack().keys().sign(&json!({
                    "url": format!("{bucket}/{path}"), "scope": "upload", "upsert": false,
                    "owner": session.user_id().to_string(), "iat": now - 120, "exp": now - 60,
                }));
                return Ok(Secret::new(token));
            }
            sign_upload(&session, &bucket, &path).await
        })
    })
}

#[tokio::test]
async fn an_interrupted_upload_resumes_with_a_renewed_token_and_one_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "resume.jsonl", 2 * 1024 * 1024);
    let user = mint_user(stack(), "upload-resume").await;
    let proxy = FaultProxy::start(&stack().url).await;
    let store = local_store(dir.path()).await;

    // First run: held by the proxy half-way, then dropped (as a killed process would be).
    proxy.hold_after(Direction::Up, 1024 * 1024);
    let first = Uploader::new(
        session_at(&proxy.url(), &user),
        store.clone(),
        options(256 * 1024),
    );
    let request = UploadRequest::new(&file);
    let (sink, mut moved, _) = moving_sink();
    tokio::select! {
        result = first.upload(&request, Some(sink)) => {
            panic!("the held upload cannot finish: {result:?}")
        }
        () = async {
            moved.wait_for(|&m| m).await.expect("progress sender lives");
            proxy.wait_held().await;
        } => {}
    }
    drop(first);
    proxy.open_gate();
    let pending = store
        .unfinished(&format!("{}/", proxy.url()), &user.id.to_string())
        .await
        .expect("state");
    assert_eq!(pending.len(), 1, "the interrupted upload is recorded");
    assert!(
        pending[0].tus_url.is_some() && pending[0].dataset_id.is_some(),
        "its dataset and TUS URL are recorded: {pending:?}"
    );

    // Second run: the first token it gets has expired.
    let calls = Arc::new(AtomicU32::new(0));
    let session = session_at(&proxy.url(), &user);
    let second = Uploader::new(session.clone(), store, options(256 * 1024))
        .with_signer(expired_first(session, calls.clone()));
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink: ProgressFn = {
        let seen = seen.clone();
        Arc::new(move |p: &Progress| seen.lock().expect("lock").push(p.clone()))
    };
    let outcome = second
        .upload(&UploadRequest::new(&file), Some(sink))
        .await
        .expect("the resumed upload completes");
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "the expired token was replaced by a new one"
    );
    let resumed = outcome.resumed_from.expect("the second run resumed");
    assert!(
        resumed >= 256 * 1024,
        "the second run started where the first stopped, not at 0: {resumed}"
    );
    assert_uploaded_once(user.id, &file, outcome.dataset_id).await;
    let seen = seen.lock().expect("lock");
    assert!(
        seen.iter()
            .any(|p| p.phase == Phase::Transferring && p.bytes > resumed),
        "the transfer's progress is reported"
    );
    let last = seen.last().expect("progress was reported");
    assert_eq!(
        (last.phase, last.bytes, last.total),
        (Phase::Done, outcome.bytes, outcome.bytes),
        "the last report is the whole file, done"
    );
}

#[tokio::test]
async fn a_crash_after_create_dataset_registers_that_dataset_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "adopt.jsonl", 64 * 1024);
    let user = mint_user(stack(), "upload-adopt").await;
    let store = local_store(dir.path()).await;
    let session = session_at(&stack().url, &user);

    // The earlier run chose the dataset's id, sent the bytes, called create_dataset before the
    // last chunk, and died before hearing the answer.
    let (_, fingerprint) = brightrun_client::transfer::upload::validate_file(
        &file,
        &Default::default(),
        None,
        &Default::default(),
    )
    .await
    .expect("validates");
    let canonical = std::fs::canonicalize(&file).expect("canonical path");
    let target = DatasetTarget::new(user.id, "adopt.jsonl");
    store
        .start(
            session.project().url.as_str(),
            &user.id.to_string(),
            &canonical.to_string_lossy(),
            &fingerprint,
            "adopt",
            &target,
        )
        .await
        .expect("state row");
    let response = http()
        .post(format!("{}/rest/v1/rpc/create_dataset", stack().url))
        .header("apikey", &stack().anon_key)
        .bearer_auth(&user.access_token)
        .json(&json!({"name": "adopt", "file_name": "adopt.jsonl", "file_size": fingerprint.size, "id": target.id}))
        .send()
        .await
        .expect("create_dataset");
    assert!(response.status().is_success(), "create_dataset works");

    let outcome = Uploader::new(session, store, options(1024 * 1024))
        .upload(&UploadRequest::new(&file), None)
        .await
        .expect("the upload completes");
    assert_eq!(
        outcome.dataset_id, target.id,
        "the chosen id is the dataset's"
    );
    assert_uploaded_once(user.id, &file, outcome.dataset_id).await;
}

#[tokio::test]
async fn a_file_failing_its_check_mid_upload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "late-error.jsonl", 16 * 1024 * 1024);
    // Every line is fine but the last: the check finds the error only at the end of the file,
    // while the bytes before it are already going.
    let mut bytes = std::fs::read(&file).expect("read");
    let good_lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    bytes.extend_from_slice(b"{\"messages\": [{\"role\": \"user\", \"content\": \"cut off\"\n");
    std::fs::write(&file, &bytes).expect("write");
    let user = mint_user(stack(), "upload-late-error").await;
    let proxy = AnswerProxy::start(&stack().url).await;
    let uploader = Uploader::new(
        session_at(&proxy.url(), &user),
        local_store(dir.path()).await,
        options(256 * 1024),
    );
    let error = uploader
        .upload(&UploadRequest::new(&file), None)
        .await
        .expect_err("a file with an error is refused");
    let brightrun_client::Error::Invalid(report) = error else {
        panic!("expected the validation report, got {error:?}");
    };
    assert_eq!(report.error_count, 1, "one error: {:?}", report.errors);
    assert_eq!(
        report.errors[0].line,
        Some(good_lines + 1),
        "the error names the last line"
    );

    let seen = proxy.seen();
    let tus: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/storage/v1/upload/resumable"))
        .collect();
    let patches = tus
        .iter()
        .filter(|s| s.method == "PATCH" && s.status == 204)
        .count();
    assert!(
        patches >= 1,
        "bytes went before the verdict (the case under test): {seen:?}"
    );
    assert!(
        (patches as u64) * 256 * 1024 < bytes.len() as u64,
        "the last chunk never went: {patches} PATCHes for {} bytes",
        bytes.len()
    );
    let last = tus.last().expect("TUS requests");
    assert_eq!(
        (last.method.as_str(), last.status),
        ("DELETE", 204),
        "the unfinished upload was terminated: {tus:?}"
    );
    assert!(
        seen.iter().all(|s| !s.path.contains("create_dataset")),
        "the dataset was never registered: {seen:?}"
    );
    assert!(
        dataset_rows(user.id).await.is_empty(),
        "no dataset row, not even a deleted one"
    );
    let db = stack().db().await;
    let objects: i64 = sqlx::query_scalar(
        "select count(*) from storage.objects where bucket_id = 'lora-datasets' and name like $1",
    )
    .bind(format!("{}/%", user.id))
    .fetch_one(&db)
    .await
    .expect("objects query");
    db.close().await;
    assert_eq!(objects, 0, "no object in the user's folder");
    // The terminated upload is gone on the server: HEAD on its URL answers 404.
    let url = format!("{}{}", stack().url, last.path);
    let token = sign_upload(uploader.session(), "lora-datasets", &object_of(&last.path))
        .await
        .expect("a token for the same path");
    let head = http()
        .head(&url)
        .header("tus-resumable", "1.0.0")
        .header("apikey", &stack().anon_key)
        .header("x-signature", token.expose())
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 404, "the server forgot the upload");
}

/// The object name in a TUS upload URL's id (`base64url("<bucket>/<object>/<uuid>")`).
fn object_of(path: &str) -> String {
    use base64::Engine as _;
    let id = path.rsplit('/').next().expect("an id");
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(id)
        .expect("base64url id");
    let text = String::from_utf8(decoded).expect("utf-8 id");
    let (_bucket, rest) = text.split_once('/').expect("bucket/");
    let (object, _uuid) = rest.rsplit_once('/').expect("/uuid");
    object.to_owned()
}

#[tokio::test]
async fn a_dataset_with_errors_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n\
         not json\n\
         {\"messages\": []}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n",
    )
    .expect("write");
    let user = mint_user(stack(), "upload-invalid").await;
    let uploader = Uploader::new(
        session_at(&stack().url, &user),
        local_store(dir.path()).await,
        options(1024 * 1024),
    );
    let error = uploader
        .upload(&UploadRequest::new(&file), None)
        .await
        .expect_err("a file with errors is refused");
    let brightrun_client::Error::Invalid(report) = error else {
        panic!("expected the validation report, got {error:?}");
    };
    assert_eq!(report.error_count, 3, "every error is reported: {report:?}");
    let lines: Vec<_> = report.errors.iter().filter_map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 4], "each error names its line");
    assert!(
        dataset_rows(user.id).await.is_empty(),
        "no dataset row was made"
    );
}

#[tokio::test]
async fn a_type_the_bucket_refuses_is_a_415() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "typed.jsonl", 16 * 1024);
    let user = mint_user(stack(), "upload-415").await;
    let uploader = Uploader::new(
        session_at(&stack().url, &user),
        local_store(dir.path()).await,
        UploadOptions {
            content_type: "image/png".into(),
            ..options(1024 * 1024)
        },
    );
    let error = uploader
        .upload(&UploadRequest::new(&file), None)
        .await
        .expect_err("the bucket refuses image/png");
    assert_eq!(
        error.code(),
        brightrun_client::ErrorCode::UnsupportedType,
        "a 415 is unsupported_type, got {error:?}"
    );
}
