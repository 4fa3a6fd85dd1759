//! The times a request body may name (`send_at`, `expires_at`, a receipt's or a reply's `at`).

use chrono::{DateTime, Utc};

use super::error::ApiError;

/// In seconds since the epoch: 0001-01-02T00:00:00Z to 9999-12-31T00:00:00Z, what the store keeps
/// (`messages_times_in_range`: the years 1 to 9999, ends excluded) with a day's margin for the zone its
/// bounds were read in. Go's zero time, 0001-01-01T00:00:00Z, a client's way of saying "none", was a
/// 500 on Postgres as a send time; as a receipt's time it became a message's `delivered_at`.
const EARLIEST: i64 = -62_135_510_400;
const LATEST: i64 = 253_402_214_400;

/// `raw`, field `name`, as an RFC 3339 time within the range above, else a 400 naming the field.
pub fn parse_time(name: &'static str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|e| {
            ApiError::invalid(
                name,
                format!("must be an RFC 3339 time, e.g. 2026-12-02T10:00:03Z: {e}"),
            )
        })?;
    if (EARLIEST..=LATEST).contains(&at.timestamp()) {
        Ok(at)
    } else {
        Err(ApiError::invalid(
            name,
            "must be between 0001-01-02T00:00:00Z and 9999-12-31T00:00:00Z (omit it for none: Go's zero time is not one)",
        ))
    }
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
}
