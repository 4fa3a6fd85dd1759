//! The SQL the service runs against SQLite: `postgres.rs` in SQLite's terms, same names in the same
//! order, and how SQLite's types stand for the shared ones (`Columns`; `Backend`: spans in microseconds,
//! lists as JSON, this process's clock bound last). The claim and a flush's statements are in
//! `sqlite/*.sql`; the statements shared with Postgres, in `list/` and `receipts/`.
//!
//! SQLite has one writer at a time, so each claim (`UPDATE … WHERE seq IN (SELECT … LIMIT n) RETURNING`)
//! is atomic without row locks: two processes on one file never claim the same row. Times are INTEGER
//! microseconds since the epoch and `now` comes from this process's clock; uuids are TEXT.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult},
};
use uuid::Uuid;

use super::{
    Claim, ClaimRequest, Claimed, Database, EventDelivery, Finish, HeldEvent, MessageStore, MinuteActivity, PageCursor,
    QueueStats, ReceiptOutcome, RecentSend, Replica, Rescue, StoreError, Throttle, Transition, db, list, ping,
    pool_like,
    rows::{self, Columns, OptOutRow, event_columns, message_columns, receipt_columns},
    status_events::{self, EventFeed, EventOutbox, EventWriter, StatusEventSql},
};
// What the seams implemented once, generic over the backend, ask of this one.
use super::{backend::Backend, campaigns::CampaignSql, cluster::ClusterSql, inbound::InboundSql};
use super::{
    opt_outs::InsertOptOut,
    receipts::{self, AppliedReceipt, DeliveryRow, ReceiptSql},
};
use crate::domain::{Attempt, Message, MessageStatus, NewMessage, NewStatusEvent, Priority, Receipt};

/// A writer waits this long for another (another process on the same file) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 4;
/// How long start-up reads the applied migrations again while another process applies them
/// (`Database::migrate`): the schedule migration rebuilds `messages`, a while on a large file.
const MIGRATE_RACE_WITHIN: Duration = Duration::from_secs(120);

/// SQLITE_BUSY, or one of its extended codes: another connection held the file past the busy timeout.
fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    error
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// `?1` rows asked, RATE_LIMIT `?2`, now `?3`: what the pace grants, in the claim's transaction.
const DRAW_PACE: &str = include_str!("sqlite/draw_pace.sql");
/// `?1` rows at most, for owner `?2`, at `?3` (now) for `?4` µs, each lane after its place (`?5` to
/// `?10`), aging after `?11` µs; `?12` rows read, those that end unsent (expired, suppressed) beside them.
const CLAIM_DUE: &str = include_str!("sqlite/claim_due.sql");
/// Retry-After `?1`, RATE_LIMIT `?2`, now `?3`.
const THROTTLE: &str = include_str!("sqlite/throttle.sql");
/// `?1` to `?9`: the claim's token, the message and the attempt's columns in `message_attempts` order.
const RECORD_ATTEMPT: &str = include_str!("sqlite/record_attempt.sql");
/// One result of a flush, `?1` to `?9`: see the file.
const FINISH_CLAIM: &str = include_str!("sqlite/finish_claim.sql");
/// Receipt `?1` applied to message `?2` at `?3`, then settled by `SETTLE_APPLIED_RECEIPT`: see the files.
const APPLY_RECEIPT: &str = include_str!("sqlite/apply_receipt.sql");
const SETTLE_APPLIED_RECEIPT: &str = include_str!("sqlite/settle_applied_receipt.sql");
/// Event `?1` (its `seq`), held at attempt `?6`, to status `?2`, due again `?3` µs after `?5` (now) when
/// given, with error `?4`; left as it is when no longer pending at that attempt (see
/// `postgres/finish_events.sql`). Its id, message and `delivered_at` (kept by a replay) when it was
/// recorded.
const FINISH_EVENT: &str = "
UPDATE status_events
   SET status = ?2, lease_expires_at = NULL, last_error = ?4,
       next_attempt_at = CASE WHEN ?3 IS NOT NULL THEN ?5 + ?3 ELSE next_attempt_at END,
       delivered_at = CASE WHEN ?2 = 'delivered' THEN ?5 ELSE delivered_at END
 WHERE seq = ?1 AND status = 'pending' AND attempts = ?6
RETURNING id, message_id, delivered_at";
/// After event `?1` (id `?2`) of message `?3` failed, the pending ones written after it fail with it, unless
/// the receiver acknowledged it before (a replay).
const FAIL_LATER_EVENTS: &str = "
UPDATE status_events
   SET status = 'failed', lease_expires_at = NULL,
       last_error = 'not sent: event ' || ?2 || ' of this message, before it, failed'
 WHERE message_id = ?3 AND seq > ?1 AND status = 'pending'";

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `Database::write_status_events` and `hand_status_events_to`.
    outbox: Arc<EventOutbox>,
}

impl SqliteStore {
    /// Opens (and creates, with its folder, when missing) the database file of `url`, in WAL mode.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(db("parsing DATABASE_URL"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        if let Some(folder) = options.get_filename().parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|source| StoreError::Database {
                action: "creating the database folder",
                source: sqlx::Error::Io(source),
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            outbox: Arc::default(),
        })
    }

    /// Whether migration `version` is recorded applied (a read that fails says no).
    async fn applied(&self, version: i64) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE version = ?1 AND success")
            .bind(version)
            .fetch_one(&self.pool)
            .await
            .is_ok_and(|n| n > 0)
    }
}

/// TEXT uuids, INTEGER microseconds since the epoch, 64-bit INTEGERs.
impl Columns for SqliteStore {
    type DB = sqlx::Sqlite;
    type Id = String;
    type Time = i64;
    type Int = i64;

    fn uuid(stored: &String) -> Result<Uuid, uuid::Error> {
        Uuid::parse_str(stored)
    }

    fn time(stored: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(stored)
    }

    fn stored_uuid(id: Uuid) -> String {
        id.to_string()
    }

    fn stored_time(at: DateTime<Utc>) -> i64 {
        micros(at)
    }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

/// Spans in microseconds, as the times are; this process's clock, bound last.
impl Backend for SqliteStore {
    type Exec<'p> = &'p SqlitePool;
    type Conn<'c> = &'c mut SqliteConnection;
    type Span = i64;
    type Ints = String;
    type Texts = String;

    fn exec(&self) -> &SqlitePool {
        &self.pool
    }

    fn conn(tx: &mut Tx) -> &mut SqliteConnection {
        tx
    }

    fn span(duration: Duration) -> i64 {
        micros_of(duration)
    }

    fn ints(items: &[i64]) -> String {
        serde_json::Value::from(items.to_vec()).to_string()
    }

    fn texts<T: AsRef<str>>(items: &[T]) -> String {
        serde_json::Value::from(items.iter().map(AsRef::as_ref).collect::<Vec<&str>>()).to_string()
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    fn outbox(&self) -> &EventOutbox {
        &self.outbox
    }

    fn clock() -> Option<i64> {
        Some(micros(Utc::now()))
    }
}

type MessageRow = rows::MessageRow<SqliteStore>;
type ClaimRow = rows::ClaimRow<SqliteStore>;
type AttemptRow = rows::AttemptRow<SqliteStore>;
type EventRow = rows::EventRow<SqliteStore>;

#[async_trait]
impl Database for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes no lock on SQLite: two processes starting on one file both read the same list of
        // migrations to apply, and the second fails on what the first committed meanwhile (the file
        // busy, a table or column already there). Read again, it finds them applied. Any other failure
        // is the migration's own, and final.
        let started = std::time::Instant::now();
        loop {
            let error = match sqlx::migrate!("./migrations/sqlite").run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            // Each migration commits with its row in `_sqlx_migrations`: one that failed here and is
            // applied now was applied by the other process.
            let lost_a_race = match &error {
                sqlx::migrate::MigrateError::Execute(error) => is_busy(error),
                sqlx::migrate::MigrateError::ExecuteMigration(error, version) => {
                    is_busy(error) || self.applied(*version).await
                }
                _ => false,
            };
            match error {
                error if lost_a_race && started.elapsed() < MIGRATE_RACE_WITHIN => {
                    log::warn!(
                        "another process is migrating the SQLite file too; reading what is applied again: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                error => return Err(StoreError::Migrate(error)),
            }
        }
    }

    fn with_pool_of_its_own(&self) -> Arc<dyn Database> {
        Arc::new(Self {
            pool: pool_like(&self.pool),
            outbox: Arc::clone(&self.outbox),
        })
    }

    fn describe(&self) -> String {
        format!("SQLite file {}", self.pool.connect_options().get_filename().display())
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn write_status_events(&self, on: bool) {
        self.outbox.write(on);
    }

    fn hand_status_events_to(&self, feed: EventFeed) {
        self.outbox.hand_to(feed);
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.pool).await
    }

    async fn insert_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        // One transaction, one commit: SQLite inserts a row in microseconds, the commit is what costs.
        let mut tx = self.pool.begin().await.map_err(db("inserting messages"))?;
        let mut stored = Vec::with_capacity(messages.len());
        let now = micros(Utc::now());
        for message in messages {
            // Due at its send_at, or now (see postgres.rs).
            let row: MessageRow = sqlx::query_as(concat!(
                "INSERT INTO messages (id, phone_number, content, send_at, expires_at, priority, timezone, campaign,
                                       next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?8, ?9, max(?7, coalesce(?4, ?7)), ?7, ?7) RETURNING ",
                message_columns!()
            ))
            .bind(Uuid::now_v7().to_string())
            .bind(message.to.as_ref())
            .bind(message.content.as_ref())
            .bind(message.when.send_at.map(micros))
            .bind(message.when.expires_at.map(micros))
            .bind(i64::from(message.when.priority.level()))
            .bind(now)
            .bind(message.when.timezone.map(|tz| tz.name()))
            .bind(message.when.campaign.as_deref())
            .fetch_one(&mut *tx)
            .await
            .map_err(db("inserting messages"))?;
            stored.push(Message::try_from(row)?);
        }
        tx.commit().await.map_err(db("inserting messages"))?;
        Ok(stored)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Message>, StoreError> {
        let row: Option<MessageRow> =
            sqlx::query_as(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = ?1"))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reading a message"))?;
        row.map(Message::try_from).transpose()
    }

    async fn rescue_expired_leases(&self, rescue: &Rescue<'_>) -> Result<Vec<Uuid>, StoreError> {
        // SQLite binds no arrays: the live tokens go in as a JSON array.
        let live = serde_json::Value::from(rescue.live.iter().map(ToString::to_string).collect::<Vec<_>>());
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE messages
                SET status = 'pending',
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                    last_error = 'lease expired before a result was recorded', updated_at = ?1
              WHERE status = 'sending' AND lease_expires_at < ?1
                AND (?4 IS NULL OR lease_expires_at >= ?1 - ?4)
                AND lease_token NOT IN (SELECT value FROM json_each(?2))
                AND (lease_owner = ?5
                     OR (?6 AND NOT EXISTS (SELECT 1 FROM replicas r
                                             WHERE r.id = messages.lease_owner AND r.last_seen > ?1 - ?3)))
          RETURNING id",
        )
        .bind(micros(Utc::now()))
        .bind(live.to_string())
        .bind(micros_of(rescue.owner_fresh))
        .bind(rescue.expired_within.map(micros_of))
        .bind(rescue.owner)
        .bind(rescue.others)
        .fetch_all(&self.pool)
        .await
        .map_err(db("rescuing expired leases"))?;
        ids.iter().map(rows::message_id::<Self>).collect()
    }

    async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Claimed, StoreError> {
        // The pace and the claim in one transaction: with one writer at a time, one atomic step.
        let now = micros(Utc::now());
        let mut tx = self.pool.begin().await.map_err(db("claiming due messages"))?;
        let (granted, rate, paused_for, next_in): (i64, Option<f64>, Option<f64>, Option<f64>) =
            sqlx::query_as(DRAW_PACE)
                .bind(i64::from(request.limit))
                .bind(request.rate_limit)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(db("drawing on the cluster's pace"))?;
        let mut claim = sqlx::query_as(CLAIM_DUE)
            .bind(granted)
            .bind(request.owner)
            .bind(now)
            .bind(micros_of(request.lease));
        for priority in Priority::ALL {
            let place = request.after.and_then(|after| after.lane(priority));
            claim = claim
                .bind(place.map_or(i64::MIN, |place| micros(place.due_at)))
                .bind(place.map_or(i64::MIN, |place| place.seq));
        }
        let rows: Vec<ClaimRow> = claim
            .bind(micros_of(request.aging))
            .bind(i64::from(request.limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db("claiming due messages"))?;
        tx.commit().await.map_err(db("claiming due messages"))?;
        let mut claimed = rows::claimed(rows)?;
        // How long until the next message fits only when the rate was what held the claim back: fewer
        // claimed than it granted is a drained queue (as `claim_due.sql` answers).
        let rate_bound =
            granted < i64::from(request.limit) && i64::try_from(claimed.messages.len()).unwrap_or(i64::MAX) >= granted;
        claimed.pace = rows::pace(rate, paused_for, next_in.filter(|_| rate_bound));
        Ok(claimed)
    }

    async fn throttle(&self, throttle: &Throttle) -> Result<Duration, StoreError> {
        let paused_for: f64 = sqlx::query_scalar(THROTTLE)
            .bind(throttle.retry_after.map(|after| after.as_secs_f64()))
            .bind(throttle.rate_limit)
            .bind(micros(Utc::now()))
            .bind(i64::from(throttle.answered_here))
            .fetch_one(&self.pool)
            .await
            .map_err(db("pausing the cluster for the provider's 429"))?;
        Ok(Duration::from_secs_f64(paused_for.clamp(0.0, 86_400.0)))
    }

    async fn finish_claims(&self, results: &[Finish]) -> Result<Vec<bool>, StoreError> {
        // Row by row in one transaction: SQLite has no unnest, and its statements cost microseconds.
        let mut tx = self.pool.begin().await.map_err(db("recording results"))?;
        let mut changed = Vec::with_capacity(results.len());
        for result in results {
            if let Some(attempt) = &result.attempt {
                record_attempt(&mut tx, &result.claim, attempt).await?;
            }
            changed.push(finish_one(&mut tx, result).await?);
        }
        status_events::commit_finishes::<Self>(tx, results, changed, &self.outbox).await
    }

    async fn list_by_status(
        &self,
        status: MessageStatus,
        limit: u32,
        cursor: Option<PageCursor>,
    ) -> Result<Vec<Message>, StoreError> {
        let rows: Vec<MessageRow> = list::page(
            status,
            limit,
            cursor.map(|cursor| (micros(cursor.at), cursor.id.to_string())),
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing messages"))?;
        rows.into_iter().map(Message::try_from).collect()
    }

    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>, StoreError> {
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, http_status, outcome, error, provider_message_id
               FROM message_attempts WHERE message_id = ?1 ORDER BY started_at, attempt",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing attempts"))?;
        rows.into_iter().map(|row| row.into_attempt(id)).collect()
    }

    async fn retry_if_failed(&self, id: Uuid) -> Result<Transition, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "UPDATE messages SET status = 'pending', attempts = 0, next_attempt_at = ?2, updated_at = ?2
              WHERE id = ?1 AND status = 'failed' RETURNING ",
            message_columns!()
        ))
        .bind(id.to_string())
        .bind(micros(Utc::now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("retrying a failed message"))?;
        Transition::of(row.map(Message::try_from).transpose()?, id, self).await
    }

    async fn cancel_if_pending(&self, id: Uuid) -> Result<Transition, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "UPDATE messages SET status = 'cancelled', updated_at = ?2
              WHERE id = ?1 AND status = 'pending' RETURNING ",
            message_columns!()
        ))
        .bind(id.to_string())
        .bind(micros(Utc::now()))
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cancelling a message"))?;
        Transition::of(row.map(Message::try_from).transpose()?, id, self).await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let now = micros(Utc::now());
        let (pending, due_since): (i64, Option<i64>) = sqlx::query_as(
            "SELECT count(*),
                    min(m.next_attempt_at) FILTER (
                        WHERE m.next_attempt_at <= ?1
                          AND NOT EXISTS (SELECT 1 FROM paused_campaigns p WHERE p.campaign = m.campaign))
               FROM messages m WHERE m.status = 'pending'",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting pending messages"))?;
        Ok(QueueStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_pending_age: due_since
                .map(|due| Duration::from_micros(u64::try_from(now.saturating_sub(due)).unwrap_or(0))),
        })
    }

    async fn respell_numbers(&self, respelled: &[(Uuid, String)]) -> Result<(), StoreError> {
        // One row at a time: only rows inserted by plain SQL with an odd spelling come here.
        for (token, number) in respelled {
            sqlx::query("UPDATE messages SET phone_number = ?1 WHERE lease_token = ?2 AND status = 'sending'")
                .bind(number)
                .bind(token.to_string())
                .execute(&self.pool)
                .await
                .map_err(db("rewriting a claimed row's number in its normal form"))?;
        }
        Ok(())
    }

    async fn sends_to_since(
        &self,
        numbers: &[&str],
        since: DateTime<Utc>,
        claims: &[Uuid],
    ) -> Result<Vec<RecentSend>, StoreError> {
        // SQLite binds no arrays: the numbers and tokens go in as JSON arrays.
        let numbers = serde_json::Value::from(numbers.to_vec()).to_string();
        let claims = serde_json::Value::from(claims.iter().map(ToString::to_string).collect::<Vec<_>>()).to_string();
        let rows: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT phone_number, sent_at FROM messages
              WHERE status = 'sent' AND phone_number IN (SELECT value FROM json_each(?1)) AND sent_at >= ?2
             UNION ALL
             SELECT phone_number, NULL FROM messages
              WHERE status = 'sending' AND phone_number IN (SELECT value FROM json_each(?1))
                AND lease_token NOT IN (SELECT value FROM json_each(?3))
             ORDER BY phone_number, sent_at",
        )
        .bind(numbers)
        .bind(micros(since))
        .bind(claims)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting what numbers were sent"))?;
        Ok(rows
            .into_iter()
            .map(|(phone_number, at)| RecentSend {
                phone_number,
                sent_at: at.and_then(Self::time),
            })
            .collect())
    }

    async fn delete_sent_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM messages WHERE seq IN (
                 SELECT seq FROM messages WHERE status = 'sent' AND sent_at < ?1 ORDER BY sent_at LIMIT ?2)",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("deleting old sent messages"))?;
        Ok(result.rows_affected())
    }

    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Vec<MinuteActivity>, StoreError> {
        const MINUTE: i64 = 60_000_000;
        let rows: Vec<rows::ActivityRow<Self>> = sqlx::query_as(
            "SELECT at / ?2 * ?2 AS minute, sum(outcome = 'sent'), sum(outcome = 'failed')
               FROM (SELECT sent_at AS at, 'sent' AS outcome FROM messages WHERE status = 'sent' AND sent_at >= ?1
                     UNION ALL
                     SELECT updated_at, 'failed' FROM messages WHERE status = 'failed' AND updated_at >= ?1)
              GROUP BY minute ORDER BY minute",
        )
        .bind(micros(since))
        .bind(MINUTE)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting activity per minute"))?;
        rows.into_iter().map(rows::minute_activity::<Self>).collect()
    }
}

#[async_trait]
impl ClusterSql for SqliteStore {
    const SEED_SENDING: &'static str = "
        INSERT INTO dispatcher_control (id, sending, changed_by, changed_at) VALUES (1, ?1, ?2, ?3)
        ON CONFLICT (id) DO NOTHING";
    const SET_SENDING: &'static str = "
        INSERT INTO dispatcher_control (id, sending, changed_by, changed_at) VALUES (1, ?1, ?2, ?3)
        ON CONFLICT (id) DO UPDATE SET sending = ?1, changed_by = ?2, changed_at = ?3";

    async fn beat(&self, replica: &Replica) -> Result<Option<(bool, i64)>, StoreError> {
        sqlx::query(
            "INSERT INTO replicas (id, host, started_at, last_seen, in_flight, sending)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET last_seen = ?4, in_flight = ?5, sending = ?6",
        )
        .bind(&replica.id)
        .bind(&replica.host)
        .bind(micros(replica.started_at))
        .bind(micros(Utc::now()))
        .bind(i64::from(replica.in_flight))
        .bind(replica.sending)
        .execute(&self.pool)
        .await
        .map_err(db("recording a heartbeat"))?;
        sqlx::query_as("SELECT sending, changed_at FROM dispatcher_control WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the sending switch"))
    }
}

#[async_trait]
impl ReceiptSql for SqliteStore {
    const PENDING_BY_SEQS: &'static str = concat!(
        "SELECT ",
        receipt_columns!(),
        " FROM receipts WHERE seq IN (SELECT value FROM json_each(?1)) AND outcome = 'pending' ORDER BY seq"
    );
    const PENDING_BY_PROVIDER_IDS: &'static str = concat!(
        "SELECT ",
        receipt_columns!(),
        " FROM receipts WHERE provider_message_id IN (SELECT value FROM json_each(?1))
           AND outcome = 'pending' ORDER BY seq"
    );
    const MESSAGES_BY_PROVIDER_ID: &'static str = "
        SELECT provider_message_id, id FROM messages
         WHERE provider_message_id IN (SELECT value FROM json_each(?1)) AND sent_at IS NOT NULL";
    const LIST_RECEIPTS: &'static str = concat!(
        "SELECT ",
        receipt_columns!(),
        " FROM receipts WHERE outcome IN (SELECT value FROM json_each(?1)) AND seq < ?2
           ORDER BY seq DESC LIMIT ?3"
    );

    const SETTLE_UNAPPLIED: &'static str =
        "UPDATE receipts SET outcome = ?2, settled_at = ?3 WHERE seq = ?1 AND outcome = 'pending' RETURNING outcome";

    async fn store_receipts(&self, receipts: &[Receipt]) -> Result<Vec<i64>, StoreError> {
        // Row by row in one transaction: SQLite has no unnest, and its statements cost microseconds.
        let now = micros(Utc::now());
        let mut tx = self.pool.begin().await.map_err(db("storing receipts"))?;
        let mut seqs = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO receipts (provider_message_id, status, reported_at, error, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
            )
            .bind(receipt.provider_message_id.as_ref())
            .bind(receipt.status.as_str())
            .bind(micros(receipt.reported_at))
            .bind(receipt.error.as_deref())
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("storing receipts"))?;
            seqs.push(seq);
        }
        tx.commit().await.map_err(db("storing receipts"))?;
        Ok(seqs)
    }

    async fn apply_receipts(
        tx: &mut Tx,
        applies: &[(i64, Uuid)],
        with_delivery: bool,
    ) -> Result<Vec<AppliedReceipt>, StoreError> {
        // Receipt by receipt, in the one transaction: SQLite has no data-modifying CTE (and no unnest).
        let now = micros(Utc::now());
        let mut settled = Vec::with_capacity(applies.len());
        for &(seq, message_id) in applies {
            let moved = sqlx::query(APPLY_RECEIPT)
                .bind(seq)
                .bind(message_id.to_string())
                .bind(now)
                .execute(&mut **tx)
                .await
                .map_err(db("applying a receipt"))?
                .rows_affected()
                == 1;
            let outcome: Option<String> = sqlx::query_scalar(SETTLE_APPLIED_RECEIPT)
                .bind(seq)
                .bind(message_id.to_string())
                .bind(moved)
                .bind(now)
                .fetch_optional(&mut **tx)
                .await
                .map_err(db("applying a receipt"))?;
            let Some(outcome) = outcome else {
                continue; // another settler was first
            };
            let delivery = if with_delivery && outcome == ReceiptOutcome::Applied.as_str() {
                let (status, delivered_at, error, provider_id): DeliveryRow<Self> =
                    sqlx::query_as(receipts::DELIVERY_OF)
                        .bind(message_id.to_string())
                        .fetch_one(&mut **tx)
                        .await
                        .map_err(db("reading a delivered message"))?;
                Some((status, delivered_at.and_then(Self::time), error, provider_id))
            } else {
                None
            };
            settled.push(AppliedReceipt { seq, outcome, delivery });
        }
        Ok(settled)
    }
}

#[async_trait]
impl StatusEventSql for SqliteStore {
    // One writer at a time: the UPDATE … WHERE seq IN (SELECT …) is atomic without row locks.
    const CLAIM_DUE_EVENTS: &'static str = concat!(
        "UPDATE status_events SET attempts = attempts + 1, lease_expires_at = ?3 + ?2
          WHERE seq IN (
              SELECT e.seq FROM status_events e
               WHERE e.status = 'pending' AND e.next_attempt_at <= ?3
                 AND (e.lease_expires_at IS NULL OR e.lease_expires_at < ?3)
                 AND NOT EXISTS (SELECT 1 FROM status_events o
                                  WHERE o.message_id = e.message_id AND o.status = 'pending' AND o.seq < e.seq)
               ORDER BY e.next_attempt_at, e.seq
               LIMIT ?1)
      RETURNING ",
        event_columns!()
    );
    const RETRY_EVENT: &'static str = concat!(
        "UPDATE status_events
            SET status = 'pending', next_attempt_at = ?2, lease_expires_at = NULL
          WHERE id = ?1 AND NOT (status = 'pending' AND coalesce(lease_expires_at > ?2, 0)) RETURNING ",
        event_columns!()
    );
    const RETRY_FAILED_BEFORE: &'static str = "
        UPDATE status_events
           SET status = 'pending', next_attempt_at = ?2, lease_expires_at = NULL
         WHERE status = 'failed'
           AND message_id = (SELECT message_id FROM status_events WHERE id = ?1)
           AND seq < (SELECT seq FROM status_events WHERE id = ?1)";
    const PUT_BACK_EVENTS: &'static str = "
        UPDATE status_events
           SET attempts = max(attempts - 1, 0), lease_expires_at = NULL, next_attempt_at = ?4, last_error = ?3
         WHERE (seq, attempts) IN (SELECT s.value, a.value FROM json_each(?1) AS s JOIN json_each(?2) AS a USING (key))
           AND status = 'pending' AND lease_expires_at > ?4";
    const OUTBOX_STATS: &'static str = "
        SELECT count(*) FILTER (WHERE status = 'pending'),
               (?1 - min(created_at) FILTER (WHERE status = 'pending')) / 1e6,
               count(*) FILTER (WHERE status = 'failed')
          FROM status_events WHERE status IN ('pending', 'failed')";

    async fn record_deliveries(&self, deliveries: &[(HeldEvent, EventDelivery)]) -> Result<(), StoreError> {
        // Row by row in one transaction: SQLite has no unnest, and its statements cost microseconds.
        let now = micros(Utc::now());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("recording status event deliveries"))?;
        for (held, delivery) in deliveries {
            let (status, retry_in, error) = rows::event_delivery_row(delivery);
            let recorded: Option<(String, String, Option<i64>)> = sqlx::query_as(FINISH_EVENT)
                .bind(held.seq)
                .bind(status)
                .bind(retry_in.map(micros_of))
                .bind(error)
                .bind(now)
                .bind(i64::from(held.attempt))
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("recording status event deliveries"))?;
            if let (Some((id, message_id, None)), EventDelivery::Failed { .. }) = (recorded, delivery) {
                sqlx::query(FAIL_LATER_EVENTS)
                    .bind(held.seq)
                    .bind(id)
                    .bind(message_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db("failing the events behind a failed one"))?;
            }
        }
        tx.commit().await.map_err(db("recording status event deliveries"))?;
        Ok(())
    }
}

#[async_trait]
impl InsertOptOut for SqliteStore {
    async fn insert_opt_out(&self, to: &str) -> Result<(OptOutRow<Self>, bool), StoreError> {
        // An existing entry is put on the list again as of now, as on Postgres. Each statement writes
        // (or takes the write lock), so the transaction never has to upgrade a read lock.
        let now = micros(Utc::now());
        let mut tx = self.pool.begin().await.map_err(db("adding an opt-out"))?;
        let inserted =
            sqlx::query("INSERT INTO opt_outs (phone_number, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
                .bind(to)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db("adding an opt-out"))?;
        let entry = sqlx::query_as(
            "UPDATE opt_outs SET created_at = max(created_at, ?2) WHERE phone_number = ?1
             RETURNING phone_number, created_at",
        )
        .bind(to)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db("adding an opt-out"))?;
        tx.commit().await.map_err(db("adding an opt-out"))?;
        Ok((entry, inserted.rows_affected() == 1))
    }
}

impl CampaignSql for SqliteStore {
    // SQLite before 3.39 has no FULL JOIN: the counts, then the paused campaigns without messages.
    const LIST_CAMPAIGNS: &'static str = "
        SELECT c.campaign, EXISTS (SELECT 1 FROM paused_campaigns p WHERE p.campaign = c.campaign),
               c.status, count(*)
          FROM messages c WHERE c.campaign IS NOT NULL GROUP BY c.campaign, c.status
        UNION ALL
        SELECT p.campaign, 1, NULL, 0 FROM paused_campaigns p
         WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.campaign = p.campaign)
         ORDER BY 1, 3";
    const PAUSE_CAMPAIGN: &'static str =
        "INSERT INTO paused_campaigns (campaign, paused_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING";
    const CANCEL_CAMPAIGN: &'static str = "UPDATE messages SET status = 'cancelled', updated_at = ?2
          WHERE status = 'pending'
            AND seq IN (SELECT seq FROM messages WHERE campaign = ?1 AND status = 'pending' LIMIT ?3)";
}

impl InboundSql for SqliteStore {
    const RECORD_INBOUND: &'static str = "
        INSERT INTO inbound_messages (id, from_number, content, at, action, received_at)
        VALUES (?1, ?2, ?3, ?4, ?5, ?6)
        RETURNING id, from_number, content, at, received_at, action";
    const ONE_REPLY_OF_A_NUMBER_AT_A_TIME: Option<&'static str> = None;
}

#[async_trait]
impl EventWriter for SqliteStore {
    async fn insert_events(
        tx: &mut Tx,
        events: &[NewStatusEvent],
        offered: &[bool],
        lease: Option<Duration>,
    ) -> Result<Vec<EventRow>, StoreError> {
        let now = micros(Utc::now());
        let mut leased = Vec::new();
        for (event, &offered) in events.iter().zip(offered) {
            let row: EventRow = sqlx::query_as(concat!(
                "INSERT INTO status_events
                        (id, message_id, type, payload, created_at, next_attempt_at, attempts, lease_expires_at,
                         status, last_error)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?5, l.leased, CASE WHEN l.leased THEN ?5 + ?6 END,
                        CASE WHEN f.id IS NULL THEN 'pending' ELSE 'failed' END,
                        'not sent: event ' || f.id || ' of this message, before it, failed'
                   FROM (SELECT (SELECT o.id FROM status_events o
                                  WHERE o.message_id = ?2 AND o.status = 'failed' ORDER BY o.seq LIMIT 1) AS id) AS f,
                        (SELECT ?7 AND ?6 IS NOT NULL
                                AND NOT EXISTS (SELECT 1 FROM status_events o
                                                 WHERE o.message_id = ?2 AND o.status IN ('pending', 'failed'))
                                AS leased) AS l
                 WHERE true
                 RETURNING ",
                event_columns!()
            ))
            .bind(event.id.to_string())
            .bind(event.message_id.to_string())
            .bind(event.kind.as_str())
            .bind(&event.payload)
            .bind(now)
            .bind(lease.map(Self::span))
            .bind(offered)
            .fetch_one(&mut **tx)
            .await
            .map_err(db("writing status events"))?;
            if offered {
                leased.push(row);
            }
        }
        Ok(leased)
    }
}

/// One POST and its result in the history, once per claim; nothing when the message is gone.
async fn record_attempt(tx: &mut Tx, claim: &Claim, attempt: &Attempt) -> Result<(), StoreError> {
    sqlx::query(RECORD_ATTEMPT)
        .bind(claim.token.to_string())
        .bind(claim.message_id.to_string())
        .bind(i64::from(attempt.attempt))
        .bind(micros(attempt.started_at))
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .bind(attempt.http_status.map(i32::from))
        .bind(&attempt.outcome)
        .bind(attempt.error.as_deref())
        .bind(attempt.provider_message_id.as_deref())
        .execute(&mut **tx)
        .await
        .map_err(db("recording an attempt"))?;
    Ok(())
}

/// One message's fenced transition (see `NextState`); whether it changed the row.
async fn finish_one(tx: &mut Tx, result: &Finish) -> Result<bool, StoreError> {
    let next = result.next.row();
    let done = sqlx::query(FINISH_CLAIM)
        .bind(result.claim.message_id.to_string())
        .bind(result.claim.token.to_string())
        .bind(next.status)
        .bind(next.provider_message_id)
        .bind(next.sent_at.map(micros))
        .bind(next.retry_in.map(micros_of))
        .bind(next.error)
        .bind(micros(Utc::now()))
        .bind(next.uncounted)
        .execute(&mut **tx)
        .await
        .map_err(db("recording results"))?;
    Ok(done.rows_affected() == 1)
}
