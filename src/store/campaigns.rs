//! Campaigns: the messages that share a `campaign` label, counted, paused, resumed and cancelled
//! together. A pause is a row of `paused_campaigns`, which every replica's claim reads (it skips the
//! campaign's rows, and goes on past them), so it holds across the cluster at once; a cancel pauses
//! the campaign, then cancels its pending rows a chunk at a time.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{
    StoreError,
    backend::{Backend, Clocked},
    db,
};
use crate::domain::MessageStatus;

/// One campaign as `GET /campaigns` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSummary {
    pub name: String,
    pub paused: bool,
    /// Its messages by status; statuses it has none in are left out.
    pub counts: BTreeMap<&'static str, u64>,
}

/// The seam between the API and the campaigns.
#[async_trait]
pub trait Campaigns: Send + Sync + 'static {
    /// Every campaign with messages, and every paused one, by name.
    async fn list_campaigns(&self) -> Result<Vec<CampaignSummary>, StoreError>;

    /// Stops claiming the campaign's messages on every replica; whether it was running.
    async fn pause_campaign(&self, name: &str) -> Result<bool, StoreError>;

    /// Claims its messages again, each in its place; whether it was paused.
    async fn resume_campaign(&self, name: &str) -> Result<bool, StoreError>;

    /// Pauses the campaign, then `pending` → `cancelled` for every pending message of it, a chunk at a
    /// time, each committed; how many. A message being sent meanwhile (`sending`) goes on; should it come back
    /// pending (a retry, a put-back), the pause holds it: it is not sent.
    async fn cancel_campaign(&self, name: &str) -> Result<u64, StoreError>;
}

/// How many of a campaign's pending messages one statement of a cancel takes.
const CANCEL_CHUNK: i64 = 10_000;

/// One campaign's count in one status: name, paused, status, count (a paused campaign with no messages
/// has a `None` status and a count of 0).
type SummaryRow = (String, bool, Option<String>, i64);

/// The campaign statements whose text is dialect; the other one runs on both as it is.
pub(super) trait CampaignSql: Backend {
    /// `SummaryRow`s of every campaign with messages and every paused one, by name then status.
    const LIST_CAMPAIGNS: &'static str;
    /// Pauses campaign `$1` unless it is paused (and `Backend::clock`).
    const PAUSE_CAMPAIGN: &'static str;
    /// `pending` → `cancelled` for up to `CANCEL_CHUNK` pending messages of campaign `$1` (then
    /// `Backend::clock` when the backend binds one, then the chunk's size).
    const CANCEL_CAMPAIGN: &'static str;
}

#[async_trait]
impl<B> Campaigns for B
where
    B: CampaignSql,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> SummaryRow: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
{
    async fn list_campaigns(&self) -> Result<Vec<CampaignSummary>, StoreError> {
        let rows = sqlx::query_as(B::LIST_CAMPAIGNS)
            .fetch_all(self.exec())
            .await
            .map_err(db("listing campaigns"))?;
        summaries(rows)
    }

    async fn pause_campaign(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(B::PAUSE_CAMPAIGN)
            .bind(name)
            .clocked::<B>()
            .execute(self.exec())
            .await
            .map_err(db("pausing a campaign"))?;
        Ok(B::rows_affected(&done) == 1)
    }

    async fn resume_campaign(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM paused_campaigns WHERE campaign = $1")
            .bind(name)
            .execute(self.exec())
            .await
            .map_err(db("resuming a campaign"))?;
        Ok(B::rows_affected(&done) == 1)
    }

    async fn cancel_campaign(&self, name: &str) -> Result<u64, StoreError> {
        // The pause first: should the cancel fail, the campaign is held, which a retry of it completes.
        self.pause_campaign(name).await?;
        // A chunk at a time, each committed: a million rows in one statement pass the statement timeout
        // (or hold SQLite's writer for as long), and every retry would fail the same way.
        let mut cancelled = 0;
        loop {
            let done = sqlx::query(B::CANCEL_CAMPAIGN)
                .bind(name)
                .clocked::<B>()
                .bind(CANCEL_CHUNK)
                .execute(self.exec())
                .await
                .map_err(db("cancelling a campaign"))?;
            let chunk = B::rows_affected(&done);
            cancelled += chunk;
            if chunk < CANCEL_CHUNK as u64 {
                return Ok(cancelled);
            }
        }
    }
}

/// The summaries from `SummaryRow`s, ordered by name.
fn summaries(rows: Vec<SummaryRow>) -> Result<Vec<CampaignSummary>, StoreError> {
    let mut by_name: BTreeMap<String, CampaignSummary> = BTreeMap::new();
    for (name, paused, status, count) in rows {
        let summary = by_name.entry(name.clone()).or_insert_with(|| CampaignSummary {
            name,
            paused,
            counts: BTreeMap::new(),
        });
        if let Some(status) = status {
            let status: MessageStatus =
                status
                    .parse()
                    .map_err(|e: crate::domain::UnknownStatus| StoreError::CorruptRow {
                        id: uuid::Uuid::nil(),
                        problem: e.to_string(),
                    })?;
            summary
                .counts
                .insert(status.as_str(), u64::try_from(count).unwrap_or(0));
        }
    }
    Ok(by_name.into_values().collect())
}
