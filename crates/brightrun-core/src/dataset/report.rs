//! What validation produces: the issues found and the statistics of the conversations that passed.
//! Serialized as-is for the CLI (`--json`) and the UI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DatasetFormat, StoredValidationError};
use crate::text_enum::text_enum;

/// Whether an issue blocks upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The file cannot be trained on as it is.
    Error,
    /// Worth a look; training can go ahead.
    Warning,
}

text_enum! {
    /// A machine code per rule; the UI and scripts branch on these, never on message text.
    /// For v3 files the `messages_*`/`role_*`/`content_*` codes apply to `conversations`, `from`
    /// and `value`; the field path names the real key.
    pub enum IssueCode {
        // Errors: the line itself.
        NotUtf8 => "not_utf8",
        LineTooLong => "line_too_long",
        InvalidJson => "invalid_json",
        NotObject => "not_object",
        MixedFormats => "mixed_formats",
        InvalidSplit => "invalid_split",
        // Errors: the message list.
        MessagesMissing => "messages_missing",
        MessagesNotList => "messages_not_list",
        MessagesEmpty => "messages_empty",
        // Errors: one message.
        MessageNotObject => "message_not_object",
        RoleMissing => "role_missing",
        UnknownRole => "unknown_role",
        ContentMissing => "content_missing",
        ContentNotString => "content_not_string",
        ContentEmpty => "content_empty",
        InvalidWeight => "invalid_weight",
        // Errors: the order of messages.
        SystemNotFirst => "system_not_first",
        ConsecutiveSameRole => "consecutive_same_role",
        NoAssistantTurn => "no_assistant_turn",
        LastTurnNotAssistant => "last_turn_not_assistant",
        // Errors: the file.
        NoExamples => "no_examples",
        // Warnings.
        UnknownKey => "unknown_key",
        WeightIgnored => "weight_ignored",
        NoUserMessage => "no_user_message",
        NoTrainableTurn => "no_trainable_turn",
        ExceedsContext => "exceeds_context",
        DuplicateExample => "duplicate_example",
        BlankLine => "blank_line",
        TooFewExamples => "too_few_examples",
    }
}

impl IssueCode {
    /// Errors block upload; warnings do not. Unknown codes (from a newer version) count as errors,
    /// the safe side.
    pub fn severity(&self) -> Severity {
        match self {
            Self::UnknownKey
            | Self::WeightIgnored
            | Self::NoUserMessage
            | Self::NoTrainableTurn
            | Self::ExceedsContext
            | Self::DuplicateExample
            | Self::BlankLine
            | Self::TooFewExamples => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// One finding, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    /// 1-based line; `None` for findings about the whole file.
    pub line: Option<u64>,
    /// Offset of the line's first byte in the file.
    pub byte_offset: Option<u64>,
    /// e.g. `messages[2].content`; `None` when the whole line is at fault.
    pub field: Option<String>,
    pub message: String,
    pub suggestion: Option<String>,
}

impl Issue {
    /// The shape stored in `datasets.validation_errors`.
    pub fn to_stored(&self) -> StoredValidationError {
        StoredValidationError {
            line: self.line,
            error: self.message.clone(),
            suggestion: self.suggestion.clone(),
            code: Some(self.code.as_str().to_owned()),
            field: self.field.clone(),
            byte_offset: self.byte_offset,
        }
    }
}

/// Where the train/validation split came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum SplitSource {
    /// At least one line carries `"split"`; lines marked `validation` are validation, the rest
    /// training.
    Marked,
    /// No line carries `"split"`: a line is validation when the xxh3-64 hash of its bytes, modulo
    /// 100, is below the holdout percentage (10 by default). The same line always lands on the
    /// same side, on every machine and in every version.
    HashHoldout,
}

/// Counts for one side of the split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct SplitCounts {
    pub conversations: u64,
    /// One per assistant turn with weight 1 (the default): the turn and the context before it.
    pub pairs: u64,
    /// `None` when the tokens were not counted (`ValidationMode::Structural`), never 0 for that.
    pub tokens: Option<u64>,
}

/// Message counts. A turn is one message, of any role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TurnStatistics {
    pub total: u64,
    pub avg_per_conversation: f64,
    pub min_per_conversation: u64,
    pub max_per_conversation: u64,
}

/// Token counts from a real tokenizer. Per-conversation figures include the chat template's
/// per-message overhead; the percentiles are exact (nearest rank).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct TokenStatistics {
    pub tokenizer: String,
    pub total: u64,
    /// Content tokens of assistant messages (weight 0 included).
    pub assistant: u64,
    /// Content tokens of assistant messages the model is trained on (weight 1).
    pub trainable_assistant: u64,
    pub p50_per_conversation: u64,
    pub p95_per_conversation: u64,
    pub max_per_conversation: u64,
    pub avg_per_turn: f64,
    /// Tokens of the training split: what one epoch processes and is billed for.
    pub billable_per_epoch: u64,
    pub epochs: u32,
    /// `billable_per_epoch × epochs`.
    pub estimated_billable: u64,
}

/// Statistics over the conversations that passed every error rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DatasetStatistics {
    /// Non-blank lines read, valid or not.
    pub lines: u64,
    /// Lines that passed every error rule; everything below counts only these.
    pub conversations: u64,
    pub training: SplitCounts,
    pub validation: SplitCounts,
    pub split_source: SplitSource,
    pub turns: TurnStatistics,
    /// `None` when the tokens were not counted (`ValidationMode::Structural`).
    pub tokens: Option<TokenStatistics>,
    /// Lines that repeat an earlier line byte for byte.
    pub duplicates: u64,
}

/// Whether the whole input was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Completion {
    Complete,
    /// The progress hook asked to stop; the report covers the bytes read so far.
    Cancelled,
}

/// The full result of validating one dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct ValidationReport {
    /// The format of the first line that declared one; `None` if no line did.
    pub format: Option<DatasetFormat>,
    pub completion: Completion,
    pub bytes_read: u64,
    pub lines_read: u64,
    /// The first errors found, in file order (capped; see `error_count`).
    pub errors: Vec<Issue>,
    /// The first warnings found, in file order (capped; see `warning_count`).
    pub warnings: Vec<Issue>,
    /// All errors found, including those past the cap.
    pub error_count: u64,
    pub warning_count: u64,
    /// Count per code, including those past the cap.
    pub counts_by_code: BTreeMap<IssueCode, u64>,
    pub statistics: DatasetStatistics,
}

/// The `datasets` columns a validation fills in (what the worker writes after its own run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct DatasetValidationColumns {
    pub total_training_pairs: i64,
    pub total_validation_pairs: i64,
    pub total_tokens: i64,
    pub avg_turns_per_conversation: f64,
    pub avg_tokens_per_turn: f64,
    pub training_ready: bool,
    /// Kept errors first, then kept warnings.
    pub validation_errors: Vec<StoredValidationError>,
}

impl ValidationReport {
    /// The report as `datasets` columns.
    pub fn dataset_columns(&self) -> DatasetValidationColumns {
        let stats = &self.statistics;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        DatasetValidationColumns {
            total_training_pairs: count(stats.training.pairs),
            total_validation_pairs: count(stats.validation.pairs),
            // A structural report has no token figures; the worker, the only writer of these
            // columns, always counts them.
            total_tokens: count(stats.tokens.as_ref().map_or(0, |t| t.total)),
            avg_turns_per_conversation: stats.turns.avg_per_conversation,
            avg_tokens_per_turn: stats.tokens.as_ref().map_or(0.0, |t| t.avg_per_turn),
            training_ready: self.is_valid(),
            validation_errors: self
                .errors
                .iter()
                .chain(&self.warnings)
                .map(Issue::to_stored)
                .collect(),
        }
    }

    /// True when the whole file was read, nothing blocks training and there is something to
    /// train on.
    pub fn is_valid(&self) -> bool {
        self.completion == Completion::Complete
            && self.error_count == 0
            && self.statistics.conversations > 0
    }

    /// Issues past the cap that are counted but not listed.
    pub fn omitted_issues(&self) -> u64 {
        (self.error_count + self.warning_count)
            .saturating_sub((self.errors.len() + self.warnings.len()) as u64)
    }
}
