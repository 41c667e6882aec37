//! brightrun-stack: a Supabase-compatible local server. It starts a private PostgreSQL cluster,
//! creates what a Supabase project provides (roles, `auth` and `storage` schemas), applies the
//! project's `migrations/`, and serves `/auth/v1` (GoTrue), `/rest/v1` (PostgREST) and
//! `/storage/v1` (storage-api, with TUS) with their wire protocol (../shared/docs/supabase-protocol.md).
//!
//! It knows nothing about LoRA training: every domain rule lives in `migrations/`, enforced by
//! PostgreSQL (RLS, grants, functions), exactly as on a hosted project.

pub mod auth;
pub mod gateway;
pub mod jwt;
pub mod postgres;
pub mod rest;
mod server;
pub mod storage;
#[cfg(feature = "testing")]
pub mod testing;

pub use server::{AppState, Stack, StackConfig};
