//! Liveness and readiness. Both answer `HEAD` as `GET`, without the body, for probes that use it.

use std::time::Duration;

use actix_web::{HttpResponse, route, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{api::AppState, dispatch::PipelineHealth, telemetry::error_chain};

/// How long readiness waits for Redis's answer to a ping.
const CACHE_PING_WITHIN: Duration = Duration::from_millis(250);

#[derive(Serialize, ToSchema)]
pub struct HealthResponse {
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process is up.
///
/// Answers 200 as long as the HTTP server runs; it checks nothing else.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "Alive", body = HealthResponse)))]
#[route("/healthz", method = "GET", method = "HEAD")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct ReadinessResponse {
    /// `ready` when the database answers and the pipeline is up, else `not_ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// `up` or `down`.
    #[schema(example = "up")]
    database: &'static str,
    /// `up`; `draining` while the instance shuts down (it finishes what it holds and takes nothing new);
    /// `down` when its dispatch actors are gone (it serves HTTP and sends nothing: restart it).
    #[schema(example = "up")]
    pipeline: &'static str,
    /// `up`, `down` or `disabled` (no `REDIS_URL`). The cache is optional: `down` keeps the service ready.
    #[schema(example = "up")]
    cache: &'static str,
}

/// The service can do its work.
///
/// 200 when the database answers and the dispatch pipeline is up; 503 when the database does not
/// answer, while the instance drains at shutdown, or when its pipeline is gone. Redis is reported but
/// optional: with Redis down messages are still sent, so readiness stays 200.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready", body = ReadinessResponse),
        (status = 503, description = "The database does not answer, the instance drains, or its pipeline is gone",
         body = ReadinessResponse,
         example = json!({"status": "not_ready", "database": "down", "pipeline": "up", "cache": "up"})),
    )
)]
#[route("/readyz", method = "GET", method = "HEAD")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // The cache is optional: a hung Redis must not hold the answer past a probe's timeout (1 s is the
    // usual one), or every replica turns not ready together over it.
    let cache = async {
        match tokio::time::timeout(CACHE_PING_WITHIN, state.cache.ping()).await {
            Ok(answer) => answer.map_err(|error| error_chain(&error)),
            Err(_) => Err(format!("Redis did not answer a ping within {CACHE_PING_WITHIN:?}")),
        }
    };
    let (database, cache, pipeline) =
        futures_util::future::join3(state.store.ping(), cache, state.pipeline.health()).await;
    let database = match database {
        Ok(()) => "up",
        Err(error) => {
            log::warn!("readiness: database is down: {}", error_chain(&error));
            "down"
        }
    };
    let cache = match cache {
        Ok(Some(())) => "up",
        Ok(None) => "disabled",
        Err(error) => {
            log::warn!("readiness: cache is down: {error}");
            "down"
        }
    };
    let pipeline = match pipeline {
        PipelineHealth::Up => "up",
        PipelineHealth::Draining => "draining",
        PipelineHealth::Down => {
            log::error!("readiness: the dispatch pipeline is gone: this instance sends nothing; restart it");
            "down"
        }
    };
    let ready = database == "up" && pipeline == "up";
    let body = ReadinessResponse {
        status: if ready { "ready" } else { "not_ready" },
        database,
        pipeline,
        cache,
    };
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
