//! What the desktop app needs outside the test harness (the package check, the whole-process
//! benchmarks): a virtual X display (Xvfb), a private session bus with an unlocked keyring.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use anyhow::{Context as _, Result, bail};

/// Xvfb on a display number no one uses; stopped when dropped.
pub struct Xvfb {
    name: String,
    server: Child,
}

impl Xvfb {
    pub fn start() -> Result<Self> {
        // Xvfb picks a free display number itself (reclaiming the locks of servers that were
        // killed) and prints it once it accepts connections.
        let mut server = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting Xvfb")?;
        let stdout = server.stdout.take().context("Xvfb's stdout")?;
        let mut number = String::new();
        let read = BufReader::new(stdout).read_line(&mut number);
        let display = Self {
            name: format!(":{}", number.trim()),
            server,
        };
        read.context("reading Xvfb's display number")?;
        if number.trim().parse::<u32>().is_err() {
            bail!("Xvfb did not come up (it printed {number:?})");
        }
        Ok(display)
    }

    /// The value for `DISPLAY`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM: Xvfb removes its lock file and socket on the way out.
        if let Ok(pid) = i32::try_from(self.server.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.server.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn port_busy(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A child ended (SIGTERM, then SIGKILL) when dropped.
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private session bus with an unlocked gnome-keyring on it (the app's and the CLI's
/// keychain), so nothing touches the user's own.
pub struct Session {
    pub bus: Proc,
    pub address: String,
    _keyring_home: tempfile::TempDir,
}

impl Session {
    pub fn start() -> Result<Self> {
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting dbus-daemon")?;
        let mut line = String::new();
        BufReader::new(bus.stdout.take().context("dbus-daemon stdout")?).read_line(&mut line)?;
        let address = line.trim().to_owned();
        if address.is_empty() {
            bail!("dbus-daemon printed no address");
        }
        let keyring_home = tempfile::Builder::new()
            .prefix("brightrun-bench-keyring-")
            .tempdir()?;
        let mut unlock = Command::new("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_DATA_HOME", keyring_home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("starting gnome-keyring-daemon")?;
        unlock
            .stdin
            .take()
            .context("keyring stdin")?
            .write_all(b"brightrun-bench-keyring")?;
        if !unlock.wait()?.success() {
            bail!("gnome-keyring-daemon --unlock failed");
        }
        Ok(Self {
            bus: Proc(bus),
            address,
            _keyring_home: keyring_home,
        })
    }
}
