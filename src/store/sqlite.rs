//! Every SQL statement the service runs against SQLite: `postgres.rs` in SQLite's terms, same names in
//! the same order.
//!
//! SQLite has one writer at a time, so each claim (`UPDATE … WHERE seq IN (SELECT … LIMIT n) RETURNING`)
//! is atomic without row locks: two processes on one file never claim the same row. Times are INTEGER
//! microseconds since the epoch and `now` comes from this process's clock.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use uuid::Uuid;

use super::{
    Claim, ClaimedMessage, Finish, MessageStore, MinuteActivity, NextState, PageCursor, QueueStats, Replica,
    StoreError, Transition,
};
use crate::domain::{Attempt, Message, MessageStatus, NewMessage};

macro_rules! message_columns {
    () => {
        "id, phone_number, content, status, attempts, next_attempt_at, provider_message_id, last_error, \
         created_at, updated_at, sent_at"
    };
}

/// A writer waits this long for another (another process on the same file) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u32 = 4;

#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        Ok(Self { pool })
    }
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { action, source }
}

fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: String,
    phone_number: String,
    content: String,
    status: String,
    attempts: i64,
    next_attempt_at: i64,
    provider_message_id: Option<String>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    sent_at: Option<i64>,
}

fn parse_id(raw: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(raw).map_err(|e| StoreError::CorruptRow {
        id: Uuid::nil(),
        problem: format!("id {raw:?} is not a UUID: {e}"),
    })
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<Self, Self::Error> {
        let id = parse_id(&row.id)?;
        let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
        let time = |name: &str, value: i64| {
            DateTime::from_timestamp_micros(value).ok_or_else(|| corrupt(format!("{name} {value} is out of range")))
        };
        Ok(Message {
            id,
            status: row
                .status
                .parse::<MessageStatus>()
                .map_err(|e| corrupt(e.to_string()))?,
            attempts: u32::try_from(row.attempts).map_err(|e| corrupt(format!("attempts: {e}")))?,
            next_attempt_at: time("next_attempt_at", row.next_attempt_at)?,
            created_at: time("created_at", row.created_at)?,
            updated_at: time("updated_at", row.updated_at)?,
            sent_at: row.sent_at.map(|at| time("sent_at", at)).transpose()?,
            to: row.phone_number,
            content: row.content,
            provider_message_id: row.provider_message_id,
            last_error: row.last_error,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: String,
    seq: i64,
    lease_token: String,
    attempts: i64,
    phone_number: String,
    content: String,
}

impl SqliteStore {
    /// The result of an operator's transition: the changed row, or why nothing changed.
    async fn transition(&self, id: Uuid, changed: Option<MessageRow>) -> Result<Transition, StoreError> {
        if let Some(row) = changed {
            return Ok(Transition::Changed(row.try_into()?));
        }
        Ok(match self.get(id).await? {
            Some(message) => Transition::Refused(message.status),
            None => Transition::Missing,
        })
    }
}

/// The first-page and next-page statements listing one status, newest first by `key`.
macro_rules! list_sql {
    ($status:literal, $key:literal) => {
        (
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE status = '",
                $status,
                "' ORDER BY ",
                $key,
                " DESC, id DESC LIMIT ?1"
            ),
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE status = '",
                $status,
                "' AND (",
                $key,
                ", id) < (?2, ?3) ORDER BY ",
                $key,
                " DESC, id DESC LIMIT ?1"
            ),
        )
    };
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i64,
    started_at: i64,
    duration_ms: i64,
    http_status: Option<i64>,
    outcome: String,
    error: Option<String>,
    provider_message_id: Option<String>,
}

impl AttemptRow {
    fn into_attempt(self, id: Uuid) -> Result<Attempt, StoreError> {
        let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
        Ok(Attempt {
            attempt: u32::try_from(self.attempt).map_err(|e| corrupt(format!("attempt: {e}")))?,
            started_at: DateTime::from_timestamp_micros(self.started_at)
                .ok_or_else(|| corrupt(format!("started_at {} is out of range", self.started_at)))?,
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            http_status: self.http_status.and_then(|s| u16::try_from(s).ok()),
            outcome: self.outcome,
            error: self.error,
            provider_message_id: self.provider_message_id,
        })
    }
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(StoreError::Migrate)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db("answering a ping"))
    }

    async fn insert_many(&self, messages: &[NewMessage]) -> Result<Vec<Message>, StoreError> {
        // One transaction, one commit: SQLite inserts a row in microseconds, the commit is what costs.
        let mut tx = self.pool.begin().await.map_err(db("inserting messages"))?;
        let mut stored = Vec::with_capacity(messages.len());
        for message in messages {
            let row: MessageRow = sqlx::query_as(concat!(
                "INSERT INTO messages (id, phone_number, content) VALUES (?1, ?2, ?3) RETURNING ",
                message_columns!()
            ))
            .bind(Uuid::now_v7().to_string())
            .bind(message.to.as_ref())
            .bind(message.content.as_ref())
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

    async fn rescue_expired_leases(&self) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE messages
                SET status = 'pending',
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                    last_error = 'lease expired before a result was recorded', updated_at = ?1
              WHERE status = 'sending' AND lease_expires_at < ?1
          RETURNING id",
        )
        .bind(micros(Utc::now()))
        .fetch_all(&self.pool)
        .await
        .map_err(db("rescuing expired leases"))?;
        ids.iter().map(|id| parse_id(id)).collect()
    }

    async fn claim_due(&self, limit: u32, owner: &str, lease: Duration) -> Result<Vec<ClaimedMessage>, StoreError> {
        // A fresh token per row (random per row, as in Postgres): it keys the row's attempt history too.
        let now = micros(Utc::now());
        let mut rows: Vec<ClaimedRow> = sqlx::query_as(
            "UPDATE messages
                SET status = 'sending', attempts = attempts + 1,
                    lease_owner = ?1, lease_expires_at = ?3 + ?4, updated_at = ?3,
                    lease_token = lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' ||
                                        substr(hex(randomblob(2)), 2) || '-' ||
                                        substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) ||
                                        '-' || hex(randomblob(6)))
              WHERE seq IN (
                    SELECT seq FROM messages
                     WHERE status = 'pending' AND next_attempt_at <= ?3
                     ORDER BY next_attempt_at, seq
                     LIMIT ?5)
          RETURNING id, seq, lease_token, attempts, phone_number, content",
        )
        .bind(owner)
        .bind(None::<String>) // ?2 is unused: the token is made per row above
        .bind(now)
        .bind(micros_of(lease))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db("claiming due messages"))?;
        // RETURNING does not keep the subquery's order; restore oldest first.
        rows.sort_by_key(|row| row.seq);
        rows.into_iter()
            .map(|row| {
                let id = parse_id(&row.id)?;
                let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
                Ok(ClaimedMessage {
                    claim: Claim {
                        message_id: id,
                        token: Uuid::parse_str(&row.lease_token).map_err(|e| corrupt(format!("lease_token: {e}")))?,
                        attempt: u32::try_from(row.attempts).map_err(|e| corrupt(format!("attempts: {e}")))?,
                    },
                    phone_number: row.phone_number,
                    content: row.content,
                })
            })
            .collect()
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
        tx.commit().await.map_err(db("recording results"))?;
        Ok(changed)
    }

    async fn release_if_claimed(&self, claim: &Claim) -> Result<bool, StoreError> {
        let now = micros(Utc::now());
        let result = sqlx::query(
            "UPDATE messages
                SET status = 'pending', attempts = attempts - 1,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?3
              WHERE id = ?1 AND status = 'sending' AND lease_token = ?2",
        )
        .bind(claim.message_id.to_string())
        .bind(claim.token.to_string())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db("releasing a claim"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn list_by_status(
        &self,
        status: MessageStatus,
        limit: u32,
        cursor: Option<PageCursor>,
    ) -> Result<Vec<Message>, StoreError> {
        // One static statement per status, so each is planned against its own partial index.
        let (first_page, next_page) = match status {
            MessageStatus::Pending => list_sql!("pending", "created_at"),
            MessageStatus::Sending => list_sql!("sending", "created_at"),
            MessageStatus::Sent => list_sql!("sent", "sent_at"),
            MessageStatus::Failed => list_sql!("failed", "updated_at"),
            MessageStatus::Cancelled => list_sql!("cancelled", "updated_at"),
        };
        let query = match cursor {
            None => sqlx::query_as::<_, MessageRow>(first_page).bind(i64::from(limit)),
            Some(cursor) => sqlx::query_as::<_, MessageRow>(next_page)
                .bind(i64::from(limit))
                .bind(micros(cursor.at))
                .bind(cursor.id.to_string()),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db("listing messages"))?;
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
        self.transition(id, row).await
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
        self.transition(id, row).await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let (pending, oldest_created_at): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), min(created_at) FROM messages WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await
                .map_err(db("counting pending messages"))?;
        let now = micros(Utc::now());
        Ok(QueueStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_pending_age: oldest_created_at
                .map(|created| Duration::from_micros(u64::try_from(now.saturating_sub(created)).unwrap_or(0))),
        })
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

    async fn seed_sending(&self, sending: bool, by: &str) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT INTO dispatcher_control (id, sending, changed_at, changed_by) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(sending)
        .bind(micros(Utc::now()))
        .bind(by)
        .execute(&self.pool)
        .await
        .map_err(db("seeding the sending switch"))?;
        sqlx::query_scalar("SELECT sending FROM dispatcher_control WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db("reading the sending switch"))
    }

    async fn set_sending(&self, sending: bool, by: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dispatcher_control (id, sending, changed_at, changed_by) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET sending = ?1, changed_at = ?2, changed_by = ?3",
        )
        .bind(sending)
        .bind(micros(Utc::now()))
        .bind(by)
        .execute(&self.pool)
        .await
        .map_err(db("setting the sending switch"))?;
        Ok(())
    }

    async fn heartbeat(&self, replica: &Replica) -> Result<bool, StoreError> {
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
        let wanted: Option<bool> = sqlx::query_scalar("SELECT sending FROM dispatcher_control WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the sending switch"))?;
        Ok(wanted.unwrap_or(replica.sending))
    }

    async fn list_replicas(&self, since: DateTime<Utc>) -> Result<Vec<Replica>, StoreError> {
        let rows: Vec<(String, String, i64, i64, i64, bool)> = sqlx::query_as(
            "SELECT id, host, started_at, last_seen, in_flight, sending FROM replicas
              WHERE last_seen >= ?1 ORDER BY started_at, id",
        )
        .bind(micros(since))
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing replicas"))?;
        Ok(rows
            .into_iter()
            .map(|(id, host, started_at, last_seen, in_flight, sending)| Replica {
                id,
                host,
                started_at: DateTime::from_timestamp_micros(started_at).unwrap_or_default(),
                last_seen: DateTime::from_timestamp_micros(last_seen).unwrap_or_default(),
                in_flight: u32::try_from(in_flight).unwrap_or(0),
                sending,
            })
            .collect())
    }

    async fn forget_replica(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("removing a replica"))?;
        Ok(())
    }

    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Vec<MinuteActivity>, StoreError> {
        const MINUTE: i64 = 60_000_000;
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
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
        rows.into_iter()
            .map(|(minute, sent, failed)| {
                Ok(MinuteActivity {
                    minute: DateTime::from_timestamp_micros(minute).ok_or_else(|| StoreError::CorruptRow {
                        id: Uuid::nil(),
                        problem: format!("a time of {minute} µs is out of range"),
                    })?,
                    sent: u64::try_from(sent).unwrap_or(0),
                    failed: u64::try_from(failed).unwrap_or(0),
                })
            })
            .collect()
    }
}

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// One POST and its result in the history, once per claim; nothing when the message is gone.
async fn record_attempt(tx: &mut Tx, claim: &Claim, attempt: &Attempt) -> Result<(), StoreError> {
    // `WHERE` before `ON CONFLICT`: SQLite needs it to tell the upsert from a join.
    sqlx::query(
        "INSERT INTO message_attempts
                (claim_token, message_id, attempt, started_at, duration_ms, http_status, outcome, error,
                 provider_message_id)
         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM messages WHERE id = ?2)
         ON CONFLICT (claim_token) DO NOTHING",
    )
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
    let now = micros(Utc::now());
    let id = result.claim.message_id.to_string();
    let token = result.claim.token.to_string();
    let query = match &result.next {
        NextState::Sent {
            provider_message_id,
            sent_at,
        } => sqlx::query(
            "UPDATE messages
                SET status = 'sent', provider_message_id = ?2, sent_at = ?3, last_error = NULL,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?4
              WHERE id = ?1 AND status IN ('pending', 'sending')",
        )
        .bind(id)
        .bind(provider_message_id.as_ref().map(|p| p.as_ref().to_owned()))
        .bind(micros(*sent_at))
        .bind(now),
        NextState::RetryLater { delay, error } => sqlx::query(
            "UPDATE messages
                SET status = 'pending', next_attempt_at = ?3 + ?4, last_error = ?5,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?3
              WHERE id = ?1 AND status = 'sending' AND lease_token = ?2",
        )
        .bind(id)
        .bind(token)
        .bind(now)
        .bind(micros_of(*delay))
        .bind(error.clone()),
        NextState::Failed { error } => sqlx::query(
            "UPDATE messages
                SET status = 'failed', last_error = ?3,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?4
              WHERE id = ?1 AND status = 'sending' AND lease_token = ?2",
        )
        .bind(id)
        .bind(token)
        .bind(error.clone())
        .bind(now),
    };
    let done = query.execute(&mut **tx).await.map_err(db("recording results"))?;
    Ok(done.rows_affected() == 1)
}
