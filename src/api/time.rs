//! The times a request body may name: a message's `send_at` and `expires_at`, and when a receipt or a
//! reply was reported (`at`).

use chrono::{DateTime, SubsecRound, Utc};

use super::error::ApiError;

/// In seconds since the epoch: 0001-01-02T00:00:00Z to 9999-12-31T00:00:00Z, what the store keeps
/// (`messages_times_in_range`: the years 1 to 9999, ends excluded) with a day's margin for the zone its
/// bounds were read in. Go's zero time, 0001-01-01T00:00:00Z, a client's way of saying "none", was a
/// 500 on Postgres as a send time; as a receipt's time it became a message's `delivered_at`.
const EARLIEST: i64 = -62_135_510_400;
const LATEST: i64 = 253_402_214_400;

const OUT_OF_RANGE: &str =
    "must be between 0001-01-02T00:00:00Z and 9999-12-31T00:00:00Z (omit it for none: Go's zero time is not one)";

/// `raw`, field `name`, as an RFC 3339 time within the range above, else a 400 naming the field.
pub fn parse_time(name: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = rfc3339(name, raw)?;
    if (EARLIEST..=LATEST).contains(&at.timestamp()) {
        Ok(at)
    } else {
        Err(ApiError::invalid(name, OUT_OF_RANGE))
    }
}

/// When something was reported, field `name`: an RFC 3339 time not before the range above (a 400
/// naming the field), and none later than now. A time ahead of our clock (a carrier's skew, a "max
/// date" such as 9999-12-31T23:59:59Z) counts as now: it would outrank every later report.
pub fn parse_report_time(name: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    Ok(parse_reported(name, raw)?.min(Utc::now()))
}

/// When something was reported, field `name`, as reported: an RFC 3339 time not before the range above
/// (a 400 naming the field), however far ahead: a provider's "max date" (9999-12-31T23:59:59Z) refused,
/// its report would be lost. The caller orders it by when it arrived.
pub fn parse_reported(name: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = rfc3339(name, raw)?;
    if at.timestamp() < EARLIEST {
        return Err(ApiError::invalid(name, OUT_OF_RANGE));
    }
    Ok(at)
}

/// To the microsecond, as the store keeps it: two times that differ below it are the same time (a send
/// window shorter than that would be stored empty).
fn rfc3339(name: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc).trunc_subsecs(6))
        .map_err(|e| {
            ApiError::invalid(
                name,
                format!("must be an RFC 3339 time, e.g. 2026-12-02T10:00:03Z: {e}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_what_the_store_keeps_are_refused() {
        assert!(parse_time("at", "2026-12-02T10:00:03+01:00").is_ok());
        assert!(parse_time("at", "0001-01-02T00:00:00Z").is_ok());
        assert!(parse_time("at", "9999-12-31T00:00:00Z").is_ok());
        for outside in [
            "0001-01-01T00:00:00Z",
            "0000-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
        ] {
            assert!(parse_time("at", outside).is_err(), "{outside}");
        }
        assert!(parse_time("at", "yesterday").is_err());
    }

    #[test]
    fn times_are_read_to_the_microsecond_the_store_keeps() {
        let at = parse_time("at", "2027-01-01T00:00:00.0000019Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2027-01-01T00:00:00.000001+00:00");
    }

    #[test]
    fn a_report_time_ahead_of_the_clock_counts_as_now_and_one_before_year_1_is_refused() {
        let before = Utc::now();
        for ahead in [
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-23:59",
            "2999-01-01T00:00:00Z",
        ] {
            let at = parse_report_time("at", ahead).unwrap();
            assert!(at >= before && at <= Utc::now(), "{ahead}: {at}");
        }
        let past = parse_report_time("at", "2026-12-02T10:00:03+01:00").unwrap();
        assert_eq!(past.to_rfc3339(), "2026-12-02T09:00:03+00:00");
        assert!(parse_report_time("at", "0001-01-01T00:00:00Z").is_err());
        assert!(parse_report_time("at", "soon").is_err());
    }
}
