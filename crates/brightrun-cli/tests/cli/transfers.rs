//! `brightrun datasets upload` and `brightrun models download` killed mid-transfer ten times
//! and started again: they always finish, with one dataset row and the exact bytes.
//!
//! The proxy's gate holds the transfer after a growing number of bytes; the process is killed
//! once its progress line shows bytes moving and the proxy shows the gate reached, so every
//! kill lands mid-transfer without any sleep.

use tokio::io::BufReader;

use crate::support::*;
use brightrun_stack::testing::mint_user;
use brightrun_stack::testing::{Direction, FaultProxy};

const KILLS: usize = 10;

#[tokio::test]
async fn upload_survives_ten_kills_with_one_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "killed.jsonl", 3 << 20);
    let file_arg = file.to_str().expect("utf-8 path");
    let user = mint_user(stack(), "cli-upload-kills").await;
    let proxy = FaultProxy::start(&stack().url).await;
    let args = [
        "datasets",
        "upload",
        file_arg,
        "--json",
        "--progress",
        "json",
        "--chunk-size",
        "262144",
    ];

    let mut gate = 0;
    let mut resumed = Vec::new();
    for _ in 0..KILLS {
        gate += 280 * 1024;
        proxy.hold_after(Direction::Up, gate);
        let mut child = brightrun(&proxy.url(), &user, dir.path(), &args)
            .spawn()
            .expect("start brightrun");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let moved = bytes_moved(&mut stderr)
            .await
            .expect("the upload reports bytes moving before it is killed");
        proxy.wait_held().await;
        child.start_kill().expect("kill brightrun");
        child.wait().await.expect("reap brightrun");
        resumed.push(moved.resumed_from);
    }
    proxy.open_gate();
    let child = brightrun(&proxy.url(), &user, dir.path(), &args)
        .spawn()
        .expect("start brightrun");
    let (status, json, output) = finish(child).await;
    assert!(status.success(), "the last run completes: {output}");

    assert_eq!(resumed[0], 0, "the first run starts at 0");
    assert!(
        resumed.windows(2).all(|w| w[1] >= w[0]) && resumed[KILLS - 1] > 0,
        "every restart resumed where the server was, never from 0: {resumed:?}"
    );
    assert!(
        json["resumed_from"]
            .as_u64()
            .is_some_and(|n| n >= resumed[KILLS - 1]),
        "the final run resumed too: {output}"
    );
    let rows = dataset_rows(user.id).await;
    assert_eq!(
        rows.len(),
        1,
        "ten kills, still exactly one dataset row: {rows:?}"
    );
    assert_eq!(
        json["dataset_id"].as_str(),
        Some(rows[0].0.to_string().as_str()),
        "the result names that row"
    );
    assert_eq!(rows[0].1, "validating", "the upload was confirmed");
    let stored = stack().object("lora-datasets", &rows[0].2).await;
    assert_eq!(
        sha256_hex(&stored),
        sha256_hex(&std::fs::read(&file).expect("file")),
        "the stored object is the file"
    );
}

#[tokio::test]
async fn download_survives_ten_kills_and_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("models");
    let user = mint_user(stack(), "cli-download-kills").await;
    let bytes = adapter_bytes(3 << 20, 99);
    let artifact = stored_artifact(&user, "adapter_model.safetensors", &bytes).await;
    let proxy = FaultProxy::start(&stack().url).await;
    let artifact_arg = artifact.to_string();
    let args = [
        "models",
        "download",
        artifact_arg.as_str(),
        "--to",
        target.to_str().expect("utf-8 path"),
        "--json",
        "--progress",
        "json",
    ];
    let part = target.join("adapter_model.safetensors.part");

    let mut gate = 0;
    let mut resumed = Vec::new();
    for _ in 0..KILLS {
        gate += 300 * 1024;
        proxy.hold_after(Direction::Down, gate);
        let mut child = brightrun(&proxy.url(), &user, dir.path(), &args)
            .spawn()
            .expect("start brightrun");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let moved = bytes_moved(&mut stderr)
            .await
            .expect("the download reports bytes moving before it is killed");
        proxy.wait_held().await;
        child.start_kill().expect("kill brightrun");
        child.wait().await.expect("reap brightrun");
        resumed.push(moved.resumed_from);
        assert!(
            !target.join("adapter_model.safetensors").exists(),
            "nothing unverified is ever in place"
        );
    }
    let kept = std::fs::metadata(&part).expect(".part is kept").len();
    proxy.open_gate();
    let child = brightrun(&proxy.url(), &user, dir.path(), &args)
        .spawn()
        .expect("start brightrun");
    let (status, json, output) = finish(child).await;
    assert!(status.success(), "the last run completes: {output}");
    assert_eq!(resumed[0], 0, "the first run starts at 0");
    assert!(
        resumed.windows(2).all(|w| w[1] >= w[0]) && resumed[KILLS - 1] > 0,
        "every restart resumed from the .part file: {resumed:?}"
    );
    assert_eq!(
        json[0]["resumed_from"].as_u64(),
        Some(kept),
        "the final run asked only for what the .part file lacked: {output}"
    );
    assert_eq!(
        json[0]["verified"], true,
        "verified against the recorded SHA-256"
    );
    let written = std::fs::read(target.join("adapter_model.safetensors")).expect("file");
    assert_eq!(
        sha256_hex(&written),
        sha256_hex(&bytes),
        "the file is the adapter"
    );
    assert!(!part.exists(), "the .part file is gone");
}
