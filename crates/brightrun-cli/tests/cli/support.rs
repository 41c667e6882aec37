//! Running `brightrun` as a child process pointed at the stack (or a proxy) with a user's token,
//! and reading its JSON progress lines. Stack-side fixtures come from the client's transfer tests.

use std::path::Path;
use std::process::Stdio;

use brightrun_stack::testing::TestUser;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use uuid::Uuid;

pub use brightrun_client::testing::{
    adapter_bytes, artifact_row, dataset_file, dataset_rows, http, stack,
};
pub use brightrun_stack::testing::sha256_hex;

/// `brightrun <args>` against `url` as `user`, with its local database in `data_dir`.
pub fn brightrun(url: &str, user: &TestUser, data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brightrun"));
    command
        .args(args)
        .env("BRIGHTRUN_URL", url)
        .env("BRIGHTRUN_ANON_KEY", &stack().anon_key)
        .env("BRIGHTRUN_DATA_DIR", data_dir)
        .env("BRIGHTRUN_ACCESS_TOKEN", &user.access_token)
        .env("BRIGHTRUN_USER_ID", user.id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// One `--progress json` line.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ProgressLine {
    pub phase: String,
    pub bytes: u64,
    pub resumed_from: u64,
}

/// Reads progress lines until one shows bytes moving in this run (`transferring`, past where
/// it started). Returns it, or `None` if the process ended first.
pub async fn bytes_moved(stderr: &mut BufReader<ChildStderr>) -> Option<ProgressLine> {
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(progress) = value.get("progress") else {
            continue;
        };
        let Ok(p) = serde_json::from_value::<ProgressLine>(progress.clone()) else {
            continue;
        };
        if p.phase == "transferring" && p.bytes > p.resumed_from {
            return Some(p);
        }
    }
}

/// Waits for the child and returns its stdout as JSON (the `--json` result).
pub async fn finish(child: Child) -> (std::process::ExitStatus, serde_json::Value, String) {
    let output = child.wait_with_output().await.expect("wait for brightrun");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (
        output.status,
        json,
        format!("stdout: {stdout}\nstderr: {stderr}"),
    )
}

/// Stores an adapter in lora-models (service_role) with a completed job and an artifact row
/// listing it with its SHA-256. Returns the artifact id.
pub async fn stored_artifact(user: &TestUser, name: &str, bytes: &[u8]) -> Uuid {
    let path = format!("{}/{}/{name}", user.id, Uuid::new_v4());
    stack()
        .put_object(
            "lora-models",
            &path,
            bytes.to_vec(),
            "application/octet-stream",
        )
        .await;
    let artifacts = serde_json::json!({"files": [
        {"name": name, "path": path, "size": bytes.len(), "sha256": sha256_hex(bytes)}
    ]});
    artifact_row(user, artifacts).await.1
}
