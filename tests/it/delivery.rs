//! A tick's journey: claim, POST, record, cache, and what each provider answer leads to.

use std::time::Duration;

use insider_messaging::dispatch::messages::TickSkipped;
use serde_json::json;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::helpers::*;

#[actix_web::test]
async fn a_tick_sends_batch_size_messages_oldest_first_and_records_them() {
    let app = TestApp::spawn().await;
    let ids = app.database.insert_many(3).await;

    let report = app.tick_and_settle().await;

    assert_eq!(report.claimed, 2);
    for id in &ids[..2] {
        let row = app.database.row(*id).await;
        assert_eq!(row.status, "sent");
        assert_eq!(row.attempts, 1);
        assert!(row.provider_message_id.is_some() && row.sent_at.is_some());
        assert!(row.lease_token.is_none(), "the lease is released");
    }
    assert_eq!(
        app.database.row(ids[2]).await.status,
        "pending",
        "the youngest waits for the next tick"
    );

    let requests = app.provider.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let mut keys: Vec<String> = Vec::new();
    for request in &requests {
        assert_eq!(request.url.path(), WEBHOOK_PATH);
        assert_eq!(request.headers.get("x-ins-auth-key").unwrap(), AUTH_KEY);
        assert_eq!(request.headers.get("content-type").unwrap(), "application/json");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body.as_object().unwrap().len(), 2, "only to and content: {body}");
        assert!(body["to"].as_str().unwrap().starts_with("+9055500"));
        assert!(body["content"].as_str().unwrap().starts_with("message "));
        keys.push(
            request
                .headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    keys.sort();
    let mut expected: Vec<String> = ids[..2].iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(keys, expected, "the idempotency key is the message id");
}

#[actix_web::test]
async fn a_sent_message_is_cached_in_redis_with_its_provider_id_and_time() {
    let app = TestApp::builder().var("REDIS_TTL", "1h").spawn().await;
    let id = app.database.insert_raw("+905551111111", "Insider - Project").await;

    app.tick_and_settle().await;

    let row = app.database.row(id).await;
    let cached = cached(id).await.expect("a cache entry");
    assert_eq!(cached["messageId"].as_str(), row.provider_message_id.as_deref());
    let cached_at: chrono::DateTime<chrono::Utc> = cached["sentAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        Some(cached_at),
        row.sent_at,
        "cache and database agree on the send time"
    );
    let ttl = ttl(id).await;
    assert!((3500..=3600).contains(&ttl), "REDIS_TTL applies: {ttl}");
}

#[actix_web::test]
async fn a_sent_message_is_never_sent_again_on_later_ticks() {
    let app = TestApp::spawn().await;
    let ids = app.database.insert_many(2).await;

    for _ in 0..4 {
        app.tick_and_settle().await;
    }

    let posts = posts_per_key(&app.provider).await;
    assert_eq!(posts.len(), 2);
    assert!(posts.values().all(|&n| n == 1), "{posts:?}");
    for id in ids {
        assert_eq!(app.database.row(id).await.attempts, 1);
    }
}

#[actix_web::test]
async fn rows_inserted_between_ticks_go_out_on_a_later_tick() {
    let app = TestApp::spawn().await;
    let first = app.database.insert_raw("+905551111111", "first").await;
    app.tick_and_settle().await;
    assert_eq!(app.database.row(first).await.status, "sent");

    let second = app.database.insert_raw("+905551111112", "second").await;
    assert_eq!(app.database.row(second).await.status, "pending");
    app.tick_and_settle().await;

    assert_eq!(app.database.row(second).await.status, "sent");
    assert_eq!(posts_per_key(&app.provider).await.len(), 2);
}

#[actix_web::test]
async fn a_5xx_puts_the_message_back_and_a_later_attempt_sends_it() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("try later"))
        .up_to_n_times(1)
        .mount(&provider)
        .await;
    accept_all(&provider, Duration::ZERO).await;
    let provider = std::sync::Arc::new(provider);
    let app = TestApp::builder().provider(&provider).spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;
    let row = app.database.row(id).await;
    assert_eq!(row.status, "pending");
    assert!(row.next_attempt_at > chrono::Utc::now(), "the retry waits its delay");
    assert!(row.last_error.unwrap().contains("503"));

    app.tick_and_settle().await;
    assert_eq!(
        app.database.row(id).await.status,
        "pending",
        "not due yet: nothing claimed"
    );

    app.database.make_due(id).await;
    app.tick_and_settle().await;
    let row = app.database.row(id).await;
    assert_eq!(row.status, "sent");
    assert_eq!(row.attempts, 2);
    assert_eq!(row.last_error, None);
    assert_eq!(
        posts_per_key(&app.provider).await[&id.to_string()],
        2,
        "same idempotency key both times"
    );
    assert_eq!(app.metric("retries_total").await, 1.0);
}

#[actix_web::test]
async fn a_429_waits_at_least_its_retry_after() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "120"))
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .spawn()
        .await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;

    let row = app.database.row(id).await;
    assert_eq!(row.status, "pending");
    let wait = row.next_attempt_at - chrono::Utc::now();
    assert!(wait > chrono::Duration::seconds(110), "waited {wait}");
}

#[actix_web::test]
async fn a_4xx_fails_the_message_and_it_is_never_retried() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "bad number"})))
        .expect(1)
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .spawn()
        .await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;
    app.database.make_due(id).await;
    app.tick_and_settle().await;

    let row = app.database.row(id).await;
    assert_eq!(row.status, "failed");
    assert!(row.last_error.unwrap().contains("400"), "the reason is kept");
    assert_eq!(app.metric("sends_total{outcome=\"rejected\"}").await, 1.0);
    app.provider.verify().await;
}

#[actix_web::test]
async fn a_timeout_is_retried_like_a_5xx() {
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::from_secs(3)).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("WEBHOOK_TIMEOUT", "300ms")
        .spawn()
        .await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;

    let row = app.database.row(id).await;
    assert_eq!(row.status, "pending");
    let error = row.last_error.unwrap();
    let lower = error.to_lowercase();
    assert!(
        lower.starts_with("no answer from the provider") && (lower.contains("timeout") || lower.contains("timed out")),
        "{error}"
    );
}

#[actix_web::test]
async fn an_accepted_message_with_an_odd_body_is_still_sent_and_never_resent() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_string("Accepted!"))
        .expect(1)
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .spawn()
        .await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;
    app.tick_and_settle().await;

    let row = app.database.row(id).await;
    assert_eq!(row.status, "sent");
    assert_eq!(row.provider_message_id, None);
    assert!(cached(id).await.is_none(), "nothing to cache without an id");
    app.provider.verify().await;
}

#[actix_web::test]
async fn invalid_rows_inserted_by_sql_fail_without_being_sent() {
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::ZERO).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("BATCH_SIZE", "5")
        .var("CONTENT_MAX_CHARS", "10")
        .spawn()
        .await;
    let bad_phone = app.database.insert_raw("05551111111", "hello").await;
    let empty = app.database.insert_raw("+905551111111", "   ").await;
    let too_long = app.database.insert_raw("+905551111111", "eleven char").await;
    let good = app.database.insert_raw("+90 555 111 11 11", "ok").await;

    let report = app.tick_and_settle().await;

    assert_eq!((report.claimed, report.invalid), (4, 3));
    for (id, reason) in [(bad_phone, "phone_number"), (empty, "content"), (too_long, "content")] {
        let row = app.database.row(id).await;
        assert_eq!(row.status, "failed");
        assert!(row.last_error.unwrap().contains(reason));
    }
    // The spaced number goes back in its normal form, uncounted, to be checked against the opt-outs.
    let row = app.database.row(good).await;
    assert_eq!((row.status.as_str(), row.attempts), ("pending", 0));
    app.tick_and_settle().await;
    assert_eq!(app.database.row(good).await.status, "sent");
    let requests = app.provider.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["to"], "+905551111111", "the number is sent normalised");
}

#[actix_web::test]
async fn a_message_whose_lease_expired_is_rescued_and_sent_once() {
    let app = TestApp::spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;
    // A claim by an instance that died: sending, its lease already over.
    sqlx::query(
        "UPDATE messages SET status = 'sending', attempts = 1, lease_owner = 'dead', lease_token = gen_random_uuid(),
                lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(app.database.pg())
    .await
    .unwrap();

    // Once this instance has reached the database long enough to know the other is dead.
    wait_until("the dead instance's message is rescued and sent", || async {
        app.tick_and_settle().await;
        app.database.row(id).await.status == "sent"
    })
    .await;

    let row = app.database.row(id).await;
    assert_eq!(row.attempts, 2);
    assert_eq!(posts_per_key(&app.provider).await[&id.to_string()], 1);
    assert_eq!(app.metric("leases_rescued_total").await, 1.0);
}

#[actix_web::test]
async fn a_live_lease_is_left_alone() {
    let app = TestApp::spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;
    sqlx::query(
        "UPDATE messages SET status = 'sending', attempts = 1, lease_owner = 'alive', lease_token = gen_random_uuid(),
                lease_expires_at = now() + interval '1 minute' WHERE id = $1",
    )
    .bind(id)
    .execute(app.database.pg())
    .await
    .unwrap();

    let report = app.tick_and_settle().await;

    assert_eq!((report.rescued, report.claimed), (0, 0));
    assert_eq!(app.database.row(id).await.status, "sending");
    assert!(app.provider.received_requests().await.unwrap().is_empty());
}

#[actix_web::test]
async fn with_redis_down_messages_are_still_sent() {
    let app = TestApp::builder().var("REDIS_URL", "redis://127.0.0.1:1").spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;

    assert_eq!(app.database.row(id).await.status, "sent");
    assert_eq!(app.metric("cache_errors_total").await, 1.0);
    let items = app.all_sent(10).await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["provider_message_id"].as_str(),
        app.database.row(id).await.provider_message_id.as_deref()
    );
}

#[actix_web::test]
async fn a_redis_that_hangs_holds_up_one_flush_not_every_one() {
    // Accepts connections and never answers: a network dropping packets, a stopped process.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = hung.local_addr().unwrap();
    let held = std::thread::spawn(move || hung.incoming().take(64).filter_map(Result::ok).collect::<Vec<_>>());
    let app = TestApp::builder()
        .var("REDIS_URL", format!("redis://{address}"))
        .var("BATCH_SIZE", "1")
        .spawn()
        .await;
    app.database.insert_many(4).await;

    app.tick_and_settle().await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        app.tick_and_settle().await;
    }

    assert_eq!(app.database.count_with_status("sent").await, 4);
    // Before, each flush waited out the cache's 1 s timeout: 3 s and more.
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1_500),
        "three flushes after the first timeout: {:?}",
        started.elapsed()
    );
    drop(held);
}

#[actix_web::test]
async fn without_redis_configured_nothing_is_cached_and_sending_works() {
    let app = TestApp::builder().without("REDIS_URL").spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    app.tick_and_settle().await;

    assert_eq!(app.database.row(id).await.status, "sent");
    assert!(cached(id).await.is_none());
    assert_eq!(app.metric("cache_errors_total").await, 0.0);
}

#[actix_web::test]
async fn a_message_that_keeps_failing_becomes_a_dead_letter_after_max_retries() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("MAX_RETRIES", "3")
        .spawn()
        .await;
    let id = app.database.insert_raw("+905551111111", "hello").await;

    for _ in 0..4 {
        app.tick_and_settle().await;
        app.database.make_due(id).await;
    }

    let row = app.database.row(id).await;
    assert_eq!((row.status.as_str(), row.attempts), ("failed", 3));
    let reason = row.last_error.unwrap();
    assert!(
        reason.starts_with("gave up after 3 attempts: provider answered 503"),
        "{reason}"
    );
    assert_eq!(app.metric("retries_total").await, 2.0);
    assert_eq!(app.metric("dead_letters_total").await, 1.0);
    app.provider.verify().await;
}

#[actix_web::test]
async fn a_provider_that_keeps_failing_opens_the_breaker_and_claiming_stops() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(10)
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;
    let ids = app.database.insert_many(12).await;

    app.tick_and_settle().await;
    for id in &ids {
        app.database.make_due(*id).await;
    }
    let report = app.tick_and_settle().await;

    assert_eq!(report.claimed, 0, "the breaker holds claims: {report:?}");
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["breaker"]["state"], "open", "{scheduler}");
    assert!(scheduler["breaker"]["probe_in_seconds"].as_f64().unwrap() > 20.0);
    assert_eq!(app.metric("breaker_state").await, 1.0);
    assert_eq!(
        app.database.count_with_status("pending").await,
        12,
        "no attempt burnt while open"
    );
    app.provider.verify().await;
}

/// The breaker's cool-down ends while nothing is due: `breaker_state` says half-open (ready to probe), not
/// open forever, to a scraper that never reads `GET /scheduler`. It was set only when a send ended.
#[actix_web::test]
async fn the_breaker_gauge_leaves_open_when_the_cool_down_ends_on_an_idle_queue() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("BATCH_SIZE", "10")
        // Their retries are due long after the cool-down: no probe ends the half-open state.
        .var("BACKOFF_MIN", "10m")
        .var("BACKOFF_MAX", "20m")
        .spawn()
        .await;
    app.database.insert_many(10).await;
    app.tick_and_settle().await;
    assert_eq!(app.metric("breaker_state").await, 1.0, "ten failures in ten open it");

    // The cool-down is 30 s.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(
        app.metric("breaker_state").await,
        2.0,
        "half-open once the cool-down is over"
    );
}

/// The breaker opens while claimed messages wait in the run-ahead buffer for a slot: they go back unsent,
/// their attempts unspent, instead of being posted to the provider that keeps failing (one more round of
/// failures, the size of the buffer, each time it opens). Twenty slots and twenty waiting: the first nine
/// answers free a slot each before the tenth opens the breaker; the other eleven never go.
#[actix_web::test]
async fn an_opening_breaker_gives_back_what_waits_for_a_slot_unposted() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(300)))
        .mount(&provider)
        .await;
    let provider = std::sync::Arc::new(provider);
    let app = TestApp::builder()
        .provider(&provider)
        .var("BATCH_SIZE", "40")
        .var("WEBHOOK_CONCURRENCY", "20")
        .spawn()
        .await;
    app.database.insert_many(40).await;

    let report = app.pipeline.tick_now().await.unwrap();
    assert_eq!(
        report.claimed, 40,
        "twenty posted, twenty waiting for a slot: {report:?}"
    );
    wait_until("the breaker opens", || async {
        let (_, scheduler) = app.get("/scheduler").await;
        scheduler["breaker"]["state"] == "open"
    })
    .await;
    wait_until("nothing left in flight or waiting", || async {
        app.database.count_with_status("sending").await == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let posted = provider.received_requests().await.unwrap().len();
    assert!(
        (20..=30).contains(&posted),
        "the first round and the few posted before the breaker opened, not all 40: {posted}"
    );
    let unspent: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE status = 'pending' AND attempts = 0")
        .fetch_one(app.database.pg())
        .await
        .unwrap();
    assert_eq!(unspent, 40 - posted as i64, "those never posted keep their attempts");
}

/// Eight messages the provider can never take (a redirect, or a body it never answers in time) are in
/// their retries when a good message comes: the good one goes out on the next ticks. Counted by sends,
/// the poison's retries opened the breaker, every probe was a poison message, and the good one waited
/// for cool-down after cool-down (57 s in the report).
#[actix_web::test]
async fn a_few_poison_messages_do_not_open_the_breaker_on_everyone() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_partial_json(json!({"content": "poison: redirect"})))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "http://127.0.0.1:9/elsewhere"))
        .mount(&provider)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_partial_json(json!({"content": "poison: slow"})))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(3)))
        .mount(&provider)
        .await;
    accept_all(&provider, Duration::ZERO).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("INTERVAL", "1s")
        .var("AUTOSTART", "true")
        .var("BATCH_SIZE", "8")
        .var("WEBHOOK_TIMEOUT", "1s")
        .var("BACKOFF_MIN", "1s")
        .var("BACKOFF_MAX", "2s")
        .var("MAX_RETRIES", "100")
        .spawn()
        .await;
    for i in 0..8 {
        let kind = if i % 2 == 0 { "redirect" } else { "slow" };
        app.database
            .insert_raw(&format!("+9055501{i:05}"), &format!("poison: {kind}"))
            .await;
    }
    // More failed sends than a breaker counting sends would need to open.
    wait_until("the poison messages failed 20 times", || async {
        app.provider.received_requests().await.unwrap_or_default().len() >= 20
    })
    .await;

    let good = app.database.insert_raw("+905550200000", "good").await;
    let enqueued = std::time::Instant::now();
    wait_until("the good message is sent", || async {
        app.database.row(good).await.status == "sent"
    })
    .await;
    let waited = enqueued.elapsed();
    assert!(waited < Duration::from_secs(10), "the good message waited {waited:?}");
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["breaker"]["state"], "closed", "{scheduler}");
}

#[actix_web::test]
async fn a_result_the_database_refuses_holds_up_only_itself_and_is_recorded_plainer() {
    let provider = MockServer::start().await;
    // The same delay for all three, so that their answers arrive together and share one flush.
    let delay = Duration::from_millis(200);
    Mock::given(matchers::method("POST"))
        .and(matchers::body_partial_json(json!({"content": "poison"})))
        .respond_with(
            ResponseTemplate::new(202)
                .set_body_json(json!({"message": "Accepted", "messageId": "poison"}))
                .set_delay(delay),
        )
        .with_priority(1)
        .mount(&provider)
        .await;
    accept_all(&provider, delay).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("BATCH_SIZE", "3")
        .spawn()
        .await;
    // A rule of this database's own, standing for any value Postgres refuses to store.
    sqlx::query("ALTER TABLE message_attempts ADD CONSTRAINT refuse_poison CHECK (provider_message_id <> 'poison')")
        .execute(app.database.pg())
        .await
        .unwrap();
    let first = app.database.insert_raw("+905551111111", "first").await;
    let poison = app.database.insert_raw("+905552222222", "poison").await;
    let third = app.database.insert_raw("+905553333333", "third").await;

    app.pipeline.tick_now().await.unwrap();

    app.settle().await;
    assert_eq!(app.database.row(first).await.status, "sent");
    assert_eq!(app.database.row(third).await.status, "sent");
    let row = app.database.row(poison).await;
    assert_eq!(
        (row.status.as_str(), row.provider_message_id.as_deref()),
        ("sent", Some("poison")),
        "recorded without the history row the database refuses, its id kept for its receipts"
    );
    assert!(app.metric("result_write_errors_total").await >= 2.0);
}

/// A provider speaking raw HTTP/1.1 that first answers `102 Processing`, then `202 Accepted` with an id,
/// on each request of each connection. Counts the requests it read.
async fn provider_with_an_interim_answer() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&requests);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counted = std::sync::Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: its head, then as many body bytes as it says.
                    let Some(head_end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|line| line.strip_prefix("content-length:"))
                        .and_then(|value| value.trim().parse().ok())
                        .unwrap_or(0);
                    if buffer.len() < head_end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    }
                    buffer.drain(..head_end + 4 + length);
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    let body = format!(r#"{{"message":"Accepted","messageId":"interim-{n}"}}"#);
                    let answer = format!(
                        "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, requests)
}

#[actix_web::test]
async fn an_interim_1xx_answer_is_read_past_to_the_final_one() {
    let (url, requests) = provider_with_an_interim_answer().await;
    let app = TestApp::builder()
        .var("WEBHOOK_URL", url)
        .var("MAX_RETRIES", "3")
        .spawn()
        .await;
    let ids = app.database.insert_many(2).await;

    app.tick_and_settle().await;

    for id in &ids {
        let row = app.database.row(*id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("sent", 1), "{row:?}");
        assert!(row.provider_message_id.unwrap().starts_with("interim-"));
    }
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "each message POSTed once: the 102 is not the answer"
    );
}

#[actix_web::test]
async fn a_provider_refusing_our_credentials_pauses_sending_until_started_again_and_spends_no_attempt() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "bad auth key"})))
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        // One attempt only: a refusal that counted would make every message a dead letter.
        .var("MAX_RETRIES", "1")
        .spawn()
        .await;
    let ids = app.database.insert_many(3).await;

    app.tick_and_settle().await;

    for id in &ids {
        let row = app.database.row(*id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("pending", 0), "{row:?}");
    }
    assert_eq!(app.database.count_with_status("failed").await, 0, "no dead letters");
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["flow"]["credentials_refused"]["status"], 401, "{scheduler}");
    assert_eq!(app.metric("provider_credentials_refused").await, 1.0);
    let posted = app.provider.received_requests().await.unwrap().len();
    let report = app.pipeline.tick_now().await.unwrap();
    assert_eq!(report.skipped, Some(TickSkipped::CredentialsRefused), "{report:?}");
    assert_eq!(
        app.provider.received_requests().await.unwrap().len(),
        posted,
        "nothing more is sent"
    );

    // The key is fixed at the provider's end; an operator starts sending again.
    app.provider.reset().await;
    accept_all(&app.provider, Duration::ZERO).await;
    app.post_start().await;
    app.post_stop().await;
    wait_until("every message is sent", || async {
        app.tick_and_settle().await;
        app.database.count_with_status("sent").await == 3
    })
    .await;

    for id in &ids {
        let row = app.database.row(*id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("sent", 1), "{row:?}");
    }
    assert_eq!(app.metric("provider_credentials_refused").await, 0.0);
}

#[actix_web::test]
async fn a_start_on_one_replica_lifts_every_replicas_pause_for_refused_credentials() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&provider)
        .await;
    let provider = std::sync::Arc::new(provider);
    let first = TestApp::builder().provider(&provider).spawn().await;
    let second = TestApp::builder()
        .database(&first.database)
        .provider(&provider)
        .spawn()
        .await;
    first.database.insert_many(4).await;
    first.tick_and_settle().await;
    second.tick_and_settle().await;
    for app in [&first, &second] {
        assert_eq!(
            app.get("/scheduler").await.1["flow"]["credentials_refused"]["status"],
            403
        );
    }

    // The provider takes our key again (rotated back); an operator starts sending on one replica.
    provider.reset().await;
    accept_all(&provider, Duration::ZERO).await;
    first.post_start().await;

    wait_until("both replicas send again", || async {
        first.database.count_with_status("sent").await == 4
    })
    .await;
    for app in [&first, &second] {
        assert!(app.get("/scheduler").await.1["flow"]["credentials_refused"].is_null());
    }
}

#[actix_web::test]
async fn rows_of_invisible_content_or_with_bidi_controls_fail_when_claimed_without_being_sent() {
    let app = TestApp::builder().var("BATCH_SIZE", "5").spawn().await;
    let invisible = app.database.insert_raw("+905551111111", "\u{200B}\u{2800}").await;
    let reordered = app.database.insert_raw("+905551111112", "pay \u{202E}gpj.exe").await;
    let good = app.database.insert_raw("+905551111113", "ok").await;

    let report = app.tick_and_settle().await;

    assert_eq!((report.claimed, report.invalid), (3, 2));
    for id in [invisible, reordered] {
        let row = app.database.row(id).await;
        assert_eq!(row.status, "failed");
        assert!(row.last_error.unwrap().contains("content"));
    }
    assert_eq!(app.database.row(good).await.status, "sent");
    assert_eq!(app.provider.received_requests().await.unwrap().len(), 1);
}

/// A drain the breaker stopped probes the provider when the cool-down ends, not at the next tick (an hour
/// here): the sending goes on by itself once the provider answers again.
#[actix_web::test]
async fn an_open_breaker_probes_when_its_cool_down_ends_not_at_the_next_tick() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(10)
        .with_priority(1)
        .mount(&provider)
        .await;
    accept_all(&provider, Duration::ZERO).await;
    let database = TestDatabase::create().await;
    database.insert_many(100).await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&std::sync::Arc::new(provider))
        .var("AUTOSTART", "true")
        .var("BATCH_SIZE", "500")
        .var("WEBHOOK_CONCURRENCY", "2")
        .spawn()
        .await;

    wait_until("the breaker opens", || async {
        app.metric("breaker_state").await == 1.0
    })
    .await;
    let opened = std::time::Instant::now();
    // What was already claimed when it opened goes out; then nothing until the probe.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_the_probe = app.provider.received_requests().await.unwrap().len();
    // The cool-down is 30 s.
    let deadline = opened + Duration::from_secs(40);
    while app.provider.received_requests().await.unwrap().len() == before_the_probe {
        assert!(
            std::time::Instant::now() < deadline,
            "no probe within the cool-down and 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(opened.elapsed() >= Duration::from_secs(25), "{:?}", opened.elapsed());
    wait_until("sending goes on", || async {
        database.count_with_status("sent").await == 100
    })
    .await;
}
