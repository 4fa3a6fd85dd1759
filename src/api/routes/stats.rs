//! The queue and its recent activity, for dashboards and the operator console.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::{
    AppState,
    error::{ApiError, ErrorBody},
};

/// How far back the per-minute activity goes.
const ACTIVITY_WINDOW: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Serialize, ToSchema)]
pub struct MinuteCounts {
    /// The start of the minute.
    minute: DateTime<Utc>,
    #[schema(example = 2)]
    sent: u64,
    #[schema(example = 0)]
    failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    /// Messages waiting to be sent.
    #[schema(example = 4)]
    pending: u64,
    /// Age of the oldest pending message; null when none is pending.
    #[schema(example = 42.5)]
    oldest_pending_age_seconds: Option<f64>,
    /// Messages sent and failed per minute over the last hour, oldest first; quiet minutes are left out.
    per_minute: Vec<MinuteCounts>,
}

/// Queue depth, the oldest pending message's age, and sends and failures per minute over the last hour.
///
/// Read from the database, so every replica answers the same.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "health",
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "The queue and its last hour", body = StatsResponse),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/stats")]
pub async fn stats(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let since = Utc::now() - chrono::Duration::from_std(ACTIVITY_WINDOW).unwrap_or_default();
    let (queue, activity) =
        futures_util::future::join(state.store.queue_stats(), state.store.activity_since(since)).await;
    let queue = queue?;
    let per_minute = activity?
        .into_iter()
        .map(|m| MinuteCounts {
            minute: m.minute,
            sent: m.sent,
            failed: m.failed,
        })
        .collect();
    Ok(HttpResponse::Ok().json(StatsResponse {
        pending: queue.pending,
        oldest_pending_age_seconds: queue.oldest_pending_age.map(|age| age.as_secs_f64()),
        per_minute,
    }))
}
