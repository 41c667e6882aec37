//! Reading datasets from Storage: the streaming validation run (statistics, errors, sample) and
//! the conversations a trainer needs.
//!
//! The object is streamed from Storage into brightrun-core's blocking validator on a blocking
//! thread (`SyncIoBridge`), so memory stays bounded whatever the file size.

use std::io::Read;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use brightrun_core::dataset::{
    self, Conversation, Line, LineReader, Role as CoreRole, Split, ValidationOptions,
    ValidationReport, validate_with_progress,
};
use brightrun_core::model::DatasetFormat;
use brightrun_core::tokenizer::BpeOpenAiTokenizer;
use serde_json::Value;

use crate::trainer::{Role, Turn};
use brightrun_supabase::Storage;

/// How many conversations `sample_data` keeps.
pub const SAMPLE_CONVERSATIONS: usize = 3;
const SAMPLE_MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Storage(#[from] brightrun_supabase::Error),
    #[error("reading the dataset from storage failed after {bytes_read} bytes: {source}")]
    Read {
        bytes_read: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("stopped")]
    Stopped,
    #[error("the dataset reader thread failed: {0}")]
    Join(String),
}

impl DatasetError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Storage(e) => e.is_retryable(),
            Self::Read { .. } | Self::Join(_) => true,
            Self::Stopped => false,
        }
    }
}

/// Copies the first lines that pass through it, for `sample_data`.
struct SampleTap<R> {
    inner: R,
    head: Vec<u8>,
    newlines: usize,
}

impl<R: Read> Read for SampleTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.newlines <= SAMPLE_CONVERSATIONS * 4 && self.head.len() < SAMPLE_MAX_BYTES {
            let take = n.min(SAMPLE_MAX_BYTES - self.head.len());
            self.newlines += buf[..take].iter().filter(|b| **b == b'\n').count();
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// The first conversations of the file that are JSON objects, as they are.
fn sample_of(head: &[u8]) -> Value {
    let sample: Vec<Value> = head
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(Value::is_object)
        .take(SAMPLE_CONVERSATIONS)
        .collect();
    Value::Array(sample)
}

/// A validation run's results.
#[derive(Debug, Clone)]
pub struct Validated {
    pub report: ValidationReport,
    pub sample: Value,
}

async fn blocking_reader(
    storage: &Storage,
    bucket: &str,
    path: &str,
) -> Result<impl Read + Send + 'static, DatasetError> {
    let stream = storage.download(bucket, path).await?;
    let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
    Ok(tokio_util::io::SyncIoBridge::new(reader))
}

/// Streams the object through the validator on `threads` threads. `stop` aborts the run (lease
/// lost, shutdown).
pub async fn validate_object(
    storage: &Storage,
    bucket: &str,
    path: &str,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Result<Validated, DatasetError> {
    let reader = blocking_reader(storage, bucket, path).await?;
    let handle = tokio::task::spawn_blocking(move || {
        let mut tap = SampleTap {
            inner: reader,
            head: Vec::new(),
            newlines: 0,
        };
        let tokenizer = BpeOpenAiTokenizer::cl100k_base();
        let options = ValidationOptions {
            threads: Some(threads.max(1)),
            ..ValidationOptions::default()
        };
        let report = validate_with_progress(&mut tap, &options, &tokenizer, &mut |_| {
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        match report {
            Ok(report) if stop.load(Ordering::Relaxed) => {
                drop(report);
                Err(DatasetError::Stopped)
            }
            Ok(report) => Ok(Validated {
                report,
                sample: sample_of(&tap.head),
            }),
            Err(brightrun_core::ValidatorError::Read { bytes_read, source }) => {
                Err(DatasetError::Read { bytes_read, source })
            }
        }
    });
    handle
        .await
        .map_err(|e| DatasetError::Join(e.to_string()))?
}

/// The conversations of a dataset, split as the validator split them: by `"split"` marks when
/// any line has one, otherwise by core's hash holdout (the validator's).
#[derive(Debug, Clone, Default)]
pub struct TrainingData {
    pub train: Vec<Vec<Turn>>,
    pub validation: Vec<Vec<Turn>>,
    /// Lines skipped because they are not conversations (a validated dataset has none).
    pub skipped: u64,
}

fn to_turns(conversation: &Conversation) -> Vec<Turn> {
    conversation
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                CoreRole::System => Role::System,
                CoreRole::User => Role::User,
                CoreRole::Assistant => Role::Assistant,
            };
            Turn {
                role,
                content: m.content.clone(),
                trainable: role == Role::Assistant && m.weight != Some(0),
            }
        })
        .collect()
}

/// The format named by `datasets.format` (`brightrun_lora_v3`; anything else is v4).
pub fn format_of(name: &str) -> DatasetFormat {
    if name == "brightrun_lora_v3" {
        DatasetFormat::V3
    } else {
        DatasetFormat::V4
    }
}

/// Downloads and parses a dataset for training.
pub async fn load_training_data(
    storage: &Storage,
    bucket: &str,
    path: &str,
    format: &str,
) -> Result<TrainingData, DatasetError> {
    let reader = blocking_reader(storage, bucket, path).await?;
    let format = format_of(format);
    tokio::task::spawn_blocking(move || parse_training_data(reader, &format))
        .await
        .map_err(|e| DatasetError::Join(e.to_string()))?
}

/// Parses a JSONL dataset (a stream) into training and validation conversations.
pub fn parse_training_data(
    reader: impl Read,
    format: &DatasetFormat,
) -> Result<TrainingData, DatasetError> {
    let mut lines = LineReader::new(reader, 10 * 1024 * 1024);
    // (turns, marked split, in the hash holdout)
    let mut all: Vec<(Vec<Turn>, Option<Split>, bool)> = Vec::new();
    let mut skipped = 0;
    let mut any_mark = false;
    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(source) => {
                return Err(DatasetError::Read {
                    bytes_read: lines.bytes_read(),
                    source,
                });
            }
        };
        let Line::Complete { number, bytes, .. } = line else {
            skipped += 1;
            continue;
        };
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let bytes = if number == 1 {
            bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
        } else {
            bytes
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|v| Conversation::from_json(&v, format).ok());
        let Some(conversation) = parsed else {
            skipped += 1;
            continue;
        };
        any_mark |= conversation.split.is_some();
        let held_out =
            dataset::in_holdout(dataset::line_hash(bytes), dataset::DEFAULT_HOLDOUT_PERCENT);
        all.push((to_turns(&conversation), conversation.split, held_out));
    }
    let mut data = TrainingData {
        skipped,
        ..TrainingData::default()
    };
    for (turns, split, held_out) in all {
        let validation = if any_mark {
            split == Some(Split::Validation)
        } else {
            held_out
        };
        if validation {
            data.validation.push(turns);
        } else {
            data.train.push(turns);
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keeps_the_first_three_objects() {
        let head = b"{\"a\":1}\nnot json\n{\"a\":2}\n[1]\n{\"a\":3}\n{\"a\":4}\n";
        let sample = sample_of(head);
        assert_eq!(
            sample,
            serde_json::json!([{"a":1},{"a":2},{"a":3}]),
            "three objects in file order; broken lines skipped"
        );
    }
}
