//! `insider-messaging demo`: the whole service on one machine with nothing installed. It starts the
//! stand-in provider on a free port, the dispatcher on an SQLite file of its own pointed at it, enqueues
//! sample messages into an empty database, and reports progress until Ctrl-C. Any other variable set in
//! the environment (or `.env`) still wins.
//!
//! The provider, the database and the cache are the demo's own whatever the environment says, and it
//! sends no status webhooks: a `.env` written for `serve` names the real queue, and a demo on it would
//! send the real messages to the stand-in, recording them sent (and seed a real, empty queue with
//! samples for `serve` to send), and tell the real receiver about its samples.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;

use crate::{
    config::{Settings, Unset, VARIABLES, Variable},
    domain::{MessageContent, MessageStatus, NewMessage, PhoneNumber, Schedule},
    mock_provider::{MockProvider, MockProviderConfig},
    startup::Application,
    store::MessageStore,
};

/// The demo's pace: a pair every second, so progress shows within seconds.
const DEMO_DEFAULTS: &[(&str, &str)] = &[
    ("INTERVAL", "1s"),
    ("BATCH_SIZE", "2"),
    ("HTTP_ADDR", "127.0.0.1:8080"),
    // Receipts tracked: the stand-in provider reports delivery, and the console shows it.
    ("CALLBACK_AUTH_KEY", "demo-callback-key"),
];
/// The variables the demo sets itself, whatever the environment says.
const OWN_VARIABLES: &[&str] = &[
    "WEBHOOK_URL",
    "WEBHOOK_AUTH_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "STATUS_WEBHOOK_URL",
    "STATUS_WEBHOOK_SECRET",
];
/// Not `serve`'s default file: `serve` without `DATABASE_URL` keeps its queue there.
pub const DEMO_DATABASE_URL: &str = "sqlite://data/demo.db";
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
const SAMPLES: &[(&str, &str)] = &[
    ("+905551111111", "Insider - Project"),
    ("+905551111112", "Your code is 4821"),
    ("+905551111113", "Kargonuz yola çıktı"),
    ("+44 7700 900123", "Your table for two is booked at 19:30"),
    ("+1-202-555-0143", "Flash sale: 20% off until midnight"),
    ("+4915112345678", "Ihr Paket kommt heute"),
];

pub async fn run(shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // The key the stand-in asks and the dispatcher sends are one: a blank one is none for both.
    let auth_key = match std::env::var("WEBHOOK_AUTH_KEY") {
        Ok(key) => Some(key.trim().to_owned()).filter(|key| !key.is_empty()),
        Err(_) => Some("demo-key".to_owned()),
    };
    for ignored in ["DATABASE_URL", "REDIS_URL", "STATUS_WEBHOOK_URL"] {
        if std::env::var_os(ignored).is_some() {
            println!(
                "demo: {ignored} is serve's: the demo keeps to its own database and cache, and sends no status webhooks"
            );
        }
    }
    // A provider that reports delivery a second after each send: one in five undelivered, one in five
    // reported twice, one in five reported before its 202.
    let provider = MockProvider::start(MockProviderConfig {
        auth_key: auth_key.clone(),
        latency: Duration::from_millis(50),
        receipt_delay: Duration::from_secs(1),
        undelivered_rate: 0.2,
        duplicate_receipt_rate: 0.2,
        early_receipt_rate: 0.2,
        ..MockProviderConfig::default()
    })?;
    let webhook_url = format!("{}/sms", provider.url());
    let settings = Settings::from_lookup(|name| {
        match name {
            "WEBHOOK_URL" => return Some(webhook_url.clone()),
            "WEBHOOK_AUTH_KEY" => return auth_key.clone(),
            "DATABASE_URL" => return Some(DEMO_DATABASE_URL.to_owned()),
            // No cache: receipts find their message in the database. No status webhooks: the
            // receiver is the real system's, which has no business with the demo's samples.
            "REDIS_URL" | "STATUS_WEBHOOK_URL" | "STATUS_WEBHOOK_SECRET" => return None,
            _ => {}
        }
        // Empty counts as unset, as it does for `serve`: the demo's own default, not serve's (an empty
        // `HTTP_ADDR=` in `.env` opened the demo's keyless API on 0.0.0.0).
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .or_else(|| {
                DEMO_DEFAULTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            })
    })
    .context("demo settings")?;
    let content_max_chars = settings.content_max_chars.get();
    let callback_key = settings.callback_auth_key.as_ref().map(|key| key.expose().to_owned());

    let app = Application::build(settings).await?;
    let store = app.store();
    let enqueued = enqueue_samples(store.as_ref(), content_max_chars).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    if callback_key.is_some() {
        provider.send_receipts_to(format!("{base}/receipts"), callback_key);
    }
    println!(
        "demo: the dispatcher is at {base} with a stand-in provider at {}",
        provider.url()
    );
    println!("demo: Swagger UI {base}/swagger-ui/  ·  sent list {base}/messages/sent  ·  Ctrl-C stops");
    if enqueued > 0 {
        println!(
            "demo: enqueued {enqueued} sample messages; they go out two per second and turn delivered (or \
             undelivered) on the console a second later"
        );
    } else {
        println!("demo: the database already holds messages: nothing new enqueued, nothing resent");
    }

    let provider = Arc::new(provider);
    let progress = actix_rt::spawn(report_progress(Arc::clone(&store), Arc::clone(&provider)));
    let result = app.run_until(shutdown).await;
    progress.abort();
    let stats = provider.stats();
    println!(
        "demo: stopped. The provider received {} POSTs this run ({} duplicates); the data stays in the database.",
        stats.received, stats.duplicates
    );
    result
}

/// The settings `demo` reads, for `config --list`: all but those it sets itself, with its pace as
/// defaults. Its callback key is a key like any other: not listed.
pub fn variables() -> Vec<Variable> {
    VARIABLES
        .iter()
        .filter(|variable| !OWN_VARIABLES.contains(&variable.name))
        .map(|variable| {
            match DEMO_DEFAULTS
                .iter()
                .find(|(name, _)| *name == variable.name && !variable.secret)
            {
                Some((_, default)) => Variable {
                    unset: Unset::Default(default),
                    ..*variable
                },
                None => *variable,
            }
        })
        .collect()
}

/// Samples go into an empty database only, so a restart sends nothing again.
async fn enqueue_samples(store: &dyn MessageStore, content_max_chars: usize) -> anyhow::Result<usize> {
    let empty =
        store.queue_stats().await?.pending == 0 && store.list_by_status(MessageStatus::Sent, 1, None).await?.is_empty();
    if !empty {
        return Ok(0);
    }
    let samples = SAMPLES
        .iter()
        .map(|(to, content)| {
            Ok(NewMessage {
                to: PhoneNumber::parse(to).context("a sample phone number")?,
                content: MessageContent::parse(content, content_max_chars).context("a sample content")?,
                when: Schedule::default(),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(store.insert_many(&samples).await?.len())
}

async fn report_progress(store: Arc<dyn MessageStore>, provider: Arc<MockProvider>) {
    let mut last = None;
    loop {
        actix_rt::time::sleep(PROGRESS_EVERY).await;
        let pending = match store.queue_stats().await {
            Ok(stats) => stats.pending,
            Err(error) => {
                log::warn!("demo: could not read the queue: {error}");
                continue;
            }
        };
        let stats = provider.stats();
        let now = (pending, stats.accepted);
        if last != Some(now) {
            println!(
                "demo: pending {pending} · accepted by the provider this run {} · duplicates {}",
                stats.accepted, stats.duplicates
            );
            last = Some(now);
        }
    }
}
