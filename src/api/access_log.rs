//! The access log: one line per answered request, `METHOD path?query HTTP/x status duration`, except
//! `/healthz` and `/metrics`.
//!
//! The suppression list's routes carry phone numbers where a log line would show them: in the path
//! (`DELETE /opt-outs/{to}`) and in the query (`GET /opt-outs?cursor=`, the last number's digits). On
//! those, every digit but the last two is masked, as `PhoneNumber` masks a number in every other line;
//! percent escapes (`%2B` for the `+`) stay as they are.

use actix_web::{dev::ServiceRequest, middleware::Logger};

/// Where phone numbers are part of the request line.
const NUMBERED_PATH: &str = "/opt-outs";

pub fn logger() -> Logger {
    Logger::new("%{request}xi %s %Dms")
        .custom_request_replace("request", request_line)
        .exclude("/healthz")
        .exclude("/metrics")
}

fn request_line(request: &ServiceRequest) -> String {
    let target = match request.query_string() {
        "" => request.path().to_owned(),
        query => format!("{}?{query}", request.path()),
    };
    let target = match target.strip_prefix(NUMBERED_PATH) {
        Some(rest) => format!("{NUMBERED_PATH}{}", mask_digits(rest)),
        None => target,
    };
    format!("{} {target} {:?}", request.method(), request.version())
}

/// `text` with every digit but the last two replaced by `*`, percent escapes (`%2B`) kept whole.
fn mask_digits(text: &str) -> String {
    let bytes = text.as_bytes();
    let is_escape = |at: usize| {
        bytes[at] == b'%'
            && bytes
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    };
    let mut digits = 0;
    let mut at = 0;
    while at < bytes.len() {
        if is_escape(at) {
            at += 3;
            continue;
        }
        digits += usize::from(bytes[at].is_ascii_digit());
        at += 1;
    }
    let mut masked = String::with_capacity(text.len());
    let mut to_mask = digits.saturating_sub(2);
    let mut at = 0;
    while at < bytes.len() {
        if is_escape(at) {
            masked.push_str(&text[at..at + 3]);
            at += 3;
            continue;
        }
        // Multi-byte characters are copied whole: only ASCII digits are masked.
        let Some(c) = text[at..].chars().next() else { break };
        if c.is_ascii_digit() && to_mask > 0 {
            masked.push('*');
            to_mask -= 1;
        } else {
            masked.push(c);
        }
        at += c.len_utf8();
    }
    masked
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn line(method: actix_web::http::Method, uri: &str) -> String {
        request_line(&TestRequest::default().method(method).uri(uri).to_srv_request())
    }

    #[test]
    fn numbers_on_the_suppression_list_routes_are_masked_but_their_last_two_digits() {
        use actix_web::http::Method;
        assert_eq!(
            line(Method::DELETE, "/opt-outs/%2B905551111111"),
            "DELETE /opt-outs/%2B**********11 HTTP/1.1"
        );
        assert_eq!(
            line(Method::DELETE, "/opt-outs/+90%20555-111-11-42"),
            "DELETE /opt-outs/+**%20***-***-**-42 HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/opt-outs?limit=50&cursor=905551111111"),
            "GET /opt-outs?limit=**&cursor=**********11 HTTP/1.1"
        );
        assert_eq!(line(Method::GET, "/opt-outs"), "GET /opt-outs HTTP/1.1");
    }

    #[test]
    fn other_routes_are_logged_as_they_came() {
        use actix_web::http::Method;
        let id = "/messages/0190a1b2-0000-7000-8000-123456789012";
        assert_eq!(line(Method::GET, id), format!("GET {id} HTTP/1.1"));
        assert_eq!(
            line(Method::GET, "/messages?status=sent&limit=20"),
            "GET /messages?status=sent&limit=20 HTTP/1.1"
        );
    }

    #[test]
    fn a_lone_percent_and_non_ascii_text_are_copied() {
        assert_eq!(mask_digits("/%2x1234é5"), "/%*x***4é5");
    }
}
