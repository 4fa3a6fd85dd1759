//! Every Prometheus series the service exports: name, help text and labels, registered once.
//!
//! Each `Application` owns its registry, so several instances in one process (the test suite) never
//! collide.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::store::QueueStats;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `scheduler_running`: 1 while the scheduler ticks, 0 when stopped.
    pub scheduler_running: IntGauge,
    /// `sends_total{outcome}`: POSTs to the provider by outcome (`accepted`, `retry`, `rejected`), and
    /// claimed rows found `invalid` before any POST.
    pub sends_total: IntCounterVec,
    /// `retries_total`: messages put back to `pending` for another attempt.
    pub retries_total: IntCounter,
    /// `dead_letters_total`: messages failed because their attempts were spent.
    pub dead_letters_total: IntCounter,
    /// `send_duration_seconds`: time from POST to the provider's answer (or timeout).
    pub send_duration_seconds: Histogram,
    /// `messages_pending`: queue depth, read from the database at scrape time.
    pub messages_pending: IntGauge,
    /// `oldest_pending_age_seconds`: age of the oldest pending message, read at scrape time.
    pub oldest_pending_age_seconds: Gauge,
    /// `cache_errors_total`: Redis calls that failed; sends go on regardless.
    pub cache_errors_total: IntCounter,
    /// `leases_rescued_total`: claims whose lease expired and went back to `pending`.
    pub leases_rescued_total: IntCounter,
    /// `tick_errors_total`: ticks that could not claim, usually because the database was unreachable.
    pub tick_errors_total: IntCounter,
    /// `breaker_state`: the provider circuit breaker, 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    /// `result_write_errors_total`: failed attempts to record a flush of provider answers; each is retried.
    pub result_write_errors_total: IntCounter,
    /// `messages_pruned_total`: sent messages deleted because they were older than `SENT_RETENTION`.
    pub messages_pruned_total: IntCounter,
}

#[derive(Debug, thiserror::Error)]
#[error("metric registration failed")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let metrics = Self {
            scheduler_running: IntGauge::new("scheduler_running", "1 while the scheduler ticks, 0 when stopped")?,
            sends_total: IntCounterVec::new(
                Opts::new("sends_total", "Messages handled by the dispatcher, by outcome"),
                &["outcome"],
            )?,
            retries_total: IntCounter::new("retries_total", "Messages put back to pending for another attempt")?,
            dead_letters_total: IntCounter::new(
                "dead_letters_total",
                "Messages failed because their attempts were spent",
            )?,
            send_duration_seconds: Histogram::with_opts(
                HistogramOpts::new("send_duration_seconds", "Time from POST to the provider's answer").buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ]),
            )?,
            messages_pending: IntGauge::new("messages_pending", "Messages waiting to be sent")?,
            oldest_pending_age_seconds: Gauge::new(
                "oldest_pending_age_seconds",
                "Age of the oldest pending message in seconds",
            )?,
            cache_errors_total: IntCounter::new("cache_errors_total", "Redis calls that failed")?,
            leases_rescued_total: IntCounter::new(
                "leases_rescued_total",
                "Claims whose lease expired and went back to pending",
            )?,
            tick_errors_total: IntCounter::new("tick_errors_total", "Ticks that failed to claim messages")?,
            breaker_state: IntGauge::new(
                "breaker_state",
                "The provider circuit breaker: 0 closed, 1 open, 2 half-open",
            )?,
            result_write_errors_total: IntCounter::new(
                "result_write_errors_total",
                "Failed attempts to record a flush of provider answers (each is retried)",
            )?,
            messages_pruned_total: IntCounter::new(
                "messages_pruned_total",
                "Sent messages deleted for being older than SENT_RETENTION",
            )?,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 13] = [
            Box::new(metrics.scheduler_running.clone()),
            Box::new(metrics.sends_total.clone()),
            Box::new(metrics.retries_total.clone()),
            Box::new(metrics.dead_letters_total.clone()),
            Box::new(metrics.send_duration_seconds.clone()),
            Box::new(metrics.messages_pending.clone()),
            Box::new(metrics.oldest_pending_age_seconds.clone()),
            Box::new(metrics.cache_errors_total.clone()),
            Box::new(metrics.leases_rescued_total.clone()),
            Box::new(metrics.tick_errors_total.clone()),
            Box::new(metrics.result_write_errors_total.clone()),
            Box::new(metrics.breaker_state.clone()),
            Box::new(metrics.messages_pruned_total.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        // Every outcome has a series from the start, so dashboards show 0 rather than no data.
        for outcome in ["accepted", "retry", "rejected", "invalid"] {
            metrics.sends_total.with_label_values(&[outcome]);
        }
        Ok(metrics)
    }

    pub fn observe_send(&self, outcome: &str, duration: Duration) {
        self.sends_total.with_label_values(&[outcome]).inc();
        self.send_duration_seconds.observe(duration.as_secs_f64());
    }

    pub fn set_queue(&self, stats: &QueueStats) {
        self.messages_pending
            .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
        self.oldest_pending_age_seconds
            .set(stats.oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}
