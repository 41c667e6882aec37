//! When and how long to wait before sending a failed request again: exponential backoff with full
//! jitter, bounded in attempts and in total time, honouring `Retry-After`.
//!
//! Whether an error may be retried at all is the error's own typed property ([`Retryable`]); this
//! module only decides the schedule. The random source is injected so tests are deterministic.
//!
//! Two ways to use it: [`Retrier::run`] for a request that is sent again whole, and [`Backoff`]
//! for a transfer, whose attempts are counted *without progress*: a transfer that moves bytes
//! between failures resets the count, so a long upload over a flaky link never runs out of
//! retries while a dead link still gives up.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::time::Instant;

/// What the schedule asks of an error: may it be retried, and did the server say when.
pub trait Retryable {
    /// The same request may succeed if sent again later.
    fn is_retryable(&self) -> bool;
    /// The request certainly was not applied, so even an insert may be sent again.
    fn is_retryable_unapplied(&self) -> bool;
    /// How long the server asked to wait.
    fn retry_after(&self) -> Option<Duration>;
}

impl Retryable for crate::Error {
    fn is_retryable(&self) -> bool {
        crate::Error::is_retryable(self)
    }
    fn is_retryable_unapplied(&self) -> bool {
        crate::Error::is_retryable_unapplied(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        crate::Error::retry_after(self)
    }
}

/// How persistent to be. One policy per client; the defaults suit an interactive desktop app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt. Default 5: with the default backoff that spans about
    /// 8 s of waiting on average before giving up, enough to ride out a server restart.
    pub max_retries: u32,
    /// The backoff ceiling of the first retry; it doubles per retry. Default 250 ms.
    pub base: Duration,
    /// The largest backoff ceiling of any one retry. Default 30 s.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt started (a `Retry-After` that
    /// would wait past it gives up at once). Default 120 s.
    pub total_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            total_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The ceiling of the backoff before retry number `retry` (0 for the first retry):
    /// `min(max_backoff, base × 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.max_backoff)
    }

    /// "Full jitter": a uniformly random wait in `[0, ceiling(retry)]`, so clients that failed
    /// together do not retry together. A server's `Retry-After` is a floor.
    pub fn backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Duration {
        let ceiling = self.ceiling(retry);
        let jittered = ceiling.mul_f64(rng.r#gen::<f64>());
        match retry_after {
            Some(floor) => jittered.max(floor),
            None => jittered,
        }
    }
}

/// Whether a request may be applied twice without harm. Decides which failures may be retried:
/// an idempotent request after any transient failure, a non-idempotent one (an insert) only when
/// it certainly was not applied ([`crate::Error::is_retryable_unapplied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    Idempotent,
    NotIdempotent,
}

/// A [`RetryPolicy`] with its random source: shared by all requests of one client.
pub struct Retrier {
    policy: RetryPolicy,
    rng: Mutex<Box<dyn RngCore + Send>>,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Default for Retrier {
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl Retrier {
    /// With an entropy-seeded random source.
    pub fn new(policy: RetryPolicy) -> Self {
        Self::with_rng(policy, StdRng::from_entropy())
    }

    /// With the given random source (tests: a seeded one).
    pub fn with_rng(policy: RetryPolicy, rng: impl RngCore + Send + 'static) -> Self {
        Self {
            policy,
            rng: Mutex::new(Box::new(rng)),
        }
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Runs `attempt` until it succeeds, fails with an error that may not be retried, or the
    /// policy is exhausted; the last error is returned. `attempt` gets the attempt number
    /// (0 for the first).
    pub async fn run<T, E, F, Fut>(&self, idempotency: Idempotency, mut attempt: F) -> Result<T, E>
    where
        E: Retryable + std::fmt::Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            let error = match attempt(retry).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let may_retry = match idempotency {
                Idempotency::Idempotent => error.is_retryable(),
                Idempotency::NotIdempotent => error.is_retryable_unapplied(),
            };
            if !may_retry || retry >= self.policy.max_retries {
                return Err(error);
            }
            let delay = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                self.policy
                    .backoff(retry, error.retry_after(), rng.as_mut())
            };
            if started.elapsed() + delay > self.policy.total_timeout {
                return Err(error);
            }
            tracing::debug!(retry, ?delay, error = %error, "transient failure; retrying");
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

impl RetryPolicy {
    /// The transfers' defaults: 8 consecutive failures without progress (about a minute of
    /// waiting), 250 ms doubling to 20 s; `total_timeout` caps what a `Retry-After` may ask.
    pub fn transfers() -> Self {
        Self {
            max_retries: 8,
            base: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
            total_timeout: Duration::from_secs(120),
        }
    }
}

/// One transfer's backoff: the policy's schedule, with attempts counted since the last progress.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempts: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self::with_rng(policy, StdRng::from_entropy())
    }

    /// With a given RNG, so tests see fixed delays.
    pub fn with_rng(policy: RetryPolicy, rng: StdRng) -> Self {
        Self {
            policy,
            attempts: 0,
            rng,
        }
    }

    /// Bytes moved: start counting again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The delay before the next attempt, or `None` when the attempts are used up: the policy's
    /// full-jitter backoff, never less than `retry_after` (itself capped at `total_timeout`).
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.policy.max_retries {
            return None;
        }
        let floor = retry_after.map(|d| d.min(self.policy.total_timeout));
        let delay = self.policy.backoff(self.attempts, floor, &mut self.rng);
        self.attempts += 1;
        Some(delay)
    }

    /// Sleeps before the next attempt after `last`, or gives `last` back when the attempts are
    /// used up (the caller wraps it as it sees fit).
    pub async fn wait<E: Retryable>(&mut self, last: E) -> Result<(), E> {
        match self.next_delay(last.retry_after()) {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(last),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use rand::rngs::mock::StepRng;

    use super::*;
    use crate::error::{ApiError, Error, Service};

    type Result<T> = std::result::Result<T, Error>;

    fn transient(retry_after: Option<u64>) -> Error {
        Error::Api(ApiError {
            service: Service::Rest,
            status: 503,
            code: "PGRST000".into(),
            message: "no connection".into(),
            details: None,
            hint: None,
            retry_after,
        })
    }

    fn permanent() -> Error {
        Error::Api(ApiError {
            service: Service::Rest,
            status: 400,
            code: "22023".into(),
            message: "bad".into(),
            details: None,
            hint: None,
            retry_after: None,
        })
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_retries, 5, "documented default");
        assert_eq!(p.base, Duration::from_millis(250), "documented default");
        assert_eq!(p.max_backoff, Duration::from_secs(30), "documented default");
        assert_eq!(
            p.total_timeout,
            Duration::from_secs(120),
            "documented default"
        );
    }

    #[test]
    fn ceiling_doubles_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.ceiling(0),
            Duration::from_millis(250),
            "first retry: base"
        );
        assert_eq!(p.ceiling(1), Duration::from_millis(500), "doubles");
        assert_eq!(p.ceiling(3), Duration::from_secs(2), "doubles again");
        assert_eq!(
            p.ceiling(10),
            Duration::from_secs(30),
            "capped at max_backoff"
        );
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(30), "no overflow");
    }

    #[test]
    fn backoff_is_full_jitter_within_the_ceiling_and_deterministic_per_seed() {
        let p = RetryPolicy::default();
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..8)
                .map(|r| p.backoff(r, None, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "the same seed gives the same schedule");
        assert_ne!(a, draw(8), "another seed gives another schedule");
        for (r, d) in a.iter().enumerate() {
            assert!(
                *d <= p.ceiling(r as u32),
                "retry {r}: {d:?} within its ceiling"
            );
        }
        // Extremes of the random source map to the extremes of the interval.
        let mut zero = StepRng::new(0, 0);
        assert_eq!(
            p.backoff(3, None, &mut zero),
            Duration::ZERO,
            "full jitter reaches 0"
        );
        let mut max = StepRng::new(u64::MAX, 0);
        let top = p.backoff(3, None, &mut max);
        assert!(
            top > p.ceiling(3).mul_f64(0.99) && top <= p.ceiling(3),
            "full jitter reaches the ceiling: {top:?}"
        );
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let mut zero = StepRng::new(0, 0);
        assert_eq!(
            p.backoff(0, Some(Duration::from_secs(9)), &mut zero),
            Duration::from_secs(9),
            "the server's Retry-After wins over a shorter jittered wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let retrier = Retrier::with_rng(RetryPolicy::default(), StdRng::seed_from_u64(1));
        let calls = AtomicU32::new(0);
        let value = retrier
            .run(Idempotency::Idempotent, |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 3 { Err(transient(None)) } else { Ok(n) } }
            })
            .await
            .expect("succeeds on the fourth attempt");
        assert_eq!(value, 3, "the attempt number is passed in");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "three failures, one success"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let retrier = Retrier::default();
        let calls = AtomicU32::new(0);
        let result: Result<()> = retrier
            .run(Idempotency::Idempotent, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(permanent()) }
            })
            .await;
        assert!(result.is_err(), "a 400 fails");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 400 is never resent");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_retries() {
        let policy = RetryPolicy {
            max_retries: 2,
            ..RetryPolicy::default()
        };
        let retrier = Retrier::with_rng(policy, StdRng::seed_from_u64(1));
        let calls = AtomicU32::new(0);
        let result: Result<()> = retrier
            .run(Idempotency::Idempotent, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(transient(None)) }
            })
            .await;
        assert!(result.is_err(), "still failing after the last retry");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "first attempt plus max_retries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_and_the_total_timeout() {
        let policy = RetryPolicy {
            total_timeout: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let retrier = Retrier::with_rng(policy, StepRng::new(0, 0));
        let started = Instant::now();
        let calls = AtomicU32::new(0);
        let result: Result<()> = retrier
            .run(Idempotency::Idempotent, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(transient(Some(4))) }
            })
            .await;
        assert!(result.is_err(), "never succeeds");
        // Waits 4 s, 4 s; a third 4 s wait would end at 12 s > 10 s, so it gives up at 8 s.
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two Retry-After waits fit in 10 s"
        );
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(8),
            "waited exactly what Retry-After asked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn non_idempotent_requests_retry_only_when_unapplied() {
        let retrier = Retrier::default();
        let calls = AtomicU32::new(0);
        let gateway = || {
            Error::Api(ApiError {
                service: Service::Rest,
                status: 504,
                code: String::new(),
                message: "gateway timeout".into(),
                details: None,
                hint: None,
                retry_after: None,
            })
        };
        let result: Result<()> = retrier
            .run(Idempotency::NotIdempotent, |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(gateway()) }
            })
            .await;
        assert!(result.is_err(), "fails");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a 504 may have been applied: an insert is not resent"
        );
        calls.store(0, Ordering::SeqCst);
        let _: Result<()> = retrier
            .run(Idempotency::NotIdempotent, |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { if n == 0 { Err(transient(None)) } else { Ok(()) } }
            })
            .await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a 503 from PostgREST rolled back: an insert may be resent"
        );
    }

    #[test]
    fn backoff_delays_grow_stay_bounded_and_stop() {
        let config = RetryPolicy {
            max_retries: 6,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            total_timeout: Duration::from_secs(5),
        };
        let mut backoff = Backoff::with_rng(config, StdRng::seed_from_u64(7));
        let mut ceilings = [100u64, 200, 400, 800, 1000, 1000].into_iter();
        while let Some(delay) = backoff.next_delay(None) {
            let ceiling = ceilings.next().expect("no more delays than max_attempts");
            assert!(
                delay <= Duration::from_millis(ceiling),
                "delay {delay:?} is within its ceiling {ceiling} ms"
            );
        }
        assert_eq!(backoff.attempts(), 6, "gives up after max_attempts");
        backoff.reset();
        assert!(
            backoff.next_delay(None).is_some(),
            "progress resets the count"
        );
    }

    #[test]
    fn backoff_takes_retry_after_as_a_floor_with_a_cap() {
        let mut backoff = Backoff::with_rng(RetryPolicy::transfers(), StdRng::seed_from_u64(1));
        let delay = backoff
            .next_delay(Some(Duration::from_secs(7)))
            .expect("a delay");
        assert_eq!(delay, Duration::from_secs(7), "Retry-After is honoured");
        let delay = backoff
            .next_delay(Some(Duration::from_secs(3600)))
            .expect("a delay");
        assert_eq!(
            delay,
            Duration::from_secs(120),
            "an absurd Retry-After is capped"
        );
    }
}
