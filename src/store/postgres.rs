//! Every SQL statement the service runs against Postgres, one function per transition of `store/mod.rs`.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use super::{
    Claim, ClaimedMessage, Finish, MessageStore, MinuteActivity, NextState, PageCursor, QueueStats, Replica,
    StoreError, Transition,
};
use crate::domain::{Attempt, Message, MessageStatus, NewMessage};

/// Columns of a full message row, in `MessageRow` order.
macro_rules! message_columns {
    () => {
        "id, phone_number, content, status, attempts, next_attempt_at, provider_message_id, last_error, \
         created_at, updated_at, sent_at"
    };
}

const MAX_CONNECTIONS: u32 = 10;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
const STATEMENT_TIMEOUT: &str = "10s";

#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
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
        Ok(Self { pool })
    }
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { action, source }
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Uuid,
    phone_number: String,
    content: String,
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    provider_message_id: Option<String>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> Result<Self, Self::Error> {
        let corrupt = |problem: String| StoreError::CorruptRow { id: row.id, problem };
        let status = row
            .status
            .parse::<MessageStatus>()
            .map_err(|e| corrupt(e.to_string()))?;
        let attempts = u32::try_from(row.attempts).map_err(|e| corrupt(format!("attempts: {e}")))?;
        Ok(Message {
            id: row.id,
            to: row.phone_number,
            content: row.content,
            status,
            attempts,
            next_attempt_at: row.next_attempt_at,
            provider_message_id: row.provider_message_id,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            sent_at: row.sent_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    seq: i64,
    lease_token: Uuid,
    attempts: i32,
    phone_number: String,
    content: String,
}

impl PostgresStore {
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
                " DESC, id DESC LIMIT $1"
            ),
            concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages WHERE status = '",
                $status,
                "' AND (",
                $key,
                ", id) < ($2, $3) ORDER BY ",
                $key,
                " DESC, id DESC LIMIT $1"
            ),
        )
    };
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i32,
    started_at: DateTime<Utc>,
    duration_ms: i64,
    http_status: Option<i32>,
    outcome: String,
    error: Option<String>,
    provider_message_id: Option<String>,
}

impl AttemptRow {
    fn into_attempt(self, id: Uuid) -> Result<Attempt, StoreError> {
        let corrupt = |problem: String| StoreError::CorruptRow { id, problem };
        Ok(Attempt {
            attempt: u32::try_from(self.attempt).map_err(|e| corrupt(format!("attempt: {e}")))?,
            started_at: self.started_at,
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            http_status: self.http_status.and_then(|s| u16::try_from(s).ok()),
            outcome: self.outcome,
            error: self.error,
            provider_message_id: self.provider_message_id,
        })
    }
}

#[async_trait]
impl MessageStore for PostgresStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes a Postgres advisory lock, so replicas starting together migrate once.
        sqlx::migrate!("./migrations/postgres")
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
        // Ids are made here, time-ordered (UUIDv7), so the primary key grows at its right edge and the
        // rows come back matched to their requests whatever order RETURNING uses.
        let ids: Vec<Uuid> = messages.iter().map(|_| Uuid::now_v7()).collect();
        let phone_numbers: Vec<&str> = messages.iter().map(|m| m.to.as_ref()).collect();
        let contents: Vec<&str> = messages.iter().map(|m| m.content.as_ref()).collect();
        // ORDER BY ord: the identity `seq` is drawn row by row, so the queue keeps the request's order.
        let rows: Vec<MessageRow> = sqlx::query_as(concat!(
            "INSERT INTO messages (id, phone_number, content)
             SELECT id, phone_number, content
               FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS m(id, phone_number, content, ord)
              ORDER BY ord
          RETURNING ",
            message_columns!()
        ))
        .bind(&ids)
        .bind(&phone_numbers)
        .bind(&contents)
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

    async fn rescue_expired_leases(&self) -> Result<Vec<Uuid>, StoreError> {
        sqlx::query_scalar(
            "UPDATE messages
                SET status = 'pending',
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
                    last_error = 'lease expired before a result was recorded', updated_at = now()
              WHERE status = 'sending' AND lease_expires_at < now()
          RETURNING id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db("rescuing expired leases"))
    }

    async fn claim_due(&self, limit: u32, owner: &str, lease: Duration) -> Result<Vec<ClaimedMessage>, StoreError> {
        let mut rows: Vec<ClaimedRow> = sqlx::query_as(CLAIM_DUE)
            .bind(i64::from(limit))
            .bind(owner)
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(db("claiming due messages"))?;
        // RETURNING does not keep the CTE's order; restore oldest first.
        rows.sort_by_key(|row| row.seq);
        rows.into_iter()
            .map(|row| {
                let attempt = u32::try_from(row.attempts).map_err(|e| StoreError::CorruptRow {
                    id: row.id,
                    problem: format!("attempts: {e}"),
                })?;
                Ok(ClaimedMessage {
                    claim: Claim {
                        message_id: row.id,
                        token: row.lease_token,
                        attempt,
                    },
                    phone_number: row.phone_number,
                    content: row.content,
                })
            })
            .collect()
    }

    async fn finish_claims(&self, results: &[Finish]) -> Result<Vec<bool>, StoreError> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        let chunks = split_at_repeats(results);
        if let [only] = chunks.as_slice() {
            return finish_chunk(&self.pool, only).await;
        }
        // A message twice in one flush (its lease expired and this instance claimed it again): one
        // UPDATE … FROM would apply only one of its results, so each repeat gets a statement of its own,
        // in order, all in one transaction so that a retried flush finds either all or none applied.
        let mut tx = self.pool.begin().await.map_err(db("recording results"))?;
        let mut changed = Vec::with_capacity(results.len());
        for chunk in chunks {
            changed.extend(finish_chunk(&mut *tx, chunk).await?);
        }
        tx.commit().await.map_err(db("recording results"))?;
        Ok(changed)
    }

    async fn release_if_claimed(&self, claim: &Claim) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE messages
                SET status = 'pending', attempts = attempts - 1,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
              WHERE id = $1 AND status = 'sending' AND lease_token = $2",
        )
        .bind(claim.message_id)
        .bind(claim.token)
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
                .bind(cursor.at)
                .bind(cursor.id),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db("listing messages"))?;
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
        self.transition(id, row).await
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
        self.transition(id, row).await
    }

    async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let (pending, oldest_age_seconds): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8
               FROM messages WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("counting pending messages"))?;
        Ok(QueueStats {
            pending: u64::try_from(pending).unwrap_or(0),
            oldest_pending_age: oldest_age_seconds.map(|s| Duration::from_secs_f64(s.max(0.0))),
        })
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

    async fn seed_sending(&self, sending: bool, by: &str) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT INTO dispatcher_control (id, sending, changed_by) VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(sending)
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
            "INSERT INTO dispatcher_control (id, sending, changed_by) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET sending = $1, changed_by = $2, changed_at = now()",
        )
        .bind(sending)
        .bind(by)
        .execute(&self.pool)
        .await
        .map_err(db("setting the sending switch"))?;
        Ok(())
    }

    async fn heartbeat(&self, replica: &Replica) -> Result<bool, StoreError> {
        let wanted: Option<bool> = sqlx::query_scalar(
            "WITH beat AS (
                 INSERT INTO replicas (id, host, started_at, last_seen, in_flight, sending)
                 VALUES ($1, $2, $3, now(), $4, $5)
                 ON CONFLICT (id) DO UPDATE SET last_seen = now(), in_flight = $4, sending = $5
             )
             SELECT sending FROM dispatcher_control WHERE id = 1",
        )
        .bind(&replica.id)
        .bind(&replica.host)
        .bind(replica.started_at)
        .bind(i32::try_from(replica.in_flight).unwrap_or(i32::MAX))
        .bind(replica.sending)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("recording a heartbeat"))?;
        Ok(wanted.unwrap_or(replica.sending))
    }

    async fn list_replicas(&self, since: DateTime<Utc>) -> Result<Vec<Replica>, StoreError> {
        let rows: Vec<(String, String, DateTime<Utc>, DateTime<Utc>, i32, bool)> = sqlx::query_as(
            "SELECT id, host, started_at, last_seen, in_flight, sending FROM replicas
              WHERE last_seen >= $1 ORDER BY started_at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(db("listing replicas"))?;
        Ok(rows
            .into_iter()
            .map(|(id, host, started_at, last_seen, in_flight, sending)| Replica {
                id,
                host,
                started_at,
                last_seen,
                in_flight: u32::try_from(in_flight).unwrap_or(0),
                sending,
            })
            .collect())
    }

    async fn forget_replica(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db("removing a replica"))?;
        Ok(())
    }

    async fn activity_since(&self, since: DateTime<Utc>) -> Result<Vec<MinuteActivity>, StoreError> {
        let rows: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
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
        Ok(rows
            .into_iter()
            .map(|(minute, sent, failed)| MinuteActivity {
                minute,
                sent: u64::try_from(sent).unwrap_or(0),
                failed: u64::try_from(failed).unwrap_or(0),
            })
            .collect())
    }
}

/// Due `pending` rows to `sending`, oldest first, up to `$1`, for owner `$2` during `$3` seconds.
/// SKIP LOCKED: two instances claiming at once each take different rows instead of waiting. The claim
/// commits on its own; nothing holds a lock while the provider is called. (`load/bench.py` runs this
/// statement and `FINISH_CLAIMS`, read from this file, through pgbench for the database's ceiling.)
const CLAIM_DUE: &str = "
    WITH due AS (
        SELECT id FROM messages
         WHERE status = 'pending' AND next_attempt_at <= now()
         ORDER BY next_attempt_at, seq
         LIMIT $1
           FOR UPDATE SKIP LOCKED
    )
    UPDATE messages m
       SET status = 'sending', attempts = m.attempts + 1,
           lease_owner = $2, lease_token = gen_random_uuid(),
           lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
      FROM due
     WHERE m.id = due.id
 RETURNING m.id, m.lease_token, m.attempts, m.phone_number, m.content, m.seq";

/// A flush of results in one statement: the history rows, then each message's fenced transition (see
/// `NextState`). Results whose message is gone (deleted by hand, or pruned) leave no history rather than
/// failing the whole flush on the foreign key.
const FINISH_CLAIMS: &str = "
    WITH history AS (
        INSERT INTO message_attempts
               (claim_token, message_id, attempt, started_at, duration_ms, http_status, outcome, error,
                provider_message_id)
        SELECT a.* FROM unnest($8::uuid[], $9::uuid[], $10::int4[], $11::timestamptz[], $12::int8[], $13::int4[],
                               $14::text[], $15::text[], $16::text[])
                     AS a(claim_token, message_id, attempt, started_at, duration_ms, http_status, outcome, error,
                          provider_message_id)
         WHERE EXISTS (SELECT 1 FROM messages WHERE id = a.message_id)
        ON CONFLICT (claim_token) DO NOTHING
    )
    UPDATE messages m
       SET status = r.status,
           provider_message_id = CASE WHEN r.status = 'sent' THEN r.provider_message_id ELSE m.provider_message_id END,
           sent_at = r.sent_at,
           next_attempt_at = CASE WHEN r.status = 'pending' THEN now() + make_interval(secs => r.retry_in)
                                  ELSE m.next_attempt_at END,
           last_error = r.error,
           lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
      FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::float8[], $7::text[])
           AS r(id, token, status, provider_message_id, sent_at, retry_in, error)
     WHERE m.id = r.id
       AND CASE WHEN r.status = 'sent' THEN m.status IN ('pending', 'sending')
                ELSE m.status = 'sending' AND m.lease_token = r.token END
 RETURNING m.id";

/// `results` cut wherever a message comes again, so that no part names one message twice.
fn split_at_repeats(results: &[Finish]) -> Vec<&[Finish]> {
    let mut parts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut start = 0;
    for (i, result) in results.iter().enumerate() {
        if !seen.insert(result.claim.message_id) {
            parts.push(&results[start..i]);
            seen.clear();
            seen.insert(result.claim.message_id);
            start = i;
        }
    }
    parts.push(&results[start..]);
    parts
}

/// One statement of `finish_claims`: results for distinct messages, bound as one array per column.
async fn finish_chunk<'c>(executor: impl sqlx::PgExecutor<'c>, results: &[Finish]) -> Result<Vec<bool>, StoreError> {
    let (mut ids, mut tokens, mut statuses, mut provider_ids) = (vec![], vec![], vec![], vec![]);
    let (mut sent_ats, mut retry_ins, mut errors) = (vec![], vec![], vec![]);
    let mut history = AttemptColumns::default();
    for result in results {
        let claim = &result.claim;
        ids.push(claim.message_id);
        tokens.push(claim.token);
        let (status, provider_id, sent_at, retry_in, error) = match &result.next {
            NextState::Sent {
                provider_message_id,
                sent_at,
            } => (
                "sent",
                provider_message_id.as_ref().map(AsRef::as_ref),
                Some(*sent_at),
                None,
                None,
            ),
            NextState::RetryLater { delay, error } => ("pending", None, None, Some(delay.as_secs_f64()), Some(error)),
            NextState::Failed { error } => ("failed", None, None, None, Some(error)),
        };
        statuses.push(status);
        provider_ids.push(provider_id);
        sent_ats.push(sent_at);
        retry_ins.push(retry_in);
        errors.push(error.map(String::as_str));
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
