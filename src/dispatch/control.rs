//! `ControlActor`: keeps this instance in step with the cluster. Every second it records a heartbeat
//! (id, host, sends in flight, whether it is sending) and reads the shared sending switch that
//! `POST /scheduler/start|stop` on any replica sets; when the two disagree it starts or stops the local
//! scheduler. A stop on one replica therefore halts every replica within about a second, and a
//! restarted instance follows the switch rather than `AUTOSTART`.
//!
//! When the database does not answer, the instance keeps doing what it was doing: a database outage
//! must not stop a sender that could otherwise work, nor start a stopped one.

use std::{sync::Arc, time::Duration};

use actix::prelude::*;

use super::{
    FetcherActor, SchedulerActor,
    messages::{GetInFlight, GetSchedulerState, StartSending, StopSending},
};
use crate::{
    store::{MessageStore, Replica},
    telemetry::error_chain,
};

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

pub struct ControlActor {
    store: Arc<dyn MessageStore>,
    scheduler: Addr<SchedulerActor>,
    fetcher: Addr<FetcherActor>,
    replica: Replica,
    beating: bool,
}

impl ControlActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        scheduler: Addr<SchedulerActor>,
        fetcher: Addr<FetcherActor>,
        replica: Replica,
    ) -> Self {
        Self {
            store,
            scheduler,
            fetcher,
            replica,
            beating: false,
        }
    }

    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.beating {
            return;
        }
        self.beating = true;
        let store = Arc::clone(&self.store);
        let scheduler = self.scheduler.clone();
        let fetcher = self.fetcher.clone();
        let mut replica = self.replica.clone();
        ctx.spawn(
            async move {
                let (Ok(state), Ok(in_flight)) =
                    (scheduler.send(GetSchedulerState).await, fetcher.send(GetInFlight).await)
                else {
                    return;
                };
                replica.in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
                replica.sending = state.running;
                match store.heartbeat(&replica).await {
                    Ok(wanted) if wanted && !state.running => {
                        log::info!("the cluster's sending switch is on: starting");
                        let _ = scheduler.send(StartSending).await;
                    }
                    Ok(wanted) if !wanted && state.running => {
                        log::info!("the cluster's sending switch is off: stopping");
                        let _ = scheduler.send(StopSending { for_good: false }).await;
                    }
                    Ok(_) => {}
                    Err(error) => log::warn!("heartbeat failed, carrying on as before: {}", error_chain(&error)),
                }
            }
            .into_actor(self)
            .map(|(), act, _| act.beating = false),
        );
    }
}

impl Actor for ControlActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // At once, not a second late: an instance is listed by GET /scheduler as soon as it serves.
        self.beat(ctx);
        ctx.run_interval(HEARTBEAT_EVERY, |act, ctx| act.beat(ctx));
    }
}
