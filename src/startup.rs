//! `Application::build(settings)`: the database (migrated), the cache, the dispatch pipeline and the
//! HTTP server, wired together. `run_until` serves until a shutdown signal, then drains.

use std::{future::Future, net::TcpListener, sync::Arc, time::Duration};

use actix_web::{
    App, HttpServer,
    dev::Server,
    middleware::{self, Logger},
    web,
};
use anyhow::Context as _;
use futures_util::future::{Either, select};

use crate::{
    api::{self, AppState},
    cache::Cache,
    config::Settings,
    dispatch::{self, Pipeline},
    metrics::Metrics,
    store::{self, MessageStore},
};

pub struct Application {
    port: u16,
    server: Server,
    pipeline: Pipeline,
    store: Arc<dyn MessageStore>,
    shutdown_grace: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // awc's rustls needs a process-wide crypto provider; a second install (tests) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        for warning in settings.risky_combinations() {
            log::warn!("risky configuration: {warning}");
        }

        let store = migrate(settings.database_url.expose()).await?;
        let cache =
            Cache::new(settings.redis_url.as_ref(), settings.redis_ttl).context("setting up the Redis cache")?;
        if !cache.is_enabled() {
            log::info!("REDIS_URL is not set: sent message ids are not cached");
        }
        let metrics = Metrics::new().context("registering metrics")?;
        let owner = instance_id();
        log::info!(owner = owner.as_str(); "starting the dispatcher");
        let pipeline = dispatch::start(&settings, owner, Arc::clone(&store), cache.clone(), metrics.clone())
            .await
            .context("reading the cluster's sending switch")?;

        let state = web::Data::new(AppState {
            store: Arc::clone(&store),
            cache,
            pipeline: pipeline.clone(),
            metrics,
            content_max_chars: settings.content_max_chars.get(),
            webhook_concurrency: settings.webhook_concurrency.get(),
            api_key: settings.api_key.clone(),
        });
        let listener = TcpListener::bind(settings.http_addr)
            .with_context(|| format!("HTTP_ADDR {} could not be bound", settings.http_addr))?;
        let address = listener.local_addr().context("reading the bound address")?;
        let server = HttpServer::new(move || {
            App::new()
                .wrap(middleware::from_fn(api::auth::require_api_key))
                .wrap(Logger::new("%r %s %Dms").exclude("/healthz").exclude("/metrics"))
                .configure(api::configure(state.clone()))
        })
        // Signals are ours: shutdown must drain the pipeline before the server stops.
        .disable_signals()
        .listen(listener)
        .context("starting the HTTP server")?
        .run();
        log::info!("listening on http://{address} (Swagger UI at /swagger-ui/)");

        Ok(Self {
            port: address.port(),
            server,
            pipeline,
            store,
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The bound port (useful with `HTTP_ADDR=...:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn store(&self) -> Arc<dyn MessageStore> {
        Arc::clone(&self.store)
    }

    /// Serves until `shutdown` resolves, then stops claiming, waits up to `SHUTDOWN_GRACE` for sends in
    /// flight to be recorded, and stops the server.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let server = actix_rt::spawn(self.server);
        let server = match select(server, std::pin::pin!(shutdown)).await {
            Either::Left((result, _)) => {
                return result
                    .context("the HTTP server task failed")?
                    .context("the HTTP server failed");
            }
            Either::Right(((), server)) => server,
        };
        log::info!(grace:? = self.shutdown_grace; "shutting down: no new claims, waiting for sends in flight");
        match self.pipeline.drain(self.shutdown_grace).await {
            Ok(0) => log::info!("every send in flight is recorded"),
            Ok(left) => log::warn!(
                left = left;
                "shutdown grace ran out: the claims left are sent again after their lease"
            ),
            Err(error) => log::warn!("could not drain the pipeline: {error}"),
        }
        handle.stop(true).await;
        server
            .await
            .context("the HTTP server task failed")?
            .context("the HTTP server failed")
    }
}

/// Applies the migrations to the database at `url` and returns the store on it.
pub async fn migrate(url: &str) -> anyhow::Result<Arc<dyn MessageStore>> {
    let store = store::connect(url).context("DATABASE_URL is not a usable database URL")?;
    store.migrate().await.context("applying database migrations")?;
    Ok(store)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = std::pin::pin!(actix_rt::signal::ctrl_c());
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            let terminate = std::pin::pin!(terminate.recv());
            select(interrupt, terminate).await;
            return;
        }
    }
    let _ = interrupt.await;
}

/// Names this process in lease columns and logs: host, pid and a random suffix for restarts.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}/{}", std::process::id(), &suffix[..8])
}
