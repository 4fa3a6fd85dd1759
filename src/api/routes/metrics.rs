//! Prometheus metrics.

use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, web};
use tokio::sync::Mutex;

use crate::{
    api::{AppState, error::ApiError},
    telemetry::error_chain,
};

/// The database's gauges are read at most this often, whoever scrapes: the route is open, and each read
/// counts the pending rows on the pool the sends use.
const GAUGES_FRESH_FOR: Duration = Duration::from_secs(1);

/// When the database's gauges were last read; scrapes meanwhile wait for the read under way and share it.
#[derive(Default)]
pub struct GaugeReads(Mutex<Option<Instant>>);

/// Prometheus metrics in the text exposition format.
///
/// Queue depth, the age of the oldest pending message and the status events outbox's depth are read from
/// the database, at most once a second however many scrape; when it does not answer they keep their
/// last values.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4",
               body = String, example = "scheduler_running 1\nmessages_pending 4\n"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut last_read = state.gauge_reads.0.lock().await;
    if last_read.is_none_or(|at| at.elapsed() >= GAUGES_FRESH_FOR) {
        match state.store.queue_stats().await {
            Ok(stats) => state.metrics.set_queue(&stats),
            Err(error) => log::warn!("metrics: queue depth not refreshed: {}", error_chain(&error)),
        }
        match state.events.outbox_stats().await {
            Ok(stats) => state.metrics.set_outbox(&stats),
            Err(error) => log::warn!("metrics: status outbox depth not refreshed: {}", error_chain(&error)),
        }
        *last_read = Some(Instant::now());
    }
    drop(last_read);
    let text = state.metrics.render().map_err(|e| ApiError::Unexpected(Box::new(e)))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text))
}
