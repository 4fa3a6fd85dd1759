//! The OpenAPI document, collected from the handlers' annotations, and the Swagger UI that shows it.

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use super::{error::ErrorBody, routes};

pub const SPEC_PATH: &str = "/api-docs/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "insider-messaging",
        description = "Dispatches queued text messages to an SMS provider's webhook, exactly once per message.",
    ),
    paths(
        routes::health::healthz,
        routes::health::readyz,
        routes::metrics::metrics,
        routes::sending::start,
        routes::sending::stop,
        routes::sending::status,
        routes::stats::stats,
        routes::messages::create,
        routes::messages::list,
        routes::messages::list_sent,
        routes::messages::get_one,
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "messages", description = "Enqueue messages and read what was sent"),
        (name = "scheduler", description = "Start and stop sending"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// Swagger UI at `/swagger-ui/`, the spec at `/api-docs/openapi.json`, and redirects from the other
/// spellings people try.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/swagger-ui/{_:.*}").url(SPEC_PATH, ApiDoc::openapi()));
    for from in ["/swagger-ui", "/swagger", "/swagger/", "/swagger/index.html", "/docs"] {
        cfg.route(
            from,
            web::get().to(|| async {
                HttpResponse::PermanentRedirect()
                    .insert_header(("Location", "/swagger-ui/"))
                    .finish()
            }),
        );
    }
}
