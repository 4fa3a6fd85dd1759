//! The OpenAPI document, collected from the handlers' annotations, and the Swagger UI that shows it.

use actix_web::{HttpResponse, web};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
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
        routes::listing::list,
        routes::listing::list_sent,
        routes::messages::get_one,
        routes::operator::retry,
        routes::operator::cancel,
        routes::receipts::receive,
        routes::receipts::list,
        routes::events::list,
        routes::events::retry,
        routes::opt_outs::create,
        routes::opt_outs::list,
        routes::opt_outs::remove,
        routes::inbound::receive,
        routes::inbound::list,
        routes::campaigns::list,
        routes::campaigns::pause,
        routes::campaigns::resume,
        routes::campaigns::cancel,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes, &CommonResponses),
    tags(
        (name = "messages", description = "Enqueue messages and read what was sent"),
        (name = "scheduler", description = "Start and stop sending"),
        (name = "events", description = "The status events outbox: what STATUS_WEBHOOK_URL is told"),
        (name = "receipts", description = "Delivery receipts from the provider, and what became of them"),
        (name = "opt-outs", description = "The numbers that opted out: never sent to"),
        (name = "inbound", description = "Replies from phones: STOP and START keywords"),
        (name = "campaigns", description = "Messages sharing a campaign label: counted, paused, resumed, cancelled"),
        (name = "health", description = "Liveness, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// `API_KEY`, as either header the service accepts; routes that need it name both. The provider's
/// callbacks name `CALLBACK_AUTH_KEY` instead.
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
            "callback_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-ins-auth-key",
                "CALLBACK_AUTH_KEY: what the provider sends with its callbacks (POST /receipts, POST /inbound)",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The answers the middleware gives on any route, added where a route's own annotation leaves them out:
/// 403 `cross_site_request` for a request a page of another site sent (`cross_site.rs`: any but a read;
/// `auth.rs`: any request of a page to a route behind `API_KEY` while it is unset, by a host name), 415
/// for a body that is not JSON (any but a read), and, on a route that takes a body, 413 over its limit
/// and 408 when it stalls (`body_timeout.rs`).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (false, &mut item.get),
                (true, &mut item.post),
                (true, &mut item.put),
                (true, &mut item.patch),
                (true, &mut item.delete),
            ];
            for (writes, operation) in operations {
                let Some(operation) = operation else { continue };
                let mut answers: Vec<(&str, &str)> = Vec::new();
                if writes || operation.security.is_some() {
                    answers.push((
                        "403",
                        "A page of another site sent it, or reached the open API (`API_KEY` unset) by a host name \
                         (`cross_site_request`)",
                    ));
                }
                if writes {
                    answers.push(("415", "A body not sent as JSON (`unsupported_media_type`)"));
                }
                if operation.request_body.is_some() {
                    answers.push(("413", "The body is over its limit (`body_too_large`)"));
                    answers.push((
                        "408",
                        "The body did not arrive within 10 s of the request's head (`body_timeout`)",
                    ));
                }
                for (status, description) in answers {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| RefOr::T(error_response(description)));
                }
            }
        }
    }
}

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// Swagger UI at `/swagger-ui/`, the spec at `/api-docs/openapi.json` (with this service's
/// `CONTENT_MAX_CHARS`), and redirects from the other spellings people try.
pub fn configure(cfg: &mut web::ServiceConfig, content_max_chars: usize) {
    let mut spec = ApiDoc::openapi();
    set_content_max_chars(&mut spec, content_max_chars);
    cfg.service(SwaggerUi::new("/swagger-ui/{_:.*}").url(SPEC_PATH, spec));
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

/// A message's `content` takes at most `chars` characters: the setting's, not the default the
/// annotations were written with.
fn set_content_max_chars(spec: &mut utoipa::openapi::OpenApi, chars: usize) {
    use utoipa::openapi::{RefOr, schema::Schema};
    let content = spec
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("CreateMessageRequest"))
        .and_then(|schema| match schema {
            RefOr::T(Schema::Object(object)) => object.properties.get_mut("content"),
            _ => None,
        });
    if let Some(RefOr::T(Schema::Object(content))) = content {
        content.max_length = Some(chars);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `(METHOD, path)` of every row between the README's `routes` markers.
    fn readme_routes() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md is readable");
        let (_, rest) = readme
            .split_once("<!-- routes:start -->")
            .expect("README.md has <!-- routes:start -->");
        let (table, _) = rest
            .split_once("<!-- routes:end -->")
            .expect("README.md has <!-- routes:end -->");
        table
            .lines()
            .filter(|line| line.trim_start().starts_with('|'))
            .filter_map(|line| {
                let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
                let [method, path, _what] = cells[..] else {
                    panic!("a route row has three cells: {line:?}");
                };
                // The header and the separator have no backticked path.
                let path = path.strip_prefix('`')?.strip_suffix('`')?;
                Some((method.to_owned(), path.to_owned()))
            })
            .collect()
    }

    #[test]
    fn the_readme_route_table_lists_exactly_the_documented_operations() {
        let rows = readme_routes();
        let listed: BTreeSet<_> = rows.iter().cloned().collect();
        assert_eq!(listed.len(), rows.len(), "a route listed twice: {rows:?}");

        let spec = serde_json::to_value(ApiDoc::openapi()).expect("the spec serialises");
        let documented: BTreeSet<(String, String)> = spec["paths"]
            .as_object()
            .expect("the spec has paths")
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .into_iter()
                    .flat_map(|operations| operations.keys())
                    .filter(|key| ["get", "put", "post", "delete", "patch", "head", "options"].contains(&key.as_str()))
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect();

        assert_eq!(
            listed, documented,
            "README.md's route table (left) and the OpenAPI document (right) disagree"
        );
    }

    /// OpenAPI allows a parameter once per operation (name and location); validators reject the
    /// document otherwise, and client generators emit the argument twice. A handler taking
    /// `web::Path<String>` beside `params(SomeStruct)` listed it twice.
    #[test]
    fn no_operation_lists_a_parameter_twice() {
        let spec = serde_json::to_value(ApiDoc::openapi()).expect("the spec serialises");
        for (path, item) in spec["paths"].as_object().expect("the spec has paths") {
            for (method, operation) in item.as_object().into_iter().flatten() {
                let parameters: Vec<(String, String)> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| (p["name"].to_string(), p["in"].to_string()))
                    .collect();
                let distinct: BTreeSet<_> = parameters.iter().collect();
                assert_eq!(distinct.len(), parameters.len(), "{method} {path}: {parameters:?}");
            }
        }
    }
}
