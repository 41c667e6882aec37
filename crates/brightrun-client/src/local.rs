//! The local SQLite database: upload state, list caches, notification dedupe. Its schema lives in
//! `crates/brightrun-client/migrations/` (sqlx, applied on open). Never holds a token.
