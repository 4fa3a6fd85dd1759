//! Replies from phones as they arrived (`inbound_messages`), each with the action it was given, newest
//! first a keyset page at a time. The action itself (the suppression list) is `OptOutList`'s.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    StoreError,
    backend::{Backend, Clocked},
    db,
    rows::{ReplyRow, reply},
};
use crate::domain::InboundAction;

/// A reply to keep.
#[derive(Debug, Clone)]
pub struct InboundReply<'a> {
    /// Normalised, as a message's `to` is.
    pub from: &'a str,
    pub content: &'a str,
    /// When the carrier says it was sent.
    pub at: DateTime<Utc>,
    pub action: InboundAction,
}

/// A reply as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    /// Time-ordered (UUIDv7): the list's order and its cursor.
    pub id: Uuid,
    pub from: String,
    pub content: String,
    pub at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// `opt_out`, `opt_in` or `other`.
    pub action: String,
}

/// The seam between the API and the replies.
#[async_trait]
pub trait InboundLog: Send + Sync + 'static {
    async fn record_inbound(&self, reply: &InboundReply<'_>) -> Result<StoredReply, StoreError>;

    /// Whether a reply from `from` sent after `at` opted the number out or back in: then a keyword
    /// sent at `at` (a provider's late retry, replies crossing) is older news and changes nothing.
    async fn decided_after(&self, from: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Up to `limit` replies, newest first, after (older than) `before` when given.
    async fn list_inbound(&self, limit: u32, before: Option<Uuid>) -> Result<Vec<StoredReply>, StoreError>;
}

/// The one inbound statement whose text is dialect: where the time a reply was received comes from.
pub(super) trait InboundSql: Backend {
    /// Keeps reply `$1` (its id) from `$2` with content `$3`, sent at `$4`, given action `$5` (and
    /// `Backend::clock`): the `ReplyRow` as kept.
    const RECORD_INBOUND: &'static str;
}

#[async_trait]
impl<B> InboundLog for B
where
    B: InboundSql,
    for<'q> Option<B::Id>: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> ReplyRow<B>: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
{
    async fn record_inbound(&self, kept: &InboundReply<'_>) -> Result<StoredReply, StoreError> {
        let row = sqlx::query_as(B::RECORD_INBOUND)
            .bind(B::stored_uuid(Uuid::now_v7()))
            .bind(kept.from)
            .bind(kept.content)
            .bind(B::stored_time(kept.at))
            .bind(kept.action.as_str())
            .clocked::<B>()
            .fetch_one(self.exec())
            .await
            .map_err(db("recording an inbound reply"))?;
        reply::<B>(row)
    }

    async fn decided_after(&self, from: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let (later,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (SELECT 1 FROM inbound_messages
              WHERE from_number = $1 AND at > $2 AND action IN ('opt_out', 'opt_in') LIMIT 1) AS later",
        )
        .bind(from)
        .bind(B::stored_time(at))
        .fetch_one(self.exec())
        .await
        .map_err(db("reading a number's later replies"))?;
        Ok(later > 0)
    }

    async fn list_inbound(&self, limit: u32, before: Option<Uuid>) -> Result<Vec<StoredReply>, StoreError> {
        // UUIDv7 sorts as its time, as a uuid and as text: the newest first by id.
        let rows: Vec<ReplyRow<B>> = sqlx::query_as(
            "SELECT id, from_number, content, at, received_at, action FROM inbound_messages
              WHERE $2 IS NULL OR id < $2 ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .bind(before.map(B::stored_uuid))
        .fetch_all(self.exec())
        .await
        .map_err(db("listing inbound replies"))?;
        rows.into_iter().map(reply::<B>).collect()
    }
}
