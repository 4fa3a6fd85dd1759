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
    /// Messages claimed by this instance whose result is not yet recorded: waiting for a send slot, being
    /// POSTed, or waiting to be recorded.
    #[schema(example = 0)]
    in_flight: usize,
    /// `WEBHOOK_CONCURRENCY`: this instance's send slots, the most POSTs in flight at once.
    #[schema(example = 2)]
    webhook_concurrency: usize,
    /// This instance's send slots and run-ahead buffer, and the cluster's pace.
    flow: FlowResponse,
    /// Every instance that sent a heartbeat in the last 10 seconds, this one included. Each ticks on
    /// its own, so N replicas send up to N × `batch_size` per interval. Empty when the database does
    /// not answer.
    replicas: Vec<ReplicaResponse>,
    /// The provider circuit breaker of this instance.
    breaker: BreakerResponse,
}

/// How this instance keeps its send slots busy, and the pace the cluster shares.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlowResponse {
    /// POSTs in flight now; a slot frees when the provider answers.
    #[schema(example = 1)]
    send_slots_in_use: usize,
    /// `WEBHOOK_CONCURRENCY`.
    #[schema(example = 2)]
    send_slots: usize,
    /// Claimed messages waiting in memory for a free slot.
    #[schema(example = 0)]
    run_ahead: usize,
    /// The most that may wait: one round of slots, or none when the lease leaves no room for waiting.
    #[schema(example = 2)]
    run_ahead_capacity: usize,
    /// `RATE_LIMIT`, messages a second, shared by every replica; null when unset.
    #[schema(example = 100.0)]
    rate_limit_per_second: Option<f64>,
    /// The rate in force as this instance's last claim found it: `RATE_LIMIT`, or lower while a provider's
    /// 429 cut grows back; null when nothing caps it.
    #[schema(example = 100.0)]
    rate_per_second: Option<f64>,
    /// While a provider's 429 pauses every replica's claims and sends: seconds the pause still runs.
    #[schema(example = json!(null))]
    throttled_for_seconds: Option<f64>,
    /// While the provider's refusal of our credentials (401, 403) pauses this instance's sending: that
    /// status and since when. `POST /scheduler/start`, or a restart with a key that works, resumes it.
    credentials_refused: Option<CredentialsRefused>,
}

/// The provider refused our credentials: this instance sends nothing until started again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsRefused {
    #[schema(example = 401)]
    status: u16,
    since: DateTime<Utc>,
}

/// When the provider keeps failing (5xx, timeouts, no answer: half or more of the last 20 messages
/// sent; a 429 is a pause, not a failure) the breaker opens: nothing is claimed for a cool-down, then
/// one message probes.
#[derive(Debug, Serialize, ToSchema)]
pub struct BreakerResponse {
    /// `closed`, `open` or `half_open`.
    #[schema(example = "closed")]
    state: &'static str,
    /// While open: seconds until a probe may go.
    probe_in_seconds: Option<f64>,
}

/// One running instance as it last reported itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaResponse {
    /// Host, process id and a random suffix.
    #[schema(example = "web-1/4242/9f1c2ab3")]
    id: String,
    #[schema(example = "web-1")]
    host: String,
    started_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    #[schema(example = 0)]
    in_flight: u32,
    /// Whether its scheduler is ticking.
    sending: bool,
}

async fn respond(state: &AppState, scheduler: SchedulerState) -> Result<HttpResponse, ApiError> {
    let in_flight = state.pipeline.in_flight().await?;
    let breaker = state.pipeline.breaker().await?;
    let flow = state.pipeline.flow().await?;
    let replicas = state.pipeline.replicas().await.unwrap_or_else(|error| {
        log::warn!("scheduler state served without the replica list: {error}");
        Vec::new()
    });
    Ok(HttpResponse::Ok().json(SchedulerResponse {
        running: scheduler.running,
        interval_seconds: scheduler.interval.as_secs_f64(),
        batch_size: scheduler.batch_size,
        last_tick_at: scheduler.last_tick_at,
        next_tick_at: scheduler.next_tick_at,
        in_flight,
        webhook_concurrency: flow.slots,
        flow: FlowResponse {
            send_slots_in_use: flow.slots_in_use,
            send_slots: flow.slots,
            run_ahead: flow.buffered,
            run_ahead_capacity: flow.buffer_capacity,
            rate_limit_per_second: flow.rate_limit,
            rate_per_second: flow.rate,
            throttled_for_seconds: flow.throttled_for.map(|left| left.as_secs_f64()),
            credentials_refused: flow
                .credentials_refused
                .map(|(code, since)| CredentialsRefused { status: code, since }),
        },
        replicas: replicas
            .into_iter()
            .map(|r| ReplicaResponse {
                id: r.id,
                host: r.host,
                started_at: r.started_at,
                last_seen: r.last_seen,
                in_flight: r.in_flight,
                sending: r.sending,
            })
            .collect(),
        breaker: BreakerResponse {
            state: breaker.state,
            probe_in_seconds: breaker.probe_in.map(|d| d.as_secs_f64()),
        },
    }))
}

/// Start sending, on every replica.
///
/// Turns the cluster's sending switch on (it survives restarts): this instance ticks at once, then
/// every `INTERVAL`; the others follow within a second. Idempotent.
#[utoipa::path(security(("api_key" = []), ("bearer" = [])), tag = "scheduler", responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),(status = 200, description = "Running", body = SchedulerResponse),
        (status = 503, description = "The database is unavailable (the cluster's switch and replicas are kept there)", body = ErrorBody)))]
#[post("/scheduler/start")]
pub async fn start(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scheduler = state.pipeline.start_sending().await?;
    respond(&state, scheduler).await
}

/// Stop sending, on every replica.
///
/// Turns the cluster's sending switch off (it survives restarts): no new messages are claimed here at
/// once, and on the other replicas within a second; sends already in flight finish and are recorded.
/// Idempotent.
#[utoipa::path(security(("api_key" = []), ("bearer" = [])), tag = "scheduler", responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),(status = 200, description = "Stopped", body = SchedulerResponse),
        (status = 503, description = "The database is unavailable (the cluster's switch and replicas are kept there)", body = ErrorBody)))]
#[post("/scheduler/stop")]
pub async fn stop(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scheduler = state.pipeline.stop_sending().await?;
    respond(&state, scheduler).await
}

/// The scheduler's state.
#[utoipa::path(security(("api_key" = []), ("bearer" = [])), tag = "scheduler", responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),(status = 200, description = "Current state", body = SchedulerResponse),
        (status = 503, description = "The database is unavailable (the cluster's switch and replicas are kept there)", body = ErrorBody)))]
#[get("/scheduler")]
pub async fn status(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let scheduler = state.pipeline.state().await?;
    respond(&state, scheduler).await
}
