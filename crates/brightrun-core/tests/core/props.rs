//! Properties over generated input.

use brightrun_core::chart::decimate;
use brightrun_core::dataset::{ChatMessage, Conversation, Role, Split, convert_v3_to_v4};
use brightrun_core::{ByteTokenizer, DatasetFormat, ValidationOptions, validate};
use proptest::prelude::*;

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::System), Just(Role::User), Just(Role::Assistant)]
}

fn conversation() -> impl Strategy<Value = Conversation> {
    let message = (role(), "\\PC{0,40}", proptest::option::of(0u8..=1)).prop_map(
        |(role, content, weight)| ChatMessage {
            role,
            content,
            weight,
        },
    );
    (
        proptest::collection::vec(message, 0..8),
        proptest::option::of(prop_oneof![Just(Split::Train), Just(Split::Validation)]),
    )
        .prop_map(|(messages, split)| Conversation {
            messages,
            split,
            extra: serde_json::Map::new(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_and_counts_add_up(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let options = ValidationOptions { max_line_bytes: 256, max_issues_kept: 5, ..ValidationOptions::default() };
        let report = validate(bytes.as_slice(), &options, &ByteTokenizer).expect("memory reads never fail");
        prop_assert_eq!(report.bytes_read, bytes.len() as u64, "every byte is read");
        prop_assert!(report.errors.len() as u64 <= report.error_count, "kept ≤ counted");
        prop_assert!(report.errors.len() <= 5 && report.warnings.len() <= 5, "cap holds");
        let per_code: u64 = report.counts_by_code.values().sum();
        prop_assert_eq!(per_code, report.error_count + report.warning_count, "per-code counts add up");
        prop_assert!(report.statistics.conversations <= report.statistics.lines, "valid ≤ lines");
    }

    #[test]
    fn jsonish_lines_never_panic(lines in proptest::collection::vec(
        prop_oneof![
            Just("{\"messages\": [".to_owned()),
            Just("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\", \"weight\": 1}]}".to_owned()),
            Just("{\"conversations\": [{\"from\": \"gpt\", \"value\": \"\"}]}".to_owned()),
            Just("{\"messages\": [{\"role\": 1}, null, [], {\"content\": {}}], \"split\": 3}".to_owned()),
            "\\PC{0,30}",
        ], 0..30)) {
        let text = lines.join("\n");
        let report = validate(text.as_bytes(), &ValidationOptions::default(), &ByteTokenizer).expect("read");
        prop_assert!(report.lines_read <= lines.len() as u64, "no line invented");
    }

    #[test]
    fn v3_to_v4_preserves_every_turn(conversation in conversation()) {
        let v3 = conversation.to_json_line(&DatasetFormat::V3);
        let mut v4 = Vec::new();
        convert_v3_to_v4(v3.as_bytes(), &mut v4, 1 << 20).expect("a generated v3 line converts");
        let value: serde_json::Value = serde_json::from_slice(&v4).expect("output is JSON");
        let back = Conversation::from_json(&value, &DatasetFormat::V4).expect("output is v4");
        prop_assert_eq!(back, conversation, "roles, contents, weights and split survive");
    }

    #[test]
    fn a_conversation_reads_back_from_its_own_line(conversation in conversation(), v3 in any::<bool>()) {
        let format = if v3 { DatasetFormat::V3 } else { DatasetFormat::V4 };
        let line = conversation.to_json_line(&format);
        let value: serde_json::Value = serde_json::from_str(&line).expect("written line is JSON");
        let back = Conversation::from_json(&value, &format).expect("written line reads");
        prop_assert_eq!(back, conversation, "write then read is the identity");
    }

    #[test]
    fn decimation_keeps_extremes_and_bounds(ys in proptest::collection::vec(-1e6f64..1e6, 1..3000), buckets in 1usize..200) {
        let points: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
        let reduced = decimate(&points, buckets);
        prop_assert!(reduced.len() <= (buckets * 4).max(points.len().min(buckets * 4)), "bounded");
        let max = ys.iter().copied().fold(f64::MIN, f64::max);
        let min = ys.iter().copied().fold(f64::MAX, f64::min);
        prop_assert!(reduced.iter().any(|p| p.1 == max), "global max kept");
        prop_assert!(reduced.iter().any(|p| p.1 == min), "global min kept");
        prop_assert!(reduced.iter().all(|p| points.contains(p)), "only real points");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_finite_series_renders(points in proptest::collection::vec(
        (proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL,
         proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL),
        0..50)) {
        use brightrun_core::chart::{Chart, ChartSize, Series};
        let chart = Chart {
            title: "p".to_owned(),
            x_label: "x".to_owned(),
            y_label: "y".to_owned(),
            series: vec![Series { label: "s".to_owned(), points }],
        };
        let svg = chart.to_svg(ChartSize { width: 160, height: 100 });
        prop_assert!(svg.is_ok(), "finite data always renders: {:?}", svg.err());
    }
}
