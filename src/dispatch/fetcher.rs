//! `FetcherActor`: on each `Tick`, rescues expired leases, claims what the free send slots can take,
//! fails claimed rows that do not validate, and hands the rest to the webhook actors in turn.
//!
//! It keeps the count of claims not yet recorded (`in_flight`); the persister frees their slots a flush
//! at a time. Capping that count at `WEBHOOK_CONCURRENCY` (and each tick's claim at `BATCH_SIZE`) is what
//! keeps ticks from piling up behind a slow provider, and keeps a claimed message from waiting in memory
//! while its lease runs out.

use std::sync::Arc;

use actix::prelude::*;

use super::{
    breaker::{Breaker, BreakerState},
    messages::{
        BreakerReport, Deliver, GetBreaker, GetInFlight, PauseClaims, ResumeClaims, SlotsFreed, Tick, TickReport,
        TickSkipped, TickSource,
    },
};
use crate::{
    config::Settings,
    domain::{MessageContent, PhoneNumber},
    metrics::Metrics,
    store::{ClaimedMessage, Finish, MessageStore, NextState, StoreError},
    telemetry::error_chain,
};

pub struct FetcherActor {
    store: Arc<dyn MessageStore>,
    webhooks: Vec<Recipient<Deliver>>,
    next_webhook: usize,
    rules: ClaimRules,
    metrics: Metrics,
    in_flight: usize,
    claiming: bool,
    /// Set while sending is stopped: scheduled ticks do nothing, and a claim that returns finds its rows
    /// given back unsent.
    paused: bool,
    breaker: Breaker,
}

/// What a claim may take and how its rows are judged.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub owner: String,
    pub batch_size: u32,
    /// `WEBHOOK_CONCURRENCY`: claims of this instance not yet recorded, at most.
    pub concurrency: usize,
    pub lease: std::time::Duration,
    pub content_max_chars: usize,
}

impl ClaimRules {
    pub fn new(settings: &Settings, owner: String) -> Self {
        Self {
            owner,
            batch_size: settings.batch_size.get(),
            concurrency: settings.webhook_concurrency.get(),
            lease: settings.lease,
            content_max_chars: settings.content_max_chars.get(),
        }
    }
}

/// One tick's claim: what to send and what was set aside.
struct ClaimedBatch {
    rescued: usize,
    deliveries: Vec<Deliver>,
    invalid: usize,
}

impl FetcherActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        webhooks: Vec<Recipient<Deliver>>,
        rules: ClaimRules,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            webhooks,
            next_webhook: 0,
            rules,
            metrics,
            in_flight: 0,
            claiming: false,
            paused: true,
            breaker: Breaker::default(),
        }
    }

    fn hand_out(&mut self, delivery: Deliver) {
        // The pool is never empty: `dispatch::start` builds at least one webhook actor.
        if let Some(webhook) = self.webhooks.get(self.next_webhook % self.webhooks.len().max(1)) {
            self.next_webhook = self.next_webhook.wrapping_add(1);
            self.in_flight += 1;
            webhook.do_send(delivery);
        }
    }
}

/// Rescue, claim, validate: the database side of a tick, without the actor.
async fn claim_batch(store: &dyn MessageStore, rules: &ClaimRules, limit: u32) -> Result<ClaimedBatch, StoreError> {
    let rescued = store.rescue_expired_leases().await?;
    for id in &rescued {
        log::warn!(message_id:% = id; "lease expired before a result was recorded: message back to pending");
    }
    if limit == 0 {
        return Ok(ClaimedBatch {
            rescued: rescued.len(),
            deliveries: Vec::new(),
            invalid: 0,
        });
    }
    let claimed = store.claim_due(limit, &rules.owner, rules.lease).await?;
    let mut batch = ClaimedBatch {
        rescued: rescued.len(),
        deliveries: Vec::with_capacity(claimed.len()),
        invalid: 0,
    };
    let mut invalid = Vec::new();
    for message in claimed {
        match validate(&message, rules.content_max_chars) {
            Ok(delivery) => batch.deliveries.push(delivery),
            Err(reason) => {
                log::warn!(message_id:% = message.claim.message_id; "claimed message is invalid, failing it: {reason}");
                invalid.push(Finish {
                    claim: message.claim,
                    next: NextState::Failed { error: reason },
                    attempt: None,
                });
            }
        }
    }
    batch.invalid = invalid.len();
    // If this write fails the leases expire, the rows are claimed again and judged again.
    if !invalid.is_empty()
        && let Err(error) = store.finish_claims(&invalid).await
    {
        log::error!(messages = invalid.len(); "could not fail invalid messages: {}", error_chain(&error));
    }
    Ok(batch)
}

/// Rows may come from plain SQL inserts, so they are parsed here exactly as the API parses a request.
fn validate(message: &ClaimedMessage, content_max_chars: usize) -> Result<Deliver, String> {
    let to = PhoneNumber::parse(&message.phone_number).map_err(|e| format!("invalid phone_number: {e}"))?;
    let content =
        MessageContent::parse(&message.content, content_max_chars).map_err(|e| format!("invalid content: {e}"))?;
    Ok(Deliver {
        claim: message.claim,
        to,
        content,
    })
}

impl Actor for FetcherActor {
    type Context = Context<Self>;
}

impl Handler<Tick> for FetcherActor {
    type Result = ResponseActFuture<Self, TickReport>;

    fn handle(&mut self, tick: Tick, _: &mut Self::Context) -> Self::Result {
        let skipped = |reason| {
            Box::pin(actix::fut::ready(TickReport {
                skipped: Some(reason),
                ..TickReport::default()
            }))
        };
        if tick.source == TickSource::Scheduler && self.paused {
            return skipped(TickSkipped::Paused);
        }
        if self.claiming {
            log::debug!("tick skipped: the previous claim has not returned");
            return skipped(TickSkipped::ClaimInProgress);
        }
        // With every slot taken the tick still rescues: leases of dead instances must not wait for ours.
        let free_slots = self.rules.concurrency.saturating_sub(self.in_flight);
        let wanted = free_slots.min(self.rules.batch_size as usize);
        let allowed = self.breaker.allowance(wanted, std::time::Instant::now());
        let breaker_holds = allowed < wanted;
        let limit = u32::try_from(allowed).unwrap_or(self.rules.batch_size);
        self.claiming = true;
        let store = Arc::clone(&self.store);
        let rules = self.rules.clone();
        Box::pin(
            async move { claim_batch(store.as_ref(), &rules, limit).await }
                .into_actor(self)
                .then(move |result, act, _| {
                    act.claiming = false;
                    let (mut report, unsent) = act.finish_tick(tick.source, limit, result);
                    if breaker_holds && report.skipped == Some(TickSkipped::NoFreeSlot) {
                        report.skipped = Some(TickSkipped::BreakerOpen);
                    }
                    let store = Arc::clone(&act.store);
                    async move {
                        if !unsent.is_empty() {
                            release(store.as_ref(), unsent).await;
                        }
                        report
                    }
                    .into_actor(act)
                }),
        )
    }
}

impl FetcherActor {
    /// Hands out what a claim returned, or, when sending stopped meanwhile, returns it to be given back.
    fn finish_tick(
        &mut self,
        source: TickSource,
        limit: u32,
        result: Result<ClaimedBatch, StoreError>,
    ) -> (TickReport, Vec<Deliver>) {
        let batch = match result {
            Ok(batch) => batch,
            Err(error) => {
                self.metrics.tick_errors_total.inc();
                log::error!("tick failed, will try again next tick: {}", error_chain(&error));
                let report = TickReport {
                    skipped: Some(TickSkipped::StoreError),
                    ..TickReport::default()
                };
                return (report, Vec::new());
            }
        };
        self.metrics.leases_rescued_total.inc_by(batch.rescued as u64);
        self.metrics
            .sends_total
            .with_label_values(&["invalid"])
            .inc_by(batch.invalid as u64);
        let mut report = TickReport {
            rescued: batch.rescued,
            claimed: batch.deliveries.len() + batch.invalid,
            invalid: batch.invalid,
            skipped: (limit == 0).then_some(TickSkipped::NoFreeSlot),
        };
        if source == TickSource::Scheduler && self.paused {
            // Sending stopped while this claim ran: give the rows back rather than post them.
            report.skipped = Some(TickSkipped::Paused);
            return (report, batch.deliveries);
        }
        if report.claimed > 0 || report.rescued > 0 {
            // Debug: at full throttle this is hundreds of lines a second; the persister's one line per
            // flush says what came of them.
            log::debug!(
                claimed = report.claimed, invalid = report.invalid, rescued = report.rescued;
                "tick claimed messages"
            );
        }
        self.breaker.claimed(batch.deliveries.len());
        batch
            .deliveries
            .into_iter()
            .for_each(|delivery| self.hand_out(delivery));
        (report, Vec::new())
    }
}

/// Gives claimed rows back unsent. A release that fails leaves the row to the rescuer after its lease.
async fn release(store: &dyn MessageStore, deliveries: Vec<Deliver>) {
    for delivery in deliveries {
        let id = delivery.claim.message_id;
        match store.release_if_claimed(&delivery.claim).await {
            Ok(_) => log::info!(message_id:% = id; "sending stopped: claim given back unsent"),
            Err(error) => log::warn!(message_id:% = id; "could not give a claim back: {}", error_chain(&error)),
        }
    }
}

impl Handler<PauseClaims> for FetcherActor {
    type Result = ();

    fn handle(&mut self, _: PauseClaims, _: &mut Self::Context) {
        self.paused = true;
    }
}

impl Handler<ResumeClaims> for FetcherActor {
    type Result = ();

    fn handle(&mut self, _: ResumeClaims, _: &mut Self::Context) {
        self.paused = false;
    }
}

impl Handler<SlotsFreed> for FetcherActor {
    type Result = ();

    fn handle(&mut self, freed: SlotsFreed, _: &mut Self::Context) {
        self.in_flight = self.in_flight.saturating_sub(freed.provider_failed.len());
        let now = std::time::Instant::now();
        let before = self.breaker.state(now);
        for failed in freed.provider_failed {
            self.breaker.record(failed, now);
        }
        let after = self.breaker.state(now);
        if before != after {
            self.metrics.breaker_state.set(breaker_gauge(after));
            match after {
                BreakerState::Open { .. } => log::warn!(
                    cool_down:? = super::breaker::COOL_DOWN;
                    "circuit breaker open: the provider keeps failing, claiming stops for the cool-down"
                ),
                BreakerState::Closed => log::info!("circuit breaker closed: the provider answers again"),
                BreakerState::HalfOpen { .. } => {}
            }
        }
    }
}

/// `breaker_state`: 0 closed, 1 open, 2 half-open.
fn breaker_gauge(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open { .. } => 1,
        BreakerState::HalfOpen { .. } => 2,
    }
}

impl Handler<GetBreaker> for FetcherActor {
    type Result = MessageResult<GetBreaker>;

    fn handle(&mut self, _: GetBreaker, _: &mut Self::Context) -> Self::Result {
        let now = std::time::Instant::now();
        let state = self.breaker.state(now);
        self.metrics.breaker_state.set(breaker_gauge(state));
        MessageResult(match state {
            BreakerState::Closed => BreakerReport {
                state: "closed",
                probe_in: None,
            },
            BreakerState::Open { until } => BreakerReport {
                state: "open",
                probe_in: Some(until.saturating_duration_since(now)),
            },
            BreakerState::HalfOpen { .. } => BreakerReport {
                state: "half_open",
                probe_in: None,
            },
        })
    }
}

impl Handler<GetInFlight> for FetcherActor {
    type Result = usize;

    fn handle(&mut self, _: GetInFlight, _: &mut Self::Context) -> usize {
        // A claim under way counts as one: a drain must not finish while rows are being claimed.
        self.in_flight + usize::from(self.claiming)
    }
}
