//! `brightrun datasets validate` and a refused upload: the full report, exit code 1.

use brightrun_stack::testing::mint_user;

use crate::support::*;

const BAD: &str = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n\
not json\n\
{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n\
{\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n";

#[tokio::test]
async fn validate_prints_every_error_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, BAD).expect("write");
    let user = mint_user(stack(), "cli-validate").await;
    let file_arg = file.to_str().expect("utf-8 path");

    let child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "validate", file_arg],
    )
    .spawn()
    .expect("start brightrun");
    let (status, _, output) = finish(child).await;
    assert_eq!(status.code(), Some(1), "errors exit with 1: {output}");
    for line in [
        ":2: error invalid_json",
        ":3: error",
        ":4: error no_assistant_turn",
    ] {
        assert!(output.contains(line), "the report has {line:?}: {output}");
    }
    assert!(
        output.contains("3 errors"),
        "the summary counts them: {output}"
    );

    let child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "validate", file_arg, "--json"],
    )
    .spawn()
    .expect("start brightrun");
    let (status, json, output) = finish(child).await;
    assert_eq!(
        status.code(),
        Some(1),
        "errors exit with 1 in JSON mode too"
    );
    assert_eq!(
        json["error_count"], 3,
        "the JSON report counts 3 errors: {output}"
    );

    let child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "upload", file_arg],
    )
    .spawn()
    .expect("start brightrun");
    let (status, _, output) = finish(child).await;
    assert_eq!(
        status.code(),
        Some(1),
        "an invalid upload exits with 1: {output}"
    );
    assert!(
        dataset_rows(user.id).await.is_empty(),
        "nothing reached the server"
    );
}

#[tokio::test]
async fn a_valid_file_validates_and_uploads_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dataset_file(dir.path(), "good.jsonl", 40 * 1024);
    let file_arg = file.to_str().expect("utf-8 path");
    let user = mint_user(stack(), "cli-good").await;
    let child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "validate", file_arg],
    )
    .spawn()
    .expect("start brightrun");
    let (status, _, output) = finish(child).await;
    assert!(status.success(), "a valid file exits 0: {output}");

    for round in 0..2 {
        let child = brightrun(
            &stack().url,
            &user,
            dir.path(),
            &["datasets", "upload", file_arg, "--json"],
        )
        .spawn()
        .expect("start brightrun");
        let (status, json, output) = finish(child).await;
        assert!(status.success(), "upload {round} works: {output}");
        assert_eq!(
            json["already_uploaded"],
            round == 1,
            "the second run finds the first upload: {output}"
        );
    }
    assert_eq!(dataset_rows(user.id).await.len(), 1, "one dataset row");

    let child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "list", "--json"],
    )
    .spawn()
    .expect("start brightrun");
    let (status, json, output) = finish(child).await;
    assert!(status.success(), "list works: {output}");
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(1),
        "the list shows the dataset: {output}"
    );
}
