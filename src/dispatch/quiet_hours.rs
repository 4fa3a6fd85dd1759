//! Quiet hours: `low` messages (marketing) are held while it is inside `QUIET_HOURS` in the recipient's
//! local time, and put back, uncounted, due again when the window ends there. The zone is the message's
//! `timezone`, else its calling code's single zone (`domain::zone_of_number`), else `QUIET_HOURS_TZ`.
//! Decided after the claim, in Rust: a time zone's rules have no place in the claim statement, and a
//! held row costs one put-back per window, not one per tick (it is not due again before the window ends).

use std::{fmt, time::Duration};

use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::{Priority, zone_of_number};

/// A daily window of local time, `start` inclusive to `end` exclusive; past midnight when `end` comes
/// before `start` (21:00-08:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    /// `HH:MM-HH:MM`.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let invalid = || format!("expected a window of local time such as 21:00-08:00, got {raw:?}");
        let (start, end) = raw.trim().split_once('-').ok_or_else(invalid)?;
        let time = |text: &str| NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| invalid());
        let window = Self {
            start: time(start)?,
            end: time(end)?,
        };
        if window.start == window.end {
            return Err(format!("{raw:?} is an empty window: start and end must differ"));
        }
        Ok(window)
    }

    /// When the window that holds `now` in `zone` ends, as an instant; `None` when `now` is outside it.
    pub fn ends_after(&self, now: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&zone);
        let (date, time) = (local.date_naive(), local.time());
        let end_date = if self.start < self.end {
            (self.start <= time && time < self.end).then_some(date)?
        } else if time >= self.start {
            date.checked_add_days(Days::new(1))?
        } else if time < self.end {
            date
        } else {
            return None;
        };
        Some(instant(zone, end_date, self.end, now))
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start.format("%H:%M"), self.end.format("%H:%M"))
    }
}

/// `date` at `time` in `zone`, as the end of a window holding `now`. A time the clocks pass twice (the
/// autumn change) ends the window the first time, or the second once the first is gone (the window is
/// local time: its end comes round again); a time they skip (the spring change) ends it when they skip.
fn instant(zone: Tz, date: NaiveDate, time: NaiveTime, now: DateTime<Utc>) -> DateTime<Utc> {
    let local = date.and_time(time);
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, later) => {
            let earlier = earlier.with_timezone(&Utc);
            if earlier > now {
                earlier
            } else {
                later.with_timezone(&Utc)
            }
        }
        LocalResult::None => end_of_gap(zone, local),
    }
}

/// The first instant whose wall time in `zone` is at or past `local`, a time in a gap: the gap's end.
fn end_of_gap(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // Gaps last an hour or less nearly everywhere, never three; wall time only moves forward around
    // one, so the instants from three hours before it to three after can be halved down to the second.
    let as_utc = Utc.from_utc_datetime(&local);
    let Some(start) = zone
        .from_local_datetime(&(local - chrono::Duration::hours(3)))
        .earliest()
        .map(|at| at.timestamp())
    else {
        return as_utc;
    };
    let wall_at = |second: i64| DateTime::from_timestamp(second, 0).map(|at| at.with_timezone(&zone).naive_local());
    // In whole seconds: `before` is short of `local`, `after` at or past it.
    let (mut before, mut after) = (start, start + 6 * 3600);
    if wall_at(after).is_none_or(|wall| wall < local) {
        return as_utc;
    }
    while after - before > 1 {
        let middle = before + (after - before) / 2;
        if wall_at(middle).is_some_and(|wall| wall >= local) {
            after = middle;
        } else {
            before = middle;
        }
    }
    DateTime::from_timestamp(after, 0).unwrap_or(as_utc)
}

/// `QUIET_HOURS` with its fallback zone, as the fetcher applies it.
#[derive(Debug, Clone, Copy)]
pub struct QuietRules {
    pub window: QuietHours,
    /// `QUIET_HOURS_TZ`: for a number whose zone is unknown.
    pub default_zone: Tz,
}

impl QuietRules {
    /// How long a claimed message must wait, and why, when quiet hours hold it now; `None` when it may go.
    pub fn hold(
        &self,
        priority: Priority,
        to: &str,
        timezone: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<(Duration, String)> {
        if priority != Priority::Low {
            return None;
        }
        let zone = timezone
            .and_then(|name| name.parse::<Tz>().ok())
            .or_else(|| zone_of_number(to))
            .unwrap_or(self.default_zone);
        let until = self.window.ends_after(now, zone)?;
        let wait = (until - now).to_std().unwrap_or_default();
        Some((
            wait,
            format!(
                "held by quiet hours {} in {zone} until {}",
                self.window,
                until.to_rfc3339()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_window_past_midnight_holds_until_its_end_the_next_morning() {
        let quiet = QuietHours::parse("21:00-08:00").unwrap();
        // 22:30 in Istanbul (UTC+3).
        assert_eq!(
            quiet.ends_after(at("2026-12-02T19:30:00Z"), Tz::Europe__Istanbul),
            Some(at("2026-12-03T05:00:00Z"))
        );
        // 07:00 in Istanbul: the same night's window, ending at 08:00.
        assert_eq!(
            quiet.ends_after(at("2026-12-03T04:00:00Z"), Tz::Europe__Istanbul),
            Some(at("2026-12-03T05:00:00Z"))
        );
        // 19:30 in London is outside.
        assert_eq!(quiet.ends_after(at("2026-12-02T19:30:00Z"), Tz::Europe__London), None);
    }

    #[test]
    fn a_window_ending_in_the_hour_the_autumn_change_repeats_ends_each_time_it_comes() {
        // London, 25 October 2026: at 02:00 BST the clocks go back to 01:00 GMT; 01:30 comes twice.
        let quiet = QuietHours::parse("22:00-01:30").unwrap();
        // 01:10 BST: the window ends at the first 01:30.
        assert_eq!(
            quiet.ends_after(at("2026-10-25T00:10:00Z"), Tz::Europe__London),
            Some(at("2026-10-25T00:30:00Z"))
        );
        // 01:10 GMT, the hour again: the end ahead is the second 01:30, not the first, gone.
        assert_eq!(
            quiet.ends_after(at("2026-10-25T01:10:00Z"), Tz::Europe__London),
            Some(at("2026-10-25T01:30:00Z"))
        );
    }

    #[test]
    fn a_window_ending_in_the_hour_the_spring_change_skips_ends_when_the_clocks_jump() {
        // New York, 8 March 2026: at 02:00 EST the clocks jump to 03:00 EDT; 02:30 never comes.
        let quiet = QuietHours::parse("22:00-02:30").unwrap();
        assert_eq!(
            quiet.ends_after(at("2026-03-08T06:00:00Z"), Tz::America__New_York),
            Some(at("2026-03-08T07:00:00Z")),
            "03:00 EDT, the first instant past 02:30"
        );
    }

    #[test]
    fn a_window_within_a_day_and_bad_windows() {
        let quiet = QuietHours::parse(" 12:00 - 13:30 ").unwrap();
        assert_eq!(quiet.to_string(), "12:00-13:30");
        assert_eq!(
            quiet.ends_after(at("2026-12-02T12:10:00Z"), Tz::UTC),
            Some(at("2026-12-02T13:30:00Z"))
        );
        assert_eq!(
            quiet.ends_after(at("2026-12-02T13:30:00Z"), Tz::UTC),
            None,
            "end exclusive"
        );
        for bad in ["21:00", "25:00-08:00", "21:00-21:00", "9pm-8am"] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_low_messages_are_held_in_the_recipients_zone() {
        let rules = QuietRules {
            window: QuietHours::parse("21:00-08:00").unwrap(),
            default_zone: Tz::UTC,
        };
        let now = at("2026-12-02T19:30:00Z"); // 22:30 in Istanbul, 19:30 in London and UTC
        assert!(rules.hold(Priority::Low, "+905551111111", None, now).is_some());
        assert!(rules.hold(Priority::Normal, "+905551111111", None, now).is_none());
        assert!(rules.hold(Priority::Low, "+447911123456", None, now).is_none());
        assert!(
            rules
                .hold(Priority::Low, "+447911123456", Some("Asia/Tokyo"), now)
                .is_some(),
            "the message's own timezone wins (04:30 in Tokyo)"
        );
        let (wait, why) = rules.hold(Priority::Low, "+905551111111", None, now).unwrap();
        assert_eq!(wait, Duration::from_secs(9 * 3600 + 1800));
        assert!(why.contains("Europe/Istanbul"), "{why}");
    }
}
