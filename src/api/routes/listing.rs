//! Lists of messages, newest first, a keyset page at a time: the sent list (`GET /messages/sent`, with
//! provider ids from the cache) and messages in any one state (`GET /messages?status=`). The cursor
//! format and its bounds live here.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{messages::MessageResponse, page};
use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    domain::{DeliveryStatus, Message, MessageStatus},
    store::{PageCursor, list_key},
};

const SENT_LIMIT_DEFAULT: u32 = 20;
const SENT_LIMIT_MAX: u32 = 100;
const STATUS_NAMES: &str = "pending, sending, sent, failed, cancelled, expired, suppressed";
/// The largest position the spec's cursor pattern allows (18 digits: AD 33658), which every backend
/// stores: Postgres's timestamps reach AD 294276, SQLite keeps i64 microseconds.
const CURSOR_MAX_MICROS: i64 = 999_999_999_999_999_999;
/// The earliest position any backend stores (0001-01-01, the floor of `messages_times_in_range`): a row
/// inserted by hand with a time before 1970 ends a page like any other.
const CURSOR_MIN_MICROS: i64 = -62_135_596_800_000_000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
// Every list refuses a parameter it does not know: a misspelt filter (`?match=false`), ignored,
// lists what it was meant to leave out.
#[serde(deny_unknown_fields)]
pub struct SentQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it (or leave it empty) for the first page.
    #[param(pattern = r"^$|^-?[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    cursor: Option<String>,
}

/// A sent message as the sent list shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentItem {
    #[schema(example = "0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11")]
    id: Uuid,
    #[schema(example = "+905551111111")]
    to: String,
    #[schema(example = "Insider - Project")]
    content: String,
    sent_at: DateTime<Utc>,
    /// From the Redis cache when present, else from the database.
    #[schema(example = "67f2f8a8-ea58-4ed0-a6f9-ff217df4d849")]
    provider_message_id: Option<String>,
    /// Where it stands with the carrier (see `MessageResponse`).
    delivery_status: DeliveryStatus,
    delivered_at: Option<DateTime<Utc>>,
    /// The carrier's error code or text, when undelivered.
    delivery_error: Option<String>,
}

/// One page of the sent list.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentPage {
    items: Vec<SentItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(example = "1764218460123456_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11")]
    next_cursor: Option<String>,
}

/// Sent messages, newest first.
///
/// Keyset pagination on (`sent_at`, `id`): pages stay stable while messages keep being sent.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(SentQuery),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "A page of sent messages", body = SentPage),
        (status = 400, description = "`limit` or `cursor` is invalid", body = ErrorBody,
         example = json!({"error": "invalid_field", "message": "limit: must be a whole number from 1 to 100", "field": "limit"})),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/messages/sent")]
pub async fn list_sent(state: web::Data<AppState>, query: web::Query<SentQuery>) -> Result<HttpResponse, ApiError> {
    let (messages, next_cursor) = page(
        &state,
        MessageStatus::Sent,
        query.limit.as_deref(),
        query.cursor.as_deref(),
    )
    .await?;
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let cached = state.cache.get_sent_many(&ids).await.unwrap_or_else(|error| {
        state.metrics.cache_errors_total.inc();
        if error.is_resting() {
            log::debug!("sent list served without the cache: {error}");
        } else {
            log::warn!(
                "sent list served without the cache: {}",
                crate::telemetry::error_chain(&error)
            );
        }
        vec![None; ids.len()]
    });
    let now = Utc::now();
    let items = messages
        .into_iter()
        .zip(cached)
        .filter_map(|(m, cached)| {
            let sent_at = m.sent_at?;
            Some(SentItem {
                delivery_status: DeliveryStatus::of(sent_at, m.delivery_status, state.receipt_timeout, now),
                delivered_at: m.delivered_at,
                delivery_error: m.delivery_error,
                sent_at,
                provider_message_id: cached.map(|c| c.message_id).or(m.provider_message_id),
                id: m.id,
                to: m.to,
                content: m.content,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(SentPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `sending`, `sent`, `failed` (the dead letters), `cancelled`, `expired` or `suppressed`.
    #[param(required = true, value_type = MessageStatus, example = "failed")]
    status: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it (or leave it empty) for the first page.
    #[param(pattern = r"^$|^-?[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    cursor: Option<String>,
}

/// One page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    items: Vec<MessageResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(example = "1764218460123456_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11")]
    next_cursor: Option<String>,
}

/// Messages in one state, full records, newest first.
///
/// Sent messages by send time; `failed` (the dead letters, each with its `last_error`) and `cancelled`
/// by when they ended; `pending` and `sending` by when they were enqueued. Keyset pagination, as for
/// the sent list.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(ListQuery),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "`status`, `limit` or `cursor` is invalid", body = ErrorBody,
         example = json!({"error": "invalid_field", "message": "status: must be one of pending, sending, sent, failed, cancelled", "field": "status"})),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/messages")]
pub async fn list(state: web::Data<AppState>, query: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let status = match query.status.as_deref() {
        None => {
            return Err(ApiError::invalid(
                "status",
                format!("is required: one of {}", STATUS_NAMES),
            ));
        }
        Some(raw) => raw
            .parse::<MessageStatus>()
            .map_err(|_| ApiError::invalid("status", format!("must be one of {}", STATUS_NAMES)))?,
    };
    let (messages, next_cursor) = page(&state, status, query.limit.as_deref(), query.cursor.as_deref()).await?;
    let items = messages
        .into_iter()
        .map(|m| MessageResponse::new(m, state.receipt_timeout))
        .collect();
    Ok(HttpResponse::Ok().json(MessagePage { items, next_cursor }))
}

/// One page of messages in `status` and the cursor of the next page (none on the last one).
async fn page(
    state: &AppState,
    status: MessageStatus,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<(Vec<Message>, Option<String>), ApiError> {
    let limit = parse_limit(limit)?;
    // An empty `cursor=` is the first page, as an absent one.
    let cursor = cursor.filter(|c| !c.is_empty()).map(parse_cursor).transpose()?;
    // One more than asked tells whether another page exists, so the last page has no cursor.
    let mut messages = state.store.list_by_status(status, limit + 1, cursor).await?;
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    let next_cursor = messages
        .last()
        .filter(|_| has_more)
        .and_then(|m| list_key(m).map(|at| format_cursor(PageCursor { at, id: m.id })));
    Ok((messages, next_cursor))
}

fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    page::limit(raw, SENT_LIMIT_DEFAULT, SENT_LIMIT_MAX)
}

/// `<sent_at in µs since the epoch>_<id>`: opaque to clients, readable in a log.
fn format_cursor(cursor: PageCursor) -> String {
    format!("{}_{}", cursor.at.timestamp_micros(), cursor.id)
}

fn parse_cursor(raw: &str) -> Result<PageCursor, ApiError> {
    let invalid = || ApiError::invalid("cursor", "must be a next_cursor returned by this endpoint");
    let (micros, id) = raw.split_once('_').ok_or_else(invalid)?;
    // Bounded to what the spec allows and any backend stores, so a forged cursor is a 400, not a 500.
    let sent_at = micros
        .parse::<i64>()
        .ok()
        .filter(|micros| *micros <= CURSOR_MAX_MICROS)
        // Before any time a backend stores: the same place as its earliest, the end of any list.
        .map(|micros| micros.max(CURSOR_MIN_MICROS))
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok(PageCursor { at: sent_at, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_of_a_time_before_1970_round_trips() {
        for micros in [-1, -18_489_600_000_000, CURSOR_MIN_MICROS] {
            let cursor = PageCursor {
                at: DateTime::from_timestamp_micros(micros).unwrap(),
                id: Uuid::new_v4(),
            };
            assert_eq!(parse_cursor(&format_cursor(cursor)).unwrap(), cursor, "{micros}");
        }
        let earlier = parse_cursor(&format!("-999999999999999999_{}", Uuid::new_v4())).unwrap();
        assert_eq!(earlier.at.timestamp_micros(), CURSOR_MIN_MICROS, "the earliest stored");
    }

    #[test]
    fn a_cursor_round_trips() {
        let cursor = PageCursor {
            at: DateTime::from_timestamp_micros(1_764_218_460_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(parse_cursor(&format_cursor(cursor)).unwrap(), cursor);
    }

    #[test]
    fn broken_cursors_and_limits_name_their_field() {
        for raw in [
            "",
            "abc",
            "12_notauuid",
            "x_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11",
            "-99999999999999999999_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11",
            "1000000000000000000_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11",
        ] {
            assert!(
                matches!(parse_cursor(raw), Err(ApiError::InvalidField { field, .. }) if field == "cursor"),
                "{raw}"
            );
        }
        for raw in ["0", "101", "-1", "ten", ""] {
            assert!(
                matches!(
                    parse_limit(Some(raw)),
                    Err(ApiError::InvalidField { field, .. }) if field == "limit"
                ),
                "{raw}"
            );
        }
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
    }
}
