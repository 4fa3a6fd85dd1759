//! The status events outbox: events written in the same transaction as the change they report (by
//! `finish_claims` and `settle_receipts`, while `Database::write_status_events` is on), then claimed,
//! delivered and settled by `StatusDispatcherActor`.
//!
//! ```text
//!  written ──▶ pending ──claim_due_events (lease)──▶ POST ──2xx──▶ delivered
//!     │           ▲                                   ▲ └─ no 2xx ─▶ pending, due after a backoff,
//!     │           └──────── retry_event (operator) ◀──┼───────────── or failed past STATUS_WEBHOOK_MAX_AGE
//!     └─ written leased, handed over (the feed) ──────┘
//! ```
//!
//! A claim takes only the oldest pending event of each message, so one message's events arrive in the
//! order they were written (no `message.delivered` before its `message.sent` is acknowledged); the lease
//! lets a crashed dispatcher's events be claimed again, under the same id.
//!
//! Most events skip the claim: with a feed (`Database::hand_status_events_to`), an event that is its
//! message's only pending one is written already leased, and handed to this process's dispatcher in
//! memory once its transaction commits. The claim's round trip, and its UPDATE of every event, were a
//! third of the outbox's statements; the claim is left to events that waited behind another of their
//! message, to retries, to events the feed had no room for, and to those of a replica that died.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::Acquire;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Finish, NextState, PruneBatch, StoreError,
    backend::{Backend, Clocked},
    db,
    receipts::Delivery,
    rows::{Columns, EventRow, event_columns},
};
use crate::domain::{NewStatusEvent, StatusEventType};

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    Pending,
    Delivered,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub id: Uuid,
    pub message_id: Uuid,
    pub kind: StatusEventType,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    pub status: EventStatus,
    /// Attempts so far, counting one in progress.
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl StoredEvent {
    /// This event as its holder got it, to record or put back.
    pub fn held(&self) -> HeldEvent {
        HeldEvent {
            seq: self.seq,
            attempt: self.attempts,
        }
    }
}

/// An event as a claim or a feed handed it over: its `seq`, and the attempt its lease counted. Another
/// claim, once that lease has run out, counts another attempt: a record or a put-back by the holder
/// that lost the event so finds it changed, and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldEvent {
    pub seq: i64,
    pub attempt: u32,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum EventDelivery {
    /// The receiver answered 2xx.
    Delivered,
    /// Not acknowledged: due again after `delay`.
    RetryIn { delay: Duration, error: String },
    /// Not acknowledged, and past `STATUS_WEBHOOK_MAX_AGE`.
    Failed { error: String },
}

/// The seam between the outbox and its dispatcher and the API.
#[async_trait]
pub trait StatusEventStore: Send + Sync + 'static {
    /// Up to `limit` due pending events, oldest first, the oldest pending one of each message only,
    /// leased for `lease`; another claim skips them until it runs out.
    async fn claim_due_events(&self, limit: u32, lease: Duration) -> Result<Vec<StoredEvent>, StoreError>;

    /// Records what delivering each event came to, a whole round's outcomes in one commit; an event no
    /// longer pending under the attempt it was held with is left as it is. An event that failed takes
    /// the pending events written after it for its message with it (their order could not be kept).
    async fn finish_events(&self, deliveries: &[(HeldEvent, EventDelivery)]) -> Result<(), StoreError>;

    /// Events newest first, in `status` when given, before `before` (a `seq`) when given.
    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Event `id` back to `pending`, due now, with its id kept (a replay); one being sent (pending under
    /// a lease) is left to its POST, whose outcome a replay would race. `None` when there is none.
    async fn retry_event(&self, id: Uuid) -> Result<Option<StoredEvent>, StoreError>;

    /// Events `held` by this instance and never POSTed (it is stopping), back due now: the lease and the
    /// attempt it counted are given up, `why` is their last error. An event no longer pending under that
    /// lease (it ran out; another instance took the event) is left as it is. Returns how many went back.
    async fn put_back_events(&self, held: &[HeldEvent], why: &str) -> Result<u64, StoreError>;

    /// Looks at up to `limit` delivered events past `seq` `after` and deletes those delivered before
    /// `before`: one batch of a prune's walk through the table.
    async fn delete_delivered_events_before(
        &self,
        before: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<PruneBatch, StoreError>;

    /// The outbox's depth: pending events, the age of the oldest, and failed events.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError>;
}

/// The outbox as the metrics and the console see it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OutboxStats {
    pub pending: u64,
    pub oldest_pending_age: Option<Duration>,
    pub failed: u64,
}

/// Where a store hands the events it wrote leased, once they commit: this process's dispatcher. Its room
/// bounds the events handed and not yet recorded as delivered, so that none waits in memory longer than
/// the lease it was written with (the dispatcher sizes both).
#[derive(Clone)]
pub struct EventFeed {
    handed: mpsc::UnboundedSender<HandedEvents>,
    room: Arc<Semaphore>,
    lease: Duration,
}

/// Events written leased and committed, for the dispatcher to deliver and record; the room they hold in
/// the feed is given back when this is dropped.
pub struct HandedEvents {
    pub events: Vec<StoredEvent>,
    _room: OwnedSemaphorePermit,
}

impl EventFeed {
    /// A feed with room for `room` events, written leased for `lease`; the dispatcher reads the receiver.
    pub fn new(room: usize, lease: Duration) -> (Self, mpsc::UnboundedReceiver<HandedEvents>) {
        let (handed, receiver) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(room));
        (Self { handed, room, lease }, receiver)
    }

    /// Room for up to `wanted` events, as much as is free.
    fn reserve(&self, wanted: usize) -> Option<(OwnedSemaphorePermit, usize)> {
        let free = self.room.available_permits().min(wanted);
        let permits = u32::try_from(free).ok().filter(|&n| n > 0)?;
        let permit = Arc::clone(&self.room).try_acquire_many_owned(permits).ok()?;
        Some((permit, free))
    }
}

/// Whether a store writes status events, and the feed it hands them to.
#[derive(Default)]
pub(super) struct EventOutbox {
    on: AtomicBool,
    feed: OnceLock<EventFeed>,
}

impl EventOutbox {
    pub(super) fn write(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub(super) fn writes(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// The first feed set is kept: config stops at startup.
    pub(super) fn hand_to(&self, feed: EventFeed) {
        if self.feed.set(feed).is_err() {
            log::warn!("status events already have a feed; the new one is not used");
        }
    }
}

/// Events written in a transaction not yet committed: those written leased go to the feed once it has.
#[must_use = "hand the events over once the transaction commits"]
pub(super) struct Handoff {
    feed: Option<(EventFeed, OwnedSemaphorePermit)>,
    leased: Vec<StoredEvent>,
}

impl Handoff {
    /// Hands the leased events to the dispatcher: call once their transaction committed. A dispatcher
    /// gone (shutting down) leaves them to run out their lease and be claimed.
    pub(super) fn hand(self) {
        if let (Some((feed, permit)), false) = (self.feed, self.leased.is_empty()) {
            let _ = feed.handed.send(HandedEvents {
                events: self.leased,
                _room: permit,
            });
        }
    }
}

/// Writes `events` in `tx`. With a feed, as many as it has room for are offered a lease, each the first
/// of its message here; the statement leases those that are their message's only pending event (an
/// event behind another of its message waits for the claim, which keeps their order).
pub(super) async fn write_events<W: EventWriter>(
    tx: &mut sqlx::Transaction<'static, W::DB>,
    events: &[NewStatusEvent],
    outbox: &EventOutbox,
) -> Result<Handoff, StoreError> {
    let reserved = outbox
        .feed
        .get()
        .and_then(|feed| Some((feed, feed.reserve(events.len())?)));
    let mut room = reserved.as_ref().map_or(0, |(_, (_, room))| *room);
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    let offered: Vec<bool> = events
        .iter()
        .map(|event| {
            let offer = room > 0 && seen.insert(event.message_id);
            room -= usize::from(offer);
            offer
        })
        .collect();
    let lease = reserved.as_ref().map(|(feed, _)| feed.lease);
    let leased = W::insert_events(tx, events, &offered, lease).await?;
    let mut leased = claimed(leased)?;
    leased.retain(|event| event.attempts > 0);
    // The room of those offered and not leased (behind another pending event of their message: during a
    // receiver's outage, most) goes back now, not when the leased ones are recorded.
    let feed = reserved.map(|(feed, (mut permit, _))| {
        let unused = permit.num_permits().saturating_sub(leased.len());
        drop(permit.split(unused));
        (feed.clone(), permit)
    });
    Ok(Handoff { feed, leased })
}

/// The outbox statements whose text is dialect, and the one whose shape is (recording a round's
/// deliveries); listing the outbox runs on both as it is.
#[async_trait]
pub(super) trait StatusEventSql: Backend {
    /// Leases up to `$1` due events, the oldest pending one of each message only, for `$2` (a
    /// `Backend::span`, and `Backend::clock`): the `EventRow`s leased.
    const CLAIM_DUE_EVENTS: &'static str;
    /// Event `$1` (its id) back to `pending`, due now, unless it is being sent (pending under an
    /// unexpired lease) (and `Backend::clock`): its `EventRow`, none when there is none or it is being
    /// sent.
    const RETRY_EVENT: &'static str;
    /// The failed events of event `$1`'s message written before it back to `pending`, due now (and
    /// `Backend::clock`).
    const RETRY_FAILED_BEFORE: &'static str;
    /// Events `$1` (a `Backend::ints` of seqs) back due now, with last error `$3`, one attempt fewer and
    /// no lease, where still pending under an unexpired lease with attempts `$2` (the same list's
    /// `HeldEvent::attempt`s) (and `Backend::clock`).
    const PUT_BACK_EVENTS: &'static str;
    /// Pending events, the age of the oldest in seconds, and failed events (`Backend::clock`).
    const OUTBOX_STATS: &'static str;

    /// Records a round's deliveries (`HeldEvent`, outcome) in one commit, as `finish_events` says: one
    /// statement on Postgres.
    async fn record_deliveries(&self, deliveries: &[(HeldEvent, EventDelivery)]) -> Result<(), StoreError>;
}

/// The count and the last `seq` of the (up to) `$2` delivered events past `seq` `$1`, in `seq` order
/// (that of `status_events_status_idx`): a prune's batch. Both backends run it as it is.
const DELIVERED_EVENTS_PAST: &str = "
    SELECT count(*), max(seq) FROM (SELECT seq FROM status_events WHERE status = 'delivered' AND seq > $1
                                     ORDER BY seq LIMIT $2) AS batch";
/// Deletes the delivered events with `seq` in (`$2`, `$3`] delivered before `$1`.
const DELETE_DELIVERED_EVENTS: &str = "
    DELETE FROM status_events WHERE status = 'delivered' AND seq > $2 AND seq <= $3 AND delivered_at < $1";

#[async_trait]
impl<B> StatusEventStore for B
where
    B: StatusEventSql,
    for<'q> Option<&'q str>: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> i64: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> EventRow<B>: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (i64, Option<f64>, i64): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> (i64, Option<i64>): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
{
    async fn claim_due_events(&self, limit: u32, lease: Duration) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query_as(B::CLAIM_DUE_EVENTS)
            .bind(i64::from(limit))
            .bind(B::span(lease))
            .clocked::<B>()
            .fetch_all(self.exec())
            .await
            .map_err(db("claiming status events"))?;
        claimed(rows)
    }

    async fn finish_events(&self, deliveries: &[(HeldEvent, EventDelivery)]) -> Result<(), StoreError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        self.record_deliveries(deliveries).await
    }

    async fn list_events(
        &self,
        status: Option<EventStatus>,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows: Vec<EventRow<B>> = sqlx::query_as(concat!(
            "SELECT ",
            event_columns!(),
            " FROM status_events WHERE ($1 IS NULL OR status = $1) AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(status.map(EventStatus::as_str))
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(self.exec())
        .await
        .map_err(db("listing status events"))?;
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn retry_event(&self, id: Uuid) -> Result<Option<StoredEvent>, StoreError> {
        // The failed events of its message before it go again too, and first: a message.delivered is
        // never sent while its message.sent stays failed. In one transaction, so that a replay is whole.
        let mut tx = self.exec().begin().await.map_err(db("replaying a status event"))?;
        sqlx::query(B::RETRY_FAILED_BEFORE)
            .bind(B::stored_uuid(id))
            .clocked::<B>()
            .execute(B::conn(&mut tx))
            .await
            .map_err(db("replaying the failed status events before one"))?;
        let replayed: Option<EventRow<B>> = sqlx::query_as(B::RETRY_EVENT)
            .bind(B::stored_uuid(id))
            .clocked::<B>()
            .fetch_optional(B::conn(&mut tx))
            .await
            .map_err(db("replaying a status event"))?;
        tx.commit().await.map_err(db("replaying a status event"))?;
        let row = match replayed {
            Some(row) => Some(row),
            // Being sent, or no such event: as it stands.
            None => sqlx::query_as(concat!(
                "SELECT ",
                event_columns!(),
                " FROM status_events WHERE id = $1"
            ))
            .bind(B::stored_uuid(id))
            .fetch_optional(self.exec())
            .await
            .map_err(db("reading a status event"))?,
        };
        row.map(StoredEvent::try_from).transpose()
    }

    async fn put_back_events(&self, held: &[HeldEvent], why: &str) -> Result<u64, StoreError> {
        if held.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<i64> = held.iter().map(|event| event.seq).collect();
        let attempts: Vec<i64> = held.iter().map(|event| i64::from(event.attempt)).collect();
        let done = sqlx::query(B::PUT_BACK_EVENTS)
            .bind(B::ints(&seqs))
            .bind(B::ints(&attempts))
            .bind(why)
            .clocked::<B>()
            .execute(self.exec())
            .await
            .map_err(db("putting status events back"))?;
        Ok(B::rows_affected(&done))
    }

    async fn delete_delivered_events_before(
        &self,
        before: DateTime<Utc>,
        after: i64,
        limit: u32,
    ) -> Result<PruneBatch, StoreError> {
        let statements = (
            DELIVERED_EVENTS_PAST,
            DELETE_DELIVERED_EVENTS,
            "pruning old delivered status events",
        );
        super::backend::prune_batch(self, statements, before, after, limit).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (pending, oldest_age_seconds, failed): (i64, Option<f64>, i64) = sqlx::query_as(B::OUTBOX_STATS)
            .clocked::<B>()
            .fetch_one(self.exec())
            .await
            .map_err(db("counting status events"))?;
        Ok(OutboxStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_pending_age: oldest_age_seconds.map(|s| Duration::from_secs_f64(s.max(0.0))),
            failed: u64::try_from(failed).unwrap_or(0),
        })
    }
}

/// How a backend writes status events in the transaction of the change they report: the one statement
/// the shared commit of a flush and settle of receipts need from it.
#[async_trait]
pub(super) trait EventWriter: Backend + Sized {
    /// Writes `events`; each one `offered` (with a `lease`) is written leased for it when no other event
    /// of its message is pending. Returns the rows written leased, in no order, and may return others
    /// that were offered (not leased: no attempt counted).
    async fn insert_events(
        tx: &mut sqlx::Transaction<'static, Self::DB>,
        events: &[NewStatusEvent],
        offered: &[bool],
        lease: Option<Duration>,
    ) -> Result<Vec<EventRow<Self>>, StoreError>;
}

/// Commits a flush of results with the events they report (while events are on), in the flush's
/// transaction: both commit, or neither. Returns `changed`.
pub(super) async fn commit_finishes<W: EventWriter>(
    mut tx: sqlx::Transaction<'static, W::DB>,
    results: &[Finish],
    changed: Vec<bool>,
    outbox: &EventOutbox,
) -> Result<Vec<bool>, StoreError> {
    if !outbox.writes() {
        tx.commit().await.map_err(db("recording results"))?;
        return Ok(changed);
    }
    let events = events_of_finishes(results, &changed, Utc::now());
    let handoff = write_events::<W>(&mut tx, &events, outbox).await?;
    tx.commit().await.map_err(db("recording results"))?;
    handoff.hand();
    Ok(changed)
}

/// Claimed events as a claim's RETURNING gives them (in no order), oldest first.
fn claimed<C: Columns>(rows: Vec<EventRow<C>>) -> Result<Vec<StoredEvent>, StoreError> {
    let mut events: Vec<StoredEvent> = rows.into_iter().map(StoredEvent::try_from).collect::<Result<_, _>>()?;
    events.sort_by_key(|event| event.seq);
    Ok(events)
}

/// The events a flush of results reports: `message.sent` and `message.failed` for the transitions that
/// changed their message.
pub(super) fn events_of_finishes(results: &[Finish], changed: &[bool], at: DateTime<Utc>) -> Vec<NewStatusEvent> {
    results
        .iter()
        .zip(changed)
        .filter(|(_, changed)| **changed)
        .filter_map(|(result, _)| {
            let message_id = result.claim.message_id;
            match &result.next {
                NextState::Sent {
                    provider_message_id,
                    sent_at,
                } => Some(NewStatusEvent::new(
                    StatusEventType::Sent,
                    message_id,
                    at,
                    json!({"status": "sent", "provider_message_id": provider_message_id.as_ref().map(AsRef::as_ref),
                           "sent_at": sent_at}),
                )),
                NextState::Failed { error } => Some(NewStatusEvent::new(
                    StatusEventType::Failed,
                    message_id,
                    at,
                    json!({"status": "failed", "error": error}),
                )),
                NextState::RetryLater { .. } | NextState::PutBack { .. } => None,
            }
        })
        .collect()
}

/// The event a receipt's final state reports, from the message as it now stands: its delivery status,
/// delivery time, carrier error and provider id.
pub(super) fn event_of_delivery(
    message_id: Uuid,
    (delivery_status, delivered_at, delivery_error, provider_message_id): Delivery,
    at: DateTime<Utc>,
) -> Option<NewStatusEvent> {
    let kind = match delivery_status.as_deref() {
        Some("delivered") => StatusEventType::Delivered,
        Some("undelivered") => StatusEventType::Undelivered,
        _ => return None,
    };
    Some(NewStatusEvent::new(
        kind,
        message_id,
        at,
        json!({"status": "sent", "delivery_status": delivery_status, "delivered_at": delivered_at,
               "delivery_error": delivery_error, "provider_message_id": provider_message_id}),
    ))
}
