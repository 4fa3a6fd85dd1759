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
//! (`StopDelivering`) lets the rounds under way finish and puts the events handed over but not yet POSTed
//! back due, so that they do not wait out their lease.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::Utc;
use futures_util::{StreamExt, stream};

use super::{messages::StopDelivering, retry::RetryPolicy, status_signature::StatusSigner};
use crate::{
    metrics::Metrics,
    store::{EventDelivery, EventFeed, HandedEvents, StatusEventStore, StoreError, StoredEvent},
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
/// How often a stopping dispatcher looks whether its rounds are done.
const STOP_POLL: Duration = Duration::from_millis(20);
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
    stop: Stop,
}

/// Where a clean stop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// No new rounds; those under way finish, and events handed over meanwhile wait.
    Stopping,
    /// Events handed over are put back as they come.
    Stopped,
}

struct Deliverer {
    store: Arc<dyn StatusEventStore>,
    client: reqwest::Client,
    target: StatusWebhookTarget,
    metrics: Metrics,
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
            }),
            rounds: 0,
            feed: Some(feed),
            handed: Vec::new(),
            feeding: false,
            stop: Stop::Running,
        })
    }

    /// Starts a feed round with every event handed over so far, unless one is under way.
    fn deliver_handed(&mut self, ctx: &mut Context<Self>) {
        if self.feeding || self.handed.is_empty() || self.stop != Stop::Running {
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
        if self.rounds >= ROUNDS || self.stop != Stop::Running {
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

    /// Resolves once no round is under way, or at `deadline`.
    fn rounds_done_by(deadline: actix_rt::time::Instant) -> fut::LocalBoxActorFuture<Self, ()> {
        fut::ready(())
            .then(move |(), act: &mut Self, _| {
                if (act.feeding || act.rounds > 0) && actix_rt::time::Instant::now() < deadline {
                    fut::wrap_future(actix_rt::time::sleep(STOP_POLL))
                        .then(move |(), _, _| Self::rounds_done_by(deadline))
                        .boxed_local()
                } else {
                    fut::ready(()).boxed_local()
                }
            })
            .boxed_local()
    }
}

impl Handler<StopDelivering> for StatusDispatcherActor {
    type Result = ResponseActFuture<Self, Result<usize, StoreError>>;

    fn handle(&mut self, stop: StopDelivering, _: &mut Self::Context) -> Self::Result {
        self.stop = Stop::Stopping;
        let deadline = actix_rt::time::Instant::now() + stop.grace;
        Box::pin(Self::rounds_done_by(deadline).then(|(), act, _| {
            act.stop = Stop::Stopped;
            let handed = std::mem::take(&mut act.handed);
            let deliverer = Arc::clone(&act.deliverer);
            fut::wrap_future(async move { deliverer.put_back(handed).await })
        }))
    }
}

/// What one round came to, for its log line.
#[derive(Debug, Default)]
struct Round {
    delivered: usize,
    retrying: usize,
    failed: usize,
}

impl Deliverer {
    /// Claims due events and delivers them, until none is due.
    async fn round(&self) -> Result<(), StoreError> {
        // A round records its outcomes when its last POST is done: up to `BATCH / CONCURRENCY` timeouts
        // one after the other. The lease outlasts that, or another replica would claim them meanwhile.
        let lease = lease(self.target.timeout);
        loop {
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
    }

    /// POSTs `events`, `concurrency` at once, and records what each came to in one commit.
    async fn deliver_all(&self, events: Vec<StoredEvent>, concurrency: usize) -> Result<(), StoreError> {
        let deliveries: Vec<(i64, EventDelivery)> = stream::iter(events)
            .map(|event| async move {
                let delivery = self.deliver(&event).await;
                (event.seq, delivery)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut round = Round::default();
        for (_, delivery) in &deliveries {
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
        }
        // One commit for the round: a commit per event held the outbox to the database's commit rate.
        self.store.finish_events(&deliveries).await?;
        log::info!(
            delivered = round.delivered, retrying = round.retrying, failed = round.failed;
            "status events sent"
        );
        Ok(())
    }

    /// Makes the events of `handed` due at once, their leases given up: none of them was POSTed.
    async fn put_back(&self, handed: Vec<HandedEvents>) -> Result<usize, StoreError> {
        let deliveries: Vec<(i64, EventDelivery)> = handed
            .iter()
            .flat_map(|handed| &handed.events)
            .map(|event| {
                let delivery = EventDelivery::RetryIn {
                    delay: Duration::ZERO,
                    error: PUT_BACK.to_owned(),
                };
                (event.seq, delivery)
            })
            .collect();
        if !deliveries.is_empty() {
            self.store.finish_events(&deliveries).await?;
        }
        Ok(deliveries.len())
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
            Err(error) => format!("the receiver could not be reached: {}", error_chain(&error)),
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
        if self.stop == Stop::Stopped {
            let deliverer = Arc::clone(&self.deliverer);
            ctx.spawn(
                async move {
                    if let Err(error) = deliverer.put_back(vec![handed]).await {
                        // Leased: they go again when the lease runs out, by the claim.
                        log::warn!("could not put status events back: {}", error_chain(&error));
                    }
                }
                .into_actor(self),
            );
            return;
        }
        self.handed.push(handed);
        self.deliver_handed(ctx);
    }

    /// The store is gone with the feed's sending end: the actor goes on polling until it is stopped.
    fn finished(&mut self, _: &mut Self::Context) {}
}
