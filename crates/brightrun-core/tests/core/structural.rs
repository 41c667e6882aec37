//! `ValidationMode::Structural`: every rule that needs no tokenizer gives the full pass's
//! findings, the tokenizer is never called, and the report says the token figures are absent.

use std::sync::atomic::{AtomicU64, Ordering};

use brightrun_core::{
    IssueCode, TiktokenTokenizer, Tokenizer, ValidationMode, ValidationOptions, ValidationReport,
    validate,
};

/// Counts its calls, so a test can tell that nothing was tokenized.
#[derive(Default)]
struct CountingTokenizer {
    calls: AtomicU64,
}

impl Tokenizer for CountingTokenizer {
    fn name(&self) -> &str {
        "counting"
    }

    fn count_tokens(&self, text: &str) -> u64 {
        self.calls.fetch_add(1, Ordering::Relaxed);
        text.len() as u64
    }
}

fn structural(options: &ValidationOptions) -> ValidationOptions {
    ValidationOptions {
        mode: ValidationMode::Structural,
        ..options.clone()
    }
}

/// The full report with what a structural pass does not compute taken out: token figures and
/// the context check's warnings.
fn without_tokens(mut report: ValidationReport) -> ValidationReport {
    report.statistics.tokens = None;
    report.statistics.training.tokens = None;
    report.statistics.validation.tokens = None;
    let context = IssueCode::ExceedsContext;
    report.warnings.retain(|w| w.code != context);
    report.warning_count -= report.counts_by_code.remove(&context).unwrap_or(0);
    report
}

#[test]
fn every_corpus_file_gets_the_full_findings_without_tokens() {
    let options = super::corpus::corpus_options();
    let full_tokenizer = TiktokenTokenizer::cl100k_base();
    let mut context_warnings_seen = false;
    for (name, data) in super::parallel::corpus_files() {
        let full = validate(&data[..], &options, &full_tokenizer).expect("in memory");
        context_warnings_seen |= full.counts_by_code.contains_key(&IssueCode::ExceedsContext);
        for threads in [1, 2, 8] {
            let counting = CountingTokenizer::default();
            let options = ValidationOptions {
                threads: Some(threads),
                batch_bytes: 97,
                ..structural(&options)
            };
            let report = validate(&data[..], &options, &counting).expect("in memory");
            assert_eq!(
                counting.calls.load(Ordering::Relaxed),
                0,
                "{name}: a structural pass never tokenizes ({threads} threads)"
            );
            assert_eq!(
                report,
                without_tokens(full.clone()),
                "{name}: a structural pass finds what the full pass finds, minus tokens ({threads} threads)"
            );
        }
    }
    assert!(
        context_warnings_seen,
        "the corpus has a context-length case, so dropping that check was exercised"
    );
}

#[test]
fn the_report_says_tokens_are_absent_not_zero() {
    let line = r#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}"#;
    let data = format!("{line}\n").into_bytes();
    let options = structural(&ValidationOptions::default());
    let report = validate(&data[..], &options, &CountingTokenizer::default()).expect("in memory");
    assert_eq!(report.statistics.conversations, 1, "the line is counted");
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(
        json["statistics"]["tokens"],
        serde_json::Value::Null,
        "token statistics are null, not zeros: {json}"
    );
    let split = &json["statistics"][if report.statistics.training.conversations == 1 {
        "training"
    } else {
        "validation"
    }];
    assert_eq!(
        split["conversations"], 1,
        "the split still counts it: {json}"
    );
    assert_eq!(
        split["tokens"],
        serde_json::Value::Null,
        "the split's tokens are null, not 0: {json}"
    );
    let full = validate(
        &data[..],
        &ValidationOptions::default(),
        &CountingTokenizer::default(),
    )
    .expect("in memory");
    assert_eq!(
        full.statistics.tokens.map(|t| t.total),
        Some(2 + 5 + 2 * 4),
        "a full pass of the same line counts its tokens"
    );
}

#[test]
fn the_mode_round_trips_and_defaults_to_full() {
    let options: ValidationOptions = serde_json::from_value(serde_json::json!({
        "max_line_bytes": 1024, "max_issues_kept": 10, "context_window": null,
        "epochs": 1, "holdout_percent": 10, "progress_interval_bytes": 1024
    }))
    .expect("older options without a mode still read");
    assert_eq!(options.mode, ValidationMode::Full, "no mode means full");
    let json = serde_json::to_value(structural(&options)).expect("serializes");
    assert_eq!(
        json["mode"], "structural",
        "the mode is named in snake case"
    );
}
