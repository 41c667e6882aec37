//! Test support for the crates that test against a real stack through this client (feature
//! `testing`): sessions with a minted user's token, optionally behind a proxy; an [`App`] on a
//! fresh data directory; dataset files; progress sinks; fast retry schedules. Server-side
//! fixtures are `brightrun_stack::testing`'s.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brightrun_stack::testing::{TestStack, TestUser};
use uuid::Uuid;

use crate::app::{App, AppConfig, Keychain, Retries};
use crate::config::{BuildChannel, Project};
use crate::local::LocalDb;
use crate::retry::RetryPolicy;
use crate::secret::Secret;
use crate::session::Session;
use crate::transfer::{Phase, Progress, ProgressFn, UploadStateStore};

pub fn stack() -> &'static TestStack {
    brightrun_stack::testing::stack()
}

/// The project at `url` (the stack, or a proxy in front of it) with the stack's anon key.
pub fn project_at(url: &str) -> Project {
    Project {
        url: url.parse().expect("the URL parses"),
        anon_key: stack().anon_key.clone(),
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// A user's session with a fixed token, talking to `url`.
pub fn session_at(url: &str, user: &TestUser) -> Arc<Session> {
    Session::with_static_token(
        project_at(url),
        http(),
        user.id,
        Secret::new(user.access_token.clone()),
    )
}

/// An [`App`] for the project at `url` with its data in `dir` and the refresh token in memory;
/// signed in as `user` with a fixed token when one is given.
pub async fn app_at(url: &str, dir: &Path, user: Option<&TestUser>) -> App {
    let config = AppConfig {
        url: url.parse().expect("the URL parses"),
        anon_key: Some(stack().anon_key.clone()),
        data_dir: dir.to_owned(),
        channel: BuildChannel::Dev,
        keychain: Keychain::Memory,
        static_token: user.map(|u| (u.id, Secret::new(u.access_token.clone()))),
        retry: Retries {
            requests: fast_retry(),
            transfers: fast_retry(),
        },
    };
    App::open(config).await.expect("the app opens")
}

/// The upload table of a fresh local database in `dir`.
pub async fn local_store(dir: &Path) -> UploadStateStore {
    let db = LocalDb::open(&dir.join("local.db"))
        .await
        .expect("local db opens");
    UploadStateStore::from_local(&db)
}

/// A valid v4 dataset of about `bytes` bytes, unique to this call.
pub fn dataset_file(dir: &Path, name: &str, bytes: usize) -> PathBuf {
    let tag = Uuid::new_v4().simple().to_string();
    let mut out = String::with_capacity(bytes + 512);
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"user\", \"content\": \"Question {i} ({tag}): what is {i} plus {i}?\"}}, {{\"role\": \"assistant\", \"content\": \"{i} plus {i} is {}. Padding to make the line longer: lorem ipsum dolor sit amet.\"}}]}}\n",
            2 * i
        ));
        i += 1;
    }
    let path = dir.join(name);
    std::fs::write(&path, out).expect("write dataset");
    path
}

/// The user's dataset rows, oldest first: `(id, status, storage_path)`.
pub async fn dataset_rows(user: Uuid) -> Vec<(Uuid, String, String)> {
    let db = stack().db().await;
    let rows = brightrun_stack::testing::dataset_rows(&db, user).await;
    db.close().await;
    rows
}

/// A completed job of `user` with a `model_artifacts` row whose `artifacts` is `artifacts`.
/// Returns `(job id, artifact id)`.
pub async fn artifact_row(user: &TestUser, artifacts: serde_json::Value) -> (Uuid, Uuid) {
    let db = stack().db().await;
    let ids = brightrun_stack::testing::artifact_row(&db, user.id, artifacts).await;
    db.close().await;
    ids
}

pub fn file_sha256(path: &Path) -> String {
    brightrun_stack::testing::sha256_hex(&std::fs::read(path).expect("read file"))
}

/// Deterministic pseudo-random bytes (an "adapter").
pub fn adapter_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A progress sink that records every report and flags when bytes move in this run
/// (`Transferring`, past where the run started).
pub fn moving_sink() -> (
    ProgressFn,
    tokio::sync::watch::Receiver<bool>,
    Arc<Mutex<Vec<Progress>>>,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = {
        let seen = seen.clone();
        Arc::new(move |p: &Progress| {
            if p.phase == Phase::Transferring && p.bytes > p.resumed_from {
                tx.send_replace(true);
            }
            seen.lock().expect("lock").push(p.clone());
        }) as ProgressFn
    };
    (sink, rx, seen)
}

/// Short delays for tests against a local server.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 12,
        base: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        total_timeout: Duration::from_millis(200),
    }
}
