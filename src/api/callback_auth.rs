//! `CALLBACK_AUTH_KEY`: the key the provider presents, as `x-ins-auth-key`, on the requests it makes to
//! us (delivery receipts, `POST /receipts`; replies from phones, `POST /inbound`). With the key set, those
//! routes skip `API_KEY` (the provider does not hold it) and call `require_callback_key` first thing
//! instead, before reading the body (`callback_body.rs`).
//!
//! With no key configured, receipts answer 503 `callbacks_off`, naming the setting, rather than 404: the
//! route exists, the provider is pointed at the right URL, and what is missing is on our side. A provider
//! retries a receipt that got no 2xx, so none is lost while the operator sets the key. Replies are
//! guarded by `API_KEY` like any route instead: they are kept whoever relays them. A wrong or missing
//! key answers 401, counts in `auth_failures_total` and logs a `warn` line (never the key).

use actix_web::{HttpRequest, http::Method};

use super::{AppState, error::ApiError, request_metrics::route_of};

/// The header the provider sends the key in, as it does towards us (`provider-contract.md`).
pub const CALLBACK_KEY_HEADER: &str = "x-ins-auth-key";

/// What a callback route does while `CALLBACK_AUTH_KEY` is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WithoutKey {
    /// 503 `callbacks_off`.
    Refused,
    /// `API_KEY` guards it, like any route.
    ApiKey,
}

/// The routes the provider calls: `(method, path, what they do without a key of their own)`.
const CALLBACK_ROUTES: &[(Method, &str, WithoutKey)] = &[
    (Method::POST, "/receipts", WithoutKey::Refused),
    (Method::POST, "/inbound", WithoutKey::ApiKey),
];

fn callback_route(method: &Method, path: &str) -> Option<WithoutKey> {
    CALLBACK_ROUTES
        .iter()
        .find(|(callback_method, callback_path, _)| callback_method == method && *callback_path == path)
        .map(|(_, _, without_key)| *without_key)
}

/// Whether `method path` is a callback that `API_KEY` does not guard: one of the provider's while
/// `CALLBACK_AUTH_KEY` is set, and receipts always (without the key they are refused).
pub fn skips_api_key(method: &Method, path: &str, callback_key_set: bool) -> bool {
    match callback_route(method, path) {
        Some(WithoutKey::Refused) => true,
        Some(WithoutKey::ApiKey) => callback_key_set,
        None => false,
    }
}

/// Lets the request on when it carries `CALLBACK_AUTH_KEY`, a 401 when it is missing or wrong. With no
/// key configured: a 503 for receipts, and on for replies (`API_KEY` was asked of them).
pub fn require_callback_key(state: &AppState, request: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = state.callback_auth_key.as_ref() else {
        return match callback_route(request.method(), request.path()) {
            Some(WithoutKey::ApiKey) => Ok(()),
            _ => Err(ApiError::CallbacksOff),
        };
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
        for key_set in [true, false] {
            assert!(skips_api_key(&Method::POST, "/receipts", key_set));
            assert!(
                !skips_api_key(&Method::GET, "/receipts", key_set),
                "the operators' list needs API_KEY"
            );
            assert!(!skips_api_key(&Method::POST, "/receipts/", key_set));
            assert!(!skips_api_key(&Method::POST, "/messages", key_set));
        }
        assert!(skips_api_key(&Method::POST, "/inbound", true));
        assert!(
            !skips_api_key(&Method::POST, "/inbound", false),
            "without CALLBACK_AUTH_KEY, replies take API_KEY"
        );
    }
}
