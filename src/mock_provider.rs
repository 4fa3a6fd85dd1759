//! The stand-in provider (`insider-messaging mock-provider`): speaks `shared/provider-contract.md` so
//! the demo, the tests, the benchmark and the compose file need no real SMS provider.
//!
//! It answers `202 {"message": "Accepted", "messageId": <uuid>}`; a repeated `Idempotency-Key` gets the
//! `messageId` it got the first time, as a deduplicating provider would, and is counted as a duplicate.
//! Knobs inject what real providers do: latency, a share of 5xx, a share of 429 with `Retry-After`, and
//! a share of requests that never answer in time. `GET /stats` reports what it saw.

use std::{
    collections::HashMap,
    future::Future,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::provider::{AUTH_HEADER, IDEMPOTENCY_HEADER};

/// How long a request picked to time out is held: longer than any sane `WEBHOOK_TIMEOUT`.
const TIMEOUT_HOLD: Duration = Duration::from_secs(120);

/// The stand-in's knobs; each flag can also come from its environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct MockProviderConfig {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "MOCK_PROVIDER_ADDR", default_value = "127.0.0.1:9090")]
    pub addr: SocketAddr,
    /// When set, requests must carry it in `x-ins-auth-key`, or get 401.
    #[arg(long, env = "MOCK_PROVIDER_AUTH_KEY", hide_env_values = true)]
    pub auth_key: Option<String>,
    /// Added before every answer, e.g. `50ms`.
    #[arg(long, env = "MOCK_PROVIDER_LATENCY", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Share of requests answered 500 (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_FAIL_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub fail_rate: f64,
    /// Share of requests answered 429 with `Retry-After` (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_THROTTLE_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub throttle_rate: f64,
    /// Share of requests that get no answer in time (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_TIMEOUT_RATE", default_value_t = 0.0, value_parser = parse_share)]
    pub timeout_rate: f64,
    /// The `Retry-After` sent with a 429, in whole seconds.
    #[arg(long, env = "MOCK_PROVIDER_RETRY_AFTER", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_after: Duration,
}

impl Default for MockProviderConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_key: None,
            latency: Duration::ZERO,
            fail_rate: 0.0,
            throttle_rate: 0.0,
            timeout_rate: 0.0,
            retry_after: Duration::from_secs(1),
        }
    }
}

fn parse_share(raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("expected a share from 0 to 1, got {raw:?}"))
}

/// What the stand-in has seen, as `GET /stats` reports it.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stats {
    /// Every POST, whatever became of it.
    pub received: u64,
    /// Answered 202 (duplicates included).
    pub accepted: u64,
    /// Accepted again under a key that had already been accepted.
    pub duplicates: u64,
    pub failed: u64,
    pub throttled: u64,
    pub timed_out: u64,
    pub unauthorized: u64,
    pub bad_request: u64,
    /// Keys seen, and how many of them were POSTed more than once.
    pub distinct_keys: u64,
    pub keys_posted_more_than_once: u64,
    pub max_posts_per_key: u64,
    /// The keys accepted more than once, with their POST counts (the first 100).
    pub duplicates_by_key: HashMap<String, u64>,
}

#[derive(Default)]
struct Ledger {
    stats: Stats,
    /// Per key: the id it was accepted under (if it was) and its POST count.
    keys: HashMap<String, (Option<String>, u64)>,
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    content: String,
}

struct Shared {
    config: MockProviderConfig,
    ledger: Mutex<Ledger>,
}

/// A running stand-in provider.
pub struct MockProvider {
    pub address: SocketAddr,
    server: ServerHandle,
    shared: Arc<Shared>,
}

impl MockProvider {
    /// Binds and serves in the background of the current actix system.
    pub fn start(config: MockProviderConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .with_context(|| format!("the stand-in provider could not bind {}", config.addr))?;
        let address = listener
            .local_addr()
            .context("reading the stand-in provider's address")?;
        let shared = Arc::new(Shared {
            config,
            ledger: Mutex::new(Ledger::default()),
        });
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/stats", web::get().to(stats))
                .default_service(web::post().to(receive))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .context("starting the stand-in provider")?
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        log::info!("stand-in provider listening on http://{address} (GET /stats for what it saw)");
        Ok(Self {
            address,
            server: handle,
            shared,
        })
    }

    /// `http://<address>`; POST to any path under it.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// What it has seen so far.
    pub fn stats(&self) -> Stats {
        self.shared
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stats
            .clone()
    }

    /// Serves until `shutdown` resolves (the `mock-provider` command), then stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.server.stop(true).await;
    }
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    let stats = shared
        .ledger
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .stats
        .clone();
    HttpResponse::Ok().json(stats)
}

/// What a roll of the dice makes of one request.
enum Fate {
    TimeOut,
    Throttle,
    Fail,
    Accept,
}

fn roll(config: &MockProviderConfig) -> Fate {
    let dice: f64 = rand::random();
    if dice < config.timeout_rate {
        Fate::TimeOut
    } else if dice < config.timeout_rate + config.throttle_rate {
        Fate::Throttle
    } else if dice < config.timeout_rate + config.throttle_rate + config.fail_rate {
        Fate::Fail
    } else {
        Fate::Accept
    }
}

async fn receive(request: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let config = &shared.config;
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = header(IDEMPOTENCY_HEADER);
    let fate = roll(config);
    let answer = {
        let mut ledger = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.stats.received += 1;
        if let Some(key) = &key {
            let posts = {
                let entry = ledger.keys.entry(key.clone()).or_insert((None, 0));
                entry.1 += 1;
                entry.1
            };
            let stats = &mut ledger.stats;
            match posts {
                1 => stats.distinct_keys += 1,
                2 => stats.keys_posted_more_than_once += 1,
                _ => {}
            }
            stats.max_posts_per_key = stats.max_posts_per_key.max(posts);
        }
        decide(&mut ledger, config, &header(AUTH_HEADER), key.as_deref(), &body, fate)
    };
    match answer {
        Answer::Hold => {
            actix_rt::time::sleep(TIMEOUT_HOLD).await;
            HttpResponse::GatewayTimeout().finish()
        }
        Answer::Respond(response) => {
            if !config.latency.is_zero() {
                actix_rt::time::sleep(config.latency).await;
            }
            response
        }
    }
}

enum Answer {
    Respond(HttpResponse),
    Hold,
}

fn decide(
    ledger: &mut Ledger,
    config: &MockProviderConfig,
    auth: &Option<String>,
    key: Option<&str>,
    body: &[u8],
    fate: Fate,
) -> Answer {
    if config.auth_key.is_some() && auth != &config.auth_key {
        ledger.stats.unauthorized += 1;
        return Answer::Respond(HttpResponse::Unauthorized().json(serde_json::json!({"message": "bad auth key"})));
    }
    let well_formed = serde_json::from_slice::<SendBody>(body).is_ok_and(|b| !b.to.is_empty() && !b.content.is_empty());
    if !well_formed {
        ledger.stats.bad_request += 1;
        return Answer::Respond(
            HttpResponse::BadRequest().json(serde_json::json!({"message": "expected {\"to\", \"content\"}"})),
        );
    }
    match fate {
        Fate::TimeOut => {
            ledger.stats.timed_out += 1;
            return Answer::Hold;
        }
        Fate::Throttle => {
            ledger.stats.throttled += 1;
            return Answer::Respond(
                HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", config.retry_after.as_secs().to_string()))
                    .json(serde_json::json!({"message": "slow down"})),
            );
        }
        Fate::Fail => {
            ledger.stats.failed += 1;
            return Answer::Respond(
                HttpResponse::InternalServerError().json(serde_json::json!({"message": "try again later"})),
            );
        }
        Fate::Accept => {}
    }
    ledger.stats.accepted += 1;
    let message_id = match key.and_then(|k| ledger.keys.get_mut(k)) {
        Some((Some(original), posts)) => {
            let (original, posts) = (original.clone(), *posts);
            ledger.stats.duplicates += 1;
            if let Some(key) = key
                && (ledger.stats.duplicates_by_key.len() < 100 || ledger.stats.duplicates_by_key.contains_key(key))
            {
                ledger.stats.duplicates_by_key.insert(key.to_owned(), posts);
            }
            original
        }
        Some((slot @ None, _)) => {
            let id = Uuid::new_v4().to_string();
            *slot = Some(id.clone());
            id
        }
        None => Uuid::new_v4().to_string(),
    };
    Answer::Respond(HttpResponse::Accepted().json(serde_json::json!({"message": "Accepted", "messageId": message_id})))
}
