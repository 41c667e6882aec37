//! Object bytes on the local disk, under the stack's data directory:
//! `objects/<bucket>/<name>/<version>` for stored objects, `tmp/` for bytes still arriving.
//! Bytes reach their final name only by `rename` once complete, so no reader ever sees a partial
//! object. Writes stream chunk by chunk: memory stays bounded whatever the size.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Supabase's allowed characters for object keys (`src/storage/limits.ts`).
fn key_char_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_/!.*'() &$=@;:+,?-".contains(c)
}

/// An object name we accept: Supabase's character set, and no segment that could leave the
/// bucket's directory or collide with our layout (`..`, `.`, empty).
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && name.chars().all(key_char_allowed)
        && name
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

pub fn valid_bucket_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name.chars().all(|c| c != '/' && key_char_allowed(c))
        && name != "."
        && name != ".."
}

/// What a completed write produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug)]
pub enum WriteError {
    TooLarge,
    Io(std::io::Error),
    /// The request body broke off.
    Body(String),
}

impl From<std::io::Error> for WriteError {
    fn from(err: std::io::Error) -> Self {
        Self::Io(err)
    }
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        for dir in ["objects", "tmp", "uploads"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Self { root })
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Callers validate names first; this only joins.
    pub fn object_path(&self, bucket: &str, name: &str, version: &str) -> PathBuf {
        self.root
            .join("objects")
            .join(bucket)
            .join(name)
            .join(version)
    }

    /// Streams `body` into a temporary file, failing with `TooLarge` past `limit` bytes.
    pub async fn write_temp<S, E>(&self, body: S, limit: u64) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let result = write_stream(&path, body, limit).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        result
    }

    /// Moves a complete file to its final name.
    pub async fn commit(
        &self,
        file: &Path,
        bucket: &str,
        name: &str,
        version: &str,
    ) -> std::io::Result<PathBuf> {
        let target = self.object_path(bucket, name, version);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(file, &target).await?;
        Ok(target)
    }

    /// Removes one stored version (an overwritten or deleted object); missing is fine.
    pub async fn remove_version(&self, bucket: &str, name: &str, version: &str) {
        let path = self.object_path(bucket, name, version);
        let _ = tokio::fs::remove_file(&path).await;
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::remove_dir(dir).await;
        }
    }

    pub async fn discard(&self, file: &Path) {
        let _ = tokio::fs::remove_file(file).await;
    }
}

async fn write_stream<S, E>(path: &Path, mut body: S, limit: u64) -> Result<Written, WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut file = tokio::fs::File::create(path).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(WriteError::TooLarge);
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.sync_all().await?;
    Ok(Written {
        path: path.to_owned(),
        size,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// SHA-256 of a file on disk, reading it in chunks (TUS uploads arrive over many requests).
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_supabase_and_cannot_escape() {
        for ok in ["a.jsonl", "u/d/file name (1).jsonl", "x/y/z+q=1,2;@$&!*'"] {
            assert!(valid_object_name(ok), "{ok} should be accepted");
        }
        for bad in [
            "", "../x", "a/../b", "a//b", "/a", "a/", "a/./b", "ü.txt", "a\\b", "a\0b", "a#b",
            "a%2e",
        ] {
            assert!(!valid_object_name(bad), "{bad:?} must be rejected");
        }
        assert!(
            valid_bucket_name("lora-datasets")
                && !valid_bucket_name("a/b")
                && !valid_bucket_name("..")
        );
    }
}
