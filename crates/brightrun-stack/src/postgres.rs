//! A private PostgreSQL cluster: `initdb` once, then a `postgres` server process that listens on a
//! unix socket in a directory only its owner can enter, and never on a network interface.
//!
//! When started by root (CI runs as root, and `initdb` refuses to), the server runs as an
//! unprivileged system user (`postgres`, else `nobody`). The server process is tied to the
//! thread that supervises it with `PR_SET_PDEATHSIG`, so a killed stack never leaves a postgres
//! behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown, geteuid};
use sqlx::postgres::PgConnectOptions;

/// The superuser `initdb` creates; our bootstrap and migrations run as it.
pub const SUPERUSER: &str = "postgres";
/// Postgres names its socket after the port, even when it listens on no TCP port.
const PORT: u16 = 5432;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or PATH; install Debian's `postgresql` package or set BRIGHTRUN_PG_BIN"
    )]
    BinariesNotFound,
    #[error(
        "running as root, but found neither a `postgres` nor a `nobody` user to run PostgreSQL as"
    )]
    NoUnprivilegedUser,
    #[error(
        "PostgreSQL must run as user `{user}`, who cannot enter {dir}; choose a data directory outside it (e.g. under /var/lib or /tmp)"
    )]
    NotTraversable { user: String, dir: PathBuf },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("PostgreSQL did not accept connections within {0:?}; see {1}")]
    StartTimeout(Duration, PathBuf),
    #[error("PostgreSQL exited during start-up ({status}); see {log}")]
    ExitedEarly { status: String, log: PathBuf },
    #[error("the data directory {0} is in use by another PostgreSQL (pid {1}); stop it first")]
    InUse(PathBuf, i32),
    #[error("i/o on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a cluster lives: `<root>/pgdata` (the data directory), `<root>/run` (the socket) and
/// `<root>/postgres.log`.
#[derive(Debug, Clone)]
pub struct ClusterLayout {
    pub root: PathBuf,
}

impl ClusterLayout {
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("pgdata")
    }
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }
}

/// The account the server process runs under: ourselves, or an unprivileged user when root.
#[derive(Debug, Clone)]
struct RunAs {
    user: Option<User>,
}

impl RunAs {
    fn detect() -> Result<Self, ClusterError> {
        if !geteuid().is_root() {
            return Ok(Self { user: None });
        }
        for name in ["postgres", "nobody"] {
            if let Ok(Some(user)) = User::from_name(name) {
                return Ok(Self { user: Some(user) });
            }
        }
        Err(ClusterError::NoUnprivilegedUser)
    }

    fn apply(&self, cmd: &mut Command) {
        if let Some(user) = &self.user {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
    }

    fn own(&self, path: &Path) -> Result<(), ClusterError> {
        if let Some(user) = &self.user {
            chown(path, Some(user.uid), Some(user.gid)).map_err(|e| ClusterError::Io {
                path: path.to_owned(),
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// The unprivileged user needs to traverse every ancestor of the root; refuse with a clear
    /// message instead of letting initdb fail with "permission denied".
    fn check_traversable(&self, root: &Path) -> Result<(), ClusterError> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        for dir in root.ancestors().skip(1) {
            let Ok(meta) = fs::metadata(dir) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            let mode = meta.mode();
            let ok = if meta.uid() == user.uid.as_raw() {
                mode & 0o100 != 0
            } else if meta.gid() == user.gid.as_raw() {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !ok {
                return Err(ClusterError::NotTraversable {
                    user: user.name.clone(),
                    dir: dir.to_owned(),
                });
            }
        }
        Ok(())
    }
}

/// Finds `initdb` and `postgres`: `$BRIGHTRUN_PG_BIN`, the newest `/usr/lib/postgresql/*/bin`
/// (Debian keeps them off PATH), then PATH.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("BRIGHTRUN_PG_BIN").map(PathBuf::from) {
        return if has_both(&dir) {
            Ok(dir)
        } else {
            Err(ClusterError::BinariesNotFound)
        };
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|dir| has_both(dir))
        .ok_or(ClusterError::BinariesNotFound)
}

/// A server of an earlier stack that was killed gets SIGINT from the kernel and shuts down on its
/// own; give it time to finish instead of failing on its lock file. A server still running after
/// that belongs to someone else.
fn wait_for_previous_server(data: &Path) -> Result<(), ClusterError> {
    let pid_file = data.join("postmaster.pid");
    let Some(pid) = fs::read_to_string(&pid_file).ok().and_then(|text| {
        text.lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
    }) else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(5);
    while kill(Pid::from_raw(pid), None).is_ok() && pid_file.exists() {
        if Instant::now() > deadline {
            return Err(ClusterError::InUse(data.to_owned(), pid));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    Ok(())
}

/// A running PostgreSQL server. Dropping it stops the server (fast shutdown) and waits for it.
#[derive(Debug)]
pub struct Cluster {
    layout: ClusterLayout,
    pid: Pid,
    exited: Option<mpsc::Receiver<String>>,
}

impl Cluster {
    /// Initialises the cluster if `layout.root` holds none yet, then starts the server and waits
    /// until it accepts connections.
    pub fn start(layout: ClusterLayout) -> Result<Self, ClusterError> {
        let bin = find_bin_dir()?;
        let run_as = RunAs::detect()?;
        let root = &layout.root;
        fs::create_dir_all(root).map_err(io(root))?;
        let root = fs::canonicalize(root).map_err(io(root))?;
        let layout = ClusterLayout { root };
        run_as.check_traversable(&layout.root)?;
        // The root stays ours (the stack keeps other files there); the server's user may only
        // pass through it into the two directories it owns.
        let root_mode = if run_as.user.is_some() { 0o711 } else { 0o700 };
        fs::set_permissions(&layout.root, fs::Permissions::from_mode(root_mode))
            .map_err(io(&layout.root))?;
        let data = layout.data_dir();
        if !data.join("PG_VERSION").is_file() {
            let _ = fs::remove_dir_all(&data);
        }
        for dir in [data.clone(), layout.socket_dir()] {
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
            run_as.own(&dir)?;
        }

        if !data.join("PG_VERSION").is_file() {
            let mut initdb = Command::new(bin.join("initdb"));
            initdb
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    SUPERUSER,
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ])
                .stdin(Stdio::null());
            run_as.apply(&mut initdb);
            let out = initdb.output().map_err(io(&bin))?;
            if !out.status.success() {
                return Err(ClusterError::Command {
                    what: "initdb".into(),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }

        wait_for_previous_server(&data)?;

        let log_path = layout.log_file();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        run_as.own(&log_path)?;
        let log_err = log.try_clone().map_err(io(&log_path))?;

        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(layout.socket_dir())
            .args(["-p", &PORT.to_string()])
            .args(["-c", "listen_addresses="])
            .args(["-c", "max_connections=200"])
            .args(["-c", "fsync=on"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        run_as.apply(&mut postgres);
        // The server is tied to the supervising thread: if this process dies, so does postgres.
        // uid/gid are changed before pre_exec hooks run, and the death signal survives exec.
        #[allow(unsafe_code)]
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            postgres.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGINT).map_err(std::io::Error::from)
            });
        }

        let (pid_tx, pid_rx) = mpsc::channel::<Result<Pid, std::io::Error>>();
        let (exit_tx, exit_rx) = mpsc::channel::<String>();
        thread::Builder::new()
            .name("postgres-supervisor".into())
            .spawn(move || {
                let mut child: Child = match postgres.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = pid_tx.send(Err(e));
                        return;
                    }
                };
                let _ = pid_tx.send(Ok(Pid::from_raw(child.id() as i32)));
                let status = child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                let _ = exit_tx.send(status);
            })
            .map_err(io(&bin))?;
        let pid = pid_rx
            .recv()
            .map_err(|_| ClusterError::Command {
                what: "postgres".into(),
                detail: "supervisor died".into(),
            })?
            .map_err(io(&bin))?;
        let mut cluster = Self {
            layout,
            pid,
            exited: Some(exit_rx),
        };
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Start-up is done when postgres writes "ready" into postmaster.pid (the same check
    /// `pg_ctl -w` makes), or it has exited.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + limit;
        let pid_file = self.layout.data_dir().join("postmaster.pid");
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(rx) = &self.exited
                && let Ok(status) = rx.try_recv()
            {
                self.exited = None;
                return Err(ClusterError::ExitedEarly {
                    status,
                    log: self.layout.log_file(),
                });
            }
            if let Ok(text) = fs::read_to_string(&pid_file)
                && text
                    .lines()
                    .nth(7)
                    .is_some_and(|status| status.trim() == "ready")
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ClusterError::StartTimeout(limit, self.layout.log_file()));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    pub fn layout(&self) -> &ClusterLayout {
        &self.layout
    }

    /// Connection options for `user` over the private socket.
    pub fn connect_options(&self, user: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(self.layout.socket_dir())
            .port(PORT)
            .username(user)
            .database("postgres")
    }

    /// A libpq URL for `psql` and other tools (socket directory as `host`).
    pub fn url(&self, user: &str) -> String {
        format!(
            "postgresql:///postgres?host={}&port={PORT}&user={user}",
            self.layout.socket_dir().display()
        )
    }

    /// Fast shutdown: disconnects clients, checkpoints, exits.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), ClusterError> {
        let Some(rx) = self.exited.take() else {
            return Ok(());
        };
        let _ = kill(self.pid, Signal::SIGINT);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(_) => Ok(()),
            Err(_) => {
                let _ = kill(self.pid, Signal::SIGQUIT);
                let _ = rx.recv_timeout(Duration::from_secs(10));
                Ok(())
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
