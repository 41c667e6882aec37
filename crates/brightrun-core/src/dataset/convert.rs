//! A conversation as a typed value, read from either format and written as v4; and the streaming
//! v3 (ShareGPT) → v4 (`messages`) conversion built on it.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lines::{Line, LineReader};
use crate::model::DatasetFormat;

/// A speaker, whatever a format calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    /// Reads a role as `format` spells it (`user`/`assistant` in v4, `human`/`gpt` in v3).
    pub fn parse(text: &str, format: &DatasetFormat) -> Option<Self> {
        match (format, text) {
            (_, "system") => Some(Self::System),
            (DatasetFormat::V3, "human") => Some(Self::User),
            (DatasetFormat::V3, "gpt") => Some(Self::Assistant),
            (DatasetFormat::V3, _) => None,
            (_, "user") => Some(Self::User),
            (_, "assistant") => Some(Self::Assistant),
            _ => None,
        }
    }

    /// The role as `format` spells it.
    pub fn spelling(self, format: &DatasetFormat) -> &'static str {
        match (format, self) {
            (_, Self::System) => "system",
            (DatasetFormat::V3, Self::User) => "human",
            (DatasetFormat::V3, Self::Assistant) => "gpt",
            (_, Self::User) => "user",
            (_, Self::Assistant) => "assistant",
        }
    }
}

/// `"split"` of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
}

impl Split {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "train" => Some(Self::Train),
            "validation" => Some(Self::Validation),
            _ => None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// `Some(0)` excludes an assistant turn from the loss; `None` means the default, 1.
    pub weight: Option<u8>,
}

/// One line of a dataset, format-independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub messages: Vec<ChatMessage>,
    pub split: Option<Split>,
    /// Other top-level keys, kept so a conversion loses nothing.
    pub extra: Map<String, Value>,
}

/// Why a line is not a conversation of the expected format (the validator explains in detail;
/// this is for the converter, which only needs to refuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConversationError {
    #[error("not a JSON object")]
    NotObject,
    #[error("`{0}` is missing or not a list")]
    NoMessageList(&'static str),
    #[error("{field} is not an object")]
    MessageNotObject { field: String },
    #[error("{field} is missing, not a string or not a known role")]
    BadRole { field: String },
    #[error("{field} is missing or not a string")]
    BadContent { field: String },
    #[error("{field} is not 0 or 1")]
    BadWeight { field: String },
    #[error("split is not \"train\" or \"validation\"")]
    BadSplit,
}

fn keys(format: &DatasetFormat) -> (&'static str, &'static str, &'static str) {
    match format {
        DatasetFormat::V3 => ("conversations", "from", "value"),
        _ => ("messages", "role", "content"),
    }
}

impl Conversation {
    /// Reads one parsed line of `format`.
    pub fn from_json(value: &Value, format: &DatasetFormat) -> Result<Self, ConversationError> {
        let (list_key, role_key, content_key) = keys(format);
        let object = value.as_object().ok_or(ConversationError::NotObject)?;
        let list = object
            .get(list_key)
            .and_then(Value::as_array)
            .ok_or(ConversationError::NoMessageList(list_key))?;
        let mut messages = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            let field = |key: &str| format!("{list_key}[{index}].{key}");
            let message = item
                .as_object()
                .ok_or_else(|| ConversationError::MessageNotObject {
                    field: format!("{list_key}[{index}]"),
                })?;
            let role = message
                .get(role_key)
                .and_then(Value::as_str)
                .and_then(|text| Role::parse(text, format))
                .ok_or_else(|| ConversationError::BadRole {
                    field: field(role_key),
                })?;
            let content = message
                .get(content_key)
                .and_then(Value::as_str)
                .ok_or_else(|| ConversationError::BadContent {
                    field: field(content_key),
                })?;
            let weight = match message.get("weight") {
                None => None,
                Some(weight) => {
                    Some(
                        parse_weight(weight).ok_or_else(|| ConversationError::BadWeight {
                            field: field("weight"),
                        })?,
                    )
                }
            };
            messages.push(ChatMessage {
                role,
                content: content.to_owned(),
                weight,
            });
        }
        let split = match object.get("split") {
            None => None,
            Some(split) => Some(
                split
                    .as_str()
                    .and_then(Split::parse)
                    .ok_or(ConversationError::BadSplit)?,
            ),
        };
        let extra = object
            .iter()
            .filter(|(key, _)| key.as_str() != list_key && key.as_str() != "split")
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(Self {
            messages,
            split,
            extra,
        })
    }

    /// The line as `format` writes it: list first, then `split`, then the other keys.
    pub fn to_json_line(&self, format: &DatasetFormat) -> String {
        let (list_key, role_key, content_key) = keys(format);
        let mut out = String::with_capacity(64);
        out.push_str("{\"");
        out.push_str(list_key);
        out.push_str("\":[");
        for (index, message) in self.messages.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "{{\"{role_key}\":\"{}\",\"{content_key}\":{}",
                message.role.spelling(format),
                json_string(&message.content)
            ));
            if let Some(weight) = message.weight {
                out.push_str(&format!(",\"weight\":{weight}"));
            }
            out.push('}');
        }
        out.push(']');
        if let Some(split) = self.split {
            let split = match split {
                Split::Train => "train",
                Split::Validation => "validation",
            };
            out.push_str(&format!(",\"split\":\"{split}\""));
        }
        for (key, value) in &self.extra {
            out.push_str(&format!(",{}:{}", json_string(key), value));
        }
        out.push('}');
        out
    }
}

fn json_string(text: &str) -> String {
    // Serializing a string to JSON cannot fail.
    Value::String(text.to_owned()).to_string()
}

/// `0` or `1` (also `0.0`/`1.0`); anything else is not a weight.
pub(crate) fn parse_weight(value: &Value) -> Option<u8> {
    match value.as_f64() {
        Some(0.0) => Some(0),
        Some(1.0) => Some(1),
        _ => None,
    }
}

/// Why a conversion stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("reading line {line} failed")]
    Read {
        line: u64,
        #[source]
        source: io::Error,
    },
    #[error("writing the converted file failed")]
    Write(#[source] io::Error),
    #[error("line {line} is longer than {max_line_bytes} bytes")]
    LineTooLong { line: u64, max_line_bytes: usize },
    #[error("line {line} is not valid UTF-8 JSON")]
    InvalidJson {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line} is not a v3 (ShareGPT) conversation")]
    NotV3 {
        line: u64,
        #[source]
        source: ConversationError,
    },
}

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ConversionSummary {
    pub conversations: u64,
    pub messages: u64,
    pub blank_lines_dropped: u64,
}

/// Rewrites a v3 (ShareGPT) file as v4 (`messages`), line by line in one pass: `human` → `user`,
/// `gpt` → `assistant`, `value` → `content`; weights, `split` and other top-level keys are kept.
/// Stops at the first line that is not a v3 conversation: validate first to see every problem.
pub fn convert_v3_to_v4<R: Read, W: Write>(
    reader: R,
    mut writer: W,
    max_line_bytes: usize,
) -> Result<ConversionSummary, ConversionError> {
    let mut lines = LineReader::new(reader, max_line_bytes);
    let mut summary = ConversionSummary::default();
    let mut line_number = 0;
    loop {
        let line = lines.next_line().map_err(|source| ConversionError::Read {
            line: line_number + 1,
            source,
        })?;
        let (number, bytes) = match line {
            None => break,
            Some(Line::TooLong { number, .. }) => {
                return Err(ConversionError::LineTooLong {
                    line: number,
                    max_line_bytes,
                });
            }
            Some(Line::Complete { number, bytes, .. }) => (number, bytes),
        };
        line_number = number;
        let bytes = strip_line(bytes, number);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            summary.blank_lines_dropped += 1;
            continue;
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|source| ConversionError::InvalidJson {
                line: number,
                source,
            })?;
        let conversation =
            Conversation::from_json(&value, &DatasetFormat::V3).map_err(|source| {
                ConversionError::NotV3 {
                    line: number,
                    source,
                }
            })?;
        summary.conversations += 1;
        summary.messages += conversation.messages.len() as u64;
        let mut out = conversation.to_json_line(&DatasetFormat::V4);
        out.push('\n');
        writer
            .write_all(out.as_bytes())
            .map_err(ConversionError::Write)?;
    }
    writer.flush().map_err(ConversionError::Write)?;
    Ok(summary)
}

/// Drops a trailing `\r` and, on line 1, a UTF-8 byte-order mark.
pub(crate) fn strip_line(bytes: &[u8], number: u64) -> &[u8] {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if number == 1 {
        bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
    } else {
        bytes
    }
}
