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
}
