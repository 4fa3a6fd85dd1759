//! The SQL the service runs against Postgres: one function per transition of `store/mod.rs`, the
//! statement texts of the seams implemented once (`*Sql`), and how Postgres's types stand for the shared
//! ones (`Columns`: they are the shared ones; `Backend`: spans in seconds, arrays, `now()` in the
//! statement). The claim and the flush are in `postgres/*.sql`; the statements SQLite runs too, in
//! `list/` and `receipts/`.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult},
};
use uuid::Uuid;

use super::{
    Claim, ClaimRequest, Claimed, Database, EventDelivery, Finish, HeldEvent, MessageStore, MinuteActivity, PageCursor,
    QueuePlace, QueueStats, ReceiptOutcome, RecentSend, Replica, Rescue, StoreError, Throttle, Transition, db, list,
    ping, pool_like,
    rows::{self, Columns, OptOutRow, event_columns, message_columns, receipt_columns},
    status_events::{self, EventFeed, EventOutbox, EventWriter, StatusEventSql},
};
// What the seams implemented once, generic over the backend, ask of this one.
use super::{backend::Backend, campaigns::CampaignSql, cluster::ClusterSql, inbound::InboundSql};
use super::{
    opt_outs::InsertOptOut,
    receipts::{AppliedReceipt, ReceiptSql},
};
use crate::domain::{Attempt, Message, MessageStatus, NewMessage, NewStatusEvent, Priority, Receipt};

const MAX_CONNECTIONS: u32 = 10;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT: &str = "10s";

/// `$1` rows at most, for owner `$2`, leased for `$3` seconds, under RATE_LIMIT `$4`, each lane after its
/// place in `$5`, `$6`, aging after `$7` seconds.
const CLAIM_DUE: &str = include_str!("postgres/claim_due.sql");
/// Retry-After `$1`, RATE_LIMIT `$2`.
const THROTTLE: &str = include_str!("postgres/throttle.sql");
/// One array per column, `$1` to `$17`: see the file.
const FINISH_CLAIMS: &str = include_str!("postgres/finish_claims.sql");
/// Receipts `$1` applied to messages `$2`, pairwise, no message twice: see the file.
const APPLY_RECEIPTS: &str = include_str!("postgres/apply_receipts.sql");
/// A round of status event deliveries, one array per column: `$1` seqs, `$2` statuses, `$3` seconds
/// until due again (NULL: not again), `$4` errors.
const FINISH_EVENTS: &str = include_str!("postgres/finish_events.sql");

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// `Database::write_status_events` and `hand_status_events_to`.
    outbox: Arc<EventOutbox>,
}

impl PostgresStore {
    /// A pool that connects on first use, so the service starts (and reports not ready) while the
    /// database is down.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        // A statement that hangs (a partitioned network) must fail, or the tick waiting on it never ends.
        let options = PgConnectOptions::from_str(url)
            .map_err(db("parsing DATABASE_URL"))?
            .options([("statement_timeout", STATEMENT_TIMEOUT)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            outbox: Arc::default(),
        })
    }
}

impl Columns for PostgresStore {
    type DB = sqlx::Postgres;
    type Id = Uuid;
    type Time = DateTime<Utc>;
    type Int = i32;

    fn uuid(stored: &Uuid) -> Result<Uuid, uuid::Error> {
        Ok(*stored)
    }

    fn time(stored: DateTime<Utc>) -> Option<DateTime<Utc>> {
        Some(stored)
    }

    fn stored_uuid(id: Uuid) -> Uuid {
        id
    }

    fn stored_time(at: DateTime<Utc>) -> DateTime<Utc> {
        at
    }
}

/// Spans in seconds, for `make_interval`; `now()` read in each statement.
impl Backend for PostgresStore {
    type Exec<'p> = &'p PgPool;
    type Conn<'c> = &'c mut PgConnection;
    type Span = f64;
    type Ints = Vec<i64>;
    type Texts = Vec<String>;

    fn exec(&self) -> &PgPool {
        &self.pool
    }

    fn conn(tx: &mut Tx) -> &mut PgConnection {
        tx
    }

    fn span(duration: Duration) -> f64 {
        duration.as_secs_f64()
    }

    fn ints(items: &[i64]) -> Vec<i64> {
        items.to_vec()
    }

    fn texts<T: AsRef<str>>(items: &[T]) -> Vec<String> {
        items.iter().map(|item| item.as_ref().to_owned()).collect()
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    fn outbox(&self) -> &EventOutbox {
        &self.outbox
    }

    fn clock() -> Option<DateTime<Utc>> {
        None
    }
}

type MessageRow = rows::MessageRow<PostgresStore>;
type ClaimRow = rows::ClaimRow<PostgresStore>;
type AttemptRow = rows::AttemptRow<PostgresStore>;
type EventRow = rows::EventRow<PostgresStore>;

impl PostgresStore {
    /// A first connection of its own, so that a database out of reach says why (connection refused, no
    /// such host, a password refused): the pool's acquire, timing out on retries of it, says only "pool
    /// timed out while waiting for an open connection". Like the pool, it tries again for up to
    /// `ACQUIRE_TIMEOUT` while the server refuses connections or says it is starting up (a database
    /// started beside the service); a database slower than that is left to the pool's own wait.
    async fn first_connection(&self) -> Result<(), StoreError> {
        let options = (*self.pool.connect_options()).clone();
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        loop {
            let connect = <PgConnection as sqlx::Connection>::connect_with(&options);
            let Ok(attempt) = tokio::time::timeout_at(deadline, connect).await else {
                return Ok(());
            };
            match attempt {
                Ok(first) => {
                    let _ = sqlx::Connection::close(first).await;
                    return Ok(());
                }
                Err(error)
                    if starting_up(&error) && tokio::time::Instant::now() + FIRST_CONNECTION_RETRY < deadline =>
                {
                    tokio::time::sleep(FIRST_CONNECTION_RETRY).await;
                }
                Err(error) => return Err(db("opening a first connection")(error)),
            }
        }
    }
}

/// How long the first connection waits before trying again a server that is starting up.
const FIRST_CONNECTION_RETRY: Duration = Duration::from_millis(200);

/// A server not up yet: nothing listens, or Postgres answers that it is starting up (57P03).
fn starting_up(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        sqlx::Error::Database(database) => database.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

#[async_trait]
impl Database for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        self.first_connection().await?;
        // sqlx takes a Postgres advisory lock, so replicas starting together migrate once.
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    fn with_pool_of_its_own(&self) -> Arc<dyn Database> {
        Arc::new(Self {
            pool: pool_like(&self.pool),
            outbox: Arc::clone(&self.outbox),
        })
    }

    fn describe(&self) -> String {
        let options = self.pool.connect_options();
        format!(
            "PostgreSQL database {:?} at {}:{}",
            options.get_database().unwrap_or(options.get_username()),
            options.get_host(),
            options.get_port()
        )
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
impl MessageStore for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.pool).await
    }

    async fn insert_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        // Ids are made here, time-ordered (UUIDv7), so the primary key grows at its right edge and the
        // rows come back matched to their requests whatever order RETURNING uses.
        let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
        let phone_numbers: Vec<&str> = messages.iter().map(|m| m.to.as_ref()).collect();
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_ref()).collect();
        let send_ats: Vec<Option<DateTime<Utc>>> = messages.iter().map(|m| m.when.send_at).collect();
        let expires_ats: Vec<Option<DateTime<Utc>>> = messages.iter().map(|m| m.when.expires_at).collect();
        let priorities: Vec<i32> = messages.iter().map(|m| i32::from(m.when.priority.level())).collect();
        let timezones: Vec<Option<&str>> = messages.iter().map(|m| m.when.timezone.map(|tz| tz.name())).collect();
        let campaigns: Vec<Option<&str>> = messages.iter().map(|m| m.when.campaign.as_deref()).collect();
        // ORDER BY ord: the identity `seq` is drawn row by row, so the queue keeps the request's order. A
        // scheduled message is due at its send_at (one in the past: now, so that it lands ahead of the
        // claims' frontiers, not behind them).
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "INSERT INTO messages (id, phone_number, content, send_at, expires_at, priority, timezone, campaign,
                                   next_attempt_at)
             SELECT id, phone_number, content, send_at, expires_at, priority, timezone, campaign,
                    greatest(now(), send_at)
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::int4[],
                           $7::text[], $8::text[])
                    WITH ORDINALITY AS m(id, phone_number, content, send_at, expires_at, priority, timezone, campaign,
                                         ord)
              ORDER BY ord
          RETURNING ",
            message_columns!()
        ))
        .bind(&ids)
        .bind(&phone_numbers)
        .bind(&contents)
        .bind(&send_ats)
        .bind(&expires_ats)
        .bind(&priorities)
        .bind(&timezones)
        .bind(&campaigns)
        .fetch_all(&self.pool)
        .await
        .map_err(db("inserting messages"))?;
        in_request_order(&ids, rows)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Message>, StoreError> {
        let row: Option<MessageRow> =
            sqlx::query_as(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db("reading a message"))?;
        row.map(Message::try_from).transpose()
    }

    async fn rescue_expired_leases(&self, rescue: &Rescue<'_>) -> Result<Vec<Uuid>, StoreError> {
        sqlx::query_scalar(
            "UPDATE messages m
                SET status = 'pending',
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                    last_error = 'lease expired before a result was recorded', updated_at = now()
              WHERE status = 'sending' AND lease_expires_at < now()
                AND ($3::float8 IS NULL OR lease_expires_at >= now() - make_interval(secs => $3))
                AND lease_token <> ALL($1)
                AND (m.lease_owner = $4
                     OR ($5 AND NOT EXISTS (SELECT 1 FROM replicas r
                                             WHERE r.id = m.lease_owner
                                               AND r.last_seen > now() - make_interval(secs => $2))))
          RETURNING id",
        )
        .bind(rescue.live)
        .bind(rescue.owner_fresh.as_secs_f64())
        .bind(rescue.expired_within.map(|within| within.as_secs_f64()))
        .bind(rescue.owner)
        .bind(rescue.others)
        .fetch_all(&self.pool)
        .await
        .map_err(db("rescuing expired leases"))
    }

    async fn claim_due(&self, request: &ClaimRequest<'_>) -> Result<Claimed, StoreError> {
        let rows: Vec<ClaimRow> = sqlx::query_as(CLAIM_DUE)
            .bind(i64::from(request.limit))
            .bind(request.owner)
            .bind(request.lease.as_secs_f64())
            .bind(request.rate_limit)
            .bind(lanes(request, |place| place.due_at))
            .bind(lanes(request, |place| place.seq))
            .bind(request.aging.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(db("claiming due messages"))?;
        rows::claimed(rows)
    }

    async fn throttle(&self, throttle: &Throttle) -> Result<Duration, StoreError> {
        let paused_for: f64 = sqlx::query_scalar(THROTTLE)
            .bind(throttle.retry_after.map(|after| after.as_secs_f64()))
            .bind(throttle.rate_limit)
            .bind(i64::from(throttle.answered_here))
            .fetch_one(&self.pool)
            .await
            .map_err(db("pausing the cluster for the provider's 429"))?;
        Ok(Duration::from_secs_f64(paused_for.clamp(0.0, 86_400.0)))
    }

    async fn finish_claims(&self, results: &[Finish]) -> Result<Vec<bool>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let chunks = split_at_repeats(results, |result| result.claim.message_id);
        if let ([only], false) = (chunks.as_slice(), self.outbox.writes()) {
            return finish_chunk(&self.pool, only).await;
        }
        // A message twice in one flush (its lease expired and this instance claimed it again): one
        // UPDATE … FROM would apply only one of its results, so each repeat gets a statement of its own,
        // in order, all in one transaction so that a retried flush finds either all or none applied. With
        // status events on, every flush takes this path, its events in the same transaction.
        let mut tx = self.pool.begin().await.map_err(db("recording results"))?;
        let mut changed = Vec::with_capacity(results.len());
        for chunk in chunks {
            changed.extend(finish_chunk(&mut *tx, chunk).await?);
        }
        status_events::commit_finishes::<Self>(tx, results, changed, &self.outbox).await
    }

    async fn list_by_status(
        &self,
        status: MessageStatus,
        limit: u32,
        cursor: Option<PageCursor>,
    ) -> Result<Vec<Message>, StoreError> {
        let rows: Vec<MessageRow> = list::page(status, limit, cursor.map(|cursor| (cursor.at, cursor.id)))
            .fetch_all(&self.pool)
            .await
            .map_err(db("listing messages"))?;
        rows.into_iter().map(Message::try_from).collect()
    }

    async fn list_attempts(&self, id: Uuid) -> Result<Vec<Attempt>, StoreError> {
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, http_status, outcome, error, provider_message_id
               FROM message_attempts WHERE message_id = $1 ORDER BY started_at, attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing attempts"))?;
        rows.into_iter().map(|row| row.into_attempt(id)).collect()
    }

    async fn retry_if_failed(&self, id: Uuid) -> Result<Transition, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "UPDATE messages SET status = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now()
              WHERE id = $1 AND status = 'failed' RETURNING ",
            message_columns!()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("retrying a failed message"))?;
        Transition::of(row.map(Message::try_from).transpose()?, id, self).await
    }

    async fn cancel_if_pending(&self, id: Uuid) -> Result<Transition, StoreError> {
        let row: Option<MessageRow> = sqlx::query_as(concat!(
            "UPDATE messages SET status = 'cancelled', updated_at = now()
              WHERE id = $1 AND status = 'pending' RETURNING ",
            message_columns!()
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("cancelling a message"))?;
        Transition::of(row.map(Message::try_from).transpose()?, id, self).await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let (pending, oldest_age_seconds): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*),
                    EXTRACT(EPOCH FROM now() - min(m.next_attempt_at) FILTER (
                        WHERE m.next_attempt_at <= now()
                          AND NOT EXISTS (SELECT 1 FROM paused_campaigns p WHERE p.campaign = m.campaign)))::float8
               FROM messages m WHERE m.status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting pending messages"))?;
        Ok(QueueStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_pending_age: oldest_age_seconds.map(|s| Duration::from_secs_f64(s.max(0.0))),
        })
    }

    async fn respell_numbers(&self, respelled: &[(Uuid, String)]) -> Result<(), StoreError> {
        // One row at a time: only rows inserted by plain SQL with an odd spelling come here.
        for (token, number) in respelled {
            sqlx::query("UPDATE messages SET phone_number = $1 WHERE lease_token = $2 AND status = 'sending'")
                .bind(number)
                .bind(*token)
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
        sqlx::query_as(
            "SELECT phone_number, sent_at FROM messages
              WHERE status = 'sent' AND phone_number = ANY($1) AND sent_at >= $2
             UNION ALL
             SELECT phone_number, NULL FROM messages
              WHERE status = 'sending' AND phone_number = ANY($1) AND lease_token <> ALL($3)
             ORDER BY phone_number, sent_at",
        )
        .bind(numbers)
        .bind(since)
        .bind(claims)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting what numbers were sent"))
    }

    async fn delete_sent_before(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        // SKIP LOCKED: replicas pruning at the same moment take different rows instead of waiting.
        let result = sqlx::query(
            "DELETE FROM messages WHERE id IN (
                 SELECT id FROM messages WHERE status = 'sent' AND sent_at < $1
                  ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("deleting old sent messages"))?;
        Ok(result.rows_affected())
    }

    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Vec<MinuteActivity>, StoreError> {
        let rows: Vec<rows::ActivityRow<Self>> = sqlx::query_as(
            "SELECT date_trunc('minute', at) AS minute,
                    count(*) FILTER (WHERE outcome = 'sent'), count(*) FILTER (WHERE outcome = 'failed')
               FROM (SELECT sent_at AS at, 'sent' AS outcome FROM messages WHERE status = 'sent' AND sent_at >= $1
                     UNION ALL
                     SELECT updated_at, 'failed' FROM messages WHERE status = 'failed' AND updated_at >= $1) AS done
              GROUP BY minute ORDER BY minute",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db("counting activity per minute"))?;
        rows.into_iter().map(rows::minute_activity::<Self>).collect()
    }
}

#[async_trait]
impl ClusterSql for PostgresStore {
    const SEED_SENDING: &'static str =
        "INSERT INTO dispatcher_control (id, sending, changed_by) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING";
    const SET_SENDING: &'static str = "
        INSERT INTO dispatcher_control (id, sending, changed_by) VALUES (1, $1, $2)
        ON CONFLICT (id) DO UPDATE SET sending = $1, changed_by = $2, changed_at = now()";

    async fn beat(&self, replica: &Replica) -> Result<Option<(bool, DateTime<Utc>)>, StoreError> {
        sqlx::query_as(
            "WITH beat AS (
                 INSERT INTO replicas (id, host, started_at, last_seen, in_flight, sending)
                 VALUES ($1, $2, $3, now(), $4, $5)
                 ON CONFLICT (id) DO UPDATE SET last_seen = now(), in_flight = $4, sending = $5
             )
             SELECT sending, changed_at FROM dispatcher_control WHERE id = 1",
        )
        .bind(&replica.id)
        .bind(&replica.host)
        .bind(replica.started_at)
        .bind(i32::try_from(replica.in_flight).unwrap_or(i32::MAX))
        .bind(replica.sending)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("recording a heartbeat"))
    }
}

#[async_trait]
impl ReceiptSql for PostgresStore {
    const PENDING_BY_SEQS: &'static str = concat!(
        "SELECT ",
        receipt_columns!(),
        " FROM receipts WHERE seq = ANY($1) AND outcome = 'pending' ORDER BY seq"
    );
    const PENDING_BY_PROVIDER_IDS: &'static str = concat!(
        "SELECT ",
        receipt_columns!(),
        " FROM receipts WHERE provider_message_id = ANY($1) AND outcome = 'pending' ORDER BY seq"
    );
    // "Sent" as `sent_at IS NOT NULL` (the same, by the `sent_has_time` check), as `apply_receipts.sql`
    // asks it and for its reason: `status = 'sent'` let the planner add a scan of a partial index of every
    // sent message, which statistics from before a drain count as nearly empty.
    const MESSAGES_BY_PROVIDER_ID: &'static str =
        "SELECT provider_message_id, id FROM messages WHERE provider_message_id = ANY($1) AND sent_at IS NOT NULL";
    const LIST_RECEIPTS: &'static str = concat!(
        "SELECT ",
        receipt_columns!(),
        " FROM receipts WHERE outcome = ANY($1) AND seq < $2 ORDER BY seq DESC LIMIT $3"
    );

    // Skips a receipt another replica is settling, as `apply_receipts.sql` does.
    const SETTLE_UNAPPLIED: &'static str = "
        UPDATE receipts SET outcome = $2, settled_at = now()
         WHERE seq = (SELECT seq FROM receipts WHERE seq = $1 AND outcome = 'pending' FOR UPDATE SKIP LOCKED)
        RETURNING outcome";

    async fn store_receipts(&self, receipts: &[Receipt]) -> Result<Vec<i64>, StoreError> {
        let provider_ids: Vec<&str> = receipts.iter().map(|r| r.provider_message_id.as_ref()).collect();
        let statuses: Vec<&str> = receipts.iter().map(|r| r.status.as_str()).collect();
        let reported_ats: Vec<DateTime<Utc>> = receipts.iter().map(|r| r.reported_at).collect();
        let errors: Vec<Option<&str>> = receipts.iter().map(|r| r.error.as_deref()).collect();
        // ORDER BY ord: `seq` is drawn row by row, so it keeps the order the provider sent them in.
        let mut seqs: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO receipts (provider_message_id, status, reported_at, error)
             SELECT provider_message_id, status, reported_at, error
               FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) WITH ORDINALITY
                    AS r(provider_message_id, status, reported_at, error, ord)
              ORDER BY ord
          RETURNING seq",
        )
        .bind(&provider_ids)
        .bind(&statuses)
        .bind(&reported_ats)
        .bind(&errors)
        .fetch_all(&self.pool)
        .await
        .map_err(db("storing receipts"))?;
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn apply_receipts(
        tx: &mut Tx,
        applies: &[(i64, Uuid)],
        _with_delivery: bool,
    ) -> Result<Vec<AppliedReceipt>, StoreError> {
        // One statement per part with no message twice: one UPDATE moves a row once, and two receipts
        // of one message apply one after the other.
        let mut settled = Vec::with_capacity(applies.len());
        for part in split_at_repeats(applies, |&(_, message_id)| message_id) {
            let (seqs, message_ids): (Vec<i64>, Vec<Uuid>) = part.iter().copied().unzip();
            // Planned at each run (an unnamed statement), for the tables as they are: a plan Postgres kept
            // from when they were small went through every pending receipt for each batch, the backlog
            // growing faster than autovacuum analyzes it. Planning each run added no CPU that receipts-drain
            // could measure (docs/performance.md). The reads of pending receipts and of the messages they
            // name are run the same way (store/receipts.rs).
            let rows: Vec<AppliedRow> = sqlx::query_as(APPLY_RECEIPTS)
                .persistent(false)
                .bind(&seqs)
                .bind(&message_ids)
                .fetch_all(&mut **tx)
                .await
                .map_err(db("applying receipts"))?;
            settled.extend(
                rows.into_iter()
                    .map(|(seq, outcome, status, delivered_at, error, provider_id)| {
                        let delivery = (outcome == ReceiptOutcome::Applied.as_str()).then_some((
                            status,
                            delivered_at,
                            error,
                            provider_id,
                        ));
                        AppliedReceipt { seq, outcome, delivery }
                    }),
            );
        }
        Ok(settled)
    }
}

/// A row of `APPLY_RECEIPTS`: seq, outcome, and the delivery state it left (status, time, error, provider id).
type AppliedRow = (
    i64,
    String,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
);

#[async_trait]
impl StatusEventSql for PostgresStore {
    // An event picked behind a failed one of its message is failed, not leased: the failure's cascade
    // (`finish_events.sql`) cannot see an event a transaction still uncommitted is writing, and the write's
    // own check saw the failed one still pending. SQLite's one writer runs the two one after the other.
    const CLAIM_DUE_EVENTS: &'static str = concat!(
        "WITH picked AS (
             SELECT e.seq, e.message_id FROM status_events e
              WHERE e.status = 'pending' AND e.next_attempt_at <= now()
                AND (e.lease_expires_at IS NULL OR e.lease_expires_at < now())
                AND NOT EXISTS (SELECT 1 FROM status_events o
                                 WHERE o.message_id = e.message_id AND o.status = 'pending' AND o.seq < e.seq)
              ORDER BY e.next_attempt_at, e.seq
              LIMIT $1
                FOR UPDATE SKIP LOCKED
         ), behind_failed AS (
             SELECT p.seq, f.id FROM picked p
               JOIN LATERAL (SELECT o.id FROM status_events o
                              WHERE o.message_id = p.message_id AND o.status = 'failed' AND o.seq < p.seq
                                AND o.delivered_at IS NULL
                              ORDER BY o.seq LIMIT 1) AS f ON true
         ), failed AS (
             UPDATE status_events e
                SET status = 'failed', lease_expires_at = NULL,
                    last_error = 'not sent: event ' || b.id || ' of this message, before it, failed'
               FROM behind_failed b
              WHERE e.seq = b.seq
         )
         UPDATE status_events SET attempts = attempts + 1, lease_expires_at = now() + make_interval(secs => $2)
          WHERE seq IN (SELECT seq FROM picked) AND seq NOT IN (SELECT seq FROM behind_failed)
      RETURNING ",
        event_columns!()
    );
    const RETRY_EVENT: &'static str = concat!(
        "UPDATE status_events
            SET status = 'pending', next_attempt_at = now(), lease_expires_at = NULL
          WHERE id = $1 AND NOT (status = 'pending' AND coalesce(lease_expires_at > now(), false)) RETURNING ",
        event_columns!()
    );
    const RETRY_FAILED_BEFORE: &'static str = "
        UPDATE status_events
           SET status = 'pending', next_attempt_at = now(), lease_expires_at = NULL
         WHERE status = 'failed'
           AND message_id = (SELECT message_id FROM status_events WHERE id = $1)
           AND seq < (SELECT seq FROM status_events WHERE id = $1)";
    const PUT_BACK_EVENTS: &'static str = "
        UPDATE status_events e
           SET attempts = greatest(e.attempts - 1, 0), lease_expires_at = NULL, next_attempt_at = now(),
               last_error = $3
          FROM unnest($1::bigint[], $2::bigint[]) AS h(seq, attempt)
         WHERE e.seq = h.seq AND e.attempts = h.attempt AND e.status = 'pending' AND e.lease_expires_at > now()";
    const OUTBOX_STATS: &'static str = "
        SELECT count(*) FILTER (WHERE status = 'pending'),
               EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'pending'))::float8,
               count(*) FILTER (WHERE status = 'failed')
          FROM status_events WHERE status IN ('pending', 'failed')";

    async fn record_deliveries(&self, deliveries: &[(HeldEvent, EventDelivery)]) -> Result<(), StoreError> {
        let (mut seqs, mut statuses, mut retry_ins, mut errors, mut attempts) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (held, delivery) in deliveries {
            let (status, retry_in, error) = rows::event_delivery_row(delivery);
            seqs.push(held.seq);
            statuses.push(status);
            retry_ins.push(retry_in.map(|delay| delay.as_secs_f64()));
            errors.push(error);
            attempts.push(i32::try_from(held.attempt).unwrap_or(i32::MAX));
        }
        sqlx::query(FINISH_EVENTS)
            .bind(&seqs)
            .bind(&statuses)
            .bind(&retry_ins)
            .bind(&errors)
            .bind(&attempts)
            .execute(&self.pool)
            .await
            .map_err(db("recording status event deliveries"))?;
        Ok(())
    }
}

#[async_trait]
impl InsertOptOut for PostgresStore {
    async fn insert_opt_out(&self, to: &str) -> Result<(OptOutRow<Self>, bool), StoreError> {
        // An existing entry is put on the list again as of now (a START sent before this outranks it no
        // more) and answers too; xmax = 0 only on a row just inserted.
        let (phone_number, created_at, new) = sqlx::query_as(
            "INSERT INTO opt_outs (phone_number) VALUES ($1)
             ON CONFLICT (phone_number)
             DO UPDATE SET created_at = greatest(opt_outs.created_at, EXCLUDED.created_at)
             RETURNING phone_number, created_at, xmax = 0",
        )
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .map_err(db("adding an opt-out"))?;
        Ok(((phone_number, created_at), new))
    }
}

impl CampaignSql for PostgresStore {
    const LIST_CAMPAIGNS: &'static str = "
        SELECT coalesce(c.campaign, p.campaign), p.campaign IS NOT NULL, c.status, coalesce(c.n, 0)
          FROM (SELECT campaign, status, count(*) AS n FROM messages WHERE campaign IS NOT NULL
                 GROUP BY campaign, status) AS c
          FULL JOIN paused_campaigns p ON p.campaign = c.campaign
         ORDER BY 1, 3";
    const PAUSE_CAMPAIGN: &'static str = "INSERT INTO paused_campaigns (campaign) VALUES ($1) ON CONFLICT DO NOTHING";
    // A row a claim has locked is waited for (the claim commits within milliseconds), not skipped: a claim
    // locks a lane's first rows and takes only what the pace grants, and a row it locked and left would
    // stay pending under the pause, to be sent on a resume. Waited for, a row is read again as the claim
    // left it, and one it took (no longer `pending`) is its claim's.
    const CANCEL_CAMPAIGN: &'static str = "UPDATE messages SET status = 'cancelled', updated_at = now()
          WHERE status = 'pending'
            AND id IN (SELECT id FROM messages WHERE campaign = $1 AND status = 'pending' LIMIT $2
                          FOR UPDATE)";
}

impl InboundSql for PostgresStore {
    const RECORD_INBOUND: &'static str = "
        INSERT INTO inbound_messages (id, from_number, content, at, action) VALUES ($1, $2, $3, $4, $5)
        RETURNING id, from_number, content, at, received_at, action";
    // A lock on the number itself, held to the commit: there may be no row of it to lock yet.
    const ONE_REPLY_OF_A_NUMBER_AT_A_TIME: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtextextended('inbound ' || $1, 0))");
}

#[async_trait]
impl EventWriter for PostgresStore {
    async fn insert_events(
        tx: &mut Tx,
        events: &[NewStatusEvent],
        offered: &[bool],
        lease: Option<Duration>,
    ) -> Result<Vec<EventRow>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
        let message_ids: Vec<Uuid> = events.iter().map(|event| event.message_id).collect();
        let kinds: Vec<&str> = events.iter().map(|event| event.kind.as_str()).collect();
        let payloads: Vec<&str> = events.iter().map(|event| event.payload.as_str()).collect();
        // The checks for another pending or failed event of the message do not see this statement's own
        // rows: `offered` names each message once. An event behind a failed one is written failed.
        sqlx::query_as(concat!(
            "WITH written AS (
                 INSERT INTO status_events
                        (id, message_id, type, payload, attempts, lease_expires_at, status, last_error)
                 SELECT i.id, i.message_id, i.type, i.payload, l.leased::int,
                        CASE WHEN l.leased THEN now() + make_interval(secs => $6) END,
                        CASE WHEN f.id IS NULL THEN 'pending' ELSE 'failed' END,
                        'not sent: event ' || f.id || ' of this message, before it, failed'
                   FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[])
                        AS i(id, message_id, type, payload, offered)
                   LEFT JOIN LATERAL (
                        SELECT o.id FROM status_events o
                         WHERE o.message_id = i.message_id AND o.status = 'failed' ORDER BY o.seq LIMIT 1
                        ) AS f ON true
                  CROSS JOIN LATERAL (
                        SELECT i.offered AND $6::float8 IS NOT NULL AND f.id IS NULL
                               AND NOT EXISTS (SELECT 1 FROM status_events o
                                                WHERE o.message_id = i.message_id AND o.status = 'pending')
                        ) AS l(leased)
                 RETURNING ",
            event_columns!(),
            ")
             SELECT * FROM written WHERE attempts > 0"
        ))
        .bind(&ids)
        .bind(&message_ids)
        .bind(&kinds)
        .bind(&payloads)
        .bind(offered)
        .bind(lease.map(|lease| lease.as_secs_f64()))
        .fetch_all(&mut **tx)
        .await
        .map_err(db("writing status events"))
    }
}

/// One value of each lane's place in the claim's frontier, in `Priority::ALL` order (the claim indexes the
/// array by priority).
fn lanes<T>(request: &ClaimRequest<'_>, value: impl Fn(QueuePlace) -> T) -> Vec<Option<T>> {
    Priority::ALL
        .into_iter()
        .map(|priority| request.after.and_then(|after| after.lane(priority)).map(&value))
        .collect()
}

/// `items` cut wherever a message (`message_of`) comes again, so that no part names one message twice.
fn split_at_repeats<T>(items: &[T], message_of: impl Fn(&T) -> Uuid) -> Vec<&[T]> {
    let mut parts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(message_of(item)) {
            parts.push(&items[start..i]);
            seen.clear();
            seen.insert(message_of(item));
            start = i;
        }
    }
    parts.push(&items[start..]);
    parts
}

/// One statement of `finish_claims`: results for distinct messages, bound as one array per column.
async fn finish_chunk<'c>(executor: impl sqlx::PgExecutor<'c>, results: &[Finish]) -> Result<Vec<bool>, StoreError> {
    let (mut ids, mut tokens, mut statuses, mut provider_ids) = (vec![], vec![], vec![], vec![]);
    let (mut sent_ats, mut retry_ins, mut errors, mut uncounted) = (vec![], vec![], vec![], vec![]);
    let mut history = AttemptColumns::default();
    for result in results {
        let claim = &result.claim;
        let next = result.next.row();
        ids.push(claim.message_id);
        tokens.push(claim.token);
        statuses.push(next.status);
        provider_ids.push(next.provider_message_id);
        sent_ats.push(next.sent_at);
        retry_ins.push(next.retry_in.map(|delay| delay.as_secs_f64()));
        errors.push(next.error);
        uncounted.push(next.uncounted);
        if let Some(attempt) = &result.attempt {
            history.push(claim, attempt);
        }
    }
    let changed: Vec<Uuid> = sqlx::query_scalar(FINISH_CLAIMS)
        .bind(&ids)
        .bind(&tokens)
        .bind(&statuses)
        .bind(&provider_ids)
        .bind(&sent_ats)
        .bind(&retry_ins)
        .bind(&errors)
        .bind(&history.claim_tokens)
        .bind(&history.message_ids)
        .bind(&history.attempts)
        .bind(&history.started_ats)
        .bind(&history.durations_ms)
        .bind(&history.http_statuses)
        .bind(&history.outcomes)
        .bind(&history.errors)
        .bind(&history.provider_message_ids)
        .bind(&uncounted)
        .fetch_all(executor)
        .await
        .map_err(db("recording results"))?;
    let changed: std::collections::HashSet<Uuid> = changed.into_iter().collect();
    Ok(ids.iter().map(|id| changed.contains(id)).collect())
}

/// The `message_attempts` rows of a flush, one array per column.
#[derive(Default)]
struct AttemptColumns<'a> {
    claim_tokens: Vec<Uuid>,
    message_ids: Vec<Uuid>,
    attempts: Vec<i32>,
    started_ats: Vec<DateTime<Utc>>,
    durations_ms: Vec<i64>,
    http_statuses: Vec<Option<i32>>,
    outcomes: Vec<&'a str>,
    errors: Vec<Option<&'a str>>,
    provider_message_ids: Vec<Option<&'a str>>,
}

impl<'a> AttemptColumns<'a> {
    fn push(&mut self, claim: &Claim, attempt: &'a Attempt) {
        self.claim_tokens.push(claim.token);
        self.message_ids.push(claim.message_id);
        self.attempts.push(i32::try_from(attempt.attempt).unwrap_or(i32::MAX));
        self.started_ats.push(attempt.started_at);
        self.durations_ms
            .push(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX));
        self.http_statuses.push(attempt.http_status.map(i32::from));
        self.outcomes.push(&attempt.outcome);
        self.errors.push(attempt.error.as_deref());
        self.provider_message_ids.push(attempt.provider_message_id.as_deref());
    }
}

/// Rows returned by a multi-row INSERT, put back in the order of the ids they were inserted with.
fn in_request_order(ids: &[Uuid], rows: Vec<MessageRow>) -> Result<Vec<Message>, StoreError> {
    let mut by_id: std::collections::HashMap<Uuid, MessageRow> = rows.into_iter().map(|row| (row.id, row)).collect();
    ids.iter()
        .map(|id| {
            by_id
                .remove(id)
                .ok_or_else(|| StoreError::CorruptRow {
                    id: *id,
                    problem: "inserted, but not returned by the database".to_owned(),
                })
                .and_then(Message::try_from)
        })
        .collect()
}
