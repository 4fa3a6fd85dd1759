//! Rows as the backends read and write them, and the one conversion of each to and from the shared types.
//!
//! The two databases keep the same columns in different types: Postgres has `uuid`, `timestamptz` and
//! `int4`; SQLite has TEXT uuids, INTEGER microseconds since the epoch and 64-bit INTEGERs. A backend
//! names its types and how each becomes the shared one (`Columns`, in its own file); what a row means,
//! and which stored value makes it corrupt, is decided here, once for both.

use std::{fmt, num::TryFromIntError, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Claim, Claimed, ClaimedMessage, DeliveryCounts, EventDelivery, EventStatus, Frontier, MinuteActivity, NextState,
    OptOut, Pace, QueuePlace, ReceiptOutcome, Replica, StoreError, StoredEvent, StoredReceipt, StoredReply,
};
use crate::domain::{Attempt, Message, MessageStatus, Priority, Schedule, StatusEventType, UnknownReceiptStatus};

/// Columns of a full message row, in `MessageRow` order. (`list/*.sql` spell them out too: the load
/// scripts run those files as they are.)
macro_rules! message_columns {
    () => {
        "id, phone_number, content, status, attempts, next_attempt_at, provider_message_id, last_error, \
         created_at, updated_at, sent_at, delivery_status, delivered_at, delivery_error, send_at, expires_at, \
         priority, timezone, campaign"
    };
}
pub(super) use message_columns;

/// How a backend stores the values its rows share with the other backend; they bind as parameters of its
/// statements.
pub(super) trait Columns
where
    for<'q> Self::Id: sqlx::Encode<'q, Self::DB> + sqlx::Type<Self::DB>,
    for<'q> Self::Time: sqlx::Encode<'q, Self::DB> + sqlx::Type<Self::DB>,
{
    /// The sqlx driver of the database that stores them.
    type DB: sqlx::Database<Arguments: sqlx::IntoArguments<Self::DB>>;

    /// A UUID.
    type Id: fmt::Debug + Send + Unpin + 'static;
    /// A point in time.
    type Time: fmt::Display + Copy + Send + Unpin + 'static;
    /// A small count or code: an attempt number, an HTTP status, sends in flight.
    type Int: Copy
        + fmt::Debug
        + Send
        + Unpin
        + TryInto<u32, Error = TryFromIntError>
        + TryInto<u16, Error = TryFromIntError>;

    fn uuid(stored: &Self::Id) -> Result<Uuid, uuid::Error>;

    /// `None` when the stored value is outside the times `DateTime` holds.
    fn time(stored: Self::Time) -> Option<DateTime<Utc>>;

    /// A UUID as stored.
    fn stored_uuid(id: Uuid) -> Self::Id;

    fn stored_time(at: DateTime<Utc>) -> Self::Time;
}

/// A message's id as stored, or a corrupt row (naming no message: its id is what could not be read).
pub(super) fn message_id<C: Columns>(stored: &C::Id) -> Result<Uuid, StoreError> {
    C::uuid(stored).map_err(|e| StoreError::CorruptRow {
        id: Uuid::nil(),
        problem: format!("id {stored:?} is not a UUID: {e}"),
    })
}

/// A full message row (`message_columns!`) as `C` stores it.
#[derive(sqlx::FromRow)]
pub(super) struct MessageRow<C: Columns> {
    pub id: C::Id,
    phone_number: String,
    content: String,
    status: String,
    attempts: C::Int,
    next_attempt_at: C::Time,
    provider_message_id: Option<String>,
    last_error: Option<String>,
    created_at: C::Time,
    updated_at: C::Time,
    sent_at: Option<C::Time>,
    delivery_status: Option<String>,
    delivered_at: Option<C::Time>,
    delivery_error: Option<String>,
    send_at: Option<C::Time>,
    expires_at: Option<C::Time>,
    priority: C::Int,
    timezone: Option<String>,
    campaign: Option<String>,
}

/// The `priority` column as the domain's.
fn priority<C: Columns>(stored: C::Int) -> Option<Priority> {
    TryInto::<u32>::try_into(stored)
        .ok()
        .and_then(|level| Priority::from_level(level.into()))
}

impl<C: Columns> TryFrom<MessageRow<C>> for Message {
    type Error = StoreError;

    fn try_from(row: MessageRow<C>) -> Result<Self, Self::Error> {
        let id = message_id::<C>(&row.id)?;
        let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
        let time = |name: &str, value: C::Time| {
            C::time(value).ok_or_else(|| corrupt(format!("{name} {value} is out of range")))
        };
        Ok(Message {
            id,
            status: row
                .status
                .parse::<MessageStatus>()
                .map_err(|e| corrupt(e.to_string()))?,
            attempts: TryInto::<u32>::try_into(row.attempts).map_err(|e| corrupt(format!("attempts: {e}")))?,
            next_attempt_at: time("next_attempt_at", row.next_attempt_at)?,
            created_at: time("created_at", row.created_at)?,
            updated_at: time("updated_at", row.updated_at)?,
            sent_at: row.sent_at.map(|at| time("sent_at", at)).transpose()?,
            delivery_status: row
                .delivery_status
                .map(|status| status.parse().map_err(|e: UnknownReceiptStatus| corrupt(e.to_string())))
                .transpose()?,
            delivered_at: row.delivered_at.map(|at| time("delivered_at", at)).transpose()?,
            delivery_error: row.delivery_error,
            when: Schedule {
                send_at: row.send_at.map(|at| time("send_at", at)).transpose()?,
                expires_at: row.expires_at.map(|at| time("expires_at", at)).transpose()?,
                priority: priority::<C>(row.priority)
                    .ok_or_else(|| corrupt(format!("priority {:?} is not 0, 1 or 2", row.priority)))?,
                // Plain SQL may store any text: a name that is no zone reads as none, and the number's
                // calling code decides instead, as at the claim.
                timezone: row.timezone.and_then(|name| name.parse().ok()),
                campaign: row.campaign,
            },
            to: row.phone_number,
            content: row.content,
            provider_message_id: row.provider_message_id,
            last_error: row.last_error,
        })
    }
}

/// What a claim statement answers: one row per claimed message, or a single row with no message when it
/// claimed none, each carrying the cluster's pace as the statement found it.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimRow<C: Columns> {
    rate: Option<f64>,
    paused_for: Option<f64>,
    next_in: Option<f64>,
    id: Option<C::Id>,
    seq: Option<i64>,
    lease_token: Option<C::Id>,
    attempts: Option<C::Int>,
    phone_number: Option<String>,
    content: Option<String>,
    next_attempt_at: Option<C::Time>,
    priority: Option<C::Int>,
    timezone: Option<String>,
    expires_at: Option<C::Time>,
    /// The priority the claim took it at: its own, or one higher once it waited out the aging.
    rank: Option<C::Int>,
    /// The status the claim gave it: `sending`, or a final one when it ended unsent (`expired`,
    /// `suppressed`).
    status: Option<String>,
}

/// A claim statement's answer: the claims in the order claimed, by the priority each was taken at, then
/// oldest first (RETURNING does not keep the order the rows were picked in), the rows it expired, the pace, and the frontier the claim reached.
pub(super) fn claimed<C: Columns>(rows: Vec<ClaimRow<C>>) -> Result<Claimed, StoreError> {
    let pace = rows
        .first()
        .map_or_else(Pace::default, |row| pace(row.rate, row.paused_for, row.next_in));
    let mut messages: Vec<((Option<u32>, i64), ClaimedMessage)> = Vec::with_capacity(rows.len());
    let mut ended = Vec::new();
    let mut frontier: Option<Frontier> = None;
    for row in rows {
        let Some(id) = row.id else {
            continue;
        };
        let id = message_id::<C>(&id)?;
        let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
        match row.status.as_deref().map(str::parse::<MessageStatus>) {
            Some(Ok(MessageStatus::Sending)) => {}
            Some(Ok(status)) => {
                ended.push((id, status));
                continue;
            }
            Some(Err(e)) => return Err(corrupt(e.to_string())),
            None => return Err(corrupt("the claim returned it without a status".to_owned())),
        }
        let (Some(seq), Some(token), Some(attempts), Some(phone_number), Some(content), Some(due_at), Some(level)) = (
            row.seq,
            row.lease_token,
            row.attempts,
            row.phone_number,
            row.content,
            row.next_attempt_at,
            row.priority,
        ) else {
            return Err(corrupt("the claim returned it with a column missing".to_owned()));
        };
        let due_at = C::time(due_at).ok_or_else(|| corrupt(format!("next_attempt_at {due_at} is out of range")))?;
        let priority = priority::<C>(level).ok_or_else(|| corrupt(format!("priority {level:?} is not 0, 1 or 2")))?;
        frontier
            .get_or_insert_with(Frontier::default)
            .reach(priority, QueuePlace { due_at, seq });
        let claim = Claim {
            message_id: id,
            token: C::uuid(&token).map_err(|e| corrupt(format!("lease_token: {e}")))?,
            attempt: TryInto::<u32>::try_into(attempts).map_err(|e| corrupt(format!("attempts: {e}")))?,
        };
        messages.push((
            (row.rank.and_then(|rank| TryInto::<u32>::try_into(rank).ok()), seq),
            ClaimedMessage {
                claim,
                phone_number,
                content,
                priority,
                timezone: row.timezone,
                expires_at: row.expires_at.and_then(C::time),
            },
        ));
    }
    messages.sort_by_key(|(order, _)| *order);
    Ok(Claimed {
        messages: messages.into_iter().map(|(_, message)| message).collect(),
        ended,
        pace,
        frontier,
    })
}

/// The pace as a claim statement answers it: the rate in force, and the pause and the wait for the next
/// message in seconds; zero, negative or no value means none.
pub(super) fn pace(rate: Option<f64>, paused_for: Option<f64>, next_in: Option<f64>) -> Pace {
    let seconds = |value: Option<f64>| {
        value
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::from_secs_f64(s.min(86_400.0)))
    };
    Pace {
        rate: rate.filter(|rate| rate.is_finite() && *rate > 0.0),
        paused_for: seconds(paused_for),
        next_in: seconds(next_in),
    }
}

/// A `message_attempts` row as `C` stores it.
#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow<C: Columns> {
    attempt: C::Int,
    started_at: C::Time,
    duration_ms: i64,
    http_status: Option<C::Int>,
    outcome: String,
    error: Option<String>,
    provider_message_id: Option<String>,
}

impl<C: Columns> AttemptRow<C> {
    /// The attempt, of message `id`.
    pub(super) fn into_attempt(self, id: Uuid) -> Result<Attempt, StoreError> {
        let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
        Ok(Attempt {
            attempt: TryInto::<u32>::try_into(self.attempt).map_err(|e| corrupt(format!("attempt: {e}")))?,
            started_at: C::time(self.started_at)
                .ok_or_else(|| corrupt(format!("started_at {} is out of range", self.started_at)))?,
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            http_status: self.http_status.and_then(|s| TryInto::<u16>::try_into(s).ok()),
            outcome: self.outcome,
            error: self.error,
            provider_message_id: self.provider_message_id,
        })
    }
}

/// A `replicas` row: id, host, started_at, last_seen, in_flight, sending.
pub(super) type ReplicaRow<C> = (
    String,
    String,
    <C as Columns>::Time,
    <C as Columns>::Time,
    <C as Columns>::Int,
    bool,
);

/// A replica as listed. The table only informs the console, so a value out of range shows as the epoch
/// or as nothing in flight rather than failing the list.
pub(super) fn replica<C: Columns>((id, host, started_at, last_seen, in_flight, sending): ReplicaRow<C>) -> Replica {
    Replica {
        id,
        host,
        started_at: C::time(started_at).unwrap_or_default(),
        last_seen: C::time(last_seen).unwrap_or_default(),
        in_flight: TryInto::<u32>::try_into(in_flight).unwrap_or(0),
        sending,
    }
}

/// An `opt_outs` row: phone_number, created_at.
pub(super) type OptOutRow<C> = (String, <C as Columns>::Time);

/// A number on the suppression list. The list only informs, so a time out of range shows as the epoch
/// rather than failing it.
pub(super) fn opt_out<C: Columns>((to, created_at): OptOutRow<C>) -> OptOut {
    OptOut {
        to,
        created_at: C::time(created_at).unwrap_or_default(),
    }
}

/// Columns of an `inbound_messages` row, in `ReplyRow` order.
macro_rules! reply_columns {
    () => {
        "id, from_number, content, at, received_at, action"
    };
}
pub(super) use reply_columns;

/// An `inbound_messages` row: id, from_number, content, at, received_at, action.
pub(super) type ReplyRow<C> = (
    <C as Columns>::Id,
    String,
    String,
    <C as Columns>::Time,
    <C as Columns>::Time,
    String,
);

/// A reply as kept. The log only informs, so a time out of range shows as the epoch rather than failing
/// the list; an id that is no UUID is corrupt (it is the list's cursor).
pub(super) fn reply<C: Columns>(
    (id, from, content, at, received_at, action): ReplyRow<C>,
) -> Result<StoredReply, StoreError> {
    Ok(StoredReply {
        id: message_id::<C>(&id)?,
        from,
        content,
        at: C::time(at).unwrap_or_default(),
        received_at: C::time(received_at).unwrap_or_default(),
        action,
    })
}

/// One minute of `activity_since`: the minute, then how many were sent and how many failed in it.
pub(super) type ActivityRow<C> = (<C as Columns>::Time, i64, i64);

pub(super) fn minute_activity<C: Columns>(
    (minute, sent, failed): ActivityRow<C>,
) -> Result<MinuteActivity, StoreError> {
    Ok(MinuteActivity {
        minute: C::time(minute).ok_or_else(|| StoreError::CorruptRow {
            id: Uuid::nil(),
            problem: format!("minute {minute} is out of range"),
        })?,
        sent: u64::try_from(sent).unwrap_or(0),
        failed: u64::try_from(failed).unwrap_or(0),
    })
}

/// A finished claim as the finish statements write it: the message's next status and the columns that go
/// with it. `None` where that status leaves the column as it is, or clears it.
pub(super) struct FinishRow<'a> {
    pub status: &'static str,
    /// The claim's attempt is taken back: it did not count (`NextState::PutBack`).
    pub uncounted: bool,
    pub provider_message_id: Option<&'a str>,
    pub sent_at: Option<DateTime<Utc>>,
    /// How long a retry waits before it is due; for a message put back, `None` keeps its old place.
    pub retry_in: Option<Duration>,
    pub error: Option<&'a str>,
}

impl NextState {
    pub(super) fn row(&self) -> FinishRow<'_> {
        let row = |status: MessageStatus| FinishRow {
            status: status.as_str(),
            uncounted: false,
            provider_message_id: None,
            sent_at: None,
            retry_in: None,
            error: None,
        };
        match self {
            NextState::Sent {
                provider_message_id,
                sent_at,
            } => FinishRow {
                provider_message_id: provider_message_id.as_ref().map(AsRef::as_ref),
                sent_at: Some(*sent_at),
                ..row(MessageStatus::Sent)
            },
            NextState::RetryLater { delay, error } => FinishRow {
                retry_in: Some(*delay),
                error: Some(error),
                ..row(MessageStatus::Pending)
            },
            NextState::Failed { error } => FinishRow {
                error: Some(error),
                ..row(MessageStatus::Failed)
            },
            NextState::PutBack { after, error } => FinishRow {
                uncounted: true,
                retry_in: *after,
                error: error.as_deref(),
                ..row(MessageStatus::Pending)
            },
        }
    }
}

/// Columns of a `receipts` row, in `ReceiptRow` order.
macro_rules! receipt_columns {
    () => {
        "seq, provider_message_id, status, reported_at, error, received_at, outcome, message_id, settled_at"
    };
}
pub(super) use receipt_columns;

/// A `receipts` row (`receipt_columns!`) as `C` stores it.
#[derive(sqlx::FromRow)]
pub(super) struct ReceiptRow<C: Columns> {
    seq: i64,
    provider_message_id: String,
    status: String,
    reported_at: C::Time,
    error: Option<String>,
    received_at: C::Time,
    outcome: String,
    message_id: Option<C::Id>,
    settled_at: Option<C::Time>,
}

impl<C: Columns> TryFrom<ReceiptRow<C>> for StoredReceipt {
    type Error = StoreError;

    fn try_from(row: ReceiptRow<C>) -> Result<Self, Self::Error> {
        let seq = row.seq;
        let corrupt = |problem: String| StoreError::CorruptRow {
            id: Uuid::nil(),
            problem: format!("receipt {seq}: {problem}"),
        };
        let time = |name: &str, value: C::Time| {
            C::time(value).ok_or_else(|| corrupt(format!("{name} {value} is out of range")))
        };
        Ok(StoredReceipt {
            seq,
            status: row
                .status
                .parse()
                .map_err(|e: UnknownReceiptStatus| corrupt(e.to_string()))?,
            reported_at: time("reported_at", row.reported_at)?,
            received_at: time("received_at", row.received_at)?,
            outcome: ReceiptOutcome::parse(&row.outcome)
                .ok_or_else(|| corrupt(format!("unknown outcome {:?}", row.outcome)))?,
            message_id: row
                .message_id
                .map(|id| C::uuid(&id).map_err(|e| corrupt(format!("message_id: {e}"))))
                .transpose()?,
            settled_at: row.settled_at.map(|at| time("settled_at", at)).transpose()?,
            provider_message_id: row.provider_message_id,
            error: row.error,
        })
    }
}

/// What `delivery_counts_since` reads: delivered, undelivered.
pub(super) fn delivery_counts((delivered, undelivered): (i64, i64)) -> DeliveryCounts {
    DeliveryCounts {
        delivered: u64::try_from(delivered).unwrap_or(0),
        undelivered: u64::try_from(undelivered).unwrap_or(0),
    }
}

/// Columns of a `status_events` row, in `EventRow` order.
macro_rules! event_columns {
    () => {
        "seq, id, message_id, type, payload, created_at, status, attempts, next_attempt_at, last_error, delivered_at"
    };
}
pub(super) use event_columns;

/// A `status_events` row (`event_columns!`) as `C` stores it.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow<C: Columns> {
    seq: i64,
    id: C::Id,
    message_id: C::Id,
    #[sqlx(rename = "type")]
    kind: String,
    payload: String,
    created_at: C::Time,
    status: String,
    attempts: C::Int,
    next_attempt_at: C::Time,
    last_error: Option<String>,
    delivered_at: Option<C::Time>,
}

impl<C: Columns> TryFrom<EventRow<C>> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: EventRow<C>) -> Result<Self, Self::Error> {
        let seq = row.seq;
        let corrupt = |problem: String| StoreError::CorruptRow {
            id: Uuid::nil(),
            problem: format!("status event {seq}: {problem}"),
        };
        let time = |name: &str, value: C::Time| {
            C::time(value).ok_or_else(|| corrupt(format!("{name} {value} is out of range")))
        };
        Ok(StoredEvent {
            seq,
            id: C::uuid(&row.id).map_err(|e| corrupt(format!("id: {e}")))?,
            message_id: C::uuid(&row.message_id).map_err(|e| corrupt(format!("message_id: {e}")))?,
            kind: StatusEventType::parse(&row.kind).ok_or_else(|| corrupt(format!("unknown type {:?}", row.kind)))?,
            payload: row.payload,
            created_at: time("created_at", row.created_at)?,
            status: EventStatus::parse(&row.status)
                .ok_or_else(|| corrupt(format!("unknown status {:?}", row.status)))?,
            attempts: TryInto::<u32>::try_into(row.attempts).map_err(|e| corrupt(format!("attempts: {e}")))?,
            next_attempt_at: time("next_attempt_at", row.next_attempt_at)?,
            last_error: row.last_error,
            delivered_at: row.delivered_at.map(|at| time("delivered_at", at)).transpose()?,
        })
    }
}

/// A finished delivery as `finish_event` writes it: the event's status, its delay before it is due again
/// and its error.
pub(super) fn event_delivery_row(delivery: &EventDelivery) -> (&'static str, Option<Duration>, Option<&str>) {
    match delivery {
        EventDelivery::Delivered => (EventStatus::Delivered.as_str(), None, None),
        EventDelivery::RetryIn { delay, error } => (EventStatus::Pending.as_str(), Some(*delay), Some(error)),
        EventDelivery::Failed { error } => (EventStatus::Failed.as_str(), None, Some(error)),
    }
}
