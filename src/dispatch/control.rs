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
use chrono::{DateTime, Utc};

use tokio::sync::oneshot;

use super::messages::{Asker, Draining, GetInFlight, GetSchedulerState, Leave, StartSending, StopSending};
use crate::{
    store::{ClusterControl, Replica},
    telemetry::error_chain,
};

pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

pub struct ControlActor {
    cluster: Arc<dyn ClusterControl>,
    pipeline: PipelineControls,
    replica: Replica,
    beating: bool,
    /// When the switch was last set, as the previous heartbeat read it.
    switch_changed_at: Option<DateTime<Utc>>,
    /// Whether the cluster's switch starts and stops the scheduler: not once `Draining` came.
    steering: bool,
    listing: Listing,
}

/// Where this instance stands on the replica list.
enum Listing {
    /// Heartbeats keep it there.
    Listed,
    /// `Leave` came: no more heartbeats; these answers wait for it to be off the list.
    Leaving(Vec<oneshot::Sender<()>>),
    /// Off the list: a `Leave` is answered at once.
    Left,
}

/// What the control actor may ask of this instance's pipeline.
#[derive(Clone)]
pub struct PipelineControls {
    pub scheduler_state: Recipient<GetSchedulerState>,
    pub start: Recipient<StartSending>,
    pub stop: Recipient<StopSending>,
    pub in_flight: Recipient<GetInFlight>,
}

impl ControlActor {
    pub fn new(cluster: Arc<dyn ClusterControl>, pipeline: PipelineControls, replica: Replica) -> Self {
        Self {
            cluster,
            pipeline,
            replica,
            beating: false,
            switch_changed_at: None,
            steering: true,
            listing: Listing::Listed,
        }
    }

    fn beat(&mut self, ctx: &mut Context<Self>) {
        if self.beating || !matches!(self.listing, Listing::Listed) {
            return;
        }
        self.beating = true;
        let cluster = Arc::clone(&self.cluster);
        let pipeline = self.pipeline.clone();
        let mut replica = self.replica.clone();
        let steering = self.steering;
        ctx.spawn(
            async move {
                let (Ok(state), Ok(in_flight)) = (
                    pipeline.scheduler_state.send(GetSchedulerState).await,
                    pipeline.in_flight.send(GetInFlight).await,
                ) else {
                    return None;
                };
                replica.in_flight = u32::try_from(in_flight).unwrap_or(u32::MAX);
                replica.sending = state.running;
                let heartbeat = Asker::Heartbeat {
                    operator_commands_seen: state.operator_commands,
                };
                let switch = match cluster.heartbeat(&replica).await {
                    Ok(switch) => switch,
                    Err(error) => {
                        log::warn!("heartbeat failed, carrying on as before: {}", error_chain(&error));
                        return None;
                    }
                };
                match switch {
                    _ if !steering => {}
                    // Logged once followed: the scheduler drops what an operator's command overtook.
                    Some(switch) if switch.sending && !state.running => {
                        if let Ok(now) = pipeline.start.send(StartSending(heartbeat)).await
                            && now.running
                            && now.operator_commands == state.operator_commands
                        {
                            log::info!("the cluster's sending switch is on: starting");
                        }
                    }
                    Some(switch) if !switch.sending && state.running => {
                        if let Ok(now) = pipeline.stop.send(StopSending(heartbeat)).await
                            && !now.running
                            && now.operator_commands == state.operator_commands
                        {
                            log::info!("the cluster's sending switch is off: stopping");
                        }
                    }
                    _ => {}
                }
                Some((switch?, heartbeat))
            }
            .into_actor(self)
            .map(|beat, act, ctx| {
                act.beating = false;
                if matches!(act.listing, Listing::Leaving(_)) {
                    act.leave(ctx);
                    return;
                }
                let Some((switch, heartbeat)) = beat else { return };
                // A start on any replica while sending was on already: start again here too, which clears
                // a pause of this instance's own (the provider refused our credentials).
                if act.steering && switch.sending && act.switch_changed_at.is_some_and(|seen| seen < switch.changed_at)
                {
                    act.pipeline.start.do_send(StartSending(heartbeat));
                }
                act.switch_changed_at = Some(switch.changed_at);
            }),
        );
    }

    /// Takes this instance off the replica list, then answers every `Leave`.
    fn leave(&mut self, ctx: &mut Context<Self>) {
        let cluster = Arc::clone(&self.cluster);
        let id = self.replica.id.clone();
        ctx.spawn(
            async move {
                if let Err(error) = cluster.forget_replica(&id).await {
                    log::warn!("could not remove this replica's heartbeat: {}", error_chain(&error));
                }
            }
            .into_actor(self)
            .map(|(), act, _| {
                if let Listing::Leaving(answers) = std::mem::replace(&mut act.listing, Listing::Left) {
                    for answer in answers {
                        let _ = answer.send(());
                    }
                }
            }),
        );
    }
}

impl Handler<Draining> for ControlActor {
    type Result = ();

    fn handle(&mut self, _: Draining, _: &mut Self::Context) {
        self.steering = false;
    }
}

impl Handler<Leave> for ControlActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Leave, ctx: &mut Self::Context) -> Self::Result {
        let (answer, left) = oneshot::channel();
        match &mut self.listing {
            Listing::Left => return Box::pin(async {}),
            Listing::Leaving(answers) => answers.push(answer),
            Listing::Listed => {
                self.listing = Listing::Leaving(vec![answer]);
                // A heartbeat under way leaves when it is written, so that it cannot put the row back.
                if !self.beating {
                    self.leave(ctx);
                }
            }
        }
        Box::pin(async move {
            let _ = left.await;
        })
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
