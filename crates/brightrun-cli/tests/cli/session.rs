//! The keychain path end to end: `login` stores the refresh token in the Secret Service, later
//! commands restore the session from it, `logout` ends it. Then the job commands on a dataset
//! the worker would have validated.

use std::path::Path;
use std::process::Stdio;

use brightrun_stack::testing::unique_email;
use tokio::process::Command;

use crate::support::{dataset_file, dataset_rows, finish, http, stack};

/// `brightrun <args>` with no token in the environment: the session comes from the keychain.
fn keychain_cli(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_brightrun"));
    command
        .args(args)
        .env("BRIGHTRUN_URL", &stack().url)
        .env("BRIGHTRUN_ANON_KEY", &stack().anon_key)
        .env("BRIGHTRUN_DATA_DIR", data_dir)
        .env_remove("BRIGHTRUN_ACCESS_TOKEN")
        .env_remove("BRIGHTRUN_USER_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run(data_dir: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let child = keychain_cli(data_dir, args)
        .spawn()
        .expect("start brightrun");
    let (status, json, output) = finish(child).await;
    (status.success(), json, output)
}

#[tokio::test]
async fn login_restore_jobs_and_logout_through_the_keychain() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "this test needs a Secret Service: run it through `cargo xtask test`, or under \
         dbus-run-session with an unlocked gnome-keyring"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let email = unique_email("cli-login");
    let password = "cli-login-password";
    let signup = http()
        .post(format!("{}/auth/v1/signup", stack().url))
        .header("apikey", &stack().anon_key)
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .expect("signup");
    assert!(signup.status().is_success(), "signup works");

    let mut login = keychain_cli(dir.path(), &["login", "--email", &email]);
    login.env("BRIGHTRUN_PASSWORD", password);
    let (status, _, output) = finish(login.spawn().expect("start login")).await;
    assert!(status.success(), "login works: {output}");

    let (ok, whoami, output) = run(dir.path(), &["whoami", "--json"]).await;
    assert!(
        ok,
        "a later process restores the session from the keychain: {output}"
    );
    assert_eq!(whoami["email"], email.as_str(), "{output}");
    let user_id: uuid::Uuid = whoami["user_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("user id");

    // A dataset as the worker leaves it after validation.
    let file = dataset_file(dir.path(), "train.jsonl", 8 * 1024);
    let (ok, _, output) = run(
        dir.path(),
        &[
            "datasets",
            "upload",
            file.to_str().expect("utf-8"),
            "--json",
        ],
    )
    .await;
    assert!(ok, "upload works: {output}");
    let (dataset, _, _) = dataset_rows(user_id).await.pop().expect("one dataset");
    let db = stack().db().await;
    sqlx::query(
        "update public.datasets set status = 'ready', training_ready = true, validated_at = now(),
                total_tokens = 200000, training_tokens = 180000,
                total_training_pairs = 90, total_validation_pairs = 10
         where id = $1",
    )
    .bind(dataset)
    .execute(&db)
    .await
    .expect("mark the dataset validated");
    db.close().await;
    let dataset = dataset.to_string();

    let spec = ["--dataset", &dataset, "--gpu", "A100-80GB", "--epochs", "2"];
    let (ok, estimate, output) = run(
        dir.path(),
        &[&["jobs", "estimate", "--json"][..], &spec].concat(),
    )
    .await;
    assert!(ok, "estimate works: {output}");
    let cost = estimate["estimated_cost"].as_f64();
    assert!(
        cost.is_some_and(|c| c > 0.0),
        "the server prices the job: {output}"
    );
    assert_eq!(
        estimate["tokens_per_epoch"], 180000,
        "priced from the dataset's tokens: {output}"
    );
    assert_eq!(estimate["epochs"], 2, "{output}");

    let (ok, job, output) = run(
        dir.path(),
        &[&["jobs", "create", "--json"][..], &spec].concat(),
    )
    .await;
    assert!(ok, "create works: {output}");
    assert_eq!(job["status"], "queued", "{output}");
    let job_id = job["id"].as_str().expect("job id").to_owned();

    let (ok, jobs, output) = run(dir.path(), &["jobs", "list", "--json"]).await;
    assert!(ok, "list works: {output}");
    assert!(
        jobs.as_array()
            .is_some_and(|j| j.iter().any(|j| j["id"] == job_id.as_str())),
        "the new job is listed: {output}"
    );
    let (ok, _, output) = run(dir.path(), &["jobs", "cancel", &job_id, "--json"]).await;
    assert!(ok, "cancel works: {output}");
    let (ok, shown, output) = run(dir.path(), &["jobs", "show", &job_id, "--json"]).await;
    assert!(ok, "show works: {output}");
    let status = shown["status"]
        .as_str()
        .or_else(|| shown["job"]["status"].as_str());
    assert_eq!(
        status,
        Some("cancelled"),
        "a queued job cancels at once: {output}"
    );
    let (ok, notifications, output) = run(dir.path(), &["notifications", "--json"]).await;
    assert!(
        ok && notifications.is_array(),
        "notifications list: {output}"
    );

    let (ok, _, output) = run(dir.path(), &["logout"]).await;
    assert!(ok, "logout works: {output}");
    let (ok, _, output) = run(dir.path(), &["whoami"]).await;
    assert!(!ok, "signed out: {output}");
    assert!(output.contains("not signed in"), "says why: {output}");
}
