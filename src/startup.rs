//! `Application::build(settings)`: the database (migrated), the cache, the dispatch pipeline and the
//! HTTP server, wired together. `run_until` serves until a shutdown signal, then drains.
//!
//! Settings stop here: each part is handed what it needs, typed (`DispatchSettings`, the cache's URL and
//! TTL, the API's limits), and none of them reads `config`.

use std::{
    future::Future,
    net::{SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use actix_web::{App, HttpServer, dev::Server, http::header, middleware, web};
use anyhow::Context as _;
use futures_util::future::{Either, select};

use crate::{
    api::{self, AppState},
    cache::Cache,
    config::Settings,
    dispatch::{
        self, DispatchSettings, Pipeline, StatusSigner, StatusWebhookTarget, WebhookTarget, quiet_hours::QuietRules,
        retry::RetryPolicy,
    },
    metrics::Metrics,
    store::{self, Campaigns, Database, InboundLog, MessageStore, OptOutList, ReceiptStore, StatusEventStore},
    telemetry::error_chain,
};

/// How long shutdown waits for the database's connections in use to come back.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After the drain, how long requests under way may take to finish before the server stops: actix's own
/// default, 30 s, put the exit well past `SHUTDOWN_GRACE` and an orchestrator's kill timeout when a
/// client was slow (a body trickling in, a large page read slowly).
const REQUESTS_FINISH_WITHIN: Duration = Duration::from_secs(5);

pub struct Application {
    port: u16,
    server: Server,
    pipeline: Pipeline,
    /// The dispatcher's pool.
    database: Arc<dyn Database>,
    /// The API's pool.
    requests: Arc<dyn Database>,
    shutdown_grace: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // awc's rustls needs a process-wide crypto provider; a second install (tests) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        for warning in settings.risky_combinations() {
            log::warn!("risky configuration: {warning}");
        }

        // Before anything starts: a port another process holds ends the start-up here, with nothing
        // migrated or sent (and no actor's timer outliving the runtime). Bound, not listened on, while
        // the migrations run: a connection is refused until they are done. Listened on right after
        // them, before any actor starts: a bound socket does not keep another that sets SO_REUSEADDR
        // (most servers) from listening on the port meanwhile, and only `listen` finds out.
        let socket = bind_without_listening(settings.http_addr)
            .with_context(|| format!("HTTP_ADDR {} could not be bound", settings.http_addr))?;
        let database = migrate(settings.database_url.expose()).await?;
        let listener =
            listen(socket).with_context(|| format!("HTTP_ADDR {} could not be listened on", settings.http_addr))?;
        let address = listener.local_addr().context("reading the bound address")?;
        let cache = Cache::new(
            settings.redis_url.as_ref(),
            settings.redis_ttl,
            settings.callback_auth_key.is_some(),
        )
        .context("setting up the Redis cache")?;
        if !cache.is_enabled() {
            log::info!("REDIS_URL is not set: sent message ids are not cached");
        } else if let Err(error) = cache.ping().await {
            // Said now, not at the first send: the cache is optional, so the service starts anyway.
            log::warn!(
                "REDIS_URL does not answer: sending goes on, but sent message ids are not cached until it does: {}",
                error_chain(&error)
            );
        }
        let metrics = Metrics::new().context("registering metrics")?;
        // Before the pipeline starts: its first flush already writes the events beside its changes.
        database.write_status_events(settings.status_webhook_url.is_some());
        let owner = instance_id();
        log::info!(owner = owner.as_str(), database = database.describe().as_str(); "starting the dispatcher");
        let pipeline = dispatch::start(
            &dispatch_settings(&settings)?,
            owner,
            Arc::clone(&database),
            cache.clone(),
            metrics.clone(),
        )
        .await
        .context("reading the cluster's sending switch")?;
        // See `Database::with_pool_of_its_own`: requests cannot starve the dispatcher of connections.
        let requests = database.with_pool_of_its_own();
        let receipts: Arc<dyn ReceiptStore> = requests.clone();
        let events: Arc<dyn StatusEventStore> = requests.clone();
        let opt_outs: Arc<dyn OptOutList> = requests.clone();
        let campaigns: Arc<dyn Campaigns> = requests.clone();
        let inbound: Arc<dyn InboundLog> = requests.clone();
        let store: Arc<dyn MessageStore> = requests.clone();

        let state = web::Data::new(AppState {
            opt_outs,
            campaigns,
            inbound,
            store: Arc::clone(&store),
            receipts,
            events,
            cache,
            pipeline: pipeline.clone(),
            metrics,
            content_max_chars: settings.content_max_chars.get(),
            api_key: settings.api_key.clone(),
            callback_auth_key: settings.callback_auth_key.clone(),
            status_webhooks: settings.status_webhook_url.is_some(),
            receipt_timeout: settings.callback_auth_key.is_some().then_some(settings.receipt_timeout),
            gauge_reads: Default::default(),
        });
        let server = HttpServer::new(move || {
            // The last wrapped runs first: log and count every answer, then bound the body's time,
            // refuse what another site's page sent, and only then ask for the key. No page of ours may
            // be framed by another site (Swagger UI's "Execute" clicked through a frame is a request of
            // our own origin); the console sets a stricter policy of its own, which these leave alone.
            App::new()
                .wrap(
                    middleware::DefaultHeaders::new()
                        .add((header::X_FRAME_OPTIONS, "DENY"))
                        .add((header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"))
                        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                )
                .wrap(middleware::from_fn(api::auth::require_api_key))
                .wrap(middleware::from_fn(api::cross_site::refuse_cross_site))
                .wrap(middleware::from_fn(api::body_timeout::bound_body_time))
                .wrap(middleware::from_fn(api::request_metrics::record_request))
                .wrap(api::access_log::logger())
                .configure(api::configure(state.clone()))
        })
        // Signals are ours: shutdown must drain the pipeline before the server stops.
        .disable_signals()
        .shutdown_timeout(REQUESTS_FINISH_WITHIN.as_secs())
        .listen(listener)
        .context("starting the HTTP server")?
        .run();
        log::info!("listening on http://{address} (Swagger UI at /swagger-ui/)");

        Ok(Self {
            port: address.port(),
            server,
            pipeline,
            database,
            requests,
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
        self.database.clone()
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
        let served = server
            .await
            .context("the HTTP server task failed")?
            .context("the HTTP server failed");
        // A connection still out when the runtime ends panics in sqlx's Drop: give them all back first.
        // A statement stuck behind a lock must not hold the exit forever.
        // Together: a request's statement stuck in one pool must not leave the other open.
        let close = futures_util::future::join(self.requests.close(), self.database.close());
        if actix_rt::time::timeout(CLOSE_GRACE, close).await.is_err() {
            log::warn!(grace:? = CLOSE_GRACE; "database connections still in use at exit");
        }
        served
    }
}

/// What the dispatch pipeline takes from the settings.
fn dispatch_settings(settings: &Settings) -> anyhow::Result<DispatchSettings> {
    let retry = RetryPolicy {
        backoff_min: settings.backoff_min,
        backoff_max: settings.backoff_max,
        max_attempts: settings.max_retries,
    };
    let status_webhook = match (&settings.status_webhook_url, &settings.status_webhook_secret) {
        (Some(url), Some(secret)) => Some(StatusWebhookTarget {
            url: url.to_string(),
            signer: StatusSigner::new(secret).context("reading STATUS_WEBHOOK_SECRET")?,
            timeout: settings.webhook_timeout,
            max_age: settings.status_webhook_max_age,
            // Retried until STATUS_WEBHOOK_MAX_AGE, not for a number of attempts.
            backoff: RetryPolicy {
                max_attempts: std::num::NonZeroU32::MAX,
                ..retry
            },
        }),
        _ => None,
    };
    Ok(DispatchSettings {
        autostart: settings.autostart,
        interval: settings.interval,
        batch_size: settings.batch_size,
        webhook_concurrency: settings.webhook_concurrency,
        rate_limit: settings.rate_limit,
        lease: settings.lease,
        priority_aging: settings.priority_aging,
        quiet_hours: settings.quiet_hours.map(|window| QuietRules {
            window,
            default_zone: settings.quiet_hours_tz,
        }),
        recipient_daily_limit: settings.recipient_daily_limit,
        content_max_chars: settings.content_max_chars,
        retry,
        webhook: WebhookTarget {
            // Never named in the error: the URL may carry a token.
            url: reqwest::Url::parse(&settings.webhook_url.to_string())
                .context("WEBHOOK_URL could not be read as a URL by the HTTP client")?,
            auth_key: settings.webhook_auth_key.clone(),
            timeout: settings.webhook_timeout,
            max_connections: settings.webhook_concurrency.get(),
        },
        sent_retention: settings.sent_retention,
        receipt_match_window: settings
            .callback_auth_key
            .is_some()
            .then_some(settings.receipt_match_window),
        status_webhook,
    })
}

/// Applies the migrations to the database at `url` and returns it.
pub async fn migrate(url: &str) -> anyhow::Result<Arc<dyn Database>> {
    let database = store::connect(url).context("DATABASE_URL is not a usable database URL")?;
    database.migrate().await.context("applying database migrations")?;
    Ok(database)
}

/// A TCP socket bound to `address`, as `TcpListener::bind` binds it (`SO_REUSEADDR` on Unix), not yet
/// listening.
fn bind_without_listening(address: SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

/// Starts listening on a socket `bind_without_listening` bound.
fn listen(socket: socket2::Socket) -> std::io::Result<TcpListener> {
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Resolves on SIGINT or SIGTERM. A second one while the process drains ends it at once (exit 130 or
/// 143, as the shell reports a process the signal ended): an operator who presses Ctrl-C again means
/// it, and the drain may wait minutes on a database or provider that hangs (the claims left go again
/// after their lease, as after a crash). The handlers are made once, here, so that a second signal that
/// comes right after the first is not lost between them.
pub async fn shutdown_signal() {
    let mut signals = Signals::new();
    signals.next().await;
    actix_rt::spawn(async move {
        let code = signals.next().await;
        log::warn!(
            "a second signal: exiting now, without waiting for the sends in flight (their messages go again \
             after their lease)"
        );
        log::logger().flush();
        std::process::exit(code);
    });
}

/// SIGINT and SIGTERM, each handled from its creation on.
struct Signals {
    #[cfg(unix)]
    unix: Option<(actix_rt::signal::unix::Signal, actix_rt::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use actix_rt::signal::unix::{SignalKind, signal};
            Self {
                unix: signal(SignalKind::interrupt())
                    .and_then(|interrupt| Ok((interrupt, signal(SignalKind::terminate())?)))
                    .ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// The next signal; the exit code a process it ended would have (128 and its number).
    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        if let Some((interrupt, terminate)) = &mut self.unix {
            return match select(std::pin::pin!(interrupt.recv()), std::pin::pin!(terminate.recv())).await {
                Either::Left(_) => 130,
                Either::Right(_) => 143,
            };
        }
        let _ = actix_rt::signal::ctrl_c().await;
        130
    }
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
