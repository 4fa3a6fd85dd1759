//! `PersisterActor`: records provider answers under their claims, a flush at a time, then caches what was
//! sent and frees the send slots.
//!
//! Answers wait in a buffer and are written together, one statement per flush
//! (`MessageStore::finish_claims`). A flush starts once `FLUSH_MAX` answers wait or `FLUSH_DELAY` after
//! the first of them arrived, and at most `MAX_FLUSHES` run at once: under load the flushes grow instead
//! of statements queueing for connections, and at the default pace a flush is one tick's answers, a
//! couple of milliseconds late.
//!
//! Every write is fenced on the claim (see `store/mod.rs`): a result whose claim was lost changes
//! nothing. A flush that fails (database down right after a 202) is retried until it succeeds, so an
//! accepted message is never dropped and never turned into a resend while the process lives; its send
//! slots stay taken meanwhile, which stops new claims. A flush the database refuses for what one result
//! holds is written again result by result, each freeing its own slot, so that result holds up only
//! itself. The cache comes after the database, which stays the source of truth: a crash between the two
//! leaves only missing cache entries.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;

use super::{
    messages::{DeliveryFinished, SlotsFreed},
    retry::{RetryDecision, RetryPolicy},
};
use crate::{
    cache::{Cache, SentRecord},
    domain::Attempt,
    metrics::Metrics,
    provider::Outcome,
    store::{Finish, MessageStore, NextState},
    telemetry::error_chain,
};

/// A flush starts at once when this many answers wait.
const FLUSH_MAX: usize = 500;
/// Otherwise, this long after the first waiting answer arrived.
const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// Flushes in flight at once; more answers wait for the next one and make it larger.
const MAX_FLUSHES: usize = 2;
const WRITE_RETRY_MIN: Duration = Duration::from_millis(100);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct PersisterActor {
    store: Arc<dyn MessageStore>,
    cache: Cache,
    metrics: Metrics,
    policy: RetryPolicy,
    fetcher: Recipient<SlotsFreed>,
    /// Answers not yet in a flush, oldest first.
    waiting: Vec<Answer>,
    /// Whether the waiting answers may be flushed now (`FLUSH_DELAY` passed, or `FLUSH_MAX` wait).
    due: bool,
    timer: Option<SpawnHandle>,
    flushes: usize,
}

/// A provider's answer and the retry decision drawn for it when it arrived: a retried write keeps the
/// delay it first chose.
struct Answer {
    finished: DeliveryFinished,
    decision: Option<RetryDecision>,
}

impl PersisterActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        cache: Cache,
        metrics: Metrics,
        policy: RetryPolicy,
        fetcher: Recipient<SlotsFreed>,
    ) -> Self {
        Self {
            store,
            cache,
            metrics,
            policy,
            fetcher,
            waiting: Vec::new(),
            due: false,
            timer: None,
            flushes: 0,
        }
    }

    /// Starts flushes while answers are due and a flush may start.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while self.due && self.flushes < MAX_FLUSHES && !self.waiting.is_empty() {
            let take = self.waiting.len().min(FLUSH_MAX);
            let batch: Vec<Answer> = self.waiting.drain(..take).collect();
            if self.waiting.is_empty() {
                self.due = false;
                if let Some(timer) = self.timer.take() {
                    ctx.cancel_future(timer);
                }
            }
            self.flushes += 1;
            ctx.spawn(self.record(batch).map(|flushed, act, ctx| {
                act.flushes -= 1;
                act.settle(flushed, ctx);
                act.flush(ctx);
            }));
        }
    }

    fn record(&self, batch: Vec<Answer>) -> impl ActorFuture<Self, Output = Flushed> + 'static {
        let store = Arc::clone(&self.store);
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        async move { record(store.as_ref(), &cache, &metrics, batch).await }.into_actor(self)
    }

    /// Frees the slots of a recorded flush; writes each answer of a refused one on its own. Those are not
    /// counted among the flushes: an answer the database keeps refusing must not hold a flush for good.
    fn settle(&mut self, flushed: Flushed, ctx: &mut Context<Self>) {
        match flushed {
            Flushed::Recorded { provider_failed } => self.fetcher.do_send(SlotsFreed { provider_failed }),
            Flushed::Refused(batch) => {
                for answer in batch {
                    ctx.spawn(
                        self.record(vec![answer])
                            .map(|flushed, act, ctx| act.settle(flushed, ctx)),
                    );
                }
            }
        }
    }
}

/// What came of writing one flush.
enum Flushed {
    /// Written and cached. Per answer: whether the provider failed it (for the circuit breaker).
    Recorded { provider_failed: Vec<bool> },
    /// The database refused the flush for what one of its answers holds: each is to be written alone.
    Refused(Vec<Answer>),
}

/// Writes one flush, logs and counts what came of each answer, and caches what was sent.
async fn record(store: &dyn MessageStore, cache: &Cache, metrics: &Metrics, batch: Vec<Answer>) -> Flushed {
    let finishes: Vec<Finish> = batch.iter().map(Answer::finish).collect();
    let Some(changed) = write_until_recorded(store, metrics, &finishes).await else {
        return Flushed::Refused(batch);
    };
    let mut summary = Summary::default();
    let mut to_cache = Vec::new();
    for ((answer, finish), changed) in batch.iter().zip(&finishes).zip(changed) {
        summary.count(answer, changed, metrics);
        if let (
            true,
            NextState::Sent {
                provider_message_id: Some(provider_id),
                sent_at,
            },
        ) = (changed, &finish.next)
        {
            let record = SentRecord {
                message_id: provider_id.to_string(),
                sent_at: *sent_at,
            };
            to_cache.push((finish.claim.message_id, record));
        }
    }
    log::info!(
        sent = summary.sent, retrying = summary.retrying, failed = summary.failed, lost = summary.lost;
        "results recorded"
    );
    if let Err(error) = cache.put_sent_many(&to_cache).await {
        metrics.cache_errors_total.inc();
        log::warn!(messages = to_cache.len(); "sent, but not cached: {}", error_chain(&error));
    }
    let provider_failed = batch
        .iter()
        .map(|answer| matches!(answer.finished.outcome, Outcome::RetryLater { .. }))
        .collect();
    Flushed::Recorded { provider_failed }
}

/// Writes `finishes` until the database takes them; a lost connection or a timeout retries the flush as
/// it is. `None` when the database refuses a flush of several for what they hold: the caller writes
/// them one by one, and a single result is retried until it goes in.
async fn write_until_recorded(store: &dyn MessageStore, metrics: &Metrics, finishes: &[Finish]) -> Option<Vec<bool>> {
    let mut wait = WRITE_RETRY_MIN;
    loop {
        let error = match store.finish_claims(finishes).await {
            Ok(changed) => return Some(changed),
            Err(error) => error,
        };
        metrics.result_write_errors_total.inc();
        if finishes.len() > 1 && error.is_refusal() {
            log::error!(
                results = finishes.len();
                "the database refused a flush of results, writing them one by one: {}", error_chain(&error)
            );
            return None;
        }
        let first = &finishes.first()?.claim;
        log::error!(
            results = finishes.len(), message_id:% = first.message_id, retry_in:? = wait;
            "could not record the provider's answers: {}", error_chain(&error)
        );
        actix_rt::time::sleep(wait).await;
        wait = (wait * 2).min(WRITE_RETRY_MAX);
    }
}

impl Answer {
    /// The store's view of this answer: the transition it calls for, and the attempt to keep.
    fn finish(&self) -> Finish {
        let finished = &self.finished;
        let next = match (&finished.outcome, self.decision) {
            (
                Outcome::Accepted {
                    provider_message_id,
                    sent_at,
                    ..
                },
                _,
            ) => NextState::Sent {
                provider_message_id: provider_message_id.clone(),
                sent_at: *sent_at,
            },
            (Outcome::RetryLater { reason, .. }, Some(RetryDecision::RetryIn(delay))) => NextState::RetryLater {
                delay,
                error: reason.clone(),
            },
            (Outcome::RetryLater { reason, .. }, _) => NextState::Failed {
                error: format!("gave up after {} attempts: {reason}", finished.claim.attempt),
            },
            (Outcome::Rejected { reason, .. }, _) => NextState::Failed { error: reason.clone() },
        };
        Finish {
            claim: finished.claim,
            next,
            attempt: Some(attempt_of(finished)),
        }
    }
}

/// What one flush came to, for its log line.
#[derive(Default)]
struct Summary {
    sent: usize,
    retrying: usize,
    failed: usize,
    lost: usize,
}

impl Summary {
    /// Logs and counts one answer once its write is done; `changed` is whether it moved the message.
    fn count(&mut self, answer: &Answer, changed: bool, metrics: &Metrics) {
        let DeliveryFinished {
            claim,
            outcome,
            duration,
            ..
        } = &answer.finished;
        let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        if !changed {
            self.lost += 1;
            log::warn!(
                message_id:% = claim.message_id, attempt = claim.attempt;
                "result not recorded: the claim was lost (its lease expired and the message was rescued)"
            );
            return;
        }
        match (outcome, answer.decision) {
            (
                Outcome::Accepted {
                    provider_message_id,
                    body_problem,
                    ..
                },
                _,
            ) => {
                self.sent += 1;
                if let Some(problem) = body_problem {
                    log::warn!(message_id:% = claim.message_id; "provider accepted the message but its answer is odd: {problem}");
                }
                log::debug!(
                    message_id:% = claim.message_id, attempt = claim.attempt, duration_ms = duration_ms,
                    provider_message_id = provider_message_id.as_ref().map_or("none", AsRef::as_ref);
                    "message sent"
                );
            }
            (Outcome::RetryLater { status, .. }, Some(RetryDecision::RetryIn(delay))) => {
                self.retrying += 1;
                metrics.retries_total.inc();
                // The reason may quote the provider's body; it goes to the row, not the log.
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status:? = status,
                    duration_ms = duration_ms, retry_in:? = delay;
                    "send failed, will retry"
                );
            }
            (Outcome::RetryLater { status, .. }, _) => {
                self.failed += 1;
                metrics.dead_letters_total.inc();
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status:? = status;
                    "send failed and the attempts are spent: message failed (dead letter)"
                );
            }
            (Outcome::Rejected { status, .. }, _) => {
                self.failed += 1;
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status = status;
                    "provider rejected the message; it will not be retried"
                );
            }
        }
    }
}

fn attempt_of(finished: &DeliveryFinished) -> Attempt {
    let (error, provider_message_id) = match &finished.outcome {
        Outcome::Accepted {
            provider_message_id,
            body_problem,
            ..
        } => (
            body_problem.clone(),
            provider_message_id.as_ref().map(ToString::to_string),
        ),
        Outcome::RetryLater { reason, .. } | Outcome::Rejected { reason, .. } => (Some(reason.clone()), None),
    };
    Attempt {
        attempt: finished.claim.attempt,
        started_at: finished.started_at,
        duration_ms: u64::try_from(finished.duration.as_millis()).unwrap_or(u64::MAX),
        http_status: finished.outcome.http_status(),
        outcome: finished.outcome.label().to_owned(),
        error,
        provider_message_id,
    }
}

impl Actor for PersisterActor {
    type Context = Context<Self>;
}

impl Handler<DeliveryFinished> for PersisterActor {
    type Result = ();

    fn handle(&mut self, finished: DeliveryFinished, ctx: &mut Self::Context) {
        let decision = match &finished.outcome {
            Outcome::RetryLater { retry_after, .. } => {
                Some(self.policy.decide(finished.claim.attempt, *retry_after, rand::random()))
            }
            _ => None,
        };
        self.waiting.push(Answer { finished, decision });
        if self.waiting.len() >= FLUSH_MAX {
            self.due = true;
        } else if !self.due && self.timer.is_none() {
            self.timer = Some(ctx.run_later(FLUSH_DELAY, |act, ctx| {
                act.timer = None;
                act.due = true;
                act.flush(ctx);
            }));
        }
        self.flush(ctx);
    }
}
