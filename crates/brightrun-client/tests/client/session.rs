//! Sign-in, restore, the refresh cache and sign-out against the real stack; the refresh token in a
//! real Secret Service keychain.

use std::io::Write;
use std::sync::{Arc, Mutex};

use brightrun_client::error::ErrorCode;
use brightrun_client::local::{LocalDb, alert_key};
use brightrun_client::secret::{KeychainStore, MemoryStore, SecretStore};
use brightrun_client::session::Session;
use brightrun_client::{BuildChannel, Error, Secret};
use brightrun_core::JobStatus;
use uuid::Uuid;

use crate::support::{self, PASSWORD, db, http, project, quick_options, signed_in, stored_token};

/// The caller's user as `/auth/v1/user` sees it with this token: proves the token is live.
async fn user_id_from_auth(token: &Secret) -> Result<Uuid, u16> {
    let response = http()
        .get(support::stack().auth("user"))
        .header("apikey", &support::stack().anon_key)
        .bearer_auth(token.expose())
        .send()
        .await
        .expect("request /user");
    if !response.status().is_success() {
        return Err(response.status().as_u16());
    }
    let user: serde_json::Value = response.json().await.expect("user JSON");
    Ok(user["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("user id"))
}

async fn refresh_tokens_of(session_id: Uuid) -> (i64, i64) {
    let db = db().await;
    let counts: (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where revoked) from auth.refresh_tokens where session_id = $1",
    )
    .bind(session_id)
    .fetch_one(&db)
    .await
    .expect("count refresh tokens");
    db.close().await;
    counts
}

#[tokio::test]
async fn sign_in_restore_and_sign_out() {
    let (session, store) = signed_in("session-cycle").await;
    let first_refresh_token = stored_token(&store);
    let token = session.access_token().await.expect("a fresh access token");
    assert_eq!(
        user_id_from_auth(&token).await,
        Ok(session.user_id()),
        "the access token is the signed-in user's"
    );
    assert!(
        session
            .email()
            .is_some_and(|e| e.starts_with("session-cycle-")),
        "the email comes from the server: {:?}",
        session.email()
    );
    assert_eq!(
        session.refresh_count(),
        0,
        "a fresh sign-in needs no refresh"
    );

    // A second start of the app: the stored refresh token brings the session back.
    let restored = Session::restore_with(quick_options(), project(), store.clone(), http())
        .await
        .expect("restore")
        .expect("the stored session is alive");
    assert_eq!(
        restored.user_id(),
        session.user_id(),
        "the same user comes back"
    );
    assert_ne!(
        stored_token(&store),
        first_refresh_token,
        "restoring rotated the refresh token and stored the new one"
    );
    let restored_token = restored.access_token().await.expect("token");
    assert_eq!(
        user_id_from_auth(&restored_token).await,
        Ok(session.user_id()),
        "the restored access token works"
    );

    restored.sign_out().await.expect("sign out");
    assert_eq!(
        store.load().expect("load"),
        None,
        "sign-out deletes the stored refresh token"
    );
    assert!(
        matches!(restored.access_token().await, Err(Error::SignedOut)),
        "no access token after sign-out"
    );
    assert_eq!(
        user_id_from_auth(&restored_token).await,
        Err(403),
        "the server session is revoked: GoTrue refuses its access token"
    );
    let again = Session::restore_with(quick_options(), project(), store.clone(), http())
        .await
        .expect("restore after sign-out is not an error");
    assert!(again.is_none(), "nothing to restore after sign-out");
}

#[tokio::test]
async fn wrong_password_is_a_validation_error_and_stores_nothing() {
    let email = support::sign_up("wrong-password").await;
    let store = Arc::new(MemoryStore::new());
    let error = Session::sign_in_with(
        quick_options(),
        project(),
        store.clone(),
        http(),
        &email,
        &Secret::new("not the password"),
    )
    .await
    .expect_err("a wrong password is refused");
    assert_eq!(
        error.code(),
        ErrorCode::ValidationFailed,
        "invalid credentials: {error}"
    );
    assert_eq!(
        error.api().map(|a| a.code.as_str()),
        Some("invalid_credentials"),
        "GoTrue's code is kept"
    );
    assert_eq!(
        store.load().expect("load"),
        None,
        "nothing stored on failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_access_tokens_straddling_expiry_refresh_once() {
    let (session, store) = signed_in("stampede").await;
    let before = session.access_token().await.expect("token");
    let first_refresh = stored_token(&store);
    let session_id = support::session_id_of(&before);
    assert_eq!(
        refresh_tokens_of(session_id).await,
        (1, 0),
        "sign-in made one refresh token"
    );

    // The token expires: the server would now refuse it, and every caller must refresh.
    session.reject_access_token(&before).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let session = session.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                session.access_token().await
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for task in tasks {
        tokens.push(
            task.await
                .expect("task")
                .expect("every caller gets a token, no error"),
        );
    }
    assert_eq!(
        session.refresh_count(),
        1,
        "20 concurrent callers caused exactly one refresh"
    );
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "all callers got the one refreshed token"
    );
    // (The new access token may be byte-identical to the old one: GoTrue's claims have 1 s
    // resolution. The rotation of the refresh token is what proves the refresh.)
    assert_ne!(
        stored_token(&store),
        first_refresh,
        "the rotated refresh token was stored"
    );
    assert_eq!(
        refresh_tokens_of(session_id).await,
        (2, 1),
        "the server saw one rotation: one new refresh token, the old one revoked"
    );
    assert_eq!(
        support::session_id_of(&tokens[0]),
        session_id,
        "the refresh kept the same server session"
    );
    assert_eq!(
        user_id_from_auth(&tokens[0]).await,
        Ok(session.user_id()),
        "the refreshed token works"
    );
    // Fresh again: more callers need no refresh.
    for _ in 0..5 {
        session.access_token().await.expect("token");
    }
    assert_eq!(
        session.refresh_count(),
        1,
        "a fresh token is served from memory"
    );
    assert_eq!(
        refresh_tokens_of(support::session_id_of(&tokens[0]))
            .await
            .0,
        2,
        "and the server saw no further refresh"
    );
}

#[tokio::test]
async fn restore_offline_is_an_error_not_a_sign_out() {
    let (session, store) = signed_in("restore-offline").await;
    let token = stored_token(&store);
    // Port 1: nothing listens, the connection is refused.
    let offline = support::project_at("http://127.0.0.1:1");
    let error = Session::restore_with(quick_options(), offline, store.clone(), http())
        .await
        .expect_err("restoring without a server fails");
    assert_eq!(
        error.code(),
        ErrorCode::Offline,
        "offline, not signed out: {error}"
    );
    assert_eq!(
        store.load().expect("load"),
        Some(token),
        "the refresh token is kept for when the network is back"
    );
    // And when the network is back, the same token restores the session.
    let restored = Session::restore_with(quick_options(), project(), store.clone(), http())
        .await
        .expect("restore")
        .expect("alive");
    assert_eq!(restored.user_id(), session.user_id(), "same user");
}

#[tokio::test]
async fn restore_with_a_refused_token_signs_out_and_forgets_it() {
    let (session, store) = signed_in("restore-revoked").await;
    session.sign_out().await.expect("sign out");
    // An older copy of the token, as a second app instance might still hold.
    let stale_store = Arc::new(MemoryStore::with_token(Secret::new("abcdefghijkl")));
    let restored = Session::restore_with(quick_options(), project(), stale_store.clone(), http())
        .await
        .expect("a refused token is not an error");
    assert!(restored.is_none(), "a refused token means signed out");
    assert_eq!(
        stale_store.load().expect("load"),
        None,
        "the refused token is deleted"
    );
    drop(store);
}

#[tokio::test]
async fn sign_out_without_a_server_still_deletes_the_entry() {
    let proxy = brightrun_stack::testing::FaultProxy::start(&support::stack().url).await;
    let email = support::sign_up("sign-out-offline").await;
    let store = Arc::new(MemoryStore::new());
    let session = Session::sign_in_with(
        quick_options(),
        support::project_at(&proxy.url()),
        store.clone(),
        http(),
        &email,
        &Secret::new(PASSWORD),
    )
    .await
    .expect("sign in through the proxy");
    let token = session.access_token().await.expect("token");
    proxy.cut_all();
    session
        .sign_out()
        .await
        .expect("sign-out succeeds locally without the server");
    assert_eq!(
        store.load().expect("load"),
        None,
        "the entry is gone even offline"
    );
    assert!(
        matches!(session.access_token().await, Err(Error::SignedOut)),
        "signed out in memory"
    );
    assert_eq!(
        user_id_from_auth(&token).await,
        Ok(session.user_id()),
        "the server never heard the sign-out (it was unreachable): only the local state is gone"
    );
}

#[tokio::test]
async fn a_failed_early_refresh_keeps_the_still_valid_token() {
    let proxy = brightrun_stack::testing::FaultProxy::start(&support::stack().url).await;
    let email = support::sign_up("refresh-offline").await;
    let store = Arc::new(MemoryStore::new());
    // A minimum lifetime longer than the token's (3600 s): every call wants to refresh early.
    let options = brightrun_client::session::SessionOptions {
        min_ttl: std::time::Duration::from_secs(7200),
        ..quick_options()
    };
    let session = Session::sign_in_with(
        options,
        support::project_at(&proxy.url()),
        store.clone(),
        http(),
        &email,
        &Secret::new(PASSWORD),
    )
    .await
    .expect("sign in");
    let token = session.access_token().await.expect("refreshed early");
    assert_eq!(
        session.refresh_count(),
        1,
        "the early refresh happened while online"
    );
    proxy.cut_all();
    let offline = session
        .access_token()
        .await
        .expect("offline, the unexpired token is still served");
    assert_eq!(offline, token, "the current token, not an error");
    assert!(
        store.load().expect("load").is_some(),
        "a network failure keeps the refresh token"
    );
}

/// Sign-in, refreshes, API calls and local-database writes with every log line captured: the
/// refresh tokens (and access tokens) appear in no log line and nowhere in the database files.
#[test]
fn tokens_never_reach_logs_or_the_local_database() {
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // current_thread: every task of the test runs on this thread, under the capture.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("local.db");
    let secrets = runtime.block_on(async {
        let (session, store) = signed_in("no-leak").await;
        let mut secrets = vec![stored_token(&store)];
        let first_access = session.access_token().await.expect("token");
        secrets.push(first_access.clone());
        session.reject_access_token(&first_access).await;
        secrets.push(session.access_token().await.expect("refreshed"));
        secrets.push(stored_token(&store));
        assert_ne!(
            secrets[0], secrets[3],
            "the refresh rotated the refresh token"
        );

        let api = brightrun_client::api::Api::new(session.clone());
        let local = LocalDb::open(&db_path).await.expect("open local db");
        let datasets = api.list_datasets().await.expect("list datasets");
        local
            .replace_datasets(session.user_id(), &datasets, chrono::Utc::now())
            .await
            .expect("cache datasets");
        let jobs = api.list_jobs().await.expect("list jobs");
        local
            .replace_jobs(session.user_id(), &jobs, chrono::Utc::now())
            .await
            .expect("cache jobs");
        local
            .claim_alert(
                &alert_key(Uuid::new_v4(), &JobStatus::Completed),
                chrono::Utc::now(),
            )
            .await
            .expect("dedupe");
        tracing::info!(session = ?session, "debug output of a session");
        session.sign_out().await.expect("sign out");
        local.close().await;
        secrets
    });
    let logs = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8 logs");
    assert!(
        logs.contains("signed in") && logs.contains("signed out"),
        "the capture saw the session's log lines:\n{logs}"
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        files.push((
            path.display().to_string(),
            std::fs::read(&path).expect("read db file"),
        ));
    }
    assert!(
        files
            .iter()
            .any(|(name, bytes)| name.ends_with("local.db") && !bytes.is_empty()),
        "the local database was written"
    );
    for (i, secret) in secrets.iter().enumerate() {
        let needle = secret.expose().as_bytes();
        assert!(
            !logs.contains(secret.expose()),
            "secret #{i} appears in the logs"
        );
        for (name, bytes) in &files {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "secret #{i} appears in {name}"
            );
        }
    }
}

// --- A real Secret Service (gnome-keyring under dbus-run-session) -----------------------------

/// These tests need a Secret Service on a D-Bus session bus; `cargo xtask test` provides one. They
/// fail, never skip, without it.
fn require_secret_service() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "DBUS_SESSION_BUS_ADDRESS is unset: the keychain tests need a Secret Service. Run them as \
         `dbus-run-session -- sh -c 'echo -n pw | gnome-keyring-daemon --unlock --components=secrets \
         >/dev/null; cargo nextest run -p brightrun-client'` (or `cargo xtask test`)"
    );
}

/// Runs a keychain call where keyring's Secret Service backend wants it: on a blocking thread.
async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call)
        .await
        .expect("blocking task")
}

/// The secret stored under the entry's service and user, read straight from the Secret Service
/// over D-Bus with the `secret-service` crate (not through `keyring`, the code under test): proof
/// that the token is really in the OS keychain, under the attributes other tools look it up by.
async fn secret_service_lookup(store: &KeychainStore) -> Option<String> {
    use secret_service::{EncryptionType, SecretService};
    let service = SecretService::connect(EncryptionType::Dh)
        .await
        .expect("the Secret Service answers on the session bus");
    let attributes =
        std::collections::HashMap::from([("service", store.service()), ("username", store.user())]);
    let found = service
        .search_items(attributes)
        .await
        .expect("the Secret Service searches");
    assert!(
        found.locked.is_empty(),
        "the test keyring is unlocked, so no entry is locked"
    );
    let item = found.unlocked.first()?;
    let secret = item.get_secret().await.expect("the secret is readable");
    Some(String::from_utf8(secret).expect("the stored token is UTF-8"))
}

#[tokio::test]
async fn keychain_store_round_trips_through_the_secret_service() {
    require_secret_service();
    let project = support::project_at(&format!(
        "http://keychain-{}.invalid",
        Uuid::new_v4().simple()
    ));
    let store = KeychainStore::new(&project, BuildChannel::Dev);
    let other_channel = KeychainStore::new(&project, BuildChannel::Release);
    let s = store.clone();
    assert_eq!(
        blocking(move || s.load()).await.expect("load"),
        None,
        "a new entry is empty"
    );
    let s = store.clone();
    blocking(move || s.store(&Secret::new("refresh-one")))
        .await
        .expect("store");
    let s = store.clone();
    blocking(move || s.store(&Secret::new("refresh-two")))
        .await
        .expect("replace");
    let s = store.clone();
    assert_eq!(
        blocking(move || s.load()).await.expect("load"),
        Some(Secret::new("refresh-two")),
        "the last stored token is read back"
    );
    let s = store.clone();
    assert_eq!(
        secret_service_lookup(&s).await.as_deref(),
        Some("refresh-two"),
        "the token is really in the Secret Service, under service/username"
    );
    let o = other_channel.clone();
    assert_eq!(
        blocking(move || o.load()).await.expect("load"),
        None,
        "a release build does not see a dev build's entry"
    );
    let s = store.clone();
    blocking(move || s.delete()).await.expect("delete");
    let s = store.clone();
    blocking(move || s.delete())
        .await
        .expect("deleting an absent entry is fine");
    let s = store.clone();
    assert_eq!(
        blocking(move || s.load()).await.expect("load"),
        None,
        "gone after delete"
    );
    let s = store.clone();
    assert_eq!(
        secret_service_lookup(&s).await,
        None,
        "gone from the Secret Service"
    );
}

#[tokio::test]
async fn sign_in_restore_sign_out_with_the_keychain() {
    require_secret_service();
    let email = support::sign_up("keychain").await;
    // Through a proxy on a fresh port: the entry is keyed by the project URL, so this test never
    // touches the entry of a developer signed in to the same stack on this machine.
    let proxy = brightrun_stack::testing::FaultProxy::start(&support::stack().url).await;
    let project = support::project_at(&proxy.url());
    let store = Arc::new(KeychainStore::new(&project, BuildChannel::Dev));
    let s = store.clone();
    blocking(move || s.delete()).await.expect("start clean");
    let session = Session::sign_in_with(
        quick_options(),
        project.clone(),
        store.clone(),
        http(),
        &email,
        &Secret::new(PASSWORD),
    )
    .await
    .expect("sign in");
    let s = store.clone();
    let stored = secret_service_lookup(&s).await;
    assert!(
        stored.as_deref().is_some_and(|t| !t.is_empty()),
        "the refresh token is in the Secret Service"
    );

    let fresh_store = Arc::new(KeychainStore::new(&project, BuildChannel::Dev));
    let restored = Session::restore_with(quick_options(), project.clone(), fresh_store, http())
        .await
        .expect("restore")
        .expect("a new process finds the session in the keychain");
    assert_eq!(restored.user_id(), session.user_id(), "same user");
    let release = Arc::new(KeychainStore::new(&project, BuildChannel::Release));
    let none = Session::restore_with(quick_options(), project.clone(), release, http())
        .await
        .expect("restore");
    assert!(
        none.is_none(),
        "a release build never picks up a dev build's session"
    );

    restored.sign_out().await.expect("sign out");
    let s = store.clone();
    assert_eq!(
        secret_service_lookup(&s).await,
        None,
        "sign-out deleted the entry"
    );
}
