//! The HTTP API: the route table, and what every handler shares.

pub mod access_log;
pub mod auth;
pub mod body_timeout;
pub mod callback_auth;
pub mod callback_body;
pub mod cross_site;
pub mod docs;
pub mod error;
pub mod json_value;
pub mod request_metrics;
pub mod routes;
pub mod time;

use std::sync::Arc;

use actix_web::web::{self, ServiceConfig};

use self::error::ApiError;
use crate::{
    cache::Cache,
    dispatch::Pipeline,
    metrics::Metrics,
    secret::Secret,
    store::{Campaigns, InboundLog, MessageStore, OptOutList, ReceiptStore, StatusEventStore},
};

/// The largest JSON body accepted: a message is at most a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What every handler may use.
pub struct AppState {
    pub store: Arc<dyn MessageStore>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub events: Arc<dyn StatusEventStore>,
    pub opt_outs: Arc<dyn OptOutList>,
    pub campaigns: Arc<dyn Campaigns>,
    pub cache: Cache,
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub content_max_chars: usize,
    /// `API_KEY`: required by every route but the open ones (see `auth.rs`) when set.
    pub api_key: Option<Secret>,
    /// `RECEIPT_TIMEOUT` when receipts are tracked (`CALLBACK_AUTH_KEY` set): a sent message with no
    /// final receipt after it shows `no_receipt`. `None`: `not_tracked`.
    pub receipt_timeout: Option<std::time::Duration>,
    /// `STATUS_WEBHOOK_URL` is set: status events are written and delivered.
    pub status_webhooks: bool,
    /// `CALLBACK_AUTH_KEY`: required by the provider's callbacks (see `callback_auth.rs`); `None` refuses them.
    pub callback_auth_key: Option<Secret>,
    pub inbound: Arc<dyn InboundLog>,
    /// `GET /metrics`' reads of the database's gauges.
    pub gauge_reads: routes::metrics::GaugeReads,
}

/// The route table. `docs::ApiDoc` lists the same handlers; a test checks that the two agree.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut ServiceConfig) {
    move |cfg| {
        let content_max_chars = state.content_max_chars;
        cfg.app_data(state)
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(|error, _| ApiError::from(error).into()),
            )
            .app_data(web::QueryConfig::default().error_handler(|error, _| ApiError::from(error).into()))
            .app_data(web::PathConfig::default().error_handler(|error, _| ApiError::from(error).into()))
            .service(routes::health::healthz)
            .service(routes::health::readyz)
            .service(routes::metrics::metrics)
            .service(routes::sending::start)
            .service(routes::sending::stop)
            .service(routes::sending::status)
            .service(routes::stats::stats)
            .service(routes::messages::create)
            // A resource of its own for its larger body limit; before `/messages/{id}`, like `sent`.
            .service(
                web::resource("/messages/batch")
                    .app_data(
                        web::JsonConfig::default()
                            .limit(routes::batch::MAX_BODY_BYTES)
                            .error_handler(|error, _| ApiError::from(error).into()),
                    )
                    .route(web::post().to(routes::batch::create_batch))
                    .default_service(web::to(no_route)),
            )
            .service(routes::listing::list)
            // Before `/messages/{id}`, which would otherwise take "sent" for an id.
            .service(routes::listing::list_sent)
            .service(routes::messages::get_one)
            .service(routes::operator::retry)
            .service(routes::operator::cancel)
            // The key is checked before the body is read (`callback_body.rs`).
            .service(
                web::resource("/receipts")
                    .route(web::post().to(routes::receipts::receive))
                    .route(web::get().to(routes::receipts::list))
                    .default_service(web::to(no_route)),
            )
            .service(routes::events::list)
            .service(routes::events::retry)
            .service(routes::opt_outs::create)
            .service(routes::opt_outs::list)
            .service(routes::opt_outs::remove)
            .service(routes::inbound::receive)
            .service(routes::inbound::list)
            .service(routes::campaigns::list)
            .service(routes::campaigns::pause)
            .service(routes::campaigns::resume)
            .service(routes::campaigns::cancel)
            // The operator console: a page over the routes above, so it stays out of the OpenAPI document.
            .service(routes::console::page)
            .service(routes::console::stylesheet)
            .service(routes::console::script)
            .configure(|cfg| docs::configure(cfg, content_max_chars))
            .default_service(web::to(no_route));
    }
}

/// What no route answered: 405 with `Allow` when the path is a documented route (the method is the
/// problem), else 404. The OpenAPI document is the list of routes, so the two cannot drift apart.
async fn no_route(request: actix_web::HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    static ROUTES: std::sync::OnceLock<Vec<(actix_web::dev::ResourceDef, Vec<String>)>> = std::sync::OnceLock::new();
    let routes = ROUTES.get_or_init(|| {
        let spec = <docs::ApiDoc as utoipa::OpenApi>::openapi();
        spec.paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = serde_json::to_value(item)
                    .ok()
                    .and_then(|v| v.as_object().map(|o| o.keys().map(|k| k.to_uppercase()).collect()))
                    .unwrap_or_default();
                (actix_web::dev::ResourceDef::new(path.as_str()), methods)
            })
            .collect()
    });
    let matching: Vec<_> = routes
        .iter()
        .filter(|(route, _)| route.is_match(request.path()))
        .collect();
    // `/messages/batch` also matches `/messages/{id}`, whose GET does not serve it: a path spelled out
    // in full speaks for itself.
    let exact: Vec<_> = matching
        .iter()
        .filter(|(route, _)| route.pattern().is_some_and(|p| !p.contains('{')))
        .copied()
        .collect();
    let allowed: Vec<&str> = if exact.is_empty() { matching } else { exact }
        .into_iter()
        .flat_map(|(_, methods)| methods.iter().map(String::as_str))
        .filter(|m| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(m))
        .collect();
    if allowed.is_empty() {
        Err(ApiError::NoRoute)
    } else {
        Err(ApiError::MethodNotAllowed(allowed.join(", ")))
    }
}
