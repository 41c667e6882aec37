//! One failure, one code, on every path: the same refusal through REST (a list), an upload (the
//! TUS creation) and a download (the signed GET) reaches the front end as the same wire error.
//! Failures the stack produces only under load (429, 503) or that need another user's state
//! (403, 409, 413, 415 on a chosen step) are answered by an [`AnswerProxy`] in the server's
//! own shapes; offline, a refused token and a missing keychain are real.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brightrun_client::app::{App, CancellationToken, Refresh, datasets, models};
use brightrun_client::local::LocalDb;
use brightrun_client::secret::{Secret, SecretStore};
use brightrun_client::testing::*;
use brightrun_client::{Error, ErrorCode, WireError};
use brightrun_stack::testing::{Answer, AnswerProxy, TestUser, mint_user, sha256_hex};
use serde_json::json;
use uuid::Uuid;

/// The three paths, each through the app layer as a front end calls it.
#[derive(Debug, Clone, Copy)]
enum Path3 {
    Rest,
    Upload,
    Download,
}

const PATHS: [Path3; 3] = [Path3::Rest, Path3::Upload, Path3::Download];

struct Fixture {
    user: TestUser,
    artifact: Uuid,
    file: std::path::PathBuf,
}

async fn fixture(dir: &Path, tag: &str) -> Fixture {
    let user = mint_user(stack(), tag).await;
    let bytes = adapter_bytes(64 * 1024, 3);
    let path = format!("{}/{}/adapter_model.safetensors", user.id, Uuid::new_v4());
    stack()
        .put_object(
            "lora-models",
            &path,
            bytes.clone(),
            "application/octet-stream",
        )
        .await;
    let (_, artifact) = artifact_row(
        &user,
        json!({"files": [{"name": "adapter_model.safetensors", "path": path,
                          "size": bytes.len(), "sha256": sha256_hex(&bytes)}]}),
    )
    .await;
    let file = dataset_file(dir, &format!("{tag}.jsonl"), 16 * 1024);
    Fixture {
        user,
        artifact,
        file,
    }
}

/// Runs `path` as the front end would and returns its error.
async fn fail(app: &App, path: Path3, fixture: &Fixture, dir: &Path) -> Error {
    let cancel = CancellationToken::new();
    match path {
        Path3::Rest => datasets::list(app, datasets::ListDatasets::default())
            .await
            .map(|_| ()),
        Path3::Upload => datasets::upload(
            app,
            datasets::UploadDataset {
                path: fixture.file.clone(),
                name: None,
                description: None,
                new: true,
                structural: None,
                chunk_size: None,
            },
            None,
            &cancel,
        )
        .await
        .map(|_| ()),
        Path3::Download => models::download(
            app,
            models::DownloadModel {
                id: fixture.artifact,
                to: Some(dir.join(format!("model-{}", Uuid::new_v4()))),
                allow_unverified: false,
                segment_threshold: None,
            },
            None,
            &cancel,
        )
        .await
        .map(|_| ()),
    }
    .expect_err("the path fails")
}

/// Where each path meets the injected failure.
fn target(path: Path3) -> (&'static str, &'static str) {
    match path {
        Path3::Rest => ("GET", "/rest/v1/datasets"),
        Path3::Upload => ("POST", "/storage/v1/upload/resumable"),
        Path3::Download => ("GET", "/storage/v1/object/sign/lora-models"),
    }
}

#[tokio::test]
async fn the_same_failure_has_the_same_code_on_every_path() {
    // (what, REST's answer, TUS's answer, Storage's answer, code, retryable)
    let table: Vec<(&str, Answer, Answer, Answer, ErrorCode, bool)> = vec![
        (
            "403 policy",
            Answer::rest(403, "42501", "permission denied for table datasets"),
            Answer::tus(403, "new row violates row-level security policy"),
            Answer::storage(403, "AccessDenied", "Unauthorized", "Access denied"),
            ErrorCode::Forbidden,
            false,
        ),
        (
            "404",
            Answer::rest(
                404,
                "PGRST205",
                "Could not find the table 'public.datasets'",
            ),
            Answer::tus(404, "The file for this url was not found"),
            Answer::storage(404, "NoSuchKey", "not_found", "Object not found"),
            ErrorCode::NotFound,
            false,
        ),
        (
            "409",
            Answer::rest(
                409,
                "23505",
                "duplicate key value violates unique constraint",
            ),
            Answer::tus(409, "The resource already exists"),
            Answer::storage(
                409,
                "KeyAlreadyExists",
                "Duplicate",
                "The resource already exists",
            ),
            ErrorCode::Conflict,
            false,
        ),
        (
            "413",
            Answer::rest(413, "", "Payload Too Large"),
            Answer::tus(413, "Maximum size exceeded"),
            Answer::storage(
                413,
                "EntityTooLarge",
                "Payload too large",
                "The object exceeded the maximum allowed size",
            ),
            ErrorCode::TooLarge,
            false,
        ),
        (
            "415",
            Answer::rest(415, "", "Unsupported Media Type"),
            Answer::tus(415, "mime type image/png is not supported"),
            Answer::storage(
                415,
                "InvalidMimeType",
                "invalid_mime_type",
                "mime type image/png is not supported",
            ),
            ErrorCode::UnsupportedType,
            false,
        ),
        (
            "429 with Retry-After",
            Answer::rest(429, "", "Too Many Requests").retry_after(1),
            Answer::tus(429, "Too Many Requests").retry_after(1),
            Answer::storage(429, "SlowDown", "Too Many Requests", "Please slow down")
                .retry_after(1),
            ErrorCode::RateLimited,
            true,
        ),
        (
            "503",
            Answer::rest(503, "PGRST000", "Could not connect with the database"),
            Answer::tus(503, "Service Unavailable"),
            Answer::storage(
                503,
                "DatabaseError",
                "Service Unavailable",
                "database unavailable",
            ),
            ErrorCode::Server,
            true,
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = fixture(dir.path(), "errors-table").await;
    let proxy = AnswerProxy::start(&stack().url).await;
    let app = app_at(&proxy.url(), &dir.path().join("app"), Some(&fixture.user)).await;
    for (what, rest, tus, storage, code, retryable) in table {
        for path in PATHS {
            let answer = match path {
                Path3::Rest => rest.clone(),
                Path3::Upload => tus.clone(),
                Path3::Download => storage.clone(),
            };
            let (method, prefix) = target(path);
            proxy.clear();
            proxy.answer(method, prefix, answer, None);
            let error = fail(&app, path, &fixture, dir.path()).await;
            let wire = WireError::from(&error);
            assert_eq!(wire.code, code, "{what} via {path:?}: {error:?}");
            assert_eq!(
                wire.retryable, retryable,
                "{what} via {path:?} retryable: {error:?}"
            );
            assert!(proxy.answered() > 0, "{what} via {path:?} met the failure");
            if what.starts_with("429") {
                assert_eq!(
                    error.retry_after(),
                    Some(Duration::from_secs(1)),
                    "{what} via {path:?} keeps the server's Retry-After"
                );
            }
        }
    }
    proxy.clear();
}

#[tokio::test]
async fn offline_and_a_refused_token_have_the_same_code_on_every_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = fixture(dir.path(), "errors-real").await;

    // Offline: nothing listens where the project is.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let offline = app_at(&closed, &dir.path().join("offline"), Some(&fixture.user)).await;
    // A token the server refuses: signed with another secret.
    let mut forged = fixture.user.clone();
    forged.access_token = format!("{}x", fixture.user.access_token);
    let refused = app_at(&stack().url, &dir.path().join("refused"), Some(&forged)).await;
    for path in PATHS {
        let error = fail(&offline, path, &fixture, dir.path()).await;
        assert_eq!(
            error.code(),
            ErrorCode::Offline,
            "offline via {path:?}: {error:?}"
        );
        assert!(error.is_retryable(), "offline via {path:?} may pass");
        let error = fail(&refused, path, &fixture, dir.path()).await;
        assert_eq!(
            error.code(),
            ErrorCode::AuthExpired,
            "a refused token via {path:?}: {error:?}"
        );
    }
}

/// A keychain that cannot be used (no Secret Service running, say).
#[derive(Debug)]
struct NoKeychain;

impl SecretStore for NoKeychain {
    fn load(&self) -> brightrun_client::Result<Option<Secret>> {
        Err(Error::Keychain(
            "org.freedesktop.secrets was not provided by any .service files".into(),
        ))
    }
    fn store(&self, _: &Secret) -> brightrun_client::Result<()> {
        self.load().map(|_| ())
    }
    fn delete(&self) -> brightrun_client::Result<()> {
        self.load().map(|_| ())
    }
}

#[tokio::test]
async fn a_missing_keychain_has_the_same_code_on_every_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = fixture(dir.path(), "errors-keychain").await;
    // The session would come from the keychain: no fixed token.
    let mut config = app_at(&stack().url, &dir.path().join("a"), None)
        .await
        .config()
        .clone();
    config.data_dir = dir.path().join("keychain");
    let db = LocalDb::open(&config.database_path()).await.expect("db");
    let app = App::with_store(config, db, Arc::new(NoKeychain)).expect("app");
    for path in PATHS {
        let error = fail(&app, path, &fixture, dir.path()).await;
        let wire = error.to_wire();
        assert_eq!(
            wire.code,
            ErrorCode::KeychainUnavailable,
            "no keychain via {path:?}: {error:?}"
        );
        assert!(
            wire.hint.as_deref().is_some_and(|h| h.contains("keychain")),
            "says what to do: {wire:?}"
        );
    }
    let cached = datasets::list(
        &app,
        datasets::ListDatasets {
            refresh: Refresh::Cache,
            ..Default::default()
        },
    )
    .await
    .expect_err("no session without a keychain");
    assert_eq!(cached.code(), ErrorCode::KeychainUnavailable, "{cached:?}");
}
