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
    let parsed = serde_json::from_slice::<UniqueKeys>(&body).or_else(|error| {
        // A phone's text split between two SMS parts can split an emoji, and a provider escaping every
        // UTF-16 unit then sends half of it alone (`\ud83d`), which the JSON grammar allows and serde
        // refuses. Refused, the provider would retry the reply forever; it is kept with U+FFFD there.
        match lone_surrogates_mended(&body) {
            Some(mended) => serde_json::from_slice::<UniqueKeys>(&mended).map_err(|_| error),
            None => Err(error),
        }
    });
    parsed
        .map(|value| value.0)
        .map_err(|e| ApiError::MalformedBody(format!("the request body is not valid JSON: {e}")))
}

/// `body` with each `\uXXXX` escape of a lone UTF-16 surrogate replaced by `\ufffd`, when it has one;
/// pairs, and every other escape (`\\ud800` is a backslash, then text), are left as they are.
fn lone_surrogates_mended(body: &[u8]) -> Option<Vec<u8>> {
    let unit_at = |at: usize| -> Option<u16> {
        let escape = body.get(at..at + 6)?;
        let hex = escape.strip_prefix(b"\\u")?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let mut mended = Vec::with_capacity(body.len());
    let mut changed = false;
    let mut at = 0;
    while at < body.len() {
        if body[at] != b'\\' {
            mended.push(body[at]);
            at += 1;
            continue;
        }
        let taken = match unit_at(at) {
            // A pair: both go as they are.
            Some(0xD800..=0xDBFF) if unit_at(at + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) => 12,
            Some(0xD800..=0xDFFF) => {
                mended.extend_from_slice(b"\\ufffd");
                changed = true;
                at += 6;
                continue;
            }
            Some(_) => 6,
            // Any other escape is two bytes: `\\` among them, so that what follows it is text.
            None => 2,
        };
        let end = (at + taken).min(body.len());
        mended.extend_from_slice(&body[at..end]);
        at = end;
    }
    changed.then_some(mended)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mended(body: &str) -> Option<String> {
        lone_surrogates_mended(body.as_bytes()).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn a_lone_surrogate_is_replaced_and_nothing_else_is_touched() {
        assert_eq!(mended(r#""\ud800STOP""#).as_deref(), Some(r#""\ufffdSTOP""#));
        assert_eq!(mended(r#""a\udc00""#).as_deref(), Some(r#""a\ufffd""#));
        assert_eq!(
            mended(r#""\ud83d\ud83d\ude00""#).as_deref(),
            Some(r#""\ufffd\ud83d\ude00""#)
        );
        for untouched in [r#""\ud83d\ude00""#, r#""\\ud800""#, r#""\n\u0041""#, r#""\ud8""#] {
            assert_eq!(mended(untouched), None, "{untouched}");
        }
    }
}
