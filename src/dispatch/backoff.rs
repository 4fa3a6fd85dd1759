//! How long a message waits before its next attempt. A bounded exponential delay for now: 1s after the
//! first failed attempt, doubling, never more than 5 minutes; a provider's `Retry-After` is honoured
//! within the same bound.

use std::time::Duration;

pub const RETRY_DELAY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(5 * 60);

/// The wait after failed attempt number `attempt` (counting from 1).
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let exponential = RETRY_DELAY_MIN.saturating_mul(1 << doublings);
    exponential.max(retry_after.unwrap_or_default()).min(RETRY_DELAY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_from_the_minimum_up_to_the_maximum() {
        assert_eq!(retry_delay(1, None), Duration::from_secs(1));
        assert_eq!(retry_delay(2, None), Duration::from_secs(2));
        assert_eq!(retry_delay(5, None), Duration::from_secs(16));
        assert_eq!(retry_delay(9, None), Duration::from_secs(256));
        assert_eq!(retry_delay(10, None), RETRY_DELAY_MAX);
        assert_eq!(retry_delay(u32::MAX, None), RETRY_DELAY_MAX);
        assert_eq!(retry_delay(0, None), RETRY_DELAY_MIN);
    }

    #[test]
    fn retry_after_lengthens_the_delay_but_never_past_the_maximum() {
        assert_eq!(retry_delay(1, Some(Duration::from_secs(30))), Duration::from_secs(30));
        assert_eq!(retry_delay(5, Some(Duration::from_secs(3))), Duration::from_secs(16));
        assert_eq!(retry_delay(1, Some(Duration::from_secs(3600))), RETRY_DELAY_MAX);
    }
}
