//! The HTTP API: the route table, and what every handler shares.

pub mod auth;
pub mod docs;
pub mod error;
pub mod routes;

use std::sync::Arc;

use actix_web::web::{self, ServiceConfig};

use self::error::ApiError;
use crate::{cache::Cache, config::Secret, dispatch::Pipeline, metrics::Metrics, store::MessageStore};

/// The largest JSON body accepted: a message is at most a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// What every handler may use.
pub struct AppState {
    pub store: Arc<dyn MessageStore>,
    pub cache: Cache,
    pub pipeline: Pipeline,
    pub metrics: Metrics,
    pub content_max_chars: usize,
    /// `API_KEY`: required by every route but the open ones (see `auth.rs`) when set.
    pub api_key: Option<Secret>,
}

/// The route table. `docs::ApiDoc` lists the same handlers; a test checks that the two agree.
pub fn configure(state: web::Data<AppState>) -> impl FnOnce(&mut ServiceConfig) {
    move |cfg| {
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
            .service(routes::messages::list)
            // Before `/messages/{id}`, which would otherwise take "sent" for an id.
            .service(routes::messages::list_sent)
            .service(routes::messages::get_one)
            .service(routes::messages::retry)
            .service(routes::messages::cancel)
            // The operator console: a page over the routes above, so it stays out of the OpenAPI document.
            .service(routes::console::page)
            .service(routes::console::stylesheet)
            .service(routes::console::script)
            .configure(docs::configure)
            .default_service(web::to(|| async {
                Err::<actix_web::HttpResponse, _>(ApiError::NoRoute)
            }));
    }
}
