//! Who is calling, and running SQL as them: the JWT check of storage-api's `jwt.ts` and the
//! transaction scoping of its `scope.ts`, so `storage.objects` policies decide (§4.1, §4.2).

use axum::http::HeaderMap;
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};

use super::error::StorageError;
use crate::jwt::{JwtError, Keys, Leeway};

/// The caller of a user-context request, from a verified `Authorization: Bearer` JWT.
#[derive(Debug, Clone)]
pub struct Caller {
    pub role: String,
    /// JWT `sub`: the owner of what the caller uploads. None for the API keys.
    pub sub: Option<String>,
    claims: Value,
}

/// jose's wording, which storage-api passes through as the message.
pub fn jose_message(err: &JwtError) -> String {
    match err {
        JwtError::Expired => "\"exp\" claim timestamp check failed".into(),
        JwtError::NotYetValid => "\"nbf\" claim timestamp check failed".into(),
        JwtError::BadSignature => "signature verification failed".into(),
        JwtError::Invalid(_) => "Invalid Compact JWS".into(),
    }
}

impl Caller {
    /// `Ok(None)` when there is no Authorization header; a bad token is an error.
    pub fn from_headers(keys: &Keys, headers: &HeaderMap) -> Result<Option<Self>, StorageError> {
        let Some(value) = headers.get("authorization") else {
            return Ok(None);
        };
        let value = value.to_str().unwrap_or_default();
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        let claims = keys
            .verify_claims(token, Leeway::None)
            .map_err(|e| StorageError::access_denied(jose_message(&e)))?;
        let role = claims
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("anon")
            .to_owned();
        if !matches!(role.as_str(), "anon" | "authenticated" | "service_role") {
            return Err(StorageError::access_denied(format!(
                "role \"{role}\" is not allowed"
            )));
        }
        let sub = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Some(Self { role, sub, claims }))
    }

    /// Like [`Caller::from_headers`] but the header is required (routes whose schema requires it).
    pub fn required(keys: &Keys, headers: &HeaderMap) -> Result<Self, StorageError> {
        Self::from_headers(keys, headers)?.ok_or_else(|| {
            StorageError::invalid_request("headers must have required property 'authorization'")
        })
    }

    /// `owner` (uuid, deprecated column) and `owner_id` (text) for rows this caller writes.
    pub fn owner(&self) -> (Option<uuid::Uuid>, Option<String>) {
        let id = self.sub.clone();
        (id.as_deref().and_then(|s| s.parse().ok()), id)
    }

    /// A transaction running as this caller, with the settings storage-api sets.
    pub async fn begin<'a>(
        &self,
        pool: &'a PgPool,
        method: &str,
        path: &str,
        operation: &str,
    ) -> Result<Transaction<'a, Postgres>, StorageError> {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "select set_config('role', $1, true),
                    set_config('request.jwt.claim.role', $1, true),
                    set_config('request.jwt.claim.sub', $2, true),
                    set_config('request.jwt.claims', $3, true),
                    set_config('request.method', $4, true),
                    set_config('request.path', $5, true),
                    set_config('storage.operation', $6, true)",
        )
        .bind(&self.role)
        .bind(self.sub.as_deref().unwrap_or(""))
        .bind(self.claims.to_string())
        .bind(method)
        .bind(path)
        .bind(operation)
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }
}

/// Whether an upload may happen: storage-api's `testPermission`, an INSERT (or upsert) as the
/// caller inside a transaction that is always rolled back. 42501 → 403, 23505 → 409.
pub async fn test_upload_permission(
    pool: &PgPool,
    caller: &Caller,
    bucket: &str,
    name: &str,
    upsert: bool,
    mimetype: Option<&str>,
    content_length: Option<u64>,
) -> Result<(), StorageError> {
    let mut tx = caller
        .begin(pool, "POST", name, "storage.object.upload")
        .await?;
    let (owner, owner_id) = caller.owner();
    let metadata = json!({"mimetype": mimetype, "contentLength": content_length});
    let sql = if upsert {
        "insert into storage.objects (bucket_id, name, owner, owner_id, version, metadata)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (bucket_id, name) do update set owner = excluded.owner, owner_id = excluded.owner_id,
           version = excluded.version, metadata = excluded.metadata
         returning id"
    } else {
        "insert into storage.objects (bucket_id, name, owner, owner_id, version, metadata)
         values ($1, $2, $3, $4, $5, $6) returning id"
    };
    let result = sqlx::query(sql)
        .bind(bucket)
        .bind(name)
        .bind(owner)
        .bind(owner_id)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(metadata)
        .fetch_optional(&mut *tx)
        .await;
    tx.rollback().await?;
    match result {
        Ok(Some(_)) => Ok(()),
        // An upsert whose UPDATE is filtered by RLS returns no row: the caller may not overwrite.
        Ok(None) => Err(StorageError::rls_violation()),
        Err(err) => Err(err.into()),
    }
}
