//! The Redis cache of sent messages.
//!
//! Key `message:<message uuid>` holds JSON `{"messageId": "<provider id>", "sentAt": "<RFC 3339>"}` and
//! expires after `REDIS_TTL`. The key is our id, not the provider's: provider ids may repeat. Beside it,
//! `provider:<provider id>` is the set of our message ids that provider id was given to (a set, not a
//! value: a provider that repeats ids gives one to several messages, and a receipt for it is then applied
//! to none), with the same expiry; delivery receipts are matched through it, so it is only written while
//! receipts are taken (`CALLBACK_AUTH_KEY`): without them it would double Redis's work for nothing. The
//! database stays the
//! source of truth; the cache is optional, so every failure here is reported to the caller to log and
//! count, and never stops a send.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts, redis};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secret::Secret;

/// No cache call may hold up a send or a request for longer than this.
const CACHE_TIMEOUT: Duration = Duration::from_secs(1);
/// After a call that found Redis out of reach, calls fail at once for this long, without asking: one
/// that hangs (a network dropping packets, a stopped process) would have each wait out the timeout, the
/// persister's flushes (so the fetcher's claims) with it; one that refuses would have each log and
/// count its failure, a line per flush and per batch of receipts.
const REST_AFTER_TIMEOUT: Duration = Duration::from_secs(5);
const POOL_SIZE: usize = 8;

/// What is cached for a sent message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentRecord {
    pub message_id: String,
    pub sent_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("REDIS_URL is not a valid Redis URL")]
    Config(#[source] deadpool_redis::CreatePoolError),
    #[error("could not get a Redis connection")]
    Pool(#[source] deadpool_redis::PoolError),
    #[error("Redis failed while {action}")]
    Command {
        action: &'static str,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis did not answer within {CACHE_TIMEOUT:?} while {0}")]
    Timeout(&'static str),
    #[error("Redis was out of reach lately: not asked again for {REST_AFTER_TIMEOUT:?} after that")]
    Resting,
    #[error("a cached value could not be encoded or decoded")]
    Json(#[source] serde_json::Error),
}

impl CacheError {
    /// A call not made at all, the cache resting after Redis was out of reach: already logged then, so
    /// logged at debug (and counted in `cache_errors_total`, as the failure it stands for).
    pub fn is_resting(&self) -> bool {
        matches!(self, Self::Resting)
    }

    /// Redis could not be reached (no answer in time, no connection, a refused one, a password refused):
    /// the next calls would fail the same way, so the cache rests instead of asking again at once.
    fn is_out_of_reach(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Pool(_) => true,
            Self::Command { source, .. } => {
                source.is_timeout()
                    || source.is_io_error()
                    || source.is_connection_refusal()
                    || source.is_connection_dropped()
                    || source.kind() == redis::ErrorKind::AuthenticationFailed
            }
            Self::Config(_) | Self::Resting | Self::Json(_) => false,
        }
    }
}

#[derive(Clone)]
pub struct Cache {
    pool: Option<Pool>,
    /// Until when calls fail at once (`REST_AFTER_TIMEOUT`), shared by the clones.
    rest_until: Arc<Mutex<Option<Instant>>>,
    ttl: Duration,
    /// Whether `provider:<provider id>` sets are written beside each sent message.
    matches_receipts: bool,
}

impl Cache {
    /// A cache on `url`, or a disabled one when there is none. Connects lazily: a Redis that is down at
    /// start-up only shows in `/readyz` and the logs. `matches_receipts`: delivery receipts are taken, so
    /// each sent message is also indexed by its provider id.
    pub fn new(url: Option<&Secret>, ttl: Duration, matches_receipts: bool) -> Result<Self, CacheError> {
        let pool = url
            .map(|url| {
                let mut config = deadpool_redis::Config::from_url(url.expose());
                config.pool = Some(PoolConfig {
                    max_size: POOL_SIZE,
                    timeouts: Timeouts {
                        wait: Some(CACHE_TIMEOUT),
                        create: Some(CACHE_TIMEOUT),
                        recycle: Some(CACHE_TIMEOUT),
                    },
                    ..PoolConfig::default()
                });
                config.create_pool(Some(Runtime::Tokio1)).map_err(CacheError::Config)
            })
            .transpose()?;
        Ok(Self {
            pool,
            rest_until: Arc::default(),
            ttl,
            matches_receipts,
        })
    }

    /// How long an entry is kept (`REDIS_TTL`).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn is_enabled(&self) -> bool {
        self.pool.is_some()
    }

    /// `SET message:<id> <record> EX <ttl>` for each entry (and, while receipts are taken, its id added to
    /// `provider:<provider id>`, which keeps two at most: `NOTE_PROVIDER_ID`), pipelined: one round trip for a whole flush of results. Does nothing
    /// when the cache is off.
    pub async fn put_sent_many(&self, entries: &[(Uuid, SentRecord)]) -> Result<(), CacheError> {
        let Some(pool) = self.pool.as_ref().filter(|_| !entries.is_empty()) else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        let ttl = self.ttl.as_secs().max(1);
        for (id, record) in entries {
            let value = serde_json::to_string(record).map_err(CacheError::Json)?;
            pipe.cmd("SET").arg(key(*id)).arg(value).arg("EX").arg(ttl).ignore();
            if !self.matches_receipts {
                continue;
            }
            pipe.cmd("EVAL")
                .arg(NOTE_PROVIDER_ID)
                .arg(1)
                .arg(provider_key(&record.message_id))
                .arg(id.to_string())
                .arg(ttl)
                .ignore();
        }
        let action = "writing sent messages";
        self.call(action, async {
            let mut conn = pool.get().await.map_err(CacheError::Pool)?;
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(|source| CacheError::Command { action, source })
        })
        .await
    }

    /// The cached records of `ids`, in order, `None` where a key is missing; all `None` when off.
    pub async fn get_sent_many(&self, ids: &[Uuid]) -> Result<Vec<Option<SentRecord>>, CacheError> {
        let Some(pool) = self.pool.as_ref().filter(|_| !ids.is_empty()) else {
            return Ok(vec![None; ids.len()]);
        };
        let action = "reading sent messages";
        let values: Vec<Option<String>> = self
            .call(action, async {
                let mut conn = pool.get().await.map_err(CacheError::Pool)?;
                redis::cmd("MGET")
                    .arg(ids.iter().map(|id| key(*id)).collect::<Vec<_>>())
                    .query_async(&mut conn)
                    .await
                    .map_err(|source| CacheError::Command { action, source })
            })
            .await?;
        values
            .into_iter()
            .map(|value| {
                value
                    .map(|v| serde_json::from_str(&v).map_err(CacheError::Json))
                    .transpose()
            })
            .collect()
    }

    /// For each provider id, in order, the message ids it was given to as cached (`SMEMBERS`, pipelined);
    /// an empty list where nothing is cached, and all empty when the cache is off.
    pub async fn messages_of_provider_ids(&self, provider_ids: &[String]) -> Result<Vec<Vec<Uuid>>, CacheError> {
        let Some(pool) = self.pool.as_ref().filter(|_| !provider_ids.is_empty()) else {
            return Ok(vec![Vec::new(); provider_ids.len()]);
        };
        let mut pipe = redis::pipe();
        for provider_id in provider_ids {
            pipe.cmd("SMEMBERS").arg(provider_key(provider_id));
        }
        let action = "reading the messages of provider ids";
        let members: Vec<Vec<String>> = self
            .call(action, async {
                let mut conn = pool.get().await.map_err(CacheError::Pool)?;
                pipe.query_async(&mut conn)
                    .await
                    .map_err(|source| CacheError::Command { action, source })
            })
            .await?;
        // A member that is not a uuid was not written by us: it is skipped, and the database decides.
        Ok(members
            .into_iter()
            .map(|ids| ids.iter().filter_map(|id| Uuid::parse_str(id).ok()).collect())
            .collect())
    }

    /// Runs one call within `CACHE_TIMEOUT`, unless the cache rests after Redis was out of reach.
    async fn call<T>(
        &self,
        action: &'static str,
        fut: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let resting = self
            .rest_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until);
        if resting {
            return Err(CacheError::Resting);
        }
        self.timed(action, fut).await
    }

    /// Runs one call within `CACHE_TIMEOUT`; one that finds Redis out of reach starts the rest, one that
    /// answers ends it.
    async fn timed<T>(
        &self,
        action: &'static str,
        fut: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let result = tokio::time::timeout(CACHE_TIMEOUT, fut)
            .await
            .unwrap_or(Err(CacheError::Timeout(action)));
        let out_of_reach = result.as_ref().err().is_some_and(CacheError::is_out_of_reach);
        let mut rest_until = self.rest_until.lock().unwrap_or_else(PoisonError::into_inner);
        if out_of_reach {
            *rest_until = Some(Instant::now() + REST_AFTER_TIMEOUT);
        } else if result.is_ok() {
            *rest_until = None;
        }
        result
    }

    /// `Ok(None)` when the cache is off, `Ok(Some(()))` when Redis answers.
    /// A ping is made even while the cache rests (`/readyz` says how Redis is now), and ends the rest.
    pub async fn ping(&self) -> Result<Option<()>, CacheError> {
        let Some(pool) = &self.pool else { return Ok(None) };
        let action = "answering a ping";
        self.timed(action, async {
            let mut conn = pool.get().await.map_err(CacheError::Pool)?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|source| CacheError::Command { action, source })
        })
        .await
        .map(|_| Some(()))
    }
}

/// The Redis key of a sent message.
pub fn key(id: Uuid) -> String {
    format!("message:{id}")
}

/// Adds message `ARGV[1]` to provider id set `KEYS[1]` while it holds fewer than two, and (re)sets its
/// time to live to `ARGV[2]` seconds. Two are all a receipt's match needs (one message, or several:
/// ambiguous); a provider that gives every message the same id (webhook.site) would otherwise grow one
/// set by a message per send, its time to live renewed by each, for as long as the service runs.
const NOTE_PROVIDER_ID: &str = "if redis.call('SCARD', KEYS[1]) < 2 then redis.call('SADD', KEYS[1], ARGV[1]) end \
                                return redis.call('EXPIRE', KEYS[1], ARGV[2])";

/// The Redis key of the set of messages a provider id was given to.
pub fn provider_key(provider_message_id: &str) -> String {
    format!("provider:{provider_message_id}")
}
