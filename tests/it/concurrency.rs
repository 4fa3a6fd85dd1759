//! Two dispatchers on one database, sending at once: every message reaches the provider exactly once.
//! On Postgres they stand for two replicas; on SQLite for two `serve` processes on one file. The queue
//! mixes every way of scheduling a message: priorities, send times, expiries.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use insider_messaging::domain::{MessageContent, MessageStatus, NewMessage, PhoneNumber, Priority, Schedule};
use uuid::Uuid;
use wiremock::MockServer;

use crate::helpers::*;

/// Plain messages, then as many scheduled ones.
const PLAIN: usize = 150;
const SCHEDULED: usize = 150;
/// The messages that are sent: all but the opted-out ones.
const MESSAGES: usize = PLAIN + SCHEDULED - OPTED_OUT;
/// Messages that expire before sending starts: never posted.
const EXPIRING: usize = 10;
/// Scheduled messages whose numbers opt out before sending starts: never posted.
const OPTED_OUT: usize = 5;

/// `n` messages in every priority, a fifth of them due only in a second, all with an expiry far off;
/// then `EXPIRING` that expire at once.
async fn enqueue_scheduled(database: &TestDatabase, n: usize) -> (Vec<Uuid>, Vec<Uuid>) {
    let message = |i: usize, when: Schedule| NewMessage {
        to: PhoneNumber::parse(&format!("+9055533{i:05}")).expect("valid number"),
        content: MessageContent::parse(&format!("scheduled {i}"), 160).expect("valid content"),
        when,
    };
    let now = Utc::now();
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| {
            message(
                i,
                Schedule {
                    priority: Priority::ALL[i % 3],
                    send_at: (i % 5 == 0).then(|| now + chrono::Duration::seconds(1)),
                    expires_at: Some(now + chrono::Duration::hours(1)),
                    timezone: (i % 7 == 0).then_some(chrono_tz::Tz::Europe__Istanbul),
                    campaign: (i % 4 == 0).then(|| "spring".to_owned()),
                },
            )
        })
        .collect();
    let expiring: Vec<NewMessage> = (n..n + EXPIRING)
        .map(|i| {
            message(
                i,
                Schedule {
                    priority: Priority::ALL[i % 3],
                    expires_at: Some(now + chrono::Duration::milliseconds(1)),
                    ..Schedule::default()
                },
            )
        })
        .collect();
    let ids = |stored: Vec<insider_messaging::domain::Message>| stored.into_iter().map(|m| m.id).collect();
    (
        ids(database.store.insert_many(&messages).await.expect("insert")),
        ids(database.store.insert_many(&expiring).await.expect("insert")),
    )
}

/// Two instances on `database` sending (`INTERVAL=20ms`, with `vars`) to one provider that accepts
/// everything after `delay`.
async fn two_sending(
    database: &TestDatabase,
    delay: Duration,
    vars: &[(&'static str, String)],
) -> (TestApp, TestApp, Arc<MockServer>) {
    let provider = MockServer::start().await;
    accept_all(&provider, delay).await;
    let provider = Arc::new(provider);
    let spawn = || {
        let mut builder = TestApp::builder()
            .database(database)
            .provider(&provider)
            .var("INTERVAL", "20ms");
        for (name, value) in vars {
            builder = builder.var(name, value.clone());
        }
        builder.spawn()
    };
    let (first, second) = (spawn().await, spawn().await);
    first.post_start().await;
    second.post_start().await;
    (first, second, provider)
}

/// `QUIET_HOURS` two to three hours from now in Istanbul: every `low` message (all to +90 numbers) is
/// checked against it, and none is held.
fn quiet_hours_elsewhere() -> String {
    let now = Utc::now().with_timezone(&chrono_tz::Tz::Europe__Istanbul);
    let at = |offset: i64| (now + chrono::Duration::hours(offset)).format("%H:%M").to_string();
    format!("{}-{}", at(2), at(3))
}

async fn two_dispatchers_send_every_message_exactly_once(database: TestDatabase) {
    let mut ids = database.insert_many(PLAIN).await;
    let (mut scheduled, expiring) = enqueue_scheduled(&database, SCHEDULED).await;
    // The last few scheduled messages' numbers opt out.
    let opted_out = scheduled.split_off(SCHEDULED - OPTED_OUT);
    for id in &opted_out {
        let to = database.store.get(*id).await.expect("read").expect("stored").to;
        database
            .opt_outs
            .add_opt_out(&PhoneNumber::parse(&to).expect("valid number"))
            .await
            .expect("opt out");
    }
    ids.extend(scheduled);
    let expired_by = Utc::now() + chrono::Duration::milliseconds(1);
    wait_until("the expiring ones are past their expiry", || async {
        Utc::now() > expired_by
    })
    .await;
    // A little latency keeps both instances busy at once instead of one draining the queue alone.
    let (first, second, provider) = two_sending(
        &database,
        Duration::from_millis(5),
        &[
            ("BATCH_SIZE", "10".to_owned()),
            ("QUIET_HOURS", quiet_hours_elsewhere()),
            // Checked on every claim, binding on none: each number gets one message.
            ("RECIPIENT_DAILY_LIMIT", "1".to_owned()),
        ],
    )
    .await;

    wait_until("every message is sent, expired or suppressed", || async {
        database.count_with_status("sent").await == MESSAGES as i64
            && database.count_with_status("expired").await == EXPIRING as i64
            && database.count_with_status("suppressed").await == OPTED_OUT as i64
    })
    .await;
    first.settle().await;
    second.settle().await;

    let posts = posts_per_key(&provider).await;
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    assert_eq!(posts.len(), MESSAGES);
    assert!(ids.iter().all(|id| posts.contains_key(&id.to_string())));
    assert!(
        expiring.iter().all(|id| !posts.contains_key(&id.to_string())),
        "an expired message is never posted"
    );
    assert!(
        opted_out.iter().all(|id| !posts.contains_key(&id.to_string())),
        "a message to an opted-out number is never posted"
    );
    let by_first = first.metric("sends_total{outcome=\"accepted\"}").await;
    let by_second = second.metric("sends_total{outcome=\"accepted\"}").await;
    assert_eq!(by_first + by_second, MESSAGES as f64);
    assert!(
        by_first > 0.0 && by_second > 0.0,
        "both sent: {by_first} and {by_second}"
    );
    assert_eq!(
        first.all_sent(100).await.len(),
        MESSAGES,
        "the sent list shows them all"
    );
}

#[actix_web::test]
async fn two_dispatchers_on_one_postgres_database_send_every_message_exactly_once() {
    two_dispatchers_send_every_message_exactly_once(TestDatabase::create().await).await;
}

#[actix_web::test]
async fn two_dispatchers_on_one_sqlite_file_send_every_message_exactly_once() {
    two_dispatchers_send_every_message_exactly_once(TestDatabase::sqlite().await).await;
}

#[actix_web::test]
async fn two_dispatchers_racing_for_one_number_on_postgres_send_it_no_more_than_its_daily_limit() {
    two_dispatchers_racing_for_one_number_send_it_no_more_than_its_daily_limit(TestDatabase::create().await).await;
}

#[actix_web::test]
async fn two_dispatchers_racing_for_one_number_on_sqlite_send_it_no_more_than_its_daily_limit() {
    two_dispatchers_racing_for_one_number_send_it_no_more_than_its_daily_limit(TestDatabase::sqlite().await).await;
}

async fn two_dispatchers_racing_for_one_number_send_it_no_more_than_its_daily_limit(database: TestDatabase) {
    const MESSAGES: usize = 12;
    const LIMIT: usize = 2;
    let to = PhoneNumber::parse("+905551234567").expect("valid number");
    let messages: Vec<NewMessage> = (0..MESSAGES)
        .map(|i| NewMessage {
            to: to.clone(),
            content: MessageContent::parse(&format!("race {i}"), 160).expect("valid content"),
            when: Schedule::default(),
        })
        .collect();
    let ids: Vec<Uuid> = database
        .store
        .insert_many(&messages)
        .await
        .expect("insert")
        .into_iter()
        .map(|m| m.id)
        .collect();
    // Slower than a tick: each instance claims the next message while its last is still in flight.
    let (first, second, provider) = two_sending(
        &database,
        Duration::from_millis(100),
        &[
            ("BATCH_SIZE", "1".to_owned()),
            ("RECIPIENT_DAILY_LIMIT", LIMIT.to_string()),
        ],
    )
    .await;

    wait_until("the rest wait out the day", || async {
        let mut waiting = 0;
        for id in &ids {
            let message = database.store.get(*id).await.expect("read").expect("stored");
            waiting += usize::from(
                message.status == MessageStatus::Pending
                    && message.next_attempt_at > Utc::now() + chrono::Duration::hours(1),
            );
        }
        waiting == MESSAGES - LIMIT
    })
    .await;
    first.settle().await;
    second.settle().await;

    assert_eq!(database.count_with_status("sent").await, LIMIT as i64);
    assert_eq!(posts_per_key(&provider).await.len(), LIMIT, "the provider saw no more");
}
