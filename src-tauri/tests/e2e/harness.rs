//! The desktop end-to-end harness: a virtual display, tauri-driver (driving WebKitWebDriver),
//! the real app binary launched per session with its own environment, an X drag source, and
//! screenshots from X. `cargo xtask test` builds the app with the real window and runs this
//! inside a private D-Bus session with an unlocked gnome-keyring, beside the stack and with the
//! worker binary it names (`BRIGHTRUN_E2E_*`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

/// A variable the harness must set; fails, never skips, without it.
pub fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is unset: the desktop end-to-end test runs inside `cargo xtask test`, which \
             builds the app and the worker and names them"
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Xvfb on a display number no one uses.
pub struct Display {
    pub name: String,
    _server: Guard,
}

impl Display {
    pub fn start(width: u32, height: u32) -> Self {
        // Xvfb picks a free display number itself and prints it once it accepts connections:
        // tests starting displays side by side must not choose the same free number.
        let mut server = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                &format!("{width}x{height}x24"),
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb starts (apt-get install xvfb)");
        let stdout = server.stdout.take().expect("Xvfb's stdout");
        let server = Guard(server);
        let mut number = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut number)
            .expect("Xvfb's display number");
        let number: u32 = number
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb did not come up (it printed {number:?})"));
        Self {
            name: format!(":{number}"),
            _server: server,
        }
    }

    /// `program` on this display.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env("DISPLAY", &self.name);
        command
    }

    /// `xdotool` with its arguments; its output.
    pub fn xdotool(&self, args: &[&str]) -> String {
        let output = self
            .command("xdotool")
            .args(args)
            .output()
            .expect("xdotool runs (apt-get install xdotool)");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The X window id of the visible window titled exactly `title`, waiting for it to map.
    pub fn window(&self, title: &str) -> String {
        let found = self.xdotool(&[
            "search",
            "--sync",
            "--onlyvisible",
            "--name",
            &format!("^{title}$"),
        ]);
        found
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no window titled {title:?}"))
            .to_owned()
    }

    /// Asks `window` to close the way a window manager does for its close button: the
    /// `WM_DELETE_WINDOW` client message (there is no window manager under Xvfb to send it).
    pub fn close_request(&self, window: &str) {
        use x11rb::protocol::xproto::{ClientMessageEvent, ConnectionExt as _, EventMask};
        let (conn, _) = x11rb::connect(Some(&self.name)).expect("an X connection");
        let atom = |name: &[u8]| {
            conn.intern_atom(false, name)
                .expect("intern_atom sent")
                .reply()
                .expect("an atom")
                .atom
        };
        let (protocols, delete) = (atom(b"WM_PROTOCOLS"), atom(b"WM_DELETE_WINDOW"));
        let window: u32 = window.parse().expect("a decimal window id");
        let event = ClientMessageEvent::new(
            32,
            window,
            protocols,
            [delete, x11rb::CURRENT_TIME, 0, 0, 0],
        );
        conn.send_event(false, window, EventMask::NO_EVENT, event)
            .expect("send_event sent")
            .check()
            .expect("the close request delivered");
    }

    /// Whether `window` is mapped and viewable (shown), as the X server has it.
    pub fn viewable(&self, window: &str) -> bool {
        use x11rb::protocol::xproto::{ConnectionExt as _, MapState};
        let (conn, _) = x11rb::connect(Some(&self.name)).expect("an X connection");
        let window: u32 = window.parse().expect("a decimal window id");
        conn.get_window_attributes(window)
            .expect("get_window_attributes sent")
            .reply()
            .is_ok_and(|a| a.map_state == MapState::VIEWABLE)
    }

    /// The window's pixels as a PNG (WebDriver's screenshot does not answer under WebKitGTK).
    pub fn screenshot(&self, window: &str, file: &Path) {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("screenshot folder");
        }
        let status = self
            .command("import")
            .args(["-window", window])
            .arg(file)
            .status()
            .expect("import runs (apt-get install imagemagick)");
        assert!(status.success(), "screenshot {}", file.display());
    }
}

/// How one launch of the app is set up.
pub struct Launch<'a> {
    pub display: &'a Display,
    pub data_dir: &'a Path,
    /// `BRIGHTRUN_URL` and `BRIGHTRUN_ANON_KEY`, or none (the first-run choice).
    pub project: Option<(&'a str, &'a str)>,
}

/// Where the local sandbox of the app with data in `data_dir` keeps its stack.
/// The home directory the app launched with `data_dir` sees (created on first use).
pub fn home_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app");
    let home = data_dir.with_file_name(format!("{name}.home"));
    let _ = std::fs::create_dir_all(&home);
    home
}

pub fn sandbox_dir(data_dir: &Path) -> PathBuf {
    let name = data_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app");
    data_dir.with_file_name(format!("{name}.stack"))
}

/// The app under WebDriver: tauri-driver started for this launch (the app inherits its
/// environment), and the session's client.
pub struct App {
    pub client: Client,
    pub window: String,
    display: String,
    _driver: Guard,
}

impl App {
    pub async fn launch(launch: Launch<'_>) -> Self {
        let app = required("BRIGHTRUN_E2E_APP");
        let port = free_port();
        let mut driver = launch.display.command(&required("BRIGHTRUN_E2E_DRIVER"));
        driver
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &free_port().to_string(),
            ])
            .env("BRIGHTRUN_DATA_DIR", launch.data_dir)
            // Never the developer's own local stack: a sandbox the app starts lives here.
            .env("BRIGHTRUN_STACK_DATA", sandbox_dir(launch.data_dir))
            // A home of its own: what the app writes there (the login item, WebKit's caches,
            // the window's state) stays in the test's folder.
            .env("HOME", home_dir(launch.data_dir))
            .env("WEBKIT_DISABLE_COMPOSITING_MODE", "1")
            .env_remove("BRIGHTRUN_URL")
            .env_remove("BRIGHTRUN_ANON_KEY")
            .env_remove("BRIGHTRUN_ACCESS_TOKEN")
            .env_remove("BRIGHTRUN_USER_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((url, key)) = launch.project {
            driver
                .env("BRIGHTRUN_URL", url)
                .env("BRIGHTRUN_ANON_KEY", key);
        }
        let driver = Guard(driver.spawn().expect("tauri-driver starts"));
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{endpoint}/status")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "tauri:options".into(),
            serde_json::json!({ "application": app }),
        );
        // Plain HTTP to the local driver: no TLS stack to choose.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&endpoint)
            .await
            .expect("a WebDriver session with the app");
        let window = launch.display.window("BrightRun");
        Self {
            client,
            window,
            display: launch.display.name.clone(),
            _driver: driver,
        }
    }

    /// Saves what the window shows to `<tmp>/brightrun-e2e-failure.png` (a failing wait's
    /// evidence) and returns the path.
    fn evidence(&self) -> PathBuf {
        let path = std::env::temp_dir().join("brightrun-e2e-failure.png");
        let _ = Command::new("import")
            .env("DISPLAY", &self.display)
            .args(["-window", "root"])
            .arg(&path)
            .status();
        path
    }

    /// Waits (up to `timeout`) for the element matching the CSS selector.
    pub async fn find(&self, css: &str, timeout: Duration) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(timeout)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| {
                let shot = self.evidence();
                panic!(
                    "no element {css:?} within {timeout:?}: {e} (screen: {})",
                    shot.display()
                )
            })
    }

    /// Waits until the page's text contains `text`.
    pub async fn wait_for_text(&self, text: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let body = self
                .client
                .find(Locator::Css("body"))
                .await
                .expect("a body")
                .text()
                .await
                .unwrap_or_default();
            if body.contains(text) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self.evidence();
                panic!(
                    "the window never showed {text:?} within {timeout:?} (screen: {}); it shows:\n{body}",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The text of the first element matching `css`, if there is one now.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// An attribute or property of the first element matching `css`, if there is one now.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        match element.attr(name).await.ok().flatten() {
            Some(value) => Some(value),
            None => element.prop(name).await.ok().flatten(),
        }
    }

    /// Polls `probe` every 100 ms until it answers `Some`; panics with `what` and the screen
    /// after `timeout`.
    pub async fn until<T, F, Fut>(&self, what: &str, timeout: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(value) = probe().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let shot = self.evidence();
                panic!(
                    "{what}: not within {timeout:?} (screen: {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css, Duration::from_secs(10)).await;
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.find(css, Duration::from_secs(10))
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css:?}: {e}"));
    }

    /// Quits: the session ends and the driver stops the app.
    pub async fn quit(self) {
        let _ = self.client.close().await;
    }
}

/// The app processes running with `data_dir` as their data directory.
pub fn app_pids(data_dir: &Path) -> Vec<i32> {
    let needle = format!("BRIGHTRUN_DATA_DIR={}", data_dir.display());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            exe.file_name().is_some_and(|n| n == "brightrun-desktop")
                && environ.split(|b| *b == 0).any(|v| v == needle.as_bytes())
        })
        .collect()
}

/// Drags `files` from a GTK window (as a file manager would) onto the point (x, y) with the X
/// pointer, and waits until the drag has ended. A drag the target refused (a window still
/// mapping) is retried, at most three times.
pub fn drag_files(display: &Display, files: &[&Path], to: (i32, i32)) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/drag_source.py");
    let mut source = display.command("/usr/bin/python3");
    source
        .arg(script)
        .args(["0", "0"])
        .args(files)
        .stdout(Stdio::piped());
    let mut source = Guard(
        source
            .spawn()
            .expect("the GTK drag source starts (python3-gi)"),
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        source.0.stdout.take().expect("stdout"),
    ));
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "ready", "the drag source is mapped");
    display.window("brightrun-drag-source");
    let mut refusals = Vec::new();
    for _ in 0..3 {
        display.xdotool(&["mousemove", "--sync", "60", "60", "mousedown", "1"]);
        // Steps as a hand makes them: GTK starts a drag once the pointer passed a threshold,
        // and the target answers XDND positions only while the pointer moves over it (the
        // pauses pace the hand; the end of the drag is what the test waits for).
        let (x, y) = to;
        for (px, py) in [
            (80, 80),
            (140, 120),
            (x / 2, y / 2),
            (x - 30, y - 10),
            (x - 10, y),
            (x, y + 5),
            (x + 5, y + 5),
        ] {
            display.xdotool(&["mousemove", "--sync", &px.to_string(), &py.to_string()]);
            std::thread::sleep(Duration::from_millis(100));
        }
        display.xdotool(&["mouseup", "1"]);
        // The drop is complete once the source says so: the target fetched the URIs from it.
        let line = next();
        if line == "done" {
            return;
        }
        assert!(line.starts_with("failed"), "the drag ends: {line:?}");
        assert_eq!(next(), "done", "a refused drag ends too");
        refusals.push(line);
    }
    panic!("the window refused every drag: {refusals:?}");
}
