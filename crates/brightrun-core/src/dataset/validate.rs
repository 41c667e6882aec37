//! The streaming validator: one pass over any reader, bounded memory, every error collected.
//! With more than one thread, batches of lines are checked in parallel and merged into the same
//! report (see `parallel.rs`); the rules live here either way.
//!
//! Memory is bounded by the line cap (one line is held at a time, a longer one is skipped while
//! it is read; with threads, two batches of lines per thread) plus, per line, a 64-bit hash with its line number (duplicate detection) and a
//! 32-bit token count (exact percentiles): about 20 bytes per line, never the lines themselves;
//! and a cache of at most 65,536 token counts of short repeated texts.
//!
//! The train/validation split is decided in the same single pass: both candidate splits are
//! counted as lines go by (by `"split"` marks, and by the hash holdout) and the end of the file
//! picks one — marks if any line had one, the holdout otherwise. See [`SplitSource`].

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::convert::{Role, Split, parse_weight, strip_line};
use super::lines::{Line, LineReader};
use super::report::{
    Completion, DatasetStatistics, Issue, IssueCode, Severity, SplitCounts, SplitSource,
    TokenStatistics, TurnStatistics, ValidationReport,
};
use crate::model::DatasetFormat;
use crate::tokenizer::Tokenizer;

/// The chosen base model's context length, for the `exceeds_context` warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextWindow {
    pub base_model: String,
    pub max_tokens: u64,
}

/// How to validate. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationOptions {
    /// A longer line is an error (`line_too_long`) and is never held in memory. 10 MiB.
    pub max_line_bytes: usize,
    /// Errors kept in the report, and separately warnings kept; all are counted. 1000.
    pub max_issues_kept: usize,
    /// No context check when `None`.
    pub context_window: Option<ContextWindow>,
    /// For the billable-token estimate. 1.
    pub epochs: u32,
    /// Share of lines held out for validation when no line has a `"split"`. 10.
    pub holdout_percent: u8,
    /// The progress hook is called at most once per this many bytes. 1 MiB.
    pub progress_interval_bytes: u64,
    /// Threads that check lines. `None`: one per available core. `Some(1)`: the streaming
    /// single-threaded path, and no thread is started. Any count gives the same report.
    #[serde(default)]
    pub threads: Option<usize>,
    /// With more than one thread, lines go to the threads in batches of about this many bytes
    /// (per-line bookkeeping included), never more than `progress_interval_bytes` so progress
    /// keeps its pace; a batch ends at a line end, so one line over the size can ride along.
    /// At most two batches per thread are in flight. 4 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Every rule and token counts ([`ValidationMode::Full`], the default), or every rule that
    /// needs no tokenizer ([`ValidationMode::Structural`]).
    #[serde(default)]
    pub mode: ValidationMode,
}

/// What a validation computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationMode {
    /// Every rule, and token statistics from the tokenizer.
    #[default]
    Full,
    /// Every rule that needs no token counts, and the statistics that need none: a fast first
    /// pass over a huge file. The tokenizer is never called; the report's token figures
    /// ([`DatasetStatistics::tokens`], [`SplitCounts::tokens`]) are `None`, and the
    /// `exceeds_context` check, which needs them, is not made.
    Structural,
}

fn default_batch_bytes() -> usize {
    4 * 1024 * 1024
}

/// The share of lines held out for validation when no line has a `"split"` mark.
pub const DEFAULT_HOLDOUT_PERCENT: u8 = 10;

/// The hash every line is known by (duplicates, the holdout): xxh3-64 of its bytes.
pub fn line_hash(line: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(line)
}

/// The hash holdout: a line whose [`line_hash`] modulo 100 is below `percent` is a validation
/// line. Deterministic, so the validator's counts and the trainer's split agree, run after run.
pub fn in_holdout(line_hash: u64, percent: u8) -> bool {
    line_hash % 100 < u64::from(percent)
}

impl Default for ValidationOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: 10 * 1024 * 1024,
            max_issues_kept: 1000,
            context_window: None,
            epochs: 1,
            holdout_percent: DEFAULT_HOLDOUT_PERCENT,
            progress_interval_bytes: 1024 * 1024,
            threads: None,
            batch_bytes: default_batch_bytes(),
            mode: ValidationMode::Full,
        }
    }
}

/// Passed to the progress hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub bytes_read: u64,
    pub lines_read: u64,
    pub errors: u64,
}

/// Validation itself never fails on content (that is what the report is for); only the reader
/// can.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    #[error("reading the dataset failed after {bytes_read} bytes")]
    Read {
        bytes_read: u64,
        #[source]
        source: io::Error,
    },
}

/// Validates a whole dataset from `reader`.
pub fn validate<R: Read>(
    reader: R,
    options: &ValidationOptions,
    tokenizer: &dyn Tokenizer,
) -> Result<ValidationReport, ValidatorError> {
    validate_with_progress(reader, options, tokenizer, &mut |_| {
        ControlFlow::Continue(())
    })
}

/// Like [`validate`], calling `on_progress` every `progress_interval_bytes` and once at the end;
/// returning `Break` stops early with a [`Completion::Cancelled`] report.
///
/// Uses [`ValidationOptions::threads`] threads. The reader is read and `on_progress` called on
/// the calling thread only, so neither needs to be `Send`; every thread has ended when this
/// returns. A cancelled multi-threaded run stops at a batch boundary and reports the lines
/// before it.
pub fn validate_with_progress<R: Read>(
    reader: R,
    options: &ValidationOptions,
    tokenizer: &dyn Tokenizer,
    on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<ValidationReport, ValidatorError> {
    let threads = options.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if threads > 1 {
        super::parallel::validate(reader, options, tokenizer, threads, on_progress)
    } else {
        validate_streaming(reader, options, tokenizer, on_progress)
    }
}

/// The single-threaded path: one line at a time through one [`Validator`].
fn validate_streaming<R: Read>(
    reader: R,
    options: &ValidationOptions,
    tokenizer: &dyn Tokenizer,
    on_progress: &mut dyn FnMut(Progress) -> ControlFlow<()>,
) -> Result<ValidationReport, ValidatorError> {
    let mut lines = LineReader::new(reader, options.max_line_bytes);
    let mut validator = Validator::new(options.clone(), tokenizer);
    let interval = options.progress_interval_bytes.max(1);
    let mut next_report = interval;
    let mut completion = Completion::Complete;
    loop {
        let line = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(source) => {
                return Err(ValidatorError::Read {
                    bytes_read: lines.bytes_read(),
                    source,
                });
            }
        };
        validator.push_line(line);
        let bytes_read = lines.bytes_read();
        if bytes_read >= next_report {
            next_report = bytes_read - bytes_read % interval + interval;
            if on_progress(validator.progress(bytes_read)).is_break() {
                completion = Completion::Cancelled;
                break;
            }
        }
    }
    let bytes_read = lines.bytes_read();
    // The final call is informational: the work is done, so a `Break` here changes nothing.
    let _ = on_progress(validator.progress(bytes_read));
    Ok(validator.finish(completion, bytes_read))
}

/// `HashMap` keys that are already 64-bit hashes need no second hashing.
#[derive(Default)]
pub(super) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// A map keyed by [`line_hash`]es or other 64-bit hashes.
pub(super) type HashKeyed<V> = HashMap<u64, V, BuildHasherDefault<Prehashed>>;

/// Token counts of recently seen message texts by hash. See [`Validator::count_tokens`].
pub(super) type TokenCache = HashKeyed<u64>;

/// How a validator finds exact duplicates.
enum DuplicateCheck {
    /// It sees every line of the file: each line's hash is looked up as it arrives, and the
    /// first line with a hash is the original.
    Inline(HashKeyed<u64>),
    /// It checks one batch of a multi-threaded run and cannot know the lines of earlier
    /// batches: it keeps every checked line's hash, in line order, for the merge to look up
    /// (see [`Validator::absorb`]). Bounded by the batch size.
    Deferred(Vec<SeenLine>),
}

/// A line that reached the duplicate check: a JSON object.
struct SeenLine {
    hash: u64,
    number: u64,
    byte_offset: u64,
}

/// Where in the file the line being checked is, and whether it has failed a rule yet.
struct LineContext {
    number: u64,
    byte_offset: u64,
    has_error: bool,
}

/// The validator's state between lines. Use [`validate`] for a reader; push lines yourself when
/// they arrive some other way (e.g. in chunks from a UI).
pub struct Validator<'t> {
    options: ValidationOptions,
    tokenizer: &'t dyn Tokenizer,
    /// The file's format and the line that set it: the first line that declared one.
    format: Option<(DatasetFormat, u64)>,
    /// `format` before the first line this validator saw: `None` for a whole file; for a batch,
    /// what the lines before the batch had set. The merge checks that it matches.
    format_at_start: Option<(DatasetFormat, u64)>,
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
    error_count: u64,
    warning_count: u64,
    counts_by_code: BTreeMap<IssueCode, u64>,
    duplicate_check: DuplicateCheck,
    lines_read: u64,
    nonblank_lines: u64,
    duplicates: u64,
    conversations: u64,
    turns_total: u64,
    turns_min: u64,
    turns_max: u64,
    tokens_total: u64,
    tokens_assistant: u64,
    tokens_trainable: u64,
    tokens_per_conversation: Vec<u32>,
    /// Token counts of recently seen message texts by hash: system prompts and stock replies
    /// repeat on every line, and BPE is the slowest step. Bounded; cleared when full.
    token_cache: TokenCache,
    any_split_mark: bool,
    /// [train, validation] by `"split"` marks.
    by_marks: [SideCounts; 2],
    /// [train, validation] by the hash holdout.
    by_holdout: [SideCounts; 2],
}

/// One side of a candidate split, counted as lines go by; the report's [`SplitCounts`] at the
/// end (without tokens when they were not counted).
#[derive(Debug, Clone, Copy, Default)]
struct SideCounts {
    conversations: u64,
    pairs: u64,
    tokens: u64,
}

impl SideCounts {
    fn report(self, mode: ValidationMode) -> SplitCounts {
        SplitCounts {
            conversations: self.conversations,
            pairs: self.pairs,
            tokens: (mode == ValidationMode::Full).then_some(self.tokens),
        }
    }
}

/// One message as read, before the conversation-level rules.
struct MessageView<'v> {
    role: Option<Role>,
    content: Option<&'v str>,
    weight: Option<u8>,
}

impl<'t> Validator<'t> {
    pub fn new(options: ValidationOptions, tokenizer: &'t dyn Tokenizer) -> Self {
        Self::with_parts(
            options,
            tokenizer,
            None,
            DuplicateCheck::Inline(HashKeyed::default()),
            TokenCache::default(),
        )
    }

    /// A validator for one batch of lines of a multi-threaded run (see [`Self::absorb`]).
    /// `format_at_start` is the file's format as the lines before the batch left it, so the
    /// batch's format rules come out as a whole-file pass would give them; `token_cache` is lent
    /// by the thread, which keeps it from batch to batch ([`Self::take_token_cache`]).
    pub(super) fn for_batch(
        options: ValidationOptions,
        tokenizer: &'t dyn Tokenizer,
        format_at_start: Option<(DatasetFormat, u64)>,
        token_cache: TokenCache,
    ) -> Self {
        Self::with_parts(
            options,
            tokenizer,
            format_at_start,
            DuplicateCheck::Deferred(Vec::new()),
            token_cache,
        )
    }

    fn with_parts(
        options: ValidationOptions,
        tokenizer: &'t dyn Tokenizer,
        format_at_start: Option<(DatasetFormat, u64)>,
        duplicate_check: DuplicateCheck,
        token_cache: TokenCache,
    ) -> Self {
        Self {
            options,
            tokenizer,
            format: format_at_start.clone(),
            format_at_start,
            errors: Vec::new(),
            warnings: Vec::new(),
            error_count: 0,
            warning_count: 0,
            counts_by_code: BTreeMap::new(),
            duplicate_check,
            lines_read: 0,
            nonblank_lines: 0,
            duplicates: 0,
            conversations: 0,
            turns_total: 0,
            turns_min: u64::MAX,
            turns_max: 0,
            tokens_total: 0,
            tokens_assistant: 0,
            tokens_trainable: 0,
            tokens_per_conversation: Vec::new(),
            token_cache,
            any_split_mark: false,
            by_marks: [SideCounts::default(); 2],
            by_holdout: [SideCounts::default(); 2],
        }
    }

    fn count_tokens(&mut self, text: &str) -> u64 {
        const MAX_ENTRIES: usize = 1 << 16;
        const MAX_TEXT_BYTES: usize = 4096;
        if text.len() > MAX_TEXT_BYTES {
            return self.tokenizer.count_tokens(text);
        }
        let key = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        if let Some(&tokens) = self.token_cache.get(&key) {
            return tokens;
        }
        let tokens = self.tokenizer.count_tokens(text);
        if self.token_cache.len() >= MAX_ENTRIES {
            self.token_cache.clear();
        }
        self.token_cache.insert(key, tokens);
        tokens
    }

    /// A snapshot for a progress bar.
    pub fn progress(&self, bytes_read: u64) -> Progress {
        Progress {
            bytes_read,
            lines_read: self.lines_read,
            errors: self.error_count,
        }
    }

    /// The file's format and the line that declared it, once a line has.
    pub(super) fn file_format(&self) -> Option<&(DatasetFormat, u64)> {
        self.format.as_ref()
    }

    /// Hands the token cache back to the thread that lent it (see [`Self::for_batch`]).
    pub(super) fn take_token_cache(&mut self) -> TokenCache {
        std::mem::take(&mut self.token_cache)
    }

    /// Adds the batch that follows the lines seen so far, as if its lines had been pushed here:
    /// counts and statistics add up; kept errors and warnings continue in line order under the
    /// same cap; the batch's lines are checked for duplicates here, against every earlier line,
    /// and each duplicate warning goes where a whole-file pass records it (first among its
    /// line's warnings). Batches must come in file order, each made with the format the previous
    /// one left ([`Self::file_format`]).
    pub(super) fn absorb(&mut self, batch: Validator<'_>) {
        // Destructured in full so that a new field cannot be forgotten here.
        let Validator {
            options: _,
            tokenizer: _,
            format,
            format_at_start,
            errors,
            warnings,
            error_count,
            warning_count,
            counts_by_code,
            duplicate_check,
            lines_read,
            nonblank_lines,
            duplicates,
            conversations,
            turns_total,
            turns_min,
            turns_max,
            tokens_total,
            tokens_assistant,
            tokens_trainable,
            tokens_per_conversation,
            token_cache: _,
            any_split_mark,
            by_marks,
            by_holdout,
        } = batch;
        debug_assert_eq!(
            self.format, format_at_start,
            "a batch must start from the format the lines before it left"
        );
        self.format = format;
        let cap = self.options.max_issues_kept;
        self.error_count += error_count;
        let room = cap.saturating_sub(self.errors.len());
        self.errors.extend(errors.into_iter().take(room));
        self.warning_count += warning_count;
        for (code, count) in counts_by_code {
            *self.counts_by_code.entry(code).or_insert(0) += count;
        }
        debug_assert!(
            matches!(duplicate_check, DuplicateCheck::Deferred(_)),
            "only batch validators are absorbed: a whole-file one kept its hashes to itself"
        );
        let seen = match duplicate_check {
            DuplicateCheck::Deferred(seen) => seen,
            DuplicateCheck::Inline(_) => Vec::new(),
        };
        let mut seen = seen.into_iter().peekable();
        for warning in warnings {
            let line = warning.line.unwrap_or(u64::MAX);
            while let Some(earlier) = seen.next_if(|s| s.number <= line) {
                self.check_duplicate(earlier);
            }
            if self.warnings.len() < cap {
                self.warnings.push(warning);
            }
        }
        for rest in seen {
            self.check_duplicate(rest);
        }
        self.lines_read += lines_read;
        self.nonblank_lines += nonblank_lines;
        self.duplicates += duplicates;
        self.conversations += conversations;
        self.turns_total += turns_total;
        self.turns_min = self.turns_min.min(turns_min);
        self.turns_max = self.turns_max.max(turns_max);
        self.tokens_total += tokens_total;
        self.tokens_assistant += tokens_assistant;
        self.tokens_trainable += tokens_trainable;
        self.tokens_per_conversation.extend(tokens_per_conversation);
        self.any_split_mark |= any_split_mark;
        for (mine, theirs) in self
            .by_marks
            .iter_mut()
            .chain(&mut self.by_holdout)
            .zip(by_marks.iter().chain(&by_holdout))
        {
            mine.conversations += theirs.conversations;
            mine.pairs += theirs.pairs;
            mine.tokens += theirs.tokens;
        }
    }

    fn record(
        &mut self,
        line: Option<&mut LineContext>,
        code: IssueCode,
        field: Option<String>,
        message: String,
        suggestion: Option<String>,
    ) {
        let severity = code.severity();
        *self.counts_by_code.entry(code.clone()).or_insert(0) += 1;
        let (list, count) = match severity {
            Severity::Error => (&mut self.errors, &mut self.error_count),
            Severity::Warning => (&mut self.warnings, &mut self.warning_count),
        };
        *count += 1;
        let (number, byte_offset) = match line {
            Some(line) => {
                line.has_error |= severity == Severity::Error;
                (Some(line.number), Some(line.byte_offset))
            }
            None => (None, None),
        };
        if list.len() < self.options.max_issues_kept {
            list.push(Issue {
                severity,
                code,
                line: number,
                byte_offset,
                field,
                message,
                suggestion,
            });
        }
    }

    /// Checks one line.
    pub fn push_line(&mut self, line: Line<'_>) {
        self.lines_read += 1;
        match line {
            Line::TooLong {
                number,
                byte_offset,
                length,
            } => {
                self.nonblank_lines += 1;
                let mut context = LineContext {
                    number,
                    byte_offset,
                    has_error: false,
                };
                let cap = self.options.max_line_bytes;
                self.record(
                    Some(&mut context),
                    IssueCode::LineTooLong,
                    None,
                    format!("line is {length} bytes long; the limit is {cap} bytes"),
                    Some(
                        "Split very long conversations into several lines, or check that the \
                         file really is JSONL (one conversation per line)"
                            .to_owned(),
                    ),
                );
            }
            Line::Complete {
                number,
                byte_offset,
                bytes,
            } => {
                let mut context = LineContext {
                    number,
                    byte_offset,
                    has_error: false,
                };
                self.check_line(&mut context, bytes);
            }
        }
    }

    fn check_line(&mut self, line: &mut LineContext, raw: &[u8]) {
        let bytes = strip_line(raw, line.number);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            self.record(
                Some(line),
                IssueCode::BlankLine,
                None,
                "blank line".to_owned(),
                Some("Remove empty lines between conversations".to_owned()),
            );
            return;
        }
        self.nonblank_lines += 1;
        let text = match line_text(bytes) {
            Ok(text) => text,
            Err(valid_up_to) => {
                let utf16 = line.number == 1
                    && (raw.starts_with(b"\xFF\xFE") || raw.starts_with(b"\xFE\xFF"));
                let suggestion = if utf16 {
                    "The file is UTF-16; save it as UTF-8"
                } else {
                    "Save the file as UTF-8 (it may be Latin-1 or Windows-1252)"
                };
                self.record(
                    Some(line),
                    IssueCode::NotUtf8,
                    None,
                    format!(
                        "line is not valid UTF-8 (first bad byte at column {})",
                        valid_up_to + 1
                    ),
                    Some(suggestion.to_owned()),
                );
                return;
            }
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                let suggestion = json_suggestion(&error, text, line.number);
                self.record(
                    Some(line),
                    IssueCode::InvalidJson,
                    None,
                    format!("line is not valid JSON: {error}"),
                    Some(suggestion),
                );
                return;
            }
        };
        let Some(object) = value.as_object() else {
            self.record(
                Some(line),
                IssueCode::NotObject,
                None,
                format!("line is a JSON {}, not an object", kind(&value)),
                Some("Each line must be one object: {\"messages\": [...]}".to_owned()),
            );
            return;
        };
        let hash = line_hash(bytes);
        self.check_duplicate(SeenLine {
            hash,
            number: line.number,
            byte_offset: line.byte_offset,
        });
        let Some(format) = self.line_format(line, object) else {
            return;
        };
        self.check_conversation(line, object, &format, hash);
    }

    /// Whether the line repeats an earlier one (a warning that never stops the line from
    /// counting). The first line with a hash is the original, so this must see lines in file
    /// order; a batch validator leaves it to the merge.
    fn check_duplicate(&mut self, seen: SeenLine) {
        let first = match &mut self.duplicate_check {
            DuplicateCheck::Deferred(lines) => {
                lines.push(seen);
                return;
            }
            DuplicateCheck::Inline(first_line_by_hash) => match first_line_by_hash.entry(seen.hash)
            {
                Entry::Occupied(first) => *first.get(),
                Entry::Vacant(slot) => {
                    slot.insert(seen.number);
                    return;
                }
            },
        };
        self.duplicates += 1;
        let mut line = LineContext {
            number: seen.number,
            byte_offset: seen.byte_offset,
            has_error: false,
        };
        self.record(
            Some(&mut line),
            IssueCode::DuplicateExample,
            None,
            format!("exact duplicate of line {first}"),
            Some(
                "Remove duplicates: they over-weight one example and can leak into the \
                 validation split"
                    .to_owned(),
            ),
        );
    }

    /// Which format this line is in, reporting format errors; `None` when the line has no list.
    fn line_format(
        &mut self,
        line: &mut LineContext,
        object: &Map<String, Value>,
    ) -> Option<DatasetFormat> {
        let format = match (
            object.contains_key("messages"),
            object.contains_key("conversations"),
        ) {
            (true, true) => {
                self.record(
                    Some(line),
                    IssueCode::MixedFormats,
                    None,
                    "line has both `messages` (v4) and `conversations` (v3)".to_owned(),
                    Some("Keep only `messages`".to_owned()),
                );
                // Already reported as mixed: do not report it again against the file's format.
                return Some(DatasetFormat::V4);
            }
            (true, false) => DatasetFormat::V4,
            (false, true) => DatasetFormat::V3,
            (false, false) => {
                let file_format = self
                    .format
                    .as_ref()
                    .map_or(DatasetFormat::V4, |(format, _)| format.clone());
                let (list_key, _, _) = keys(&file_format);
                let suggestion = if object.contains_key("prompt")
                    || object.contains_key("completion")
                {
                    "Prompt/completion pairs are not a chat format: write {\"messages\": \
                     [{\"role\": \"user\", \"content\": <prompt>}, {\"role\": \"assistant\", \
                     \"content\": <completion>}]}"
                } else {
                    "Every line needs {\"messages\": [{\"role\": \"user\", \"content\": \"…\"}, \
                     {\"role\": \"assistant\", \"content\": \"…\"}]}"
                };
                self.record(
                    Some(line),
                    IssueCode::MessagesMissing,
                    Some(list_key.to_owned()),
                    format!("line has no `{list_key}` list"),
                    Some(suggestion.to_owned()),
                );
                return None;
            }
        };
        match &self.format {
            None => self.format = Some((format.clone(), line.number)),
            Some((file_format, first_line)) if *file_format != format => {
                let message = format!(
                    "line is {} but the file is {} (since line {first_line})",
                    describe(&format),
                    describe(file_format),
                );
                let (list_key, _, _) = keys(&format);
                self.record(
                    Some(line),
                    IssueCode::MixedFormats,
                    Some(list_key.to_owned()),
                    message,
                    Some(
                        "Use one format per file; convert ShareGPT lines to `messages` with \
                         `brightrun datasets convert IN OUT`"
                            .to_owned(),
                    ),
                );
            }
            Some(_) => {}
        }
        Some(format)
    }

    fn check_conversation(
        &mut self,
        line: &mut LineContext,
        object: &Map<String, Value>,
        format: &DatasetFormat,
        hash: u64,
    ) {
        let (list_key, _, _) = keys(format);
        for key in object.keys() {
            if key != list_key && key != "split" && key != "messages" && key != "conversations" {
                self.record(
                    Some(line),
                    IssueCode::UnknownKey,
                    Some(key.clone()),
                    format!("unknown key `{key}` is ignored"),
                    Some(format!(
                        "Only `{list_key}` and `split` are read; remove `{key}` unless you keep it \
                         on purpose"
                    )),
                );
            }
        }
        let mut split = None;
        if let Some(value) = object.get("split") {
            match value.as_str().and_then(Split::parse) {
                Some(parsed) => split = Some(parsed),
                None => self.record(
                    Some(line),
                    IssueCode::InvalidSplit,
                    Some("split".to_owned()),
                    format!(
                        "`split` is {}, not \"train\" or \"validation\"",
                        describe_value(value)
                    ),
                    Some(
                        "Use \"split\": \"train\" or \"split\": \"validation\", or leave it out"
                            .to_owned(),
                    ),
                ),
            }
            self.any_split_mark = true;
        }
        let list = match object.get(list_key) {
            Some(Value::Array(list)) if list.is_empty() => {
                self.record(
                    Some(line),
                    IssueCode::MessagesEmpty,
                    Some(list_key.to_owned()),
                    format!("`{list_key}` is empty"),
                    Some("Add at least a user message and the assistant reply".to_owned()),
                );
                return;
            }
            Some(Value::Array(list)) => list,
            other => {
                let found =
                    other.map_or("missing".to_owned(), |value| format!("a {}", kind(value)));
                self.record(
                    Some(line),
                    IssueCode::MessagesNotList,
                    Some(list_key.to_owned()),
                    format!("`{list_key}` is {found}, not a list"),
                    Some(format!(
                        "`{list_key}` must be a list of message objects: [{{…}}, {{…}}]"
                    )),
                );
                return;
            }
        };

        let mut messages = Vec::with_capacity(list.len());
        for (index, item) in list.iter().enumerate() {
            let view = self.check_message(line, format, index, item);
            messages.push(view);
        }
        self.check_order(line, format, &messages);
        if line.has_error {
            return;
        }

        let trainable_pairs = messages
            .iter()
            .filter(|m| m.role == Some(Role::Assistant) && m.weight != Some(0))
            .count() as u64;
        if trainable_pairs == 0 {
            self.record(
                Some(line),
                IssueCode::NoTrainableTurn,
                Some(list_key.to_owned()),
                "every assistant turn has weight 0: nothing in this line is trained on".to_owned(),
                Some("Set \"weight\": 1 (or remove `weight`) on the reply to learn".to_owned()),
            );
        }
        let mut conversation_tokens = 0u64;
        if self.options.mode == ValidationMode::Full {
            conversation_tokens = self.count_conversation(line, &messages);
        }

        let turns = messages.len() as u64;
        self.conversations += 1;
        self.turns_total += turns;
        self.turns_min = self.turns_min.min(turns);
        self.turns_max = self.turns_max.max(turns);
        self.tokens_total += conversation_tokens;
        if self.options.mode == ValidationMode::Full {
            self.tokens_per_conversation
                .push(u32::try_from(conversation_tokens).unwrap_or(u32::MAX));
        }
        let side = |validation: bool| usize::from(validation);
        let by_marks = &mut self.by_marks[side(split == Some(Split::Validation))];
        let by_holdout = &mut self.by_holdout[side(in_holdout(hash, self.options.holdout_percent))];
        for counts in [by_marks, by_holdout] {
            counts.conversations += 1;
            counts.pairs += trainable_pairs;
            counts.tokens += conversation_tokens;
        }
    }

    /// The conversation's tokens (content plus the template's per-message overhead), adding the
    /// assistant figures as it goes, and the `exceeds_context` check.
    fn count_conversation(&mut self, line: &mut LineContext, messages: &[MessageView<'_>]) -> u64 {
        let overhead = self.tokenizer.message_overhead_tokens();
        let mut conversation_tokens = 0u64;
        for message in messages {
            let content_tokens = self.count_tokens(message.content.unwrap_or(""));
            conversation_tokens += content_tokens + overhead;
            if message.role == Some(Role::Assistant) {
                self.tokens_assistant += content_tokens;
                if message.weight != Some(0) {
                    self.tokens_trainable += content_tokens;
                }
            }
        }
        if let Some(window) = &self.options.context_window
            && conversation_tokens > window.max_tokens
        {
            let message = format!(
                "conversation has {conversation_tokens} tokens; {} reads at most {}",
                window.base_model, window.max_tokens
            );
            self.record(
                Some(line),
                IssueCode::ExceedsContext,
                None,
                message,
                Some(
                    "Shorten or split the conversation: tokens past the context are cut off in \
                     training"
                        .to_owned(),
                ),
            );
        }

        conversation_tokens
    }

    fn check_message<'v>(
        &mut self,
        line: &mut LineContext,
        format: &DatasetFormat,
        index: usize,
        item: &'v Value,
    ) -> MessageView<'v> {
        let (list_key, role_key, content_key) = keys(format);
        let path = |key: &str| format!("{list_key}[{index}].{key}");
        let mut view = MessageView {
            role: None,
            content: None,
            weight: None,
        };
        let Some(message) = item.as_object() else {
            self.record(
                Some(line),
                IssueCode::MessageNotObject,
                Some(format!("{list_key}[{index}]")),
                format!("message {index} is a {}, not an object", kind(item)),
                Some(format!(
                    "Write each message as {{\"{role_key}\": …, \"{content_key}\": …}}"
                )),
            );
            return view;
        };
        let roles = known_roles(format);
        match message.get(role_key) {
            None => self.record(
                Some(line),
                IssueCode::RoleMissing,
                Some(path(role_key)),
                format!("message {index} has no `{role_key}`"),
                Some(format!("Add \"{role_key}\": one of {roles}")),
            ),
            Some(Value::String(text)) => match Role::parse(text, format) {
                Some(role) => view.role = Some(role),
                None => self.record(
                    Some(line),
                    IssueCode::UnknownRole,
                    Some(path(role_key)),
                    format!("unknown {role_key} \"{text}\"; expected one of {roles}"),
                    Some(role_suggestion(text, format)),
                ),
            },
            Some(other) => self.record(
                Some(line),
                IssueCode::UnknownRole,
                Some(path(role_key)),
                format!("`{role_key}` is a {}, not a string", kind(other)),
                Some(format!("Use one of {roles}")),
            ),
        }
        match message.get(content_key) {
            None => self.record(
                Some(line),
                IssueCode::ContentMissing,
                Some(path(content_key)),
                format!("message {index} has no `{content_key}`"),
                Some(format!(
                    "Add \"{content_key}\": \"…\" with the message text"
                )),
            ),
            Some(Value::String(text)) if text.trim().is_empty() => self.record(
                Some(line),
                IssueCode::ContentEmpty,
                Some(path(content_key)),
                format!("`{content_key}` of message {index} is empty"),
                Some("Write the message text, or remove the message".to_owned()),
            ),
            Some(Value::String(text)) => view.content = Some(text),
            Some(other) => {
                let suggestion = if other.is_array() {
                    "Content parts (lists) are not supported: join the text parts into one string"
                        .to_owned()
                } else {
                    format!("`{content_key}` must be a string: quote it")
                };
                self.record(
                    Some(line),
                    IssueCode::ContentNotString,
                    Some(path(content_key)),
                    format!("`{content_key}` is a {}, not a string", kind(other)),
                    Some(suggestion),
                );
            }
        }
        if let Some(weight) = message.get("weight") {
            match view.role {
                Some(Role::Assistant) => match parse_weight(weight) {
                    Some(parsed) => view.weight = Some(parsed),
                    None => self.record(
                        Some(line),
                        IssueCode::InvalidWeight,
                        Some(path("weight")),
                        format!("`weight` is {}; it must be 0 or 1", describe_value(weight)),
                        Some("Use 1 to train on this reply, 0 to skip it".to_owned()),
                    ),
                },
                Some(role) => self.record(
                    Some(line),
                    IssueCode::WeightIgnored,
                    Some(path("weight")),
                    format!(
                        "`weight` on a {} message is ignored; only assistant turns are weighted",
                        role.spelling(format)
                    ),
                    Some("Remove `weight` from non-assistant messages".to_owned()),
                ),
                None => {}
            }
        }
        for key in message.keys() {
            if key != role_key && key != content_key && key != "weight" {
                let suggestion = match (format, key.as_str()) {
                    (DatasetFormat::V4, "from" | "value") => {
                        "This looks like ShareGPT (v3): use `role`/`content`, or put the list \
                         under `conversations`"
                            .to_owned()
                    }
                    (DatasetFormat::V3, "role" | "content") => {
                        "This looks like the `messages` format (v4): use `from`/`value`, or put \
                         the list under `messages`"
                            .to_owned()
                    }
                    _ => format!("Remove `{key}`; it is not used in training"),
                };
                self.record(
                    Some(line),
                    IssueCode::UnknownKey,
                    Some(path(key)),
                    format!("unknown key `{key}` in message {index} is ignored"),
                    Some(suggestion),
                );
            }
        }
        view
    }

    fn check_order(
        &mut self,
        line: &mut LineContext,
        format: &DatasetFormat,
        messages: &[MessageView<'_>],
    ) {
        let (list_key, role_key, _) = keys(format);
        let path = |index: usize| format!("{list_key}[{index}].{role_key}");
        for (index, message) in messages.iter().enumerate() {
            if index > 0 && message.role == Some(Role::System) {
                self.record(
                    Some(line),
                    IssueCode::SystemNotFirst,
                    Some(path(index)),
                    format!(
                        "system message at position {index}; only the first message may be system"
                    ),
                    Some(
                        "Move the system prompt to the start, or merge it into the first one"
                            .to_owned(),
                    ),
                );
            }
        }
        for (index, pair) in messages.windows(2).enumerate() {
            if let (Some(previous), Some(current)) = (pair[0].role, pair[1].role)
                && previous == current
                && current != Role::System
            {
                let other = match current {
                    Role::User => Role::Assistant,
                    _ => Role::User,
                };
                self.record(
                    Some(line),
                    IssueCode::ConsecutiveSameRole,
                    Some(path(index + 1)),
                    format!(
                        "messages {index} and {} are both {}",
                        index + 1,
                        current.spelling(format)
                    ),
                    Some(format!(
                        "Merge them into one message, or add the missing {} turn between them",
                        other.spelling(format)
                    )),
                );
            }
        }
        // With an unreadable role the conversation-level rules would only echo that error.
        if messages.iter().any(|m| m.role.is_none()) {
            return;
        }
        let last = messages.len() - 1;
        if !messages.iter().any(|m| m.role == Some(Role::Assistant)) {
            self.record(
                Some(line),
                IssueCode::NoAssistantTurn,
                Some(list_key.to_owned()),
                "no assistant message: there is nothing to learn".to_owned(),
                Some(format!(
                    "Add the reply the model should learn as a final {} message",
                    Role::Assistant.spelling(format)
                )),
            );
        } else if let Some(role) = messages[last].role
            && role != Role::Assistant
        {
            self.record(
                Some(line),
                IssueCode::LastTurnNotAssistant,
                Some(path(last)),
                format!(
                    "the conversation ends with a {} message",
                    role.spelling(format)
                ),
                Some(
                    "End with the assistant reply to learn, or drop the trailing message"
                        .to_owned(),
                ),
            );
        }
        if !messages.iter().any(|m| m.role == Some(Role::User)) {
            self.record(
                Some(line),
                IssueCode::NoUserMessage,
                Some(list_key.to_owned()),
                "no user message: the model learns replies without a question".to_owned(),
                Some(format!(
                    "Add the {} message the assistant answers",
                    Role::User.spelling(format)
                )),
            );
        }
    }

    /// File-level rules, the split decision and the statistics.
    pub fn finish(mut self, completion: Completion, bytes_read: u64) -> ValidationReport {
        if self.nonblank_lines == 0 && completion == Completion::Complete {
            self.record(
                None,
                IssueCode::NoExamples,
                None,
                "the file has no conversations".to_owned(),
                Some("Write one JSON conversation per line".to_owned()),
            );
        } else if self.conversations > 0 && self.conversations < 10 {
            let count = self.conversations;
            self.record(
                None,
                IssueCode::TooFewExamples,
                None,
                format!("only {count} valid conversation(s); fine-tuning needs at least 10"),
                Some(
                    "Add examples: 50–100 good conversations is a common starting point".to_owned(),
                ),
            );
        }
        let (split_source, [training, validation]) = if self.any_split_mark {
            (SplitSource::Marked, self.by_marks)
        } else {
            (SplitSource::HashHoldout, self.by_holdout)
        };
        let mode = self.options.mode;
        let tokens = (mode == ValidationMode::Full).then(|| {
            let mut per_conversation = std::mem::take(&mut self.tokens_per_conversation);
            per_conversation.sort_unstable();
            let epochs = self.options.epochs;
            TokenStatistics {
                tokenizer: self.tokenizer.name().to_owned(),
                total: self.tokens_total,
                assistant: self.tokens_assistant,
                trainable_assistant: self.tokens_trainable,
                p50_per_conversation: nearest_rank(&per_conversation, 50),
                p95_per_conversation: nearest_rank(&per_conversation, 95),
                max_per_conversation: per_conversation.last().copied().map_or(0, u64::from),
                avg_per_turn: ratio(self.tokens_total, self.turns_total),
                billable_per_epoch: training.tokens,
                epochs,
                estimated_billable: training.tokens.saturating_mul(u64::from(epochs)),
            }
        });
        let (training, validation) = (training.report(mode), validation.report(mode));
        let turns = TurnStatistics {
            total: self.turns_total,
            avg_per_conversation: ratio(self.turns_total, self.conversations),
            min_per_conversation: if self.conversations == 0 {
                0
            } else {
                self.turns_min
            },
            max_per_conversation: self.turns_max,
        };
        ValidationReport {
            format: self.format.map(|(format, _)| format),
            completion,
            bytes_read,
            lines_read: self.lines_read,
            errors: self.errors,
            warnings: self.warnings,
            error_count: self.error_count,
            warning_count: self.warning_count,
            counts_by_code: self.counts_by_code,
            statistics: DatasetStatistics {
                lines: self.nonblank_lines,
                conversations: self.conversations,
                training,
                validation,
                split_source,
                turns,
                tokens,
                duplicates: self.duplicates,
            },
        }
    }
}

/// The line as text, or the length of its valid prefix. simdutf8 checks (several times std's
/// speed on non-ASCII text, where std's check was 40 % of a structural pass); std's check
/// only locates the first bad byte of a line that fails.
fn line_text(bytes: &[u8]) -> Result<&str, usize> {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(_) => std::str::from_utf8(bytes).map_err(|e| e.valid_up_to()),
    }
}

/// Nearest-rank percentile of sorted values.
fn nearest_rank(sorted: &[u32], percent: u64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = (percent * n).div_ceil(100).max(1);
    // rank ≤ n, so the index is in bounds.
    sorted
        .get(usize::try_from(rank - 1).unwrap_or(0))
        .copied()
        .map_or(0, u64::from)
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        // Rounded to 2 decimals, like the `decimal(10,2)` columns these figures are stored in.
        (numerator as f64 / denominator as f64 * 100.0).round() / 100.0
    }
}

fn keys(format: &DatasetFormat) -> (&'static str, &'static str, &'static str) {
    match format {
        DatasetFormat::V3 => ("conversations", "from", "value"),
        _ => ("messages", "role", "content"),
    }
}

fn describe(format: &DatasetFormat) -> &'static str {
    match format {
        DatasetFormat::V3 => "ShareGPT (v3, `conversations`)",
        _ => "OpenAI chat (v4, `messages`)",
    }
}

fn known_roles(format: &DatasetFormat) -> &'static str {
    match format {
        DatasetFormat::V3 => "\"system\", \"human\", \"gpt\"",
        _ => "\"system\", \"user\", \"assistant\"",
    }
}

fn role_suggestion(text: &str, format: &DatasetFormat) -> String {
    let lower = text.trim().to_ascii_lowercase();
    let quoted = |role: Role| format!("Use \"{}\"", role.spelling(format));
    match (format, lower.as_str()) {
        (_, "system") => quoted(Role::System),
        (DatasetFormat::V3, "user" | "human") => quoted(Role::User),
        (DatasetFormat::V3, "assistant" | "gpt" | "bot" | "model" | "ai") => {
            quoted(Role::Assistant)
        }
        (_, "user" | "human") => quoted(Role::User),
        (_, "assistant" | "gpt" | "bot" | "model" | "ai" | "chatbot") => quoted(Role::Assistant),
        (_, "tool" | "function" | "ipython") => {
            "Tool messages are not supported: fold the tool result into the next user message"
                .to_owned()
        }
        _ => format!("Use one of {}", known_roles(format)),
    }
}

fn json_suggestion(error: &serde_json::Error, text: &str, line_number: u64) -> String {
    let trimmed = text.trim_start();
    if line_number == 1 && trimmed.starts_with('[') {
        return "The file looks like a JSON array: write each conversation on its own line \
                (JSONL), without the surrounding [ ]"
            .to_owned();
    }
    if error.is_eof() {
        return "The object is cut off: each conversation must be complete on ONE line \
                (pretty-printed JSON spans several lines)"
            .to_owned();
    }
    if error.to_string().starts_with("trailing characters") {
        return "Only one JSON object per line: start a new line for the next conversation"
            .to_owned();
    }
    format!(
        "Check quotes, commas and brackets near column {}",
        error.column()
    )
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// A short rendering of a value for a message, cut so a huge value cannot bloat the report.
fn describe_value(value: &Value) -> String {
    let text = value.to_string();
    if text.len() <= 40 {
        text
    } else {
        let cut = (0..=40)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &text[..cut])
    }
}
