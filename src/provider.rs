//! The provider's HTTP contract (`shared/provider-contract.md`): the request we send, the answer we
//! expect, and how every possible answer sorts into one of three outcomes.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::{StatusCode, header::HeaderMap};
use serde::{Deserialize, Serialize};

use crate::domain::{ProviderMessageId, mask_numbers_in};

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
struct AcceptedBody<'a> {
    /// Raw, so that a numeric id keeps every digit: through `Value`, 123456789012345678901234567890
    /// became 1.2345678901234568e+29.
    #[serde(rename = "messageId", borrow)]
    message_id: Option<&'a serde_json::value::RawValue>,
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
    /// 408, 5xx, timeouts and connection errors: the message may or may not have arrived; send it
    /// again later under the same idempotency key.
    RetryLater {
        reason: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// 429: the provider refused it for our pace, not for what it holds. It arrived nowhere; send it
    /// again, after `Retry-After` when the provider named one.
    Throttled {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the provider refuses our credentials (`WEBHOOK_AUTH_KEY`), whatever the message
    /// holds. It arrived nowhere.
    Unauthorized { reason: String, status: u16 },
    /// Any other 4xx: this request will never succeed.
    Rejected { reason: String, status: u16 },
}

impl Outcome {
    /// The label of `sends_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Accepted { .. } => "accepted",
            Self::RetryLater { .. } => "retry",
            Self::Throttled { .. } => "throttled",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Rejected { .. } => "rejected",
        }
    }

    /// The provider's answer, sorted. `body` is the answer's body, or why it could not be read (too large,
    /// too slow): a 2xx is accepted either way, and says why its id is missing.
    pub fn from_response(
        status: StatusCode,
        headers: &HeaderMap,
        body: Result<&[u8], &str>,
        now: DateTime<Utc>,
    ) -> Self {
        if status.is_success() {
            let (provider_message_id, body_problem) = match body.map_err(str::to_owned).and_then(parse_message_id) {
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
        let reason = match body {
            Ok(body) => format!("provider answered {status}: {}", body_excerpt(body)),
            Err(problem) => format!("provider answered {status} ({problem})"),
        };
        let retry_after = || {
            headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, now.into()))
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Self::Throttled {
                reason,
                retry_after: retry_after(),
            };
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Self::Unauthorized {
                reason,
                status: status.as_u16(),
            };
        }
        let retryable = status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
            // A 3xx we did not follow is the provider's or the URL's problem, not the message's. (Interim 1xx
            // answers never get here: the HTTP client reads on to the final one.)
            || !status.is_client_error();
        if retryable {
            let retry_after = retry_after();
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
            Self::Accepted { status, .. } | Self::Rejected { status, .. } | Self::Unauthorized { status, .. } => {
                Some(*status)
            }
            Self::RetryLater { status, .. } => *status,
            Self::Throttled { .. } => Some(StatusCode::TOO_MANY_REQUESTS.as_u16()),
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
    if body.is_empty() {
        return Err("body is empty".to_owned());
    }
    let parsed: AcceptedBody =
        serde_json::from_slice(body).map_err(|e| format!("body is not the expected JSON: {e}"))?;
    let Some(id) = parsed.message_id else {
        return Err("body has no messageId".to_owned());
    };
    let raw = match id.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(id.get()).map_err(|e| format!("messageId {e}"))?,
        // Some providers send numeric ids; keep them, digit for digit, rather than lose them.
        Some(b'-' | b'0'..=b'9') => id.get().to_owned(),
        // Any JSON at all, up to the whole body: cut and masked as an error body is.
        _ => {
            return Err(format!(
                "messageId is not a string: {}",
                body_excerpt(id.get().as_bytes())
            ));
        }
    };
    ProviderMessageId::parse(&raw).map_err(|e| format!("messageId {e}"))
}

fn body_excerpt(body: &[u8]) -> String {
    // Control characters (a NUL above all, which Postgres refuses in text) never reach the database, and
    // a phone number the provider echoes back reaches no log line (masked before the cut, which could
    // leave too few of its digits to look like one).
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = mask_numbers_in(&text);
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
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still "a very long time", not no advice.
        return Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};

    use super::*;

    fn outcome(status: u16, headers: &[(&str, &str)], body: &str) -> Outcome {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        Outcome::from_response(
            StatusCode::from_u16(status).unwrap(),
            &map,
            Ok(body.as_bytes()),
            Utc::now(),
        )
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
        // A provider's odd id is cut and masked like any body it sends: no phone number, no 64 KiB.
        let echo = format!(
            r#"{{"messageId":{{"to":"+905551112233","pad":"{}"}}}}"#,
            "x".repeat(5000)
        );
        let Outcome::Accepted { body_problem, .. } = outcome(202, &[], &echo) else {
            panic!("accepted")
        };
        let problem = body_problem.unwrap();
        assert!(problem.contains("+90555****33"), "{problem}");
        assert!(
            !problem.contains("905551112233") && problem.chars().count() < 300,
            "{problem}"
        );
        let o = outcome(201, &[], r#"{"messageId":42}"#);
        let Outcome::Accepted {
            provider_message_id, ..
        } = o
        else {
            panic!("{o:?}")
        };
        assert_eq!(provider_message_id.unwrap().as_ref(), "42");
        for (body, id) in [
            (
                r#"{"messageId":123456789012345678901234567890}"#,
                "123456789012345678901234567890",
            ),
            (r#"{"messageId": 1.50}"#, "1.50"),
            (r#"{"messageId":"a\"b"}"#, "a\"b"),
        ] {
            let Outcome::Accepted {
                provider_message_id, ..
            } = outcome(202, &[], body)
            else {
                panic!("{body}")
            };
            assert_eq!(provider_message_id.unwrap().as_ref(), id, "{body}");
        }
    }

    #[test]
    fn transient_statuses_are_retried_and_other_4xx_rejected() {
        for status in [408, 500, 502, 503, 504, 302] {
            assert_eq!(outcome(status, &[], "").label(), "retry", "{status}");
        }
        assert_eq!(outcome(429, &[], "").label(), "throttled");
        for status in [400, 404, 409, 422] {
            assert_eq!(outcome(status, &[], "bad").label(), "rejected", "{status}");
        }
        for status in [401, 403] {
            assert_eq!(outcome(status, &[], "bad key").label(), "unauthorized", "{status}");
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
        assert_eq!(
            parse_retry_after("99999999999999999999", now),
            Some(Duration::from_secs(u64::MAX)),
            "past a u64 is still a long time, not no advice"
        );

        let o = outcome(429, &[("retry-after", "7")], "");
        let Outcome::Throttled { retry_after, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(
            (retry_after, o.http_status()),
            (Some(Duration::from_secs(7)), Some(429))
        );
        let o = outcome(503, &[("retry-after", "9")], "");
        let Outcome::RetryLater { retry_after, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(retry_after, Some(Duration::from_secs(9)));
    }

    #[test]
    fn an_unreadable_body_says_what_happened() {
        let problem = "its body exceeded 64 KiB";
        let o = Outcome::from_response(StatusCode::ACCEPTED, &HeaderMap::new(), Err(problem), Utc::now());
        let Outcome::Accepted { body_problem, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(body_problem.as_deref(), Some(problem));
        let o = Outcome::from_response(StatusCode::BAD_GATEWAY, &HeaderMap::new(), Err(problem), Utc::now());
        let Outcome::RetryLater { reason, .. } = o else {
            panic!("{o:?}")
        };
        assert_eq!(reason, "provider answered 502 Bad Gateway (its body exceeded 64 KiB)");
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

    #[test]
    fn a_number_the_provider_echoes_in_its_refusal_is_masked_in_the_reason() {
        let o = outcome(
            400,
            &[],
            r#"{"error":"'To' number +905551112233 is not a mobile number","code":21614}"#,
        );
        let Outcome::Rejected { reason, .. } = o else {
            panic!("{o:?}")
        };
        assert!(reason.contains("'To' number +90555****33 is not"), "{reason}");
        assert!(reason.contains("21614"), "{reason}");
    }
}
