//! Test support for crates that run against a real brightrun-stack (feature `testing`): where
//! the stack under test is, and users made directly in `auth.users` with signed tokens.
//!
//! `cargo xtask test` starts one stack and names it through `BRIGHTRUN_TEST_*`; without those,
//! the first caller starts one on a dedicated thread for the life of the process.

mod answers;
mod fixtures;
pub mod proxy;

pub use answers::{Answer, AnswerProxy, Seen};
pub use fixtures::{DatasetShape, artifact_row, dataset_rows, ready_dataset, sha256_hex};
pub use proxy::{Direction, FaultProxy};

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::jwt::{JwtSecret, Keys};

/// A secret only tests use, so they can forge expired or foreign tokens.
pub const TEST_JWT_SECRET: &str = "brightrun-test-secret-not-for-production-use-0123456789";

/// Where the stack under test is and how to reach it.
#[derive(Debug, Clone)]
pub struct TestStack {
    pub url: String,
    pub anon_key: String,
    pub service_role_key: String,
    /// libpq URL of the superuser, over the cluster's socket.
    pub db_url: String,
    pub jwt_secret: String,
}

static STACK: OnceLock<TestStack> = OnceLock::new();

/// The stack for this test process: the one named by `BRIGHTRUN_TEST_*`, or one started on a
/// dedicated thread on first use and kept for the life of the process (its PostgreSQL dies with
/// the process).
pub fn stack() -> &'static TestStack {
    STACK.get_or_init(|| {
        if let Ok(url) = std::env::var("BRIGHTRUN_TEST_URL") {
            let var = |name: &str| {
                std::env::var(name)
                    .unwrap_or_else(|_| panic!("{name} must be set with BRIGHTRUN_TEST_URL"))
            };
            return TestStack {
                url,
                anon_key: var("BRIGHTRUN_TEST_ANON_KEY"),
                service_role_key: var("BRIGHTRUN_TEST_SERVICE_ROLE_KEY"),
                db_url: var("BRIGHTRUN_TEST_DB_URL"),
                jwt_secret: var("BRIGHTRUN_TEST_JWT_SECRET"),
            };
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-stack".into())
            .spawn(move || {
                let rt = tokio::runtime::Runtime::new().expect("runtime");
                rt.block_on(async move {
                    let config = crate::StackConfig {
                        listen: ([127, 0, 0, 1], 0).into(),
                        jwt_secret: Some(JwtSecret::new(TEST_JWT_SECRET)),
                        data_dir: Some(own_data_dir()),
                        ..Default::default()
                    };
                    let stack = crate::Stack::start(config).await.expect("stack starts");
                    tx.send(TestStack {
                        url: stack.url().to_owned(),
                        anon_key: stack.anon_key().to_owned(),
                        service_role_key: stack.service_role_key().to_owned(),
                        db_url: stack.database_url(),
                        jwt_secret: TEST_JWT_SECRET.to_owned(),
                    })
                    .expect("test thread waits");
                    // Serve until the process exits.
                    std::future::pending::<()>().await;
                    drop(stack);
                });
            })
            .expect("spawn stack thread");
        rx.recv_timeout(Duration::from_secs(120))
            .expect("stack started in time")
    })
}

/// A data directory for this process's stack, `<tmp>/brightrun-test-stack-<pid>`. The stack
/// lives as long as the process, which ends without running destructors, so the directories of
/// processes that are gone are removed here instead (PostgreSQL died with them).
fn own_data_dir() -> std::path::PathBuf {
    const PREFIX: &str = "brightrun-test-stack-";
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl TestStack {
    pub fn keys(&self) -> Keys {
        Keys::new(
            JwtSecret::new(self.jwt_secret.clone()),
            format!("{}/auth/v1", self.url),
            chrono_now(),
        )
    }

    /// A superuser pool for direct checks (bypasses RLS: use it to arrange and inspect, never to
    /// exercise what a user can do).
    pub async fn db(&self) -> PgPool {
        let options: PgConnectOptions = self.db_url.parse().expect("db url parses");
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .expect("db connects")
    }

    pub fn rest(&self, path: &str) -> String {
        format!("{}/rest/v1/{}", self.url, path.trim_start_matches('/'))
    }

    pub fn auth(&self, path: &str) -> String {
        format!("{}/auth/v1/{}", self.url, path.trim_start_matches('/'))
    }
}

pub fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A unique address per call, so tests sharing one stack never collide.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.test", uuid::Uuid::new_v4().simple())
}

/// A user that exists in `auth.users`, with an access token signed by the project secret, made
/// without going through `/auth/v1` (so REST and RLS tests do not depend on the auth endpoints).
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: uuid::Uuid,
    pub email: String,
    pub access_token: String,
}

pub async fn mint_user(stack: &TestStack, tag: &str) -> TestUser {
    let id = uuid::Uuid::new_v4();
    let email = unique_email(tag);
    let db = stack.db().await;
    sqlx::query(
        "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at, email_confirmed_at)
         values ($1, 'authenticated', 'authenticated', $2, '{\"provider\":\"email\",\"providers\":[\"email\"]}', '{}', now(), now(), now())",
    )
    .bind(id)
    .bind(&email)
    .execute(&db)
    .await
    .expect("insert test user");
    db.close().await;
    let now = chrono_now();
    let access_token = stack.keys().sign(&json!({
        "iss": format!("{}/auth/v1", stack.url), "sub": id.to_string(), "aud": "authenticated",
        "exp": now + 3600, "iat": now, "email": email, "phone": "", "role": "authenticated",
        "aal": "aal1", "amr": [{"method": "password", "timestamp": now}],
        "session_id": uuid::Uuid::new_v4().to_string(), "is_anonymous": false,
        "app_metadata": {"provider": "email", "providers": ["email"]}, "user_metadata": {},
    }));
    TestUser {
        id,
        email,
        access_token,
    }
}
