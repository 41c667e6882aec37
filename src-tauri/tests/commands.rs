//! The shell's commands over IPC on Tauri's mock runtime (no display): what the window sends,
//! what it gets back, the wire error `{code, message, hint, retryable}` on failure, and the
//! events that follow. Against the real stack; the session goes to the real keychain, as in
//! the app (the test run provides an unlocked gnome-keyring). The keychain entry is per project
//! URL, so each test reaches the stack through a proxy of its own: tests running side by side
//! never share a session.

use std::sync::mpsc;
use std::time::Duration;

use brightrun_client::app::{App as ClientApp, AppConfig, ProjectChoice, auth};
use brightrun_client::{BuildChannel, Secret};
use brightrun_desktop::project::{Choice, Settings};
use brightrun_stack::testing::{FaultProxy, stack, unique_email};
use serde_json::{Value, json};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{App, Listener as _, WebviewWindow};
use tempfile::TempDir;

/// The app on the mock runtime with one window, the way `run()` builds it.
struct Shell {
    app: App<MockRuntime>,
    window: WebviewWindow<MockRuntime>,
    dir: TempDir,
    /// The project URL this shell uses (a proxy of the stack), when it has one.
    url: Option<String>,
    _proxy: Option<FaultProxy>,
}

impl Shell {
    fn new(environment: Option<Choice>) -> Self {
        let dir = tempfile::tempdir().expect("a data dir");
        let settings = Settings::new(dir.path().to_owned(), environment);
        let app = brightrun_desktop::builder(mock_builder())
            .build(mock_context(noop_assets()))
            .expect("the app builds");
        brightrun_desktop::install(app.handle(), settings);
        let window = tauri::WebviewWindowBuilder::new(&app, "main", Default::default())
            .build()
            .expect("a window");
        Self {
            app,
            window,
            dir,
            url: None,
            _proxy: None,
        }
    }

    /// Against the test stack, as `BRIGHTRUN_URL` and `BRIGHTRUN_ANON_KEY` would set it.
    fn on_stack() -> Self {
        let st = stack();
        let proxy = tauri::async_runtime::block_on(FaultProxy::start(&st.url));
        let url = proxy.url();
        let mut shell = Self::new(Some(Choice {
            sandbox: false,
            url: Some(url.clone()),
            anon_key: Some(st.anon_key.clone()),
        }));
        shell.url = Some(url);
        shell._proxy = Some(proxy);
        shell
    }

    /// Invokes `cmd` with `args` as the window would: the value, or the error it receives.
    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        get_ipc_response(
            &self.window,
            InvokeRequest {
                cmd: cmd.into(),
                callback: tauri::ipc::CallbackFn(0),
                error: tauri::ipc::CallbackFn(1),
                url: "tauri://localhost".parse().expect("url"),
                body: tauri::ipc::InvokeBody::Json(args),
                headers: Default::default(),
                invoke_key: INVOKE_KEY.to_string(),
            },
        )
        .map(|body| body.deserialize::<Value>().expect("a JSON answer"))
    }

    /// The error `cmd` answers with; panics on success.
    fn refused(&self, cmd: &str, args: Value) -> Value {
        match self.invoke(cmd, args) {
            Ok(v) => panic!("{cmd} answered {v}, not an error"),
            Err(e) => e,
        }
    }

    fn sign_up(&self) -> String {
        let email = unique_email("desktop-cmd");
        let outcome = self
            .invoke(
                "sign_up",
                json!({ "request": { "email": email, "password": "desktop-password-1" } }),
            )
            .expect("sign_up");
        assert_eq!(outcome["account"]["email"], json!(email), "{outcome}");
        email
    }
}

/// Every error the window receives has the wire error's four fields.
fn assert_wire(error: &Value, code: &str) {
    assert_eq!(error["code"], json!(code), "{error}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error}"
    );
    assert!(error["retryable"].is_boolean(), "{error}");
    assert!(error.get("hint").is_none_or(Value::is_string), "{error}");
}

const CHANNEL: &str = "__CHANNEL__:7";

#[test]
fn before_a_project_is_chosen_commands_say_not_configured() {
    let shell = Shell::new(None);
    let status = shell.invoke("project_status", json!({})).expect("status");
    assert_eq!(status, json!({ "chosen": null, "from_environment": false }));
    let error = shell.refused(
        "list_datasets",
        json!({ "request": { "refresh": "cache" } }),
    );
    assert_wire(&error, "not_configured");
}

#[test]
fn a_project_is_checked_before_it_is_kept() {
    let st = stack();
    let shell = Shell::new(None);
    let wrong = shell.refused(
        "choose_project",
        json!({ "url": st.url, "anonKey": "not-the-anon-key" }),
    );
    assert_ne!(wrong["code"], json!("not_configured"), "{wrong}");
    assert!(
        !shell.dir.path().join("desktop.json").exists(),
        "a refused project is not kept"
    );

    shell
        .invoke(
            "choose_project",
            json!({ "url": st.url, "anonKey": st.anon_key }),
        )
        .expect("the stack's project is accepted");
    let status = shell.invoke("project_status", json!({})).expect("status");
    assert_eq!(status["chosen"]["url"], json!(st.url));
    assert_eq!(status["from_environment"], json!(false));
    // Kept for the next start.
    let again = Settings::new(shell.dir.path().to_owned(), None);
    assert_eq!(
        again.effective_choice().and_then(|c| c.url),
        Some(st.url.clone())
    );
}

#[test]
fn signing_in_and_out_announce_the_session() {
    let shell = Shell::on_stack();
    let (tx, rx) = mpsc::channel::<Value>();
    shell.app.listen_any("session-changed", move |event| {
        let _ = tx.send(serde_json::from_str(event.payload()).expect("JSON"));
    });
    let email = shell.sign_up();
    let signed_up = rx.recv_timeout(Duration::from_secs(30)).expect("an event");
    assert_eq!(signed_up["account"]["email"], json!(email));

    let wrong = shell.refused(
        "sign_in",
        json!({ "request": { "email": email, "password": "not-the-password" } }),
    );
    assert_eq!(wrong["retryable"], json!(false), "{wrong}");
    assert!(
        rx.try_recv().is_err(),
        "a refused sign-in announces nothing"
    );

    let who = shell.invoke("whoami", json!({})).expect("whoami");
    assert_eq!(who["email"], json!(email));
    shell.invoke("sign_out", json!({})).expect("sign_out");
    let signed_out = rx.recv_timeout(Duration::from_secs(30)).expect("an event");
    assert_eq!(signed_out, json!({ "account": null }));
    let status = shell.invoke("session_status", json!({})).expect("status");
    assert_eq!(status, json!({ "account": null, "offline": false }));
    assert_wire(&shell.refused("whoami", json!({})), "auth_expired");
}

#[test]
fn a_wrong_file_is_refused_before_any_work() {
    let shell = Shell::on_stack();
    shell.sign_up();
    let text = shell.dir.path().join("notes.txt");
    std::fs::write(&text, "{}\n").expect("write");
    let error = shell.refused(
        "upload_dataset",
        json!({ "request": { "path": text }, "transfer": "t-1", "progress": CHANNEL }),
    );
    assert_wire(&error, "unsupported_type");
    let missing = shell.dir.path().join("gone.jsonl");
    let error = shell.refused(
        "validate_dataset",
        json!({ "request": { "path": missing }, "transfer": "t-2", "progress": CHANNEL }),
    );
    assert_eq!(error["code"], json!("local"), "{error}");
}

#[test]
fn a_dropped_file_is_known_by_its_first_lines() {
    let shell = Shell::on_stack();
    shell.sign_up();
    let v3 = shell.dir.path().join("sharegpt.jsonl");
    std::fs::write(
        &v3,
        "{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}, {\"from\": \"gpt\", \"value\": \"hello\"}]}\n",
    )
    .expect("write");
    let guess = shell
        .invoke("inspect_dataset", json!({ "request": { "path": v3 } }))
        .expect("a guess");
    assert_eq!(
        guess,
        json!({"kind": "format", "format": "brightrun_lora_v3"}),
        "a ShareGPT file is known at once"
    );
    let text = shell.dir.path().join("notes.txt");
    std::fs::write(&text, "{}\n").expect("write");
    let error = shell.refused("inspect_dataset", json!({ "request": { "path": text } }));
    assert_wire(&error, "unsupported_type");
}

#[test]
fn validation_reports_errors_with_their_lines() {
    let shell = Shell::on_stack();
    shell.sign_up();
    let file = shell.dir.path().join("broken.jsonl");
    std::fs::write(
        &file,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\nnot json\n",
    )
    .expect("write");
    let report = shell
        .invoke(
            "validate_dataset",
            json!({ "request": { "path": file }, "transfer": "t-3", "progress": CHANNEL }),
        )
        .expect("a report");
    assert_eq!(report["error_count"].as_u64(), Some(1), "{report}");
    assert_eq!(report["errors"][0]["line"], json!(2), "{report}");
    assert_eq!(report["lines_read"], json!(2), "{report}");
}

#[test]
fn an_upload_ends_ready_and_each_change_of_its_dataset_is_an_event() {
    let shell = Shell::on_stack();
    shell.sign_up();
    let (tx, rx) = mpsc::channel::<Value>();
    shell.app.listen_any("dataset-changed", move |event| {
        let _ = tx.send(serde_json::from_str(event.payload()).expect("JSON"));
    });
    let file =
        brightrun_client::testing::dataset_file(shell.dir.path(), "cmd-upload.jsonl", 8 * 1024);
    let outcome = shell
        .invoke(
            "upload_dataset",
            json!({ "request": { "path": file }, "transfer": "t-4", "progress": CHANNEL }),
        )
        .expect("uploaded");
    let id = outcome["dataset_id"].clone();
    assert_eq!(outcome["dataset"]["id"], id, "{outcome}");
    assert_eq!(outcome["already_uploaded"], json!(false));

    // No worker runs here: the worker's verdict is written by hand, and the shell's follower
    // announces the row it then reads.
    let st = stack();
    let dataset: uuid::Uuid = serde_json::from_value(id.clone()).expect("uuid");
    tauri::async_runtime::block_on(async {
        let db = st.db().await;
        sqlx::query(
            "update public.datasets set status = 'ready', validated_at = now(), total_tokens = 1000, \
             training_tokens = 900 where id = $1",
        )
        .bind(dataset)
        .execute(&db)
        .await
        .expect("mark ready");
        db.close().await;
    });
    let ready = loop {
        let event = rx.recv_timeout(Duration::from_secs(30)).expect("an event");
        assert_eq!(event["dataset"]["id"], id, "{event}");
        if event["dataset"]["status"] == json!("ready") {
            break event;
        }
    };
    assert_eq!(ready["dataset"]["file_name"], json!("cmd-upload.jsonl"));

    let listing = shell
        .invoke(
            "list_datasets",
            json!({ "request": { "refresh": "server" } }),
        )
        .expect("list");
    assert_eq!(listing["stale"], json!(false));
    assert!(
        listing["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|d| d["id"] == id)),
        "{listing}"
    );
    let cancelled = shell
        .invoke("cancel_transfer", json!({ "transfer": "t-4" }))
        .expect("cancel");
    assert_eq!(cancelled, json!(false), "the transfer had ended");
}

#[test]
fn the_cli_and_the_app_share_one_session() {
    let shell = Shell::on_stack();
    let email = shell.sign_up();
    shell.invoke("sign_out", json!({})).expect("sign_out");

    // Signed in as the CLI does it: the app layer with its own data directory, same project.
    let cli_dir = tempfile::tempdir().expect("a data dir");
    let config = AppConfig::resolve(
        ProjectChoice {
            url: shell.url.clone(),
            anon_key: Some(stack().anon_key.clone()),
        },
        Some(cli_dir.path().to_owned()),
        ProjectChoice::default(),
        BuildChannel::Dev,
    )
    .expect("config");
    tauri::async_runtime::block_on(async {
        let cli = ClientApp::open(config).await.expect("the CLI's app layer");
        auth::sign_in(
            &cli,
            auth::Credentials {
                email: email.clone(),
                password: Secret::new("desktop-password-1".to_owned()),
            },
        )
        .await
        .expect("the CLI signs in");
    });

    // A window opened now finds that session.
    let window = Shell::new(Some(Choice {
        sandbox: false,
        url: shell.url.clone(),
        anon_key: Some(stack().anon_key.clone()),
    }));
    let status = window.invoke("session_status", json!({})).expect("status");
    assert_eq!(status["account"]["email"], json!(email), "{status}");
}

#[test]
fn a_job_is_checked_estimated_created_and_drawn() {
    use brightrun_stack::testing::{DatasetShape, ready_dataset};

    let shell = Shell::on_stack();
    shell.sign_up();
    let account = shell.invoke("whoami", json!({})).expect("whoami");
    let user: uuid::Uuid = serde_json::from_value(account["user_id"].clone()).expect("uuid");
    let dataset = tauri::async_runtime::block_on(async {
        let db = stack().db().await;
        let id = ready_dataset(&db, user, &DatasetShape::default()).await;
        db.close().await;
        id
    });
    // The form's check reads the dataset from the local cache, as the window's list fills it.
    shell
        .invoke(
            "list_datasets",
            json!({ "request": { "refresh": "server" } }),
        )
        .expect("list");
    let (tx, rx) = mpsc::channel::<Value>();
    shell.app.listen_any("jobs-changed", move |event| {
        let _ = tx.send(serde_json::from_str(event.payload()).expect("JSON"));
    });
    let draft = |overrides: Value, gpu_count: u32| {
        json!({ "draft": {
            "dataset_id": dataset, "preset": "balanced", "gpu_type": "A100-80GB",
            "gpu_count": gpu_count, "overrides": overrides,
        }})
    };

    // Out of bounds: every field named, nothing sent.
    let check = shell
        .invoke("check_job", draft(json!({ "learning_rate": 1.0 }), 99))
        .expect("check");
    let fields: Vec<&str> = check["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["field"].as_str())
        .collect();
    assert_eq!(fields, ["learning_rate", "gpu_count"], "{check}");

    // Within bounds: the schedule from the dataset's 90 pairs (batch 8: 12 steps an epoch, 5
    // epochs) and the warm-up of 200 steps flagged.
    let check = shell
        .invoke("check_job", draft(json!({}), 1))
        .expect("check");
    assert_eq!(check["problems"], json!([]), "{check}");
    assert_eq!(check["total_steps"], json!(60), "{check}");
    assert!(
        check["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("warmup_steps 200")),
        "{check}"
    );

    // The server's estimate, explained by its inputs; fewer epochs cost less.
    let five = shell
        .invoke("estimate_job", draft(json!({}), 1))
        .expect("estimate");
    let two = shell
        .invoke("estimate_job", draft(json!({ "num_epochs": 2 }), 1))
        .expect("estimate");
    assert_eq!(five["epochs"], json!(5));
    assert_eq!(two["epochs"], json!(2));
    assert_eq!(
        two["total_tokens"],
        json!(2 * five["tokens_per_epoch"].as_u64().expect("tokens"))
    );
    assert!(
        two["estimated_cost"].as_f64() < five["estimated_cost"].as_f64(),
        "{two} vs {five}"
    );

    // Created: the answer and a jobs-changed event; clone gives the same settings back.
    let created = shell
        .invoke("create_job", draft(json!({ "num_epochs": 2 }), 1))
        .expect("create");
    let job = created["job"]["id"].clone();
    assert_eq!(created["job"]["status"], json!("queued"), "{created}");
    let event = rx.recv_timeout(Duration::from_secs(10)).expect("an event");
    assert_eq!(event["jobs"][0]["id"], job, "{event}");
    let cloned = shell
        .invoke("clone_job", json!({ "request": { "id": job } }))
        .expect("clone");
    assert_eq!(cloned["overrides"]["num_epochs"], json!(2), "{cloned}");
    assert_eq!(cloned["dataset_id"], json!(dataset), "{cloned}");

    // Its chart (no metrics yet) draws in the dark theme; five lines are refused.
    let line = json!({ "job_id": job, "label": "run" });
    let chart = shell
        .invoke(
            "job_chart",
            json!({ "request": {
                "lines": [line], "kind": "loss", "size": { "width": 400, "height": 200 },
                "style": { "theme": "dark", "log_y": false },
            }}),
        )
        .expect("chart");
    assert_eq!(chart["points"], json!(0));
    assert!(
        chart["svg"]
            .as_str()
            .is_some_and(|svg| svg.starts_with("<svg") && svg.contains("#1A1A22")),
        "a dark SVG"
    );
    let error = shell.refused(
        "job_chart",
        json!({ "request": {
            "lines": [line, line, line, line, line], "kind": "loss",
            "size": { "width": 400, "height": 200 },
        }}),
    );
    assert_wire(&error, "validation_failed");

    // Cancelled while queued: at once.
    let cancelled = shell
        .invoke("cancel_job", json!({ "request": { "id": job } }))
        .expect("cancel");
    assert_eq!(cancelled["status"], json!("cancelled"), "{cancelled}");
}
