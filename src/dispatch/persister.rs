//! `PersisterActor`: records each provider answer under its claim, then caches what was sent.
//!
//! Every write is fenced on the claim (see `store/mod.rs`): a result whose claim was lost changes
//! nothing. A write that fails (database down right after a 202) is retried until it succeeds, so an
//! accepted message is never dropped and never turned into a resend while the process lives; its send
//! slot stays taken meanwhile, which stops new claims. The cache comes after the database, which stays
//! the source of truth: a crash between the two leaves only a missing cache entry.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;

use super::{
    messages::{DeliveryFinished, SlotFreed},
    retry::{RetryDecision, RetryPolicy},
};
use crate::{
    cache::{Cache, SentRecord},
    domain::Attempt,
    metrics::Metrics,
    provider::Outcome,
    store::{MessageStore, StoreError},
    telemetry::error_chain,
};

const WRITE_RETRY_MIN: Duration = Duration::from_millis(100);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct PersisterActor {
    store: Arc<dyn MessageStore>,
    cache: Cache,
    metrics: Metrics,
    policy: RetryPolicy,
    fetcher: Recipient<SlotFreed>,
}

impl PersisterActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        cache: Cache,
        metrics: Metrics,
        policy: RetryPolicy,
        fetcher: Recipient<SlotFreed>,
    ) -> Self {
        Self {
            store,
            cache,
            metrics,
            policy,
            fetcher,
        }
    }
}

/// Records one result, retrying the database write until it succeeds.
async fn record(
    store: &dyn MessageStore,
    cache: &Cache,
    metrics: &Metrics,
    policy: &RetryPolicy,
    finished: &DeliveryFinished,
) {
    // One draw per result: a retried write keeps the delay it first chose.
    let decision = match &finished.outcome {
        Outcome::RetryLater { retry_after, .. } => {
            Some(policy.decide(finished.claim.attempt, *retry_after, rand::random()))
        }
        _ => None,
    };
    let mut wait = WRITE_RETRY_MIN;
    let recorded = loop {
        match write_outcome(store, metrics, finished, decision).await {
            Ok(recorded) => break recorded,
            Err(error) => {
                metrics.result_write_errors_total.inc();
                log::error!(
                    message_id:% = finished.claim.message_id, outcome = finished.outcome.label(), retry_in:? = wait;
                    "could not record the provider's answer: {}", error_chain(&error)
                );
                actix_rt::time::sleep(wait).await;
                wait = (wait * 2).min(WRITE_RETRY_MAX);
            }
        }
    };
    let claim = &finished.claim;
    if !recorded {
        log::warn!(
            message_id:% = claim.message_id, attempt = claim.attempt;
            "result not recorded: the claim was lost (its lease expired and the message was rescued)"
        );
        return;
    }
    if let Outcome::Accepted {
        provider_message_id: Some(provider_id),
        sent_at,
        ..
    } = &finished.outcome
    {
        let record = SentRecord {
            message_id: provider_id.to_string(),
            sent_at: *sent_at,
        };
        if let Err(error) = cache.put_sent(claim.message_id, &record).await {
            metrics.cache_errors_total.inc();
            log::warn!(message_id:% = claim.message_id; "sent, but not cached: {}", error_chain(&error));
        }
    }
}

/// The one fenced transition each outcome calls for; `Ok(false)` when the claim was lost.
async fn write_outcome(
    store: &dyn MessageStore,
    metrics: &Metrics,
    finished: &DeliveryFinished,
    decision: Option<RetryDecision>,
) -> Result<bool, StoreError> {
    let DeliveryFinished {
        claim,
        outcome,
        started_at,
        duration,
    } = finished;
    let duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    // History first, keyed by the claim: a retried write records it once, and a result whose claim
    // was lost still shows in the history that it happened.
    store
        .record_attempt(claim, &attempt_of(finished, *started_at, duration_ms))
        .await?;
    match outcome {
        Outcome::Accepted {
            provider_message_id,
            body_problem,
            sent_at,
            ..
        } => {
            if let Some(problem) = body_problem {
                log::warn!(message_id:% = claim.message_id; "provider accepted the message but its answer is odd: {problem}");
            }
            let recorded = store
                .mark_sent_unless_final(claim, provider_message_id.as_ref(), *sent_at)
                .await?;
            if recorded {
                log::info!(
                    message_id:% = claim.message_id, attempt = claim.attempt, duration_ms = duration_ms,
                    provider_message_id = provider_message_id.as_ref().map_or("none", AsRef::as_ref);
                    "message sent"
                );
            }
            Ok(recorded)
        }
        Outcome::RetryLater { reason, status, .. } => match decision {
            Some(RetryDecision::RetryIn(delay)) => {
                let recorded = store.retry_later_if_claimed(claim, delay, reason).await?;
                if recorded {
                    metrics.retries_total.inc();
                    // The reason may quote the provider's body; it goes to the row, not the log.
                    log::warn!(
                        message_id:% = claim.message_id, attempt = claim.attempt, status:? = status,
                        duration_ms = duration_ms, retry_in:? = delay;
                        "send failed, will retry"
                    );
                }
                Ok(recorded)
            }
            Some(RetryDecision::GiveUp) | None => {
                let reason = format!("gave up after {} attempts: {reason}", claim.attempt);
                let recorded = store.mark_failed_if_claimed(claim, &reason).await?;
                if recorded {
                    metrics.dead_letters_total.inc();
                    log::warn!(
                        message_id:% = claim.message_id, attempt = claim.attempt, status:? = status;
                        "send failed and the attempts are spent: message failed (dead letter)"
                    );
                }
                Ok(recorded)
            }
        },
        Outcome::Rejected { reason, status } => {
            let recorded = store.mark_failed_if_claimed(claim, reason).await?;
            if recorded {
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status = status;
                    "provider rejected the message; it will not be retried"
                );
            }
            Ok(recorded)
        }
    }
}

fn attempt_of(finished: &DeliveryFinished, started_at: chrono::DateTime<chrono::Utc>, duration_ms: u64) -> Attempt {
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
        started_at,
        duration_ms,
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
        let store = Arc::clone(&self.store);
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        let policy = self.policy;
        let provider_failed = matches!(finished.outcome, Outcome::RetryLater { .. });
        ctx.spawn(
            async move { record(store.as_ref(), &cache, &metrics, &policy, &finished).await }
                .into_actor(self)
                .map(move |(), act, _| act.fetcher.do_send(SlotFreed { provider_failed })),
        );
    }
}
