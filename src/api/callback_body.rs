//! The body of a provider's callback (`POST /receipts`, `POST /inbound`), read by hand once its key has
//! been checked: an extractor would read it before the handler runs, so a caller without the key could
//! make the server buffer up to the route's limit, and would learn from a 413 or 400 what a
//! request must look like before it learned it lacks the key.

use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde_json::Value;

use super::{error::ApiError, json_value::UniqueKeys};

/// The request's JSON body, at most `limit` bytes; `ApiError`s as the JSON extractor answers them (413,
/// 400, and 408 for a body that stalls, see `body_timeout.rs`). A body of another type never gets here:
/// `cross_site.rs` answers it 415 first.
pub async fn json_body(request: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Value, ApiError> {
    let announced = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::BodyTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice::<UniqueKeys>(&body)
        .map(|value| value.0)
        .map_err(|e| ApiError::MalformedBody(format!("the request body is not valid JSON: {e}")))
}
