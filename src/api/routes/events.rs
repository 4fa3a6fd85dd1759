//! The status events outbox as operators see it: `GET /events?status=` and `POST /events/{id}/retry`
//! (a replay under the same `webhook-id`). The events themselves are written by the store and delivered
//! by `dispatch/status_dispatcher.rs`.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::page;
use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    domain::StatusEventType,
    store::{EventStatus, StoredEvent},
};

const LIMIT_DEFAULT: u32 = 100;
const LIMIT_MAX: u32 = 1_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// `pending`, `delivered` or `failed`; omitted: every event.
    #[param(value_type = Option<EventStatus>, example = "failed")]
    status: Option<String>,
    /// Items per page, 1 to 1,000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it for the first page.
    #[param(pattern = r"^$|^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// A status event and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    /// The `webhook-id` it is sent with, the same on every attempt.
    id: Uuid,
    /// The order events were written in.
    #[schema(example = 7)]
    seq: i64,
    #[serde(rename = "type")]
    kind: StatusEventType,
    message_id: Uuid,
    status: EventStatus,
    /// Attempts so far.
    #[schema(example = 1)]
    attempts: u32,
    /// When a pending event is due.
    next_attempt_at: DateTime<Utc>,
    /// Why the last attempt was not acknowledged.
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    /// When the receiver acknowledged it; a replay keeps it until the receiver acknowledges it again.
    delivered_at: Option<DateTime<Utc>>,
    /// The body sent: `{"type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    payload: Value,
}

impl From<StoredEvent> for EventResponse {
    fn from(e: StoredEvent) -> Self {
        Self {
            payload: serde_json::from_str(&e.payload).unwrap_or(Value::String(e.payload)),
            id: e.id,
            seq: e.seq,
            kind: e.kind,
            message_id: e.message_id,
            status: e.status,
            attempts: e.attempts,
            next_attempt_at: e.next_attempt_at,
            last_error: e.last_error,
            created_at: e.created_at,
            delivered_at: e.delivered_at,
        }
    }
}

/// One page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    items: Vec<EventResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(example = "7")]
    next_cursor: Option<String>,
}

/// Status events sent (or to be sent) to `STATUS_WEBHOOK_URL`, newest first.
///
/// `status=failed` lists those not acknowledged within `STATUS_WEBHOOK_MAX_AGE`.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "`status`, `limit` or `cursor` is invalid", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/events")]
pub async fn list(state: web::Data<AppState>, query: web::Query<EventsQuery>) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(
            EventStatus::parse(raw)
                .ok_or_else(|| ApiError::invalid("status", "must be one of pending, delivered, failed"))?,
        ),
    };
    let limit = page::limit(query.limit.as_deref(), LIMIT_DEFAULT, LIMIT_MAX)?;
    let before = page::seq_cursor(query.cursor.as_deref())?;
    let events = state.events.list_events(status, limit + 1, before).await?;
    let (events, next_cursor) = page::cut(events, limit, |e| e.seq.to_string());
    let items = events.into_iter().map(EventResponse::from).collect();
    Ok(HttpResponse::Ok().json(EventPage { items, next_cursor }))
}

/// Replay one status event.
///
/// Back to `pending`, due now, under the same `webhook-id` (a receiver that already has it drops it). Any
/// event may be replayed: a failed one, or a delivered one the receiver lost. The failed events of its
/// message before it are replayed with it, and go first: a `message.delivered` never reaches the receiver
/// while its `message.sent` stays failed.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "events",
    params(("id" = Uuid, Path, description = "The event's id (its webhook-id)")),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Pending again", body = EventResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/events/{id}/retry")]
pub async fn retry(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::invalid("id", "must be a UUID"))?;
    let event = state.events.retry_event(id).await?.ok_or(ApiError::EventNotFound(id))?;
    log::info!(event:% = id, message_id:% = event.message_id; "status event replayed by an operator");
    Ok(HttpResponse::Ok().json(EventResponse::from(event)))
}
