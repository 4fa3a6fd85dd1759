//! Replies from phones: `POST /inbound`, the provider's call (authenticated by `CALLBACK_AUTH_KEY`),
//! judged once on arrival (`InboundAction`: an opt-out keyword puts the number on the suppression list,
//! an opt-in keyword takes it off), kept, counted, and listed for operators (`GET /inbound`).

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::page;
use crate::{
    api::{
        AppState,
        callback_auth::require_callback_key,
        callback_body::json_body,
        error::{ApiError, ErrorBody},
        time::parse_reported,
    },
    domain::{InboundAction, PhoneNumber},
    store::{InboundReply, StoredReply, TakenReply},
};

const LIMIT_DEFAULT: u32 = 20;
const LIMIT_MAX: u32 = 100;
/// The longest reply kept: a concatenated SMS is rarely longer.
const CONTENT_MAX_CHARS: usize = 1600;
/// The largest body taken: the longest reply with every character escaped as JSON may (`\ud83d\ude00`,
/// 12 bytes, for one outside the Basic Multilingual Plane, as a provider that escapes all but ASCII
/// sends an emoji), and room for the other fields.
const MAX_BODY_BYTES: usize = CONTENT_MAX_CHARS * 12 + 4 * 1024;

/// A reply, as the provider contract sends it.
#[derive(Debug, ToSchema)]
#[schema(example = json!({"from": "+905551111111", "content": "STOP", "at": "2026-12-02T10:05:00Z"}))]
pub struct InboundRequest {
    /// The phone that replied, E.164.
    #[schema(example = "+905551111111", pattern = r"^\+[ -]*[1-9](?:[ -]*[0-9]){7,14}[ -]*$")]
    pub from: String,
    /// What it sent. `STOP`, `UNSUBSCRIBE`, `CANCEL`, `END`, `QUIT`, `IPTAL`/`İPTAL`, `DUR` (the whole
    /// trimmed text, any case) opt the number out; `START`, `UNSTOP` opt it back in.
    #[schema(example = "STOP", max_length = 1600)]
    pub content: String,
    /// When the carrier says it was sent (RFC 3339), kept as it says; ahead of our clock it counts, for
    /// the order of keywords, as when it arrived. Omitted, when it arrived (and a retry of it cannot be
    /// told from a new reply).
    pub at: Option<DateTime<Utc>>,
}

/// A reply as kept.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundResponse {
    id: Uuid,
    #[schema(example = "+905551111111")]
    from: String,
    #[schema(example = "STOP")]
    content: String,
    at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    /// What it did: `opt_out`, `opt_in` or `other` (kept only).
    #[schema(example = "opt_out")]
    action: String,
}

impl From<StoredReply> for InboundResponse {
    fn from(reply: StoredReply) -> Self {
        Self {
            id: reply.id,
            from: reply.from,
            content: reply.content,
            at: reply.at,
            received_at: reply.received_at,
            action: reply.action,
        }
    }
}

/// One page of replies, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundPage {
    items: Vec<InboundResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InboundQuery {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it (or leave it empty) for the first page.
    #[param(pattern = r"^$|^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    cursor: Option<String>,
}

/// A reply from a phone (the provider's call).
///
/// Authenticated by `CALLBACK_AUTH_KEY`, sent as `x-ins-auth-key`, when the service runs with it set
/// (and then `API_KEY` is not asked); by `API_KEY` like any route when it is not. An
/// opt-out keyword puts the number on the suppression list (its pending messages become `suppressed`
/// when they come due), an opt-in keyword takes it off, unless a keyword the phone sent later is kept (or,
/// for an opt-in, an operator put the number on the list after it was sent); every reply is kept once
/// (the provider's retry of one, same `from`, `content` and `at`, answers 200 with it)
/// and listed by `GET /inbound`.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "inbound",
    request_body = InboundRequest,
    responses(
        (status = 401, description = "`CALLBACK_AUTH_KEY` (or `API_KEY`) is set and the request lacks it", body = ErrorBody),
        (status = 201, description = "Kept, and acted on", body = InboundResponse),
        (status = 200, description = "Sent before (same `from`, `content` and `at`): the reply as first kept, nothing done again", body = InboundResponse),
        (status = 400, description = "`from`, `content` or `at` is missing or invalid", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[post("/inbound")]
pub async fn receive(
    request: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    require_callback_key(&state, &request)?;
    let body = json_body(&request, payload, MAX_BODY_BYTES).await?;
    let Value::Object(fields) = &body else {
        return Err(ApiError::MalformedBody(
            "a reply must be a JSON object with \"from\" and \"content\"".to_owned(),
        ));
    };
    let text = |name: &'static str| match fields.get(name) {
        None | Some(Value::Null) => Err(ApiError::invalid(name, "is required")),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(ApiError::invalid(name, "must be a string")),
    };
    let from = PhoneNumber::parse(text("from")?).map_err(|e| ApiError::invalid("from", e.to_string()))?;
    // A reply is kept whatever the phone put in it, but control characters other than line breaks and
    // tabs are dropped: Postgres cannot store a NUL, and the provider would retry the reply forever.
    let content: String = text("content")?
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .collect();
    if content.chars().count() > CONTENT_MAX_CHARS {
        return Err(ApiError::invalid(
            "content",
            format!("must be at most {CONTENT_MAX_CHARS} characters"),
        ));
    }
    // Kept as the provider says, ahead of our clock too: its retry says the same (the store orders
    // keywords by when a reply could have been sent, not after it arrived).
    let at = match fields.get("at") {
        None | Some(Value::Null) => Utc::now(),
        Some(Value::String(raw)) => parse_reported("at", raw)?,
        Some(_) => return Err(ApiError::invalid("at", "must be a string")),
    };
    let taken = state
        .inbound
        .take_reply(&InboundReply {
            from: from.as_ref(),
            content: &content,
            at,
            action: InboundAction::of(&content),
        })
        .await?;
    let stored = match taken {
        TakenReply::Duplicate(first) => {
            log::info!(from:% = from; "a reply the provider sent again changes nothing");
            return Ok(HttpResponse::Ok().json(InboundResponse::from(first)));
        }
        TakenReply::Outdated(stored) => {
            log::info!(from:% = from; "a reply sent before the number's latest opt-out or opt-in changes nothing");
            stored
        }
        TakenReply::Kept(stored) => {
            match stored.action.as_str() {
                "opt_out" => log::info!(from:% = from; "a reply opted the number out"),
                "opt_in" => log::info!(from:% = from; "a reply opted the number back in"),
                _ => {}
            }
            stored
        }
    };
    state
        .metrics
        .inbound_total
        .with_label_values(&[stored.action.as_str()])
        .inc();
    Ok(HttpResponse::Created().json(InboundResponse::from(stored)))
}

/// Replies from phones, newest first, with what each did.
#[utoipa::path(
    security(("api_key" = []), ("bearer" = [])),
    tag = "inbound",
    params(InboundQuery),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "A page of replies", body = InboundPage),
        (status = 400, description = "`limit` or `cursor` is invalid", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
#[get("/inbound")]
pub async fn list(state: web::Data<AppState>, query: web::Query<InboundQuery>) -> Result<HttpResponse, ApiError> {
    let limit = page::limit(query.limit.as_deref(), LIMIT_DEFAULT, LIMIT_MAX)?;
    let before = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| ApiError::invalid("cursor", "must be the next_cursor of a previous page"))
        })
        .transpose()?;
    let replies = state.inbound.list_inbound(limit + 1, before).await?;
    let (replies, next_cursor) = page::cut(replies, limit, |reply| reply.id);
    Ok(HttpResponse::Ok().json(InboundPage {
        items: replies.into_iter().map(InboundResponse::from).collect(),
        next_cursor,
    }))
}
