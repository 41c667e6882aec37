//! Behaviour of the streaming validator that the corpus cannot show: caps, offsets, progress,
//! cancellation, the split decision, statistics arithmetic, reader failures.

use std::io::{self, Read};
use std::ops::ControlFlow;

use brightrun_core::dataset::{Completion, ContextWindow, SplitSource, validate_with_progress};
use brightrun_core::{
    ByteTokenizer, DatasetFormat, IssueCode, Severity, TiktokenTokenizer, Tokenizer,
    ValidationOptions, validate,
};

fn line(user: &str, assistant: &str) -> String {
    format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{user}\"}}, {{\"role\": \"assistant\", \"content\": \"{assistant}\"}}]}}\n"
    )
}

fn dataset(count: usize) -> String {
    (0..count)
        .map(|i| line(&format!("q{i}"), &format!("a{i}")))
        .collect()
}

#[test]
fn a_clean_dataset_is_valid_with_byte_exact_statistics() {
    let text = dataset(20);
    let report = validate(
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    )
    .expect("in-memory read");
    assert!(
        report.is_valid(),
        "20 clean conversations must pass: {report:?}"
    );
    assert_eq!(
        report.format,
        Some(DatasetFormat::V4),
        "messages lines are v4"
    );
    let stats = &report.statistics;
    let tokens = stats
        .tokens
        .as_ref()
        .expect("a full validation counts tokens");
    assert_eq!(stats.conversations, 20, "every line counts");
    assert_eq!(stats.turns.total, 40, "two messages per line");
    assert_eq!(
        stats.turns.avg_per_conversation, 2.0,
        "two messages per line"
    );
    // "q0".."q9" are 2 bytes, "q10".."q19" 3 bytes; same for answers; +2 overhead per message.
    let expected_tokens: u64 = (0..20u64)
        .map(|i| if i < 10 { 2 * (2 + 2) } else { 2 * (3 + 2) })
        .sum();
    assert_eq!(
        tokens.total, expected_tokens,
        "byte tokenizer counts content bytes + overhead"
    );
    assert_eq!(tokens.assistant, 10 * 2 + 10 * 3, "assistant content bytes");
    assert_eq!(
        tokens.max_per_conversation, 10,
        "longest line: 3+2 bytes per message × 2"
    );
    assert_eq!(
        tokens.p50_per_conversation, 8,
        "nearest rank 10 of 20 is a short line"
    );
    assert_eq!(
        tokens.p95_per_conversation, 10,
        "nearest rank 19 of 20 is a long line"
    );
    assert_eq!(
        stats.training.pairs + stats.validation.pairs,
        20,
        "one assistant turn per line is one pair"
    );
    assert_eq!(
        stats.split_source,
        SplitSource::HashHoldout,
        "no split marks → holdout"
    );
}

#[test]
fn the_hash_holdout_is_deterministic_and_near_ten_percent() {
    let text = dataset(2000);
    let options = ValidationOptions::default();
    let first = validate(text.as_bytes(), &options, &ByteTokenizer).expect("in-memory read");
    let second = validate(text.as_bytes(), &options, &ByteTokenizer).expect("in-memory read");
    assert_eq!(
        first.statistics, second.statistics,
        "same bytes, same split"
    );
    let validation = first.statistics.validation.conversations;
    assert!(
        (120..=280).contains(&validation),
        "about 10 % of 2000 lines should be held out, got {validation}"
    );
    // The split depends on the line, not its position: reversing the file keeps the count.
    let reversed: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
    let third = validate(reversed.as_bytes(), &options, &ByteTokenizer).expect("in-memory read");
    assert_eq!(
        third.statistics.validation.conversations, validation,
        "holdout is by line hash, so order does not matter"
    );
}

#[test]
fn one_split_mark_switches_the_whole_file_to_marks() {
    let mut text = dataset(30);
    text.push_str(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"v\"}, {\"role\": \"assistant\", \"content\": \"w\"}], \"split\": \"validation\"}\n",
    );
    let report = validate(
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    )
    .expect("read");
    let stats = &report.statistics;
    assert_eq!(
        stats.split_source,
        SplitSource::Marked,
        "a mark anywhere means marks rule"
    );
    assert_eq!(
        stats.validation.conversations, 1,
        "only the marked line is validation"
    );
    assert_eq!(stats.training.conversations, 30, "unmarked lines train");
    assert_eq!(
        stats.tokens.as_ref().map(|t| t.billable_per_epoch),
        stats.training.tokens,
        "billable tokens are the training split's"
    );
}

#[test]
fn billable_tokens_multiply_by_epochs() {
    let text = dataset(12);
    let options = ValidationOptions {
        epochs: 4,
        ..ValidationOptions::default()
    };
    let report = validate(text.as_bytes(), &options, &ByteTokenizer).expect("read");
    let tokens = report.statistics.tokens.as_ref().expect("tokens counted");
    assert_eq!(tokens.epochs, 4, "epochs echo the options");
    assert_eq!(
        tokens.estimated_billable,
        tokens.billable_per_epoch * 4,
        "estimate is per-epoch × epochs"
    );
}

#[test]
fn issues_carry_one_based_lines_and_exact_byte_offsets() {
    let good = line("q", "a");
    let text = format!("{good}{good}not json\n");
    let report = validate(
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    )
    .expect("read");
    let error = report
        .errors
        .iter()
        .find(|issue| issue.code == IssueCode::InvalidJson)
        .expect("the third line is not JSON");
    assert_eq!(error.line, Some(3), "lines are 1-based");
    assert_eq!(
        error.byte_offset,
        Some(2 * good.len() as u64),
        "offset is where line 3 starts"
    );
    assert_eq!(
        error.severity,
        Severity::Error,
        "invalid JSON blocks upload"
    );
}

#[test]
fn a_line_over_the_cap_is_reported_and_the_next_line_still_read() {
    let long = format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}\n",
        "x".repeat(5000)
    );
    let text = format!("{long}{}", line("q", "a"));
    let options = ValidationOptions {
        max_line_bytes: 1024,
        ..ValidationOptions::default()
    };
    let report = validate(text.as_bytes(), &options, &ByteTokenizer).expect("read");
    assert_eq!(
        report.errors.len(),
        1,
        "only the long line fails: {:?}",
        report.errors
    );
    assert_eq!(
        report.errors[0].code,
        IssueCode::LineTooLong,
        "over the cap"
    );
    assert_eq!(
        report.errors[0].line,
        Some(1),
        "the first line is the long one"
    );
    assert_eq!(
        report.statistics.conversations, 1,
        "line 2 is still validated"
    );
    assert_eq!(
        report.bytes_read,
        text.len() as u64,
        "every byte is consumed"
    );
}

#[test]
fn errors_are_capped_but_all_counted() {
    let text = "not json\n".repeat(2500);
    let options = ValidationOptions {
        max_issues_kept: 100,
        ..ValidationOptions::default()
    };
    let report = validate(text.as_bytes(), &options, &ByteTokenizer).expect("read");
    assert_eq!(report.errors.len(), 100, "kept errors are capped");
    assert_eq!(report.error_count, 2500, "every error is counted");
    assert_eq!(
        report.counts_by_code.get(&IssueCode::InvalidJson),
        Some(&2500),
        "counts per code include those past the cap"
    );
    assert_eq!(
        report.omitted_issues(),
        2400,
        "the report says how many were left out"
    );
    assert!(!report.is_valid(), "a file of garbage is not valid");
}

#[test]
fn progress_is_reported_and_cancellation_stops_early() {
    let text = dataset(5000);
    let options = ValidationOptions {
        progress_interval_bytes: 4096,
        ..ValidationOptions::default()
    };
    let mut calls = Vec::new();
    let report = validate_with_progress(text.as_bytes(), &options, &ByteTokenizer, &mut |p| {
        calls.push(p.bytes_read);
        if p.bytes_read > 20_000 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("read");
    assert_eq!(report.completion, Completion::Cancelled, "Break cancels");
    assert!(!report.is_valid(), "a cancelled report is never valid");
    assert!(
        report.bytes_read < text.len() as u64 / 2,
        "cancellation stops reading early, read {} of {}",
        report.bytes_read,
        text.len()
    );
    assert!(
        calls.len() >= 5,
        "progress comes every ~4 KiB, got {calls:?}"
    );
    assert!(
        calls.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back"
    );
}

struct FailingReader {
    served: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served > 0 {
            return Err(io::Error::other("disk unplugged"));
        }
        let chunk = b"{\"messages\": []}\n{\"mess";
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.served += n;
        Ok(n)
    }
}

#[test]
fn a_failing_reader_is_an_error_not_a_report() {
    let result = validate(
        FailingReader { served: 0 },
        &ValidationOptions::default(),
        &ByteTokenizer,
    );
    let error = result.expect_err("a reader error must surface");
    assert!(
        std::error::Error::source(&error).is_some(),
        "the io::Error is kept as the source: {error}"
    );
}

#[test]
fn the_context_check_uses_the_chosen_models_window() {
    let text = dataset(12);
    let small = ValidationOptions {
        context_window: Some(ContextWindow {
            base_model: "tiny".to_owned(),
            max_tokens: 8,
        }),
        ..ValidationOptions::default()
    };
    let report = validate(text.as_bytes(), &small, &ByteTokenizer).expect("read");
    // Lines 11..=12 ("q10".."q11") are 10 tokens, the rest 8.
    assert_eq!(
        report.counts_by_code.get(&IssueCode::ExceedsContext),
        Some(&2),
        "only conversations above 8 tokens exceed an 8-token window"
    );
    assert!(
        report.is_valid(),
        "exceeding the context is a warning, not an error"
    );
    let roomy = ValidationOptions {
        context_window: Some(ContextWindow {
            base_model: "big".to_owned(),
            max_tokens: 10,
        }),
        ..ValidationOptions::default()
    };
    let report = validate(text.as_bytes(), &roomy, &ByteTokenizer).expect("read");
    assert!(
        !report
            .counts_by_code
            .contains_key(&IssueCode::ExceedsContext),
        "a model with a larger window gives no warning"
    );
}

#[test]
fn tiktoken_counts_real_tokens() {
    let tokenizer = TiktokenTokenizer::cl100k_base();
    assert_eq!(
        tokenizer.count_tokens("hello world"),
        2,
        "cl100k: 'hello', ' world'"
    );
    assert_eq!(tokenizer.count_tokens(""), 0, "empty text has no tokens");
    let long = "tokenization ".repeat(100);
    let count = tokenizer.count_tokens(&long);
    assert!(
        count < long.len() as u64 / 3,
        "BPE merges common words: {count} tokens for {} bytes",
        long.len()
    );
}

#[test]
fn crlf_and_a_byte_order_mark_are_accepted() {
    let text = format!("\u{feff}{}", dataset(11).replace('\n', "\r\n"));
    let report = validate(
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    )
    .expect("read");
    assert!(
        report.is_valid(),
        "CRLF + BOM is still valid JSONL: {:?}",
        report.errors
    );
}

/// Hands out at most `chunk` bytes per read, so lines straddle buffer refills.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn reports_do_not_depend_on_how_the_reader_chunks_the_bytes() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let options = ValidationOptions {
        max_line_bytes: 300,
        ..ValidationOptions::default()
    };
    for name in [
        "unknown_key.jsonl",
        "good_crlf_bom.jsonl",
        "exceeds_context.jsonl",
        "blank_line.jsonl",
    ] {
        let data = std::fs::read(corpus.join(name)).expect("corpus file");
        let whole = validate(data.as_slice(), &options, &ByteTokenizer).expect("read");
        for chunk in [1, 7, 64] {
            let trickled =
                validate(Trickle { data: &data, chunk }, &options, &ByteTokenizer).expect("read");
            assert_eq!(
                trickled, whole,
                "{name} read {chunk} bytes at a time gives the same report"
            );
        }
    }
}

#[test]
fn a_report_fills_the_dataset_columns() {
    let text = format!("{}{{\"messages\": []}}\n", dataset(12));
    let report = validate(
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    )
    .expect("read");
    let columns = report.dataset_columns();
    assert!(
        !columns.training_ready,
        "an error keeps the dataset from being ready"
    );
    assert_eq!(
        columns.total_training_pairs + columns.total_validation_pairs,
        12,
        "pairs of the valid lines"
    );
    let stored = &columns.validation_errors[0];
    assert_eq!(
        (stored.line, stored.code.as_deref(), stored.field.as_deref()),
        (Some(13), Some("messages_empty"), Some("messages")),
        "errors are stored with line, code and field"
    );
    assert!(stored.suggestion.is_some(), "and with the suggestion");
}
