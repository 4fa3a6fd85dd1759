//! Starting, stopping and inspecting the scheduler.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    dispatch::messages::SchedulerState,
};

/// The scheduler as an operator sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulerResponse {
    /// Whether the scheduler ticks.
    running: bool,
    /// `INTERVAL`, in seconds.
    #[schema(example = 120.0)]
    interval_seconds: f64,
    /// `BATCH_SIZE`: the most messages one tick claims.
    #[schema(example = 2)]
    batch_size: u32,
    /// When the last tick ran.
    last_tick_at: Option<DateTime<Utc>>,
    /// When the next tick is due; null while stopped.
    next_tick_at: Option<DateTime<Utc>>,
    /// Messages claimed by this instance whose result is not yet recorded.
    #[schema(example = 0)]
    in_flight: usize,
}

async fn respond(state: &AppState, scheduler: SchedulerState) -> Result<HttpResponse, ApiError> {
    let in_flight = state.pipeline.in_flight().await?;
    Ok(HttpResponse::Ok().json(SchedulerResponse {
        running: scheduler.running,
        interval_seconds: scheduler.interval.as_secs_f64(),
        batch_size: scheduler.batch_size,
        last_tick_at: scheduler.last_tick_at,
        next_tick_at: scheduler.next_tick_at,
        in_flight,
    }))
}

/// Start sending.
///
/// Ticks at once, then every `INTERVAL`. Idempotent: starting a running scheduler changes nothing.
#[utoipa::path(security(("api_key" = []), ("bearer" = [])), tag = "scheduler", responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),(status = 200, description = "Running", body = SchedulerResponse)))]
#[post("/scheduler/start")]
pub async fn start(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scheduler = state.pipeline.start_sending().await?;
    respond(&state, scheduler).await
}

/// Stop sending.
///
/// No new messages are claimed; sends already in flight finish and are recorded. Idempotent.
#[utoipa::path(security(("api_key" = []), ("bearer" = [])), tag = "scheduler", responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),(status = 200, description = "Stopped", body = SchedulerResponse)))]
#[post("/scheduler/stop")]
pub async fn stop(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scheduler = state.pipeline.stop_sending().await?;
    respond(&state, scheduler).await
}

/// The scheduler's state.
#[utoipa::path(security(("api_key" = []), ("bearer" = [])), tag = "scheduler", responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),(status = 200, description = "Current state", body = SchedulerResponse)))]
#[get("/scheduler")]
pub async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scheduler = state.pipeline.state().await?;
    respond(&state, scheduler).await
}
