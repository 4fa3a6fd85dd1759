//! `CALLBACK_AUTH_KEY`: the key the provider presents, as `x-ins-auth-key`, on the requests it makes to
//! us (delivery receipts, `POST /receipts`; replies from phones, `POST /inbound`). Those routes skip
//! `API_KEY` (the provider does not hold it) and call `require_callback_key` first thing instead.
//!
//! With no key configured a callback route answers 503 `callbacks_off`, naming the setting, rather than
//! 404: the route exists, the provider is pointed at the right URL, and what is missing is on our side. A
//! provider retries a receipt that got no 2xx, so none is lost while the operator sets the key. A wrong or
//! missing key answers 401, counts in `auth_failures_total` and logs a `warn` line (never the key).

use actix_web::{HttpRequest, http::Method};

use super::{AppState, error::ApiError, request_metrics::route_of};

/// The header the provider sends the key in, as it does towards us (`provider-contract.md`).
pub const CALLBACK_KEY_HEADER: &str = "x-ins-auth-key";

/// The routes the provider calls: `(method, path)`. They need `CALLBACK_AUTH_KEY`, not `API_KEY`.
const CALLBACK_ROUTES: &[(Method, &str)] = &[(Method::POST, "/receipts"), (Method::POST, "/inbound")];

/// Whether `method path` is one of the provider's callbacks, which `API_KEY` does not guard.
pub fn is_callback(method: &Method, path: &str) -> bool {
    CALLBACK_ROUTES
        .iter()
        .any(|(callback_method, callback_path)| callback_method == method && *callback_path == path)
}

/// Lets the request on when it carries `CALLBACK_AUTH_KEY`; a 503 when no key is configured, a 401
/// when it is missing or wrong.
pub fn require_callback_key(state: &AppState, request: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = state.callback_auth_key.as_ref() else {
        return Err(ApiError::CallbacksOff);
    };
    let presented = request
        .headers()
        .get(CALLBACK_KEY_HEADER)
        .and_then(|value| value.to_str().ok());
    if presented.is_some_and(|key| expected.matches(key.trim())) {
        return Ok(());
    }
    state.metrics.auth_failures_total.inc();
    log::warn!(
        method:% = request.method(),
        route = route_of(request).as_str(),
        key = if presented.is_some() { "wrong" } else { "missing" };
        "callback refused: x-ins-auth-key missing or wrong"
    );
    Err(ApiError::CallbackUnauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_providers_callbacks_skip_the_api_key() {
        assert!(is_callback(&Method::POST, "/receipts"));
        assert!(is_callback(&Method::POST, "/inbound"));
        assert!(
            !is_callback(&Method::GET, "/receipts"),
            "the operators' list needs API_KEY"
        );
        assert!(!is_callback(&Method::POST, "/receipts/"));
        assert!(!is_callback(&Method::POST, "/messages"));
    }
}
