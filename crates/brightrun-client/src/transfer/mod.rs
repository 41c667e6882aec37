//! Resumable uploads and verified downloads.

pub mod download;
pub mod upload;
