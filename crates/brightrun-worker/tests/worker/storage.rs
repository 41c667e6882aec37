//! The worker's artifact uploads against cut connections: small files are re-sent whole, large
//! ones resume over TUS from the offset the server confirms.

use std::sync::Arc;
use std::time::Duration;

use brightrun_supabase::storage::UploadOptions;
use brightrun_supabase::{RetryPolicy, Secret, Storage};
use rand::{RngCore as _, SeedableRng as _};

use crate::support::*;
use brightrun_stack::testing::{Direction, FaultProxy};

const MIB: u64 = 1024 * 1024;

fn policy(retries: u32) -> UploadOptions {
    let mut options = UploadOptions::default();
    options.tus.retry = RetryPolicy {
        max_retries: retries,
        base: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::transfers()
    };
    options
}

/// The worker's Storage client (the service_role key) through `proxy`.
fn storage_via(proxy: &FaultProxy) -> Storage {
    let key = Secret::new(st().service_role_key.clone());
    Storage::new(
        reqwest::Client::new(),
        &proxy.url().parse().expect("proxy URL"),
        key.clone(),
        Arc::new(key),
    )
}

fn random_file(dir: &std::path::Path, size: u64, seed: u64) -> std::path::PathBuf {
    let mut bytes = vec![0u8; size as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let path = dir.join(format!("adapter-{seed}.safetensors"));
    std::fs::write(&path, &bytes).expect("write test file");
    path
}

fn object_path(tag: &str) -> String {
    format!(
        "{}/{}/attempt-1/{tag}.safetensors",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    )
}

#[tokio::test]
async fn a_large_adapter_resumes_over_tus_after_cut_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 64 * MIB + 12_345;
    let file = random_file(dir.path(), size, 7);
    let proxy = FaultProxy::start(&st().url).await;
    // Each connection is cut after 20–26 MiB: in the fourth chunk or later, so that starting
    // over would cost at least 20 MiB per cut.
    proxy.cut_connections(3, Direction::Up, 20 * MIB, 26 * MIB, 11);
    let path = object_path("large");

    let uploaded = storage_via(&proxy)
        .upload_file(
            "lora-models",
            &path,
            &file,
            "application/octet-stream",
            &policy(6),
        )
        .await
        .expect("the upload survives the cuts");

    // How many of the planned cuts land depends on how the chunks fall on connections (a
    // connection that ends early is not cut); at least two always do.
    let cuts = proxy.cuts_done();
    assert!(cuts >= 2, "the upload was cut {cuts} times");
    let stored = download("lora-models", &path).await;
    let local = std::fs::read(&file).expect("read back");
    assert_eq!(stored.len() as u64, size, "whole object stored");
    assert!(stored == local, "stored bytes are the file's bytes");
    assert_eq!(uploaded.size, size);
    assert_eq!(
        uploaded.sha256,
        sha256_hex(&stored),
        "recorded SHA-256 is the object's"
    );
    // Resumed, not restarted: a cut costs at most two chunks (12 MiB) — the one in flight (often
    // nothing, when the server kept the bytes that arrived), and one PATCH refused with 409 when
    // the HEAD after the cut ran before the server had let go of the cut request, whose body the
    // server drains — while starting over would re-send at least the 20 MiB before each cut.
    let sent = proxy.forwarded(Direction::Up);
    assert!(
        sent < size + u64::from(cuts) * 12 * MIB + 64 * 1024,
        "{sent} bytes sent for a {size}-byte file with {cuts} cuts"
    );
}

#[tokio::test]
async fn a_small_file_is_sent_again_whole_after_a_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 300 * 1024;
    let file = random_file(dir.path(), size, 8);
    let proxy = FaultProxy::start(&st().url).await;
    proxy.cut_connections(2, Direction::Up, 10 * 1024, 200 * 1024, 12);
    let path = object_path("small");

    let uploaded = storage_via(&proxy)
        .upload_file(
            "lora-models",
            &path,
            &file,
            "application/octet-stream",
            &policy(4),
        )
        .await
        .expect("the upload survives the cuts");

    assert_eq!(proxy.cuts_done(), 2, "both cuts happened");
    let stored = download("lora-models", &path).await;
    assert!(
        stored == std::fs::read(&file).expect("read back"),
        "bytes intact"
    );
    assert_eq!(uploaded.sha256, sha256_hex(&stored));
}

#[tokio::test]
async fn an_upload_cut_every_time_gives_up_with_a_retryable_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = random_file(dir.path(), 8 * MIB, 9);
    let proxy = FaultProxy::start(&st().url).await;
    // Every connection is cut inside the request head, so no request ever reaches the server.
    // (Cuts inside a PATCH body would not do: the server keeps the bytes that arrived, and that
    // progress rightly resets the count.)
    proxy.cut_connections(1000, Direction::Up, 1, 64, 13);
    let path = object_path("hopeless");

    let err = storage_via(&proxy)
        .upload_file(
            "lora-models",
            &path,
            &file,
            "application/octet-stream",
            &policy(3),
        )
        .await
        .expect_err("no upload can finish");

    assert!(
        err.is_retryable(),
        "a network failure, retryable later: {err}"
    );
    let cuts = proxy.cuts_done();
    assert!(
        cuts == 4,
        "gave up after 1 try + 3 retries, not before or long after: {cuts} cuts"
    );
}
