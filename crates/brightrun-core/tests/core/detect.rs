//! Quick format detection from the first bytes.

use brightrun_core::dataset::HeadExtent;
use brightrun_core::{DatasetFormat, FormatGuess, detect_format};

#[test]
fn formats_are_told_apart_from_the_first_lines() {
    let v4 = b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n";
    let v3 = b"{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}\n";
    assert_eq!(
        detect_format(v4, HeadExtent::WholeFile),
        FormatGuess::Format {
            format: DatasetFormat::V4
        },
        "messages → v4"
    );
    assert_eq!(
        detect_format(v3, HeadExtent::WholeFile),
        FormatGuess::Format {
            format: DatasetFormat::V3
        },
        "conversations → v3"
    );
    let mixed = [v4.as_slice(), v3.as_slice()].concat();
    assert_eq!(
        detect_format(&mixed, HeadExtent::WholeFile),
        FormatGuess::Mixed,
        "both → mixed"
    );
    assert_eq!(
        detect_format(b"  [{\"messages\": []}]", HeadExtent::WholeFile),
        FormatGuess::JsonArray,
        "a JSON array is named as such"
    );
    assert_eq!(
        detect_format(b"id,text\n1,hello\n", HeadExtent::WholeFile),
        FormatGuess::NotJsonLines,
        "CSV is not JSONL"
    );
    assert_eq!(
        detect_format(b"", HeadExtent::WholeFile),
        FormatGuess::Unknown,
        "empty"
    );
}

#[test]
fn a_cut_last_line_of_a_prefix_is_ignored() {
    let mut head = b"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n".to_vec();
    head.extend_from_slice(b"{\"conversations\": [{\"from\": \"hu");
    assert_eq!(
        detect_format(&head, HeadExtent::Prefix),
        FormatGuess::Format {
            format: DatasetFormat::V4
        },
        "the incomplete tail of a prefix does not count"
    );
}
