//! Progress of one transfer: bytes, total, rate and ETA, sent to a callback.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a transfer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Reading the file through the validator (bytes = bytes read).
    Validating,
    /// Registering the dataset, getting a token, finding where to resume.
    Preparing,
    /// Moving bytes.
    Transferring,
    /// Checking the SHA-256 of a downloaded file.
    Verifying,
    /// Telling the server the upload is complete.
    Confirming,
    Done,
}

/// One progress report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct Progress {
    pub phase: Phase,
    /// Bytes done, including those done before a resume.
    pub bytes: u64,
    pub total: u64,
    /// Bytes per second over the last few seconds.
    pub rate: f64,
    /// Seconds left at the current rate; `None` until there is a rate.
    pub eta_secs: Option<f64>,
    /// Where this run started (a resumed transfer starts above 0).
    pub resumed_from: u64,
    /// Which file, when a transfer moves several (downloads of an artifact).
    pub item: Option<String>,
}

/// Where progress goes. Called from the transfer's task; keep it quick (send on a channel).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Turns byte counts into [`Progress`] reports, at most one per `interval` while bytes move
/// (plus every phase change and the first bytes of a run).
pub(crate) struct Meter {
    sink: Option<ProgressFn>,
    total: u64,
    phase: Phase,
    resumed_from: u64,
    bytes: u64,
    window: VecDeque<(Instant, u64)>,
    last_emit: Option<Instant>,
    /// The byte count of the last report.
    last_bytes: u64,
    interval: Duration,
    item: Option<String>,
}

const WINDOW: Duration = Duration::from_secs(5);

impl Meter {
    pub fn new(sink: Option<ProgressFn>, total: u64) -> Self {
        Self {
            sink,
            total,
            phase: Phase::Preparing,
            resumed_from: 0,
            bytes: 0,
            window: VecDeque::new(),
            last_emit: None,
            last_bytes: 0,
            interval: Duration::from_millis(100),
            item: None,
        }
    }

    /// Names the file the next reports are about.
    pub fn item(&mut self, item: Option<String>) {
        self.item = item;
    }

    /// A new phase; `bytes` is where it starts.
    pub fn phase(&mut self, phase: Phase, bytes: u64, total: u64) {
        self.phase = phase;
        self.total = total;
        self.bytes = bytes;
        self.window.clear();
        self.window.push_back((Instant::now(), bytes));
        self.emit(Instant::now());
    }

    /// Transferring starts (or resumes) at `bytes`.
    pub fn start_transfer(&mut self, bytes: u64) {
        self.resumed_from = bytes;
        self.phase(Phase::Transferring, bytes, self.total);
    }

    /// The absolute byte count moved to `bytes` (may go down after a resync).
    pub fn set(&mut self, bytes: u64) {
        let now = Instant::now();
        let first_move = self.bytes == self.resumed_from && bytes != self.bytes;
        self.bytes = bytes;
        self.window.push_back((now, bytes));
        while self.window.len() > 2 && now.duration_since(self.window[0].0) > WINDOW {
            self.window.pop_front();
        }
        let due = self
            .last_emit
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        // Also every 1% of the total: a burst that fills the socket's buffers and then stalls
        // (a slow or held link) must not leave the last report at its first bytes.
        let moved = bytes.abs_diff(self.last_bytes) >= (self.total / 100).max(1);
        if due || first_move || moved || bytes == self.total {
            self.emit(now);
        }
    }

    pub fn add(&mut self, n: u64) {
        self.set(self.bytes + n);
    }

    fn rate(&self, now: Instant) -> f64 {
        let Some(&(t0, b0)) = self.window.front() else {
            return 0.0;
        };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs < 0.05 || self.bytes <= b0 {
            return 0.0;
        }
        (self.bytes - b0) as f64 / secs
    }

    fn emit(&mut self, now: Instant) {
        self.last_emit = Some(now);
        self.last_bytes = self.bytes;
        let Some(sink) = &self.sink else {
            return;
        };
        let rate = self.rate(now);
        let eta_secs = (rate > 0.0).then(|| self.total.saturating_sub(self.bytes) as f64 / rate);
        sink(&Progress {
            phase: self.phase,
            bytes: self.bytes,
            total: self.total,
            rate,
            eta_secs,
            resumed_from: self.resumed_from,
            item: self.item.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn reports_phases_first_bytes_and_the_end() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            Arc::new(move |p: &Progress| seen.lock().expect("lock").push(p.clone())) as ProgressFn
        };
        let mut meter = Meter::new(Some(sink), 1_000_000);
        meter.start_transfer(400_000);
        for _ in 0..60_000 {
            meter.add(10);
        }
        let seen = seen.lock().expect("lock");
        assert_eq!(seen[0].bytes, 400_000, "the resume point is reported first");
        assert_eq!(
            seen[0].resumed_from, 400_000,
            "resumed_from says where this run started"
        );
        assert_eq!(
            seen[1].bytes, 400_010,
            "the first bytes moved are reported at once"
        );
        let last = seen.last().expect("reports");
        assert_eq!(last.bytes, 1_000_000, "the end is always reported");
        // 60,000 moves: one report per 1% of the total, plus one per 100 ms at most.
        assert!(seen.len() < 80, "reports are throttled, got {}", seen.len());
    }

    #[test]
    fn a_burst_then_a_stall_leaves_a_current_report() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let seen = seen.clone();
            Arc::new(move |p: &Progress| seen.lock().expect("lock").push(p.clone())) as ProgressFn
        };
        let total = 24 << 20;
        let mut meter = Meter::new(Some(sink), total);
        meter.start_transfer(0);
        // 9 MiB in 64 KiB pieces, faster than the time-based throttle, then nothing.
        for _ in 0..144 {
            meter.add(64 << 10);
        }
        let last = seen.lock().expect("lock").last().expect("reports").bytes;
        assert!(
            (9 << 20) - last <= total / 100,
            "the last report says {last} bytes of {} sent",
            9 << 20
        );
    }
}
