//! The provider's HTTP contract (`shared/provider-contract.md`): the request we send, the answer we
//! expect, and how every possible answer sorts into one of three outcomes.

use std::time::{Duration, SystemTime};

use awc::http::{StatusCode, header::HeaderMap};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::ProviderMessageId;

/// Carries `WEBHOOK_AUTH_KEY`.
pub const AUTH_HEADER: &str = "x-ins-auth-key";
/// Carries our message id, the same on every attempt, so the provider can drop a repeated send.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// How much of an error body is kept as the reason.
const REASON_BODY_CHARS: usize = 200;

#[derive(Debug, Serialize)]
pub struct SendRequest<'a> {
    pub to: &'a str,
    pub content: &'a str,
}

/// `{"message": "Accepted", "messageId": "…"}`; both fields are optional so an odd body never turns an
/// accepted message into a resend.
#[derive(Debug, Deserialize)]
struct AcceptedBody {
    #[serde(rename = "messageId")]
    message_id: Option<serde_json::Value>,
}

/// What one POST to the provider came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 2xx: the provider has the message. Final, whatever else the body says.
    Accepted {
        status: u16,
        provider_message_id: Option<ProviderMessageId>,
        /// Why the id is missing, when it is.
        body_problem: Option<String>,
        sent_at: DateTime<Utc>,
    },
    /// 408, 429, 5xx, timeouts and connection errors: the message may or may not have arrived; send it
    /// again later under the same idempotency key.
    RetryLater {
        reason: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: this request will never succeed.
    Rejected { reason: String, status: u16 },
}

impl Outcome {
    /// The label of `sends_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::RetryLater { .. } => "retry",
            Self::Rejected { .. } => "rejected",
        }
    }

    /// The provider's answer, sorted.
    pub fn from_response(status: StatusCode, headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Self {
        if status.is_success() {
            let (provider_message_id, body_problem) = match parse_message_id(body) {
                Ok(id) => (Some(id), None),
                Err(problem) => (None, Some(problem)),
            };
            return Self::Accepted {
                status: status.as_u16(),
                provider_message_id,
                body_problem,
                sent_at: now,
            };
        }
        let reason = format!("provider answered {status}: {}", body_excerpt(body));
        let retryable = status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
            // A 1xx or 3xx we did not follow is the provider's or the URL's problem, not the message's.
            || !status.is_client_error();
        if retryable {
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now.into()));
            Self::RetryLater {
                reason,
                status: Some(status.as_u16()),
                retry_after,
            }
        } else {
            Self::Rejected {
                reason,
                status: status.as_u16(),
            }
        }
    }

    /// The provider's HTTP status, when it answered.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Accepted { status, .. } | Self::Rejected { status, .. } => Some(*status),
            Self::RetryLater { status, .. } => *status,
        }
    }

    /// No answer at all: a timeout or a connection error.
    pub fn from_transport_error(error: &str) -> Self {
        Self::RetryLater {
            reason: format!("no answer from the provider: {error}"),
            status: None,
            retry_after: None,
        }
    }
}

fn parse_message_id(body: &[u8]) -> Result<ProviderMessageId, String> {
    let parsed: AcceptedBody =
        serde_json::from_slice(body).map_err(|e| format!("body is not the expected JSON: {e}"))?;
    let raw = match parsed.message_id {
        Some(serde_json::Value::String(s)) => s,
        // Some providers send numeric ids; keep them rather than lose them.
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("messageId is not a string: {other}")),
        None => return Err("body has no messageId".to_owned()),
    };
    ProviderMessageId::parse(&raw).map_err(|e| format!("messageId {e}"))
}

fn body_excerpt(body: &[u8]) -> String {
    // Control characters (a NUL above all, which Postgres refuses in text) never reach the database.
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut excerpt: String = text.chars().take(REASON_BODY_CHARS).collect();
    if text.chars().count() > REASON_BODY_CHARS {
        excerpt.push('…');
    }
    excerpt
}

/// `Retry-After` as seconds (`120`) or as an HTTP date; a date in the past means now.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use awc::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn outcome(status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Outcome::from_response(StatusCode::from_u16(status).unwrap(), &map, body.as_bytes(), Utc::now())
    }

    #[test]
    fn a_202_with_the_contract_body_is_accepted_with_its_id() {
        let o = outcome(202, &[], r#"{"message":"Accepted","messageId":"67f2f8a8"}"#);
        let Outcome::Accepted {
            provider_message_id,
            body_problem,
            ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(provider_message_id.unwrap().as_ref(), "67f2f8a8");
        assert_eq!(body_problem, None);
    }

    #[test]
    fn a_2xx_with_an_odd_body_is_still_accepted() {
        for body in [
            "",
            "not json",
            r#"{"message":"ok"}"#,
            r#"{"messageId":""}"#,
            r#"{"messageId":[1]}"#,
        ] {
            let o = outcome(200, &[], body);
            let Outcome::Accepted {
                provider_message_id,
                body_problem,
                ..
            } = o
            else {
                panic!("{body}: {o:?}")
            };
            assert!(provider_message_id.is_none(), "{body}");
            assert!(body_problem.is_some(), "{body}");
        }
        let o = outcome(201, &[], r#"{"messageId":42}"#);
        let Outcome::Accepted {
            provider_message_id, ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(provider_message_id.unwrap().as_ref(), "42");
    }

    #[test]
    fn transient_statuses_are_retried_and_other_4xx_rejected() {
        for status in [408, 429, 500, 502, 503, 504, 302] {
            assert_eq!(outcome(status, &[], "").label(), "retry", "{status}");
        }
        for status in [400, 401, 403, 404, 409, 422] {
            assert_eq!(outcome(status, &[], "bad").label(), "rejected", "{status}");
        }
    }

    #[test]
    fn retry_after_is_read_in_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        let in_90s = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&in_90s, now), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);

        let o = outcome(429, &[("retry-after", "7")], "");
        let Outcome::RetryLater {
            retry_after, status, ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!((retry_after, status), (Some(Duration::from_secs(7)), Some(429)));
    }

    #[test]
    fn control_characters_never_reach_the_reason() {
        let o = outcome(500, &[], "bad\u{0}thing\r\n");
        let Outcome::RetryLater { reason, .. } = o else {
            panic!("{o:?}")
        };
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        let o = outcome(202, &[], r#"{"messageId":"a\u0000b"}"#);
        let Outcome::Accepted {
            provider_message_id, ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert!(provider_message_id.is_none());
    }

    #[test]
    fn the_reason_keeps_a_short_excerpt_of_the_body() {
        let o = outcome(400, &[], &"x".repeat(1000));
        let Outcome::Rejected { reason, status } = o else {
            panic!("{o:?}")
        };
        assert_eq!(status, 400);
        assert!(reason.chars().count() < 260, "{reason}");
        assert!(reason.starts_with("provider answered 400 Bad Request: xxx"), "{reason}");
    }
}
