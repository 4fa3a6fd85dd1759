//! The message store: every state a message can be in, and the only transitions between them.
//!
//! ```text
//!               claim_due                      finish_claims: Sent
//!  ┌─────────┐ ──────────────▶ ┌─────────┐ ─────────────────────────▶ ┌────────┐
//!  │ pending │                 │ sending │                            │  sent  │  final (delete_sent_before
//!  └─────────┘ ◀────────────── └─────────┘ ─────────────────────────▶ ├────────┤  prunes it after SENT_RETENTION)
//!    │          finish_claims: RetryLater  finish_claims: Failed      │ failed │  final
//!    │          finish_claims: PutBack                                └────────┘
//!    │          rescue_expired_leases (the lease ran out: its sender died or hung)
//!    │
//!    ├── claim_due, due but past its expires_at ──▶ expired (final, never sent)
//!    └── claim_due, due but its number opted out ──▶ suppressed (final, never sent)
//!
//!  operators:  failed ──retry_if_failed──▶ pending ──cancel_if_pending──▶ cancelled (final)
//! ```
//!
//! A message is due at its `next_attempt_at`: now, its `send_at`, or after a retry's delay. A claim takes
//! due rows high priority first (one lane of the due index per priority; a row due for longer than
//! `PRIORITY_AGING` one level up), oldest first within one.
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
//! whole batch in one (drawing on the cluster's pace in the same statement), and `finish_claims` writes a
//! whole flush of results (history and state) in one. The fences are per row, so batching changes how many round trips a message costs, not what may
//! happen to it.
//!
//! Only this module speaks SQL, behind seams on one database: `MessageStore` (the messages, their
//! transitions and the lists and counts read from them), `ClusterControl` (`cluster.rs`: the sending
//! switch and the replicas' heartbeats), `ReceiptStore` (`receipts.rs`: delivery receipts and the
//! delivery state they move), `StatusEventStore` (the status events' outbox), `OptOutList`
//! (`opt_outs.rs`: the numbers that opted out), `Campaigns` (`campaigns.rs`: pausing, resuming,
//! cancelling and counting a campaign's messages) and `InboundLog` (replies from phones). `connect` opens
//! a `Database`, which is all of them; each caller is handed only the seam it needs.
//!
//! `postgres.rs` holds the statements for Postgres (several replicas) and `sqlite.rs` mirrors it for
//! the embedded file (one instance, or a few processes on one machine), with the same names in the same
//! order; only dialect differs between them. The hot statements sit in `.sql` files beside each backend
//! (`postgres/`, `sqlite/`) and the statements both run as they are in `list/` and `receipts/`: the load
//! scripts read those same files. What is not dialect lives once: the rows and their one conversion into
//! the domain (`rows.rs`), the status → sort column table and the list statements (`list.rs`), each seam
//! beside the messages (`receipts.rs`, `status_events.rs`, `opt_outs.rs`, `campaigns.rs`, `inbound.rs`,
//! `cluster.rs`), implemented once over what a backend gives it (`backend.rs`: its pool, spans, lists and
//! clock) and the statement texts of its `*Sql` trait, and, below, the error wrapping, `ping` and what an
//! operator's transition came to.

mod backend;
mod campaigns;
mod cluster;
mod inbound;
mod list;
mod opt_outs;
mod postgres;
mod receipts;
mod rows;
mod sqlite;
mod status_events;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
pub use campaigns::{CampaignSummary, Campaigns};
use chrono::{DateTime, Utc};
pub use cluster::{ClusterControl, Replica, Switch};
pub use inbound::{InboundLog, InboundReply, StoredReply, TakenReply};
pub use list::list_key;
pub use opt_outs::{OptOut, OptOutList};
pub use postgres::PostgresStore;
pub use receipts::{
    DeliveryCounts, PendingReceipts, ReceiptFilter, ReceiptOutcome, ReceiptStore, Settlement, StoredReceipt,
};
pub use sqlite::SqliteStore;
pub use status_events::{
    EventDelivery, EventFeed, EventStatus, HandedEvents, HeldEvent, OutboxStats, StatusEventStore, StoredEvent,
};
use uuid::Uuid;

use crate::domain::{Attempt, Message, MessageStatus, NewMessage, Priority, ProviderMessageId};

/// One batch of a prune that walks its table in `seq` order (status events, receipts): it looks at up to
/// `limit` rows past `after` and deletes those old enough. Walking on past what it kept, a row that ages
/// late (an event delivered after days of retries, or replayed) no longer ends each round at the head
/// of the table, where the oldest by `seq` are the first to age out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneBatch {
    pub deleted: u64,
    /// Where the next batch starts: the last `seq` looked at, when the batch looked at all it could (more
    /// may follow); `None` at the table's end.
    pub next_after: Option<i64>,
}

impl PruneBatch {
    /// A batch that looked at `looked_at` rows of `limit`, up to `last`, and deleted `deleted`.
    pub(crate) fn of(deleted: u64, looked_at: i64, limit: u32, last: Option<i64>) -> Self {
        Self {
            deleted,
            next_after: last.filter(|_| looked_at >= i64::from(limit)),
        }
    }
}

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
    pub priority: Priority,
    /// The recipient's IANA zone as stored (any text, from plain SQL), for quiet hours.
    pub timezone: Option<String>,
    /// Never posted after this.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a claim asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    /// The most rows to claim.
    pub limit: u32,
    /// The claiming instance, written on each row it claims.
    pub owner: &'a str,
    /// How long the claims are owned before a rescue may take them.
    pub lease: Duration,
    /// `RATE_LIMIT` in messages a second: a cap every replica draws on; `None` for no cap.
    pub rate_limit: Option<f64>,
    /// Where the claimant's last claims ended in each priority's lane: each lane's scan starts after
    /// its place. `None` (or a lane without a place) scans from the oldest due row, which also finds the
    /// rows that came due behind the frontier.
    pub after: Option<Frontier>,
    /// `PRIORITY_AGING`: a message due for longer than this counts as one priority higher.
    pub aging: Duration,
}

/// A provider's 429, as the cluster's pace is told of it.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    /// The answer's `Retry-After`; `None` when it gave none.
    pub retry_after: Option<Duration>,
    /// `RATE_LIMIT` in messages a second.
    pub rate_limit: Option<f64>,
    /// Answers the telling instance had over the last second, recorded or not: with no rate in force, the
    /// cut halves what went through, and the database's count alone misses what is not yet flushed.
    pub answered_here: u32,
}

/// A place in one priority's due queue: the `next_attempt_at` and `seq` of a claimed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuePlace {
    pub due_at: DateTime<Utc>,
    pub seq: i64,
}

/// Where claims reached in each priority's lane of the due queue: the claim reads one lane per
/// priority, each from its own place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Frontier {
    lanes: [Option<QueuePlace>; 3],
}

impl Frontier {
    /// The place reached in `priority`'s lane, if any.
    pub fn lane(&self, priority: Priority) -> Option<QueuePlace> {
        self.lanes[priority.index()]
    }

    /// Moves `priority`'s lane on to `place`, never back.
    pub fn reach(&mut self, priority: Priority, place: QueuePlace) {
        let lane = &mut self.lanes[priority.index()];
        *lane = (*lane).max(Some(place));
    }

    /// Each lane moved on to where `other` reached, never back.
    pub fn advance(&mut self, other: &Frontier) {
        for priority in Priority::ALL {
            if let Some(place) = other.lane(priority) {
                self.reach(priority, place);
            }
        }
    }

    /// Whether this stopped behind `other` in a lane both reached.
    pub fn is_behind(&self, other: &Frontier) -> bool {
        Priority::ALL
            .into_iter()
            .any(|p| matches!((self.lane(p), other.lane(p)), (Some(mine), Some(theirs)) if mine < theirs))
    }
}

/// What a claim came to: the rows it claimed, and the cluster's pace that bounded it.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// In the order claimed: by priority (aged rows one level up), then oldest first.
    pub messages: Vec<ClaimedMessage>,
    /// Due rows the claim ended unsent instead, and the final state it gave each: `expired` (past its
    /// `expires_at`) or `suppressed` (its number opted out).
    pub ended: Vec<(Uuid, MessageStatus)>,
    pub pace: Pace,
    /// Where the claimed messages reached in each lane, where the next claim may resume; `None` when
    /// none was claimed.
    pub frontier: Option<Frontier>,
}

/// The cluster's pace as a claim found it (see `migrations/postgres/*_send_rate.sql`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pace {
    /// The rate in force, messages a second: `RATE_LIMIT`, or a provider's 429 cut while it grows back;
    /// `None` when nothing caps it.
    pub rate: Option<f64>,
    /// A provider's 429 paused every replica's claims for this long still.
    pub paused_for: Option<Duration>,
    /// The rate let this claim take fewer rows than asked: the next one fits after this long.
    pub next_in: Option<Duration>,
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
    /// `sending` → `pending`, if the claim still holds the row, without counting the attempt: a claim
    /// given back unsent (sending stopped, or it waited too long), or a POST the provider throttled (429).
    /// Due again after `after`, or, with none, at once in its old place.
    PutBack {
        after: Option<Duration>,
        error: Option<String>,
    },
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
// One per operator request, returned and dropped at once: boxing the message would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Transition {
    /// Boxed: a message is far larger than the other answers.
    Changed(Box<Message>),
    /// The message is in another state, which the request does not apply to.
    Refused(MessageStatus),
    Missing,
}

impl Transition {
    /// What an operator's statement on message `id` came to: the row it changed, or else why it changed
    /// nothing, read back from `store`.
    async fn of(changed: Option<Message>, id: Uuid, store: &dyn MessageStore) -> Result<Self, StoreError> {
        if let Some(message) = changed {
            return Ok(Self::Changed(Box::new(message)));
        }
        Ok(match store.get(id).await? {
            Some(message) => Self::Refused(message.status),
            None => Self::Missing,
        })
    }
}

/// Which expired leases a rescue may take (see `MessageStore::rescue_expired_leases`).
#[derive(Debug, Clone, Copy)]
pub struct Rescue<'a> {
    /// The rescuing instance (its `lease_owner`), when its expired claims not in `live` are lost ones:
    /// `None` while a claim of its own is under way, whose rows reach `live` only once it is done.
    pub owner: Option<&'a str>,
    /// The claim tokens the rescuing instance still holds.
    pub live: &'a [Uuid],
    /// A replica whose heartbeat is younger than this keeps its leases.
    pub owner_fresh: Duration,
    /// Whether the expired leases of other replicas whose heartbeats are older are taken: not until the
    /// rescuer has reached the database long enough to have seen a live one beat (after an outage every
    /// heartbeat is old, the live replicas' too).
    pub others: bool,
    /// Only leases that ran out within this long before now (by the database's clock); `None` for all.
    pub expired_within: Option<Duration>,
}

/// What happened in one minute, for the console's chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteActivity {
    pub minute: DateTime<Utc>,
    pub sent: u64,
    pub failed: u64,
}

/// A message to a number, sent or being sent: what `RECIPIENT_DAILY_LIMIT` counts.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecentSend {
    pub phone_number: String,
    /// `None` while it is being sent (claimed by another batch or replica).
    pub sent_at: Option<DateTime<Utc>>,
}

/// The queue as an operator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    pub pending: u64,
    /// How long the pending message due the longest has been due: one scheduled ahead, waiting out a
    /// retry's backoff, or held (quiet hours, the daily cap) waits by design and does not count until
    /// it comes due, nor does one of a paused campaign. `None` when none is due.
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
    /// The database could not be reached (`is_unreachable`: a Postgres restart too), SQLite's file
    /// stayed busy with another writer past the busy timeout, or Postgres gave up on the statement (its
    /// `statement_timeout`, a cancel, a lock it could not get, a deadlock or serialization failure: rolled
    /// back whole): worth trying again shortly (a 503), unlike a statement that failed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            _ if self.is_unreachable() => true,
            Self::Database {
                source: sqlx::Error::Database(error),
                ..
            } if error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() => error
                .code()
                .is_some_and(|code| matches!(code.as_ref(), "57014" | "55P03" | "40001" | "40P01")),
            Self::Database {
                source: sqlx::Error::Database(error),
                ..
            } if error.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => error
                .code()
                .and_then(|code| code.parse::<i32>().ok())
                // SQLITE_BUSY with its extended codes (the low byte is the primary): another writer held
                // the file. (SQLITE_LOCKED is a conflict inside one connection: a bug, not a wait.)
                .is_some_and(|code| code & 0xff == 5),
            _ => false,
        }
    }

    /// The database could not be reached, the pool had no connection to give, or Postgres ended or
    /// refused the connection (a restart: 57P01 to 57P03, an idle session's timeout 57P05, and the
    /// connection failures of class 08 but 08P01, a protocol violation, which is a bug of ours), or
    /// refused a new one: the database not accepting connections (55000, `ALLOW_CONNECTIONS false`), the
    /// login refused (28000, 28P01), the database gone (3D000), too many connections (53300). What an
    /// outage looks like, unlike SQLite's file being busy with another writer, or a statement that failed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Database {
                source: sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
                ..
            } => true,
            Self::Database {
                source: sqlx::Error::Database(error),
                ..
            } if error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() => {
                error.code().is_some_and(|code| {
                    matches!(
                        code.as_ref(),
                        "08000"
                            | "08001"
                            | "08003"
                            | "08004"
                            | "08006"
                            | "57P01"
                            | "57P02"
                            | "57P03"
                            | "57P05"
                            | "55000"
                            | "28000"
                            | "28P01"
                            | "3D000"
                            | "53300"
                    )
                })
            }
            _ => false,
        }
    }

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

/// Wraps a failed statement with what the store was doing.
fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { action, source }
}

/// `SELECT 1`, the same on every backend.
async fn ping<DB>(pool: &sqlx::Pool<DB>) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
{
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(db("answering a ping"))
}

/// Another pool of `pool`'s settings and connect options, connecting on first use
/// (`Database::with_pool_of_its_own`).
fn pool_like<DB: sqlx::Database>(pool: &sqlx::Pool<DB>) -> sqlx::Pool<DB> {
    pool.options()
        .clone()
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// The database for `DATABASE_URL`, chosen by its scheme; it connects on first use.
pub fn connect(url: &str) -> Result<Arc<dyn Database>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect_lazy(url)?))
    } else {
        Ok(Arc::new(PostgresStore::connect_lazy(url)?))
    }
}

/// Every seam on one database, as `connect` opens it. Callers are handed the seam they need
/// (`Arc<dyn MessageStore>`, `Arc<dyn ReceiptStore>`, `Arc<dyn OptOutList>` and so on, by upcasting),
/// and start-up migrates it.
#[async_trait]
pub trait Database:
    MessageStore + ClusterControl + ReceiptStore + StatusEventStore + OptOutList + Campaigns + InboundLog
{
    /// Applies pending migrations; safe to run from several instances at once.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The same database through a pool of its own, sharing the outbox (events a request writes are
    /// handed over as the dispatcher's are). The API's handlers use it, so that reads hanging in the
    /// database cannot take the connections the dispatcher's claims, flushes and heartbeats need: a
    /// flush held past LEASE lets another replica send its messages again.
    fn with_pool_of_its_own(&self) -> Arc<dyn Database>;

    /// Which database this is, for the log: the backend and where it is, never a password.
    fn describe(&self) -> String;

    /// Closes the pool once every connection in use is given back. sqlx returns a connection from its
    /// `Drop` by spawning on the current runtime, so a connection still out when the runtime goes away
    /// panics: close before the runtime ends.
    async fn close(&self);

    /// From now on, `finish_claims` and `settle_receipts` write a status event beside each change a
    /// sender hears about, in the same transaction (`STATUS_WEBHOOK_URL` set).
    fn write_status_events(&self, on: bool);

    /// From now on, an event written while no other of its message is pending is written leased and
    /// handed to `feed` once it commits (this process's `StatusDispatcherActor`).
    fn hand_status_events_to(&self, feed: EventFeed);
}

/// The seam between the dispatcher and its messages: every transition of the diagram above, and what
/// the API and the console read of the messages.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Answers when the database does.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Enqueues validated messages as `pending`, due now (or at their `send_at`), in one statement, queued
    /// in the order given.
    /// Returns the stored rows in that order.
    async fn insert_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError>;

    async fn get(&self, id: Uuid) -> Result<Option<Message>, StoreError>;

    /// `sending` rows whose lease expired go back to `pending`, keeping their place in the queue (they
    /// were due when claimed), but for the claims a live sender still holds: the rescuer's own claims in
    /// `live` (it will record or give them back) and those of another replica that sent a heartbeat
    /// within `owner_fresh` (it will too). The rescuer's own claims not in `live` are taken: it lost
    /// them (a claim that committed, then failed before they were handed out). With `expired_within`, only leases that ran out that recently are looked
    /// at. Returns their ids.
    async fn rescue_expired_leases(&self, rescue: &Rescue<'_>) -> Result<Vec<Uuid>, StoreError>;

    /// Claims up to `request.limit` due `pending` rows, high before normal before low (a row due for
    /// longer than `request.aging` one level up), oldest first within one, for its owner during its lease,
    /// as many as the cluster's pace allows (a 429's pause, `RATE_LIMIT`): `sending` now. Due rows past
    /// their `expires_at` become `expired` instead, and those to an opted-out number `suppressed`: never
    /// handed out. Rows claimed by another instance at
    /// the same moment are skipped, never shared.
    async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Claimed, StoreError>;

    /// Rewrites the numbers of rows claimed under `respelled` (claim token, number in its normal form):
    /// rows another system inserted with the number spelled otherwise (`+90 555 …`), which the claim's
    /// suppression check, the daily cap and the list compare as stored. Only while the claim holds each.
    async fn respell_numbers(&self, respelled: &[(Uuid, String)]) -> Result<(), StoreError>;

    /// The provider answered 429: pauses every replica's claims (for its `retry_after`, or a backoff when
    /// it gave none) and cuts the cluster's rate (`Pace`). Returns how long the pause runs from now.
    async fn throttle(&self, throttle: &Throttle) -> Result<Duration, StoreError>;

    /// Records what each claim came to: its attempt in the history (once per claim, however often this
    /// is called, and even when the row has moved on) and its message's next state, under the fence
    /// `NextState` names. Returns, in order, whether each message changed (`false`: the claim was lost,
    /// or the row was already final). Results for one message apply in the order given.
    async fn finish_claims(&self, results: &[Finish]) -> Result<Vec<bool>, StoreError>;

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

    /// What `RECIPIENT_DAILY_LIMIT` counts for `numbers`: each message sent to one of them since
    /// `since`, oldest first, and each being sent to one now under a claim other than `claims` (the
    /// batch asking), whatever becomes of it.
    async fn sends_to_since(
        &self,
        numbers: &[&str],
        since: DateTime<Utc>,
        claims: &[Uuid],
    ) -> Result<Vec<RecentSend>, StoreError>;

    /// Deletes up to `limit` sent messages sent before `before` (oldest first), with their history.
    /// Returns how many went.
    async fn delete_sent_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Messages sent and failed per minute since `since`, oldest minute first; minutes with neither are
    /// left out.
    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Vec<MinuteActivity>, StoreError>;
}
