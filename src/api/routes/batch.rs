//! `POST /messages/batch`: up to `MAX_MESSAGES` messages in one request, each validated as
//! `POST /messages` validates one, the valid ones stored in one statement. A message that does not
//! validate is reported at its index; it never keeps the others out.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::messages::CreateMessageRequest;
use crate::{
    api::{
        AppState,
        error::{ApiError, ErrorBody},
        json_value::UniqueKeys,
    },
    domain::{MessageStatus, NewMessage},
};

/// The most messages one request may carry.
pub const MAX_MESSAGES: usize = 1000;
/// The largest body accepted: 1,000 messages of 160 characters fit even with every character escaped.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Messages to enqueue together.
// Documents the body only: the handler reads it field by field, so that one bad message cannot refuse
// the rest. (`Deserialize` only carries `deny_unknown_fields` to the spec: no field beside `messages`.)
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"messages": [
    {"to": "+905551111111", "content": "Insider - Project"},
    {"to": "+905552222222", "content": "Kampanya başladı"}
]}))]
pub struct CreateBatchRequest {
    /// 1 to 1,000 messages, each `{"to", "content"}` (and optionally `send_at`, `expires_at`,
    /// `priority`) as `POST /messages` takes it. Any item is
    /// accepted here and judged on its own: one that is not a valid message (a bad number, blank
    /// content, a missing field, not even an object) is refused at its index, the others are stored.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<serde_json::Value>,
}

/// What became of each message of a batch.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "accepted": 1,
    "rejected": 1,
    "items": [
        {"index": 0, "id": "0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11", "status": "pending"},
        {"index": 1, "error": {"error": "invalid_field", "message": "to: must start with + and the country code", "field": "to"}}
    ]
}))]
pub struct BatchResponse {
    /// Messages stored, `pending`.
    accepted: usize,
    /// Messages refused; each item with an `error` says why.
    rejected: usize,
    /// One per message of the request, in its order.
    items: Vec<BatchItem>,
}

/// One message of a batch: stored (`id`, `status`) or refused (`error`).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItem {
    /// Its position in the request, from 0.
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<MessageStatus>,
    /// Why it was refused, as `POST /messages` would have answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

/// Enqueue many messages at once.
///
/// Each message is validated on its own; the valid ones are stored `pending` together, in the order
/// given, and the answer lists every message at its index, stored or refused. A batch whose messages
/// are all refused still answers 200: the `rejected` count and each item's `error` say why.
#[utoipa::path(
    post,
    path = "/messages/batch",
    security(("api_key" = []), ("bearer" = [])),
    tag = "messages",
    request_body = CreateBatchRequest,
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "Each message stored or refused, at its index", body = BatchResponse),
        (status = 400, description = "`messages` is missing, not an array, empty or over 1,000, or the body is not JSON",
         body = ErrorBody,
         example = json!({"error": "invalid_field", "message": "messages: must hold 1 to 1000 messages, got 1200", "field": "messages"})),
        (status = 413, description = "Body over 2 MiB", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "The database is unavailable: nothing was stored", body = ErrorBody),
    )
)]
pub async fn create_batch(state: web::Data<AppState>, body: web::Json<UniqueKeys>) -> Result<HttpResponse, ApiError> {
    let UniqueKeys(body) = body.into_inner();
    let mut valid: Vec<NewMessage> = Vec::new();
    let refusals: Vec<Option<ErrorBody>> = messages_of(&body)?
        .iter()
        .map(
            |item| match CreateMessageRequest::from_json(item).and_then(|r| r.parse(state.content_max_chars)) {
                Ok(message) => {
                    valid.push(message);
                    None
                }
                Err(error) => Some(error.body()),
            },
        )
        .collect();
    let mut stored = state.store.insert_many(&valid).await?.into_iter();
    let items: Vec<BatchItem> = refusals
        .into_iter()
        .enumerate()
        .map(|(index, refusal)| match refusal {
            None => BatchItem {
                index,
                id: stored.next().map(|m| m.id),
                status: Some(MessageStatus::Pending),
                error: None,
            },
            Some(error) => BatchItem {
                index,
                id: None,
                status: None,
                error: Some(error),
            },
        })
        .collect();
    let accepted = valid.len();
    let rejected = items.len() - accepted;
    log::info!(accepted = accepted, rejected = rejected; "batch enqueued");
    Ok(HttpResponse::Ok().json(BatchResponse {
        accepted,
        rejected,
        items,
    }))
}

/// The `messages` array of the body, 1 to `MAX_MESSAGES` long.
fn messages_of(body: &Value) -> Result<&[Value], ApiError> {
    let Value::Object(fields) = body else {
        return Err(ApiError::MalformedBody(
            "the request body must be a JSON object with a messages array".to_owned(),
        ));
    };
    let messages = match fields.get("messages") {
        None | Some(Value::Null) => return Err(ApiError::invalid("messages", "is required")),
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(ApiError::invalid("messages", "must be an array")),
    };
    // Its messages first (a lone message sent here is told it needs them), and nothing else: a
    // `send_at` beside them, ignored, would send them now.
    if let Some(unknown) = fields.keys().find(|name| name.as_str() != "messages") {
        return Err(ApiError::invalid(
            unknown.chars().take(64).collect::<String>(),
            "is not a field of a batch, which has only messages (each message has its own send_at, expires_at...)",
        ));
    }
    if messages.is_empty() || messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!("must hold 1 to {MAX_MESSAGES} messages, got {}", messages.len()),
        ));
    }
    Ok(messages)
}
