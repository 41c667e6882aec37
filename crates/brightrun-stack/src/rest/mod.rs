//! `/rest/v1`: the PostgREST subset (supabase-protocol.md §3).
//!
//! Each request becomes one transaction on the `authenticator` pool that first impersonates the
//! caller (`set_config('role', ...)`, `request.jwt.claims`, ...) and then runs one generated
//! statement, so PostgreSQL's grants and RLS decide what the caller sees, never Rust code. The
//! JSON of the response is built by PostgreSQL.
//!
//! Not served (each answers with a PostgREST-style error): CSV and other media types, `PUT`,
//! full-text and range operators (`fts`, `sl`, ...), aggregates, spread embeds (`...rel()`),
//! relationships through views, ordering by embedded columns, and the OpenAPI root.

mod error;
mod handlers;
mod prefer;
mod query;
mod schema;
mod sql;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::any;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::AppState;

pub use error::ApiError;
use schema::Schema;

/// Reloads the schema cache at most this often when requests name unknown tables or functions.
const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// What `/rest/v1` keeps between requests: the schema cache, reloaded on
/// `NOTIFY pgrst, 'reload schema'` and when a request names something the cache does not know.
#[derive(Clone)]
pub struct RestState(Arc<Shared>);

struct Shared {
    pool: PgPool,
    schema: RwLock<Arc<Schema>>,
    /// When the last reload started; held across a reload so concurrent misses share one.
    last_reload: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let schema = self.schema();
        f.debug_struct("RestState")
            .field("tables", &schema.tables.len())
            .field("functions", &schema.functions.len())
            .finish_non_exhaustive()
    }
}

impl RestState {
    /// Reads the schema cache and starts listening for reload notifications on `pool`.
    pub async fn load(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let schema = Schema::load(pool).await?;
        let state = Self(Arc::new(Shared {
            pool: pool.clone(),
            schema: RwLock::new(Arc::new(schema)),
            last_reload: tokio::sync::Mutex::new(Some(Instant::now())),
        }));
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen("pgrst").await?;
        tokio::spawn(state.clone().listen(listener));
        Ok(state)
    }

    fn schema(&self) -> Arc<Schema> {
        Arc::clone(&self.0.schema.read().unwrap_or_else(|e| e.into_inner()))
    }

    async fn reload(&self) -> Result<(), sqlx::Error> {
        let schema = Schema::load(&self.0.pool).await?;
        *self.0.schema.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(schema);
        Ok(())
    }

    /// After a request named something unknown: reload unless a reload started after the request
    /// did (its catalog snapshot already covers everything committed before the request). At
    /// most one reload per [`MISS_RELOAD_INTERVAL`], so unknown names cannot hammer the catalog.
    async fn reload_after_miss(&self, request_started: Instant) {
        let mut last = self.0.last_reload.lock().await;
        if let Some(at) = *last {
            if at >= request_started {
                return;
            }
            let since = at.elapsed();
            if since < MISS_RELOAD_INTERVAL {
                tokio::time::sleep(MISS_RELOAD_INTERVAL - since).await;
            }
        }
        *last = Some(Instant::now());
        if let Err(error) = self.reload().await {
            tracing::warn!(%error, "reloading the schema cache failed");
        }
    }

    /// PostgREST's reload channel: `NOTIFY pgrst, 'reload schema'` (or an empty payload). After a
    /// lost connection the cache reloads too, since notifications may have been missed.
    async fn listen(self, mut listener: PgListener) {
        loop {
            match listener.try_recv().await {
                Ok(Some(note)) if matches!(note.payload(), "reload schema" | "") => {
                    *self.0.last_reload.lock().await = Some(Instant::now());
                    match self.reload().await {
                        Ok(()) => tracing::info!("schema cache reloaded"),
                        Err(error) => tracing::warn!(%error, "reloading the schema cache failed"),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::warn!("schema listener lost its connection; reconnecting");
                    if let Err(error) = self.reload().await {
                        tracing::warn!(%error, "reloading the schema cache failed");
                    }
                }
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    if self.0.pool.is_closed() {
                        return;
                    }
                    tracing::warn!(%error, "schema listener failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// PostgREST sets no body limit of its own; bulk inserts (metrics, rows by the thousand) must not
/// hit axum's 2 MB default.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rpc/{function}", any(handlers::rpc))
        .route("/{table}", any(handlers::table))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
