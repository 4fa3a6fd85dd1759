//! The message store: every state a message can be in, and the only transitions between them.
//!
//! ```text
//!               claim_due                      finish_claims: Sent
//!  ┌─────────┐ ──────────────▶ ┌─────────┐ ─────────────────────────▶ ┌────────┐
//!  │ pending │                 │ sending │                            │  sent  │  final (delete_sent_before
//!  └─────────┘ ◀────────────── └─────────┘ ─────────────────────────▶ ├────────┤  prunes it after SENT_RETENTION)
//!               finish_claims: RetryLater  finish_claims: Failed      │ failed │  final
//!               release_if_claimed                                    └────────┘
//!               rescue_expired_leases (the lease ran out: its sender died or hung)
//!
//!  operators:  failed ──retry_if_failed──▶ pending ──cancel_if_pending──▶ cancelled (final)
//! ```
//!
//! A claim moves due `pending` rows to `sending` with a fresh token, an owner and a lease expiry, in one
//! committed statement; no transaction is ever held across the HTTP call. Every transition out of
//! `sending` but one is fenced on `status = 'sending' AND lease_token = <the claim's token>` and reports
//! whether it changed the row, so a late or repeated result can never overwrite a newer state: once a
//! rescued row is claimed again, the old claim's writes match nothing. The one exception is the
//! provider's acceptance, fenced only on the row not being final yet: once the provider has a message,
//! recording that is right whoever holds the row, and it keeps a rescue from sending it again.
//! `sent` and `cancelled` are final; `failed` is final for the dispatcher, and only an operator's retry
//! moves it.
//!
//! The hot path is batched: `insert_many` enqueues many messages in one statement, `claim_due` claims a
//! whole tick's worth in one, and `finish_claims` writes a whole flush of results (history and state) in
//! one. The fences are per row, so batching changes how many round trips a message costs, not what may
//! happen to it.
//!
//! Only this module speaks SQL: `postgres.rs` holds every statement for Postgres (several replicas) and
//! `sqlite.rs` mirrors it for the embedded file (one instance, or a few processes on one machine).

mod postgres;
mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
use uuid::Uuid;

use crate::domain::{Attempt, Message, MessageStatus, NewMessage, ProviderMessageId};

/// One claim on one message: the proof a sender must show to move the message on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub message_id: Uuid,
    pub token: Uuid,
    /// The attempt this claim is, counting from 1.
    pub attempt: u32,
}

/// A row just claimed, with its fields as stored: another system may have inserted them, so they are
/// validated by the fetcher before anything is sent.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub claim: Claim,
    pub phone_number: String,
    pub content: String,
}

/// What became of one claim, to be written under it by `finish_claims`.
#[derive(Debug, Clone, PartialEq)]
pub struct Finish {
    pub claim: Claim,
    pub next: NextState,
    /// The POST the claim made, for the message's history; `None` when nothing was posted (a claimed
    /// row that did not validate).
    pub attempt: Option<Attempt>,
}

/// The state a finished claim moves its message to, and the fence that move is under.
#[derive(Debug, Clone, PartialEq)]
pub enum NextState {
    /// `pending` or `sending` → `sent`, whoever holds the row now: the provider has the message, which
    /// outranks a rescue that happened while the answer was on its way. Only a final state refuses it.
    Sent {
        provider_message_id: Option<ProviderMessageId>,
        sent_at: DateTime<Utc>,
    },
    /// `sending` → `pending`, due after `delay`, if the claim still holds the row.
    RetryLater { delay: Duration, error: String },
    /// `sending` → `failed`, if the claim still holds the row.
    Failed { error: String },
}

/// Where a list resumes: the sort time and id of the last item of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageCursor {
    /// `sent_at` in the sent list, the time of failure in the failed list.
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// What an operator's request to move a message came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Changed(Message),
    /// The message is in another state, which the request does not apply to.
    Refused(MessageStatus),
    Missing,
}

/// The time a list of messages in `status` is ordered by (newest first), and so its cursor's `at`:
/// the send time for sent messages, when they ended for failed and cancelled ones, when they were
/// enqueued otherwise.
pub fn list_key(message: &Message) -> Option<DateTime<Utc>> {
    match message.status {
        MessageStatus::Sent => message.sent_at,
        MessageStatus::Failed | MessageStatus::Cancelled => Some(message.updated_at),
        MessageStatus::Pending | MessageStatus::Sending => Some(message.created_at),
    }
}

/// One instance as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub in_flight: u32,
    pub sending: bool,
}

/// What happened in one minute, for the console's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteActivity {
    pub minute: DateTime<Utc>,
    pub sent: u64,
    pub failed: u64,
}

/// The queue as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    pub pending: u64,
    pub oldest_pending_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed while {action}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database schema could not be migrated")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("message {id} holds a value the service cannot read: {problem}")]
    CorruptRow { id: Uuid, problem: String },
}

impl StoreError {
    /// The database refused the statement for what it holds (a constraint, or a value it cannot store):
    /// sent again unchanged it fails again, unlike a lost connection or a timeout.
    pub fn is_refusal(&self) -> bool {
        let Self::Database {
            source: sqlx::Error::Database(error),
            ..
        } = self
        else {
            return false;
        };
        // SQLSTATE class 22 is Postgres's "data exception" (a NUL in text, a value out of range).
        let data_exception = error
            .code()
            .is_some_and(|code| code.len() == 5 && code.starts_with("22"));
        data_exception || !matches!(error.kind(), sqlx::error::ErrorKind::Other)
    }
}

/// The store for `DATABASE_URL`, chosen by its scheme; it connects on first use.
pub fn connect(url: &str) -> Result<Arc<dyn MessageStore>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect_lazy(url)?))
    } else {
        Ok(Arc::new(PostgresStore::connect_lazy(url)?))
    }
}

/// The seam between the dispatcher and its database.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Applies pending migrations; safe to run from several instances at once.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Answers when the database does.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Enqueues validated messages as `pending`, due now, in one statement, queued in the order given.
    /// Returns the stored rows in that order.
    async fn insert_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError>;

    async fn get(&self, id: Uuid) -> Result<Option<Message>, StoreError>;

    /// `sending` rows whose lease expired go back to `pending`, keeping their place in the queue (they
    /// were due when claimed). Returns their ids.
    async fn rescue_expired_leases(&self) -> Result<Vec<Uuid>, StoreError>;

    /// Claims up to `limit` due `pending` rows, oldest first, for `owner` during `lease`; `sending` now.
    /// Rows claimed by another instance at the same moment are skipped, never shared.
    async fn claim_due(&self, limit: u32, owner: &str, lease: Duration) -> Result<Vec<ClaimedMessage>, StoreError>;

    /// Records what each claim came to: its attempt in the history (once per claim, however often this
    /// is called, and even when the row has moved on) and its message's next state, under the fence
    /// `NextState` names. Returns, in order, whether each message changed (`false`: the claim was lost,
    /// or the row was already final). Results for one message apply in the order given.
    async fn finish_claims(&self, results: &[Finish]) -> Result<Vec<bool>, StoreError>;

    /// `sending` → `pending`, in its old place, if `claim` still holds the row, and the attempt is not counted:
    /// for claims given back unsent because sending stopped. Returns whether it did.
    async fn release_if_claimed(&self, claim: &Claim) -> Result<bool, StoreError>;

    /// Messages in `status`, newest first by `list_key`, after `cursor` when given.
    async fn list_by_status(
        &self,
        status: MessageStatus,
        limit: u32,
        cursor: Option<PageCursor>,
    ) -> Result<Vec<Message>, StoreError>;

    /// A message's POSTs, oldest first.
    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>, StoreError>;

    /// `failed` → `pending`, due now, with a fresh count of attempts (the history stays).
    async fn retry_if_failed(&self, id: Uuid) -> Result<Transition, StoreError>;

    /// `pending` → `cancelled`.
    async fn cancel_if_pending(&self, id: Uuid) -> Result<Transition, StoreError>;

    async fn queue_stats(&self) -> Result<QueueStats, StoreError>;

    /// Deletes up to `limit` sent messages sent before `before` (oldest first), with their history.
    /// Returns how many went.
    async fn delete_sent_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Seeds whether sending is on for every replica, unless an earlier start already did; returns the
    /// setting in force.
    async fn seed_sending(&self, sending: bool, by: &str) -> Result<bool, StoreError>;

    /// Turns sending on or off for every replica.
    async fn set_sending(&self, sending: bool, by: &str) -> Result<(), StoreError>;

    /// Records that `replica` is alive and returns whether sending is on, in one round trip.
    async fn heartbeat(&self, replica: &Replica) -> Result<bool, StoreError>;

    /// Instances seen since `since`, oldest start first.
    async fn list_replicas(&self, since: DateTime<Utc>) -> Result<Vec<Replica>, StoreError>;

    /// Removes a replica that is shutting down.
    async fn forget_replica(&self, id: &str) -> Result<(), StoreError>;

    /// Messages sent and failed per minute since `since`, oldest minute first; minutes with neither are
    /// left out.
    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Vec<MinuteActivity>, StoreError>;
}
