//! The access log: one line per answered request, `METHOD path?query HTTP/x status duration`, except
//! `/healthz` and `/metrics`.
//!
//! The suppression list's routes carry phone numbers where a log line would show them: in the path
//! (`DELETE /opt-outs/{to}`) and in the query (`GET /opt-outs?cursor=`, the last number listed, encoded).
//! On those, every digit but the last two is masked, as `PhoneNumber` masks a number in every other line,
//! and a `cursor` whole (`***`: its letters spell the number);
//! the route is told by its path as the router reads it, percent escapes decoded (`/%6Fpt-outs` is
//! `/opt-outs`). On every route, a query name, value or bare item with as many digits as a phone number
//! has (8) is masked so too (a client may send one in a parameter the route does not take), and so is
//! a path segment of 8 digits or more with no letter in it (a number, never an id), but a campaign's
//! label (`/campaigns/20261205`: the operator's own). A digit sent percent-encoded (`%35`) is a digit;
//! other percent escapes (`%2B` for the `+`) stay as they are.

use actix_web::{dev::ServiceRequest, middleware::Logger};

/// Where phone numbers are part of the request line.
const NUMBERED_PATH: &str = "/opt-outs";
/// Where a path segment is a label an operator chose (`/campaigns/{campaign}`): a date such as
/// `20261205` is no phone number.
const LABELLED_PATH: &str = "/campaigns/";

pub fn logger() -> Logger {
    Logger::new("%{request}xi %s %Dms")
        .custom_request_replace("request", request_line)
        .exclude("/healthz")
        .exclude("/metrics")
}

/// A query value with this many digits may be a phone number (E.164 has 8 to 15).
const PHONE_DIGITS: usize = 8;

fn request_line(request: &ServiceRequest) -> String {
    let target = match request.query_string() {
        "" => request.path().to_owned(),
        query => format!("{}?{query}", request.path()),
    };
    let route = percent_decoded(request.path());
    let target = if route.starts_with(NUMBERED_PATH) {
        mask_digits(&cursor_masked(&target))
    } else {
        let (path, query) = target
            .split_once('?')
            .map_or((target.as_str(), None), |(p, q)| (p, Some(q)));
        // The label is the segment after `/campaigns/`: the third of `"" / "campaigns" / label`.
        // Spelled as the route is: a label found by the decoded path may sit elsewhere in the raw one.
        let label = (route.starts_with(LABELLED_PATH) && path.starts_with(LABELLED_PATH)).then_some(2);
        let path = mask_numbered_segments(path, label);
        match query {
            Some(query) => format!("{path}?{}", mask_long_numbers(query)),
            None => path,
        }
    };
    format!("{} {target} {:?}", request.method(), request.version())
}

/// `target` with the value of each `cursor` parameter replaced by `***`.
fn cursor_masked(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_owned();
    };
    let query: Vec<&str> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("cursor", _)) => "cursor=***",
            _ => pair,
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// `query` with each name, value or item without a value of `PHONE_DIGITS` digits or more masked by
/// `mask_digits`.
fn mask_long_numbers(query: &str) -> String {
    let masked = |text: &str| {
        if digits_in(text) >= PHONE_DIGITS {
            mask_digits(text)
        } else {
            text.to_owned()
        }
    };
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => format!("{}={}", masked(name), masked(value)),
            None => masked(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `path` with each segment of `PHONE_DIGITS` digits or more and no letter outside a percent escape
/// masked by `mask_digits` (a message id has letters, a phone number none), but the one at `label`.
fn mask_numbered_segments(path: &str, label: Option<usize>) -> String {
    path.split('/')
        .enumerate()
        .map(|(index, segment)| {
            if Some(index) == label {
                return segment.to_owned();
            }
            let letters = segment
                .split('%')
                .enumerate()
                .any(|(i, part)| part.chars().skip(if i == 0 { 0 } else { 2 }).any(|c| c.is_alphabetic()));
            if !letters && digits_in(segment) >= PHONE_DIGITS {
                mask_digits(segment)
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` with its percent escapes decoded, as the router matches it.
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        let escaped = (bytes[at] == b'%')
            .then(|| bytes.get(at + 1..at + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                at += 3;
            }
            None => {
                decoded.push(bytes[at]);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// What is at `at` in `text`: a percent escape (and whether it is a digit's), else a plain character.
enum Unit {
    Escape { digit: bool },
    Char(char),
}

fn unit_at(text: &str, at: usize) -> Option<Unit> {
    let bytes = text.as_bytes();
    if bytes.get(at) == Some(&b'%')
        && let Some(hex) = bytes.get(at + 1..at + 3)
        && hex.iter().all(u8::is_ascii_hexdigit)
    {
        return Some(Unit::Escape {
            digit: hex[0] == b'3' && hex[1].is_ascii_digit(),
        });
    }
    text[at..].chars().next().map(Unit::Char)
}

/// How many digits `text` holds, percent-encoded ones included.
fn digits_in(text: &str) -> usize {
    let mut digits = 0;
    let mut at = 0;
    while let Some(unit) = unit_at(text, at) {
        match unit {
            Unit::Escape { digit } => {
                digits += usize::from(digit);
                at += 3;
            }
            Unit::Char(c) => {
                digits += usize::from(c.is_ascii_digit());
                at += c.len_utf8();
            }
        }
    }
    digits
}

/// `text` with every digit but the last two replaced by `*` (a percent-encoded one too), other percent
/// escapes (`%2B`) kept whole.
fn mask_digits(text: &str) -> String {
    let mut masked = String::with_capacity(text.len());
    let mut to_mask = digits_in(text).saturating_sub(2);
    let mut at = 0;
    while let Some(unit) = unit_at(text, at) {
        let c = match unit {
            Unit::Escape { digit } => {
                if digit && to_mask > 0 {
                    masked.push('*');
                    to_mask -= 1;
                } else {
                    masked.push_str(&text[at..at + 3]);
                }
                at += 3;
                continue;
            }
            Unit::Char(c) => c,
        };
        // Multi-byte characters are copied whole: only ASCII digits are masked.
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
            "GET /opt-outs?limit=50&cursor=*** HTTP/1.1"
        );
        // The cursor spells the last number listed (base64url of `+905551111111`).
        assert_eq!(
            line(Method::GET, "/opt-outs?cursor=KzkwNTU1MTExMTExMQ&limit=1"),
            "GET /opt-outs?cursor=***&limit=1 HTTP/1.1"
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
    fn percent_encoded_digits_are_digits() {
        use actix_web::http::Method;
        assert_eq!(
            line(Method::DELETE, "/opt-outs/%2B%39%30%35%35%35%31%31%31%32%32%37%37"),
            "DELETE /opt-outs/%2B**********%37%37 HTTP/1.1"
        );
    }

    #[test]
    fn a_query_value_as_long_as_a_phone_number_is_masked_on_every_route() {
        use actix_web::http::Method;
        assert_eq!(
            line(Method::GET, "/messages?status=pending&to=%2B905551112233&limit=20"),
            "GET /messages?status=pending&to=%2B**********33&limit=20 HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/receipts?cursor=%2B90%35551112244"),
            "GET /receipts?cursor=%2B**********44 HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/events?cursor=1234567"),
            "GET /events?cursor=1234567 HTTP/1.1"
        );
    }

    #[test]
    fn a_number_is_masked_however_the_route_is_spelled_and_wherever_it_is_sent() {
        use actix_web::http::Method;
        // The router decodes `%6F`: this is the suppression list's route.
        assert_eq!(
            line(Method::DELETE, "/%6Fpt-outs/+905551112233"),
            "DELETE /%6Fpt-outs/+**********33 HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/messages/sent?+905551112233&limit=5"),
            "GET /messages/sent?+**********33&limit=5 HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/anything/%2B905551112233/else"),
            "GET /anything/%2B**********33/else HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/messages?905551112233=1"),
            "GET /messages?**********33=1 HTTP/1.1"
        );
        // Ids have letters in them, and campaign labels are the operator's: logged as they came.
        for kept in [
            "/campaigns/promo-20261205",
            "/campaigns/2026-12-05/pause",
            "/messages/0190a1b2-0000-7000-8000-123456789012",
        ] {
            assert_eq!(line(Method::GET, kept), format!("GET {kept} HTTP/1.1"));
        }
        // Only the label: a number elsewhere under `/campaigns/` is masked, the route spelled otherwise too.
        assert_eq!(
            line(Method::GET, "/campaigns/promo/905551112233"),
            "GET /campaigns/promo/**********33 HTTP/1.1"
        );
        assert_eq!(
            line(Method::GET, "/campaigns%2Fx/905551112233"),
            "GET /campaigns%2Fx/**********33 HTTP/1.1"
        );
    }

    #[test]
    fn a_lone_percent_and_non_ascii_text_are_copied() {
        assert_eq!(mask_digits("/%2x1234é5"), "/%*x***4é5");
    }
}
