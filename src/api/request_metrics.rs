//! `http_requests_total{route,method,status}` and `http_request_duration_seconds{route}` for every request,
//! refused ones included. `route` is the route's template (`/messages/{id}`), never the raw path, and
//! `unmatched` for a path no route serves; `method` is one of the standard methods or `other`. So a
//! client cannot grow the number of series by inventing paths or methods. The refusal log lines name a
//! request the same way (`route_of`, `peer_of`).

use std::time::Instant;

use actix_web::{
    Error, HttpRequest,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::Method,
    middleware::Next,
    web,
};

use super::AppState;

/// The `route` of a request no route serves.
pub const UNMATCHED: &str = "unmatched";

pub async fn record_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let method = method_of(request.method());
    let route = route_of(request.request());
    let result = next.call(request).await;
    if let Some(state) = state {
        let status = match &result {
            Ok(response) => response.status(),
            Err(error) => error.as_response_error().status_code(),
        };
        state
            .metrics
            .observe_request(&route, method, status.as_u16(), started.elapsed());
    }
    result
}

/// The template of the route that serves `request`'s path (whatever its method), or `UNMATCHED`.
pub fn route_of(request: &HttpRequest) -> String {
    request.match_pattern().unwrap_or_else(|| UNMATCHED.to_owned())
}

/// The address the request came from, for log lines: the socket's peer, which a client cannot forge
/// (`X-Forwarded-For` it can).
pub fn peer_of(request: &ServiceRequest) -> String {
    request
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |address| address.to_string())
}

fn method_of(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
