//! `brightrun jobs`: hyperparameter overrides reach the server's row, out-of-range values are
//! refused with the reason and create nothing, and `jobs watch` prints every state once.

use std::path::Path;
use std::time::Duration;

use brightrun_stack::testing::{TestUser, mint_user};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::ChildStdout;

use crate::support::{brightrun, finish, stack};

/// A dataset of `user` as the worker leaves it after validation: 90 training pairs, ready.
async fn ready_dataset(user: &TestUser) -> String {
    let db = stack().db().await;
    let id = brightrun_stack::testing::ready_dataset(&db, user.id, &Default::default()).await;
    db.close().await;
    id.to_string()
}

async fn run(
    user: &TestUser,
    dir: &Path,
    args: &[&str],
) -> (std::process::ExitStatus, serde_json::Value, String) {
    let child = brightrun(&stack().url, user, dir, args)
        .spawn()
        .expect("start brightrun");
    finish(child).await
}

async fn job_count(user: &TestUser) -> i64 {
    let db = stack().db().await;
    let n = sqlx::query_scalar("select count(*) from public.training_jobs where user_id = $1")
        .bind(user.id)
        .fetch_one(&db)
        .await
        .expect("count jobs");
    db.close().await;
    n
}

/// The job's `hyperparameters` column, and whether it equals the server's `preset` with
/// `overrides` laid over it key by key.
async fn stored_hyperparameters(
    job_id: &str,
    preset: &str,
    overrides: &serde_json::Value,
) -> (serde_json::Value, bool) {
    let db = stack().db().await;
    let row: (serde_json::Value, bool) = sqlx::query_as(
        "select j.hyperparameters, j.hyperparameters = p.hyperparameters || $3::jsonb
           from public.training_jobs j, public.training_presets p
          where j.id = $1::uuid and p.id = $2",
    )
    .bind(job_id)
    .bind(preset)
    .bind(overrides)
    .fetch_one(&db)
    .await
    .expect("read the job's hyperparameters");
    db.close().await;
    row
}

#[tokio::test]
async fn overrides_change_only_the_given_values_of_the_servers_preset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-overrides").await;
    let dataset = ready_dataset(&user).await;
    let spec = [
        "--dataset",
        &dataset,
        "--gpu",
        "A100-80GB",
        "--preset",
        "conservative",
    ];

    // Some values: the rest stay the preset's.
    let some = [
        "--learning-rate",
        "0.0005",
        "--lora-rank",
        "32",
        "--gradient-accumulation-steps",
        "4",
        "--epochs",
        "2",
    ];
    let (status, job, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create", "--json"][..], &spec, &some].concat(),
    )
    .await;
    assert!(status.success(), "create works: {output}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let (stored, as_expected) = stored_hyperparameters(
        &job_id,
        "conservative",
        &serde_json::json!({
            "learning_rate": 0.0005, "lora_rank": 32, "gradient_accumulation_steps": 4,
            "num_epochs": 2
        }),
    )
    .await;
    assert!(
        as_expected,
        "the row is the server's conservative preset with exactly these four values changed: \
         {stored}"
    );

    // Every option.
    let all = [
        "--base-model",
        "Qwen/Qwen2.5-0.5B-Instruct",
        "--learning-rate",
        "0.00015",
        "--batch-size",
        "16",
        "--epochs",
        "7",
        "--lora-rank",
        "64",
        "--lora-alpha",
        "128",
        "--lora-dropout",
        "0.2",
        "--warmup-steps",
        "50",
        "--weight-decay",
        "0.05",
        "--gradient-accumulation-steps",
        "8",
        "--max-grad-norm",
        "0.7",
    ];
    let (status, job, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create", "--json"][..], &spec, &all].concat(),
    )
    .await;
    assert!(status.success(), "create with every option works: {output}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let expected = serde_json::json!({
        "base_model": "Qwen/Qwen2.5-0.5B-Instruct", "learning_rate": 0.00015, "batch_size": 16,
        "num_epochs": 7, "lora_rank": 64, "lora_alpha": 128, "lora_dropout": 0.2,
        "warmup_steps": 50, "weight_decay": 0.05, "gradient_accumulation_steps": 8,
        "max_grad_norm": 0.7
    });
    let (stored, as_expected) = stored_hyperparameters(&job_id, "conservative", &expected).await;
    assert!(as_expected, "every option reached the row: {stored}");
    assert_eq!(
        job["total_epochs"], 7,
        "the server planned the job with the overridden epochs: {output}"
    );

    // `jobs show` prints them.
    let (status, _, output) = run(&user, dir.path(), &["jobs", "show", &job_id]).await;
    assert!(status.success(), "show works: {output}");
    for (name, value) in [
        ("base_model", "Qwen/Qwen2.5-0.5B-Instruct"),
        ("learning_rate", "0.00015"),
        ("lora_alpha", "128"),
        ("gradient_accumulation_steps", "8"),
        ("max_grad_norm", "0.7"),
    ] {
        assert!(
            output
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, value]),
            "`jobs show` lists {name} {value}: {output}"
        );
    }
}

#[tokio::test]
async fn out_of_range_hyperparameters_are_refused_with_the_reason_and_create_no_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-bounds").await;
    let dataset = ready_dataset(&user).await;
    let spec = ["--dataset", &dataset, "--gpu", "A100-80GB"];

    // Plausible to type, refused by the server's bounds: its sentence, not the client's codes.
    let (status, _, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create"][..], &spec, &["--learning-rate", "0.05"]].concat(),
    )
    .await;
    assert!(
        !status.success(),
        "an out-of-range learning rate fails: {output}"
    );
    assert!(
        output.contains("error: hyperparameters.learning_rate")
            && output.contains("(0, 0.01]")
            && output.contains("got 0.05"),
        "names the value, the allowed range and what was given: {output}"
    );
    assert!(
        !output.contains("Rest error"),
        "without the client's status and SQLSTATE prefix: {output}"
    );

    let (status, json, output) = run(
        &user,
        dir.path(),
        &[
            &["jobs", "create", "--json"][..],
            &spec,
            &["--lora-alpha", "2048"],
        ]
        .concat(),
    )
    .await;
    assert!(!status.success(), "an out-of-range alpha fails: {output}");
    assert_eq!(
        json["error"]["code"], "validation_failed",
        "scripts get the kind: {output}"
    );
    assert!(
        json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("hyperparameters.lora_alpha") && m.contains("2048")),
        "and the server's reason: {output}"
    );

    // Out of the server's bounds: refused by the same bounds before anything is sent, in the
    // server's words.
    for (option, value, field, range) in [
        ("--lora-dropout", "1.5", "lora_dropout", "[0, 0.9]"),
        ("--batch-size", "0", "batch_size", "[1, 256]"),
        ("--learning-rate", "-0.001", "learning_rate", "(0, 0.01]"),
        ("--max-grad-norm", "inf", "max_grad_norm", "(0, 100]"),
    ] {
        let (status, json, output) = run(
            &user,
            dir.path(),
            &[&["jobs", "create", "--json"][..], &spec, &[option, value]].concat(),
        )
        .await;
        assert_eq!(status.code(), Some(1), "{option} {value} fails: {output}");
        assert_eq!(json["error"]["code"], "validation_failed", "{output}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("hyperparameters.{field}")) && message.contains(range),
            "{option} {value}: names the value and its range: {output}"
        );
    }
    // Not a number of the option's type at all: clap's usage error.
    let (status, _, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create"][..], &spec, &["--warmup-steps", "ten"]].concat(),
    )
    .await;
    assert_eq!(status.code(), Some(2), "a usage error: {output}");
    assert!(
        output.contains("invalid value 'ten' for '--warmup-steps"),
        "names the option: {output}"
    );

    assert_eq!(
        job_count(&user).await,
        0,
        "no refused command created a job"
    );
}

/// Sets the job's row as the worker would (superuser, bypassing RLS).
async fn set_job(job_id: &str, status: &str, stage: &str, step: i32) {
    let db = stack().db().await;
    sqlx::query(
        "update public.training_jobs
            set status = $2, current_stage = $3, current_step = $4, attempt = 1,
                progress = case when $4 >= 10 then 100 else $4 * 10 end,
                started_at = coalesce(started_at, now()),
                completed_at = case when $2 in ('completed', 'failed', 'cancelled') then now() end,
                final_cost = case when $2 = 'completed' then 0.42 end
          where id = $1::uuid",
    )
    .bind(job_id)
    .bind(status)
    .bind(stage)
    .bind(step)
    .execute(&db)
    .await
    .expect("update the job");
    db.close().await;
}

/// The next line of `jobs watch --json` as `(status, stage, step)`; `None` when it has ended.
async fn next_state(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<(String, String, i64)> {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("watch prints the next state within 30 s")
        .expect("read stdout")?;
    let row: serde_json::Value = serde_json::from_str(&line).expect("one JSON row per line");
    Some((
        row["status"].as_str().unwrap_or_default().to_owned(),
        row["current_stage"].as_str().unwrap_or_default().to_owned(),
        row["current_step"].as_i64().unwrap_or(-1),
    ))
}

#[tokio::test]
async fn watch_prints_each_state_once_and_ends_with_the_final_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-watch").await;
    let dataset = ready_dataset(&user).await;
    let (status, job, output) = run(
        &user,
        dir.path(),
        &[
            "jobs",
            "create",
            "--json",
            "--dataset",
            &dataset,
            "--gpu",
            "A100-80GB",
        ],
    )
    .await;
    assert!(status.success(), "create works: {output}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    set_job(&job_id, "running", "training", 10).await;

    let mut child = brightrun(
        &stack().url,
        &user,
        dir.path(),
        &["jobs", "watch", &job_id, "--json", "--interval", "1"],
    )
    .spawn()
    .expect("start watch");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    seen.push(next_state(&mut lines).await.expect("the running state"));
    // The last step is logged; the job still runs while it saves the adapter, then completes
    // with the same step. Each line waits for the one before, so no state is missed.
    set_job(&job_id, "running", "saving", 10).await;
    seen.push(next_state(&mut lines).await.expect("the saving stage"));
    set_job(&job_id, "completed", "completed", 10).await;
    while let Some(state) = next_state(&mut lines).await {
        seen.push(state);
    }
    let exit = child.wait().await.expect("watch ends");
    assert!(exit.success(), "watch ends by itself when the job does");

    let state = |status: &str, stage: &str| (status.to_owned(), stage.to_owned(), 10);
    assert_eq!(
        seen,
        vec![
            state("running", "training"),
            state("running", "saving"),
            state("completed", "completed"),
        ],
        "one line per state, the final one once and last"
    );
}

#[tokio::test]
async fn a_hyperparameters_file_replaces_the_presets_values_and_options_still_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-hp-file").await;
    let dataset = ready_dataset(&user).await;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../brightrun-worker/demo/support-bot.hyperparameters.json");
    let demo = demo.to_str().expect("utf-8 path");
    let file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo).expect("demo file")).expect("JSON");
    let spec = [
        "--dataset",
        &dataset,
        "--gpu",
        "A100-80GB",
        "--preset",
        "custom",
    ];

    let (status, job, output) = run(
        &user,
        dir.path(),
        &[
            &["jobs", "create", "--json"][..],
            &spec,
            &["--hyperparameters", demo, "--epochs", "3"],
        ]
        .concat(),
    )
    .await;
    assert!(status.success(), "create with a file works: {output}");
    let mut expected = file.clone();
    expected["num_epochs"] = 3.into();
    let (stored, as_expected) =
        stored_hyperparameters(job["id"].as_str().expect("job id"), "custom", &expected).await;
    assert!(
        as_expected,
        "the row is the preset with the file's values and --epochs over them: {stored}"
    );

    // The estimate takes the file's epochs when no option gives them.
    let (status, estimate, output) = run(
        &user,
        dir.path(),
        &[
            &["jobs", "estimate", "--json"][..],
            &spec,
            &["--hyperparameters", demo],
        ]
        .concat(),
    )
    .await;
    assert!(status.success(), "estimate with a file works: {output}");
    assert_eq!(
        estimate["epochs"], file["num_epochs"],
        "estimated for the file's epochs: {output}"
    );

    // A misspelt key is named, and nothing is created.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"learning_rte": 0.001}"#).expect("write");
    let before = job_count(&user).await;
    let (status, _, output) = run(
        &user,
        dir.path(),
        &[
            &["jobs", "create"][..],
            &spec,
            &["--hyperparameters", bad.to_str().expect("utf-8")],
        ]
        .concat(),
    )
    .await;
    assert!(!status.success(), "an unknown key fails: {output}");
    assert!(
        output.contains("unknown field `learning_rte`") && output.contains("`learning_rate`"),
        "names the key and lists the known ones: {output}"
    );
    assert_eq!(job_count(&user).await, before, "no job was created");
}

#[tokio::test]
async fn a_closed_pipe_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-pipe").await;
    let mut child = brightrun(&stack().url, &user, dir.path(), &["whoami", "--json"])
        .spawn()
        .expect("start brightrun");
    // The reader goes away before the CLI writes: `brightrun … | head -0`.
    drop(child.stdout.take());
    let (status, _, output) = finish(child).await;
    assert_eq!(
        status.code(),
        Some(141),
        "exits as a SIGPIPE'd program does: {output}"
    );
    assert!(!output.contains("panicked"), "no panic message: {output}");
}

#[tokio::test]
async fn a_warmup_longer_than_the_run_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-warmup").await;
    let dataset = ready_dataset(&user).await;
    // 90 training pairs, batch 4, 3 epochs: 69 steps; the conservative preset warms up for 100.
    let spec = [
        "--dataset",
        &dataset,
        "--gpu",
        "A100-80GB",
        "--preset",
        "conservative",
    ];
    let (status, job, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create", "--json"][..], &spec].concat(),
    )
    .await;
    assert!(status.success(), "the job is still created: {output}");
    assert_eq!(job["total_steps"], 69, "as planned by the server: {output}");
    assert!(
        output.contains("warning: warmup_steps 100 is at least the whole run (69 steps)")
            && output.contains(&format!(
                "brightrun jobs cancel {}",
                job["id"].as_str().unwrap_or("?")
            )),
        "says so, and how to fix it: {output}"
    );

    let (status, _, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create"][..], &spec, &["--warmup-steps", "7"]].concat(),
    )
    .await;
    assert!(status.success(), "{output}");
    assert!(
        !output.contains("warning:"),
        "no warning for a short warm-up: {output}"
    );
}

#[tokio::test]
async fn a_clone_keeps_the_source_job_and_changes_only_the_given_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-clone").await;
    let dataset = ready_dataset(&user).await;
    let spec = [
        "--dataset",
        &dataset,
        "--gpu",
        "A100-80GB",
        "--preset",
        "aggressive",
        "--lora-rank",
        "48",
        "--warmup-steps",
        "10",
    ];
    let (status, source, output) = run(
        &user,
        dir.path(),
        &[&["jobs", "create", "--json"][..], &spec].concat(),
    )
    .await;
    assert!(status.success(), "{output}");
    let source_id = source["id"].as_str().expect("id").to_owned();

    let (status, copy, output) = run(
        &user,
        dir.path(),
        &[
            "jobs",
            "clone",
            &source_id,
            "--json",
            "--learning-rate",
            "0.0001",
        ],
    )
    .await;
    assert!(status.success(), "clone works: {output}");
    assert_ne!(copy["id"], source["id"], "a new job");
    assert_eq!(copy["dataset_id"], source["dataset_id"], "same dataset");
    assert_eq!(copy["preset_id"], "aggressive", "same preset");
    let mut expected = source["hyperparameters"].clone();
    expected["learning_rate"] = 0.0001.into();
    assert_eq!(
        copy["hyperparameters"], expected,
        "the source's settings (rank 48, warm-up 10 kept) with the new learning rate"
    );
}

#[tokio::test]
async fn a_refused_command_line_is_a_json_error_with_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "cli-usage-json").await;
    let dataset = ready_dataset(&user).await;
    let (status, json, output) = run(
        &user,
        dir.path(),
        &[
            "jobs",
            "create",
            "--json",
            "--dataset",
            &dataset,
            "--gpu",
            "A100-80GB",
            "--batch-size",
            "many",
        ],
    )
    .await;
    assert_eq!(status.code(), Some(2), "a usage error: {output}");
    assert_eq!(
        json["error"]["code"], "usage",
        "on stdout, as JSON: {output}"
    );
    assert_eq!(
        json["error"]["message"],
        "invalid value 'many' for '--batch-size <N>': invalid digit found in string",
        "with clap's reason: {output}"
    );
    assert_eq!(job_count(&user).await, 0, "nothing was created");
}
