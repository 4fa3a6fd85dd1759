//! `SchedulerActor`: our own ticker (no cron). While running it sends `Tick` to the fetcher at once and
//! then every `INTERVAL`; stopped, it sends nothing. It never waits for a tick's work: the fetcher skips
//! a tick that would overlap the previous one, so a slow provider or database cannot pile ticks up.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::messages::{
    Asker, GetSchedulerState, PauseClaims, ResumeClaims, SchedulerState, ShutDown, StartSending, StopSending, Tick,
    TickSource,
};
use crate::metrics::Metrics;

pub struct SchedulerActor {
    interval: Duration,
    batch_size: u32,
    /// The cluster's sending switch when this instance started.
    start_sending: bool,
    fetcher: FetcherControls,
    metrics: Metrics,
    timer: Option<SpawnHandle>,
    last_tick_at: Option<DateTime<Utc>>,
    /// Set by a shutdown: sending never starts again in this process.
    shut_down: bool,
    /// The operators' starts and stops followed: a heartbeat's that read the scheduler before the last
    /// of them is refused (it may have read the switch before that command set it).
    operator_commands: u64,
}

/// What the scheduler may tell the fetcher.
pub struct FetcherControls {
    pub tick: Recipient<Tick>,
    pub pause: Recipient<PauseClaims>,
    pub resume: Recipient<ResumeClaims>,
}

impl SchedulerActor {
    pub fn new(
        interval: Duration,
        batch_size: u32,
        start_sending: bool,
        fetcher: FetcherControls,
        metrics: Metrics,
    ) -> Self {
        Self {
            interval,
            batch_size,
            start_sending,
            fetcher,
            metrics,
            timer: None,
            last_tick_at: None,
            shut_down: false,
            operator_commands: 0,
        }
    }

    fn start_ticking(&mut self, ctx: &mut Context<Self>) {
        if self.shut_down {
            log::warn!("sending not started: the service is shutting down");
            return;
        }
        if self.timer.is_some() {
            // Started again while running: the fetcher clears a pause of its own (refused credentials).
            self.fetcher.resume.do_send(ResumeClaims);
            return;
        }
        log::info!(interval:? = self.interval, batch_size = self.batch_size; "sending started");
        self.fetcher.resume.do_send(ResumeClaims);
        self.tick();
        self.timer = Some(ctx.run_interval(self.interval, |act, _| act.tick()));
        self.metrics.scheduler_running.set(1);
    }

    fn stop_ticking(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.timer.take() {
            ctx.cancel_future(timer);
            self.fetcher.pause.do_send(PauseClaims);
            self.metrics.scheduler_running.set(0);
            log::info!("sending stopped: no new claims; sends in flight finish");
        }
    }

    /// Whether a start or stop `asker` sent is to be followed.
    fn follows(&mut self, asker: Asker) -> bool {
        match asker {
            Asker::Operator => {
                self.operator_commands += 1;
                true
            }
            Asker::Heartbeat { operator_commands_seen } if operator_commands_seen != self.operator_commands => {
                log::debug!("a heartbeat's start or stop is dropped: an operator's came after it read the scheduler");
                false
            }
            Asker::Heartbeat { .. } => true,
        }
    }

    fn tick(&mut self) {
        self.last_tick_at = Some(Utc::now());
        // The report is for tests and operators; the scheduler does not wait for it.
        self.fetcher.tick.do_send(Tick {
            source: TickSource::Scheduler,
        });
    }

    fn state(&self) -> SchedulerState {
        let running = self.timer.is_some();
        let next_tick_at = self
            .last_tick_at
            .filter(|_| running)
            .and_then(|last| chrono::Duration::from_std(self.interval).ok().map(|i| last + i));
        SchedulerState {
            running,
            interval: self.interval,
            batch_size: self.batch_size,
            last_tick_at: self.last_tick_at,
            next_tick_at,
            operator_commands: self.operator_commands,
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.scheduler_running.set(0);
        if self.start_sending {
            self.start_ticking(ctx);
        }
    }
}

impl Handler<StartSending> for SchedulerActor {
    type Result = MessageResult<StartSending>;

    fn handle(&mut self, StartSending(asker): StartSending, ctx: &mut Self::Context) -> Self::Result {
        if self.follows(asker) {
            self.start_ticking(ctx);
        }
        MessageResult(self.state())
    }
}

impl Handler<StopSending> for SchedulerActor {
    type Result = MessageResult<StopSending>;

    fn handle(&mut self, StopSending(asker): StopSending, ctx: &mut Self::Context) -> Self::Result {
        if self.follows(asker) {
            self.stop_ticking(ctx);
        }
        MessageResult(self.state())
    }
}

impl Handler<ShutDown> for SchedulerActor {
    type Result = MessageResult<ShutDown>;

    fn handle(&mut self, _: ShutDown, ctx: &mut Self::Context) -> Self::Result {
        self.shut_down = true;
        self.stop_ticking(ctx);
        MessageResult(self.state())
    }
}

impl Handler<GetSchedulerState> for SchedulerActor {
    type Result = MessageResult<GetSchedulerState>;

    fn handle(&mut self, _: GetSchedulerState, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.state())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::messages::TickReport;

    /// Stands in for the fetcher: takes what the scheduler tells it.
    struct Fetcher;

    impl Actor for Fetcher {
        type Context = Context<Self>;
    }

    impl Handler<Tick> for Fetcher {
        type Result = MessageResult<Tick>;

        fn handle(&mut self, _: Tick, _: &mut Self::Context) -> Self::Result {
            MessageResult(TickReport::default())
        }
    }

    impl Handler<PauseClaims> for Fetcher {
        type Result = ();

        fn handle(&mut self, _: PauseClaims, _: &mut Self::Context) {}
    }

    impl Handler<ResumeClaims> for Fetcher {
        type Result = ();

        fn handle(&mut self, _: ResumeClaims, _: &mut Self::Context) {}
    }

    /// A heartbeat reads the scheduler, then the cluster's switch, then acts: an operator's stop here in
    /// between must not be undone by a start that followed the switch as it was before the stop.
    #[actix_rt::test]
    async fn a_heartbeat_that_read_the_scheduler_before_an_operators_stop_does_not_undo_it() {
        let fetcher = Fetcher.start();
        let controls = FetcherControls {
            tick: fetcher.clone().recipient(),
            pause: fetcher.clone().recipient(),
            resume: fetcher.recipient(),
        };
        let metrics = Metrics::new().unwrap();
        let scheduler = SchedulerActor::new(Duration::from_secs(3600), 2, false, controls, metrics).start();

        let state = scheduler.send(StartSending(Asker::Operator)).await.unwrap();
        assert!(state.running);
        let heartbeat = Asker::Heartbeat {
            operator_commands_seen: scheduler.send(GetSchedulerState).await.unwrap().operator_commands,
        };
        let state = scheduler.send(StopSending(Asker::Operator)).await.unwrap();
        assert!(!state.running);
        let state = scheduler.send(StartSending(heartbeat)).await.unwrap();
        assert!(!state.running, "the stop holds");

        // The next heartbeat reads the scheduler again, and is followed.
        let heartbeat = Asker::Heartbeat {
            operator_commands_seen: state.operator_commands,
        };
        let state = scheduler.send(StartSending(heartbeat)).await.unwrap();
        assert!(state.running, "the switch, read after the stop, is followed");
    }
}
