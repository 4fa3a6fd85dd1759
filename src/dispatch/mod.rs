//! The dispatch pipeline: scheduler → fetcher → webhooks → persister, one actor per stage.
//!
//! ```text
//! SchedulerActor ──Tick──▶ FetcherActor ──Deliver──▶ WebhookActor ×N ──DeliveryFinished──▶ PersisterActor
//!                               ▲                                                               │
//!                               └─────────────────────────── SlotFreed ─────────────────────────┘
//! ```
//!
//! Each actor knows the next stage only by the `Recipient` it was given here. `start` wires them and
//! returns the `Pipeline` handle that the API and shutdown use.

mod fetcher;
pub mod messages;
mod persister;
pub mod retry;
mod scheduler;
mod webhook;

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
pub use fetcher::{ClaimRules, FetcherActor};
pub use persister::PersisterActor;
pub use scheduler::{FetcherControls, SchedulerActor};
pub use webhook::{WebhookActor, WebhookTarget};

use self::messages::{
    GetInFlight, GetSchedulerState, SchedulerState, StartSending, StopSending, Tick, TickReport, TickSource,
};
use crate::{cache::Cache, config::Settings, metrics::Metrics, store::MessageStore};

/// Webhook actors in the pool. They share one thread (the arbiter's) and each carries many sends at
/// once; several of them spread the connection pools.
const WEBHOOK_ACTORS: usize = 4;
/// How often a drain checks whether the last send in flight is recorded.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The addresses of the running pipeline.
#[derive(Clone)]
pub struct Pipeline {
    scheduler: Addr<SchedulerActor>,
    fetcher: Addr<FetcherActor>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the dispatch pipeline is not running")]
    Gone(#[from] MailboxError),
}

/// Starts every actor on the current arbiter; sending begins at once when `AUTOSTART` is set.
pub fn start(
    settings: &Settings,
    owner: String,
    store: Arc<dyn MessageStore>,
    cache: Cache,
    metrics: Metrics,
) -> Pipeline {
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
    };
    let webhooks = (0..WEBHOOK_ACTORS)
        .map(|_| {
            WebhookActor::new(target.clone(), persister.clone().recipient(), metrics.clone())
                .start()
                .recipient()
        })
        .collect();
    let fetcher = fetcher_context.run(FetcherActor::new(
        store,
        webhooks,
        ClaimRules::new(settings, owner),
        metrics.clone(),
    ));
    let scheduler = SchedulerActor::new(
        settings.interval,
        settings.batch_size.get(),
        settings.autostart,
        FetcherControls {
            tick: fetcher.clone().recipient(),
            pause: fetcher.clone().recipient(),
            resume: fetcher.clone().recipient(),
        },
        metrics,
    )
    .start();
    Pipeline { scheduler, fetcher }
}

impl Pipeline {
    pub async fn start_sending(&self) -> Result<SchedulerState, PipelineError> {
        Ok(self.scheduler.send(StartSending).await?)
    }

    pub async fn stop_sending(&self) -> Result<SchedulerState, PipelineError> {
        Ok(self.scheduler.send(StopSending { for_good: false }).await?)
    }

    pub async fn state(&self) -> Result<SchedulerState, PipelineError> {
        Ok(self.scheduler.send(GetSchedulerState).await?)
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
        self.scheduler.send(StopSending { for_good: true }).await?;
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
