//! A real Ray head for one test: started from the pinned `ray[default]` that `cargo xtask test`
//! installs (`BRIGHTRUN_RAY`), with token auth, in its own temporary directory, and stopped with
//! every process it started (found by a tag in their environment: the job supervisor starts the
//! entrypoint in a new session, outside the head's process group).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub struct RayHead {
    ray: PathBuf,
    dir: tempfile::TempDir,
    tag: String,
    pub token: String,
    pub address: String,
    child: Option<Child>,
    pub log: PathBuf,
    /// Starts so far; each gets its own temporary directory.
    starts: u32,
}

/// Ray binds its internal ports on every interface whatever it is told: these tests run only
/// inside a network namespace whose one interface is loopback (`cargo xtask test` makes it).
fn assert_isolated() {
    // This process's namespace (sysfs shows the namespace of whoever mounted it).
    let interfaces: Vec<String> = std::fs::read_to_string("/proc/self/net/dev")
        .expect("/proc/self/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split(':').next()?.trim().to_owned()))
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "the Ray tests run in a network namespace with only loopback (Ray listens on every \
         interface); run them through `cargo xtask test` or `cargo xtask test-ray`"
    );
}

impl RayHead {
    pub async fn start() -> Self {
        assert_isolated();
        let ray = PathBuf::from(std::env::var_os("BRIGHTRUN_RAY").expect(
            "BRIGHTRUN_RAY names the pinned `ray` program; run through `cargo xtask test-ray`",
        ));
        // Short: Ray's socket paths live under it and must fit in 107 bytes.
        let dir = tempfile::Builder::new()
            .prefix("br-ray-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let log = dir.path().join("head.log");
        let mut head = Self {
            ray,
            dir,
            token: uuid::Uuid::new_v4().simple().to_string(),
            address: "http://127.0.0.1:8265".into(),
            tag,
            child: None,
            log,
            starts: 0,
        };
        head.spawn().await;
        head
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("head log");
        let child = Command::new(&self.ray)
            .args(["start", "--head", "--block", "--port", "6390"])
            .args(["--dashboard-host", "127.0.0.1", "--dashboard-port", "8265"])
            .args(["--num-cpus", "2", "--disable-usage-stats"])
            // A fresh one per start: `ray start` refuses a port that the last cluster of its
            // temporary directory used while any GCS on the machine (in any namespace) serves
            // that address.
            .arg("--temp-dir")
            .arg(self.dir.path().join(format!("t{}", self.starts)))
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN", &self.token)
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .env("BRIGHTRUN_RAY_HEAD_TAG", &self.tag)
            // Inherited by the entrypoints: the candle base model is built once per test run.
            .env(
                "BRIGHTRUN_TRAIN_CACHE",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("candle-base-cache"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start the Ray head");
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        let client = reqwest::Client::new();
        loop {
            let answer = client
                .get(format!("{}/api/version", self.address))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "the Ray head did not answer within 90 s; its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Processes of this head (any whose environment carries its tag).
    fn processes(&self) -> Vec<i32> {
        let needle = format!("BRIGHTRUN_RAY_HEAD_TAG={}", self.tag);
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            })
            .collect()
    }

    /// Kills the head and everything it started (as a crash would), and waits until they
    /// are gone.
    pub fn kill(&mut self) {
        let start = Instant::now();
        if let Some(child) = &self.child {
            let _ = nix::sys::signal::killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        }
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if start.elapsed() > Duration::from_secs(30) {
                eprintln!("some Ray processes outlived SIGKILL for 30 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// The head killed and started again on the same ports: a fresh cluster that knows none
    /// of the old jobs.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RayHead {
    fn drop(&mut self) {
        self.kill();
    }
}
