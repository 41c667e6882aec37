//! A fault-injection TCP proxy for transfer tests, between a client and the stack:
//!
//! - **cuts**: the next `n` connections that carry bytes in a direction are closed abruptly
//!   (both sockets, RST) after a random number of bytes in that direction;
//! - **corruption**: one byte, at a chosen offset of the first connection stream to reach it, is
//!   flipped once;
//! - **gate**: at most `limit` bytes (counted over all connections) are forwarded in a direction;
//!   then the proxy stops reading (back-pressure) until the gate is raised. Tests wait for
//!   [`FaultProxy::wait_held`] instead of sleeping: the transfer is provably mid-way;
//! - **down**: [`FaultProxy::cut_all`] closes every connection and refuses new ones (the
//!   server went away), until [`FaultProxy::restore`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server (request bodies: uploads).
    Up,
    /// Server to client (response bodies: downloads).
    Down,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Self::Up => 0,
            Self::Down => 1,
        }
    }
}

#[derive(Debug)]
struct Plan {
    cuts_left: u32,
    cut_direction: Direction,
    cut_range: (u64, u64),
    cuts_done: u32,
    rng: StdRng,
    corrupt: Option<(Direction, u64)>,
    corrupted: bool,
    gate: Option<(Direction, u64)>,
    forwarded: [u64; 2],
    connections: u32,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    plan: Mutex<Plan>,
    /// Notified on every forward and every change of plan.
    activity: Notify,
    /// True while the proxy plays a server that went away.
    down: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The proxy; it stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream_url` (`http://host:port`), passing everything through.
    pub async fn start(upstream_url: &str) -> Self {
        let host = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let upstream: SocketAddr = tokio::net::lookup_host(host)
            .await
            .expect("upstream resolves")
            .next()
            .expect("upstream has an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            plan: Mutex::new(Plan {
                cuts_left: 0,
                cut_direction: Direction::Up,
                cut_range: (0, 0),
                cuts_done: 0,
                rng: StdRng::seed_from_u64(0),
                corrupt: None,
                corrupted: false,
                gate: None,
                forwarded: [0, 0],
                connections: 0,
            }),
            activity: Notify::new(),
            down: tokio::sync::watch::Sender::new(false),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Cut the next `n` connections that carry `direction` bytes, each after a random number of
    /// bytes in `[min, max]` in that direction (seeded: a failing run can be replayed).
    pub fn cut_connections(&self, n: u32, direction: Direction, min: u64, max: u64, seed: u64) {
        let mut plan = self.shared.plan();
        plan.cuts_left = n;
        plan.cut_direction = direction;
        plan.cut_range = (min, max.max(min));
        plan.rng = StdRng::seed_from_u64(seed);
        drop(plan);
        self.shared.activity.notify_waiters();
    }

    /// Flip the byte at offset `at` of the first connection stream in `direction` to reach it.
    pub fn corrupt_once(&self, direction: Direction, at: u64) {
        let mut plan = self.shared.plan();
        plan.corrupt = Some((direction, at));
        plan.corrupted = false;
    }

    /// Forward at most `limit` bytes in total in `direction` (over all connections), then hold.
    pub fn hold_after(&self, direction: Direction, limit: u64) {
        self.shared.plan().gate = Some((direction, limit));
        self.shared.activity.notify_waiters();
    }

    /// No gate any more.
    pub fn open_gate(&self) {
        self.shared.plan().gate = None;
        self.shared.activity.notify_waiters();
    }

    /// Waits until the gate is reached: everything it allows has been forwarded.
    pub async fn wait_held(&self) {
        loop {
            let notified = self.shared.activity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let plan = self.shared.plan();
                if let Some((d, limit)) = plan.gate
                    && plan.forwarded[d.index()] >= limit
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// The server goes away: every open connection is closed and new ones are closed at once.
    pub fn cut_all(&self) {
        self.shared.down.send_replace(true);
    }

    /// The server is back.
    pub fn restore(&self) {
        self.shared.down.send_replace(false);
    }

    pub fn cuts_done(&self) -> u32 {
        self.shared.plan().cuts_done
    }

    pub fn cuts_left(&self) -> u32 {
        self.shared.plan().cuts_left
    }

    pub fn corrupted(&self) -> bool {
        self.shared.plan().corrupted
    }

    pub fn forwarded(&self, direction: Direction) -> u64 {
        self.shared.plan().forwarded[direction.index()]
    }

    pub fn connections(&self) -> u32 {
        self.shared.plan().connections
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if *shared.down.borrow() {
            drop(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(shared.upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            shared.plan().connections += 1;
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            // Set when this connection is cut: both pumps stop and drop their halves.
            let cut = Arc::new(tokio::sync::watch::Sender::new(false));
            let up = pump(
                shared.clone(),
                Direction::Up,
                client_read,
                server_write,
                cut.clone(),
            );
            let down = pump(shared, Direction::Down, server_read, client_write, cut);
            let _ = tokio::join!(up, down);
        });
    }
}

/// Forwards one direction of one connection, applying the plan.
async fn pump(
    shared: Arc<Shared>,
    direction: Direction,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let mut cut_rx = cut.subscribe();
    let mut down_rx = shared.down.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    let mut offset = 0u64;
    // Bytes left before this connection is cut, once it has been chosen for a cut.
    let mut budget: Option<u64> = None;
    loop {
        // How much may be read now (gate and cut budget).
        let allowed = loop {
            let notified = shared.activity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let allowed = {
                let plan = shared.plan();
                match plan.gate {
                    Some((d, limit)) if d == direction => {
                        limit.saturating_sub(plan.forwarded[direction.index()])
                    }
                    _ => u64::MAX,
                }
            };
            if allowed > 0 {
                break allowed;
            }
            tokio::select! {
                _ = notified => {}
                () = cut_signal(&mut cut_rx, &mut down_rx) => return,
            }
        };
        let want = (buf.len() as u64)
            .min(allowed)
            .min(budget.unwrap_or(u64::MAX));
        let want = usize::try_from(want).unwrap_or(buf.len()).max(1);
        let read = tokio::select! {
            r = from.read(&mut buf[..want]) => r,
            () = cut_signal(&mut cut_rx, &mut down_rx) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let mut cut_now = false;
        {
            let mut plan = shared.plan();
            if budget.is_none() && plan.cuts_left > 0 && plan.cut_direction == direction {
                plan.cuts_left -= 1;
                let (min, max) = plan.cut_range;
                budget = Some(plan.rng.gen_range(min.max(1)..=max.max(1)));
            }
            if let Some((d, at)) = plan.corrupt
                && d == direction
                && !plan.corrupted
                && at >= offset
                && at < offset + n as u64
            {
                buf[usize::try_from(at - offset).unwrap_or(0)] ^= 0xff;
                plan.corrupted = true;
            }
        }
        let mut n = n;
        if let Some(left) = budget.as_mut() {
            let take = (*left).min(n as u64);
            n = usize::try_from(take).unwrap_or(n);
            *left -= take;
            cut_now = *left == 0;
        }
        if n > 0 && to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        offset += n as u64;
        {
            let mut plan = shared.plan();
            plan.forwarded[direction.index()] += n as u64;
            if cut_now {
                plan.cuts_done += 1;
            }
        }
        shared.activity.notify_waiters();
        if cut_now {
            // Abrupt: both directions stop, the halves drop, the peers see a reset.
            cut.send_replace(true);
            return;
        }
    }
}

/// This connection was cut, or the whole proxy went down.
async fn cut_signal(
    cut: &mut tokio::sync::watch::Receiver<bool>,
    down: &mut tokio::sync::watch::Receiver<bool>,
) {
    tokio::select! {
        _ = cut.wait_for(|&c| c) => {}
        _ = down.wait_for(|&d| d) => {}
    }
}
