//! `SchedulerActor`: our own ticker (no cron). While running it sends `Tick` to the fetcher at once and
//! then every `INTERVAL`; stopped, it sends nothing. It never waits for a tick's work: the fetcher skips
//! a tick that would overlap the previous one, so a slow provider or database cannot pile ticks up.

use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::messages::{
    GetSchedulerState, PauseClaims, ResumeClaims, SchedulerState, ShutDown, StartSending, StopSending, Tick, TickSource,
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
    /// When the setting of the cluster's switch last followed was made: a start or stop that follows an
    /// older one (a heartbeat that read the switch just before a stop here) is refused.
    switch_followed: Option<DateTime<Utc>>,
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
            switch_followed: None,
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

    /// Whether a start or stop following the switch as set at `set_at` is to be followed: not when a later
    /// setting already was.
    fn follows(&mut self, set_at: DateTime<Utc>) -> bool {
        if self.switch_followed.is_some_and(|followed| set_at < followed) {
            log::debug!(set_at:% = set_at; "a start or stop older than the one followed is ignored");
            return false;
        }
        self.switch_followed = Some(set_at);
        true
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

    fn handle(&mut self, start: StartSending, ctx: &mut Self::Context) -> Self::Result {
        if self.follows(start.switch_set_at) {
            self.start_ticking(ctx);
        }
        MessageResult(self.state())
    }
}

impl Handler<StopSending> for SchedulerActor {
    type Result = MessageResult<StopSending>;

    fn handle(&mut self, stop: StopSending, ctx: &mut Self::Context) -> Self::Result {
        if self.follows(stop.switch_set_at) {
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

    #[actix_rt::test]
    async fn a_start_following_an_older_setting_of_the_switch_than_a_stop_does_not_undo_it() {
        let fetcher = Fetcher.start();
        let controls = FetcherControls {
            tick: fetcher.clone().recipient(),
            pause: fetcher.clone().recipient(),
            resume: fetcher.recipient(),
        };
        let metrics = Metrics::new().unwrap();
        let scheduler = SchedulerActor::new(Duration::from_secs(3600), 2, false, controls, metrics).start();
        let started_at = Utc::now();
        let stopped_at = started_at + chrono::Duration::milliseconds(300);

        let state = scheduler
            .send(StartSending {
                switch_set_at: started_at,
            })
            .await
            .unwrap();
        assert!(state.running);
        let state = scheduler
            .send(StopSending {
                switch_set_at: stopped_at,
            })
            .await
            .unwrap();
        assert!(!state.running);
        // A heartbeat that read the switch as the start left it, acting after the stop here.
        let state = scheduler
            .send(StartSending {
                switch_set_at: started_at,
            })
            .await
            .unwrap();
        assert!(!state.running, "the stop holds");

        let state = scheduler
            .send(StartSending {
                switch_set_at: stopped_at + chrono::Duration::milliseconds(1),
            })
            .await
            .unwrap();
        assert!(state.running, "a later start starts");
    }
}
