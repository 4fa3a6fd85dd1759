//! Every Prometheus series the service exports: name, help text and labels, registered once.
//!
//! Each `Application` owns its registry, so several instances in one process (the test suite) never
//! collide. On Linux the registry also carries the standard `process_*` series (CPU, memory, open files,
//! threads, start time) that dashboards expect of any process.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::{
    domain::ReceiptStatus,
    store::{OutboxStats, QueueStats},
};

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `scheduler_running`: 1 while the scheduler ticks, 0 when stopped.
    pub scheduler_running: IntGauge,
    /// `sends_total{outcome}`: POSTs to the provider by outcome (`accepted`, `retry`, `rejected`), and
    /// claimed rows found `invalid`, `expired` (past their `expires_at`) or `suppressed` (opted out), or
    /// held back by `quiet_hours` or deferred by the `daily_cap`, before any POST.
    pub sends_total: IntCounterVec,
    /// `retries_total`: messages put back to `pending` for another attempt.
    pub retries_total: IntCounter,
    /// `dead_letters_total`: messages failed because their attempts were spent.
    pub dead_letters_total: IntCounter,
    /// `send_duration_seconds`: time from POST to the provider's answer (or timeout).
    pub send_duration_seconds: Histogram,
    /// `messages_pending`: queue depth, read from the database at scrape time.
    pub messages_pending: IntGauge,
    /// `oldest_pending_age_seconds`: how long the pending message due the longest has been due, read at
    /// scrape time (0 when none is due).
    pub oldest_pending_age_seconds: Gauge,
    /// `cache_errors_total`: Redis calls that failed; sends go on regardless.
    pub cache_errors_total: IntCounter,
    /// `leases_rescued_total`: claims whose lease expired and went back to `pending`.
    pub leases_rescued_total: IntCounter,
    /// `tick_errors_total`: claims and rescues of expired leases that failed, usually because the database
    /// was unreachable.
    pub tick_errors_total: IntCounter,
    /// `breaker_state`: the provider circuit breaker, 0 closed, 1 open, 2 half-open.
    pub breaker_state: IntGauge,
    /// `result_write_errors_total`: failed attempts to record a flush of provider answers; each is retried.
    pub result_write_errors_total: IntCounter,
    /// `messages_pruned_total`: sent messages deleted because they were older than `SENT_RETENTION`.
    pub messages_pruned_total: IntCounter,
    /// `send_slots_in_use`: POSTs in flight on this instance (at most `WEBHOOK_CONCURRENCY`).
    pub send_slots_in_use: IntGauge,
    /// `claim_buffer_depth`: claimed messages waiting for a free send slot on this instance.
    pub claim_buffer_depth: IntGauge,
    /// `rate_limit_per_second`: the cluster's rate in force as this instance's last claim found it
    /// (`RATE_LIMIT`, or lower after a provider's 429); 0 when nothing caps it.
    pub rate_limit_per_second: Gauge,
    /// `throttled_total`: POSTs the provider answered 429, each pausing the cluster's claims.
    pub throttled_total: IntCounter,
    /// `inbound_total{action}`: replies from phones (`POST /inbound`) by what they did: `opt_out`,
    /// `opt_in` or `other`.
    pub inbound_total: IntCounterVec,
    /// `provider_credentials_refused`: 1 while this instance's sending is paused because the provider
    /// answered 401 or 403 (a wrong `WEBHOOK_AUTH_KEY`), else 0.
    pub provider_credentials_refused: IntGauge,
    /// `auth_failures_total`: requests refused with 401 because the API key was missing or wrong.
    pub auth_failures_total: IntCounter,
    /// `receipts_total{status}`: delivery receipts stored, by the carrier's status.
    pub receipts_total: IntCounterVec,
    /// `receipts_unmatched_total`: receipts that matched no sent message within `RECEIPT_MATCH_WINDOW`.
    pub receipts_unmatched_total: IntCounter,
    /// `receipts_ambiguous_total`: receipts applied to no message because their provider id names several.
    pub receipts_ambiguous_total: IntCounter,
    /// `status_events_total{outcome}`: status event deliveries by outcome (`delivered`, `retry`, `failed`).
    pub status_events_total: IntCounterVec,
    /// `status_outbox_depth`: status events waiting to be delivered, read from the database at scrape time.
    pub status_outbox_depth: IntGauge,
    /// `status_outbox_oldest_age_seconds`: age of the oldest of them, read at scrape time.
    pub status_outbox_oldest_age_seconds: Gauge,
    /// `status_outbox_failed`: status events given up on, read at scrape time: those whose own POSTs
    /// failed (`status_events_total{outcome="failed"}`) and those failed behind one, never POSTed.
    pub status_outbox_failed: IntGauge,
    /// `http_requests_total{route,method,status}`: answered requests, by route template.
    http_requests_total: IntCounterVec,
    /// `http_request_duration_seconds{route}`: time from a request's head to its answer.
    http_request_duration_seconds: HistogramVec,
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
                "Seconds the pending message due the longest has been due",
            )?,
            cache_errors_total: IntCounter::new("cache_errors_total", "Redis calls that failed")?,
            leases_rescued_total: IntCounter::new(
                "leases_rescued_total",
                "Claims whose lease expired and went back to pending",
            )?,
            tick_errors_total: IntCounter::new(
                "tick_errors_total",
                "Claims of due messages and rescues of expired leases that failed",
            )?,
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
            send_slots_in_use: IntGauge::new("send_slots_in_use", "POSTs to the provider in flight on this instance")?,
            claim_buffer_depth: IntGauge::new(
                "claim_buffer_depth",
                "Claimed messages waiting for a free send slot on this instance",
            )?,
            rate_limit_per_second: Gauge::new(
                "rate_limit_per_second",
                "The cluster's send rate in force (RATE_LIMIT, or lower after a 429); 0 when uncapped",
            )?,
            throttled_total: IntCounter::new(
                "throttled_total",
                "POSTs the provider answered 429, each pausing the cluster's claims",
            )?,
            inbound_total: IntCounterVec::new(
                Opts::new("inbound_total", "Replies from phones received, by the action each got"),
                &["action"],
            )?,
            provider_credentials_refused: IntGauge::new(
                "provider_credentials_refused",
                "1 while sending is paused here because the provider refused our credentials (401, 403)",
            )?,
            auth_failures_total: IntCounter::new(
                "auth_failures_total",
                "Requests refused because the API key was missing or wrong",
            )?,
            receipts_total: IntCounterVec::new(
                Opts::new("receipts_total", "Delivery receipts stored, by the carrier's status"),
                &["status"],
            )?,
            receipts_unmatched_total: IntCounter::new(
                "receipts_unmatched_total",
                "Delivery receipts that matched no sent message within RECEIPT_MATCH_WINDOW",
            )?,
            receipts_ambiguous_total: IntCounter::new(
                "receipts_ambiguous_total",
                "Delivery receipts applied to no message because their provider id names several",
            )?,
            status_events_total: IntCounterVec::new(
                Opts::new(
                    "status_events_total",
                    "Status event deliveries to STATUS_WEBHOOK_URL, by outcome",
                ),
                &["outcome"],
            )?,
            status_outbox_depth: IntGauge::new(
                "status_outbox_depth",
                "Status events waiting to be delivered to STATUS_WEBHOOK_URL",
            )?,
            status_outbox_oldest_age_seconds: Gauge::new(
                "status_outbox_oldest_age_seconds",
                "Age of the oldest status event waiting to be delivered, in seconds",
            )?,
            status_outbox_failed: IntGauge::new(
                "status_outbox_failed",
                "Status events given up on (failed, kept until replayed), including those failed behind one \
                 of their message's, never POSTed",
            )?,
            http_requests_total: IntCounterVec::new(
                Opts::new(
                    "http_requests_total",
                    "HTTP requests answered, by route template, method and status",
                ),
                &["route", "method", "status"],
            )?,
            http_request_duration_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "Time from a request's head to its answer, by route template",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                ]),
                &["route"],
            )?,
            registry,
        };
        let collectors: [Box<dyn prometheus::core::Collector>; 29] = [
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
            Box::new(metrics.send_slots_in_use.clone()),
            Box::new(metrics.claim_buffer_depth.clone()),
            Box::new(metrics.rate_limit_per_second.clone()),
            Box::new(metrics.throttled_total.clone()),
            Box::new(metrics.inbound_total.clone()),
            Box::new(metrics.provider_credentials_refused.clone()),
            Box::new(metrics.auth_failures_total.clone()),
            Box::new(metrics.receipts_total.clone()),
            Box::new(metrics.receipts_unmatched_total.clone()),
            Box::new(metrics.receipts_ambiguous_total.clone()),
            Box::new(metrics.status_events_total.clone()),
            Box::new(metrics.status_outbox_depth.clone()),
            Box::new(metrics.status_outbox_oldest_age_seconds.clone()),
            Box::new(metrics.status_outbox_failed.clone()),
            Box::new(metrics.http_requests_total.clone()),
            Box::new(metrics.http_request_duration_seconds.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector)?;
        }
        // Only the default registry gets these by itself; each `Application` has its own.
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        // Every outcome has a series from the start, so dashboards show 0 rather than no data.
        for outcome in [
            "accepted",
            "retry",
            "throttled",
            "unauthorized",
            "rejected",
            "invalid",
            "expired",
            "suppressed",
            "quiet_hours",
            "daily_cap",
        ] {
            metrics.sends_total.with_label_values(&[outcome]);
        }
        for status in [
            ReceiptStatus::Accepted,
            ReceiptStatus::Buffered,
            ReceiptStatus::Delivered,
            ReceiptStatus::Undelivered,
        ] {
            metrics.receipts_total.with_label_values(&[status.as_str()]);
        }
        for outcome in ["delivered", "retry", "failed"] {
            metrics.status_events_total.with_label_values(&[outcome]);
        }
        for action in ["opt_out", "opt_in", "other"] {
            metrics.inbound_total.with_label_values(&[action]);
        }
        Ok(metrics)
    }

    pub fn observe_send(&self, outcome: &str, duration: Duration) {
        self.sends_total.with_label_values(&[outcome]).inc();
        self.send_duration_seconds.observe(duration.as_secs_f64());
    }

    /// One answered request; `route` is its template (see `api::request_metrics`).
    pub fn observe_request(&self, route: &str, method: &str, status: u16, duration: Duration) {
        self.http_requests_total
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_request_duration_seconds
            .with_label_values(&[route])
            .observe(duration.as_secs_f64());
    }

    pub fn set_queue(&self, stats: &QueueStats) {
        self.messages_pending
            .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
        self.oldest_pending_age_seconds
            .set(stats.oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()));
    }

    pub fn set_outbox(&self, stats: &OutboxStats) {
        self.status_outbox_depth
            .set(i64::try_from(stats.pending).unwrap_or(i64::MAX));
        self.status_outbox_oldest_age_seconds
            .set(stats.oldest_pending_age.map_or(0.0, |age| age.as_secs_f64()));
        self.status_outbox_failed
            .set(i64::try_from(stats.failed).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every series a query of docs/grafana-dashboard.json reads: each name written before a `{`.
    fn dashboard_series() -> BTreeSet<String> {
        fn exprs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    found.extend(map.get("expr").and_then(serde_json::Value::as_str));
                    map.values().for_each(|value| exprs(value, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|value| exprs(value, found)),
                _ => {}
            }
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut found = Vec::new();
        exprs(&dashboard, &mut found);
        assert!(!found.is_empty(), "the dashboard has no queries");
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        found
            .iter()
            .flat_map(|expr| expr.split('{').rev().skip(1))
            .map(|before| before[before.trim_end_matches(is_name).len()..].to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    }

    #[test]
    fn the_dashboard_shows_every_registered_series_and_only_those() {
        let metrics = Metrics::new().unwrap();
        // A labelled series appears once it has a value.
        metrics.observe_request("/healthz", "GET", 200, Duration::from_millis(1));
        let registered: BTreeSet<String> = metrics
            .registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        // A histogram is queried through its `_bucket`, `_sum` and `_count` series.
        let shown: BTreeSet<String> = dashboard_series()
            .into_iter()
            .map(|name| {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix).filter(|base| registered.contains(*base)))
                    .map_or(name.clone(), str::to_owned)
            })
            .collect();
        let unshown: Vec<_> = registered.difference(&shown).collect();
        // Elsewhere than Linux the process_* series are not collected.
        let unknown: Vec<_> = shown
            .difference(&registered)
            .filter(|name| cfg!(target_os = "linux") || !name.starts_with("process_"))
            .collect();
        assert!(
            unshown.is_empty() && unknown.is_empty(),
            "docs/grafana-dashboard.json: registered but on no panel: {unshown:?}; queried but never registered: \
             {unknown:?}"
        );
    }
}
