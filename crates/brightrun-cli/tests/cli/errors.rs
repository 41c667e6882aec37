//! What scripts get when a command fails: `--json` prints the wire error `{code, message, hint,
//! retryable}` on stdout and the command exits non-zero, with the same code whatever the path.

use std::path::Path;

use brightrun_stack::testing::{TestUser, mint_user};
use uuid::Uuid;

use crate::support::*;

async fn run_at(
    url: &str,
    user: &TestUser,
    dir: &Path,
    args: &[&str],
) -> (std::process::ExitStatus, serde_json::Value, String) {
    finish(
        brightrun(url, user, dir, args)
            .spawn()
            .expect("start brightrun"),
    )
    .await
}

fn assert_code(
    (status, json, output): &(std::process::ExitStatus, serde_json::Value, String),
    code: &str,
) {
    assert_eq!(status.code(), Some(1), "the command fails: {output}");
    assert_eq!(json["error"]["code"], code, "{output}");
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "with a message: {output}"
    );
    assert!(
        json["error"]["retryable"].is_boolean(),
        "and whether to try again: {output}"
    );
}

#[tokio::test]
async fn upload_and_list_fail_with_the_codes_scripts_branch_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-codes").await;
    let file = dataset_file(dir.path(), "codes.jsonl", 8 * 1024);
    let file_arg = file.to_str().expect("utf-8");

    // Offline: nothing listens at the project's address.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let offline = run_at(
        &closed,
        &user,
        dir.path(),
        &["datasets", "upload", file_arg, "--json"],
    )
    .await;
    assert_code(&offline, "offline");
    assert_eq!(offline.1["error"]["retryable"], true, "offline may pass");

    // A token the server refuses.
    let mut forged = user.clone();
    forged.access_token.push('x');
    for args in [
        &["datasets", "upload", file_arg, "--json"][..],
        &["datasets", "list", "--json"][..],
    ] {
        let refused = run_at(&stack().url, &forged, dir.path(), args).await;
        assert_code(&refused, "auth_expired");
    }

    // A model nobody has.
    let unknown = Uuid::new_v4().to_string();
    let missing = run_at(
        &stack().url,
        &user,
        dir.path(),
        &["models", "download", &unknown, "--to", "out", "--json"],
    )
    .await;
    assert_code(&missing, "not_found");
    assert!(
        missing.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&unknown)),
        "names the id: {}",
        missing.2
    );
    assert!(
        dataset_rows(user.id).await.is_empty(),
        "no failed command left a dataset"
    );
}

#[tokio::test]
async fn without_a_keychain_commands_say_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-no-keychain").await;
    let file = dataset_file(dir.path(), "k.jsonl", 4 * 1024);
    for args in [
        &["datasets", "list", "--json"][..],
        &[
            "datasets",
            "upload",
            file.to_str().expect("utf-8"),
            "--json",
        ][..],
        &["whoami", "--json"][..],
    ] {
        let mut command = brightrun(&stack().url, &user, dir.path(), args);
        // No fixed token, and a session bus where no Secret Service can answer.
        command
            .env_remove("BRIGHTRUN_ACCESS_TOKEN")
            .env_remove("BRIGHTRUN_USER_ID")
            .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
        let outcome = finish(command.spawn().expect("start brightrun")).await;
        assert_code(&outcome, "keychain_unavailable");
        assert!(
            outcome.1["error"]["hint"]
                .as_str()
                .is_some_and(|h| h.contains("keychain")),
            "says what to do: {}",
            outcome.2
        );
    }
}

const V3: &str = "{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n\
{\"conversations\": [{\"from\": \"system\", \"value\": \"be brief\"}, {\"from\": \"human\", \"value\": \"2+2?\"}, {\"from\": \"gpt\", \"value\": \"4\"}]}\n";

#[tokio::test]
async fn convert_turns_sharegpt_into_messages_and_keeps_what_exists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-convert").await;
    let input = dir.path().join("chats.jsonl");
    std::fs::write(&input, V3).expect("write");
    let output = dir.path().join("chats.v4.jsonl");
    let (i, o) = (
        input.to_str().expect("utf-8"),
        output.to_str().expect("utf-8"),
    );

    let (status, json, text) = run_at(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "convert", i, o, "--json"],
    )
    .await;
    assert!(status.success(), "converts: {text}");
    assert_eq!(json["conversations"], 2, "{text}");
    assert_eq!(json["messages"], 5, "{text}");
    let converted = std::fs::read_to_string(&output).expect("the output exists");
    let first: serde_json::Value =
        serde_json::from_str(converted.lines().next().expect("a line")).expect("JSON");
    assert_eq!(
        first["messages"][0],
        serde_json::json!({"role": "user", "content": "hi"}),
        "human became user, value became content"
    );
    let (status, report, text) = run_at(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "validate", o, "--json"],
    )
    .await;
    assert!(status.success(), "the result validates: {text}");
    assert_eq!(report["format"], "brightrun_lora_v4", "{text}");

    std::fs::write(&output, "keep me\n").expect("write");
    let refused = run_at(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "convert", i, o, "--json"],
    )
    .await;
    assert_code(&refused, "validation_failed");
    assert_eq!(
        std::fs::read_to_string(&output).expect("read"),
        "keep me\n",
        "an existing output is kept"
    );
    let (status, _, text) = run_at(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "convert", i, o, "--force"],
    )
    .await;
    assert!(status.success(), "--force replaces it: {text}");
    assert!(text.contains("2 conversations"), "says what it did: {text}");

    // A file mixing both formats: the validator's hint names the command that fixes it.
    let mixed = dir.path().join("mixed.jsonl");
    std::fs::write(
        &mixed,
        format!("{}{}", converted, V3.lines().next().expect("a v3 line")),
    )
    .expect("write");
    let (_, _, text) = run_at(
        &stack().url,
        &user,
        dir.path(),
        &["datasets", "validate", mixed.to_str().expect("utf-8")],
    )
    .await;
    assert!(
        text.contains("brightrun datasets convert"),
        "the hint names the command: {text}"
    );
}
