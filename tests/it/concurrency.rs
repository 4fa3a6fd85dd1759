//! Two dispatchers on one database, sending at once: every message reaches the provider exactly once.

use crate::helpers::*;

#[actix_web::test]
async fn two_dispatchers_on_one_database_send_every_message_exactly_once() {
    const MESSAGES: usize = 300;
    let database = TestDatabase::create().await;
    let ids = database.insert_many(MESSAGES).await;
    let first = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        .var("INTERVAL", "20ms")
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;
    let second = TestApp::builder()
        .database(&database)
        .provider(&first.provider)
        .var("AUTOSTART", "true")
        .var("INTERVAL", "20ms")
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;

    wait_until("every message is sent", || async {
        database.count_with_status("sent").await == MESSAGES as i64
    })
    .await;
    first.settle().await;
    second.settle().await;

    let posts = posts_per_key(&first.provider).await;
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
}
