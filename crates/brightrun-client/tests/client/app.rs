//! The app layer's own behaviour, as a front end meets it: files refused before any work, lists
//! that work offline from the cache, notifications marked read exactly as listed, preferences
//! checked and kept, a month's costs against the budget.

use brightrun_client::ErrorCode;
use brightrun_client::app::prefs::{self, Polling, Preferences, Theme};
use brightrun_client::app::{CancellationToken, Refresh, costs, datasets, notifications};
use brightrun_client::testing::*;
use brightrun_stack::testing::{FaultProxy, mint_user};

#[tokio::test]
async fn wrong_types_and_oversized_files_are_refused_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "app-refuse").await;
    // Nothing listens there: a refusal that needed the server would say `offline`.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let app = app_at(&closed, &dir.path().join("app"), Some(&user)).await;
    let image = dir.path().join("photo.png");
    std::fs::write(&image, b"\x89PNG\r\n").expect("write");
    let huge = dir.path().join("huge.jsonl");
    std::fs::File::create(&huge)
        .and_then(|f| f.set_len(brightrun_core::DATASET_MAX_BYTES + 1))
        .expect("a sparse 500 MB file");
    let cancel = CancellationToken::new();
    for (file, code) in [
        (&image, ErrorCode::UnsupportedType),
        (&huge, ErrorCode::TooLarge),
    ] {
        let request = datasets::UploadDataset {
            path: file.clone(),
            name: None,
            description: None,
            new: false,
            structural: None,
            chunk_size: None,
        };
        let error = datasets::upload(&app, request, None, &cancel)
            .await
            .expect_err("refused");
        assert_eq!(error.code(), code, "{}: {error}", file.display());
        let error = datasets::validate(
            &app,
            datasets::LocalFile { path: file.clone() },
            None,
            &cancel,
        )
        .await
        .expect_err("refused");
        assert_eq!(error.code(), code, "validating {}: {error}", file.display());
    }
    assert!(
        error_message_of(&app, &huge).await.contains("500 MB"),
        "the size error says the limit"
    );
}

async fn error_message_of(app: &brightrun_client::app::App, path: &std::path::Path) -> String {
    datasets::validate(
        app,
        datasets::LocalFile {
            path: path.to_owned(),
        },
        None,
        &CancellationToken::new(),
    )
    .await
    .expect_err("refused")
    .to_string()
}

#[tokio::test]
async fn a_cancelled_validation_stops_with_cancelled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = app_at(&stack().url, &dir.path().join("app"), None).await;
    let file = dataset_file(dir.path(), "big.jsonl", 4 * 1024 * 1024);
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = datasets::validate(&app, datasets::LocalFile { path: file }, None, &cancel)
        .await
        .expect_err("cancelled");
    assert_eq!(error.code(), ErrorCode::Cancelled, "{error:?}");
}

#[tokio::test]
async fn lists_are_shown_from_the_cache_when_the_server_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "app-offline").await;
    let db = stack().db().await;
    for name in ["alpha set", "beta set"] {
        let shape = brightrun_stack::testing::DatasetShape {
            name: name.into(),
            ..Default::default()
        };
        brightrun_stack::testing::ready_dataset(&db, user.id, &shape).await;
    }
    db.close().await;
    let proxy = FaultProxy::start(&stack().url).await;
    let app = app_at(&proxy.url(), &dir.path().join("app"), Some(&user)).await;

    let empty = datasets::list(
        &app,
        datasets::ListDatasets {
            refresh: Refresh::Cache,
            ..Default::default()
        },
    )
    .await
    .expect("the cache answers before any fetch");
    assert!(
        empty.items.is_empty() && empty.stale && empty.fetched_at.is_none(),
        "{empty:?}"
    );
    let fresh = datasets::list(
        &app,
        datasets::ListDatasets {
            refresh: Refresh::Server,
            ..Default::default()
        },
    )
    .await
    .expect("online");
    assert_eq!(fresh.items.len(), 2, "both datasets");
    assert!(!fresh.stale, "fresh from the server");

    proxy.cut_all();
    let offline = datasets::list(
        &app,
        datasets::ListDatasets {
            refresh: Refresh::Server,
            ..Default::default()
        },
    )
    .await
    .expect_err("the server is gone");
    assert_eq!(offline.code(), ErrorCode::Offline, "{offline:?}");
    let cached = datasets::list(
        &app,
        datasets::ListDatasets {
            refresh: Refresh::Cache,
            search: Some("BETA".into()),
            status: None,
        },
    )
    .await
    .expect("the cache works offline");
    assert!(cached.stale, "marked stale");
    assert_eq!(cached.fetched_at, fresh.fetched_at, "as fetched before");
    let names: Vec<&str> = cached.items.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["beta set"], "searched case-insensitively");
}

#[tokio::test]
async fn mark_read_marks_exactly_the_notifications_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "app-notes").await;
    let db = stack().db().await;
    let insert = |title: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query(
                "insert into public.notifications (user_id, type, title, message)
                 values ($1, 'job_complete', $2, 'done')",
            )
            .bind(user.id)
            .bind(title)
            .execute(&db)
            .await
            .expect("insert notification");
        }
    };
    insert("first").await;
    insert("second").await;
    let app = app_at(&stack().url, &dir.path().join("app"), Some(&user)).await;
    let shown = notifications::list(&app, notifications::ListNotifications { unread_only: true })
        .await
        .expect("list");
    assert_eq!(shown.len(), 2, "two unread");
    insert("arrived meanwhile").await;
    let marked = notifications::mark_read(
        &app,
        notifications::MarkRead {
            ids: shown.iter().map(|n| n.id).collect(),
        },
    )
    .await
    .expect("mark read");
    assert_eq!(marked.count, 2, "the two shown");
    let unread = notifications::list(&app, notifications::ListNotifications { unread_only: true })
        .await
        .expect("list");
    let titles: Vec<&str> = unread.iter().map(|n| n.title.as_str()).collect();
    assert_eq!(titles, ["arrived meanwhile"], "the unseen one stays unread");
    db.close().await;
}

#[tokio::test]
async fn preferences_are_checked_kept_and_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "app-prefs").await;
    let app = app_at(&stack().url, &dir.path().join("app"), Some(&user)).await;
    assert_eq!(
        prefs::get(&app).await.expect("defaults"),
        Preferences::default(),
        "the defaults until something is saved"
    );
    for bad in [
        Preferences {
            budget_alert_percent: 0,
            ..Preferences::default()
        },
        Preferences {
            monthly_budget: Some(-5.0),
            ..Preferences::default()
        },
        Preferences {
            polling: Polling {
                active_seconds: 30,
                background_seconds: 5,
            },
            ..Preferences::default()
        },
        Preferences {
            download_dir: Some("relative/dir".into()),
            ..Preferences::default()
        },
    ] {
        let error = prefs::set(&app, bad.clone()).await.expect_err("refused");
        assert_eq!(
            error.code(),
            ErrorCode::ValidationFailed,
            "{bad:?}: {error}"
        );
    }
    let chosen = Preferences {
        monthly_budget: Some(10.0),
        budget_alert_percent: 50,
        download_dir: Some(dir.path().join("models")),
        notifications: false,
        polling: Polling {
            active_seconds: 5,
            background_seconds: 60,
        },
        close_to_tray: false,
        theme: Theme::Dark,
    };
    prefs::set(&app, chosen.clone()).await.expect("saved");
    let reopened = app_at(&stack().url, &dir.path().join("app"), Some(&user)).await;
    let kept = prefs::get(&reopened).await.expect("read back");
    assert_eq!(kept, chosen, "kept across restarts");
    assert_eq!(
        kept.cadence().active_foreground,
        std::time::Duration::from_secs(5),
        "the watcher polls at the chosen pace"
    );

    // A month's costs against that budget: $6 of $10 is past the 50 % alert.
    let (job, _) = artifact_row(&user, serde_json::json!({})).await;
    let db = stack().db().await;
    sqlx::query(
        "insert into public.cost_records (user_id, job_id, cost_type, amount, billing_period)
         values ($1, $2, 'compute', 6.0, date_trunc('month', now())::date)",
    )
    .bind(user.id)
    .bind(job)
    .execute(&db)
    .await
    .expect("a cost record");
    db.close().await;
    let report = costs::month(&reopened, costs::CostMonth::default())
        .await
        .expect("this month");
    assert_eq!(report.summary.total, 6.0, "the month's total");
    let budget = report.budget.expect("a budget is set");
    assert!(
        budget.alert && !budget.over && (budget.used - 0.6).abs() < 1e-9,
        "60 % used: past the alert, within the budget: {budget:?}"
    );
}

/// How many datasets the server lists for the app's user.
async fn server_datasets(app: &brightrun_client::app::App) -> usize {
    datasets::list(
        app,
        datasets::ListDatasets {
            refresh: Refresh::Server,
            ..Default::default()
        },
    )
    .await
    .expect("list")
    .items
    .len()
}

#[tokio::test]
async fn an_upload_checks_large_files_structurally_and_small_ones_in_full_unless_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let user = mint_user(stack(), "app-structural").await;
    let app = app_at(&stack().url, &dir.path().join("app"), Some(&user)).await;
    let cancel = CancellationToken::new();
    let upload = |path: std::path::PathBuf, structural: Option<bool>| {
        let app = &app;
        let cancel = &cancel;
        async move {
            datasets::upload(
                app,
                datasets::UploadDataset {
                    path,
                    name: None,
                    description: None,
                    new: true,
                    structural,
                    chunk_size: None,
                },
                None,
                cancel,
            )
            .await
        }
    };
    let small = dataset_file(dir.path(), "small.jsonl", 64 * 1024);
    let full = upload(small.clone(), None).await.expect("uploaded");
    assert!(
        full.report.statistics.tokens.is_some(),
        "a small file is counted before it is sent"
    );
    let structural = upload(small.clone(), Some(true)).await.expect("uploaded");
    assert_eq!(
        structural.report.statistics.tokens, None,
        "told to, a small file gets the structural pass (no token figures)"
    );
    assert_eq!(
        structural.report.statistics.lines,
        full.report.statistics.lines
    );

    let large = dataset_file(
        dir.path(),
        "large.jsonl",
        datasets::STRUCTURAL_FROM_BYTES as usize + 1024,
    );
    let precheck = |path: std::path::PathBuf| {
        let app = &app;
        let cancel = &cancel;
        async move {
            datasets::precheck(app, datasets::LocalFile { path }, None, cancel)
                .await
                .expect("checked")
        }
    };
    assert!(
        precheck(small.clone()).await.statistics.tokens.is_some(),
        "the check before an upload counts a small file"
    );
    assert_eq!(
        precheck(large.clone()).await.statistics.tokens,
        None,
        "and passes a large one structurally, as the upload will"
    );
    let auto = upload(large.clone(), None).await.expect("uploaded");
    assert_eq!(
        auto.report.statistics.tokens, None,
        "from STRUCTURAL_FROM_BYTES on, the structural pass"
    );
    assert_eq!(auto.bytes, std::fs::metadata(&large).expect("size").len());

    // The structural pass still refuses a broken file, and nothing is created for it.
    let broken = dir.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n{not json\n",
    )
    .expect("write");
    let before = server_datasets(&app).await;
    let error = upload(broken, Some(true)).await.expect_err("refused");
    assert_eq!(error.code(), ErrorCode::ValidationFailed, "{error}");
    let after = server_datasets(&app).await;
    assert_eq!(before, after, "no dataset row for a refused file");
}
