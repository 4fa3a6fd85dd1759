//! `StatusDispatcherActor`: delivers the status events outbox to `STATUS_WEBHOOK_URL`.
//!
//! Most events come to it in memory: the store writes an event leased to it when no other of its message
//! is pending, and hands it over once its transaction commits (`EventFeed`, see `store/status_events.rs`).
//! They go out at once, in feed rounds: each takes every event handed over so far. Every `POLL_EVERY` it
//! also claims due events (`claim_due_events`: the oldest pending one of each message, so one message's
//! events arrive in order): retries, events that waited behind another of their message, and those of a
//! replica that died. Each event is POSTed (`CONCURRENCY` at once in a claimed round, `FEED_CONCURRENCY`
//! in the feed's), with the Standard
//! Webhooks headers: `webhook-id` (the event's id, the same on every attempt), `webhook-timestamp` and
//! `webhook-signature` (`status_signature.rs`). A 2xx delivers the event. Anything else, or no answer
//! within the timeout, puts it back due after an exponential backoff with jitter (`BACKOFF_MIN` to
//! `BACKOFF_MAX`), until `STATUS_WEBHOOK_MAX_AGE` after it was written: then it is `failed`, for an
//! operator's `POST /events/{id}/retry`. A crash mid-delivery leaves a lease that runs out, and the event
//! goes again under the same id; a receiver drops the repeat by its `webhook-id`. A clean stop
//! (`StopDelivering`) claims no more and starts no more POSTs: the POSTs under way finish and are
//! recorded, and every event this instance holds unPOSTed (handed over, or claimed) is put back due, so
//! that it does not wait out its lease.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use actix::prelude::*;
use chrono::Utc;
use futures_util::{StreamExt, stream};

use super::{messages::StopDelivering, retry::RetryPolicy, status_signature::StatusSigner};
use crate::{
    metrics::Metrics,
    store::{EventDelivery, EventFeed, HandedEvents, HeldEvent, StatusEventStore, StoreError, StoredEvent},
    telemetry::error_chain,
};

/// How often due events are looked for.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// Events claimed per round: a round costs two statements (the claim, and `finish_events`) whatever
/// its size, so a backlog drains in rounds this large.
const BATCH: u32 = 256;
/// POSTs in flight at once, per round.
const CONCURRENCY: usize = 32;
/// Rounds under way at once: while one records its outcomes and claims again, the other's POSTs go on.
/// The claim's order rule (the oldest pending event of each message, leased or not) keeps one message's
/// events in order across rounds, as it does across replicas.
const ROUNDS: usize = 2;
/// Events handed over and not yet recorded, at most, and the POSTs of the one feed round at a time: as
/// many as the claimed rounds together, so that the feed's events wait no longer than claimed ones.
const FEED_ROOM: usize = BATCH as usize * ROUNDS;
const FEED_CONCURRENCY: usize = CONCURRENCY * ROUNDS;
/// What an event put back at a clean stop records as its last error.
const PUT_BACK: &str = "not sent: the instance it was handed to stopped";

/// How long a delivery holds its events: a claimed round records its outcomes when its last POST is done,
/// up to `BATCH / CONCURRENCY` timeouts one after the other; a handed event waits for the feed round under
/// way and its own, which hold at most `FEED_ROOM` events, `FEED_CONCURRENCY` at a time: as many waves.
/// The lease outlasts that, or another replica would claim them meanwhile.
pub fn lease(timeout: Duration) -> Duration {
    timeout * (BATCH.div_ceil(CONCURRENCY as u32) + 1) + Duration::from_secs(5)
}

/// A feed for a dispatcher with `target`: `Database::hand_status_events_to` takes the first, `new` the
/// second.
pub fn feed(target: &StatusWebhookTarget) -> (EventFeed, tokio::sync::mpsc::UnboundedReceiver<HandedEvents>) {
    EventFeed::new(FEED_ROOM, lease(target.timeout))
}

/// Where and how status events go.
#[derive(Debug, Clone)]
pub struct StatusWebhookTarget {
    pub url: String,
    pub signer: StatusSigner,
    /// The longest one POST may take.
    pub timeout: Duration,
    /// Past this age an event that was not acknowledged is failed.
    pub max_age: Duration,
    pub backoff: RetryPolicy,
}

pub struct StatusDispatcherActor {
    deliverer: Arc<Deliverer>,
    rounds: usize,
    /// The feed's receiving end, until `started` takes it.
    feed: Option<tokio::sync::mpsc::UnboundedReceiver<HandedEvents>>,
    /// Events handed over and waiting for the next feed round.
    handed: Vec<HandedEvents>,
    feeding: bool,
    /// Put-backs of handed events under way (a clean stop).
    putting_back: usize,
}

struct Deliverer {
    store: Arc<dyn StatusEventStore>,
    client: reqwest::Client,
    target: StatusWebhookTarget,
    metrics: Metrics,
    /// Set by `StopDelivering`: no more claims, no more POSTs started.
    stopping: AtomicBool,
}

impl StatusDispatcherActor {
    pub fn new(
        store: Arc<dyn StatusEventStore>,
        target: StatusWebhookTarget,
        feed: tokio::sync::mpsc::UnboundedReceiver<HandedEvents>,
        metrics: Metrics,
    ) -> Result<Self, super::ClientError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(target.timeout)
            .build()
            .map_err(super::ClientError)?;
        Ok(Self {
            deliverer: Arc::new(Deliverer {
                store,
                client,
                target,
                metrics,
                stopping: AtomicBool::new(false),
            }),
            rounds: 0,
            feed: Some(feed),
            handed: Vec::new(),
            feeding: false,
            putting_back: 0,
        })
    }

    fn is_stopping(&self) -> bool {
        self.deliverer.stopping.load(Ordering::Relaxed)
    }

    /// Starts a feed round with every event handed over so far, unless one is under way.
    fn deliver_handed(&mut self, ctx: &mut Context<Self>) {
        if self.feeding || self.handed.is_empty() || self.is_stopping() {
            return;
        }
        self.feeding = true;
        let mut handed = std::mem::take(&mut self.handed);
        let deliverer = Arc::clone(&self.deliverer);
        ctx.spawn(
            async move {
                // The events move out; each handover keeps its room until they are recorded.
                let events = handed
                    .iter_mut()
                    .flat_map(|handed| std::mem::take(&mut handed.events))
                    .collect();
                let result = deliverer.deliver_all(events, FEED_CONCURRENCY).await;
                drop(handed);
                result
            }
            .into_actor(self)
            .map(|result, act, ctx| {
                act.feeding = false;
                if let Err(error) = result {
                    // Leased: they go again when the lease runs out, by the claim.
                    log::warn!("could not record status events: {}", error_chain(&error));
                }
                act.deliver_handed(ctx);
            }),
        );
    }

    fn poll(&mut self, ctx: &mut Context<Self>) {
        if self.rounds >= ROUNDS || self.is_stopping() {
            return;
        }
        self.rounds += 1;
        let deliverer = Arc::clone(&self.deliverer);
        ctx.spawn(
            async move { deliverer.round().await }
                .into_actor(self)
                .map(|result, act, _| {
                    act.rounds -= 1;
                    if let Err(error) = result {
                        log::warn!("could not deliver status events: {}", error_chain(&error));
                    }
                }),
        );
    }

    /// Puts `handed` back due (a clean stop); `StopDelivering` answers busy until it is done.
    fn put_back(&mut self, handed: Vec<HandedEvents>, ctx: &mut Context<Self>) {
        let held: Vec<HeldEvent> = handed
            .iter()
            .flat_map(|handed| &handed.events)
            .map(StoredEvent::held)
            .collect();
        if held.is_empty() {
            return;
        }
        self.putting_back += 1;
        let deliverer = Arc::clone(&self.deliverer);
        ctx.spawn(
            async move {
                let result = deliverer.store.put_back_events(&held, PUT_BACK).await;
                drop(handed);
                result
            }
            .into_actor(self)
            .map(|result, act, _| {
                act.putting_back -= 1;
                match result {
                    Ok(put_back) => log::info!(put_back; "status events not yet sent put back for another instance"),
                    // Leased: they go again when the lease runs out, by the claim.
                    Err(error) => log::warn!(
                        "could not put status events back, they go again after their lease: {}",
                        error_chain(&error)
                    ),
                }
            }),
        );
    }
}

impl Handler<StopDelivering> for StatusDispatcherActor {
    type Result = bool;

    fn handle(&mut self, _: StopDelivering, ctx: &mut Self::Context) -> bool {
        self.deliverer.stopping.store(true, Ordering::Relaxed);
        let handed = std::mem::take(&mut self.handed);
        self.put_back(handed, ctx);
        self.feeding || self.rounds > 0 || self.putting_back > 0
    }
}

/// What one round came to, for its log line.
#[derive(Debug, Default)]
struct Round {
    delivered: usize,
    retrying: usize,
    failed: usize,
    put_back: usize,
}

impl Deliverer {
    /// Claims due events and delivers them, until none is due.
    async fn round(&self) -> Result<(), StoreError> {
        // A round records its outcomes when its last POST is done: up to `BATCH / CONCURRENCY` timeouts
        // one after the other. The lease outlasts that, or another replica would claim them meanwhile.
        let lease = lease(self.target.timeout);
        while !self.stopping.load(Ordering::Relaxed) {
            let events = self.store.claim_due_events(BATCH, lease).await?;
            if events.is_empty() {
                return Ok(());
            }
            let full = events.len() == BATCH as usize;
            self.deliver_all(events, CONCURRENCY).await?;
            if !full {
                return Ok(());
            }
        }
        Ok(())
    }

    /// POSTs `events`, `concurrency` at once, and records what each came to in one commit; once the
    /// dispatcher is stopping, those not yet POSTed are put back instead.
    async fn deliver_all(&self, events: Vec<StoredEvent>, concurrency: usize) -> Result<(), StoreError> {
        let outcomes: Vec<(HeldEvent, Option<EventDelivery>)> = stream::iter(events)
            .map(|event| async move {
                if self.stopping.load(Ordering::Relaxed) {
                    return (event.held(), None);
                }
                (event.held(), Some(self.deliver(&event).await))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut round = Round::default();
        let mut deliveries = Vec::with_capacity(outcomes.len());
        let mut not_posted = Vec::new();
        for (held, delivery) in outcomes {
            let Some(delivery) = delivery else {
                round.put_back += 1;
                not_posted.push(held);
                continue;
            };
            let outcome = match delivery {
                EventDelivery::Delivered => {
                    round.delivered += 1;
                    "delivered"
                }
                EventDelivery::RetryIn { .. } => {
                    round.retrying += 1;
                    "retry"
                }
                EventDelivery::Failed { .. } => {
                    round.failed += 1;
                    "failed"
                }
            };
            self.metrics.status_events_total.with_label_values(&[outcome]).inc();
            deliveries.push((held, delivery));
        }
        // One commit for the round: a commit per event held the outbox to the database's commit rate.
        self.store.finish_events(&deliveries).await?;
        self.store.put_back_events(&not_posted, PUT_BACK).await?;
        log::info!(
            delivered = round.delivered, retrying = round.retrying, failed = round.failed, put_back = round.put_back;
            "status events sent"
        );
        Ok(())
    }

    /// One POST of `event`, judged.
    async fn deliver(&self, event: &StoredEvent) -> EventDelivery {
        let id = event.id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = self.target.signer.sign(&id, timestamp, &event.payload);
        let answer = self
            .client
            .post(&self.target.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(event.payload.clone())
            .send()
            .await;
        let error = match answer {
            Ok(response) if response.status().is_success() => return EventDelivery::Delivered,
            Ok(response) => format!("the receiver answered {}", response.status().as_u16()),
            Err(error) if error.is_timeout() => format!("no answer within {:?}", self.target.timeout),
            // Without the URL: its path or query may hold the receiver's token, and this text is the
            // event's `last_error` (`GET /events`) and a log line.
            Err(error) => format!(
                "the receiver could not be reached: {}",
                error_chain(&error.without_url())
            ),
        };
        let age = (Utc::now() - event.created_at).to_std().unwrap_or_default();
        if age >= self.target.max_age {
            log::warn!(
                event:% = event.id, message_id:% = event.message_id, kind = event.kind.as_str();
                "status event failed: not acknowledged within STATUS_WEBHOOK_MAX_AGE: {error}"
            );
            return EventDelivery::Failed { error };
        }
        let delay = match self.target.backoff.decide(event.attempts, None, rand::random::<f64>()) {
            super::retry::RetryDecision::RetryIn(delay) => delay,
            super::retry::RetryDecision::GiveUp => self.target.backoff.backoff_max,
        };
        // The last try at the horizon, not a backoff past it: an event is failed within its max age.
        let delay = delay.min(self.target.max_age.saturating_sub(age));
        EventDelivery::RetryIn { delay, error }
    }
}

impl Actor for StatusDispatcherActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(feed) = self.feed.take() {
            ctx.add_stream(futures_util::stream::unfold(feed, |mut feed| async move {
                feed.recv().await.map(|handed| (handed, feed))
            }));
        }
        self.poll(ctx);
        ctx.run_interval(POLL_EVERY, |act, ctx| act.poll(ctx));
    }
}

impl StreamHandler<HandedEvents> for StatusDispatcherActor {
    fn handle(&mut self, handed: HandedEvents, ctx: &mut Self::Context) {
        if self.is_stopping() {
            self.put_back(vec![handed], ctx);
            return;
        }
        self.handed.push(handed);
        self.deliver_handed(ctx);
    }

    /// The store is gone with the feed's sending end: the actor goes on polling until it is stopped.
    fn finished(&mut self, _: &mut Self::Context) {}
}
