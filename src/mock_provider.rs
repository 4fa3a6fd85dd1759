//! The stand-in provider (`insider-messaging mock-provider`): speaks `shared/provider-contract.md` so
//! the demo, the tests, the benchmark and the compose file need no real SMS provider.
//!
//! It answers `202 {"message": "Accepted", "messageId": <uuid>}`; a repeated `Idempotency-Key` gets the
//! `messageId` it got the first time, as a deduplicating provider would, and is counted as a duplicate.
//! Knobs inject what real providers do: latency, a share of 5xx, a share of 429 with `Retry-After`, a
//! share of requests that never answer in time, and a quota of N requests a second beyond which it
//! answers 429. `GET /stats` reports what it saw, arrivals per second included (`arrivals.rs`).
//!
//! With a receipts URL (`--receipts-url`, or `send_receipts_to` once the service's address is known) it
//! also reports delivery as a provider does: a receipt per accepted message after `--receipt-delay`,
//! `undelivered` for a share, sent twice for a share, and for a share sent *before* the 202 answer (the
//! race a real provider's fast carrier creates). Like a real provider's receipt queue, it POSTs a receipt
//! again, with a doubling wait, while the receiver is unreachable or answers 5xx or 429, for up to
//! `RECEIPT_RETRY_FOR`, at most `RECEIPT_CONCURRENCY` POSTs at once; with `--receipt-batch` above 1,
//! receipts that wait for a free POST go together as one JSON array (the contract allows it).
//! `GET /receipts` lists what it reported of each message, so a test can hold the service's delivery
//! states against it.

mod answer_clock;
mod arrivals;

use std::{
    collections::HashMap,
    future::Future,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, dev::ServerHandle, web};
use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::arrivals::Quota;
use self::{
    answer_clock::AnswerClock,
    arrivals::{Arrivals, Clock, QuotaWindow},
};
use crate::provider::{AUTH_HEADER, IDEMPOTENCY_HEADER};

/// How long a request picked to time out is held: longer than any sane `WEBHOOK_TIMEOUT`.
const TIMEOUT_HOLD: Duration = Duration::from_secs(120);
/// The wait before a receipt the receiver did not take goes again; it doubles up to `RECEIPT_RETRY_MAX`.
const RECEIPT_RETRY_MIN: Duration = Duration::from_millis(100);
const RECEIPT_RETRY_MAX: Duration = Duration::from_secs(5);
/// How long one receipt is retried before the stand-in gives up on it.
const RECEIPT_RETRY_FOR: Duration = Duration::from_secs(600);
/// Receipt POSTs in flight at once, as a provider's pool of receipt workers: a receiver that slows down
/// gets a queue here rather than thousands of connections.
const RECEIPT_CONCURRENCY: usize = 32;
/// The most receipts one POST carries unless `--receipt-batch` says otherwise: the contract's limit.
pub const RECEIPT_BATCH_MAX: usize = 1_000;
/// The longest an early receipt holds its 202 back; past it the receipt goes on behind the answer.
const EARLY_RECEIPT_WAIT: Duration = Duration::from_millis(500);

/// The stand-in's knobs; each flag can also come from its environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct MockProviderConfig {
    /// Address to listen on (port 0 picks a free one).
    #[arg(
        long,
        env = "MOCK_PROVIDER_ADDR",
        value_name = "IP:PORT",
        default_value = "127.0.0.1:9090"
    )]
    pub addr: SocketAddr,
    /// When set, requests must carry it in `x-ins-auth-key`, or get 401.
    #[arg(long, env = "MOCK_PROVIDER_AUTH_KEY", value_name = "TEXT", hide_env_values = true)]
    pub auth_key: Option<String>,
    /// How long after a request arrives it is answered, e.g. `50ms` (to a tenth of a millisecond).
    #[arg(long, env = "MOCK_PROVIDER_LATENCY", value_name = "DURATION", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub latency: Duration,
    /// Share of requests answered 500 (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_FAIL_RATE", value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub fail_rate: f64,
    /// Share of requests answered 429 with `Retry-After` (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_THROTTLE_RATE", value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub throttle_rate: f64,
    /// Share of requests that get no answer in time (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_TIMEOUT_RATE", value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub timeout_rate: f64,
    /// The `Retry-After` sent with a 429, in whole seconds.
    #[arg(long, env = "MOCK_PROVIDER_RETRY_AFTER", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_after: Duration,
    /// A quota such as `100/s`: requests beyond it within one wall-clock second (fixed windows, from
    /// `hh:mm:ss.000` to the next) get 429 with `Retry-After`. Unset: no quota.
    #[arg(long, env = "MOCK_PROVIDER_QUOTA", value_name = "RATE")]
    pub quota: Option<Quota>,
    /// Where delivery receipts are POSTed (the service's `/receipts`); unset: none are sent.
    #[arg(long, env = "MOCK_PROVIDER_RECEIPTS_URL", value_name = "URL")]
    pub receipts_url: Option<String>,
    /// Sent with each receipt as `x-ins-auth-key` (the service's `CALLBACK_AUTH_KEY`).
    #[arg(
        long,
        env = "MOCK_PROVIDER_RECEIPTS_KEY",
        value_name = "TEXT",
        hide_env_values = true
    )]
    pub receipts_key: Option<String>,
    /// How long after the 202 a receipt goes out.
    #[arg(long, env = "MOCK_PROVIDER_RECEIPT_DELAY", value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub receipt_delay: Duration,
    /// Share of receipts that say `undelivered` (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_UNDELIVERED_RATE", value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub undelivered_rate: f64,
    /// Share of receipts sent twice (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_DUPLICATE_RECEIPT_RATE", value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub duplicate_receipt_rate: f64,
    /// Share of receipts sent before the 202 answer (0 to 1).
    #[arg(long, env = "MOCK_PROVIDER_EARLY_RECEIPT_RATE", value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub early_receipt_rate: f64,
    /// The most receipts one POST carries (1 to 1,000): with more than 1, the receipts waiting for a
    /// free POST go together as a JSON array, as a provider's receipt queue does once it falls behind.
    #[arg(long, env = "MOCK_PROVIDER_RECEIPT_BATCH", value_name = "N", default_value_t = 1, value_parser = parse_receipt_batch)]
    pub receipt_batch: usize,
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
            quota: None,
            receipts_url: None,
            receipts_key: None,
            receipt_delay: Duration::from_secs(1),
            undelivered_rate: 0.0,
            duplicate_receipt_rate: 0.0,
            early_receipt_rate: 0.0,
            receipt_batch: 1,
        }
    }
}

fn parse_share(raw: &str) -> Result<f64, String> {
    raw.parse::<f64>()
        .ok()
        .filter(|share| (0.0..=1.0).contains(share))
        .ok_or_else(|| format!("expected a share from 0 to 1, got {raw:?}"))
}

fn parse_receipt_batch(raw: &str) -> Result<usize, String> {
    raw.parse::<usize>()
        .ok()
        .filter(|n| (1..=RECEIPT_BATCH_MAX).contains(n))
        .ok_or_else(|| format!("expected 1 to {RECEIPT_BATCH_MAX} receipts a POST, got {raw:?}"))
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
    /// Answered 429: by `--throttle-rate`, or beyond `--quota`.
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
    /// The most POSTs that arrived within any one second (a sliding window).
    pub max_in_any_second: u64,
    /// Delivery receipts POSTed (duplicates and retries included), and those the receiver did not
    /// answer 2xx.
    pub receipts_sent: u64,
    pub receipts_refused: u64,
    /// The POSTs that carried them (fewer than `receipts_sent` with `--receipt-batch` above 1).
    pub receipt_requests: u64,
    /// Receipts abandoned: refused with a 4xx other than 429, or not taken within `RECEIPT_RETRY_FOR`.
    pub receipts_given_up: u64,
    /// POSTs that arrived in each wall-clock second, the quiet ones included: the last ten minutes.
    pub posts_per_second: Vec<u64>,
    /// The second (since the Unix epoch) of `posts_per_second[0]`; none before the first POST.
    pub posts_per_second_from: Option<u64>,
}

/// What the stand-in reported of one accepted message, as `GET /receipts` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedDelivery {
    /// The `messageId` of the 202 and of the receipt.
    pub message_id: String,
    /// `delivered` or `undelivered`: the same in every copy.
    pub status: String,
    /// Copies the story sends (2 for a duplicated receipt).
    pub copies: u32,
    /// POSTs so far, retries included.
    pub posts: u64,
    /// Copies the receiver answered 2xx.
    pub acknowledged: u32,
}

struct Ledger {
    stats: Stats,
    /// Per key: the id it was accepted under (if it was) and its POST count.
    keys: HashMap<String, (Option<String>, u64)>,
    /// Keys whose delivery was reported (or is scheduled): one receipt story per message.
    reported: std::collections::HashSet<String>,
    /// Per `messageId`: what its receipt says and how far it got.
    deliveries: HashMap<String, ReportedDelivery>,
    clock: Clock,
    arrivals: Arrivals,
    quota: Option<QuotaWindow>,
}

impl Ledger {
    fn new(config: &MockProviderConfig) -> Self {
        Self {
            stats: Stats::default(),
            keys: HashMap::new(),
            reported: std::collections::HashSet::new(),
            deliveries: HashMap::new(),
            clock: Clock::start(),
            arrivals: Arrivals::default(),
            quota: config.quota.map(QuotaWindow::new),
        }
    }

    fn stats(&self) -> Stats {
        Stats {
            max_in_any_second: self.arrivals.max_in_any_second(),
            posts_per_second: self.arrivals.per_second(),
            posts_per_second_from: self.arrivals.first_second(),
            ..self.stats.clone()
        }
    }
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    content: String,
}

struct Shared {
    config: MockProviderConfig,
    ledger: Mutex<Ledger>,
    /// Where receipts go and the key they carry: from the config, or `send_receipts_to`.
    receipts: Mutex<Option<(String, Option<String>)>>,
    client: reqwest::Client,
    /// `RECEIPT_CONCURRENCY` permits, one per receipt POST in flight.
    receipt_slots: Arc<tokio::sync::Semaphore>,
    /// The receipts waiting for a POST, taken by the courier (`carry_receipts`).
    outgoing: tokio::sync::mpsc::UnboundedSender<Parcel>,
    answer_clock: AnswerClock,
}

/// One copy of a receipt on its way, and where the verdict on its POST goes.
struct Parcel {
    message_id: String,
    body: Arc<str>,
    verdict: tokio::sync::oneshot::Sender<Posted>,
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
        // reqwest's rustls wants a process-wide crypto provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the stand-in provider's receipts client")?;
        let (outgoing, parcels) = tokio::sync::mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger::new(&config)),
            receipts: Mutex::new(
                config
                    .receipts_url
                    .clone()
                    .map(|url| (url, config.receipts_key.clone())),
            ),
            config,
            client,
            receipt_slots: Arc::new(tokio::sync::Semaphore::new(RECEIPT_CONCURRENCY)),
            outgoing,
            answer_clock: AnswerClock::start()?,
        });
        actix_rt::spawn(carry_receipts(Arc::downgrade(&shared), parcels));
        let data = web::Data::from(Arc::clone(&shared));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/stats", web::get().to(stats))
                .route("/receipts", web::get().to(reported_deliveries))
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
            .stats()
    }

    /// What it reported of each accepted message so far (receipts on only), in no particular order.
    pub fn reported_deliveries(&self) -> Vec<ReportedDelivery> {
        self.shared
            .ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deliveries
            .values()
            .cloned()
            .collect()
    }

    /// From now on, posts a delivery receipt for each accepted message to `url`, with `key` as
    /// `x-ins-auth-key` (for the demo, which learns the service's address after starting this).
    pub fn send_receipts_to(&self, url: String, key: Option<String>) {
        *self.shared.receipts.lock().unwrap_or_else(PoisonError::into_inner) = Some((url, key));
    }

    /// Serves until `shutdown` resolves (the `mock-provider` command), then stops.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.server.stop(true).await;
    }
}

async fn stats(shared: web::Data<Shared>) -> HttpResponse {
    let stats = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner).stats();
    HttpResponse::Ok().json(stats)
}

async fn reported_deliveries(shared: web::Data<Shared>) -> HttpResponse {
    let ledger = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner);
    HttpResponse::Ok().json(ledger.deliveries.values().collect::<Vec<_>>())
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
    let arrived = Instant::now();
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
        // Read under the lock, so arrivals are recorded in the order of their instants.
        let now = ledger.clock.now();
        ledger.arrivals.record(now);
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
        decide(
            &mut ledger,
            config,
            &header(AUTH_HEADER),
            key.as_deref(),
            &body,
            fate,
            now,
        )
    };
    if let Answer::Respond(response) = &answer
        && response.status() == actix_web::http::StatusCode::ACCEPTED
        && let Some(message_id) = accepted_id(&shared, key.as_deref())
    {
        let report = Report::roll(&shared, message_id);
        let receipts = Arc::clone(&shared);
        if rand::random::<f64>() < config.early_receipt_rate {
            // Before the 202 leaves: the service may not have recorded the send when it arrives. Only the
            // first POST holds the answer back, and not for long: past that it goes on behind the answer
            // (not again), as do its retries and the duplicate.
            let mut pending = report.queue(&shared);
            let first = match actix_rt::time::timeout(EARLY_RECEIPT_WAIT, &mut pending).await {
                Ok(verdict) => FirstPost::Done(verdict.unwrap_or(Posted::TryAgain)),
                Err(_) => FirstPost::Pending(pending),
            };
            actix_rt::spawn(async move { report.deliver(&receipts, Some(first)).await });
        } else {
            let delay = config.receipt_delay;
            actix_rt::spawn(async move {
                actix_rt::time::sleep(delay).await;
                report.deliver(&receipts, None).await;
            });
        }
    }
    match answer {
        Answer::Hold => {
            actix_rt::time::sleep(TIMEOUT_HOLD).await;
            HttpResponse::GatewayTimeout().finish()
        }
        Answer::Respond(response) => {
            if !config.latency.is_zero() {
                shared.answer_clock.until(arrived + config.latency).await;
            }
            response
        }
    }
}

enum Answer {
    Respond(HttpResponse),
    Hold,
}

/// The id the message under `key` was accepted with, the first time it is accepted and only when
/// receipts are on: a repeat of an accepted message gets no second receipt story.
fn accepted_id(shared: &Shared, key: Option<&str>) -> Option<String> {
    shared
        .receipts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()?;
    let key = key?;
    let mut ledger = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner);
    let id = ledger.keys.get(key)?.0.clone()?;
    ledger.reported.insert(key.to_owned()).then_some(id)
}

/// The receipt story of one accepted message: what it says, and how many copies go.
struct Report {
    message_id: String,
    body: Arc<str>,
    copies: u32,
}

/// The first copy's POST, made before `Report::deliver` (an early receipt): its verdict, or the wait for it.
enum FirstPost {
    Done(Posted),
    Pending(tokio::sync::oneshot::Receiver<Posted>),
}

/// What the receiver made of one POST of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Posted {
    Taken,
    /// Unreachable, no answer in time, 5xx or 429: it goes again.
    TryAgain,
    /// Any other answer: sending it again would change nothing.
    Refused,
}

impl Report {
    /// Rolls the dice for `message_id` (undelivered for a share, twice for a share) and records it.
    fn roll(shared: &Shared, message_id: String) -> Self {
        let config = &shared.config;
        let undelivered = rand::random::<f64>() < config.undelivered_rate;
        let status = if undelivered { "undelivered" } else { "delivered" };
        let body = serde_json::json!({
            "messageId": message_id,
            "status": status,
            "at": chrono::Utc::now().to_rfc3339(),
            "error": if undelivered { Some("EC 27: absent subscriber") } else { None },
        })
        .to_string()
        .into();
        let copies = if rand::random::<f64>() < config.duplicate_receipt_rate {
            2
        } else {
            1
        };
        let delivery = ReportedDelivery {
            message_id: message_id.clone(),
            status: status.to_owned(),
            copies,
            posts: 0,
            acknowledged: 0,
        };
        let mut ledger = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.deliveries.insert(message_id.clone(), delivery);
        Self {
            message_id,
            body,
            copies,
        }
    }

    /// Sends every copy, each until it is taken or given up; `first` is a POST of the first copy
    /// already made.
    async fn deliver(self, shared: &Shared, mut first: Option<FirstPost>) {
        for _ in 0..self.copies {
            let started = std::time::Instant::now();
            let mut wait = RECEIPT_RETRY_MIN;
            loop {
                let posted = match first.take() {
                    Some(FirstPost::Done(posted)) => posted,
                    Some(FirstPost::Pending(pending)) => pending.await.unwrap_or(Posted::TryAgain),
                    None => self.post(shared).await,
                };
                match posted {
                    Posted::Taken => break,
                    Posted::TryAgain if started.elapsed() < RECEIPT_RETRY_FOR => {
                        // Jitter, so receipts refused together do not come back together.
                        actix_rt::time::sleep(wait.mul_f64(0.5 + rand::random::<f64>() / 2.0)).await;
                        wait = (wait * 2).min(RECEIPT_RETRY_MAX);
                    }
                    Posted::TryAgain | Posted::Refused => {
                        let mut ledger = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner);
                        ledger.stats.receipts_given_up += 1;
                        break;
                    }
                }
            }
        }
    }

    /// One POST of the receipt to where receipts go now, alone or beside others (`carry_receipts`).
    async fn post(&self, shared: &Shared) -> Posted {
        self.queue(shared).await.unwrap_or(Posted::TryAgain)
    }

    /// Queues one POST of the receipt; the verdict on it comes through the receiver. The courier
    /// answers every parcel it takes, and goes only with the stand-in (a parcel it cannot take is
    /// dropped, verdict and all: the receiver reads that as an error).
    fn queue(&self, shared: &Shared) -> tokio::sync::oneshot::Receiver<Posted> {
        let (verdict, posted) = tokio::sync::oneshot::channel();
        let _ = shared.outgoing.send(Parcel {
            message_id: self.message_id.clone(),
            body: Arc::clone(&self.body),
            verdict,
        });
        posted
    }
}

/// The courier: takes the receipts waiting for a POST, as many as `--receipt-batch` allows into one
/// (an object alone, an array together), at most `RECEIPT_CONCURRENCY` POSTs in flight. Receipts gather
/// only while every POST is taken, so a receiver that keeps up gets them one by one.
async fn carry_receipts(shared: std::sync::Weak<Shared>, mut parcels: tokio::sync::mpsc::UnboundedReceiver<Parcel>) {
    while let Some(first) = parcels.recv().await {
        let Some(shared) = shared.upgrade() else { return };
        // The semaphore is never closed, so a permit always comes.
        let Ok(slot) = Arc::clone(&shared.receipt_slots).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < shared.config.receipt_batch {
            match parcels.try_recv() {
                Ok(parcel) => batch.push(parcel),
                Err(_) => break,
            }
        }
        actix_rt::spawn(async move {
            let posted = post_receipts(&shared, &batch).await;
            drop(slot);
            let mut ledger = shared.ledger.lock().unwrap_or_else(PoisonError::into_inner);
            ledger.stats.receipt_requests += 1;
            ledger.stats.receipts_sent += batch.len() as u64;
            if posted != Posted::Taken {
                ledger.stats.receipts_refused += batch.len() as u64;
            }
            for parcel in batch {
                if let Some(delivery) = ledger.deliveries.get_mut(&parcel.message_id) {
                    delivery.posts += 1;
                    delivery.acknowledged += u32::from(posted == Posted::Taken);
                }
                // A copy whose story was dropped needs no verdict.
                let _ = parcel.verdict.send(posted);
            }
        });
    }
}

/// One POST of `batch` to where receipts go now: the receipt itself when alone, else an array.
async fn post_receipts(shared: &Shared, batch: &[Parcel]) -> Posted {
    let Some((url, key)) = shared.receipts.lock().unwrap_or_else(PoisonError::into_inner).clone() else {
        return Posted::Refused;
    };
    let body = match batch {
        [one] => one.body.to_string(),
        _ => format!(
            "[{}]",
            batch.iter().map(|parcel| &*parcel.body).collect::<Vec<_>>().join(",")
        ),
    };
    let mut request = shared
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = &key {
        request = request.header(AUTH_HEADER, key);
    }
    match request.send().await {
        Ok(answer) if answer.status().is_success() => Posted::Taken,
        Ok(answer)
            if answer.status().is_server_error() || answer.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
        {
            Posted::TryAgain
        }
        Ok(_) => Posted::Refused,
        Err(_) => Posted::TryAgain,
    }
}

fn decide(
    ledger: &mut Ledger,
    config: &MockProviderConfig,
    auth: &Option<String>,
    key: Option<&str>,
    body: &[u8],
    fate: Fate,
    now: Duration,
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
    // The quota comes before the dice: a request over it gets 429 whatever else would have become of it.
    if ledger.quota.as_mut().is_some_and(|quota| !quota.admit(now)) {
        return throttle(ledger, config);
    }
    match fate {
        Fate::TimeOut => {
            ledger.stats.timed_out += 1;
            return Answer::Hold;
        }
        Fate::Throttle => return throttle(ledger, config),
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

fn throttle(ledger: &mut Ledger, config: &MockProviderConfig) -> Answer {
    ledger.stats.throttled += 1;
    Answer::Respond(
        HttpResponse::TooManyRequests()
            .insert_header(("Retry-After", config.retry_after.as_secs().to_string()))
            .json(serde_json::json!({"message": "slow down"})),
    )
}
