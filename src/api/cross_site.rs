//! Requests that a page of another site makes the operator's browser send. Such a page cannot read our
//! answers (no CORS headers are ever sent), but it can still send a POST: `fetch(url, {method: 'POST',
//! mode: 'no-cors'})` needs nobody's permission, and with `API_KEY` unset nothing else would stop it
//! from stopping every replica. So every request but `GET`, `HEAD` and `OPTIONS` is refused:
//!
//! - with 403 `cross_site_request` when its `Origin` is not this server (the request's own host:port),
//!   or when `Sec-Fetch-Site` says `cross-site` or `same-site` and no matching `Origin` vouches for it: a
//!   page on another port of the same host is `same-site`, so that value alone does not make it ours;
//! - with 415 `unsupported_media_type` when it carries a body that is not JSON. A form, or a no-cors
//!   fetch, can only send text, urlencoded, multipart or untyped bodies, so this holds even in a browser
//!   that sends neither header.
//!
//! `same-origin` (the console), `none` (typed in the address bar) and no header at all (curl, newman,
//! other services) pass. The host:port is the one the request was sent to, as `Forwarded` or
//! `X-Forwarded-Host` report it behind a proxy: a page cannot set those headers without CORS approval.

use actix_web::{
    Error, HttpMessage,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{Method, header},
    middleware::Next,
    mime,
};

use super::{
    error::ApiError,
    request_metrics::{peer_of, route_of},
};

pub async fn refuse_cross_site(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if let Err(refusal) = check(&request) {
        if let ApiError::CrossSite(why) = &refusal {
            log::warn!(
                method:% = request.method(),
                route = route_of(request.request()).as_str(),
                peer = peer_of(&request).as_str();
                "request refused: sent by a page of another site ({why})"
            );
        }
        return Ok(request.error_response(refusal).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}

fn check(request: &ServiceRequest) -> Result<(), ApiError> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let headers = request.headers();
    let own = request.connection_info().host().to_owned();
    let origin_is_ours = match headers.get(header::ORIGIN) {
        None => false,
        Some(origin) => {
            let origin = origin.to_str().unwrap_or("(not text)");
            if !same_authority(origin, &own) {
                return Err(ApiError::CrossSite(format!(
                    "its Origin {origin} is not this server ({own})"
                )));
            }
            true
        }
    };
    let fetch_site = headers.get("sec-fetch-site").and_then(|value| value.to_str().ok());
    if let Some(site @ ("cross-site" | "same-site")) = fetch_site
        && !origin_is_ours
    {
        return Err(ApiError::CrossSite(format!(
            "Sec-Fetch-Site is {site} and no Origin names this server"
        )));
    }
    if has_body(request) && !is_json(request) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names the server reached at `host` (`host[:port]`).
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // `null`: a sandboxed frame, a file, a redirect across sites
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return false,
    };
    let bare = |authority: &str| {
        let authority = authority.to_ascii_lowercase();
        authority
            .strip_suffix(default_port)
            .map_or_else(|| authority.clone(), str::to_owned)
    };
    bare(authority) == bare(host)
}

fn has_body(request: &ServiceRequest) -> bool {
    let headers = request.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|length| length.trim() != "0")
}

/// As actix-web's JSON extractor judges it: `application/json`, `text/json` or any `+json` type.
fn is_json(request: &ServiceRequest) -> bool {
    matches!(request.mime_type(), Ok(Some(mime)) if mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON))
}

#[cfg(test)]
mod tests {
    use super::same_authority;

    #[test]
    fn an_origin_is_ours_only_for_the_same_host_and_port() {
        assert!(same_authority("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_authority("http://Example.COM", "example.com"));
        assert!(same_authority("http://example.com", "example.com:80"));
        assert!(same_authority("https://example.com:443", "example.com"));
        assert!(same_authority("http://[::1]:8080", "[::1]:8080"));
        // Another port of the same host: `same-site` for the browser, another server for us.
        assert!(!same_authority("http://127.0.0.1:3000", "127.0.0.1:8080"));
        assert!(!same_authority("http://evil.example", "127.0.0.1:8080"));
        assert!(!same_authority("http://example.com:8080", "example.com:80"));
        assert!(!same_authority("https://example.com", "example.com:80"));
        assert!(!same_authority("null", "127.0.0.1:8080"));
        assert!(!same_authority("ftp://127.0.0.1:8080", "127.0.0.1:8080"));
    }
}
