//! Prometheus metrics.

use actix_web::{HttpResponse, get, web};

use crate::{
    api::{AppState, error::ApiError},
    telemetry::error_chain,
};

/// Prometheus metrics in the text exposition format.
///
/// Queue depth, the age of the oldest pending message and the status events outbox's depth are read from
/// the database at each scrape; when it does not answer they keep their last values.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4",
               body = String, example = "scheduler_running 1\nmessages_pending 4\n"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.store.queue_stats().await {
        Ok(stats) => state.metrics.set_queue(&stats),
        Err(error) => log::warn!("metrics: queue depth not refreshed: {}", error_chain(&error)),
    }
    match state.events.outbox_stats().await {
        Ok(stats) => state.metrics.set_outbox(&stats),
        Err(error) => log::warn!("metrics: status outbox depth not refreshed: {}", error_chain(&error)),
    }
    let text = state.metrics.render().map_err(|e| ApiError::Unexpected(Box::new(e)))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text))
}
