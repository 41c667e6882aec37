//! A quick look at the first lines of a file, for the drop target: which format is this, before
//! the full validation has read a byte more.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::convert::strip_line;
use crate::model::DatasetFormat;

/// Whether the bytes passed to [`detect_format`] are the whole file or only its beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadExtent {
    /// The whole file: the last line is complete even without a final `\n`.
    WholeFile,
    /// A prefix: text after the last `\n` may be cut and is ignored.
    Prefix,
}

/// What the first lines look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FormatGuess {
    /// Every examined line that names a format names this one.
    Format { format: DatasetFormat },
    /// Both `messages` and `conversations` lines appear.
    Mixed,
    /// The file starts with `[`: a JSON array, not one object per line.
    JsonArray,
    /// The first non-blank line does not parse as JSON (wrong file, or pretty-printed JSON).
    NotJsonLines,
    /// No line was examined, or none names a format.
    Unknown,
}

/// Lines examined at most.
const MAX_LINES: usize = 20;

/// Guesses the format from the start of a file (a few KiB is plenty).
pub fn detect_format(head: &[u8], extent: HeadExtent) -> FormatGuess {
    let head = match extent {
        HeadExtent::WholeFile => head,
        HeadExtent::Prefix => match memchr::memrchr(b'\n', head) {
            Some(end) => &head[..end],
            None => &[],
        },
    };
    let start = head
        .strip_prefix(b"\xEF\xBB\xBF")
        .unwrap_or(head)
        .iter()
        .find(|byte| !byte.is_ascii_whitespace());
    if start == Some(&b'[') {
        return FormatGuess::JsonArray;
    }
    let mut seen_v4 = false;
    let mut seen_v3 = false;
    let mut examined = 0;
    for (index, raw) in head.split(|&byte| byte == b'\n').enumerate() {
        let line = strip_line(raw, index as u64 + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if examined == MAX_LINES {
            break;
        }
        examined += 1;
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            if examined == 1 {
                return FormatGuess::NotJsonLines;
            }
            continue;
        };
        if let Some(object) = value.as_object() {
            seen_v4 |= object.contains_key("messages");
            seen_v3 |= object.contains_key("conversations");
        }
    }
    match (seen_v4, seen_v3) {
        (true, true) => FormatGuess::Mixed,
        (true, false) => FormatGuess::Format {
            format: DatasetFormat::V4,
        },
        (false, true) => FormatGuess::Format {
            format: DatasetFormat::V3,
        },
        (false, false) => FormatGuess::Unknown,
    }
}
