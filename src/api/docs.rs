//! The OpenAPI document, collected from the handlers' annotations, and the Swagger UI that shows it.

use actix_web::{HttpResponse, web};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
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
        routes::batch::create_batch,
        routes::messages::list,
        routes::messages::list_sent,
        routes::messages::get_one,
        routes::messages::retry,
        routes::messages::cancel,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "messages", description = "Enqueue messages and read what was sent"),
        (name = "scheduler", description = "Start and stop sending"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// `API_KEY`, as either header the service accepts; routes that need it name both.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "Required when the service runs with API_KEY set",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

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
