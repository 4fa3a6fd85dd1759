//! When the stand-in provider's POSTs arrive: the most in any one-second window, the count of each
//! second, and a quota of N a second that a real provider would enforce with 429s.
//!
//! Every figure reads one clock, [`Clock`]: seconds since the Unix epoch that never step back, so a
//! "second" here is a wall-clock second (`12:00:01.000` up to `12:00:02.000`) and a benchmark can line the
//! counts up with database timestamps. Memory stays bounded: the sliding window holds the arrivals of the
//! last second only (at most `max_in_any_second` instants), and per-second counts keep the last
//! [`SECONDS_KEPT`] seconds.

use std::{
    collections::VecDeque,
    fmt,
    num::NonZeroU32,
    str::FromStr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How many of the latest per-second counts `GET /stats` reports: ten minutes, longer than any benchmark
/// scenario, small enough to send on every poll.
pub const SECONDS_KEPT: usize = 600;

const ONE_SECOND: Duration = Duration::from_secs(1);

/// Time since the Unix epoch, read from a monotonic clock: aligned to the wall clock once, at start, then
/// immune to clock steps, so a window can never run backwards.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    started: Instant,
    started_since_epoch: Duration,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            // A clock set before 1970 reads as 1970: the windows stay one second long either way.
            started_since_epoch: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
        }
    }

    pub fn now(&self) -> Duration {
        self.started_since_epoch + self.started.elapsed()
    }
}

/// A provider's quota, `N/s`: requests beyond N within one wall-clock second get 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub per_second: NonZeroU32,
}

impl FromStr for Quota {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        raw.trim()
            .strip_suffix("/s")
            .and_then(|count| count.trim().parse::<NonZeroU32>().ok())
            .map(|per_second| Self { per_second })
            .ok_or_else(|| format!("expected requests a second as N/s with N at least 1, e.g. 100/s; got {raw:?}"))
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.per_second)
    }
}

/// The quota's fixed window: the wall-clock second now running and the requests it has seen. Refused
/// requests count too, as they would against a real provider's quota: a client that keeps knocking does
/// not get in sooner.
#[derive(Debug)]
pub struct QuotaWindow {
    quota: Quota,
    second: u64,
    seen: u32,
}

impl QuotaWindow {
    pub fn new(quota: Quota) -> Self {
        Self {
            quota,
            second: 0,
            seen: 0,
        }
    }

    /// Counts a request arriving `at`; true while its second has not yet seen more than the quota.
    pub fn admit(&mut self, at: Duration) -> bool {
        let second = at.as_secs();
        if second != self.second {
            self.second = second;
            self.seen = 0;
        }
        self.seen = self.seen.saturating_add(1);
        self.seen <= self.quota.per_second.get()
    }
}

/// Arrival counts: the most in any one-second window, and per wall-clock second.
#[derive(Debug, Default)]
pub struct Arrivals {
    /// Arrivals of the last second, oldest first. The busiest window of any length-one-second ends at
    /// an arrival, so measuring at each arrival finds the exact maximum.
    last_second: VecDeque<Duration>,
    max_in_any_second: u64,
    /// The wall-clock second of `per_second[0]`.
    first_second: u64,
    per_second: VecDeque<u64>,
}

impl Arrivals {
    /// Records one arrival; `at` must not be earlier than the previous one (read [`Clock`] under the
    /// same lock that guards this).
    pub fn record(&mut self, at: Duration) {
        while self
            .last_second
            .front()
            .is_some_and(|&oldest| at - oldest >= ONE_SECOND)
        {
            self.last_second.pop_front();
        }
        self.last_second.push_back(at);
        self.max_in_any_second = self.max_in_any_second.max(self.last_second.len() as u64);

        let second = at.as_secs();
        if self.per_second.is_empty() {
            self.first_second = second;
        }
        let index = second.saturating_sub(self.first_second) as usize;
        if index >= self.per_second.len() {
            self.per_second.resize(index + 1, 0);
        }
        self.per_second[index] += 1;
        while self.per_second.len() > SECONDS_KEPT {
            self.per_second.pop_front();
            self.first_second += 1;
        }
    }

    /// The largest count of arrivals within any one second (a sliding window, not whole seconds).
    pub fn max_in_any_second(&self) -> u64 {
        self.max_in_any_second
    }

    /// The wall-clock second (since the Unix epoch) of the first per-second count; `None` before any
    /// arrival.
    pub fn first_second(&self) -> Option<u64> {
        (!self.per_second.is_empty()).then_some(self.first_second)
    }

    /// Arrivals in each wall-clock second from [`Self::first_second`] on, the empty ones included.
    pub fn per_second(&self) -> Vec<u64> {
        self.per_second.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    #[test]
    fn a_quota_reads_as_requests_a_second() {
        assert_eq!("100/s".parse::<Quota>().unwrap().per_second.get(), 100);
        assert_eq!("100/s".parse::<Quota>().unwrap().to_string(), "100/s");
        for bad in ["100", "0/s", "-1/s", "100/m", "/s", "ten/s"] {
            assert!(bad.parse::<Quota>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn the_quota_admits_n_in_each_wall_clock_second_and_refuses_the_rest() {
        let mut window = QuotaWindow::new("3/s".parse().unwrap());
        let first: Vec<bool> = [10_000, 10_100, 10_200, 10_300, 10_999]
            .map(|t| window.admit(ms(t)))
            .into();
        assert_eq!(first, [true, true, true, false, false]);
        // A new second starts afresh, however busy the end of the last one was.
        let next: Vec<bool> = [11_000, 11_001, 11_002, 11_003].map(|t| window.admit(ms(t))).into();
        assert_eq!(next, [true, true, true, false]);
    }

    #[test]
    fn the_busiest_second_is_found_across_a_whole_second_boundary() {
        let mut arrivals = Arrivals::default();
        // 3 late in second 10 and 3 early in second 11: 6 within 200 ms, though no whole second holds 6.
        for t in [10_000, 10_850, 10_900, 10_950, 11_000, 11_020, 11_040] {
            arrivals.record(ms(t));
        }
        assert_eq!(arrivals.max_in_any_second(), 6);
        assert_eq!(arrivals.first_second(), Some(10));
        assert_eq!(arrivals.per_second(), [4, 3]);
    }

    #[test]
    fn an_arrival_one_second_after_another_is_in_a_different_window() {
        let mut arrivals = Arrivals::default();
        for t in [0, 1_000, 2_000, 2_999] {
            arrivals.record(ms(t));
        }
        assert_eq!(arrivals.max_in_any_second(), 2);
    }

    #[test]
    fn quiet_seconds_count_zero_and_only_the_latest_seconds_are_kept() {
        let mut arrivals = Arrivals::default();
        assert_eq!(arrivals.first_second(), None);
        arrivals.record(ms(5_000));
        arrivals.record(ms(7_500));
        assert_eq!(arrivals.per_second(), [1, 0, 1]);

        let last = 5 + SECONDS_KEPT as u64 + 10;
        arrivals.record(Duration::from_secs(last));
        assert_eq!(arrivals.per_second().len(), SECONDS_KEPT);
        assert_eq!(arrivals.first_second(), Some(last + 1 - SECONDS_KEPT as u64));
        assert_eq!(arrivals.per_second().last(), Some(&1));
    }
}
