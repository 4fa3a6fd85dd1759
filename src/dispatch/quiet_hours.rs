//! Quiet hours: `low` messages (marketing) are held while it is inside `QUIET_HOURS` in the recipient's
//! local time, and put back, uncounted, due again when the window ends there. The zone is the message's
//! `timezone`, else its calling code's single zone (`domain::zone_of_number`), else `QUIET_HOURS_TZ`.
//! Decided after the claim, in Rust: a time zone's rules have no place in the claim statement, and a
//! held row costs one put-back per window, not one per tick (it is not due again before the window ends).

use std::{fmt, time::Duration};

use chrono::{DateTime, Days, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
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
        Some(instant(zone, end_date, self.end))
    }
}

impl fmt::Display for QuietHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start.format("%H:%M"), self.end.format("%H:%M"))
    }
}

/// `date` at `time` in `zone`; across a daylight-saving gap, the first instant after it.
fn instant(zone: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let local = date.and_time(time);
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => at.with_timezone(&Utc),
        LocalResult::None => Utc.from_utc_datetime(&(local - zone_offset_guess(zone, local))),
    }
}

/// The zone's offset an hour before a skipped local time: read as that, the skipped time lands just
/// after the gap.
fn zone_offset_guess(zone: Tz, local: chrono::NaiveDateTime) -> chrono::Duration {
    use chrono::Offset;
    let before = local - chrono::Duration::hours(1);
    zone.offset_from_local_datetime(&before)
        .earliest()
        .map_or(chrono::Duration::zero(), |offset| {
            chrono::Duration::seconds(i64::from(offset.fix().local_minus_utc()))
        })
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
