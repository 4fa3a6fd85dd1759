//! Enqueueing a message and reading one back: the request and the message resource that the other
//! message routes (`listing.rs`, `operator.rs`, `batch.rs`) answer with too.

use std::time::Duration;

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
        json_value::UniqueKeys,
        time::parse_time,
    },
    domain::{
        Attempt, DeliveryStatus, Encoding, Message, MessageContent, MessageStatus, NewMessage, PhoneNumber, Priority,
        Schedule, is_bidi_control, is_invisible, segments_of,
    },
};

/// A message to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"to": "+905551111111", "content": "Insider - Project"}))]
pub struct CreateMessageRequest {
    /// E.164 phone number: `+` then 8 to 15 digits, the first not 0; spaces and dashes are accepted and
    /// dropped.
    #[schema(example = "+905551111111", pattern = r"^\+[ -]*[1-9](?:[ -]*[0-9]){7,14}[ -]*$")]
    pub to: String,
    /// 1 to `CONTENT_MAX_CHARS` (default 160) characters, characters not bytes; at least one visible
    /// character (spaces, zero-width and other invisible characters such as U+200B, U+2800 or U+FEFF
    /// alone are blank), no control characters other than line breaks and tabs, and no bidirectional
    /// controls (U+202A to U+202E, U+2066 to U+2069). The pattern lists the invisible characters below
    /// U+10000; those above (tags U+E0000 to U+E0FFF and a few others) are refused as well.
    #[schema(
        example = "Insider - Project",
        min_length = 1,
        max_length = 160,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*[^\s\u0000-\u001F\u007F-\u00A0\u00AD\u034F\u0600-\u0605\u061C\u06DD\u070F\u0890\u0891\u08E2\u115F\u1160\u1680\u17B4\u17B5\u180B-\u180F\u2000-\u200F\u2028-\u202F\u205F-\u206F\u2800\u3000\u3164\uFE00-\uFE0F\uFEFF\uFFA0\uFFF0-\uFFFB][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$"
    )]
    pub content: String,
    /// Not sent before this time (RFC 3339); due from then on like any other message. Omitted, or in
    /// the past: due now.
    #[schema(example = "2026-12-24T09:00:00+03:00")]
    pub send_at: Option<DateTime<Utc>>,
    /// Never sent after this time (RFC 3339; after `send_at` when both are given, else a 400): a
    /// message not handed to the provider by then becomes `expired`, and its retries stop. One already
    /// past expires at its first claim: never sent.
    #[schema(example = "2026-12-24T09:05:00+03:00")]
    pub expires_at: Option<DateTime<Utc>>,
    /// `high`, `normal` (the default) or `low`. A claim takes due `high` before `normal` before `low`,
    /// oldest first within one; a message due for longer than `PRIORITY_AGING` counts one level higher.
    pub priority: Option<Priority>,
    /// The recipient's IANA time zone, for quiet hours (`QUIET_HOURS` holds `low` messages in the
    /// recipient's night). Omitted: the zone of the number's country calling code when the country has
    /// one, else `QUIET_HOURS_TZ`.
    #[schema(value_type = Option<TimeZoneName>, example = "Europe/Istanbul")]
    pub timezone: Option<Tz>,
    /// A campaign label, 1 to 64 characters without `/`, control characters, bidirectional controls or
    /// U+FFFD, and not blank: its messages are
    /// listed, paused, resumed and cancelled together (`/campaigns`).
    #[schema(example = "black-friday-2026", pattern = r"^[^/\u0000-\u001F\u007F-\u009F]{1,64}$")]
    pub campaign: Option<String>,
}

/// An IANA time zone name, documented as the list `chrono-tz` knows, so that a client (or a generator
/// of requests) can tell a name the API takes from one it refuses.
pub struct TimeZoneName;

impl utoipa::PartialSchema for TimeZoneName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("An IANA time zone name"))
            .enum_values(Some(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name())))
            .into()
    }
}

impl ToSchema for TimeZoneName {}

/// A campaign's name as a request gives it (a body's `campaign`, a path's `{campaign}`). U+FFFD is what
/// a path's percent escapes that are not UTF-8 (`%FF`) decode to: `%FE` would name the same campaign.
pub(super) fn parse_campaign(raw: &str) -> Result<String, ApiError> {
    let length = raw.chars().count();
    if !(1..=64).contains(&length) {
        return Err(ApiError::invalid(
            "campaign",
            format!("must be 1 to 64 characters, got {length}"),
        ));
    }
    if raw.chars().any(|c| c == '/' || c.is_control()) {
        return Err(ApiError::invalid("campaign", "must not hold / or control characters"));
    }
    if raw.contains(char::REPLACEMENT_CHARACTER) {
        return Err(ApiError::invalid("campaign", "must be UTF-8 (it holds U+FFFD)"));
    }
    Ok(raw.to_owned())
}

/// A new message's campaign: as `parse_campaign`, and something that shows as itself where operators read
/// it (the console, `GET /campaigns`): not blank, and without the bidirectional controls a message's
/// content may not hold either. A campaign stored with them before is still paused, resumed and cancelled
/// by its name.
fn parse_new_campaign(raw: &str) -> Result<String, ApiError> {
    let campaign = parse_campaign(raw)?;
    if campaign.chars().all(|c| c.is_whitespace() || is_invisible(c)) {
        return Err(ApiError::invalid(
            "campaign",
            "must not hold only spaces and invisible characters",
        ));
    }
    if campaign.chars().any(is_bidi_control) {
        return Err(ApiError::invalid(
            "campaign",
            "must not contain bidirectional control characters (U+202A to U+202E, U+2066 to U+2069)",
        ));
    }
    Ok(campaign)
}

/// The fields `CreateMessageRequest` reads.
const FIELDS: [&str; 7] = [
    "to",
    "content",
    "send_at",
    "expires_at",
    "priority",
    "timezone",
    "campaign",
];

impl CreateMessageRequest {
    /// Reads the body field by field, so an error can name the field at fault.
    pub(super) fn from_json(body: &Value) -> Result<Self, ApiError> {
        let Value::Object(fields) = body else {
            return Err(ApiError::MalformedBody(
                "a message must be a JSON object with \"to\" and \"content\"".to_owned(),
            ));
        };
        // A misspelt field (`sendAt`) left out would send the message now, or keep it past its expiry.
        if let Some(unknown) = fields.keys().find(|name| !FIELDS.contains(&name.as_str())) {
            return Err(ApiError::invalid(
                unknown.chars().take(64).collect::<String>(),
                format!("is not a field of a message, which has {}", FIELDS.join(", ")),
            ));
        }
        let text = |name: &'static str| match fields.get(name) {
            None | Some(Value::Null) => Err(ApiError::invalid(name, "is required")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(ApiError::invalid(name, "must be a string")),
        };
        let optional_text = |name: &'static str| match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::invalid(name, "must be a string")),
        };
        let time = |name: &'static str| optional_text(name)?.map(|raw| parse_time(name, raw)).transpose();
        Ok(Self {
            to: text("to")?,
            content: text("content")?,
            send_at: time("send_at")?,
            expires_at: time("expires_at")?,
            priority: optional_text("priority")?
                .map(|raw| raw.parse::<Priority>())
                .transpose()
                .map_err(|e| ApiError::invalid("priority", e.to_string()))?,
            timezone: optional_text("timezone")?
                .map(|raw| raw.parse::<Tz>())
                .transpose()
                .map_err(|_| ApiError::invalid("timezone", "must be an IANA time zone such as Europe/Istanbul"))?,
            campaign: optional_text("campaign")?.map(parse_new_campaign).transpose()?,
        })
    }

    pub(super) fn parse(self, content_max_chars: usize) -> Result<NewMessage, ApiError> {
        let to = PhoneNumber::parse(&self.to).map_err(|e| ApiError::invalid("to", e.to_string()))?;
        let content = MessageContent::parse(&self.content, content_max_chars)
            .map_err(|e| ApiError::invalid("content", e.to_string()))?;
        // A window that closes before it opens is a client's mistake, told at once. An expiry already
        // past is not: the clock moved on since the client wrote it, and such a message expires at its
        // first claim, never sent, which is what that expiry asks for.
        if let (Some(send_at), Some(expires_at)) = (self.send_at, self.expires_at)
            && expires_at <= send_at
        {
            return Err(ApiError::invalid("expires_at", "must be after send_at"));
        }
        Ok(NewMessage {
            to,
            content,
            when: Schedule {
                send_at: self.send_at,
                expires_at: self.expires_at,
                priority: self.priority.unwrap_or_default(),
                timezone: self.timezone,
                campaign: self.campaign,
            },
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
    /// Not sent before this time; null when it was due at once.
    send_at: Option<DateTime<Utc>>,
    /// Never sent after this time; null when it never expires.
    expires_at: Option<DateTime<Utc>>,
    priority: Priority,
    /// The recipient's time zone for quiet hours, when the message gave one.
    #[schema(example = "Europe/Istanbul")]
    timezone: Option<String>,
    /// The campaign it belongs to, if any.
    #[schema(example = "black-friday-2026")]
    campaign: Option<String>,
    /// Where a sent message stands with the carrier (null until it is sent): `not_tracked` without
    /// `CALLBACK_AUTH_KEY`; `awaiting_receipt`, `accepted` or `buffered` until a final receipt;
    /// `delivered` or `undelivered` (final); `no_receipt` when none came within `RECEIPT_TIMEOUT`.
    delivery_status: Option<DeliveryStatus>,
    /// When the carrier delivered it.
    delivered_at: Option<DateTime<Utc>>,
    /// The carrier's error code or text, when undelivered.
    #[schema(example = json!(null))]
    delivery_error: Option<String>,
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
    /// `accepted`, `retry` (a 5xx, 408, timeout or connection error), `throttled` (429), `unauthorized`
    /// (401, 403) or `rejected` (any other 4xx).
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

impl MessageResponse {
    /// `m` as the API shows it; `receipt_timeout` is `RECEIPT_TIMEOUT` when receipts are tracked.
    pub fn new(m: Message, receipt_timeout: Option<Duration>) -> Self {
        Self {
            delivery_status: m
                .sent_at
                .map(|sent_at| DeliveryStatus::of(sent_at, m.delivery_status, receipt_timeout, Utc::now())),
            delivered_at: m.delivered_at,
            delivery_error: m.delivery_error,
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
            send_at: m.when.send_at,
            expires_at: m.when.expires_at,
            priority: m.when.priority,
            timezone: m.when.timezone.map(|tz| tz.name().to_owned()),
            campaign: m.when.campaign,
            history: None,
        }
    }
}

/// Enqueue a message.
///
/// The message is stored `pending` and goes out on a coming tick: at once, or from its `send_at`, in
/// the order of its `priority`, unless its `expires_at` passes first.
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
pub async fn create(state: web::Data<AppState>, body: web::Json<UniqueKeys>) -> Result<HttpResponse, ApiError> {
    let UniqueKeys(body) = body.into_inner();
    let new = CreateMessageRequest::from_json(&body)?.parse(state.content_max_chars)?;
    let message = state
        .store
        .insert_many(std::slice::from_ref(&new))
        .await?
        .pop()
        .ok_or_else(|| ApiError::Unexpected("the database stored no message".into()))?;
    log::info!(message_id:% = message.id, to:% = new.to; "message enqueued");
    Ok(HttpResponse::Created().json(MessageResponse::new(message, state.receipt_timeout)))
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
    let mut response = MessageResponse::new(message, state.receipt_timeout);
    response.history = Some(history.into_iter().map(AttemptResponse::from).collect());
    Ok(HttpResponse::Ok().json(response))
}

pub(super) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid("id", "must be a UUID"))
}
