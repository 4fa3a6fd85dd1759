//! Flow control across replicas: the cluster's rate cap, a provider's 429 pausing every replica without
//! spending attempts, the run-ahead buffer given back on a drain, and a database that stops answering
//! mid-drain losing nothing.

use std::{sync::Arc, time::Duration};

use insider_messaging::{
    dispatch::messages::TickSkipped,
    mock_provider::{MockProvider, MockProviderConfig},
};
use serde_json::json;
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::helpers::*;

/// The stand-in provider, in process, accepting everything at once.
fn stand_in() -> MockProvider {
    MockProvider::start(MockProviderConfig::default()).expect("the stand-in starts")
}

#[actix_web::test]
async fn three_replicas_together_never_exceed_the_rate_limit() {
    const MESSAGES: usize = 150;
    const RATE: f64 = 50.0;
    let database = TestDatabase::create().await;
    let ids = database.insert_many(MESSAGES).await;
    let provider = stand_in();
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let app = TestApp::builder()
            .database(&database)
            .var("WEBHOOK_URL", format!("{}/sms", provider.url()))
            .var("INTERVAL", "5ms")
            .var("BATCH_SIZE", "500")
            .var("WEBHOOK_CONCURRENCY", "16")
            .var("RATE_LIMIT", "50/s")
            .spawn()
            .await;
        replicas.push(app);
    }
    for app in &replicas {
        app.post_start().await;
    }

    wait_until("every message is sent", || async {
        database.count_with_status("sent").await == MESSAGES as i64
    })
    .await;

    let stats = provider.stats();
    assert_eq!(stats.distinct_keys, ids.len() as u64);
    assert_eq!(stats.keys_posted_more_than_once, 0);
    // The burst the rate allows on top of it: 50 ms' worth, 5%.
    assert!(
        stats.max_in_any_second as f64 <= RATE * 1.05 + 1.0,
        "{} POSTs within one second, at a cap of {RATE}/s",
        stats.max_in_any_second
    );
    let mut senders = 0;
    for app in &replicas {
        if app.metric("sends_total{outcome=\"accepted\"}").await > 0.0 {
            senders += 1;
        }
        let (_, scheduler) = app.get("/scheduler").await;
        assert_eq!(scheduler["flow"]["rate_limit_per_second"], RATE, "{scheduler}");
    }
    assert!(senders >= 2, "the replicas draw on one budget: {senders} of them sent");
}

#[actix_web::test]
async fn a_429_on_one_replica_pauses_the_others_and_spends_no_attempt() {
    let database = TestDatabase::create().await;
    let throttling = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_json(json!({"message": "slow down"})),
        )
        .mount(&throttling)
        .await;
    let throttled = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(throttling))
        // One attempt only: a 429 that counted would make the message a dead letter.
        .var("MAX_RETRIES", "1")
        .spawn()
        .await;
    let other = TestApp::builder().database(&database).spawn().await;
    let first = database.insert_raw("+905551111111", "hello").await;

    throttled.tick_and_settle().await;

    let row = database.row(first).await;
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0), "{row:?}");
    assert!(row.last_error.unwrap().starts_with("provider answered 429"));
    assert_eq!(throttled.metric("throttled_total").await, 1.0);
    database.make_due(first).await;
    let second = database.insert_raw("+905552222222", "hello").await;

    let report = other.tick_and_settle().await;

    assert_eq!(report.skipped, Some(TickSkipped::Throttled), "{report:?}");
    assert!(other.provider.received_requests().await.unwrap().is_empty());
    let (_, scheduler) = other.get("/scheduler").await;
    assert!(
        scheduler["flow"]["throttled_for_seconds"]
            .as_f64()
            .is_some_and(|left| left > 0.0),
        "{scheduler}"
    );

    wait_for("the pause ends and the other replica sends both", || async {
        other.tick_and_settle().await;
        (database.count_with_status("sent").await == 2).then_some(())
    })
    .await;
    let row = database.row(first).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("sent", 1),
        "the 429 did not count"
    );
    assert_eq!(database.row(second).await.status, "sent");
}

/// Right after sending starts, the answers the provider accepted are not flushed yet: the rate a 429
/// cuts to starts from what the replica was answered, not from the rows recorded sent (none: 1/s).
#[actix_web::test]
async fn a_429_before_the_burst_is_recorded_cuts_the_rate_to_half_of_what_went_through() {
    const QUOTA: f64 = 30.0;
    let provider = MockProvider::start(MockProviderConfig {
        quota: Some("30/s".parse().expect("a quota")),
        ..MockProviderConfig::default()
    })
    .expect("the stand-in starts");
    let database = TestDatabase::create().await;
    database.insert_many(300).await;
    // A few POSTs at a time, so that the quota's 30 are answered before the first 429 is: with many at
    // once the answers interleave, and the cut halves only those in before it.
    let app = TestApp::builder()
        .database(&database)
        .var("WEBHOOK_URL", format!("{}/sms", provider.url()))
        .var("INTERVAL", "5ms")
        .var("BATCH_SIZE", "500")
        .var("WEBHOOK_CONCURRENCY", "4")
        .spawn()
        .await;
    // Every flush writes the history first: holding it holds every result unrecorded, as a burst's
    // flushes are in the moment its first 429 comes. The claims and the 429's pause go on.
    let hold = database
        .hold_lock("LOCK TABLE message_attempts IN EXCLUSIVE MODE")
        .await;

    app.post_start().await;
    let cut: f64 = wait_for("the 429 cuts the cluster's rate", || async {
        sqlx::query_scalar::<_, Option<f64>>("SELECT cut_rate FROM send_rate")
            .fetch_one(database.pg())
            .await
            .unwrap()
    })
    .await;
    assert_eq!(database.count_with_status("sent").await, 0, "nothing recorded yet");
    hold.rollback().await.unwrap();

    assert!(provider.stats().throttled > 0, "the quota was hit");
    assert!(
        (QUOTA / 4.0..=QUOTA).contains(&cut),
        "half of the {QUOTA} a second the provider took (or of two seconds' worth, when the burst straddled two): {cut}/s"
    );
    wait_until("the held results are recorded", || async {
        database.count_with_status("sent").await >= QUOTA as i64
    })
    .await;
}

/// The claims waiting in the run-ahead buffer were drawn at the rate the provider just refused: a 429
/// gives them back at once, instead of keeping them to send together when the pause ends.
#[actix_web::test]
async fn a_429_gives_the_run_ahead_buffer_back_at_once() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "5")
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&provider)
        .await;
    let (database, _, app) = two_posted_and_two_waiting(provider, 4).await;
    let posted = std::time::Instant::now();

    wait_until("every message is pending again, none in the buffer", || async {
        database.count_with_status("pending").await == 4 && app.get("/scheduler").await.1["flow"]["run_ahead"] == 0
    })
    .await;

    // Well inside the 5 s pause: before, the buffer waited it out and then went out as one burst.
    assert!(posted.elapsed() < Duration::from_secs(3), "{:?}", posted.elapsed());
    assert_eq!(
        app.provider.received_requests().await.unwrap().len(),
        2,
        "only the two in flight"
    );
    assert_eq!(app.metric("throttled_total").await, 2.0);
}

#[actix_web::test]
async fn a_drain_gives_back_every_claim_waiting_in_the_run_ahead_buffer() {
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::from_millis(1500)).await;
    let (database, ids, app) = two_posted_and_two_waiting(provider, 10).await;
    let provider = Arc::clone(&app.provider);

    app.shutdown().await.expect("a clean drain");

    assert_eq!(
        provider.received_requests().await.unwrap().len(),
        2,
        "nothing posted after the stop"
    );
    assert_eq!(
        database.count_with_status("sent").await,
        2,
        "the two in flight finished"
    );
    assert_eq!(
        database.count_with_status("sending").await,
        0,
        "every other claim was given back"
    );
    assert_eq!(database.count_with_status("pending").await, 8);
    for id in &ids {
        let row = database.row(*id).await;
        if row.status == "pending" {
            assert_eq!(row.attempts, 0, "a claim given back spends no attempt");
        }
    }
}

#[actix_web::test]
async fn a_database_that_stops_answering_mid_drain_stops_the_claims_and_loses_nothing() {
    const MESSAGES: usize = 400;
    let database = TestDatabase::create().await;
    let ids = database.insert_many(MESSAGES).await;
    let provider = stand_in();
    let app = TestApp::builder()
        .database(&database)
        .var("WEBHOOK_URL", format!("{}/sms", provider.url()))
        .var("AUTOSTART", "true")
        .var("INTERVAL", "10ms")
        .var("BATCH_SIZE", "20")
        .var("WEBHOOK_CONCURRENCY", "8")
        .spawn()
        .await;
    wait_until("the drain is under way", || async {
        database.count_with_status("sent").await >= 40
    })
    .await;

    // Every statement on `messages` now waits, as against a database that stopped answering.
    let lock = database.hold_lock("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE").await;
    let posts_at_lock = provider.stats().received;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, early) = app.get("/scheduler").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts_during_lock = provider.stats().received - posts_at_lock;
    let (_, scheduler) = app.get("/scheduler").await;
    lock.rollback().await.unwrap();

    // What was claimed (the slots and the buffer) may still go out; nothing more is claimed.
    assert!(
        posts_during_lock <= 8 + 8,
        "{posts_during_lock} POSTs while the database was stuck"
    );
    // Held in memory: what the slots and the buffer had, the answers a blocked flush holds, and one claim
    // that may have committed as the lock landed (up to a slot round and a buffer). It does not grow.
    let in_flight = scheduler["in_flight"].as_u64().unwrap();
    assert_eq!(
        in_flight,
        early["in_flight"].as_u64().unwrap(),
        "nothing claimed while stuck: {scheduler}"
    );
    assert!(in_flight <= 2 * (8 + 8) + 8, "{in_flight} held in memory: {scheduler}");
    wait_until("every message is sent", || async {
        database.count_with_status("sent").await == MESSAGES as i64
    })
    .await;
    app.settle().await;
    let stats = provider.stats();
    assert_eq!(stats.distinct_keys, ids.len() as u64);
    assert_eq!(stats.keys_posted_more_than_once, 0, "nothing posted twice");
    assert_eq!(database.count_with_status("sending").await, 0);
}

#[actix_web::test]
async fn a_429_under_a_rate_limit_resumes_when_its_pause_ends_not_at_the_next_tick() {
    const MESSAGES: usize = 40;
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&provider)
        .await;
    accept_all(&provider, Duration::ZERO).await;
    let database = TestDatabase::create().await;
    database.insert_many(MESSAGES).await;
    let started = std::time::Instant::now();
    let _app = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(provider))
        .var("AUTOSTART", "true")
        .var("RATE_LIMIT", "20/s")
        .var("BATCH_SIZE", "500")
        .spawn()
        .await;

    // The tick (INTERVAL is an hour) starts the drain; the pace and the pause's end carry it on.
    wait_until("every message is sent", || async {
        database.count_with_status("sent").await == MESSAGES as i64
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "two seconds at 20/s and a one-second pause: {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn a_claim_under_way_when_the_provider_refuses_our_key_is_given_back() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(800)))
        .mount(&provider)
        .await;
    let database = TestDatabase::create().await;
    let ids = database.insert_many(2).await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(provider))
        .var("BATCH_SIZE", "1")
        .spawn()
        .await;
    app.pipeline.tick_now().await.expect("tick");

    // The next claim waits on the table while the first message's 401 comes back.
    let lock = database.hold_lock("LOCK TABLE messages IN EXCLUSIVE MODE").await;
    let pipeline = app.pipeline.clone();
    let second = actix_rt::spawn(async move { pipeline.tick_now().await });
    wait_until("the provider refused our key", || async {
        app.metric("provider_credentials_refused").await == 1.0
    })
    .await;
    lock.rollback().await.expect("release the table");
    second.await.expect("the tick's task").expect("tick");

    wait_until("both are pending again, none left sending", || async {
        database.count_with_status("pending").await == 2
    })
    .await;
    for id in ids {
        assert_eq!(database.row(id).await.attempts, 0, "a refusal spends no attempt");
    }
    assert_eq!(
        app.provider.received_requests().await.unwrap().len(),
        1,
        "only the first was posted"
    );
}

/// Once the provider refuses our key, the send slots and the run-ahead buffer empty (each answer given
/// back, the buffer given back), and their gauges say so: they stayed at what they were before the pause,
/// which reads as a slow provider.
#[actix_web::test]
async fn the_slot_and_buffer_gauges_empty_once_the_provider_refuses_our_key() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(401).set_delay(Duration::from_millis(500)))
        .mount(&provider)
        .await;
    let database = TestDatabase::create().await;
    database.insert_many(12).await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(provider))
        .var("BATCH_SIZE", "12")
        .var("WEBHOOK_CONCURRENCY", "5")
        .spawn()
        .await;
    app.pipeline.tick_now().await.expect("tick");
    wait_until("the provider refused our key", || async {
        app.metric("provider_credentials_refused").await == 1.0
    })
    .await;
    wait_until("every claim is pending again", || async {
        database.count_with_status("pending").await == 12
    })
    .await;
    wait_until("the gauges show no slot in use and nothing buffered", || async {
        app.metric("send_slots_in_use").await == 0.0 && app.metric("claim_buffer_depth").await == 0.0
    })
    .await;
}

/// `messages` enqueued and sending on `provider` with two slots, a tick's batch of all of them: two are
/// posted and two more wait in the run-ahead buffer.
async fn two_posted_and_two_waiting(provider: MockServer, messages: usize) -> (TestDatabase, Vec<Uuid>, TestApp) {
    let database = TestDatabase::create().await;
    let ids = database.insert_many(messages).await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(provider))
        .var("AUTOSTART", "true")
        .var("INTERVAL", "20ms")
        .var("BATCH_SIZE", messages.to_string())
        .var("WEBHOOK_CONCURRENCY", "2")
        .spawn()
        .await;
    wait_until("two are posted and two more wait for a slot", || async {
        app.get("/scheduler").await.1["flow"]["run_ahead"] == 2
    })
    .await;
    (database, ids, app)
}

#[actix_web::test]
async fn a_replica_that_meets_the_clusters_pause_resumes_when_it_ends_not_at_the_next_tick() {
    const MESSAGES: usize = 20;
    let database = TestDatabase::create().await;
    database.insert_many(MESSAGES).await;
    // Another replica's 429 paused the cluster for a second.
    sqlx::query("UPDATE send_rate SET throttled_until = now() + interval '1 second' WHERE id = 1")
        .execute(database.pg())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let _app = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        .var("BATCH_SIZE", "500")
        .spawn()
        .await;

    // Its first tick (INTERVAL is an hour) meets the pause; the pause's end carries the drain on.
    wait_until("every message is sent", || async {
        database.count_with_status("sent").await == MESSAGES as i64
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
}

#[actix_web::test]
async fn a_later_429_asking_for_a_longer_pause_stretches_the_clusters() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&provider)
        .await;
    // The other send in flight is answered after the first 429 paused the cluster, and asks for longer.
    Mock::given(matchers::method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_delay(Duration::from_millis(500)),
        )
        .with_priority(2)
        .mount(&provider)
        .await;
    let database = TestDatabase::create().await;
    database.insert_many(2).await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(provider))
        .spawn()
        .await;

    app.tick_and_settle().await;

    wait_for("the cluster's pause runs 30 s", || async {
        let left: f64 = sqlx::query_scalar(
            "SELECT extract(epoch FROM throttled_until - now())::float8 FROM send_rate WHERE id = 1",
        )
        .fetch_one(database.pg())
        .await
        .unwrap();
        (left > 25.0).then_some(())
    })
    .await;
}
