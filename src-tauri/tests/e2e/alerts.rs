//! Native notifications (desktop 3/3): the app signed in and watching, jobs submitted from the
//! CLI, and a notification server on the session bus that records each `Notify` and clicks
//! its actions. One notification per outcome, naming the job's dataset; a click opens that job;
//! "Download" puts the adapter in the default folder; nothing repeated after a restart; what
//! ended while the app was closed announced once at the next start; nothing for a job the user
//! cancelled. The tray's menu (read over `com.canonical.dbusmenu`) lists a running job and opens
//! the window; the close button hides the window while the app goes on watching; a second
//! launch ends and leaves one app.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use brightrun_stack::testing::{stack, unique_email};
use uuid::Uuid;

use crate::harness::{App, Display, Launch, app_pids, home_dir, required};
use crate::notifications::{Notifications, Received, tray_click, tray_layout};
use crate::story::{dataset, shoot, worker_running};

const MINUTE: Duration = Duration::from_secs(60);

/// The CLI, on the same project (and so the same keychain session) as the app.
fn cli(data: &Path, args: &[&str]) -> serde_json::Value {
    let st = stack();
    let out = Command::new(required("BRIGHTRUN_E2E_CLI"))
        .env("BRIGHTRUN_URL", &st.url)
        .env("BRIGHTRUN_ANON_KEY", &st.anon_key)
        .env("BRIGHTRUN_DATA_DIR", data)
        .arg("--json")
        .args(args)
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "brightrun {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The id of the display's root window, as xdotool prints window ids (decimal).
fn xwininfo_root(display: &Display) -> String {
    let out = display
        .command("xwininfo")
        .arg("-root")
        .output()
        .expect("xwininfo runs (apt-get install x11-utils)");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .find(|w| w.starts_with("0x"))
        .unwrap_or_else(|| panic!("a window id in {text}"));
    u64::from_str_radix(hex.trim_start_matches("0x"), 16)
        .expect("a hex id")
        .to_string()
}

/// Polls the database until `sql` (one bound uuid) returns `want`.
async fn wait_db(sql: &str, bind: Uuid, want: i64, what: &str) {
    let db = stack().db().await;
    let deadline = tokio::time::Instant::now() + 3 * MINUTE;
    loop {
        let got: i64 = sqlx::query_scalar(sql)
            .bind(bind)
            .fetch_one(&db)
            .await
            .expect("query");
        if got == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {got} of {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.close().await;
}

/// The notifications so far that name `name`.
fn naming(server: &Notifications, name: &str) -> Vec<Received> {
    server
        .received()
        .into_iter()
        .filter(|n| n.summary.contains(name) || n.body.contains(name))
        .collect()
}

/// Waits until `count` notifications name `name`.
async fn wait_notified(
    app: &App,
    server: &Notifications,
    name: &str,
    count: usize,
) -> Vec<Received> {
    app.until(
        &format!("{count} notifications naming {name}"),
        MINUTE,
        || async {
            let got = naming(server, name);
            (got.len() >= count).then_some(got)
        },
    )
    .await
}

fn create_job(cli_data: &Path, dataset: &str) -> String {
    let created = cli(
        cli_data,
        &[
            "jobs",
            "create",
            "--dataset",
            dataset,
            "--gpu",
            "A6000-48GB",
            "--epochs",
            "1",
        ],
    );
    created["job"]["id"]
        .as_str()
        .or_else(|| created["id"].as_str())
        .unwrap_or_else(|| panic!("a job id in {created}"))
        .to_owned()
}

#[tokio::test]
async fn one_notification_per_outcome_even_across_restarts() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "the desktop test needs a session bus: run it through `cargo xtask test`"
    );
    let st = stack();
    let server = Notifications::start().await;
    let work = tempfile::Builder::new()
        .prefix("brightrun-e2e-alerts-")
        .tempdir()
        .expect("tempdir");
    let display = Display::start(1280, 800);
    let data = work.path().join("app");
    let cli_data = work.path().join("cli");
    let launch = || Launch {
        display: &display,
        data_dir: &data,
        project: Some((st.url.as_str(), st.anon_key.as_str())),
    };

    // Signed up in the window; the CLI shares the session through the keychain.
    let app = App::launch(launch()).await;
    app.click("form[aria-label='Sign in'] button[type='button']")
        .await;
    let email = unique_email("alerts");
    app.fill("input[name='email']", &email).await;
    app.fill("input[name='password']", "desktop-password-1")
        .await;
    app.click("form button[type='submit']").await;
    app.wait_for_text("No datasets yet", MINUTE).await;
    let db = st.db().await;
    let user: Uuid = sqlx::query_scalar("select id from auth.users where email = $1")
        .bind(&email)
        .fetch_one(&db)
        .await
        .expect("the user");
    db.close().await;
    // Jobs of about 15 s (6 steps), all ten at once: long enough to be seen running, as real
    // jobs are, so their ends are announced at the fast cadence.
    let _worker = worker_running(user, &work.path().join("worker"), 2500, 10);

    let name = format!("alerts-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let file = dataset(work.path(), &format!("{name}.jsonl"), 16 * 1024);
    let uploaded = cli(
        &cli_data,
        &[
            "datasets",
            "upload",
            &file.display().to_string(),
            "--name",
            &name,
        ],
    );
    let dataset_id = uploaded["dataset_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a dataset id in {uploaded}"))
        .to_owned();
    let dataset_uuid: Uuid = dataset_id.parse().expect("uuid");
    wait_db(
        "select count(*) from public.datasets where id = $1 and status = 'ready'",
        dataset_uuid,
        1,
        "the dataset validated",
    )
    .await;

    // Ten jobs from the CLI: one notification each, naming the dataset, soon after each ends.
    let jobs: Vec<String> = (0..10)
        .map(|_| create_job(&cli_data, &dataset_id))
        .collect();

    // The tray lists a running job; its "Open BrightRun" shows the window on the jobs.
    let pid = u32::try_from(app_pids(&data)[0]).expect("a pid");
    app.until("a running job in the tray menu", MINUTE, || async {
        tray_layout(pid).await.filter(|(_, layout)| {
            jobs.iter()
                .any(|j| layout.contains(&format!("Job {}", &j[..8])))
        })
    })
    .await;
    app.click("nav a[href='#/datasets']").await;
    tray_click(pid, "Open BrightRun").await;
    app.until("the jobs opened from the tray", MINUTE, || async {
        let url = app.client.current_url().await.ok()?;
        url.fragment().filter(|f| *f == "/jobs").map(|_| ())
    })
    .await;

    // A second launch leaves the first alone, gives it the keyboard focus, and ends. The focus
    // is first moved to the root window (there is no window manager under Xvfb: the X input
    // focus is what GTK's present() sets).
    let root = xwininfo_root(&display);
    display.xdotool(&["windowfocus", &root]);
    app.until("the focus on the root window", MINUTE, || async {
        (display.xdotool(&["getwindowfocus", "-f"]) != app.window).then_some(())
    })
    .await;
    let second = display
        .command(&required("BRIGHTRUN_E2E_APP"))
        .env("BRIGHTRUN_DATA_DIR", &data)
        .env("BRIGHTRUN_URL", &st.url)
        .env("BRIGHTRUN_ANON_KEY", &st.anon_key)
        .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("a second launch");
    let second = std::sync::Mutex::new(second);
    let status = app
        .until("the second launch to end", MINUTE, || {
            let ended = second.lock().expect("lock").try_wait().ok().flatten();
            async move { ended }
        })
        .await;
    assert!(
        status.success(),
        "the second launch exits cleanly: {status}"
    );
    assert_eq!(app_pids(&data).len(), 1, "one app runs");
    // Polled until it holds or a minute passes; then the last answer is what is asserted.
    let deadline = tokio::time::Instant::now() + MINUTE;
    let focused = loop {
        let now = display.xdotool(&["getwindowfocus", "-f"]);
        if now == app.window || tokio::time::Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        focused, app.window,
        "the second launch gave the first window the focus"
    );
    wait_db(
        "select count(*) from public.training_jobs where user_id = $1 and status = 'completed'",
        user,
        10,
        "ten jobs completed",
    )
    .await;
    let live = wait_notified(&app, &server, &name, 10).await;
    for job in &jobs {
        let short = &job[..8];
        let about: Vec<&Received> = live.iter().filter(|n| n.body.contains(short)).collect();
        assert_eq!(
            about.len(),
            1,
            "one notification for job {short}: {live:#?}"
        );
        let n = about[0];
        assert_eq!(n.app_name, "BrightRun");
        assert!(n.summary.starts_with("Training complete"), "{n:?}");
        assert!(
            n.actions.contains(&"default".to_owned()),
            "clickable: {n:?}"
        );
        assert!(
            !n.body.contains('/') && !n.body.contains("eyJ"),
            "no path, no token: {n:?}"
        );
    }
    // How long after `completed_at` each arrived (docs/benchmarks.md).
    let db = st.db().await;
    let mut latencies: Vec<f64> = Vec::new();
    for job in &jobs {
        let completed: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("select completed_at from public.training_jobs where id = $1::uuid")
                .bind(job)
                .fetch_one(&db)
                .await
                .expect("completed_at");
        let n = live
            .iter()
            .find(|n| n.body.contains(&job[..8]))
            .expect("found");
        let at: chrono::DateTime<chrono::Utc> = n.at.into();
        latencies.push((at - completed).num_milliseconds() as f64 / 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "notification latency over {} jobs: p50 {:.2} s, p95 {:.2} s, max {:.2} s",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[(latencies.len() * 95).div_ceil(100) - 1],
        latencies[latencies.len() - 1]
    );

    // A click on one opens the window on that job.
    let last = &jobs[9];
    let clicked = live
        .iter()
        .find(|n| n.body.contains(&last[..8]))
        .expect("the last job's notification");
    app.click("nav a[href='#/datasets']").await;
    server.invoke(clicked.id, "default").await;
    app.until("the clicked job on screen", MINUTE, || async {
        app.text("section[aria-label='Job'] h1")
            .await
            .filter(|h| h.contains(&last[..8]))
    })
    .await;
    shoot(&display, &app, "notification-opened").await;

    // The "Download" action: the adapter lands in the default folder (`~/Downloads/BrightRun`),
    // verified, and a notification says so, with no path in it.
    let fetched = &jobs[8];
    let offered = live
        .iter()
        .find(|n| n.body.contains(&fetched[..8]))
        .expect("the notification of job 9");
    assert!(
        offered.actions.contains(&"download".to_owned()),
        "a completed job offers its adapter: {offered:?}"
    );
    server.invoke(offered.id, "download").await;
    let done = app
        .until("the download's notification", MINUTE, || async {
            server.received().into_iter().find(|n| {
                n.summary.starts_with("Adapter downloaded")
                    || n.summary.starts_with("Download failed")
            })
        })
        .await;
    assert_eq!(done.summary, "Adapter downloaded", "{done:?}");
    assert!(!done.body.contains('/'), "no path in the text: {done:?}");
    let folder = home_dir(&data).join("Downloads/BrightRun");
    let models: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(models.len(), 1, "one model folder: {models:?}");
    let mut files: Vec<(String, u64)> = std::fs::read_dir(&models[0])
        .expect("the model folder")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().expect("metadata").len(),
            )
        })
        .collect();
    files.sort();
    assert!(
        files
            .iter()
            .any(|(n, len)| n == "adapter_model.safetensors" && *len > 0)
            && files
                .iter()
                .any(|(n, len)| n == "adapter_config.json" && *len > 0)
            && !files.iter().any(|(n, _)| n.ends_with(".part")),
        "the adapter's files, complete: {files:?}"
    );

    // Close to the tray: the close button hides the window and the app goes on watching (a job
    // seen running before the close is announced while the window is hidden); the tray's
    // "Open BrightRun" shows the window again.
    let hidden_job = create_job(&cli_data, &dataset_id);
    app.until("the new job in the tray menu", MINUTE, || async {
        tray_layout(pid)
            .await
            .filter(|(_, layout)| layout.contains(&format!("Job {}", &hidden_job[..8])))
    })
    .await;
    display.close_request(&app.window);
    app.until("the window hidden by its close button", MINUTE, || async {
        (!display.viewable(&app.window)).then_some(())
    })
    .await;
    assert_eq!(
        app_pids(&data).len(),
        1,
        "closing the window keeps the app running"
    );
    let while_hidden = wait_notified(&app, &server, &name, 11).await;
    assert!(
        while_hidden
            .iter()
            .any(|n| n.body.contains(&hidden_job[..8])),
        "announced while the window was hidden: {while_hidden:#?}"
    );
    assert!(
        !display.viewable(&app.window),
        "a notification does not show the window"
    );
    tray_click(pid, "Open BrightRun").await;
    app.until("the window shown from the tray", MINUTE, || async {
        display.viewable(&app.window).then_some(())
    })
    .await;
    app.quit().await;

    // While the app is closed: one job completes, one is cancelled by the user.
    let closed_job = create_job(&cli_data, &dataset_id);
    wait_db(
        "select count(*) from public.training_jobs where id = $1 and status = 'completed'",
        closed_job.parse().expect("uuid"),
        1,
        "the job that ended while the app was closed",
    )
    .await;
    let cancelled = create_job(&cli_data, &dataset_id);
    cli(&cli_data, &["jobs", "cancel", &cancelled]);
    wait_db(
        "select count(*) from public.training_jobs where id = $1 and status = 'cancelled'",
        cancelled.parse().expect("uuid"),
        1,
        "the cancelled job",
    )
    .await;

    // Relaunched: the closed-time outcome once; nothing repeated; nothing for the cancelled job.
    // A last job afterwards proves the watcher has polled past everything before it.
    let app = App::launch(launch()).await;
    let after_restart = wait_notified(&app, &server, &name, 12).await;
    let marker = create_job(&cli_data, &dataset_id);
    let all = wait_notified(&app, &server, &name, 13).await;
    let count = |short: &str| all.iter().filter(|n| n.body.contains(short)).count();
    assert_eq!(
        count(&closed_job[..8]),
        1,
        "announced once at the start: {all:#?}"
    );
    assert_eq!(count(&marker[..8]), 1, "{all:#?}");
    assert_eq!(count(&hidden_job[..8]), 1, "{all:#?}");
    assert_eq!(
        count(&cancelled[..8]),
        0,
        "none for a cancelled job: {all:#?}"
    );
    for job in &jobs {
        assert_eq!(
            count(&job[..8]),
            1,
            "not repeated after the restart: {all:#?}"
        );
    }
    assert_eq!(all.len(), 13, "{after_restart:#?}");
    app.quit().await;
}
