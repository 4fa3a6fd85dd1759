//! Enqueueing a message, reading one, and the sent list.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
    },
    domain::{Attempt, Encoding, Message, MessageContent, MessageStatus, NewMessage, PhoneNumber, segments_of},
    store::{PageCursor, Transition, list_key},
};

const SENT_LIMIT_DEFAULT: u32 = 20;
const SENT_LIMIT_MAX: u32 = 100;
const STATUS_NAMES: &str = "pending, sending, sent, failed, cancelled";
/// The largest position the spec's cursor pattern allows (18 digits: AD 33658), which every backend
/// stores: Postgres's timestamps reach AD 294276, SQLite keeps i64 microseconds.
const CURSOR_MAX_MICROS: i64 = 999_999_999_999_999_999;

/// A message to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"to": "+905551111111", "content": "Insider - Project"}))]
pub struct CreateMessageRequest {
    /// E.164 phone number: `+` then 8 to 15 digits, the first not 0; spaces and dashes are accepted and
    /// dropped.
    #[schema(example = "+905551111111", pattern = r"^\+[ -]*[1-9](?:[ -]*[0-9]){7,14}[ -]*$")]
    pub to: String,
    /// 1 to `CONTENT_MAX_CHARS` (default 160) characters, characters not bytes; not blank, and no
    /// control characters other than line breaks and tabs.
    #[schema(
        example = "Insider - Project",
        min_length = 1,
        max_length = 160,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub content: String,
}

impl CreateMessageRequest {
    /// Reads the body field by field, so an error can name the field at fault.
    pub(super) fn from_json(body: &Value) -> Result<Self, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::MalformedBody(
                "a message must be a JSON object with \"to\" and \"content\"".to_owned(),
            ));
        };
        let text = |name: &'static str| match fields.get(name) {
            None | Some(Value::Null) => Err(ApiError::invalid(name, "is required")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid(name, "must be a string")),
        };
        Ok(Self {
            to: text("to")?,
            content: text("content")?,
        })
    }

    pub(super) fn parse(self, content_max_chars: usize) -> Result<NewMessage, ApiError> {
        Ok(NewMessage {
            to: PhoneNumber::parse(&self.to).map_err(|e| ApiError::invalid("to", e.to_string()))?,
            content: MessageContent::parse(&self.content, content_max_chars)
                .map_err(|e| ApiError::invalid("content", e.to_string()))?,
        })
    }
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    #[schema(example = "0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11")]
    id: Uuid,
    #[schema(example = "+905551111111")]
    to: String,
    #[schema(example = "Insider - Project")]
    content: String,
    status: MessageStatus,
    /// How the SMS network will encode the content.
    encoding: Encoding,
    /// How many SMS segments the content takes.
    #[schema(example = 1)]
    segments: usize,
    /// Attempts so far, counting the one in progress.
    #[schema(example = 0)]
    attempts: u32,
    /// When a pending message becomes due.
    next_attempt_at: DateTime<Utc>,
    /// The provider's id, once sent.
    #[schema(example = "67f2f8a8-ea58-4ed0-a6f9-ff217df4d849")]
    provider_message_id: Option<String>,
    /// Why the last attempt did not succeed.
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    /// Every POST of this message and its result, oldest first; only on `GET /messages/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<AttemptResponse>>,
}

/// One POST to the provider and what came of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResponse {
    #[schema(example = 1)]
    attempt: u32,
    started_at: DateTime<Utc>,
    #[schema(example = 42)]
    duration_ms: u64,
    /// The provider's HTTP status; null when it never answered (timeout, connection error).
    #[schema(example = 202)]
    http_status: Option<u16>,
    /// `accepted`, `retry` or `rejected`.
    #[schema(example = "accepted")]
    outcome: String,
    error: Option<String>,
    provider_message_id: Option<String>,
}

impl From<Attempt> for AttemptResponse {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: a.started_at,
            duration_ms: a.duration_ms,
            http_status: a.http_status,
            outcome: a.outcome,
            error: a.error,
            provider_message_id: a.provider_message_id,
        }
    }
}

impl From<Message> for MessageResponse {
    fn from(m: Message) -> Self {
        Self {
            encoding: Encoding::of(&m.content),
            segments: segments_of(&m.content),
            id: m.id,
            to: m.to,
            content: m.content,
            status: m.status,
            attempts: m.attempts,
            next_attempt_at: m.next_attempt_at,
            provider_message_id: m.provider_message_id,
            last_error: m.last_error,
            created_at: m.created_at,
            updated_at: m.updated_at,
            sent_at: m.sent_at,
            history: None,
        }
    }
}

/// Enqueue a message.
///
/// The message is stored `pending` and goes out on a coming tick.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    request_body = CreateMessageRequest,
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 201, description = "Stored, pending", body = MessageResponse),
        (status = 400, description = "A field is missing or invalid, or the body is not JSON", body = ErrorBody,
         example = json!({"error": "invalid_field", "message": "to: must start with + and the country code", "field": "to"})),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/messages")]
pub async fn create(state: web::Data<AppState>, body: web::Json<Value>) -> Result<HttpResponse, ApiError> {
    let new = CreateMessageRequest::from_json(&body)?.parse(state.content_max_chars)?;
    let message = state
        .store
        .insert_many(std::slice::from_ref(&new))
        .await?
        .pop()
        .ok_or_else(|| ApiError::Unexpected("the database stored no message".into()))?;
    log::info!(message_id:% = message.id, to:% = new.to; "message enqueued");
    Ok(HttpResponse::Created().json(MessageResponse::from(message)))
}

/// One message by id, with the history of its attempts.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(("id" = Uuid, Path, description = "The message's UUID")),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "The message", body = MessageResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/messages/{id}")]
pub async fn get_one(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let message = state.store.get(id).await?.ok_or(ApiError::MessageNotFound(id))?;
    let history = state.store.list_attempts(id).await?;
    let mut response = MessageResponse::from(message);
    response.history = Some(history.into_iter().map(AttemptResponse::from).collect());
    Ok(HttpResponse::Ok().json(response))
}

/// Send a failed message again.
///
/// `failed` → `pending`, due now, with a fresh count of attempts; the history of earlier attempts stays.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(("id" = Uuid, Path, description = "The message's UUID")),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Pending again", body = MessageResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is not failed", body = ErrorBody,
         example = json!({"error": "wrong_state", "message": "message 0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11 is sent: only a failed message can be retried", "status": "sent"})),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/messages/{id}/retry")]
pub async fn retry(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let changed = state.store.retry_if_failed(id).await?;
    operator_result(
        id,
        changed,
        "only a failed message can be retried",
        "retried by an operator",
    )
}

/// Cancel a pending message.
///
/// `pending` → `cancelled`: it will never be sent. A message already claimed (`sending`) cannot be
/// cancelled.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    params(("id" = Uuid, Path, description = "The message's UUID")),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Cancelled", body = MessageResponse),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such message", body = ErrorBody),
        (status = 409, description = "The message is not pending", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/messages/{id}/cancel")]
pub async fn cancel(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let changed = state.store.cancel_if_pending(id).await?;
    operator_result(
        id,
        changed,
        "only a pending message can be cancelled",
        "cancelled by an operator",
    )
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid("id", "must be a UUID"))
}

fn operator_result(
    id: Uuid,
    changed: Transition,
    rule: &'static str,
    done: &'static str,
) -> Result<HttpResponse, ApiError> {
    match changed {
        Transition::Changed(message) => {
            log::info!(message_id:% = id; "message {done}");
            Ok(HttpResponse::Ok().json(MessageResponse::from(message)))
        }
        Transition::Refused(status) => Err(ApiError::WrongState { id, status, rule }),
        Transition::Missing => Err(ApiError::MessageNotFound(id)),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SentQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it (or leave it empty) for the first page.
    #[param(pattern = r"^$|^[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
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
        log::warn!(
            "sent list served without the cache: {}",
            crate::telemetry::error_chain(&error)
        );
        vec![None; ids.len()]
    });
    let items = messages
        .into_iter()
        .zip(cached)
        .filter_map(|(m, cached)| {
            Some(SentItem {
                sent_at: m.sent_at?,
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
pub struct ListQuery {
    /// `pending`, `sending`, `sent`, `failed` (the dead letters) or `cancelled`.
    #[param(required = true, value_type = MessageStatus, example = "failed")]
    status: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it (or leave it empty) for the first page.
    #[param(pattern = r"^$|^[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
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
    let items = messages.into_iter().map(MessageResponse::from).collect();
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
    let Some(raw) = raw else { return Ok(SENT_LIMIT_DEFAULT) };
    raw.trim()
        .parse::<u32>()
        .ok()
        .filter(|limit| (1..=SENT_LIMIT_MAX).contains(limit))
        .ok_or_else(|| ApiError::invalid("limit", format!("must be a whole number from 1 to {SENT_LIMIT_MAX}")))
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
        .filter(|micros| (0..=CURSOR_MAX_MICROS).contains(micros))
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid)?;
    let id = Uuid::parse_str(id).map_err(|_| invalid())?;
    Ok(PageCursor { at: sent_at, id })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "-300000000000000000_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11",
            "1000000000000000000_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11",
        ] {
            assert!(
                matches!(parse_cursor(raw), Err(ApiError::InvalidField { field: "cursor", .. })),
                "{raw}"
            );
        }
        for raw in ["0", "101", "-1", "ten", ""] {
            assert!(
                matches!(
                    parse_limit(Some(raw)),
                    Err(ApiError::InvalidField { field: "limit", .. })
                ),
                "{raw}"
            );
        }
        assert_eq!(parse_limit(None).unwrap(), 20);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
    }
}
