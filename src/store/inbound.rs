//! Replies from phones as they arrived (`inbound_messages`), each with the action it was given, newest
//! first a keyset page at a time, and the action itself: a keyword reply puts its number on the
//! suppression list (`opt_outs`, `OptOutList`'s) or takes it off, in the reply's transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Acquire;
use uuid::Uuid;

use super::{
    StoreError,
    backend::{Backend, Clocked},
    db,
    rows::{ReplyRow, reply, reply_columns},
};
use crate::domain::InboundAction;

/// A reply to keep.
#[derive(Debug, Clone)]
pub struct InboundReply<'a> {
    /// Normalised, as a message's `to` is.
    pub from: &'a str,
    pub content: &'a str,
    /// When the carrier says it was sent, as it says: its retry says the same. Ahead of our clock it
    /// counts, for the order of a number's keywords, as sent when it arrived.
    pub at: DateTime<Utc>,
    /// What its content asks for.
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
    /// `opt_out`, `opt_in` or `other`: what it did.
    pub action: String,
}

/// What became of a reply `InboundLog::take_reply` was given.
#[derive(Debug, Clone, PartialEq)]
pub enum TakenReply {
    /// Kept, and acted on as its action says.
    Kept(StoredReply),
    /// A keyword sent before the number's latest opt-out or opt-in (a provider's late retry, replies
    /// crossing): older news, kept as `other`, changing nothing.
    Outdated(StoredReply),
    /// The provider sent it again (same number, content and time): the reply as first kept, nothing done
    /// twice.
    Duplicate(StoredReply),
}

/// The seam between the API and the replies.
#[async_trait]
pub trait InboundLog: Send + Sync + 'static {
    /// Keeps a reply and acts on its keyword (puts the number on the suppression list, or takes it off)
    /// in one transaction, the replies of one number one at a time: a keyword applies unless one sent
    /// after it is kept, whichever of two arrives first.
    async fn take_reply(&self, reply: &InboundReply<'_>) -> Result<TakenReply, StoreError>;

    /// Up to `limit` replies, newest first, after (older than) `before` when given.
    async fn list_inbound(&self, limit: u32, before: Option<Uuid>) -> Result<Vec<StoredReply>, StoreError>;
}

/// The inbound statements whose text is dialect.
pub(super) trait InboundSql: Backend {
    /// Keeps reply `$1` (its id) from `$2` with content `$3`, sent at `$4`, given action `$5` (and
    /// `Backend::clock`): the `ReplyRow` as kept.
    const RECORD_INBOUND: &'static str;
    /// Waits, in the transaction, until no other transaction takes a reply of number `$1`. `None` where
    /// `RECORD_INBOUND`, the transaction's first write, already waits for every other writer (SQLite).
    const ONE_REPLY_OF_A_NUMBER_AT_A_TIME: Option<&'static str>;
}

#[async_trait]
impl<B> InboundLog for B
where
    B: InboundSql,
    for<'q> Option<B::Id>: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> bool: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> ReplyRow<B>: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (i64,): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
{
    async fn take_reply(&self, taken: &InboundReply<'_>) -> Result<TakenReply, StoreError> {
        const CONTEXT: &str = "keeping an inbound reply";
        let mut tx = self.exec().begin().await.map_err(db(CONTEXT))?;
        if let Some(wait_for_the_number) = B::ONE_REPLY_OF_A_NUMBER_AT_A_TIME {
            sqlx::query(wait_for_the_number)
                .bind(taken.from)
                .execute(B::conn(&mut tx))
                .await
                .map_err(db(CONTEXT))?;
        }
        let id = Uuid::now_v7();
        let row: ReplyRow<B> = sqlx::query_as(B::RECORD_INBOUND)
            .bind(B::stored_uuid(id))
            .bind(taken.from)
            .bind(taken.content)
            .bind(B::stored_time(taken.at))
            .bind(taken.action.as_str())
            .clocked::<B>()
            .fetch_one(B::conn(&mut tx))
            .await
            .map_err(db(CONTEXT))?;
        let kept = reply::<B>(row)?;
        let first: Option<ReplyRow<B>> = sqlx::query_as(concat!(
            "SELECT ",
            reply_columns!(),
            " FROM inbound_messages
              WHERE from_number = $1 AND at = $2 AND content = $3 AND id <> $4 ORDER BY id LIMIT 1"
        ))
        .bind(taken.from)
        .bind(B::stored_time(taken.at))
        .bind(taken.content)
        .bind(B::stored_uuid(id))
        .fetch_optional(B::conn(&mut tx))
        .await
        .map_err(db("looking for the reply kept before"))?;
        if let Some(first) = first {
            tx.rollback().await.map_err(db(CONTEXT))?;
            return Ok(TakenReply::Duplicate(reply::<B>(first)?));
        }
        // When it was sent, as far as the order of keywords goes: not after it reached us (a carrier's
        // skewed clock, a bad year), or it would outrank every keyword the phone sends until then.
        let heard = kept.at.min(kept.received_at);
        let taken = match taken.action {
            InboundAction::Other => TakenReply::Kept(kept),
            keyword => {
                // A keyword of the phone's sent later, or (for an opt-in) an opt-out an operator made
                // later: this one is older news.
                let (later,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM (
                         SELECT 1 FROM inbound_messages
                          WHERE from_number = $1 AND id <> $3 AND action IN ('opt_out', 'opt_in')
                            AND CASE WHEN at < received_at THEN at ELSE received_at END > $2
                         UNION ALL
                         SELECT 1 FROM opt_outs WHERE $4 AND phone_number = $1 AND created_at > $2
                     ) AS later",
                )
                .bind(taken.from)
                .bind(B::stored_time(heard))
                .bind(B::stored_uuid(id))
                .bind(keyword == InboundAction::OptIn)
                .fetch_one(B::conn(&mut tx))
                .await
                .map_err(db("reading a number's later replies"))?;
                if later > 0 {
                    let outdated: ReplyRow<B> = sqlx::query_as(concat!(
                        "UPDATE inbound_messages SET action = 'other' WHERE id = $1 RETURNING ",
                        reply_columns!()
                    ))
                    .bind(B::stored_uuid(id))
                    .fetch_one(B::conn(&mut tx))
                    .await
                    .map_err(db(CONTEXT))?;
                    TakenReply::Outdated(reply::<B>(outdated)?)
                } else {
                    // On the list as of when the phone sent its STOP: a START sent before that is older.
                    let change = match keyword {
                        InboundAction::OptOut => sqlx::query(
                            "INSERT INTO opt_outs (phone_number, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                        )
                        .bind(taken.from)
                        .bind(B::stored_time(heard)),
                        // Not an opt-out put on the list after this START was sent (an operator's,
                        // committed since the check above).
                        _ => sqlx::query("DELETE FROM opt_outs WHERE phone_number = $1 AND created_at <= $2")
                            .bind(taken.from)
                            .bind(B::stored_time(heard)),
                    };
                    change
                        .execute(B::conn(&mut tx))
                        .await
                        .map_err(db("changing the suppression list"))?;
                    TakenReply::Kept(kept)
                }
            }
        };
        tx.commit().await.map_err(db(CONTEXT))?;
        Ok(taken)
    }

    async fn list_inbound(&self, limit: u32, before: Option<Uuid>) -> Result<Vec<StoredReply>, StoreError> {
        // UUIDv7 sorts as its time, as a uuid and as text: the newest first by id.
        let rows: Vec<ReplyRow<B>> = sqlx::query_as(concat!(
            "SELECT ",
            reply_columns!(),
            " FROM inbound_messages WHERE $2 IS NULL OR id < $2 ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .bind(before.map(B::stored_uuid))
        .fetch_all(self.exec())
        .await
        .map_err(db("listing inbound replies"))?;
        rows.into_iter().map(reply::<B>).collect()
    }
}
