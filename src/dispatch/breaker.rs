//! The provider circuit breaker: when most of the messages sent lately failed in a retryable way (5xx,
//! timeouts, no answer), the provider is taken to be down. Claiming stops for a cool-down, so an outage
//! does not burn every message's attempts; then one message probes, and its answer closes the breaker or
//! opens it again.
//!
//! It judges messages, not sends: a message retried ten times is one vote, its latest. A message that
//! fails again after another message went through is a poison message (a redirect, a garbage answer, a
//! body never answered in time), not a sign of an outage: it stops voting. And a probe that fails for a
//! message that was already failing before the breaker opened says nothing about the provider, so
//! another message probes.
//!
//! ```text
//!  closed ──most of the last WINDOW sends failed──▶ open ──COOL_DOWN passed──▶ half-open (1 probe)
//!    ▲                                               ▲                             │
//!    └──────────── the probe got an answer ──────────┼─────────────────────────────┤
//!                                                    └──── the probe failed too ───┤
//!                              no verdict within PROBE_PATIENCE: another probes ◀──┘
//! ```
//!
//! A probe can end without a verdict: a 429 or a 401 is not the provider being down, and a probe may go
//! back unsent (expired, or put back by a pause). Its patience running out lets another message probe;
//! without it the breaker would stay half-open with nothing claimed.
//!
//! Per instance and in memory: each replica judges the provider by what it sees itself.

use std::{
    collections::{HashSet, VecDeque},
    time::{Duration, Instant},
};

use uuid::Uuid;

/// How many messages, the latest send of each, are judged.
const WINDOW: usize = 20;
/// Fewer messages than this say nothing yet.
const MIN_SAMPLES: usize = 10;
/// How many poison messages are remembered, so their retries keep out of the vote.
const POISON_REMEMBERED: usize = 256;
/// The share of retryable failures that opens the breaker.
const FAILURE_SHARE: f64 = 0.5;
pub const COOL_DOWN: Duration = Duration::from_secs(30);
/// How long a probe may be out without a verdict before another message probes.
pub const PROBE_PATIENCE: Duration = COOL_DOWN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Sending as usual.
    Closed,
    /// The provider looks down: nothing is claimed until `until`.
    Open { until: Instant },
    /// One probe is allowed; `probe_since` when it went out.
    HalfOpen { probe_since: Option<Instant> },
}

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    /// The latest send of each message sent lately, newest last.
    recent: VecDeque<Sent>,
    /// Counts the sends recorded, to tell whether a success came between two failures.
    sends: u64,
    /// The number of the latest send that went through.
    last_success: Option<u64>,
    /// Messages that failed again after others went through, oldest first: they do not vote.
    poison: VecDeque<Uuid>,
    /// The messages that were failing when the breaker opened: a probe of one of them proves nothing.
    suspects: HashSet<Uuid>,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    message: Uuid,
    failed: bool,
    number: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            recent: VecDeque::with_capacity(WINDOW),
            sends: 0,
            last_success: None,
            poison: VecDeque::new(),
            suspects: HashSet::new(),
        }
    }
}

impl Breaker {
    /// The state at `now` (an open breaker whose cool-down passed is half-open).
    pub fn state(&mut self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { probe_since: None };
            }
            BreakerState::HalfOpen {
                probe_since: Some(since),
            } if now >= since + PROBE_PATIENCE => {
                self.state = BreakerState::HalfOpen { probe_since: None };
            }
            _ => {}
        }
        self.state
    }

    /// When the state changes by itself, if it will: the cool-down's end, or the probe's patience running
    /// out. Claims stop until then, and nothing else may come to wake the fetcher (a drain with budget
    /// left waits for no tick).
    pub fn next_change(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            BreakerState::HalfOpen {
                probe_since: Some(since),
            } => Some(since + PROBE_PATIENCE),
            _ => None,
        }
    }

    /// How many messages a tick may claim, given the free send slots.
    pub fn allowance(&mut self, free_slots: usize, now: Instant) -> usize {
        match self.state(now) {
            BreakerState::Closed => free_slots,
            BreakerState::Open { .. } | BreakerState::HalfOpen { probe_since: Some(_) } => 0,
            BreakerState::HalfOpen { probe_since: None } => free_slots.min(1),
        }
    }

    /// A tick claimed `count` messages under the current allowance, at `now`.
    pub fn claimed(&mut self, count: usize, now: Instant) {
        if count > 0 && self.state == (BreakerState::HalfOpen { probe_since: None }) {
            self.state = BreakerState::HalfOpen { probe_since: Some(now) };
        }
    }

    /// A send of `message` ended: `failed` when it was a retryable failure (the provider's fault, not the
    /// message's).
    pub fn record(&mut self, message: Uuid, failed: bool, now: Instant) {
        match self.state(now) {
            BreakerState::HalfOpen { .. } => {
                if failed && (self.suspects.remove(&message) || self.poison.contains(&message)) {
                    // A message that failed before: maybe its fault, not the provider's. Another probes.
                    self.state = BreakerState::HalfOpen { probe_since: None };
                    return;
                }
                self.suspects.clear();
                self.state = if failed {
                    BreakerState::Open { until: now + COOL_DOWN }
                } else {
                    BreakerState::Closed
                };
            }
            // Results of sends that were in flight when it opened change nothing.
            BreakerState::Open { .. } => {}
            BreakerState::Closed => self.vote(message, failed, now),
        }
    }

    fn vote(&mut self, message: Uuid, failed: bool, now: Instant) {
        self.sends += 1;
        let number = self.sends;
        if !failed {
            self.last_success = Some(number);
            self.poison.retain(|id| *id != message);
        } else if self.poison.contains(&message) {
            return;
        }
        let previous = self
            .recent
            .iter()
            .position(|sent| sent.message == message)
            .and_then(|at| self.recent.remove(at));
        if let Some(previous) = previous
            && failed
            && previous.failed
            && self.last_success.is_some_and(|success| success > previous.number)
        {
            if self.poison.len() == POISON_REMEMBERED {
                self.poison.pop_front();
            }
            self.poison.push_back(message);
            return;
        }
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(Sent {
            message,
            failed,
            number,
        });
        let failures = self.recent.iter().filter(|sent| sent.failed).count();
        if self.recent.len() >= MIN_SAMPLES && failures as f64 >= FAILURE_SHARE * self.recent.len() as f64 {
            self.state = BreakerState::Open { until: now + COOL_DOWN };
            self.suspects = self
                .recent
                .drain(..)
                .filter(|sent| sent.failed)
                .map(|sent| sent.message)
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` messages of their own fail once each.
    fn failing(breaker: &mut Breaker, n: usize, now: Instant) {
        for _ in 0..n {
            breaker.record(Uuid::new_v4(), true, now);
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
            breaker.record(Uuid::new_v4(), false, now);
            breaker.record(Uuid::new_v4(), false, now);
            breaker.record(Uuid::new_v4(), true, now);
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
        breaker.record(Uuid::new_v4(), false, now); // a late success from before it opened
        assert!(matches!(breaker.state(now), BreakerState::Open { .. }));
    }

    #[test]
    fn after_the_cool_down_one_probe_goes_and_its_answer_decides() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, MIN_SAMPLES, now);
        let later = now + COOL_DOWN;
        assert_eq!(breaker.allowance(5, later), 1);
        breaker.claimed(1, later);
        assert_eq!(breaker.allowance(5, later), 0, "one probe at a time");

        breaker.record(Uuid::new_v4(), true, later);
        assert_eq!(
            breaker.state(later),
            BreakerState::Open {
                until: later + COOL_DOWN
            }
        );

        let much_later = later + COOL_DOWN;
        assert_eq!(breaker.allowance(5, much_later), 1);
        breaker.claimed(1, much_later);
        breaker.record(Uuid::new_v4(), false, much_later);
        assert_eq!(breaker.state(much_later), BreakerState::Closed);
        assert_eq!(breaker.allowance(5, much_later), 5);
    }

    #[test]
    fn a_few_messages_failing_again_and_again_do_not_open_it() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        let poison: Vec<Uuid> = (0..MIN_SAMPLES - 2).map(|_| Uuid::new_v4()).collect();
        for _ in 0..10 {
            for id in &poison {
                breaker.record(*id, true, now);
            }
            breaker.record(Uuid::new_v4(), false, now);
        }
        assert_eq!(
            breaker.state(now),
            BreakerState::Closed,
            "eight messages, one vote each"
        );
    }

    #[test]
    fn an_outage_after_healthy_sending_still_opens_it() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        let retried: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for id in &retried {
            breaker.record(*id, true, now);
        }
        for _ in 0..WINDOW {
            breaker.record(Uuid::new_v4(), false, now);
        }
        // The provider goes down: the retries fail again (they stop voting), and so does every new one.
        for id in &retried {
            breaker.record(*id, true, now);
        }
        failing(&mut breaker, WINDOW / 2, now);
        assert!(matches!(breaker.state(now), BreakerState::Open { .. }));
    }

    #[test]
    fn a_probe_that_brings_no_verdict_lets_another_probe_once_its_patience_runs_out() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        failing(&mut breaker, MIN_SAMPLES, now);
        let later = now + COOL_DOWN;
        assert_eq!(breaker.allowance(5, later), 1);
        // The probe gets a 429, or goes back unsent: nothing is recorded.
        breaker.claimed(1, later);
        assert_eq!(breaker.allowance(5, later + PROBE_PATIENCE / 2), 0, "still out");
        assert_eq!(
            breaker.allowance(5, later + PROBE_PATIENCE),
            1,
            "it brought no verdict: another message probes"
        );
        breaker.claimed(1, later + PROBE_PATIENCE);
        breaker.record(Uuid::new_v4(), false, later + PROBE_PATIENCE);
        assert_eq!(breaker.state(later + PROBE_PATIENCE), BreakerState::Closed);
    }

    #[test]
    fn a_probe_that_fails_for_a_message_failing_before_lets_another_probe() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        let failed_before: Vec<Uuid> = (0..MIN_SAMPLES).map(|_| Uuid::new_v4()).collect();
        for id in &failed_before {
            breaker.record(*id, true, now);
        }
        let later = now + COOL_DOWN;
        assert_eq!(breaker.allowance(5, later), 1);
        breaker.claimed(1, later);
        breaker.record(failed_before[0], true, later);
        assert_eq!(breaker.allowance(5, later), 1, "inconclusive: another message probes");
        breaker.claimed(1, later);
        breaker.record(failed_before[0], true, later);
        assert!(
            matches!(breaker.state(later), BreakerState::Open { .. }),
            "the same message again is a failure like any other"
        );
    }
}
