//! The multi-threaded validator gives the single-threaded report, byte for byte, whatever the
//! thread count and the batch size: issues and their cap, counts, statistics, percentiles,
//! duplicates across batches, the split decision and the file's format.

use std::io::{self, Read};
use std::ops::ControlFlow;
use std::path::Path;

use brightrun_core::dataset::{Completion, LineReader, SplitSource, validate_with_progress};
use brightrun_core::{
    ByteTokenizer, IssueCode, TiktokenTokenizer, Tokenizer, ValidationOptions, ValidationReport,
    Validator, validate,
};
use proptest::prelude::*;

fn line(user: &str, assistant: &str) -> String {
    format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"{user}\"}}, {{\"role\": \"assistant\", \"content\": \"{assistant}\"}}]}}\n"
    )
}

fn with_threads(
    options: &ValidationOptions,
    threads: usize,
    batch_bytes: usize,
) -> ValidationOptions {
    ValidationOptions {
        threads: Some(threads),
        batch_bytes,
        ..options.clone()
    }
}

/// Validates `data` single-threaded, then with 2 and 8 threads at several batch sizes (one line
/// per batch up to the default), and requires every report to be the single-threaded one.
/// Returns that report for further checks.
fn same_report_for_any_thread_count(
    name: &str,
    data: &[u8],
    options: &ValidationOptions,
    tokenizer: &dyn Tokenizer,
) -> ValidationReport {
    let single = validate(
        data,
        &with_threads(options, 1, options.batch_bytes),
        tokenizer,
    )
    .expect("reading from memory cannot fail");
    assert_eq!(
        single.bytes_read,
        data.len() as u64,
        "{name}: the single-threaded pass reads everything"
    );
    for threads in [2, 8] {
        for batch_bytes in [
            1,
            97,
            1000,
            64 * 1024,
            ValidationOptions::default().batch_bytes,
        ] {
            let parallel = validate(
                data,
                &with_threads(options, threads, batch_bytes),
                tokenizer,
            )
            .expect("reading from memory cannot fail");
            assert_eq!(
                parallel, single,
                "{name}: {threads} threads with {batch_bytes}-byte batches must give the single-threaded report"
            );
        }
    }
    single
}

pub fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the corpus directory exists")
        .map(|entry| entry.expect("corpus entry is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            (name, std::fs::read(&path).expect("corpus file is readable"))
        })
        .collect()
}

#[test]
fn every_corpus_file_gets_the_same_report_with_any_thread_count() {
    // The corpus holds a case of every rule, with the real tokenizer and a context window.
    let options = super::corpus::corpus_options();
    let tokenizer = TiktokenTokenizer::cl100k_base();
    let files = corpus_files();
    assert!(files.len() >= 30, "the corpus covers every rule");
    for (name, data) in &files {
        same_report_for_any_thread_count(name, data, &options, &tokenizer);
    }
}

#[test]
fn the_whole_corpus_in_one_file_gets_the_same_report() {
    // One file with every error and warning, both formats (so `mixed_formats` against the
    // format of a line many batches back), duplicates far apart, BOMs mid-file, blank lines.
    let options = super::corpus::corpus_options();
    let all: Vec<u8> = corpus_files()
        .into_iter()
        .flat_map(|(_, mut data)| {
            if data.last().is_some_and(|&byte| byte != b'\n') {
                data.push(b'\n');
            }
            data
        })
        .collect();
    let report =
        same_report_for_any_thread_count("all corpus files", &all, &options, &ByteTokenizer);
    assert!(
        report.counts_by_code.len() >= 20,
        "the concatenation exercises most rules: {:?}",
        report.counts_by_code
    );
    assert!(
        report.counts_by_code.contains_key(&IssueCode::MixedFormats),
        "and the file-format rule"
    );
}

#[test]
fn duplicates_across_batches_point_at_the_first_occurrence() {
    // Line i repeats line i % 37: with one-line batches every duplicate is in a later batch
    // than its original, and some originals repeat many times.
    let text: String = (0..400)
        .map(|i| line(&format!("q{}", i % 37), "a"))
        .collect();
    let report = same_report_for_any_thread_count(
        "duplicates",
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    );
    assert_eq!(
        report.statistics.duplicates,
        400 - 37,
        "every line after the first 37 repeats one"
    );
    let first = report
        .warnings
        .iter()
        .find(|issue| issue.code == IssueCode::DuplicateExample)
        .expect("duplicates are reported");
    assert_eq!(first.line, Some(38), "line 38 is the first repeat");
    assert!(
        first.message.ends_with("line 1"),
        "and it repeats line 1, the first occurrence: {}",
        first.message
    );
}

#[test]
fn split_marks_anywhere_switch_every_batch_to_marks() {
    let mut text: String = (0..300).map(|i| line(&format!("q{i}"), "a")).collect();
    text.push_str(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"v\"}, {\"role\": \"assistant\", \"content\": \"w\"}], \"split\": \"validation\"}\n",
    );
    text.push_str(
        "{\"messages\": [{\"role\": \"user\", \"content\": \"t\"}, {\"role\": \"assistant\", \"content\": \"u\"}], \"split\": \"nope\"}\n",
    );
    let report = same_report_for_any_thread_count(
        "split marks",
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    );
    assert_eq!(
        report.statistics.split_source,
        SplitSource::Marked,
        "the last lines carry marks"
    );
    assert_eq!(
        report.statistics.validation.conversations, 1,
        "one line is marked validation"
    );
    let unmarked: String = (0..300).map(|i| line(&format!("q{i}"), "a")).collect();
    let holdout = same_report_for_any_thread_count(
        "holdout",
        unmarked.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    );
    assert_eq!(
        holdout.statistics.split_source,
        SplitSource::HashHoldout,
        "no marks: holdout"
    );
}

#[test]
fn lines_over_the_cap_crlf_and_a_missing_final_newline_give_the_same_report() {
    let options = ValidationOptions {
        max_line_bytes: 300,
        ..ValidationOptions::default()
    };
    let long = line(&"x".repeat(1000), "y");
    let mut text = String::from("\u{feff}");
    for i in 0..60 {
        text.push_str(&line(&format!("q{i}"), "a"));
        if i % 7 == 0 {
            text.push_str(&long);
        }
    }
    let crlf = text.replace('\n', "\r\n");
    let unterminated = crlf.trim_end_matches("\r\n").to_owned();
    for (name, data) in [
        ("long lines", &text),
        ("crlf", &crlf),
        ("no final newline", &unterminated),
    ] {
        let report =
            same_report_for_any_thread_count(name, data.as_bytes(), &options, &ByteTokenizer);
        assert_eq!(
            report.counts_by_code.get(&IssueCode::LineTooLong),
            Some(&9),
            "{name}: every long line is reported"
        );
        assert_eq!(
            report.statistics.conversations, 60,
            "{name}: the others are valid"
        );
    }
}

#[test]
fn the_issue_cap_keeps_the_first_issues_in_line_order() {
    // Errors and warnings of several kinds interleaved with duplicates, far over a cap of 3.
    // Line 6 repeats line 1, which has an unknown key: its duplicate warning comes first.
    let options = ValidationOptions {
        max_issues_kept: 3,
        ..ValidationOptions::default()
    };
    let mut text = String::new();
    for i in 0..200 {
        match i % 5 {
            0 => text.push_str("{\"messages\": [{\"role\": \"user\", \"content\": \"q\", \"extra\": 1}, {\"role\": \"assistant\", \"content\": \"a\"}]}\n"),
            1 => text.push_str("not json\n"),
            2 => text.push('\n'),
            3 => text.push_str(&line("dup", "a")),
            _ => text.push_str(&line(&format!("q{i}"), "a")),
        }
    }
    let report = same_report_for_any_thread_count("cap", text.as_bytes(), &options, &ByteTokenizer);
    assert_eq!(
        (report.errors.len(), report.warnings.len()),
        (3, 3),
        "both lists are capped"
    );
    let kept: Vec<_> = report
        .warnings
        .iter()
        .map(|w| (w.line, w.code.clone()))
        .collect();
    assert_eq!(
        kept,
        [
            (Some(1), IssueCode::UnknownKey),
            (Some(3), IssueCode::BlankLine),
            (Some(6), IssueCode::DuplicateExample),
        ],
        "the first three warnings in line order, a line's duplicate warning first"
    );
    assert!(report.warning_count > 100, "and everything is counted");
}

#[test]
fn a_format_declared_late_is_applied_to_every_later_batch() {
    // 50 lines declare no format; then a v3 line sets it, so the v4 lines after it are
    // `mixed_formats`, however the lines fall into batches.
    let mut text = "not json\n{\"prompt\": \"p\", \"completion\": \"c\"}\n".repeat(25);
    text.push_str("{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n");
    text.extend((0..40).map(|i| line(&format!("q{i}"), "a")));
    let report = same_report_for_any_thread_count(
        "late format",
        text.as_bytes(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    );
    assert_eq!(
        report.counts_by_code.get(&IssueCode::MixedFormats),
        Some(&40),
        "every v4 line is mixed"
    );
}

#[test]
fn token_percentiles_and_context_warnings_match_with_the_real_tokenizer() {
    let options = ValidationOptions {
        context_window: Some(brightrun_core::dataset::ContextWindow {
            base_model: "tiny".to_owned(),
            max_tokens: 30,
        }),
        ..ValidationOptions::default()
    };
    let text: String = (0..500)
        .map(|i| {
            line(
                &"word ".repeat(i % 23),
                &format!("answer {i} with números 😀 {}", "x".repeat(i % 11)),
            )
        })
        .collect();
    let report = same_report_for_any_thread_count(
        "tokens",
        text.as_bytes(),
        &options,
        &TiktokenTokenizer::cl100k_base(),
    );
    let tokens = report.statistics.tokens.as_ref().expect("tokens counted");
    assert!(
        tokens.p50_per_conversation < tokens.p95_per_conversation
            && tokens.p95_per_conversation <= tokens.max_per_conversation,
        "the percentiles spread: {tokens:?}"
    );
    assert!(
        report
            .counts_by_code
            .contains_key(&IssueCode::ExceedsContext),
        "some lines are over 30 tokens"
    );
}

#[test]
fn an_empty_file_and_a_single_line_get_the_same_report() {
    for (name, data) in [
        ("empty", ""),
        ("one line", "{\"messages\": []}"),
        ("one newline", "\n"),
    ] {
        same_report_for_any_thread_count(
            name,
            data.as_bytes(),
            &ValidationOptions::default(),
            &ByteTokenizer,
        );
    }
}

#[test]
fn progress_advances_and_a_cancelled_run_reports_exactly_the_lines_it_merged() {
    let text: String = (0..3000)
        .map(|i| line(&format!("q{}", i % 1000), "a"))
        .collect();
    let options = ValidationOptions {
        threads: Some(4),
        progress_interval_bytes: 4096,
        ..ValidationOptions::default()
    };
    let mut calls = Vec::new();
    let report = validate_with_progress(text.as_bytes(), &options, &ByteTokenizer, &mut |p| {
        calls.push(p);
        if p.bytes_read > 40_000 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("read");
    assert_eq!(report.completion, Completion::Cancelled, "Break cancels");
    assert!(
        report.bytes_read < text.len() as u64 / 2,
        "the run stops early: {} of {} bytes",
        report.bytes_read,
        text.len()
    );
    assert!(
        calls.len() >= 5,
        "progress comes as batches merge: {calls:?}"
    );
    assert!(
        calls
            .windows(2)
            .all(|w| w[0].bytes_read <= w[1].bytes_read && w[0].lines_read <= w[1].lines_read),
        "progress never goes back"
    );
    // The report covers a prefix of whole lines: exactly what one validator makes of it.
    let prefix = &text.as_bytes()[..usize::try_from(report.bytes_read).expect("fits")];
    let mut expected = Validator::new(options.clone(), &ByteTokenizer);
    let mut lines = LineReader::new(prefix, options.max_line_bytes);
    while let Some(line) = lines.next_line().expect("memory reads never fail") {
        expected.push_line(line);
    }
    assert_eq!(
        report,
        expected.finish(Completion::Cancelled, report.bytes_read),
        "a cancelled report is the report of the lines before the cut"
    );

    let mut last = None;
    let full = validate_with_progress(text.as_bytes(), &options, &ByteTokenizer, &mut |p| {
        last = Some(p);
        ControlFlow::Continue(())
    })
    .expect("read");
    assert_eq!(full.completion, Completion::Complete, "not cancelled");
    assert_eq!(
        last.map(|p| (p.bytes_read, p.lines_read)),
        Some((text.len() as u64, 3000)),
        "the last progress call covers the whole file"
    );
}

struct FailingReader {
    served: usize,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.served > 10_000 {
            return Err(io::Error::other("disk unplugged"));
        }
        let chunk = b"{\"messages\": []}\n";
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        self.served += n;
        Ok(n)
    }
}

#[test]
fn a_failing_reader_is_an_error_with_threads_too() {
    let options = ValidationOptions {
        threads: Some(2),
        batch_bytes: 512,
        ..ValidationOptions::default()
    };
    let error = validate(FailingReader { served: 0 }, &options, &ByteTokenizer)
        .expect_err("a reader error must surface");
    let brightrun_core::ValidatorError::Read { bytes_read, .. } = &error;
    assert!(
        *bytes_read > 10_000,
        "the error says how far reading got: {error}"
    );
}

/// Panics on one text, as a buggy tokenizer might.
struct PanickingTokenizer;

impl Tokenizer for PanickingTokenizer {
    fn name(&self) -> &str {
        "panics"
    }

    fn count_tokens(&self, text: &str) -> u64 {
        assert!(text != "boom", "tokenizer bug");
        text.len() as u64
    }
}

#[test]
fn a_panicking_worker_reaches_the_caller_instead_of_hanging() {
    let mut text: String = (0..500).map(|i| line(&format!("q{i}"), "a")).collect();
    text.push_str(&line("boom", "a"));
    text.extend((0..500).map(|i| line(&format!("r{i}"), "a")));
    let options = ValidationOptions {
        threads: Some(2),
        batch_bytes: 1024,
        ..ValidationOptions::default()
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        validate(text.as_bytes(), &options, &PanickingTokenizer)
    }));
    assert!(
        outcome.is_err(),
        "the worker's panic is re-raised on the calling thread"
    );
}

/// Lines of every kind the validator tells apart, for the property below.
fn any_line() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..20).prop_map(|i| line(&format!("q{i}"), "a")),
        (0u8..20).prop_map(|i| format!("{{\"conversations\": [{{\"from\": \"human\", \"value\": \"h{i}\"}}, {{\"from\": \"gpt\", \"value\": \"g\"}}]}}\n")),
        (0u8..4, 0u8..3).prop_map(|(i, s)| {
            let split = ["\"train\"", "\"validation\"", "7"][usize::from(s)];
            format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"s{i}\"}}, {{\"role\": \"assistant\", \"content\": \"a\", \"weight\": 0}}], \"split\": {split}}}\n")
        }),
        Just("{\"messages\": [{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"user\", \"content\": \"u\"}, {\"role\": \"bot\", \"content\": 3}]}\n".to_owned()),
        Just("{\"messages\": [], \"conversations\": []}\n".to_owned()),
        Just("{\"prompt\": \"p\"}\n".to_owned()),
        Just("[1, 2]\n".to_owned()),
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\u{feff}{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"a\"}]}\r\n".to_owned()),
        (1usize..400).prop_map(|n| format!("{{\"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}\n", "y".repeat(n))),
        "\\PC{0,20}\n",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_file_gets_the_same_report_with_threads(
        lines in proptest::collection::vec(any_line(), 0..80),
        drop_last_newline in any::<bool>(),
        threads in 2usize..9,
        batch_bytes in 1usize..600,
        // A small cap tests the cut; the default one keeps every issue, so their order shows.
        max_issues_kept in prop_oneof![1usize..6, Just(1000)],
    ) {
        let mut text = lines.concat();
        if drop_last_newline {
            text.pop();
        }
        let options = ValidationOptions {
            max_line_bytes: 200,
            max_issues_kept,
            ..ValidationOptions::default()
        };
        let single = validate(text.as_bytes(), &with_threads(&options, 1, batch_bytes), &ByteTokenizer)
            .expect("memory reads never fail");
        let parallel = validate(text.as_bytes(), &with_threads(&options, threads, batch_bytes), &ByteTokenizer)
            .expect("memory reads never fail");
        prop_assert_eq!(parallel, single, "{} threads, {}-byte batches", threads, batch_bytes);
    }
}
