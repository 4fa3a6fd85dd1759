//! `API_KEY`: when set, every route but health, metrics, docs and the console page needs it, sent as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`. Without `API_KEY` the API is open (start-up
//! warns), as before.
//!
//! Each refusal is a `warn` line (method, route template, peer address; never the key presented) and
//! counts in `auth_failures_total`, so that guessing shows. The refusal is answered here rather than
//! returned as an error, so the access log and the request metrics see it like any other answer.

use actix_web::{
    Error,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};

use super::{
    AppState, callback_auth,
    error::ApiError,
    request_metrics::{peer_of, route_of},
};

/// Paths anyone may read: probes, scrapes, the docs and the console page's shell (whose own calls
/// carry the key).
const OPEN_PATHS: &[&str] = &[
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/swagger",
    "/swagger-ui",
    "/docs",
    "/console",
];
/// ... and everything under these.
const OPEN_FOLDERS: &[&str] = &["/swagger/", "/swagger-ui/", "/api-docs/", "/console/"];

pub async fn require_api_key(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(request).await?.map_into_left_body());
    };
    let path = request.path();
    // The provider's callbacks carry CALLBACK_AUTH_KEY instead, checked by their handlers.
    let open = OPEN_PATHS.contains(&path)
        || OPEN_FOLDERS.iter().any(|folder| path.starts_with(folder))
        || callback_auth::skips_api_key(request.method(), path, state.callback_auth_key.is_some());
    // Only a request a page sent (browsers add `Origin` to every request but GET and HEAD; servers and
    // providers send none), and by its raw `Host`: the page itself may add `X-Forwarded-Host`.
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .or_else(|| request.uri().authority().map(|authority| authority.as_str()))
        .unwrap_or_default()
        .to_owned();
    let from_a_page = request.headers().contains_key(header::ORIGIN);
    if state.api_key.is_none() && !open && from_a_page && !rebinding_proof(&host) {
        log::warn!(
            method:% = request.method(),
            route = route_of(request.request()).as_str(),
            peer = peer_of(&request).as_str();
            "request refused: the API is open (API_KEY unset) and was reached by a host name"
        );
        return Ok(request
            .error_response(ApiError::CrossSite(format!(
                "with API_KEY unset a page may call the API only by an IP address, localhost or a \
                     one-label name, not {host}: a page of another site can point a name it owns at this \
                     server (DNS rebinding); set API_KEY to use the console by that name"
            )))
            .map_into_right_body());
    }
    if let Some(expected) = state.api_key.as_ref().filter(|_| !open) {
        let headers = request.headers();
        let presented = headers.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
        });
        if !presented.is_some_and(|key| expected.matches(key.trim())) {
            state.metrics.auth_failures_total.inc();
            log::warn!(
                method:% = request.method(),
                route = route_of(request.request()).as_str(),
                peer = peer_of(&request).as_str(),
                key = if presented.is_some() { "wrong" } else { "missing" };
                "request refused: API key missing or wrong"
            );
            return Ok(request.error_response(ApiError::Unauthorized).map_into_right_body());
        }
    }
    Ok(next.call(request).await?.map_into_left_body())
}

/// Whether a request's `Host` (`host[:port]`) is one no other site can point at this server: an IP
/// address, `localhost`, or a one-label name (a compose service, a hosts-file alias), which resolve only
/// inside the operator's network. A page of another site can make the browser send its own dotted name
/// to our address (DNS rebinding), and with no key that page would then read and change everything.
fn rebinding_proof(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(bracketed) => return bracketed.split_once(']').is_some(),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    // `localhost.` is `localhost`.
    let name = name.strip_suffix('.').unwrap_or(name);
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || (!name.is_empty() && !name.contains('.'))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme's name in any case (RFC 9110 §11.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_named_in_any_case() {
        assert_eq!(bearer_token("Bearer k3y"), Some("k3y"));
        assert_eq!(bearer_token("bearer k3y"), Some("k3y"));
        assert_eq!(bearer_token("BEARER k3y"), Some("k3y"));
        assert_eq!(bearer_token("Basic k3y"), None);
        assert_eq!(bearer_token("Bearerk3y"), None);
    }

    #[test]
    fn only_names_no_other_site_can_point_here_are_rebinding_proof() {
        for host in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "localhost:8080",
            "LOCALHOST",
            "insider-messaging:8080",
            "localhost.:8080",
        ] {
            assert!(rebinding_proof(host), "{host}");
        }
        for host in [
            "rebind.attacker.example:8080",
            "sms.example.com",
            "127.0.0.1.nip.io:8080",
            "",
        ] {
            assert!(!rebinding_proof(host), "{host}");
        }
    }
}
