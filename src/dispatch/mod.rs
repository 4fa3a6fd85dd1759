//! The dispatch pipeline: scheduler → fetcher → webhooks → persister, one actor per stage.
//!
//! ```text
//! ControlActor ──start/stop (the cluster's switch, polled every second)──▶ SchedulerActor
//! SchedulerActor ──Tick──▶ FetcherActor ──Deliver──▶ WebhookActor ──Answered (a verdict)──▶ PersisterActor
//!                            ▲    ▲  │                   │                                        │
//!                            │    │  └── EndedUnsent ────┼───────────────────────────────────────▶│
//!                            │    └──── SendEnded (the slot is free) ─┘                           │
//!                            └──────────────────── Recorded (per flush) ──────────────────────────┘
//! ```
//!
//! The fetcher keeps the send slots busy from a small run-ahead buffer of claimed messages, within the
//! pace (`flow.rs`); a slot frees when the provider answers, and the answer is recorded behind, in
//! batches. Each answer is judged once, on arrival (`verdict.rs`).
//!
//! Beside the pipeline, `ControlActor` keeps this instance in step with the cluster's switch,
//! `RetentionActor` (with `SENT_RETENTION` set) prunes old sent messages; with `CALLBACK_AUTH_KEY` set,
//! `ReceiptWriterActor` stores the receipts of concurrent requests in one commit and `ReceiptApplierActor`
//! applies them, told by the writer which receipts came and by the persister which messages went out; and
//! `StatusDispatcherActor` (with `STATUS_WEBHOOK_URL` set) delivers the status events outbox.
//!
//! Each actor knows the stages it talks to only by the `Recipient`s it was given here, never by their
//! type. `start` wires them and returns the `Pipeline` handle, the one holder of actor addresses, which
//! the API and shutdown use.

mod breaker;
mod control;
mod daily_cap;
mod fetcher;
mod flow;
pub mod messages;
mod persister;
mod receipt_applier;
mod receipt_writer;
pub mod quiet_hours;
mod retention;
pub mod retry;
mod scheduler;
mod status_dispatcher;
mod status_signature;
mod verdict;
mod webhook;

use std::{
    num::{NonZeroU32, NonZeroUsize},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use actix::prelude::*;

use self::{
    control::{ControlActor, PipelineControls},
    fetcher::{ClaimRules, FetcherActor, FetcherOutlets},
    flow::FlowLimits,
    messages::{
        Asker, BreakerReport, Draining, FlowReport, GetBreaker, GetFlow, GetInFlight, GetSchedulerState, Leave,
        SchedulerState, ShutDown, StartSending, StopDelivering, StopSending, Tick, TickReport, TickSource,
    },
    persister::{FLUSH_MAX, PersisterActor},
    receipt_applier::ReceiptApplierActor,
    receipt_writer::{ReceiptWriterActor, StoreReceipts},
    retention::RetentionActor,
    retry::RetryPolicy,
    scheduler::{FetcherControls, SchedulerActor},
    status_dispatcher::StatusDispatcherActor,
    webhook::{BODY_TIMEOUT, WebhookActor, WebhookReports},
};
pub use self::{
    receipt_writer::ReceiptsNotStored,
    status_dispatcher::StatusWebhookTarget,
    status_signature::{SignerError, StatusSigner},
    webhook::{ClientError, WebhookTarget},
};
use crate::{
    cache::Cache,
    domain::Receipt,
    metrics::Metrics,
    store::{ClusterControl, Database, MessageStore, ReceiptStore, Replica, StatusEventStore, StoreError},
};

/// While this many answers wait to be recorded (the database is slow or down), nothing more is claimed.
const RECORDING_BEHIND: usize = 2 * FLUSH_MAX;
/// A replica silent for longer than this is no longer listed.
const REPLICA_FRESHNESS: Duration = Duration::from_secs(10);
/// How often a drain checks whether the last send in flight is recorded.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// How long a stopping instance waits to be taken off the replica list (a heartbeat under way, then the
/// delete), whatever is left of `SHUTDOWN_GRACE`.
const LEAVE_WITHIN: Duration = Duration::from_secs(2);

/// What the pipeline is told at start: `startup` fills it in from the settings, so nothing here reads
/// the environment or knows how a value was spelled there.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Seeds the cluster's switch the first time any instance starts on the database.
    pub autostart: bool,
    /// Between two scheduled ticks.
    pub interval: Duration,
    /// The most messages one tick claims.
    pub batch_size: NonZeroU32,
    /// The most POSTs in flight at once on this instance: its send slots.
    pub webhook_concurrency: NonZeroUsize,
    /// `RATE_LIMIT`, messages a second, shared by every replica; `None` for no cap.
    pub rate_limit: Option<f64>,
    /// How long a claim is owned before another tick may rescue it.
    pub lease: Duration,
    /// `PRIORITY_AGING`: a message due for longer counts as one priority higher.
    pub priority_aging: Duration,
    /// `QUIET_HOURS` and `QUIET_HOURS_TZ`; `None` when unset.
    pub quiet_hours: Option<quiet_hours::QuietRules>,
    /// `RECIPIENT_DAILY_LIMIT`; `None` when unset.
    pub recipient_daily_limit: Option<NonZeroU32>,
    /// A claimed row whose content is longer is failed, not sent.
    pub content_max_chars: NonZeroUsize,
    pub retry: RetryPolicy,
    pub webhook: WebhookTarget,
    /// Sent messages older than this are pruned; `None` keeps them.
    pub sent_retention: Option<Duration>,
    /// With delivery receipts tracked (`CALLBACK_AUTH_KEY` set): how long a receipt waits for its
    /// message before it counts as unmatched. `None`: no receipt applier runs.
    pub receipt_match_window: Option<Duration>,
    /// With status webhooks on (`STATUS_WEBHOOK_URL` set): where the outbox goes. The store writes the
    /// events; `None`: no dispatcher runs.
    pub status_webhook: Option<StatusWebhookTarget>,
}

/// The addresses of the running pipeline.
#[derive(Clone)]
pub struct Pipeline {
    scheduler: Addr<SchedulerActor>,
    fetcher: Addr<FetcherActor>,
    cluster: Arc<dyn ClusterControl>,
    owner: String,
    /// The receipt writer, when receipts are tracked.
    receipts: Option<Addr<ReceiptWriterActor>>,
    /// The status dispatcher, when status webhooks are on.
    status_dispatcher: Option<Addr<StatusDispatcherActor>>,
    control: Addr<ControlActor>,
    /// Set when the drain begins (`drain`): the instance is on its way out.
    draining: Arc<AtomicBool>,
}

/// What the pipeline can do now, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineHealth {
    Up,
    /// Shutting down: it finishes what it holds and takes nothing new.
    Draining,
    /// Its actors are gone: the process serves HTTP and sends nothing.
    Down,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the dispatch pipeline is not running")]
    Gone(#[from] MailboxError),
    #[error("the cluster's sending switch could not be read or changed")]
    Switch(#[from] StoreError),
    #[error("the receipts were not stored")]
    Receipts(#[from] ReceiptsNotStored),
    #[error("delivery receipts are not tracked (CALLBACK_AUTH_KEY is not set)")]
    ReceiptsOff,
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the cluster's sending switch could not be read")]
    Switch(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Starts every actor on the current arbiter. Sending begins at once when the cluster's switch is on
/// (`AUTOSTART` seeds it the first time any instance starts on this database). The stages get the
/// messages' seam, `ControlActor` and the returned `Pipeline` the cluster's.
pub async fn start(
    settings: &DispatchSettings,
    owner: String,
    database: Arc<dyn Database>,
    cache: Cache,
    metrics: Metrics,
) -> Result<Pipeline, StartError> {
    let cluster: Arc<dyn ClusterControl> = database.clone();
    let receipt_store: Arc<dyn ReceiptStore> = database.clone();
    let event_store: Arc<dyn StatusEventStore> = database.clone();
    let store: Arc<dyn MessageStore> = database.clone();
    let sending = cluster.seed_sending(settings.autostart, &owner).await?;
    if !sending && settings.autostart {
        // The switch is the cluster's and outlives restarts: an operator's stop is not undone by one.
        log::warn!(
            "sending is stopped for the whole cluster (a POST /scheduler/stop, kept across restarts; AUTOSTART \
             does not undo it): this instance sends nothing until POST /scheduler/start"
        );
    } else if !sending {
        log::info!("sending is stopped (AUTOSTART=false): POST /scheduler/start starts it on every replica");
    }
    let receipts = settings.receipt_match_window.map(|match_window| {
        ReceiptApplierActor::new(Arc::clone(&receipt_store), cache.clone(), metrics.clone(), match_window).start()
    });
    // The fetcher's address is needed by the persister and the webhook actor before it can be built.
    let fetcher_context = Context::<FetcherActor>::new();
    let persister = PersisterActor::new(
        Arc::clone(&store),
        cache,
        metrics.clone(),
        fetcher_context.address().recipient(),
        receipts.clone().map(Addr::recipient),
    )
    .start();
    let webhook = WebhookActor::new(
        settings.webhook.clone(),
        settings.retry,
        WebhookReports {
            persister: persister.clone().recipient(),
            fetcher: fetcher_context.address().recipient(),
        },
        metrics.clone(),
    )?
    .start();
    let fetcher = fetcher_context.run(FetcherActor::new(
        Arc::clone(&store),
        FetcherOutlets {
            webhook: webhook.recipient(),
            persister: persister.recipient(),
        },
        ClaimRules {
            owner: owner.clone(),
            lease: settings.lease,
            content_max_chars: settings.content_max_chars.get(),
            rate_limit: settings.rate_limit,
            priority_aging: settings.priority_aging,
            quiet_hours: settings.quiet_hours,
            recipient_daily_limit: settings.recipient_daily_limit,
        },
        flow_limits(settings),
        metrics.clone(),
    ));
    let scheduler = SchedulerActor::new(
        settings.interval,
        settings.batch_size.get(),
        sending,
        FetcherControls {
            tick: fetcher.clone().recipient(),
            pause: fetcher.clone().recipient(),
            resume: fetcher.clone().recipient(),
        },
        metrics.clone(),
    )
    .start();
    let replica = Replica {
        id: owner.clone(),
        host: owner.split('/').next().unwrap_or_default().to_owned(),
        started_at: chrono::Utc::now(),
        last_seen: chrono::Utc::now(),
        in_flight: 0,
        sending,
    };
    let controls = PipelineControls {
        scheduler_state: scheduler.clone().recipient(),
        start: scheduler.clone().recipient(),
        stop: scheduler.clone().recipient(),
        in_flight: fetcher.clone().recipient(),
    };
    let control = ControlActor::new(Arc::clone(&cluster), controls, replica).start();
    let status_dispatcher = match &settings.status_webhook {
        Some(target) => {
            let (feed, handed) = status_dispatcher::feed(target);
            database.hand_status_events_to(feed);
            Some(StatusDispatcherActor::new(Arc::clone(&event_store), target.clone(), handed, metrics.clone())?.start())
        }
        None => None,
    };
    if let Some(retention) = settings.sent_retention {
        RetentionActor::new(store, event_store, Arc::clone(&receipt_store), retention, metrics).start();
    }
    Ok(Pipeline {
        scheduler,
        fetcher,
        cluster,
        owner,
        receipts: receipts.map(|applier| ReceiptWriterActor::new(receipt_store, applier.recipient()).start()),
        status_dispatcher,
        control,
        draining: Arc::default(),
    })
}

/// The flow control's limits, from the settings. A claimed message may wait in the run-ahead buffer only
/// while its lease keeps room for a POST that takes the whole `WEBHOOK_TIMEOUT` and a slow body: half
/// of what is left, so that no claim is posted late in its lease. With no room left, nothing runs ahead.
fn flow_limits(settings: &DispatchSettings) -> FlowLimits {
    let max_wait = settings
        .lease
        .saturating_sub(settings.webhook.timeout)
        .saturating_sub(BODY_TIMEOUT)
        / 2;
    let slots = settings.webhook_concurrency.get();
    FlowLimits {
        slots,
        buffer: if max_wait.is_zero() { 0 } else { slots },
        max_wait,
        batch_size: settings.batch_size.get(),
        recording_behind: RECORDING_BEHIND,
    }
}

impl Pipeline {
    /// Stores a request's receipts, in one commit with other requests' that arrive meanwhile, and has
    /// them applied; returns once they are committed.
    pub async fn store_receipts(&self, receipts: Vec<Receipt>) -> Result<(), PipelineError> {
        let writer = self.receipts.as_ref().ok_or(PipelineError::ReceiptsOff)?;
        Ok(writer.send(StoreReceipts(receipts)).await??)
    }

    /// Turns the cluster's switch on, and this instance at once; the others follow within a heartbeat.
    pub async fn start_sending(&self) -> Result<SchedulerState, PipelineError> {
        self.cluster.set_sending(true, &self.owner).await?;
        Ok(self.scheduler.send(StartSending(Asker::Operator)).await?)
    }

    /// Turns the cluster's switch off, and this instance at once; the others follow within a heartbeat.
    pub async fn stop_sending(&self) -> Result<SchedulerState, PipelineError> {
        self.cluster.set_sending(false, &self.owner).await?;
        Ok(self.scheduler.send(StopSending(Asker::Operator)).await?)
    }

    /// The instances that sent a heartbeat lately, this one included.
    pub async fn replicas(&self) -> Result<Vec<Replica>, PipelineError> {
        let since = chrono::Utc::now() - chrono::Duration::from_std(REPLICA_FRESHNESS).unwrap_or_default();
        Ok(self.cluster.list_replicas(since).await?)
    }

    pub async fn state(&self) -> Result<SchedulerState, PipelineError> {
        Ok(self.scheduler.send(GetSchedulerState).await?)
    }

    pub async fn breaker(&self) -> Result<BreakerReport, PipelineError> {
        Ok(self.fetcher.send(GetBreaker).await?)
    }

    /// Whether the pipeline takes work: not while it drains, nor once its fetcher is gone.
    pub async fn health(&self) -> PipelineHealth {
        if self.draining.load(Ordering::Acquire) {
            PipelineHealth::Draining
        } else if self.in_flight().await.is_err() {
            PipelineHealth::Down
        } else {
            PipelineHealth::Up
        }
    }

    pub async fn in_flight(&self) -> Result<usize, PipelineError> {
        Ok(self.fetcher.send(GetInFlight).await?)
    }

    /// This instance's send slots, run-ahead buffer and the cluster's pace.
    pub async fn flow(&self) -> Result<FlowReport, PipelineError> {
        Ok(self.fetcher.send(GetFlow).await?)
    }

    /// Runs one tick now, whether or not the scheduler is running, and reports what it claimed.
    pub async fn tick_now(&self) -> Result<TickReport, PipelineError> {
        Ok(self
            .fetcher
            .send(Tick {
                source: TickSource::Manual,
            })
            .await?)
    }

    /// Stops claiming for good and waits up to `grace` for the sends in flight to be recorded, then for
    /// the status events being POSTed; the events handed over but not yet POSTed are put back due. Returns
    /// how many sends were still in flight when it gave up (0 on a clean drain); those are sent again
    /// after their lease.
    pub async fn drain(&self, grace: Duration) -> Result<usize, PipelineError> {
        // Only this instance stops: the cluster's switch stays as it is for the others.
        self.draining.store(true, Ordering::Release);
        let deadline = actix_rt::time::Instant::now() + grace;
        self.scheduler.send(ShutDown).await?;
        if let Err(error) = self.control.send(Draining).await {
            log::warn!("the control actor is gone: {error}");
        }
        let in_flight = loop {
            let in_flight = self.in_flight().await?;
            if in_flight == 0 || actix_rt::time::Instant::now() >= deadline {
                break in_flight;
            }
            actix_rt::time::sleep(DRAIN_POLL).await;
        };
        // Only now: until its claims are recorded, its heartbeat keeps other replicas off them. Bounded:
        // the grace may be spent, and a replica left listed only ages out of `GET /scheduler`.
        match actix_rt::time::timeout(LEAVE_WITHIN, self.control.send(Leave)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => log::warn!("could not take this replica off the list: {error}"),
            Err(_) => log::warn!(
                within:? = LEAVE_WITHIN;
                "could not take this replica off the list in time: it ages out of GET /scheduler"
            ),
        }
        // After the sends: their results write the last events this instance is handed.
        if let Some(dispatcher) = &self.status_dispatcher {
            loop {
                match dispatcher.send(StopDelivering).await {
                    Ok(false) => break,
                    Ok(true) if actix_rt::time::Instant::now() < deadline => actix_rt::time::sleep(DRAIN_POLL).await,
                    Ok(true) => {
                        log::warn!(
                            "shutdown grace ran out with status events being sent: they go again after their lease"
                        );
                        break;
                    }
                    // Its events are leased: they go again after their lease.
                    Err(error) => {
                        log::warn!("the status dispatcher is gone: {error}");
                        break;
                    }
                }
            }
        }
        Ok(in_flight)
    }
}
