//! Delivery receipts beside the messages: stored the moment they arrive, then settled once against the
//! message they name.
//!
//! ```text
//!             insert_receipts             settle_receipts
//!  POST ───────────────────────▶ pending ─────────────────▶ applied    the message's delivery state moved
//!                                   │                       ignored    matched, changed nothing (a duplicate,
//!                                   │                                  an older report, or after a final state)
//!                                   │                       ambiguous  its id names several messages
//!                                   └─ (RECEIPT_MATCH_WINDOW) ▶ unmatched
//! ```
//!
//! A message's delivery state moves only forward: an intermediate report (`accepted`, `buffered`) applies
//! while the state is not final and the report is not older than the one in force; a final one
//! (`delivered`, `undelivered`) applies while the state is not final. Both need the message `sent` under
//! the receipt's provider id, and that id naming no other message: a receipt is never applied to the wrong
//! message, whatever a stale cache said. A receipt settled against a message not sent under its id stays
//! pending (`ReceiptOutcome::Pending`), for the applier to match in the database. Settling is fenced on `outcome = 'pending'`, so two replicas
//! settling one receipt apply it once.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Acquire;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    PruneBatch, StoreError,
    backend::Clocked,
    db,
    rows::{self, Columns, ReceiptRow, receipt_columns},
    status_events::{self, EventWriter},
};
use crate::domain::{Receipt, ReceiptStatus};

/// What became of a stored receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptOutcome {
    /// Waiting for its message to be recorded sent.
    Pending,
    /// Moved its message's delivery state.
    Applied,
    /// Matched its message but changed nothing: a duplicate, an older report, or after a final state.
    Ignored,
    /// Its provider id names several messages: applied to none.
    Ambiguous,
    /// Matched no sent message within `RECEIPT_MATCH_WINDOW`.
    Unmatched,
}

impl ReceiptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Ignored => "ignored",
            Self::Ambiguous => "ambiguous",
            Self::Unmatched => "unmatched",
        }
    }

    pub(super) fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "pending" => Self::Pending,
            "applied" => Self::Applied,
            "ignored" => Self::Ignored,
            "ambiguous" => Self::Ambiguous,
            "unmatched" => Self::Unmatched,
            _ => return None,
        })
    }
}

/// A receipt as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReceipt {
    /// The order receipts arrived in, across replicas.
    pub seq: i64,
    pub provider_message_id: String,
    pub status: ReceiptStatus,
    pub reported_at: DateTime<Utc>,
    pub error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub outcome: ReceiptOutcome,
    /// The message it matched, once applied or ignored.
    pub message_id: Option<Uuid>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// Which pending receipts to read, oldest first.
#[derive(Debug, Clone, Copy)]
pub enum PendingReceipts<'a> {
    /// These, as just stored.
    Seqs(&'a [i64]),
    /// Those naming these provider ids (their messages were just recorded sent).
    ProviderIds(&'a [String]),
    /// Every pending one after `after`, `limit` at most: the sweep.
    After { after: Option<i64>, limit: u32 },
}

/// How to settle one pending receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Apply it to this message, the one its provider id names: `applied`, `ignored`, or `ambiguous` when
    /// the id names another message too.
    Apply { seq: i64, message_id: Uuid },
    /// Its provider id names several sent messages.
    Ambiguous { seq: i64 },
    /// It matched nothing within `RECEIPT_MATCH_WINDOW`.
    Unmatched { seq: i64 },
}

impl Settlement {
    pub fn seq(&self) -> i64 {
        match *self {
            Self::Apply { seq, .. } | Self::Ambiguous { seq } | Self::Unmatched { seq } => seq,
        }
    }
}

/// Which stored receipts a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptFilter {
    All,
    /// `applied` or `ignored`.
    Matched,
    /// `ambiguous` or `unmatched`: applied to no message.
    NotMatched,
}

/// Final delivery states reported since some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub delivered: u64,
    pub undelivered: u64,
}

/// The seam between the receipts and their messages.
#[async_trait]
pub trait ReceiptStore: Send + Sync + 'static {
    /// Stores receipts as `pending`, in the order given, in one statement; returns their `seq`s.
    async fn insert_receipts(&self, receipts: &[Receipt]) -> Result<Vec<i64>, StoreError>;

    /// Pending receipts, oldest first.
    async fn pending_receipts(&self, which: PendingReceipts<'_>) -> Result<Vec<StoredReceipt>, StoreError>;

    /// The `sent` messages each of these provider ids names: `(provider id, message id)` pairs.
    async fn messages_by_provider_id(&self, provider_ids: &[String]) -> Result<Vec<(String, Uuid)>, StoreError>;

    /// Settles receipts in the order given, in one transaction, each only while still `pending`. Returns
    /// what each came to, `None` where another settler was first, or is settling it now (never waited
    /// for: if it fails, the receipt is still pending for the next sweep).
    async fn settle_receipts(&self, settlements: &[Settlement]) -> Result<Vec<Option<ReceiptOutcome>>, StoreError>;

    /// Stored receipts, newest first, before `before` (a `seq`) when given.
    async fn list_receipts(
        &self,
        filter: ReceiptFilter,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredReceipt>, StoreError>;

    /// Messages whose final delivery state was reported since `since`.
    async fn delivery_counts_since(&self, since: DateTime<Utc>) -> Result<DeliveryCounts, StoreError>;

    /// Looks at up to `limit` settled receipts past `seq` `after` and deletes those settled before
    /// `before`; pending ones stay. One batch of a prune's walk through the table.
    async fn delete_settled_receipts_before(
        &self,
        before: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<PruneBatch, StoreError>;
}

/// The stored outcomes a filter shows.
fn outcomes_of(filter: ReceiptFilter) -> Vec<&'static str> {
    let outcomes: &[ReceiptOutcome] = match filter {
        ReceiptFilter::All => &[
            ReceiptOutcome::Pending,
            ReceiptOutcome::Applied,
            ReceiptOutcome::Ignored,
            ReceiptOutcome::Ambiguous,
            ReceiptOutcome::Unmatched,
        ],
        ReceiptFilter::Matched => &[ReceiptOutcome::Applied, ReceiptOutcome::Ignored],
        ReceiptFilter::NotMatched => &[ReceiptOutcome::Ambiguous, ReceiptOutcome::Unmatched],
    };
    outcomes.iter().map(|outcome| outcome.as_str()).collect()
}

/// A message's delivery state as a receipt left it: status, time, carrier error and provider id.
pub(super) type Delivery = (Option<String>, Option<DateTime<Utc>>, Option<String>, Option<String>);

/// A message's delivery state as `C` stores it (`DELIVERY_OF`).
pub(super) type DeliveryRow<C> = (
    Option<String>,
    Option<<C as Columns>::Time>,
    Option<String>,
    Option<String>,
);

/// The receipt statements whose text is dialect (a list is an array on Postgres, JSON on SQLite), and
/// the two whose shape is: storing new receipts, and applying one.
#[async_trait]
pub(super) trait ReceiptSql: EventWriter {
    /// The pending `ReceiptRow`s whose `seq` is in list `$1`, oldest first.
    const PENDING_BY_SEQS: &'static str;
    /// The pending `ReceiptRow`s naming a provider id in list `$1`, oldest first.
    const PENDING_BY_PROVIDER_IDS: &'static str;
    /// `(provider id, message id)` of the `sent` messages naming a provider id in list `$1`.
    const MESSAGES_BY_PROVIDER_ID: &'static str;
    /// The `ReceiptRow`s whose outcome is in list `$1`, before `$2` (a `seq`), newest first, `$3` at most.
    const LIST_RECEIPTS: &'static str;
    /// Settles pending receipt `$1` as outcome `$2` without applying it (and `Backend::clock`): the
    /// outcome, no row when another settler was first or is settling it now.
    const SETTLE_UNAPPLIED: &'static str;

    /// Stores receipts as `pending` in the order given: their `seq`s.
    async fn store_receipts(&self, receipts: &[Receipt]) -> Result<Vec<i64>, StoreError>;

    /// Applies pending receipts to the messages their provider ids name (`(seq, message id)`, in the order
    /// given) and settles them, in the settle's transaction: what each that was still pending came to
    /// (one another settler was first to is left out), with the message's delivery state as it left it
    /// when applied and `with_delivery`.
    async fn apply_receipts(
        tx: &mut sqlx::Transaction<'static, Self::DB>,
        applies: &[(i64, Uuid)],
        with_delivery: bool,
    ) -> Result<Vec<AppliedReceipt>, StoreError>;
}

/// A receipt `ReceiptSql::apply_receipts` settled.
pub(super) struct AppliedReceipt {
    pub seq: i64,
    /// `applied`, `ignored` or `ambiguous`.
    pub outcome: String,
    /// The message's delivery state as this receipt left it, when applied (and asked for).
    pub delivery: Option<Delivery>,
}

/// Since `$1`: delivered, undelivered.
const DELIVERY_COUNTS: &str = include_str!("receipts/delivery_counts.sql");
/// Message `$1`: its `DeliveryRow`.
pub(super) const DELIVERY_OF: &str = include_str!("receipts/delivery_of.sql");

/// The count and the last `seq` of the (up to) `$2` settled receipts past `seq` `$1`, in `seq` order: a
/// prune's batch. Both backends run it as it is.
const SETTLED_RECEIPTS_PAST: &str = "
    SELECT count(*), max(seq) FROM (SELECT seq FROM receipts WHERE outcome <> 'pending' AND seq > $1
                                     ORDER BY seq LIMIT $2) AS batch";
/// Deletes the settled receipts with `seq` in (`$2`, `$3`] settled before `$1`.
const DELETE_SETTLED_RECEIPTS: &str = "
    DELETE FROM receipts WHERE outcome <> 'pending' AND seq > $2 AND seq <= $3 AND settled_at < $1";

#[async_trait]
impl<B> ReceiptStore for B
where
    B: ReceiptSql,
    B::DB: sqlx::database::HasStatementCache,
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> ReceiptRow<B>: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (String, B::Id): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (i64, i64): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (i64, Option<i64>): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (String,): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
{
    async fn insert_receipts(&self, receipts: &[Receipt]) -> Result<Vec<i64>, StoreError> {
        self.store_receipts(receipts).await
    }

    async fn pending_receipts(&self, which: PendingReceipts<'_>) -> Result<Vec<StoredReceipt>, StoreError> {
        let query = match which {
            PendingReceipts::Seqs(seqs) => sqlx::query_as(B::PENDING_BY_SEQS).bind(B::ints(seqs)),
            PendingReceipts::ProviderIds(ids) => sqlx::query_as(B::PENDING_BY_PROVIDER_IDS).bind(B::texts(ids)),
            PendingReceipts::After { after, limit } => sqlx::query_as(concat!(
                "SELECT ",
                receipt_columns!(),
                " FROM receipts WHERE outcome = 'pending' AND seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after.unwrap_or(0))
            .bind(i64::from(limit)),
        };
        // Unnamed, planned at each run as the settle is (see `apply_receipts` in postgres.rs): on Postgres,
        // a plan kept from when the table was small read every pending receipt to find a batch of them.
        let rows: Vec<ReceiptRow<B>> = query
            .persistent(false)
            .fetch_all(self.exec())
            .await
            .map_err(db("reading pending receipts"))?;
        rows.into_iter().map(StoredReceipt::try_from).collect()
    }

    async fn messages_by_provider_id(&self, provider_ids: &[String]) -> Result<Vec<(String, Uuid)>, StoreError> {
        let rows: Vec<(String, B::Id)> = sqlx::query_as(B::MESSAGES_BY_PROVIDER_ID)
            .persistent(false)
            .bind(B::texts(provider_ids))
            .fetch_all(self.exec())
            .await
            .map_err(db("matching receipts to messages"))?;
        rows.into_iter()
            .map(|(provider_id, id)| Ok((provider_id, rows::message_id::<B>(&id)?)))
            .collect()
    }

    async fn settle_receipts(&self, settlements: &[Settlement]) -> Result<Vec<Option<ReceiptOutcome>>, StoreError> {
        // One transaction for the batch, with the events the receipts' final states report beside them
        // while events are on: both commit, or neither. The receipts applied go first, together (one
        // statement on Postgres); those applied to no message touch no message, so they may go after.
        let with_events = self.outbox().writes();
        let mut tx = self.exec().begin().await.map_err(db("settling receipts"))?;
        let applies: Vec<(i64, Uuid)> = settlements
            .iter()
            .filter_map(|settlement| match *settlement {
                Settlement::Apply { seq, message_id } => Some((seq, message_id)),
                _ => None,
            })
            .collect();
        let message_of: HashMap<i64, Uuid> = applies.iter().copied().collect();
        let mut outcomes: HashMap<i64, ReceiptOutcome> = HashMap::with_capacity(settlements.len());
        let mut events = Vec::new();
        let now = Utc::now();
        if !applies.is_empty() {
            for applied in B::apply_receipts(&mut tx, &applies, with_events).await? {
                let Some(outcome) = ReceiptOutcome::parse(&applied.outcome) else {
                    continue;
                };
                if with_events
                    && outcome == ReceiptOutcome::Applied
                    && let (Some(delivery), Some(message_id)) = (applied.delivery, message_of.get(&applied.seq))
                {
                    events.extend(status_events::event_of_delivery(*message_id, delivery, now));
                }
                outcomes.insert(applied.seq, outcome);
            }
        }
        for settlement in settlements {
            let (seq, outcome) = match *settlement {
                Settlement::Apply { .. } => continue,
                Settlement::Ambiguous { seq } => (seq, ReceiptOutcome::Ambiguous),
                Settlement::Unmatched { seq } => (seq, ReceiptOutcome::Unmatched),
            };
            let settled: Option<(String,)> = sqlx::query_as(B::SETTLE_UNAPPLIED)
                .bind(seq)
                .bind(outcome.as_str())
                .clocked::<B>()
                .fetch_optional(B::conn(&mut tx))
                .await
                .map_err(db("settling a receipt"))?;
            if let Some(outcome) = settled.and_then(|(outcome,)| ReceiptOutcome::parse(&outcome)) {
                outcomes.insert(seq, outcome);
            }
        }
        let handoff = status_events::write_events::<B>(&mut tx, &events, self.outbox()).await?;
        tx.commit().await.map_err(db("settling receipts"))?;
        handoff.hand();
        Ok(settlements
            .iter()
            .map(|settlement| outcomes.get(&settlement.seq()).copied())
            .collect())
    }

    async fn list_receipts(
        &self,
        filter: ReceiptFilter,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        let rows: Vec<ReceiptRow<B>> = sqlx::query_as(B::LIST_RECEIPTS)
            .bind(B::texts(&outcomes_of(filter)))
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(self.exec())
            .await
            .map_err(db("listing receipts"))?;
        rows.into_iter().map(StoredReceipt::try_from).collect()
    }

    async fn delivery_counts_since(&self, since: DateTime<Utc>) -> Result<DeliveryCounts, StoreError> {
        let counts: (i64, i64) = sqlx::query_as(DELIVERY_COUNTS)
            .bind(B::stored_time(since))
            .fetch_one(self.exec())
            .await
            .map_err(db("counting deliveries"))?;
        Ok(rows::delivery_counts(counts))
    }

    async fn delete_settled_receipts_before(
        &self,
        before: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<PruneBatch, StoreError> {
        let statements = (
            SETTLED_RECEIPTS_PAST,
            DELETE_SETTLED_RECEIPTS,
            "pruning old settled receipts",
        );
        super::backend::prune_batch(self, statements, before, after, limit).await
    }
}
