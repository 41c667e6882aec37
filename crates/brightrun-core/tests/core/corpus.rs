//! Every `tests/corpus/*.jsonl` is validated and its report, normalised, compared with the
//! `.expected.json` next to it. Set `BRIGHTRUN_BLESS=1` to rewrite the expectations (then read
//! the diff: a blessed expectation is only as good as the review it got).

use std::path::{Path, PathBuf};

use brightrun_core::dataset::ContextWindow;
use brightrun_core::{TiktokenTokenizer, ValidationOptions, ValidationReport, validate};
use serde_json::{Value, json};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// The options every corpus file is validated with.
pub fn corpus_options() -> ValidationOptions {
    ValidationOptions {
        context_window: Some(ContextWindow {
            base_model: "test/context-512".to_owned(),
            max_tokens: 512,
        }),
        epochs: 3,
        ..ValidationOptions::default()
    }
}

/// The report without prose: codes, positions, counts and statistics are the contract; wording
/// may change freely.
fn normalise(report: &ValidationReport) -> Value {
    let issues = |issues: &[brightrun_core::Issue]| {
        issues
            .iter()
            .map(|issue| {
                json!({
                    "code": issue.code,
                    "line": issue.line,
                    "byte_offset": issue.byte_offset,
                    "field": issue.field,
                })
            })
            .collect::<Vec<_>>()
    };
    json!({
        "format": report.format,
        "is_valid": report.is_valid(),
        "bytes_read": report.bytes_read,
        "lines_read": report.lines_read,
        "error_count": report.error_count,
        "warning_count": report.warning_count,
        "counts_by_code": report.counts_by_code,
        "errors": issues(&report.errors),
        "warnings": issues(&report.warnings),
        "statistics": report.statistics,
    })
}

#[test]
fn every_corpus_file_matches_its_expected_report() {
    let bless = std::env::var_os("BRIGHTRUN_BLESS").is_some();
    let tokenizer = TiktokenTokenizer::cl100k_base();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory exists")
        .map(|entry| entry.expect("corpus entry is readable").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "the corpus should cover every rule, found {} files",
        files.len()
    );
    let mut mismatches = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).expect("corpus file is readable");
        let report = validate(bytes.as_slice(), &corpus_options(), &tokenizer)
            .expect("validating from memory cannot fail to read");
        for issue in report.errors.iter().chain(&report.warnings) {
            assert!(
                !issue.message.is_empty()
                    && issue.suggestion.as_deref().is_some_and(|s| !s.is_empty()),
                "{}: every issue needs a message and a suggestion, {issue:?} has not",
                path.display()
            );
        }
        let actual = normalise(&report);
        let expected_path = path.with_extension("expected.json");
        if bless {
            let text = serde_json::to_string_pretty(&actual).expect("a report serializes");
            std::fs::write(&expected_path, text + "\n").expect("expectation is writable");
            continue;
        }
        let expected: Value = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_json::from_str(&text).expect("expectation is JSON"),
            Err(_) => {
                mismatches.push(format!("{}: no expectation file", path.display()));
                continue;
            }
        };
        if actual != expected {
            mismatches.push(format!(
                "{}:\nexpected {}\nactual   {}",
                path.display(),
                serde_json::to_string_pretty(&expected).unwrap_or_default(),
                serde_json::to_string_pretty(&actual).unwrap_or_default()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "corpus reports differ:\n{}",
        mismatches.join("\n\n")
    );
}

#[test]
fn every_error_and_warning_code_has_a_corpus_case() {
    let tokenizer = TiktokenTokenizer::cl100k_base();
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("the corpus directory exists") {
        let path = entry.expect("corpus entry is readable").path();
        if path.extension().is_some_and(|ext| ext == "jsonl") {
            let bytes = std::fs::read(&path).expect("corpus file is readable");
            let report = validate(bytes.as_slice(), &corpus_options(), &tokenizer)
                .expect("validating from memory cannot fail to read");
            seen.extend(report.counts_by_code.keys().cloned());
        }
    }
    // line_too_long needs a file over the 10 MiB cap; tests/core/validator.rs covers it with a
    // small cap instead.
    let missing: Vec<_> = brightrun_core::IssueCode::KNOWN
        .iter()
        .filter(|code| !seen.contains(*code) && **code != brightrun_core::IssueCode::LineTooLong)
        .collect();
    assert!(
        missing.is_empty(),
        "codes without a corpus case: {missing:?}"
    );
}
