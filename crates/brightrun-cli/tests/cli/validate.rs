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

/// 12 conversations: a user question and an assistant answer, the 12th 5 000 words long.
fn good_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..11 {
        text.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"user\", \"content\": \"question {i}\"}}, {{\"role\": \"assistant\", \"content\": \"answer {i}\"}}]}}\n"
        ));
    }
    let long = "word ".repeat(5_000);
    text.push_str(&format!(
        "{{\"messages\": [{{\"role\": \"user\", \"content\": \"long\"}}, {{\"role\": \"assistant\", \"content\": \"{}\"}}]}}\n",
        long.trim_end()
    ));
    let file = dir.join("good.jsonl");
    std::fs::write(&file, text).expect("write");
    file
}

async fn validate_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let user = mint_user(stack(), "cli-validate-modes").await;
    let mut all = vec!["datasets", "validate", "--json"];
    all.extend_from_slice(args);
    let child = brightrun(&stack().url, &user, dir, &all)
        .spawn()
        .expect("start brightrun");
    let (status, json, output) = finish(child).await;
    assert!(status.success(), "a valid file exits with 0: {output}");
    json
}

#[tokio::test]
async fn structural_validation_reports_no_token_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = good_file(dir.path());
    let file_arg = file.to_str().expect("utf-8 path");
    let json = validate_json(dir.path(), &["--structural", file_arg]).await;
    let stats = &json["statistics"];
    assert_eq!(stats["conversations"], 12, "every line counted: {json}");
    assert!(
        stats["tokens"].is_null(),
        "no token statistics, not zeros: {stats}"
    );
    assert!(
        stats["training"]["tokens"].is_null() && stats["validation"]["tokens"].is_null(),
        "no split token counts either: {stats}"
    );

    let user = mint_user(stack(), "cli-validate-structural").await;
    let child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "validate", "--structural", file_arg],
    )
    .spawn()
    .expect("start brightrun");
    let (status, _, output) = finish(child).await;
    assert!(status.success(), "{output}");
    assert!(
        output.contains("tokens         not counted"),
        "the text report says tokens were not counted: {output}"
    );
}

#[tokio::test]
async fn a_known_base_model_counts_with_its_own_tokenizer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = good_file(dir.path());
    let file_arg = file.to_str().expect("utf-8 path");
    let content_bytes: u64 = (0..11)
        .map(|i| format!("question {i}answer {i}").len() as u64)
        .sum::<u64>()
        + "long".len() as u64
        + "word ".repeat(5_000).trim_end().len() as u64;

    let bytes = validate_json(
        dir.path(),
        &["--model", "brightrun/byte-llama-tiny", file_arg],
    )
    .await;
    let tokens = &bytes["statistics"]["tokens"];
    assert_eq!(
        tokens["tokenizer"], "bytes",
        "the byte-level model's own tokenizer: {tokens}"
    );
    assert_eq!(
        tokens["total"],
        content_bytes + 12 * 2 * 2,
        "one token per content byte, two per message: {tokens}"
    );
    assert_eq!(
        bytes["counts_by_code"]["exceeds_context"], 1,
        "the long conversation exceeds the byte model's 512: {bytes}"
    );

    let o200k = validate_json(dir.path(), &["--model", "openai/gpt-4o-mini", file_arg]).await;
    assert_eq!(
        o200k["statistics"]["tokens"]["tokenizer"], "o200k_base",
        "GPT-4o counts with o200k: {o200k}"
    );

    let fallback = validate_json(
        dir.path(),
        &["--model", "HuggingFaceTB/SmolLM2-135M-Instruct", file_arg],
    )
    .await;
    assert_eq!(
        fallback["statistics"]["tokens"]["tokenizer"], "cl100k_base",
        "a model whose tokenizer is not at hand counts with cl100k, and says so: {fallback}"
    );
    assert_eq!(
        fallback["counts_by_code"]["exceeds_context"],
        serde_json::Value::Null,
        "5 000 words (~5 000 cl100k tokens) fit SmolLM2's 8192-token context in cl100k: {fallback}"
    );
    let default = validate_json(dir.path(), &[file_arg]).await;
    assert_eq!(
        default["statistics"]["tokens"], fallback["statistics"]["tokens"],
        "no model: the same cl100k counts"
    );
}
