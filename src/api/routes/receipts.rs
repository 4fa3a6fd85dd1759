//! Delivery receipts: the provider's `POST /receipts` (one receipt, or an array of up to
//! `MAX_RECEIPTS`), authenticated by `CALLBACK_AUTH_KEY` instead of `API_KEY`, and the operators'
//! `GET /receipts`. A receipt is stored, then answered 202; the receipt applier settles it behind (see
//! `dispatch/receipt_applier.rs`), so the provider's wait never depends on matching.

use actix_web::{HttpRequest, HttpResponse, web};
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
        time::parse_report_time,
    },
    domain::{ERROR_MAX_CHARS, ProviderMessageId, Receipt, ReceiptStatus},
    store::{ReceiptFilter, ReceiptOutcome, StoredReceipt},
};

/// The most receipts one request may carry.
pub const MAX_RECEIPTS: usize = 1_000;
/// The largest body accepted: a thousand receipts of a few hundred bytes each.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const LIST_LIMIT_DEFAULT: u32 = 100;
const LIST_LIMIT_MAX: u32 = 1_000;

/// A delivery receipt, as the provider sends it (its contract's "Delivery receipts").
#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"messageId": "67f2f8a8-ea58-4ed0-a6f9-ff217df4d849", "status": "delivered",
                          "at": "2026-12-02T10:00:03Z", "error": null}))]
#[serde(rename_all = "camelCase")]
pub struct ReceiptRequest {
    /// The provider's id from its 202 answer. A whole number within 64 bits is taken too, as its digits
    /// (a provider that answers with numeric ids); a longer one must come as a string.
    #[schema(example = "67f2f8a8-ea58-4ed0-a6f9-ff217df4d849", min_length = 1, max_length = 255)]
    pub message_id: String,
    /// `delivered` or `undelivered` (final), `accepted` or `buffered` (on the way).
    pub status: ReceiptStatus,
    /// When the carrier reported it, RFC 3339.
    #[schema(example = "2026-12-02T10:00:03Z")]
    pub at: DateTime<Utc>,
    /// The carrier's code or text, for `undelivered` (a string or a number; cut to 255 characters).
    #[schema(value_type = Option<String>, example = json!(null))]
    pub error: Option<Value>,
}

/// What was stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptsAccepted {
    /// Receipts stored, to be applied.
    #[schema(example = 1)]
    stored: usize,
}

/// Reads one receipt or an array of them, naming the receipt (by index, in an array) and the field at
/// fault.
fn parse_receipts(body: &Value) -> Result<Vec<Receipt>, ApiError> {
    match body {
        Value::Array(items) if items.is_empty() => Err(ApiError::invalid("receipts", "the array is empty")),
        Value::Array(items) if items.len() > MAX_RECEIPTS => Err(ApiError::invalid(
            "receipts",
            format!("at most {MAX_RECEIPTS} receipts per request, got {}", items.len()),
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                parse_receipt(item).map_err(|error| match error {
                    ApiError::InvalidField { field, message } => ApiError::InvalidField {
                        field,
                        message: format!("receipt {index}: {message}"),
                    },
                    other => other,
                })
            })
            .collect(),
        item => Ok(vec![parse_receipt(item)?]),
    }
}

fn parse_receipt(item: &Value) -> Result<Receipt, ApiError> {
    let Value::Object(fields) = item else {
        return Err(ApiError::invalid(
            "receipts",
            "a receipt must be a JSON object with \"messageId\", \"status\" and \"at\"",
        ));
    };
    let text = |name: &'static str| match fields.get(name) {
        None | Some(Value::Null) => Err(ApiError::invalid(name, "is required")),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(ApiError::invalid(name, "must be a string")),
    };
    // A provider answering its 202 with a numeric id (kept digit for digit, `provider.rs`) names it as
    // a number in its receipts too. A whole number in 64 bits prints as it was written; a longer one
    // or a fraction would not, so it must come as a string.
    let message_id = match fields.get("messageId") {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(Value::Number(_)) => {
            return Err(ApiError::invalid(
                "messageId",
                "a number must be a whole number within 64 bits; send a longer id as a string",
            ));
        }
        _ => text("messageId")?.to_owned(),
    };
    let provider_message_id =
        ProviderMessageId::parse(&message_id).map_err(|e| ApiError::invalid("messageId", e.to_string()))?;
    let status = text("status")?
        .parse::<ReceiptStatus>()
        .map_err(|e| ApiError::invalid("status", e.to_string()))?;
    // A report is not made in the future: an `at` ahead of our clock (a carrier's skew, a bad year)
    // would outrank every later report of the message and stay in the last hour's delivery rate.
    let reported_at = parse_report_time("at", text("at")?)?;
    let error = match fields.get("error") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err(ApiError::invalid("error", "must be a string, a number or null")),
    };
    // The carrier's text is stored and shown, never interpreted: kept short and printable.
    let error = error
        .map(|e| {
            e.chars()
                .filter(|c| !c.is_control())
                .take(ERROR_MAX_CHARS)
                .collect::<String>()
        })
        .filter(|e| !e.is_empty());
    Ok(Receipt {
        provider_message_id,
        status,
        reported_at,
        error,
    })
}

/// Take delivery receipts from the provider.
///
/// One receipt or a JSON array of up to 1,000, authenticated by `x-ins-auth-key: <CALLBACK_AUTH_KEY>`
/// (not `API_KEY`). Each is stored and answered 202 at once, then applied to its message behind: a
/// receipt that arrives before its message is recorded sent waits for it, duplicates change nothing, and a
/// final state (`delivered`, `undelivered`) is never undone. A malformed receipt refuses the whole
/// request, naming the receipt and the field.
#[utoipa::path(
    post,
    path = "/receipts",
    security(("callback_key" = [])),
    tag = "receipts",
    request_body(content = Vec<ReceiptRequest>, description = "One receipt, or an array of 1 to 1,000"),
    responses(
        (status = 202, description = "Stored, to be applied", body = ReceiptsAccepted),
        (status = 400, description = "A receipt is malformed: the field is named, and the receipt's index in an array", body = ErrorBody,
         example = json!({"error": "invalid_field", "message": "status: receipt 3: must be one of accepted, buffered, delivered, undelivered, got \"sent\"", "field": "status"})),
        (status = 401, description = "`x-ins-auth-key` is missing or wrong", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Body not sent as application/json", body = ErrorBody),
        (status = 503, description = "`CALLBACK_AUTH_KEY` is not set (receipts are not tracked), or the database is unavailable", body = ErrorBody),
    )
)]
pub async fn receive(
    request: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    // The key before the body: a caller without it learns nothing about what a receipt must hold.
    require_callback_key(&state, &request)?;
    let body = json_body(&request, payload, MAX_BODY_BYTES).await?;
    let receipts = parse_receipts(&body)?;
    let stored = receipts.len();
    let statuses: Vec<ReceiptStatus> = receipts.iter().map(|receipt| receipt.status).collect();
    state.pipeline.store_receipts(receipts).await?;
    for status in statuses {
        state.metrics.receipts_total.with_label_values(&[status.as_str()]).inc();
    }
    log::info!(receipts = stored; "delivery receipts stored");
    Ok(HttpResponse::Accepted().json(ReceiptsAccepted { stored }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsQuery {
    /// `false`: receipts applied to no message (`unmatched`, `ambiguous`); `true`: those that found
    /// theirs (`applied`, `ignored`); omitted: every receipt, pending ones too.
    #[param(value_type = Option<bool>, example = false)]
    matched: Option<String>,
    /// Items per page, 1 to 1,000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, example = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page; omit it for the first page.
    #[param(pattern = r"^$|^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// A stored receipt and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptResponse {
    /// The order receipts arrived in.
    #[schema(example = 42)]
    seq: i64,
    #[schema(example = "67f2f8a8-ea58-4ed0-a6f9-ff217df4d849")]
    provider_message_id: String,
    status: ReceiptStatus,
    /// When the carrier reported it.
    at: DateTime<Utc>,
    error: Option<String>,
    received_at: DateTime<Utc>,
    outcome: ReceiptOutcome,
    /// The message it matched (`applied`, `ignored`).
    message_id: Option<Uuid>,
    settled_at: Option<DateTime<Utc>>,
}

impl From<StoredReceipt> for ReceiptResponse {
    fn from(r: StoredReceipt) -> Self {
        Self {
            seq: r.seq,
            provider_message_id: r.provider_message_id,
            status: r.status,
            at: r.reported_at,
            error: r.error,
            received_at: r.received_at,
            outcome: r.outcome,
            message_id: r.message_id,
            settled_at: r.settled_at,
        }
    }
}

/// One page of receipts.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReceiptPage {
    items: Vec<ReceiptResponse>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(example = "42")]
    next_cursor: Option<String>,
}

/// Stored delivery receipts, newest first.
///
/// `matched=false` lists the receipts applied to no message: `unmatched` (no sent message had their id
/// within `RECEIPT_MATCH_WINDOW`) and `ambiguous` (their id names several messages).
#[utoipa::path(
    get,
    path = "/receipts",
    security(("api_key" = []), ("bearer" = [])),
    tag = "receipts",
    params(ReceiptsQuery),
    responses(
        (status = 401, description = "`API_KEY` is set and the request lacks it", body = ErrorBody),
        (status = 200, description = "A page of receipts", body = ReceiptPage),
        (status = 400, description = "`matched`, `limit` or `cursor` is invalid", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    )
)]
pub async fn list(state: web::Data<AppState>, query: web::Query<ReceiptsQuery>) -> Result<HttpResponse, ApiError> {
    let filter = match query.matched.as_deref().map(str::trim) {
        None | Some("") => ReceiptFilter::All,
        Some("true") => ReceiptFilter::Matched,
        Some("false") => ReceiptFilter::NotMatched,
        Some(_) => return Err(ApiError::invalid("matched", "must be true or false")),
    };
    let limit = page::limit(query.limit.as_deref(), LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX)?;
    let before = page::seq_cursor(query.cursor.as_deref())?;
    let receipts = state.receipts.list_receipts(filter, limit + 1, before).await?;
    let (receipts, next_cursor) = page::cut(receipts, limit, |r| r.seq.to_string());
    let items = receipts.into_iter().map(ReceiptResponse::from).collect();
    Ok(HttpResponse::Ok().json(ReceiptPage { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(error: ApiError) -> (std::borrow::Cow<'static, str>, String) {
        match error {
            ApiError::InvalidField { field, message } => (field, message),
            other => panic!("not a field error: {other}"),
        }
    }

    #[test]
    fn one_receipt_or_an_array_is_read_and_a_bad_one_named_with_its_index() {
        let one =
            json!({"messageId": " p-1 ", "status": "undelivered", "at": "2026-12-02T10:00:03+01:00", "error": 34});
        let parsed = parse_receipts(&one).unwrap();
        assert_eq!(parsed[0].provider_message_id.as_ref(), "p-1");
        assert_eq!(parsed[0].status, ReceiptStatus::Undelivered);
        assert_eq!(parsed[0].reported_at.to_rfc3339(), "2026-12-02T09:00:03+00:00");
        assert_eq!(parsed[0].error.as_deref(), Some("34"));
        let good = json!({"messageId": "p", "status": "delivered", "at": "2026-12-02T10:00:03Z"});
        assert_eq!(parse_receipts(&json!([good, good])).unwrap().len(), 2);
        let bad = json!({"messageId": "p", "status": "sent", "at": "2026-12-02T10:00:03Z"});
        let (field, message) = field_of(parse_receipts(&json!([good, bad])).unwrap_err());
        assert_eq!(field, "status");
        assert!(message.starts_with("receipt 1: must be one of"), "{message}");
        let (field, _) = field_of(parse_receipts(&json!({"status": "delivered", "at": "x"})).unwrap_err());
        assert_eq!(field, "messageId");
        let (field, _) =
            field_of(parse_receipts(&json!({"messageId": "p", "status": "delivered", "at": "yesterday"})).unwrap_err());
        assert_eq!(field, "at");
        let (field, _) = field_of(parse_receipts(&json!([])).unwrap_err());
        assert_eq!(field, "receipts");
        let (field, message) = field_of(parse_receipts(&Value::Array(vec![good; MAX_RECEIPTS + 1])).unwrap_err());
        assert_eq!((field.as_ref(), message.contains("at most 1000")), ("receipts", true));
    }
}
