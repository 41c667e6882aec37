//! Arbitrary bytes through the validator and the format detector: no panic, counts consistent.
#![no_main]

use brightrun_core::dataset::HeadExtent;
use brightrun_core::{ByteTokenizer, ValidationOptions, detect_format, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = ValidationOptions {
        max_line_bytes: 4096,
        max_issues_kept: 16,
        ..ValidationOptions::default()
    };
    let report = match validate(data, &options, &ByteTokenizer) {
        Ok(report) => report,
        Err(error) => panic!("reading from memory cannot fail: {error}"),
    };
    assert_eq!(report.bytes_read, data.len() as u64, "every byte is read");
    assert!(
        report.errors.len() as u64 <= report.error_count,
        "kept ≤ counted"
    );
    let per_code: u64 = report.counts_by_code.values().sum();
    assert_eq!(
        per_code,
        report.error_count + report.warning_count,
        "counts add up"
    );
    let _ = detect_format(data, HeadExtent::Prefix);
    let _ = detect_format(data, HeadExtent::WholeFile);
});
