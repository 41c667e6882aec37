//! v3 (ShareGPT) → v4 (`messages`) conversion.

use brightrun_core::dataset::{Conversation, ConversionError, Role, Split, convert_v3_to_v4};
use brightrun_core::{ByteTokenizer, DatasetFormat, ValidationOptions, validate};
use serde_json::{Value, json};

#[test]
fn a_sharegpt_file_converts_to_a_valid_v4_file() {
    let input = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/good_v3_sharegpt.jsonl"),
    )
    .expect("corpus file");
    let mut output = Vec::new();
    let summary = convert_v3_to_v4(input.as_slice(), &mut output, 1 << 20).expect("converts");
    assert_eq!(summary.conversations, 12, "every line converted");
    assert_eq!(summary.messages, 36, "three messages per line");
    let report = validate(
        output.as_slice(),
        &ValidationOptions::default(),
        &ByteTokenizer,
    )
    .expect("read");
    assert_eq!(report.format, Some(DatasetFormat::V4), "the output is v4");
    assert!(
        report.is_valid(),
        "the converted file validates: {:?}",
        report.errors
    );
    let first: Value =
        serde_json::from_slice(output.split(|&b| b == b'\n').next().expect("one line"))
            .expect("JSON");
    assert_eq!(
        first,
        json!({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Question 0?"},
            {"role": "assistant", "content": "Answer 0."}
        ]}),
        "human → user, gpt → assistant, value → content"
    );
}

#[test]
fn weights_split_and_extra_keys_survive() {
    let line = r#"{"conversations": [{"from": "human", "value": "hi \"there\""}, {"from": "gpt", "value": "yo", "weight": 0}], "split": "validation", "id": 7}"#;
    let mut output = Vec::new();
    convert_v3_to_v4(line.as_bytes(), &mut output, 1 << 20).expect("converts");
    let value: Value = serde_json::from_slice(&output).expect("JSON");
    assert_eq!(
        value,
        json!({"messages": [{"role": "user", "content": "hi \"there\""},
                            {"role": "assistant", "content": "yo", "weight": 0}],
               "split": "validation", "id": 7}),
        "nothing but the spelling changes"
    );
    let conversation =
        Conversation::from_json(&value, &DatasetFormat::V4).expect("the output reads back");
    assert_eq!(conversation.split, Some(Split::Validation), "split kept");
    assert_eq!(
        conversation.messages[1].role,
        Role::Assistant,
        "role mapped"
    );
}

#[test]
fn a_line_that_is_not_v3_stops_the_conversion_with_its_number() {
    let input = "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}]}\n\n{\"conversations\": [{\"from\": \"robot\", \"value\": \"b\"}]}\n";
    let error = convert_v3_to_v4(input.as_bytes(), Vec::new(), 1 << 20)
        .expect_err("robot is not a v3 role");
    assert!(
        matches!(error, ConversionError::NotV3 { line: 3, .. }),
        "the failing line is named: {error:?}"
    );
}
