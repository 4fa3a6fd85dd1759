//! The dispatch pipeline: scheduler → fetcher → webhooks → persister, one actor per stage.
//!
//! ```text
//! ControlActor ──start/stop (the cluster's switch, polled every second)──▶ SchedulerActor
//! SchedulerActor ──Tick──▶ FetcherActor ──Deliver──▶ WebhookActor ×N ──DeliveryFinished──▶ PersisterActor
//!                               ▲                                                               │
//!                               └──────────────────── SlotsFreed (per flush) ───────────────────┘
//! ```
//!
//! Beside the pipeline, `ControlActor` keeps this instance in step with the cluster's switch, and
//! `RetentionActor` (with `SENT_RETENTION` set) prunes old sent messages.
//!
//! Each actor knows the next stage only by the `Recipient` it was given here. `start` wires them and
//! returns the `Pipeline` handle that the API and shutdown use.

mod breaker;
mod control;
mod fetcher;
pub mod messages;
mod persister;
mod retention;
pub mod retry;
mod scheduler;
mod webhook;

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
pub use control::ControlActor;
pub use fetcher::{ClaimRules, FetcherActor};
pub use persister::PersisterActor;
pub use retention::RetentionActor;
pub use scheduler::{FetcherControls, SchedulerActor};
pub use webhook::{WebhookActor, WebhookTarget};

use self::messages::{
    BreakerReport, GetBreaker, GetInFlight, GetSchedulerState, SchedulerState, StartSending, StopSending, Tick,
    TickReport, TickSource,
};
use crate::{
    cache::Cache,
    config::Settings,
    metrics::Metrics,
    store::{MessageStore, Replica, StoreError},
};

/// Webhook actors in the pool. They share one thread (the arbiter's) and each carries many sends at
/// once; several of them spread the connection pools.
const WEBHOOK_ACTORS: usize = 4;
/// A replica silent for longer than this is no longer listed.
const REPLICA_FRESHNESS: Duration = Duration::from_secs(10);
/// How often a drain checks whether the last send in flight is recorded.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The addresses of the running pipeline.
#[derive(Clone)]
pub struct Pipeline {
    scheduler: Addr<SchedulerActor>,
    fetcher: Addr<FetcherActor>,
    store: Arc<dyn MessageStore>,
    owner: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the dispatch pipeline is not running")]
    Gone(#[from] MailboxError),
    #[error("the cluster's sending switch could not be read or changed")]
    Switch(#[from] StoreError),
}

/// Starts every actor on the current arbiter. Sending begins at once when the cluster's switch is on
/// (`AUTOSTART` seeds it the first time any instance starts on this database).
pub async fn start(
    settings: &Settings,
    owner: String,
    store: Arc<dyn MessageStore>,
    cache: Cache,
    metrics: Metrics,
) -> Result<Pipeline, StoreError> {
    let sending = store.seed_sending(settings.autostart, &owner).await?;
    // The fetcher's address is needed by the persister before the fetcher itself can be built.
    let fetcher_context = Context::<FetcherActor>::new();
    let persister = PersisterActor::new(
        Arc::clone(&store),
        cache,
        metrics.clone(),
        settings.retry_policy(),
        fetcher_context.address().recipient(),
    )
    .start();
    let target = WebhookTarget {
        url: settings.webhook_url.clone(),
        auth_key: settings.webhook_auth_key.clone(),
        timeout: settings.webhook_timeout,
        max_connections: settings.webhook_concurrency.get(),
    };
    let webhooks = (0..WEBHOOK_ACTORS)
        .map(|_| {
            WebhookActor::new(target.clone(), persister.clone().recipient(), metrics.clone())
                .start()
                .recipient()
        })
        .collect();
    let fetcher = fetcher_context.run(FetcherActor::new(
        Arc::clone(&store),
        webhooks,
        ClaimRules::new(settings, owner.clone()),
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
    ControlActor::new(Arc::clone(&store), scheduler.clone(), fetcher.clone(), replica).start();
    if let Some(retention) = settings.sent_retention {
        RetentionActor::new(Arc::clone(&store), retention, metrics).start();
    }
    Ok(Pipeline {
        scheduler,
        fetcher,
        store,
        owner,
    })
}

impl Pipeline {
    /// Turns the cluster's switch on, and this instance at once; the others follow within a heartbeat.
    pub async fn start_sending(&self) -> Result<SchedulerState, PipelineError> {
        self.store.set_sending(true, &self.owner).await?;
        Ok(self.scheduler.send(StartSending).await?)
    }

    /// Turns the cluster's switch off, and this instance at once; the others follow within a heartbeat.
    pub async fn stop_sending(&self) -> Result<SchedulerState, PipelineError> {
        self.store.set_sending(false, &self.owner).await?;
        Ok(self.scheduler.send(StopSending { for_good: false }).await?)
    }

    /// The instances that sent a heartbeat lately, this one included.
    pub async fn replicas(&self) -> Result<Vec<Replica>, PipelineError> {
        let since = chrono::Utc::now() - chrono::Duration::from_std(REPLICA_FRESHNESS).unwrap_or_default();
        Ok(self.store.list_replicas(since).await?)
    }

    pub async fn state(&self) -> Result<SchedulerState, PipelineError> {
        Ok(self.scheduler.send(GetSchedulerState).await?)
    }

    pub async fn breaker(&self) -> Result<BreakerReport, PipelineError> {
        Ok(self.fetcher.send(GetBreaker).await?)
    }

    pub async fn in_flight(&self) -> Result<usize, PipelineError> {
        Ok(self.fetcher.send(GetInFlight).await?)
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

    /// Stops claiming for good and waits up to `grace` for the sends in flight to be recorded. Returns
    /// how many were still in flight when it gave up (0 on a clean drain); those are sent again after
    /// their lease.
    pub async fn drain(&self, grace: Duration) -> Result<usize, PipelineError> {
        // Only this instance stops: the cluster's switch stays as it is for the others.
        self.scheduler.send(StopSending { for_good: true }).await?;
        if let Err(error) = self.store.forget_replica(&self.owner).await {
            log::warn!("could not remove this replica's heartbeat: {error}");
        }
        let deadline = actix_rt::time::Instant::now() + grace;
        loop {
            let in_flight = self.in_flight().await?;
            if in_flight == 0 || actix_rt::time::Instant::now() >= deadline {
                return Ok(in_flight);
            }
            actix_rt::time::sleep(DRAIN_POLL).await;
        }
    }
}
