//! First run, sign-up, a restart that stays signed in, real drag-and-drop of a good and a broken
//! file, an upload killed half-way and resumed at the next start, the dataset page, sign-out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use brightrun_stack::testing::{Direction, FaultProxy, sha256_hex, stack, unique_email};
use fantoccini::Locator;
use uuid::Uuid;

use crate::harness::{App, Display, Guard, Launch, app_pids, drag_files, required, sandbox_dir};

const MINUTE: Duration = Duration::from_secs(60);

/// Where screenshots go (`BRIGHTRUN_E2E_SCREENSHOTS`, else a temporary folder).
fn shots() -> PathBuf {
    std::env::var_os("BRIGHTRUN_E2E_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("brightrun-e2e-screenshots"))
}

/// Waits for two frames, so what the DOM says is also on screen, then shoots the window.
pub(crate) async fn shoot(display: &Display, app: &App, name: &str) {
    let _ = app
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             requestAnimationFrame(() => requestAnimationFrame(() => done(true)));",
            vec![],
        )
        .await;
    display.screenshot(&app.window, &shots().join(format!("{name}.png")));
}

/// A valid v4 dataset of about `bytes` bytes.
pub(crate) fn dataset(dir: &Path, name: &str, bytes: usize) -> PathBuf {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "{{\"messages\": [{{\"role\": \"system\", \"content\": \"You are a concise support agent.\"}}, {{\"role\": \"user\", \"content\": \"Order {i} has not arrived. What can I do?\"}}, {{\"role\": \"assistant\", \"content\": \"Sorry about order {i}. Please check the tracking link in your confirmation email; if it shows no movement for 3 days, reply here and we resend it.\"}}]}}\n"
        ));
        i += 1;
    }
    let path = dir.join(name);
    std::fs::write(&path, out).expect("write a dataset");
    path
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The refresh token the keychain holds for `url` (dev builds: service `brightrun:dev`).
async fn keychain_token(url: &str) -> Option<String> {
    use secret_service::{EncryptionType, SecretService};
    let service = SecretService::connect(EncryptionType::Dh)
        .await
        .expect("the Secret Service answers");
    let attributes = std::collections::HashMap::from([
        ("service", "brightrun:dev"),
        ("username", url.trim_end_matches('/')),
    ]);
    let found = service.search_items(attributes).await.expect("search");
    let item = found.unlocked.first()?;
    Some(String::from_utf8(item.get_secret().await.expect("secret")).expect("utf-8"))
}

async fn dataset_rows(user: Uuid, file_name: &str) -> Vec<(Uuid, String, String)> {
    let db = stack().db().await;
    let rows = sqlx::query_as(
        "select id, status::text, storage_path from public.datasets
          where user_id = $1 and file_name = $2 and deleted_at is null",
    )
    .bind(user)
    .bind(file_name)
    .fetch_all(&db)
    .await
    .expect("dataset rows");
    db.close().await;
    rows
}

fn worker(user: Uuid, dir: &Path) -> Guard {
    worker_stepping(user, dir, 20)
}

/// A scripted worker whose steps take `step_ms` (slow enough to watch a curve grow).
pub(crate) fn worker_stepping(user: Uuid, dir: &Path, step_ms: u64) -> Guard {
    worker_running(user, dir, step_ms, 1)
}

/// A scripted worker running up to `concurrency` jobs at once, each step taking `step_ms`.
pub(crate) fn worker_running(user: Uuid, dir: &Path, step_ms: u64, concurrency: u32) -> Guard {
    let st = stack();
    let child = Command::new(required("BRIGHTRUN_E2E_WORKER"))
        .env("DATABASE_URL", &st.db_url)
        .env("BRIGHTRUN_API_URL", &st.url)
        .env("BRIGHTRUN_SERVICE_ROLE_KEY", &st.service_role_key)
        .args([
            "--backend",
            "scripted",
            "--poll-ms",
            "200",
            "--only-user",
            &user.to_string(),
            "--scripted-step-ms",
            &step_ms.to_string(),
            "--concurrency",
            &concurrency.to_string(),
        ])
        .arg("--work-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the worker starts");
    Guard(child)
}

/// The point where a drop lands in the app's window: the middle of its datasets list.
fn drop_point(display: &Display, app: &App) -> (i32, i32) {
    display.xdotool(&["windowmove", "--sync", &app.window, "300", "0"]);
    (300 + 640, 380)
}

#[tokio::test]
async fn the_desktop_app_end_to_end() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "the desktop test needs a Secret Service: run it through `cargo xtask test`"
    );
    let st = stack();
    let work = tempfile::Builder::new()
        .prefix("brightrun-e2e-")
        .tempdir()
        .expect("tempdir");
    let display = Display::start(1600, 1000);
    // The app talks to the stack through this proxy: it holds an upload half-way on demand.
    let proxy = FaultProxy::start(&st.url).await;
    let url = proxy.url();
    let project = Some((url.as_str(), st.anon_key.as_str()));

    // First run, no project chosen: the choice between the sandbox and a hosted project.
    let fresh = work.path().join("fresh");
    let app = App::launch(Launch {
        display: &display,
        data_dir: &fresh,
        project: None,
    })
    .await;
    app.wait_for_text("Welcome to BrightRun", MINUTE).await;
    assert_eq!(
        app.client.title().await.expect("title"),
        "BrightRun",
        "the window is BrightRun"
    );
    shoot(&display, &app, "first-run").await;
    app.quit().await;

    // Sign up in the window.
    let data = work.path().join("app");
    let app = App::launch(Launch {
        display: &display,
        data_dir: &data,
        project,
    })
    .await;
    app.wait_for_text("Sign in", MINUTE).await;
    shoot(&display, &app, "sign-in").await;
    app.click("form[aria-label='Sign in'] button[type='button']")
        .await;
    let email = unique_email("desktop");
    app.fill("input[name='email']", &email).await;
    app.fill("input[name='password']", "desktop-password-1")
        .await;
    app.find("form[aria-label='Create account']", MINUTE).await;
    shoot(&display, &app, "sign-up").await;
    app.click("form button[type='submit']").await;
    app.wait_for_text("No datasets yet", MINUTE).await;
    shoot(&display, &app, "datasets-empty").await;
    app.quit().await;

    // Relaunched: still signed in, from the keychain; no token in any file the app wrote.
    let app = App::launch(Launch {
        display: &display,
        data_dir: &data,
        project,
    })
    .await;
    app.wait_for_text("No datasets yet", MINUTE).await;
    let token = keychain_token(&url)
        .await
        .expect("the session is in the keychain");
    for file in files_under(&data) {
        let bytes = std::fs::read(&file).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&token) && !text.contains("eyJ"),
            "{} holds a token",
            file.display()
        );
    }
    let db = st.db().await;
    let user: Uuid = sqlx::query_scalar("select id from auth.users where email = $1")
        .bind(&email)
        .fetch_one(&db)
        .await
        .expect("the user signed up");
    db.close().await;
    let worker_guard = worker(user, &work.path().join("worker"));

    // A good file dropped with the X pointer: validated, uploaded, then ready on screen.
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).expect("files");
    let good = dataset(&files, "support-chats.jsonl", 64 * 1024);
    let at = drop_point(&display, &app);
    drag_files(&display, &[good.as_path()], at);
    app.find(
        "article[aria-label='Upload of support-chats.jsonl'][data-stage='ready']",
        2 * MINUTE,
    )
    .await;
    app.find("tr[data-status='ready']", MINUTE).await;
    shoot(&display, &app, "datasets-ready").await;

    // A broken file: its errors with their lines, and no dataset row.
    let broken = files.join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n\
         not json\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n",
    )
    .expect("write");
    drag_files(&display, &[broken.as_path()], at);
    app.find(
        "article[aria-label='Upload of broken.jsonl'][data-stage='invalid']",
        MINUTE,
    )
    .await;
    app.wait_for_text("line 2", MINUTE).await;
    app.wait_for_text("line 3", MINUTE).await;
    shoot(&display, &app, "validation-errors").await;
    assert!(
        dataset_rows(user, "broken.jsonl").await.is_empty(),
        "a file with errors creates no dataset"
    );

    // A large file, held half-way by the proxy, the app killed there, then relaunched: the
    // upload resumes from the server's offset into the same dataset.
    let large = dataset(&files, "large-chats.jsonl", 24 * 1024 * 1024);
    proxy.hold_after(
        Direction::Up,
        proxy.forwarded(Direction::Up) + 9 * 1024 * 1024,
    );
    drag_files(&display, &[large.as_path()], at);
    proxy.wait_held().await;
    app.find(
        "article[aria-label='Upload of large-chats.jsonl'][data-stage='uploading']",
        MINUTE,
    )
    .await;
    shoot(&display, &app, "uploading").await;
    let pids = app_pids(&data);
    assert!(!pids.is_empty(), "the app is running");
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    app.quit().await;
    proxy.open_gate();
    let app = App::launch(Launch {
        display: &display,
        data_dir: &data,
        project,
    })
    .await;
    app.find(
        "article[aria-label='Upload of large-chats.jsonl'][data-stage='ready']",
        3 * MINUTE,
    )
    .await;
    let rows = dataset_rows(user, "large-chats.jsonl").await;
    assert_eq!(
        rows.len(),
        1,
        "one dataset for the resumed upload: {rows:?}"
    );
    let stored = st.object("lora-datasets", &rows[0].2).await;
    assert_eq!(
        sha256_hex(&stored),
        sha256_hex(&std::fs::read(&large).expect("read")),
        "the stored object is the file"
    );

    // The dataset page.
    let (id, _, _) = dataset_rows(user, "support-chats.jsonl").await.remove(0);
    app.click(&format!("a[href='#/datasets/{id}']")).await;
    app.wait_for_text("Sample conversations", MINUTE).await;
    shoot(&display, &app, "dataset-detail").await;

    // Train, watch, download, clone, cancel (desktop 2/3), on a worker slow enough to watch.
    drop(worker_guard);
    let _worker = worker_stepping(user, &work.path().join("worker"), 600);
    train_watch_download(&display, &app, user, id, work.path()).await;

    // The server unreachable at start: still signed in, the cached list on screen, marked
    // offline.
    app.quit().await;
    proxy.cut_all();
    let app = App::launch(Launch {
        display: &display,
        data_dir: &data,
        project,
    })
    .await;
    app.wait_for_text("Offline: showing cached lists", MINUTE)
        .await;
    app.find("tr[data-status='ready']", MINUTE).await;
    app.wait_for_text("support-chats", MINUTE).await;
    shoot(&display, &app, "offline").await;
    assert!(
        keychain_token(&url).await.is_some(),
        "being offline does not sign out"
    );
    app.quit().await;
    proxy.restore();
    let app = App::launch(Launch {
        display: &display,
        data_dir: &data,
        project,
    })
    .await;
    app.find("tr[data-status='ready']", MINUTE).await;

    // Sign out: the keychain entry goes.
    app.click("a[href='#/settings']").await;
    app.wait_for_text("Sign out", MINUTE).await;
    shoot(&display, &app, "settings").await;
    // Start at login: the session's autostart entry appears, starting the app in the tray
    // (`--background`); unticked, it goes.
    let autostart = crate::harness::home_dir(&data).join(".config/autostart");
    let entry = || {
        std::fs::read_dir(&autostart)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "desktop"))
    };
    app.click("input[name='start-at-login']").await;
    let written = app
        .until("the autostart entry", MINUTE, || async {
            entry().and_then(|p| std::fs::read_to_string(p).ok())
        })
        .await;
    assert!(
        written.contains("Exec=") && written.contains("--background"),
        "the entry starts the app in the tray: {written}"
    );
    app.click("input[name='start-at-login']").await;
    app.until("the autostart entry removed", MINUTE, || async {
        entry().is_none().then_some(())
    })
    .await;
    app.click("section[aria-label='Account'] button").await;
    app.wait_for_text("Sign in", MINUTE).await;
    assert_eq!(
        keychain_token(&url).await,
        None,
        "sign-out removed the keychain entry"
    );
    app.quit().await;
}

/// The local sandbox's address (the CLI's default project).
const SANDBOX: &str = "127.0.0.1:54321";

#[tokio::test]
async fn the_local_sandbox_starts_with_the_app_and_stops_when_it_quits() {
    assert!(
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some(),
        "the desktop test needs a Secret Service: run it through `cargo xtask test`"
    );
    assert!(
        std::net::TcpListener::bind(SANDBOX).is_ok(),
        "{SANDBOX} is taken: the sandbox test starts the local stack there (stop `cargo xtask \
         run` or another app's sandbox first)"
    );
    let work = tempfile::Builder::new()
        .prefix("brightrun-e2e-sandbox-")
        .tempdir()
        .expect("tempdir");
    let display = Display::start(1280, 800);
    let data = work.path().join("app");
    let app = App::launch(Launch {
        display: &display,
        data_dir: &data,
        project: None,
    })
    .await;
    app.wait_for_text("Welcome to BrightRun", MINUTE).await;
    app.click("section[aria-labelledby='sandbox-title'] button")
        .await;
    // The stack initialises its PostgreSQL cluster on first start.
    app.wait_for_text("Sign in", 3 * MINUTE).await;
    let info = brightrun_client::LocalStackInfo::read(&sandbox_dir(&data))
        .expect("the sandbox's stack.json");
    assert!(info.url.contains(SANDBOX), "{}", info.url);
    let app_pid = app_pids(&data)[0];
    let children = |name: &str| children_named(app_pid, name);
    let stack_pid = match children("brightrun-stack").as_slice() {
        [pid] => nix::unistd::Pid::from_raw(*pid),
        other => panic!("the app runs one stack, not {other:?}"),
    };
    assert_eq!(children("brightrun-worker").len(), 1, "and one worker");

    app.click("form[aria-label='Sign in'] button[type='button']")
        .await;
    app.fill("input[name='email']", &unique_email("sandbox"))
        .await;
    app.fill("input[name='password']", "desktop-password-1")
        .await;
    app.click("form button[type='submit']").await;
    app.wait_for_text("No datasets yet", MINUTE).await;
    app.quit().await;

    // Quitting stops what the app started: the stack's process ends and its port is free.
    let deadline = std::time::Instant::now() + MINUTE;
    while nix::sys::signal::kill(stack_pid, None).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox's stack (pid {stack_pid}) still runs after the app quit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        std::net::TcpListener::bind(SANDBOX).is_ok(),
        "{SANDBOX} is free again"
    );
}

/// The child processes of `parent` whose program is `name`, from /proc.
fn children_named(parent: i32, name: &str) -> Vec<i32> {
    let parent_of = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = &stat[stat.rfind(')')? + 2..];
        after_name.split(' ').nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            exe.file_name().is_some_and(|n| n == name) && parent_of(pid) == Some(parent)
        })
        .collect()
}

/// The estimate beside Start, once there is one.
async fn estimate(app: &App) -> Option<String> {
    app.text("[data-testid='estimate']")
        .await
        .filter(|t| t.starts_with('$'))
}

/// How many metrics points the chart titled `title` was drawn from.
async fn points_of(app: &App, title: &str) -> Option<u32> {
    app.attr(&format!("figure[aria-label='{title}']"), "data-points")
        .await
        .and_then(|p| p.parse::<u32>().ok())
}

/// How many metrics points the loss chart was drawn from.
async fn points(app: &App) -> Option<u32> {
    points_of(app, "Loss").await
}

/// The training half of the story: the balanced preset's estimate, which changes with the
/// epochs; Start; the monitor with a loss chart that grows; completed; the adapter downloaded
/// and each file's SHA-256 equal to the server's record; clone with the same values; a second
/// job cancelled while it runs; and the jobs, compare, models, costs and notifications screens.
async fn train_watch_download(
    display: &Display,
    app: &App,
    user: Uuid,
    dataset: Uuid,
    work: &Path,
) {
    app.click(&format!("a[href='#/jobs/new?dataset={dataset}']"))
        .await;
    app.click("button[data-preset='balanced']").await;
    let first = app
        .until("the balanced estimate", MINUTE, || estimate(app))
        .await;
    app.fill("input[name='num_epochs']", "2").await;
    let second = app
        .until("an estimate for 2 epochs", MINUTE, || async {
            estimate(app).await.filter(|t| t != &first)
        })
        .await;
    assert_ne!(first, second, "fewer epochs cost less");
    app.wait_for_text("2 epochs =", MINUTE).await;
    shoot(display, app, "new-job").await;
    app.click("form[aria-label='New training job'] button[type='submit']")
        .await;

    // The monitor: the stage, and a loss chart that grows while the job trains.
    app.until("the job training", 2 * MINUTE, || async {
        app.text("ol[aria-label='Stages'] li.current")
            .await
            .filter(|t| t.to_lowercase().contains("training"))
    })
    .await;
    let early = app
        .until("the first metrics on the loss chart", MINUTE, || async {
            points(app).await.filter(|&n| n > 0)
        })
        .await;
    shoot(display, app, "job-running").await;
    app.until("more metrics on the loss chart", MINUTE, || async {
        points(app).await.filter(|&n| n >= early + 5)
    })
    .await;
    shoot(display, app, "job-running-later").await;
    assert_ne!(
        std::fs::read(shots().join("job-running.png")).expect("shot"),
        std::fs::read(shots().join("job-running-later.png")).expect("shot"),
        "the chart moved between the two screenshots"
    );
    app.wait_for_text("Open model", 3 * MINUTE).await;
    app.find("header .pill.completed", MINUTE).await;
    shoot(display, app, "job-completed").await;
    let db = stack().db().await;
    let (job, artifacts): (Uuid, serde_json::Value) = sqlx::query_as(
        "select j.id, m.artifacts from public.training_jobs j
           join public.model_artifacts m on m.job_id = j.id
          where j.user_id = $1 and j.status = 'completed'",
    )
    .bind(user)
    .fetch_one(&db)
    .await
    .expect("the completed job and its model");

    // Download the adapter into a folder of our choosing; every file verified.
    app.click("a.button[href^='#/models/']").await;
    app.wait_for_text("Load it with PEFT", MINUTE).await;
    let folder = work.join("adapter");
    app.fill(
        "input[name='download-folder']",
        &folder.display().to_string(),
    )
    .await;
    app.click("section[aria-labelledby='download-title'] button.primary")
        .await;
    app.wait_for_text("every SHA-256 matches", 2 * MINUTE).await;
    shoot(display, app, "model-downloaded").await;
    let files = artifacts["files"].as_array().expect("a manifest");
    assert!(!files.is_empty(), "the model has files");
    for file in files {
        let name = file["name"].as_str().expect("a name");
        let bytes =
            std::fs::read(folder.join(name)).unwrap_or_else(|e| panic!("{name} downloaded: {e}"));
        assert_eq!(
            Some(sha256_hex(&bytes).as_str()),
            file["sha256"].as_str(),
            "{name} is the server's file"
        );
    }

    // Clone: the form opens with the same values.
    app.click(&format!("a[href='#/jobs/{job}']")).await;
    app.click("header button:not(.danger)").await;
    app.wait_for_text("Clone job", MINUTE).await;
    app.until("the clone's epochs", MINUTE, || async {
        app.attr("input[name='num_epochs']", "value")
            .await
            .filter(|v| v == "2")
    })
    .await;
    app.until("the clone's estimate", MINUTE, || estimate(app))
        .await;
    shoot(display, app, "clone").await;

    // A second job, cancelled while it runs: `cancelled` on screen within 5 s.
    app.click("form[aria-label='New training job'] button[type='submit']")
        .await;
    app.until("the second job training", 2 * MINUTE, || async {
        app.text("ol[aria-label='Stages'] li.current")
            .await
            .filter(|t| t.to_lowercase().contains("training"))
    })
    .await;
    app.click("header button.danger").await;
    app.click("dialog[open] button.primary").await;
    app.find("header .pill.cancelled", Duration::from_secs(5))
        .await;
    shoot(display, app, "job-cancelled").await;
    let statuses: Vec<String> = sqlx::query_scalar(
        "select status::text from public.training_jobs where user_id = $1 order by created_at",
    )
    .bind(user)
    .fetch_all(&db)
    .await
    .expect("jobs");
    assert_eq!(statuses, ["completed", "cancelled"]);
    db.close().await;

    // The other screens, with something in them.
    app.click("nav a[href='#/jobs']").await;
    app.find("tr[data-status='cancelled']", MINUTE).await;
    shoot(display, app, "jobs").await;
    for checkbox in app
        .client
        .find_all(Locator::Css("td.pick input"))
        .await
        .expect("checkboxes")
    {
        checkbox.click().await.expect("pick");
    }
    app.click("header button:not(.primary)").await;
    app.until("both jobs on the comparison", MINUTE, || async {
        points_of(app, "Training loss").await.filter(|&n| n > 42)
    })
    .await;
    shoot(display, app, "compare").await;
    app.click("nav a[href='#/models']").await;
    app.find("table[aria-label='Your models'] tbody tr", MINUTE)
        .await;
    shoot(display, app, "models").await;
    app.click("nav a[href='#/costs']").await;
    app.find("[data-testid='month-total']", MINUTE).await;
    shoot(display, app, "costs").await;
    app.click("nav a[href='#/notifications']").await;
    app.wait_for_text("LoRA job finished", MINUTE).await;
    shoot(display, app, "notifications").await;
    app.click("ul[aria-label='Notification list'] button").await;
    app.find("section[aria-label='Job'] header", MINUTE).await;

    // Dark, chosen in the settings: the window and its charts (drawn dark by the renderer).
    app.click("nav a[href='#/settings']").await;
    app.click("div[aria-label='Theme'] button:nth-child(3)")
        .await;
    app.until("the dark theme", MINUTE, || async {
        app.attr("html", "data-theme").await.filter(|t| t == "dark")
    })
    .await;
    app.click("nav a[href='#/jobs']").await;
    app.click(&format!("a[href='#/jobs/{job}']")).await;
    app.until("the loss chart drawn dark", MINUTE, || async {
        app.attr("figure[aria-label='Loss'] img", "src")
            .await
            .filter(|src| src.contains("%231A1A22"))
    })
    .await;
    shoot(display, app, "job-dark").await;
    app.click("nav a[href='#/settings']").await;
    app.click("div[aria-label='Theme'] button:nth-child(1)")
        .await;
}
