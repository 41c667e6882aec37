//! JSONL chat datasets: format detection, the streaming validator, statistics, and the v3 → v4
//! conversion. The rules are PRODUCT.md's "Dataset formats" section; each rule has a machine
//! [`IssueCode`], a line, a byte offset, a field path and a human message with a suggestion.

mod convert;
mod detect;
mod lines;
mod parallel;
mod report;
mod validate;

pub use convert::{
    ChatMessage, Conversation, ConversationError, ConversionError, ConversionSummary, Role, Split,
    convert_v3_to_v4,
};
pub use detect::{FormatGuess, HeadExtent, detect_format};
pub use lines::{Line, LineReader};
pub use report::{
    Completion, DatasetStatistics, DatasetValidationColumns, Issue, IssueCode, Severity,
    SplitCounts, SplitSource, TokenStatistics, TurnStatistics, ValidationReport,
};
pub use validate::{
    ContextWindow, DEFAULT_HOLDOUT_PERCENT, Progress, ValidationMode, ValidationOptions, Validator,
    ValidatorError, in_holdout, line_hash, validate, validate_with_progress,
};
