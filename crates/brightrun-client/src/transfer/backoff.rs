//! Backoff for transfers: the client's [`RetryPolicy`] schedule, with attempts counted *without
//! progress*. A transfer that moves bytes between failures resets the count, so a long upload
//! over a flaky link never runs out of retries while a dead link still gives up.

use std::time::Duration;

use rand::SeedableRng as _;
use rand::rngs::StdRng;

use crate::retry::RetryPolicy;

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

/// One transfer's backoff state.
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_bounded_and_stop() {
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
    fn retry_after_is_a_floor_with_a_cap() {
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
