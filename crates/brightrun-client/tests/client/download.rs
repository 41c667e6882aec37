//! Adapter downloads against the real stack: cuts, a corrupted byte, segments, resume from
//! `.part`, hostile names, a wrong digest.

use std::path::Path;
use std::sync::{Arc, Mutex};

use brightrun_client::transfer::{DownloadOptions, Downloader, Phase, Progress, ProgressFn};
use brightrun_stack::testing::{TestUser, mint_user};
use serde_json::json;
use uuid::Uuid;

use brightrun_client::testing::*;
use brightrun_stack::testing::{Direction, FaultProxy, sha256_hex};

fn options() -> DownloadOptions {
    DownloadOptions {
        retry: fast_retry(),
        ..DownloadOptions::default()
    }
}

/// An adapter of `len` bytes stored for `user`, with its artifact row listing it as `name`.
async fn stored_adapter(
    user: &TestUser,
    name: &str,
    len: usize,
    digest: Option<String>,
) -> (Uuid, Vec<u8>) {
    let bytes = adapter_bytes(len, u64::from(user.id.as_fields().0));
    let path = format!("{}/{}/adapter_model.safetensors", user.id, Uuid::new_v4());
    stack()
        .put_object(
            "lora-models",
            &path,
            bytes.clone(),
            "application/octet-stream",
        )
        .await;
    let sha = digest.unwrap_or_else(|| sha256_hex(&bytes));
    let (_, artifact) = artifact_row(
        user,
        json!({"files": [{"name": name, "path": path, "size": len, "sha256": sha}]}),
    )
    .await;
    (artifact, bytes)
}

fn recorder() -> (Arc<Mutex<Vec<Progress>>>, ProgressFn) {
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink: ProgressFn = {
        let seen = seen.clone();
        Arc::new(move |p: &Progress| seen.lock().expect("lock").push(p.clone()))
    };
    (seen, sink)
}

/// Every file under `root`, relative.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn download_survives_twenty_cuts_and_verifies() {
    let user = mint_user(stack(), "dl-cuts").await;
    let (artifact, bytes) = stored_adapter(&user, "adapter_model.safetensors", 3 << 20, None).await;
    let proxy = FaultProxy::start(&stack().url).await;
    proxy.cut_connections(22, Direction::Down, 16 * 1024, 256 * 1024, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let downloader = Downloader::new(session_at(&proxy.url(), &user), options());
    let done = downloader
        .download_artifact(artifact, dir.path(), None)
        .await
        .expect("the download completes despite the cuts");
    assert!(
        proxy.cuts_done() >= 20,
        "at least 20 connections were cut, got {}",
        proxy.cuts_done()
    );
    assert_eq!(done.len(), 1, "one file");
    assert!(done[0].verified, "the digest was checked");
    let written = std::fs::read(dir.path().join("adapter_model.safetensors")).expect("file");
    assert_eq!(
        sha256_hex(&written),
        sha256_hex(&bytes),
        "the file is the adapter"
    );
    assert_eq!(
        tree(dir.path()),
        ["adapter_model.safetensors"],
        "no .part or sidecar is left"
    );
}

#[tokio::test]
async fn segmented_download_survives_cuts() {
    let user = mint_user(stack(), "dl-segments").await;
    let (artifact, bytes) = stored_adapter(&user, "adapter.bin", 4 << 20, None).await;
    let proxy = FaultProxy::start(&stack().url).await;
    proxy.cut_connections(24, Direction::Down, 16 * 1024, 256 * 1024, 11);
    let dir = tempfile::tempdir().expect("tempdir");
    let downloader = Downloader::new(
        session_at(&proxy.url(), &user),
        DownloadOptions {
            segment_threshold: 1 << 20,
            segments: 4,
            ..options()
        },
    );
    downloader
        .download_artifact(artifact, dir.path(), None)
        .await
        .expect("the segmented download completes");
    assert!(
        proxy.cuts_done() >= 20,
        "20 cuts, got {}",
        proxy.cuts_done()
    );
    assert!(
        proxy.connections() >= 4,
        "segments use parallel connections"
    );
    let written = std::fs::read(dir.path().join("adapter.bin")).expect("file");
    assert_eq!(
        sha256_hex(&written),
        sha256_hex(&bytes),
        "the file is the adapter"
    );
}

#[tokio::test]
async fn a_corrupted_byte_is_detected_and_refetched() {
    let user = mint_user(stack(), "dl-corrupt").await;
    let (artifact, bytes) = stored_adapter(&user, "adapter_model.safetensors", 1 << 20, None).await;
    let proxy = FaultProxy::start(&stack().url).await;
    // Past the response headers of the first GET, well inside the body.
    proxy.corrupt_once(Direction::Down, 200 * 1024);
    let dir = tempfile::tempdir().expect("tempdir");
    let (seen, sink) = recorder();
    let downloader = Downloader::new(session_at(&proxy.url(), &user), options());
    let done = downloader
        .download_artifact(artifact, dir.path(), Some(sink))
        .await
        .expect("the download completes after a refetch");
    assert!(proxy.corrupted(), "the proxy did corrupt a byte");
    let verifications = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|p| p.phase == Phase::Verifying)
        .count();
    assert!(
        verifications >= 2,
        "the corrupted copy failed verification and a second copy was checked ({verifications})"
    );
    let written = std::fs::read(&done[0].path).expect("file");
    assert_eq!(
        written, bytes,
        "the file in place is the uncorrupted adapter"
    );
}

#[tokio::test]
async fn an_interrupted_download_resumes_from_the_part_file() {
    let user = mint_user(stack(), "dl-resume").await;
    let (artifact, bytes) = stored_adapter(&user, "adapter_model.safetensors", 2 << 20, None).await;
    let proxy = FaultProxy::start(&stack().url).await;
    let dir = tempfile::tempdir().expect("tempdir");
    proxy.hold_after(Direction::Down, 1 << 20);
    let first = Downloader::new(session_at(&proxy.url(), &user), options());
    let (sink, mut moved, _) = moving_sink();
    tokio::select! {
        result = first.download_artifact(artifact, dir.path(), Some(sink)) => {
            panic!("the held download cannot finish: {result:?}")
        }
        () = async {
            moved.wait_for(|&m| m).await.expect("progress sender lives");
            proxy.wait_held().await;
        } => {}
    }
    drop(first);
    proxy.open_gate();
    let part = dir.path().join("adapter_model.safetensors.part");
    let kept = std::fs::metadata(&part)
        .expect("a .part file is left")
        .len();
    assert!(kept > 0, "the .part file holds what arrived");
    assert!(
        !dir.path().join("adapter_model.safetensors").exists(),
        "nothing unverified is in place"
    );

    let done = Downloader::new(session_at(&proxy.url(), &user), options())
        .download_artifact(artifact, dir.path(), None)
        .await
        .expect("the resumed download completes");
    // Progress counts only flushed bytes, so `kept` is on disk; a write the dropped future had
    // already handed to the blocking pool may still land after it was read (a killed process
    // would not), so the resume point is at least `kept`.
    assert!(
        done[0].resumed_from >= kept,
        "the second run asked only for the bytes after the .part file ({} vs {kept})",
        done[0].resumed_from
    );
    assert_eq!(
        std::fs::read(&done[0].path).expect("file"),
        bytes,
        "the adapter"
    );
}

#[tokio::test]
async fn hostile_names_write_nothing_outside_the_folder() {
    let user = mint_user(stack(), "dl-names").await;
    let sandbox = tempfile::tempdir().expect("tempdir");
    let target = sandbox.path().join("a").join("b").join("models");
    let downloader = Downloader::new(session_at(&stack().url, &user), options());
    for (i, name) in ["../../x", "/tmp/../../abs", "..\\..\\win"]
        .iter()
        .enumerate()
    {
        let (artifact, bytes) = stored_adapter(&user, name, 1000 + i, None).await;
        let done = downloader
            .download_artifact(artifact, &target, None)
            .await
            .expect("a hostile name is made safe");
        assert_eq!(
            done[0].path.parent(),
            Some(std::fs::canonicalize(&target).expect("target").as_path()),
            "{name:?} lands directly in the folder"
        );
        assert_eq!(
            std::fs::read(&done[0].path).expect("file"),
            bytes,
            "its bytes"
        );
    }
    let (artifact, _) = stored_adapter(&user, "..", 10, None).await;
    let error = downloader
        .download_artifact(artifact, &target, None)
        .await
        .expect_err("`..` is no file name");
    assert!(
        matches!(error, brightrun_client::Error::UnsafeName(_)),
        "refused as unsafe: {error:?}"
    );
    assert_eq!(
        tree(sandbox.path()),
        ["a/b/models/abs", "a/b/models/win", "a/b/models/x"],
        "every file is inside the folder and nothing else was written"
    );
}

#[tokio::test]
async fn a_wrong_recorded_digest_leaves_nothing_in_place() {
    let user = mint_user(stack(), "dl-digest").await;
    let (artifact, _) = stored_adapter(
        &user,
        "adapter_model.safetensors",
        4096,
        Some("00".repeat(32)),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let error = Downloader::new(session_at(&stack().url, &user), options())
        .download_artifact(artifact, dir.path(), None)
        .await
        .expect_err("the digest never matches");
    assert!(
        matches!(error, brightrun_client::Error::DigestMismatch { .. }),
        "a digest mismatch: {error:?}"
    );
    assert!(tree(dir.path()).is_empty(), "no file, no .part is left");

    let unverifiable = brightrun_core::ArtifactFile {
        name: "x.bin".into(),
        path: format!("{}/none/x.bin", user.id),
        size: None,
        sha256: None,
        content_type: None,
    };
    let error = Downloader::new(session_at(&stack().url, &user), options())
        .download_file("lora-models", &unverifiable, dir.path(), None)
        .await
        .expect_err("no digest, no download");
    assert!(
        matches!(error, brightrun_client::Error::NoDigest(_)),
        "refused for lack of a digest: {error:?}"
    );
}
