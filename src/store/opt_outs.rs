//! The suppression list: numbers that opted out (`opt_outs`). A message to one is never sent: the claim
//! moves it to `suppressed` whether it was enqueued before or after the opt-out (`claim_due.sql`), so
//! this seam only keeps the list. Numbers are stored normalised, as a message's `to` is.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    StoreError,
    backend::Backend,
    db,
    rows::{OptOutRow, opt_out},
};
use crate::domain::PhoneNumber;

/// One number on the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    pub to: String,
    pub created_at: DateTime<Utc>,
}

/// The seam between the API and the suppression list.
#[async_trait]
pub trait OptOutList: Send + Sync + 'static {
    /// Puts `to` on the list; returns its entry, and whether it was new (`false`: it was already there,
    /// since the entry's time).
    async fn add_opt_out(&self, to: &PhoneNumber) -> Result<(OptOut, bool), StoreError>;

    /// Takes `to` off the list; whether it was on it. Messages it already suppressed stay so.
    async fn remove_opt_out(&self, to: &PhoneNumber) -> Result<bool, StoreError>;

    /// Up to `limit` numbers in ascending order, after `after` when given (a keyset page).
    async fn list_opt_outs(&self, limit: u32, after: Option<&str>) -> Result<Vec<OptOut>, StoreError>;
}

/// The one opt-out statement whose SQL is dialect: Postgres learns from the insert itself whether the
/// entry is new, SQLite reads the entry back in the insert's transaction.
#[async_trait]
pub(super) trait InsertOptOut: Backend {
    /// Puts `to` on the list unless it is there: its entry as stored, and whether it is new.
    async fn insert_opt_out(&self, to: &str) -> Result<(OptOutRow<Self>, bool), StoreError>;
}

#[async_trait]
impl<B> OptOutList for B
where
    B: InsertOptOut,
    for<'q> Option<&'q str>: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> OptOutRow<B>: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
{
    async fn add_opt_out(&self, to: &PhoneNumber) -> Result<(OptOut, bool), StoreError> {
        let (entry, new) = self.insert_opt_out(to.as_ref()).await?;
        Ok((opt_out::<B>(entry), new))
    }

    async fn remove_opt_out(&self, to: &PhoneNumber) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM opt_outs WHERE phone_number = $1")
            .bind(to.as_ref())
            .execute(self.exec())
            .await
            .map_err(db("removing an opt-out"))?;
        Ok(B::rows_affected(&done) == 1)
    }

    async fn list_opt_outs(&self, limit: u32, after: Option<&str>) -> Result<Vec<OptOut>, StoreError> {
        let rows: Vec<OptOutRow<B>> = sqlx::query_as(
            "SELECT phone_number, created_at FROM opt_outs
              WHERE $2 IS NULL OR phone_number > $2 ORDER BY phone_number LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(after)
        .fetch_all(self.exec())
        .await
        .map_err(db("listing opt-outs"))?;
        Ok(rows.into_iter().map(opt_out::<B>).collect())
    }
}
