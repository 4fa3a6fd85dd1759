//! `API_KEY`: when set, every route but health, metrics, docs and the console page needs it, sent as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`. Without `API_KEY` the API is open, as before.

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};

use super::{AppState, error::ApiError};

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
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let expected = request
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.api_key.clone());
    let path = request.path();
    let open = OPEN_PATHS.contains(&path) || OPEN_FOLDERS.iter().any(|folder| path.starts_with(folder));
    if let Some(expected) = expected.filter(|_| !open) {
        let headers = request.headers();
        let presented = headers.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
        if !presented.is_some_and(|key| constant_time_eq(key.trim().as_bytes(), expected.expose().as_bytes())) {
            return Err(ApiError::Unauthorized.into());
        }
    }
    next.call(request).await
}

/// Compares without stopping at the first difference, so timing does not reveal how much of a guess
/// was right (only its length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn keys_match_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
