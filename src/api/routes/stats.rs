//! The queue and its recent activity, for dashboards and the operator console.

use chrono::DurationRound;

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    store::DeliveryCounts,
};

/// How far back the per-minute activity goes: this minute and the 59 before it, 60 buckets whole but
/// the current one (an hour back to the second would add a 61st, partial, that the console's chart has
/// no column for while its "last hour" totals counted it).
const ACTIVITY_MINUTES: i64 = 60;

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
    /// How long the pending message due the longest has been due (scheduled, backing-off and held
    /// messages count from when they come due); null when none is due.
    #[schema(example = 42.5)]
    oldest_pending_age_seconds: Option<f64>,
    /// Messages sent and failed per minute over the last hour, oldest first; quiet minutes are left out.
    per_minute: Vec<MinuteCounts>,
    /// Final delivery receipts of the last hour and day; null when receipts are not tracked
    /// (`CALLBACK_AUTH_KEY` unset).
    delivery: Option<DeliveryRates>,
    /// The status events outbox; null when `STATUS_WEBHOOK_URL` is unset.
    status_outbox: Option<OutboxResponse>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxResponse {
    /// Events waiting to be delivered.
    #[schema(example = 0)]
    pending: u64,
    /// Age of the oldest of them; null when none waits.
    oldest_pending_age_seconds: Option<f64>,
    /// Events not acknowledged within `STATUS_WEBHOOK_MAX_AGE` (`GET /events?status=failed`).
    #[schema(example = 0)]
    failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryRates {
    last_hour: DeliveryRate,
    last_day: DeliveryRate,
}

/// Messages whose final receipt the carrier reported in a window.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryRate {
    #[schema(example = 98)]
    delivered: u64,
    #[schema(example = 2)]
    undelivered: u64,
    /// delivered / (delivered + undelivered); null when there was neither.
    #[schema(example = 0.98)]
    rate: Option<f64>,
}

impl From<DeliveryCounts> for DeliveryRate {
    fn from(counts: DeliveryCounts) -> Self {
        let finals = counts.delivered + counts.undelivered;
        Self {
            delivered: counts.delivered,
            undelivered: counts.undelivered,
            rate: (finals > 0).then(|| counts.delivered as f64 / finals as f64),
        }
    }
}

/// Queue depth, the oldest pending message's age, sends and failures per minute over the last hour, and
/// the delivery rate of the last hour and day.
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
    let now = Utc::now();
    let minute = now.duration_trunc(chrono::TimeDelta::minutes(1)).unwrap_or(now);
    let since = minute - chrono::TimeDelta::minutes(ACTIVITY_MINUTES - 1);
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
    let delivery = match state.receipt_timeout {
        None => None,
        Some(_) => {
            let now = Utc::now();
            let (hour, day) = futures_util::future::join(
                state.receipts.delivery_counts_since(now - chrono::Duration::hours(1)),
                state.receipts.delivery_counts_since(now - chrono::Duration::days(1)),
            )
            .await;
            Some(DeliveryRates {
                last_hour: hour?.into(),
                last_day: day?.into(),
            })
        }
    };
    let status_outbox = match state.status_webhooks {
        false => None,
        true => {
            let outbox = state.events.outbox_stats().await?;
            Some(OutboxResponse {
                pending: outbox.pending,
                oldest_pending_age_seconds: outbox.oldest_pending_age.map(|age| age.as_secs_f64()),
                failed: outbox.failed,
            })
        }
    };
    Ok(HttpResponse::Ok().json(StatsResponse {
        pending: queue.pending,
        oldest_pending_age_seconds: queue.oldest_pending_age.map(|age| age.as_secs_f64()),
        per_minute,
        delivery,
        status_outbox,
    }))
}
