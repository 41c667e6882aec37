//! Exponential backoff with full jitter for transfers, honouring `Retry-After`.
//!
//! Attempts are counted *without progress*: a transfer that moves bytes between failures resets
//! the count, so a long upload over a flaky link never runs out of retries while a dead link
//! still gives up. (The session-wide `retry` policy can replace this once it lands; the contract
//! — config struct with documented defaults, injectable RNG — is the same.)

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// How transfers retry. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Ceiling of the first delay. 250 ms.
    pub initial_delay: Duration,
    /// No delay is longer than this, except what `Retry-After` asks for (capped at
    /// `max_retry_after`). 20 s.
    pub max_delay: Duration,
    /// Growth per attempt. 2.
    pub factor: f64,
    /// Consecutive failures without progress before giving up. 8 (about a minute of waiting).
    pub max_attempts: u32,
    /// A `Retry-After` longer than this is cut to it. 120 s.
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(20),
            factor: 2.0,
            max_attempts: 8,
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryConfig {
    /// Short delays for tests against a local server.
    pub fn fast() -> Self {
        Self {
            initial_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(100),
            factor: 2.0,
            max_attempts: 12,
            max_retry_after: Duration::from_millis(200),
        }
    }
}

/// One transfer's backoff state.
#[derive(Debug)]
pub struct Backoff {
    config: RetryConfig,
    attempts: u32,
    rng: StdRng,
}

impl Backoff {
    pub fn new(config: RetryConfig) -> Self {
        Self::with_rng(config, StdRng::from_entropy())
    }

    /// With a given RNG, so tests see fixed delays.
    pub fn with_rng(config: RetryConfig, rng: StdRng) -> Self {
        Self {
            config,
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

    /// The delay before the next attempt, or `None` when the attempts are used up. Full jitter
    /// (uniform in `[0, min(max, initial × factor^n)]`), but never less than `retry_after`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.attempts >= self.config.max_attempts {
            return None;
        }
        let exp = self
            .config
            .factor
            .powi(i32::try_from(self.attempts).unwrap_or(i32::MAX));
        self.attempts += 1;
        let ceiling = self
            .config
            .initial_delay
            .mul_f64(exp.min(1e6))
            .min(self.config.max_delay);
        let jittered = ceiling.mul_f64(self.rng.gen_range(0.0..=1.0));
        let floor = retry_after
            .map(|d| d.min(self.config.max_retry_after))
            .unwrap_or_default();
        Some(jittered.max(floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_stop() {
        let config = RetryConfig {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            factor: 2.0,
            max_attempts: 6,
            max_retry_after: Duration::from_secs(5),
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
    fn retry_after_is_a_floor_with_a_cap() {
        let mut backoff = Backoff::with_rng(RetryConfig::default(), StdRng::seed_from_u64(1));
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
