//! The lists of messages by status: the one table of which time each status is ordered by (`SortKey`),
//! the key a page's cursor carries (`list_key`), and the statements that read a page.
//!
//! The statements are `list/first_page.sql` and `list/next_page.sql`, the same for both backends. They
//! name the status and its sort column in braces, filled in from `SortKey` once per status at first use:
//! each status then has a static statement of its own, planned against its own partial index.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};

use crate::domain::{Message, MessageStatus};

const FIRST_PAGE: &str = include_str!("list/first_page.sql");
const NEXT_PAGE: &str = include_str!("list/next_page.sql");

/// The time (the `_at` column) a list of messages is ordered by, newest first, and so its cursor's `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Created,
    Updated,
    Sent,
}

impl SortKey {
    /// The send time for sent messages, when they ended for failed, cancelled, expired and suppressed ones, when they were
    /// enqueued otherwise.
    fn of(status: MessageStatus) -> Self {
        match status {
            MessageStatus::Sent => Self::Sent,
            MessageStatus::Failed | MessageStatus::Cancelled | MessageStatus::Expired | MessageStatus::Suppressed => {
                Self::Updated
            }
            MessageStatus::Pending | MessageStatus::Sending => Self::Created,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::Created => "created_at",
            Self::Updated => "updated_at",
            Self::Sent => "sent_at",
        }
    }

    fn of_message(self, message: &Message) -> Option<DateTime<Utc>> {
        match self {
            Self::Created => Some(message.created_at),
            Self::Updated => Some(message.updated_at),
            Self::Sent => message.sent_at,
        }
    }
}

/// The time a list of messages in `message`'s status is ordered by (newest first), and so its cursor's
/// `at`; `None` only for a sent message without a send time, which the table's constraints rule out.
pub fn list_key(message: &Message) -> Option<DateTime<Utc>> {
    SortKey::of(message.status).of_message(message)
}

/// The statements that list one status.
struct ListStatements {
    /// `$1`: the page's size.
    first_page: String,
    /// `$1`: the page's size; `$2`, `$3`: the cursor's time and id.
    next_page: String,
}

impl ListStatements {
    fn of(status: MessageStatus) -> Self {
        let fill = |statement: &str| {
            statement
                .replace("{status}", status.as_str())
                .replace("{sort_column}", SortKey::of(status).column())
        };
        Self {
            first_page: fill(FIRST_PAGE),
            next_page: fill(NEXT_PAGE),
        }
    }
}

/// The statements listing `status`, filled in at its first list.
fn statements(status: MessageStatus) -> &'static ListStatements {
    static PENDING: OnceLock<ListStatements> = OnceLock::new();
    static SENDING: OnceLock<ListStatements> = OnceLock::new();
    static SENT: OnceLock<ListStatements> = OnceLock::new();
    static FAILED: OnceLock<ListStatements> = OnceLock::new();
    static CANCELLED: OnceLock<ListStatements> = OnceLock::new();
    static EXPIRED: OnceLock<ListStatements> = OnceLock::new();
    static SUPPRESSED: OnceLock<ListStatements> = OnceLock::new();
    let filled = match status {
        MessageStatus::Pending => &PENDING,
        MessageStatus::Sending => &SENDING,
        MessageStatus::Sent => &SENT,
        MessageStatus::Failed => &FAILED,
        MessageStatus::Cancelled => &CANCELLED,
        MessageStatus::Expired => &EXPIRED,
        MessageStatus::Suppressed => &SUPPRESSED,
    };
    filled.get_or_init(|| ListStatements::of(status))
}

/// The query for a page of `status`, newest first: the first page, or the one after `cursor` (its time
/// and id, as the backend stores them).
pub(super) fn page<'q, DB, Row, At, Id>(
    status: MessageStatus,
    limit: u32,
    cursor: Option<(At, Id)>,
) -> sqlx::query::QueryAs<'q, DB, Row, DB::Arguments>
where
    DB: sqlx::Database,
    Row: for<'r> sqlx::FromRow<'r, DB::Row>,
    i64: 'q + sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    At: 'q + sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Id: 'q + sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let statements = statements(status);
    match cursor {
        None => sqlx::query_as(statements.first_page.as_str()).bind(i64::from(limit)),
        Some((at, id)) => sqlx::query_as(statements.next_page.as_str())
            .bind(i64::from(limit))
            .bind(at)
            .bind(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_gets_statements_naming_it_and_its_sort_column() {
        use MessageStatus::*;
        for status in [Pending, Sending, Sent, Failed, Cancelled, Expired, Suppressed] {
            let column = SortKey::of(status).column();
            for statement in [&statements(status).first_page, &statements(status).next_page] {
                assert!(!statement.contains('{'), "a placeholder is left in {statement}");
                assert!(
                    statement.contains(&format!("status = '{}'", status.as_str())),
                    "{statement}"
                );
                assert!(
                    statement.contains(&format!("ORDER BY {column} DESC, id DESC")),
                    "{statement}"
                );
            }
        }
    }
}
