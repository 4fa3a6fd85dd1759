//! What a Rust user would pick instead of insider-messaging, doing the same job, so `make bench` can put
//! the two side by side in one run: apalis 1.x on its Postgres storage, with reqwest POSTing each message
//! to the provider and apalis marking it done.
//!
//! It migrates apalis's storage into the database it is given, enqueues `--messages` jobs `{to, content}`
//! in bulk, then times a worker that POSTs each one with the headers insider-messaging sends
//! (`Idempotency-Key`: the job's id; `x-ins-auth-key` when given) until all are done, and prints
//! `{"messages", "seconds", "per_second", ...}` as one line of JSON. Like the service's bench, the clock
//! runs from the moment sending starts to the moment the last result is committed.
//!
//! Tuned as apalis documents it, and no further:
//! - `Config::batch_size` (default 10) is raised to the concurrency: its doc says larger batches "improve
//!   throughput by reducing the number of queue operations", and a fetch of one batch then fills every
//!   free slot;
//! - `.concurrency(n)` (tower's concurrency limit: `n` handlers in flight, so `n` provider connections)
//!   with `.parallelize(tokio::spawn)`, as the apalis README's usage example pairs them, on the
//!   multi-threaded runtime;
//! - `poll_with_interval(5ms)`, the service's `INTERVAL` in the bench: apalis fetches again as soon as a
//!   batch is handed out and polls only when a fetch came back empty, so this matters only when idle;
//! - everything else at apalis's defaults (task locking, persisted results, 30 s heartbeat, 25 attempts).

use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use apalis::prelude::*;
use apalis_postgres::{Config, PgPool, PostgresStorage};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// The queue (apalis's `job_type`) the jobs go to.
const QUEUE: &str = "sms";
/// The longest one POST may take, as the service's default `WEBHOOK_TIMEOUT`.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
struct Args {
    /// Postgres database to use; apalis's migrations create schema `apalis` in it (and the hstore
    /// extension, so the role needs that right).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Where each message is POSTed, e.g. the stand-in provider's `http://127.0.0.1:9090/sms`.
    #[arg(long)]
    webhook_url: String,
    /// Sent as `x-ins-auth-key` when set.
    #[arg(long, env = "WEBHOOK_AUTH_KEY", hide_env_values = true)]
    auth_key: Option<String>,
    /// Jobs to enqueue and then send.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// POSTs in flight at once (and jobs fetched a batch).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How often an idle worker asks for jobs, in milliseconds.
    #[arg(long, default_value_t = 5)]
    poll_interval_ms: u64,
}

/// The job: what the service's `POST /messages` takes, and what the provider's contract wants.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Message {
    to: String,
    content: String,
}

#[derive(Deserialize)]
struct Accepted {
    #[serde(rename = "messageId")]
    message_id: String,
}

/// What every handler shares: the HTTP client and where it is sending, and how many are done.
#[derive(Clone)]
struct Provider {
    http: reqwest::Client,
    url: String,
    auth_key: Option<String>,
    sent: Arc<AtomicUsize>,
    total: usize,
}

#[derive(Serialize)]
struct Report {
    messages: usize,
    seconds: f64,
    per_second: f64,
    enqueue_seconds: f64,
    concurrency: usize,
    batch_size: usize,
}

/// POSTs one message; `Ok` makes apalis mark the job done (storing the provider's id as its result),
/// `Err` makes it retry the job later.
async fn send(
    message: Message,
    id: TaskId,
    provider: Data<Provider>,
    worker: WorkerContext,
) -> Result<String, BoxDynError> {
    let mut request = provider
        .http
        .post(&provider.url)
        .header("Idempotency-Key", id.to_string())
        .json(&message);
    if let Some(key) = &provider.auth_key {
        request = request.header("x-ins-auth-key", key);
    }
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(format!("provider answered {status}").into());
    }
    let accepted: Accepted = serde_json::from_slice(&body)?;
    if provider.sent.fetch_add(1, Ordering::Relaxed) + 1 == provider.total {
        // The last one: stop taking jobs; `run` returns once the results in hand are written.
        worker.stop()?;
    }
    Ok(accepted.message_id)
}

fn message(i: usize) -> Message {
    Message {
        to: format!("+90555{i:07}"),
        content: format!("apalis {i}: Insider - Project"),
    }
}

async fn run(args: Args) -> Result<Report, BoxDynError> {
    let pool = PgPool::connect(&args.database_url).await?;
    PostgresStorage::<()>::setup(&pool).await?;
    let config = Config::default().queue(QUEUE).batch_size(args.concurrency);
    let mut storage = PostgresStorage::<Message>::new(&pool).with_config(config);

    let enqueue_started = Instant::now();
    storage.push_bulk((0..args.messages).map(message).collect()).await?;
    let enqueue_seconds = enqueue_started.elapsed().as_secs_f64();

    let provider = Provider {
        http: reqwest::Client::builder().timeout(WEBHOOK_TIMEOUT).build()?,
        url: args.webhook_url,
        auth_key: args.auth_key,
        sent: Arc::new(AtomicUsize::new(0)),
        total: args.messages,
    };
    let backend = storage.poll_with_interval(Duration::from_millis(args.poll_interval_ms));
    let started = Instant::now();
    WorkerBuilder::new("apalis-baseline")
        .backend(backend)
        .data(provider)
        .concurrency(args.concurrency)
        .parallelize(tokio::spawn)
        .build(send)
        .run()
        .await?;
    let seconds = started.elapsed().as_secs_f64();

    // A job handled twice would have stopped the worker early: count what the database says is done.
    let done: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = 'Done'")
        .bind(QUEUE)
        .fetch_one(&pool)
        .await?;
    if done != args.messages as i64 {
        return Err(format!("{done} of {} jobs are done", args.messages).into());
    }
    Ok(Report {
        messages: args.messages,
        seconds,
        per_second: args.messages as f64 / seconds,
        enqueue_seconds,
        concurrency: args.concurrency,
        batch_size: args.concurrency,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.messages == 0 || args.concurrency == 0 {
        eprintln!("apalis-baseline: --messages and --concurrency must be at least 1");
        return ExitCode::FAILURE;
    }
    match run(args).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("apalis-baseline: writing the report: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("apalis-baseline: {error}");
            ExitCode::FAILURE
        }
    }
}
