//! What the code both backends share asks of each one: its sqlx driver and pool, and how it stores the
//! values whose types differ (`Columns`), spans of time and the clock included. With it, a statement
//! whose values bind alike is written once, generic over the backend: its text too where both databases
//! run it as it is (`$n` is a parameter to SQLite too), else each backend's text beside it. A backend
//! then keeps only what is dialect: its statements' text, and the few whose shape differs.

use std::time::Duration;

use sqlx::{
    Database,
    query::{Query, QueryAs},
};

use chrono::{DateTime, Utc};

use super::{PruneBatch, StoreError, db, rows::Columns, status_events::EventOutbox};

/// One database the store runs on: Postgres or SQLite. Its types bind as parameters of its statements.
pub(super) trait Backend: Columns + Send + Sync + 'static
where
    for<'q> Self::Span: sqlx::Encode<'q, Self::DB> + sqlx::Type<Self::DB>,
    for<'q> Self::Ints: sqlx::Encode<'q, Self::DB> + sqlx::Type<Self::DB>,
    for<'q> Self::Texts: sqlx::Encode<'q, Self::DB> + sqlx::Type<Self::DB>,
{
    /// The pool as sqlx runs a statement on it, or begins a transaction.
    type Exec<'p>: sqlx::Executor<'p, Database = Self::DB> + sqlx::Acquire<'static, Database = Self::DB>
    where
        Self: 'p;

    /// A transaction's connection as sqlx runs a statement on it.
    type Conn<'c>: sqlx::Executor<'c, Database = Self::DB>;

    /// A span of time as this backend's statements take it.
    type Span: Send + 'static;

    /// A list of numbers or of texts bound as one parameter: an array on Postgres (`= ANY($n)`), a JSON
    /// array on SQLite, which binds no arrays (`IN (SELECT value FROM json_each($n))`).
    type Ints: Send + 'static;
    type Texts: Send + 'static;

    fn exec(&self) -> Self::Exec<'_>;

    fn conn<'c>(tx: &'c mut sqlx::Transaction<'static, Self::DB>) -> Self::Conn<'c>;

    fn span(duration: Duration) -> Self::Span;

    fn ints(items: &[i64]) -> Self::Ints;

    fn texts<T: AsRef<str>>(items: &[T]) -> Self::Texts;

    /// How many rows a statement changed: sqlx asks each driver's own result.
    fn rows_affected(done: &<Self::DB as Database>::QueryResult) -> u64;

    /// Whether a change a sender hears about writes a status event beside it
    /// (`Database::write_status_events`), and where the events go once written.
    fn outbox(&self) -> &EventOutbox;

    /// The time a statement stamps rows with, where the backend passes it in: `None` where the statement
    /// reads the database's own clock (`now()` on Postgres: one clock for every replica). SQLite runs on
    /// one machine and takes this process's clock, as each statement's last parameter.
    fn clock() -> Option<Self::Time>;
}

/// A statement that can take `Backend::clock` as its last parameter.
pub(super) trait Clocked<DB: Database>: Sized {
    fn bind_time<T>(self, time: T) -> Self
    where
        T: 'static + for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>;

    /// Binds `B`'s clock, on the backends that take it.
    fn clocked<B: Backend<DB = DB>>(self) -> Self {
        match B::clock() {
            Some(now) => self.bind_time(now),
            None => self,
        }
    }
}

impl<DB: Database> Clocked<DB> for Query<'_, DB, <DB as Database>::Arguments> {
    fn bind_time<T>(self, time: T) -> Self
    where
        T: 'static + for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        self.bind(time)
    }
}

impl<DB: Database, O> Clocked<DB> for QueryAs<'_, DB, O, <DB as Database>::Arguments> {
    fn bind_time<T>(self, time: T) -> Self
    where
        T: 'static + for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        self.bind(time)
    }
}

/// One batch of a prune that walks its table in `seq` order (`PruneBatch`): `window` counts and ends the
/// `$2` rows past `$1` it looks at, `delete` deletes those of them older than `$1` (`$2`, `$3` the batch's
/// bounds); `what` names the rows in errors.
pub(super) async fn prune_batch<B: Backend>(
    store: &B,
    (window, delete, what): (&'static str, &'static str, &'static str),
    before: DateTime<Utc>,
    after: i64,
    limit: u32,
) -> Result<PruneBatch, StoreError>
where
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> (i64, Option<i64>): sqlx::FromRow<'r, <B::DB as Database>::Row>,
{
    let (looked_at, last): (i64, Option<i64>) = sqlx::query_as(window)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_one(store.exec())
        .await
        .map_err(db(what))?;
    let Some(last) = last else {
        return Ok(PruneBatch::of(0, 0, limit, None));
    };
    let done = sqlx::query(delete)
        .bind(B::stored_time(before))
        .bind(after)
        .bind(last)
        .execute(store.exec())
        .await
        .map_err(db(what))?;
    Ok(PruneBatch::of(B::rows_affected(&done), looked_at, limit, Some(last)))
}
