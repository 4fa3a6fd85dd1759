//! The provider circuit breaker: when most recent sends fail in a retryable way (5xx, 429, timeouts),
//! the provider is taken to be down. Claiming stops for a cool-down, so an outage does not burn every
//! message's attempts; then one message probes, and its answer closes the breaker or opens it again.
//!
//! ```text
//!  closed ──most of the last WINDOW sends failed──▶ open ──COOL_DOWN passed──▶ half-open (1 probe)
//!    ▲                                               ▲                             │
//!    └──────────── the probe got an answer ──────────┼─────────────────────────────┘
//!                                                    └──── the probe failed too ───┘
//! ```
//!
//! Per instance and in memory: each replica judges the provider by what it sees itself.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// How many recent sends are judged.
const WINDOW: usize = 20;
/// Fewer sends than this say nothing yet.
const MIN_SAMPLES: usize = 10;
/// The share of retryable failures that opens the breaker.
const FAILURE_SHARE: f64 = 0.5;
pub const COOL_DOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sending as usual.
    Closed,
    /// The provider looks down: nothing is claimed until `until`.
    Open { until: Instant },
    /// One probe is allowed; `probing` once it is out.
    HalfOpen { probing: bool },
}

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    /// `true` for a retryable failure, newest last.
    recent: VecDeque<bool>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            recent: VecDeque::with_capacity(WINDOW),
        }
    }
}

impl Breaker {
    /// The state at `now` (an open breaker whose cool-down passed is half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let BreakerState::Open { until } = self.state
            && now >= until
        {
            self.state = BreakerState::HalfOpen { probing: false };
        }
        self.state
    }

    /// How many messages a tick may claim, given the free send slots.
    pub fn allowance(&mut self, free_slots: usize, now: Instant) -> usize {
        match self.state(now) {
            BreakerState::Closed => free_slots,
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: true } => 0,
            BreakerState::HalfOpen { probing: false } => free_slots.min(1),
        }
    }

    /// A tick claimed `count` messages under the current allowance.
    pub fn claimed(&mut self, count: usize) {
        if count > 0 && self.state == (BreakerState::HalfOpen { probing: false }) {
            self.state = BreakerState::HalfOpen { probing: true };
        }
    }

    /// A send ended: `failed` when it was a retryable failure (the provider's fault, not the message's).
    pub fn record(&mut self, failed: bool, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen { .. } => {
                self.recent.clear();
                self.state = if failed {
                    BreakerState::Open { until: now + COOL_DOWN }
                } else {
                    BreakerState::Closed
                };
            }
            // Results of sends that were in flight when it opened change nothing.
            BreakerState::Open { .. } => {}
            BreakerState::Closed => {
                if self.recent.len() == WINDOW {
                    self.recent.pop_front();
                }
                self.recent.push_back(failed);
                let failures = self.recent.iter().filter(|f| **f).count();
                if self.recent.len() >= MIN_SAMPLES && failures as f64 >= FAILURE_SHARE * self.recent.len() as f64 {
                    self.state = BreakerState::Open { until: now + COOL_DOWN };
                    self.recent.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(breaker: &mut Breaker, n: usize, now: Instant) {
        for _ in 0..n {
            breaker.record(true, now);
        }
    }

    #[test]
    fn a_few_failures_do_not_open_it() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, MIN_SAMPLES - 1, now);
        assert_eq!(breaker.state(now), BreakerState::Closed);
        let mut breaker = Breaker::default();
        for _ in 0..WINDOW {
            breaker.record(false, now);
            breaker.record(false, now);
            breaker.record(true, now);
        }
        assert_eq!(breaker.state(now), BreakerState::Closed, "a third failing is not most");
        assert_eq!(breaker.allowance(5, now), 5);
    }

    #[test]
    fn mostly_failing_opens_it_and_nothing_is_claimed_during_the_cool_down() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, MIN_SAMPLES, now);
        assert_eq!(breaker.state(now), BreakerState::Open { until: now + COOL_DOWN });
        assert_eq!(breaker.allowance(5, now + COOL_DOWN / 2), 0);
        breaker.record(false, now); // a late success from before it opened
        assert!(matches!(breaker.state(now), BreakerState::Open { .. }));
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_its_answer_decides() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, MIN_SAMPLES, now);
        let later = now + COOL_DOWN;
        assert_eq!(breaker.allowance(5, later), 1);
        breaker.claimed(1);
        assert_eq!(breaker.allowance(5, later), 0, "one probe at a time");

        breaker.record(true, later);
        assert_eq!(
            breaker.state(later),
            BreakerState::Open {
                until: later + COOL_DOWN
            }
        );

        let much_later = later + COOL_DOWN;
        assert_eq!(breaker.allowance(5, much_later), 1);
        breaker.claimed(1);
        breaker.record(false, much_later);
        assert_eq!(breaker.state(much_later), BreakerState::Closed);
        assert_eq!(breaker.allowance(5, much_later), 5);
    }
}
