//! Starting and stopping the whole stack: cluster, bootstrap, migrations, HTTP server.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::jwt::{JwtSecret, Keys};
use crate::postgres::{Cluster, ClusterLayout, SUPERUSER};
use crate::storage::{StorageConfig, StorageState};
use crate::{auth, gateway, rest, storage};

/// What Supabase provides before a project's migrations: applied on every start, idempotent.
const BOOTSTRAP: [(&str, &str); 3] = [
    ("roles", include_str!("bootstrap/00_roles.sql")),
    ("auth", include_str!("bootstrap/01_auth.sql")),
    ("storage", include_str!("bootstrap/02_storage.sql")),
];

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where the cluster and the stack's files live. `None`: a temporary directory removed when
    /// the stack stops (tests).
    pub data_dir: Option<PathBuf>,
    /// HTTP address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `None`: read from `<data_dir>/jwt_secret`, generated on first start.
    pub jwt_secret: Option<JwtSecret>,
    /// Access-token lifetime (GoTrue `JWT_EXP`).
    pub jwt_expiry: Duration,
    /// GoTrue `REFRESH_TOKEN_REUSE_INTERVAL` (the CLI and hosted projects use 10 s).
    pub refresh_token_reuse_interval: Duration,
    pub storage: StorageConfig,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 54321)),
            jwt_secret: None,
            jwt_expiry: Duration::from_secs(3600),
            refresh_token_reuse_interval: Duration::from_secs(10),
            storage: StorageConfig::default(),
        }
    }
}

/// Shared by every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    keys: Keys,
    /// Connected as the cluster superuser: GoTrue's tables, storage-api's superuser paths.
    admin: PgPool,
    /// Connected as `authenticator`, which may only `SET ROLE` to anon/authenticated/service_role:
    /// every `/rest/v1` request runs through it, so PostgreSQL's grants and RLS decide.
    api: PgPool,
    config: StackConfig,
    rest: rest::RestState,
    storage: StorageState,
}

impl AppState {
    pub fn keys(&self) -> &Keys {
        &self.0.keys
    }
    pub fn admin_pool(&self) -> &PgPool {
        &self.0.admin
    }
    pub fn api_pool(&self) -> &PgPool {
        &self.0.api
    }
    pub fn config(&self) -> &StackConfig {
        &self.0.config
    }
    pub fn rest(&self) -> &rest::RestState {
        &self.0.rest
    }
    pub fn storage(&self) -> &StorageState {
        &self.0.storage
    }
}

/// A running stack. [`Stack::shutdown`] stops the HTTP server, then PostgreSQL.
pub struct Stack {
    url: String,
    state: AppState,
    cluster: Option<Cluster>,
    server: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
    _temp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Stack {
    pub async fn start(config: StackConfig) -> anyhow::Result<Self> {
        let (root, temp) = match &config.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("brightrun-stack-")
                    .tempdir()?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let layout = ClusterLayout { root: root.clone() };
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(layout))
            .await?
            .context("starting PostgreSQL")?;

        let admin = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(cluster.connect_options(SUPERUSER))
            .await
            .context("connecting to PostgreSQL as superuser")?;
        for (name, sql) in BOOTSTRAP {
            sqlx::raw_sql(sql)
                .execute(&admin)
                .await
                .with_context(|| format!("bootstrap: {name}"))?;
        }
        MIGRATOR.run(&admin).await.context("applying migrations/")?;
        // sqlx keeps its bookkeeping in public, where the bootstrap's default privileges (as on
        // Supabase) would hand it to the API roles. Hosted projects keep theirs out of public.
        sqlx::query(
            "revoke all on public._sqlx_migrations from public, anon, authenticated, service_role",
        )
        .execute(&admin)
        .await
        .context("hiding the migrations table")?;
        let api = PgPoolOptions::new()
            .max_connections(32)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(cluster.connect_options("authenticator"))
            .await
            .context("connecting to PostgreSQL as authenticator")?;

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => load_or_create_secret(&root.join("jwt_secret"))?,
        };
        let keys = Keys::new(
            secret,
            format!("{url}/auth/v1"),
            chrono::Utc::now().timestamp(),
        );
        let rest = rest::RestState::load(&api)
            .await
            .context("reading the schema catalog")?;
        let storage =
            StorageState::open(root.join("storage")).context("opening the object store")?;
        let state = AppState(Arc::new(StateInner {
            keys,
            admin,
            api,
            config,
            rest,
            storage,
        }));
        let sweeper = {
            let state = state.clone();
            tokio::spawn(async move {
                let expiry = state.config().storage.tus_upload_expiry;
                let mut every = tokio::time::interval(Duration::from_secs(600));
                loop {
                    every.tick().await;
                    state.storage().sweep_expired_uploads(expiry).await;
                }
            })
        };

        let app = router(state.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
            sweeper.abort();
            served
        });
        tracing::info!(%url, "brightrun-stack listening");
        Ok(Self {
            url,
            state,
            cluster: Some(cluster),
            server: Some((stop_tx, server)),
            _temp: temp,
        })
    }

    /// `http://127.0.0.1:<port>`, the `SUPABASE_URL` of this stack.
    pub fn url(&self) -> &str {
        &self.url
    }
    pub fn anon_key(&self) -> &str {
        &self.state.keys().anon_key
    }
    pub fn service_role_key(&self) -> &str {
        &self.state.keys().service_role_key
    }
    pub fn state(&self) -> &AppState {
        &self.state
    }
    /// A libpq URL of the cluster's superuser, for `psql` and direct checks in tests.
    pub fn database_url(&self) -> String {
        self.cluster
            .as_ref()
            .map(|c| c.url(SUPERUSER))
            .unwrap_or_default()
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some((stop, server)) = self.server.take() {
            let _ = stop.send(());
            server.await??;
        }
        self.state.admin_pool().close().await;
        self.state.api_pool().close().await;
        if let Some(cluster) = self.cluster.take() {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
        }
        Ok(())
    }
}

pub(crate) fn router(state: AppState) -> Router {
    let gate = || axum::middleware::from_fn_with_state(state.clone(), gateway::require_api_key);
    Router::new()
        .nest("/auth/v1", auth::router().layer(gate()))
        .nest("/rest/v1", rest::router().layer(gate()))
        // Storage has no gateway key check: it relies on Authorization, and signed URLs need none.
        .nest("/storage/v1", storage::router())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

fn load_or_create_secret(path: &Path) -> anyhow::Result<JwtSecret> {
    if let Ok(text) = fs::read_to_string(path) {
        return Ok(JwtSecret::new(text.trim()));
    }
    let secret = crate::jwt::generate_secret();
    fs::write(path, secret.expose()).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(secret)
}
