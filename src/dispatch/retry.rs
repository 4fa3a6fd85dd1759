//! The retry policy: how long a message waits after a failed attempt, and when it stops trying.
//!
//! Exponential backoff from `BACKOFF_MIN`, doubling per attempt up to `BACKOFF_MAX`, with "equal
//! jitter" (half the delay fixed, half random) so that messages failed together do not come back
//! together: after the first attempt, between `BACKOFF_MIN` and twice it (its ceiling is `BACKOFF_MIN`
//! itself, half of which would be under the floor). A provider's `Retry-After` is a floor, clamped to `BACKOFF_MAX`. After `MAX_RETRIES`
//! attempts the message is failed: the dead-letter state, with its last reason.

use std::{num::NonZeroU32, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub max_attempts: NonZeroU32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again once this much time has passed.
    RetryIn(Duration),
    /// The attempts are spent: fail the message.
    GiveUp,
}

impl RetryPolicy {
    /// After failed attempt number `attempt` (from 1). `jitter` is a random draw from `[0, 1)`.
    pub fn decide(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> RetryDecision {
        if attempt >= self.max_attempts.get() {
            return RetryDecision::GiveUp;
        }
        let doublings = attempt.saturating_sub(1).min(31);
        let ceiling = self.backoff_min.saturating_mul(1 << doublings).min(self.backoff_max);
        let low = (ceiling / 2).max(self.backoff_min);
        let high = ceiling.max(self.backoff_min.saturating_mul(2));
        let jittered = low + (high - low).mul_f64(jitter.clamp(0.0, 1.0));
        let delay = jittered.max(retry_after.unwrap_or_default()).min(self.backoff_max);
        RetryDecision::RetryIn(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(600),
        max_attempts: NonZeroU32::new(10).unwrap(),
    };

    fn delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        match POLICY.decide(attempt, retry_after, jitter) {
            RetryDecision::RetryIn(delay) => delay,
            RetryDecision::GiveUp => panic!("gave up at attempt {attempt}"),
        }
    }

    #[test]
    fn every_delay_stays_between_the_bounds_whatever_the_jitter() {
        for attempt in 1..10 {
            for jitter in [0.0, 0.25, 0.5, 0.999_999] {
                let d = delay(attempt, None, jitter);
                assert!(
                    d >= POLICY.backoff_min && d <= POLICY.backoff_max,
                    "{attempt} {jitter}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn the_ceiling_doubles_and_jitter_spreads_below_it() {
        // The first ceiling is BACKOFF_MIN itself, which is also the floor: the first wait spreads from it to
        // twice it, or a round failed together would come back together.
        assert_eq!(delay(1, None, 0.0), Duration::from_secs(1));
        assert_eq!(delay(1, None, 0.5), Duration::from_millis(1500));
        assert_eq!(delay(1, None, 0.999_999).as_secs(), 1);
        assert_eq!(delay(2, None, 0.0), Duration::from_secs(1));
        assert_eq!(delay(2, None, 0.999_999).as_secs(), 1, "under 2 s");
        assert_eq!(delay(4, None, 0.0), Duration::from_secs(4), "half of 8s");
        assert_eq!(delay(4, None, 0.999_999).as_secs(), 7);
        assert_eq!(delay(9, None, 0.999_999).as_secs(), 255);
        // From the 11th doubling on, the ceiling is BACKOFF_MAX.
        let capped = RetryPolicy {
            max_attempts: NonZeroU32::new(100).unwrap(),
            ..POLICY
        };
        assert_eq!(
            capped.decide(40, None, 0.0),
            RetryDecision::RetryIn(Duration::from_secs(300))
        );
        assert_eq!(capped.decide(99, None, 1.0), RetryDecision::RetryIn(POLICY.backoff_max));
    }

    #[test]
    fn retry_after_is_a_floor_clamped_to_the_maximum() {
        assert_eq!(delay(1, Some(Duration::from_secs(30)), 0.0), Duration::from_secs(30));
        assert_eq!(delay(5, Some(Duration::from_secs(3)), 0.0), Duration::from_secs(8));
        assert_eq!(delay(1, Some(Duration::from_secs(86_400)), 0.0), POLICY.backoff_max);
    }

    #[test]
    fn the_last_attempt_gives_up() {
        assert!(matches!(POLICY.decide(9, None, 0.5), RetryDecision::RetryIn(_)));
        assert_eq!(POLICY.decide(10, None, 0.5), RetryDecision::GiveUp);
        assert_eq!(
            POLICY.decide(11, Some(Duration::from_secs(1)), 0.5),
            RetryDecision::GiveUp
        );
        let once = RetryPolicy {
            max_attempts: NonZeroU32::new(1).unwrap(),
            ..POLICY
        };
        assert_eq!(once.decide(1, None, 0.0), RetryDecision::GiveUp);
    }
}
