//! A page of a keyset list: the `limit` every list takes, the `seq` cursor of the lists ordered by it, and
//! the page cut from one row more than asked for (that row only says whether there is a next page).

use crate::api::error::ApiError;

/// `limit`: `default` when absent, else a whole number from 1 to `max`.
pub fn limit(raw: Option<&str>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|limit| (1..=max).contains(limit))
        .ok_or_else(|| ApiError::invalid("limit", format!("must be a whole number from 1 to {max}")))
}

/// A `seq` cursor, the `next_cursor` of a previous page; absent or blank, the first page.
pub fn seq_cursor(raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq > 0)
            .map(Some)
            .ok_or_else(|| ApiError::invalid("cursor", "must be the next_cursor of a previous page")),
    }
}

/// `rows` fetched with `limit + 1`: the first `limit`, and the cursor of the last when there were more.
pub fn cut<T, C>(mut rows: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> C) -> (Vec<T>, Option<C>) {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().filter(|_| has_more).map(cursor_of);
    (rows, next_cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(error: ApiError) -> std::borrow::Cow<'static, str> {
        match error {
            ApiError::InvalidField { field, .. } => field,
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn a_limit_is_its_default_when_absent_and_refused_outside_its_bounds() {
        assert_eq!(limit(None, 20, 100).unwrap(), 20);
        assert_eq!(limit(Some(" 100 "), 20, 100).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            let error = limit(Some(bad), 20, 100).unwrap_err();
            assert_eq!(
                error.to_string(),
                "limit: must be a whole number from 1 to 100",
                "{bad:?}"
            );
            assert_eq!(field_of(error), "limit");
        }
    }

    #[test]
    fn a_seq_cursor_is_a_positive_number_and_blank_is_the_first_page() {
        assert_eq!(seq_cursor(None).unwrap(), None);
        assert_eq!(seq_cursor(Some("  ")).unwrap(), None);
        assert_eq!(seq_cursor(Some("42")).unwrap(), Some(42));
        for bad in ["0", "-3", "4x", "99999999999999999999"] {
            assert_eq!(field_of(seq_cursor(Some(bad)).unwrap_err()), "cursor", "{bad:?}");
        }
    }

    #[test]
    fn a_page_has_a_cursor_only_when_the_extra_row_came() {
        let (rows, next) = cut(vec![5, 4, 3], 2, |row| row.to_string());
        assert_eq!((rows, next), (vec![5, 4], Some("4".to_owned())));
        let (rows, next) = cut(vec![5, 4], 2, |row| row.to_string());
        assert_eq!((rows, next), (vec![5, 4], None));
        let (rows, next) = cut(Vec::<i64>::new(), 2, |row| row.to_string());
        assert_eq!((rows, next), (vec![], None));
    }
}
