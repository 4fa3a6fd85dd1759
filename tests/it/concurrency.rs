//! Two dispatchers on one database, sending at once: every message reaches the provider exactly once.
//! On Postgres they stand for two replicas; on SQLite for two `serve` processes on one file.

use std::{sync::Arc, time::Duration};

use wiremock::MockServer;

use crate::helpers::*;

const MESSAGES: usize = 300;

async fn two_dispatchers_send_every_message_exactly_once(database: TestDatabase) {
    let ids = database.insert_many(MESSAGES).await;
    let provider = MockServer::start().await;
    // A little latency keeps both instances busy at once instead of one draining the queue alone.
    accept_all(&provider, Duration::from_millis(5)).await;
    let provider = Arc::new(provider);
    let spawn = || {
        TestApp::builder()
            .database(&database)
            .provider(&provider)
            .var("INTERVAL", "20ms")
            .var("BATCH_SIZE", "10")
            .spawn()
    };
    let (first, second) = (spawn().await, spawn().await);
    first.post_start().await;
    second.post_start().await;

    wait_until("every message is sent", || async {
        database.count_with_status("sent").await == MESSAGES as i64
    })
    .await;
    first.settle().await;
    second.settle().await;

    let posts = posts_per_key(&provider).await;
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    assert_eq!(posts.len(), MESSAGES);
    assert!(ids.iter().all(|id| posts.contains_key(&id.to_string())));
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
