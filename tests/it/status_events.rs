//! Status webhooks: the outbox written with each change, delivered to `STATUS_WEBHOOK_URL` with Standard
//! Webhooks headers, retried, failed past its age and replayed. Signatures are checked by Python's
//! standard library, not by the code under test.

use std::{
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use actix_web::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

use crate::helpers::{TestApp, TestAppBuilder, WEBHOOK_PATH, wait_for, wait_until};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CALLBACK_KEY: &str = "provider-callback-key";

/// Fails the first `failures` requests with 500, then answers 204.
struct FailThenAccept {
    failures: usize,
    seen: AtomicUsize,
}

impl Respond for FailThenAccept {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(if n < self.failures { 500 } else { 204 })
    }
}

async fn receiver(failures: usize) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/events"))
        .respond_with(FailThenAccept {
            failures,
            seen: AtomicUsize::new(0),
        })
        .mount(&server)
        .await;
    server
}

/// A provider that refuses every message (400): each becomes a dead letter, with a `message.failed` event.
async fn refusing_every_message() -> MockServer {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path(WEBHOOK_PATH))
        .respond_with(ResponseTemplate::new(400))
        .mount(&provider)
        .await;
    provider
}

fn with_status_webhooks(receiver: &MockServer) -> TestAppBuilder {
    TestApp::builder()
        .var("STATUS_WEBHOOK_URL", format!("{}/events", receiver.uri()))
        .var("STATUS_WEBHOOK_SECRET", SECRET)
        .var("CALLBACK_AUTH_KEY", CALLBACK_KEY)
        .var("BACKOFF_MIN", "50ms")
        .var("BACKOFF_MAX", "200ms")
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// Checks a request's signature as the Standard Webhooks specification says, in Python.
fn assert_signed(request: &Request) {
    const VERIFY: &str = "import sys, hmac, hashlib, base64
secret, msg_id, ts, body, sigs = sys.argv[1:6]
key = base64.b64decode(secret.split('_', 1)[1])
mac = hmac.new(key, f'{msg_id}.{ts}.{body}'.encode(), hashlib.sha256).digest()
sys.exit(0 if 'v1,' + base64.b64encode(mac).decode() in sigs.split(' ') else 1)";
    let body = String::from_utf8(request.body.clone()).unwrap();
    let status = Command::new("python3")
        .args(["-c", VERIFY, SECRET])
        .args([
            header(request, "webhook-id"),
            header(request, "webhook-timestamp"),
            &body,
            header(request, "webhook-signature"),
        ])
        .status()
        .expect("python3 runs");
    assert!(status.success(), "a bad signature on {body}");
    let timestamp: i64 = header(request, "webhook-timestamp").parse().unwrap();
    assert!((Utc::now().timestamp() - timestamp).abs() < 60, "a fresh timestamp");
}

async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/events{query}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn a_receiver_failing_three_times_gets_the_event_until_it_acknowledges_it_under_one_signed_id() {
    let receiver = receiver(3).await;
    let app = with_status_webhooks(&receiver).spawn().await;
    let id = app.database.insert_many(1).await[0];
    app.tick_and_settle().await;

    let delivered = wait_for("the sent event is acknowledged", || async {
        let delivered = events(&app, "?status=delivered").await;
        (!delivered.is_empty()).then_some(delivered)
    })
    .await;
    assert_eq!(delivered.len(), 1);
    let event = &delivered[0];
    assert_eq!(
        (&event["type"], &event["message_id"], &event["attempts"]),
        (&json!("message.sent"), &json!(id), &json!(4))
    );
    assert_eq!(event["payload"]["data"]["id"], json!(id));
    assert_eq!(event["payload"]["data"]["status"], json!("sent"));

    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(
        requests.len(),
        4,
        "three failures, then the acknowledgement, then nothing more"
    );
    for request in &requests {
        assert_eq!(
            header(request, "webhook-id"),
            event["id"].as_str().unwrap(),
            "the same id on every attempt"
        );
        assert_eq!(header(request, "content-type"), "application/json");
        assert_signed(request);
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body, event["payload"], "the same body on every attempt");
    }

    // The receipt's event follows the acknowledged sent event.
    let provider_id = app
        .database
        .store
        .get(id)
        .await
        .unwrap()
        .unwrap()
        .provider_message_id
        .unwrap();
    let receipt =
        serde_json::to_vec(&json!({"messageId": provider_id, "status": "delivered", "at": Utc::now()})).unwrap();
    let (status, _) = app
        .request(
            "POST",
            "/receipts",
            &[("x-ins-auth-key", CALLBACK_KEY)],
            Some((Some("application/json"), &receipt)),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let delivered = wait_for("the delivered event is acknowledged", || async {
        let delivered = events(&app, "?status=delivered").await;
        (delivered.len() == 2).then_some(delivered)
    })
    .await;
    assert_eq!(delivered[0]["type"], json!("message.delivered"), "newest first");
    assert_eq!(delivered[0]["payload"]["data"]["delivery_status"], json!("delivered"));
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), 5);
    assert_eq!(header(&requests[4], "webhook-id"), delivered[0]["id"].as_str().unwrap());
    assert_signed(&requests[4]);
    assert_eq!(app.metric("status_events_total{outcome=\"retry\"}").await, 3.0);
    assert_eq!(app.metric("status_events_total{outcome=\"delivered\"}").await, 2.0);
}

#[actix_web::test]
async fn a_dead_letter_is_an_event_that_fails_past_its_age_and_an_operator_replays_it() {
    let receiver = receiver(usize::MAX).await;
    let provider = refusing_every_message().await;
    let app = with_status_webhooks(&receiver)
        .var("STATUS_WEBHOOK_MAX_AGE", "1s")
        .provider(&Arc::new(provider))
        .spawn()
        .await;
    let id = app.database.insert_many(1).await[0];
    app.tick_and_settle().await;

    let failed = wait_for("the failed event is given up on", || async {
        let failed = events(&app, "?status=failed").await;
        (!failed.is_empty()).then_some(failed)
    })
    .await;
    assert_eq!(
        (&failed[0]["type"], &failed[0]["message_id"]),
        (&json!("message.failed"), &json!(id))
    );
    assert!(
        failed[0]["last_error"].as_str().unwrap().contains("500"),
        "{}",
        failed[0]
    );
    assert!(events(&app, "?status=pending").await.is_empty());
    wait_until("the failed gauge counts it", || async {
        app.metric("status_outbox_failed").await == 1.0
    })
    .await;

    // The receiver is mended; the operator replays the event under its id.
    receiver.reset().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let event_id = failed[0]["id"].as_str().unwrap().to_owned();
    let (status, replayed) = app.post_json(&format!("/events/{event_id}/retry"), &json!({})).await;
    assert_eq!(
        (status, &replayed["status"]),
        (StatusCode::OK, &json!("pending")),
        "{replayed}"
    );
    wait_for("the replay is acknowledged", || async {
        (events(&app, "?status=delivered").await.len() == 1).then_some(())
    })
    .await;
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(header(&requests[0], "webhook-id"), event_id);
    assert_signed(&requests[0]);
    wait_until("the failed gauge lets it go once replayed", || async {
        app.metric("status_outbox_failed").await == 0.0
    })
    .await;

    let (status, body) = app
        .post_json(&format!("/events/{}/retry", uuid::Uuid::new_v4()), &json!({}))
        .await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("event_not_found"))
    );
    let (status, body) = app.get("/events?status=lost").await;
    assert_eq!((status, &body["field"]), (StatusCode::BAD_REQUEST, &json!("status")));
}

#[actix_web::test]
async fn a_receiver_out_of_reach_is_named_in_last_error_without_the_token_in_its_url() {
    // A port nothing listens on; the receiver's token rides in the URL, as some receivers ask.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = refusing_every_message().await;
    let app = TestApp::builder()
        .var(
            "STATUS_WEBHOOK_URL",
            format!("http://{closed}/hooks/tok-s3cr3t?token=q-s3cr3t"),
        )
        .var("STATUS_WEBHOOK_SECRET", SECRET)
        .var("BACKOFF_MIN", "50ms")
        .var("BACKOFF_MAX", "200ms")
        .provider(&Arc::new(provider))
        .spawn()
        .await;
    app.database.insert_many(1).await;
    app.tick_and_settle().await;

    let retried = wait_for("the event has failed an attempt", || async {
        events(&app, "?status=pending")
            .await
            .into_iter()
            .find(|event| event["last_error"].is_string())
    })
    .await;
    let last_error = retried["last_error"].as_str().unwrap();
    assert!(last_error.contains("could not be reached"), "{last_error}");
    assert!(!last_error.contains("s3cr3t"), "{last_error}");
}

#[actix_web::test]
async fn without_a_status_webhook_no_event_is_written() {
    let app = TestApp::spawn().await;
    app.database.insert_many(1).await;
    app.tick_and_settle().await;
    assert!(events(&app, "").await.is_empty());
    let (_, stats) = app.get("/stats").await;
    assert_eq!(stats["status_outbox"], Value::Null);
}

#[actix_web::test]
async fn events_still_pending_when_an_instance_stops_are_delivered_by_the_next_one() {
    let down = receiver(usize::MAX).await;
    let first = with_status_webhooks(&down).spawn().await;
    first.database.insert_many(2).await;
    first.tick_and_settle().await;
    wait_for("the receiver refused both events once", || async {
        (down.received_requests().await.unwrap().len() >= 2).then_some(())
    })
    .await;
    let database = first.database.clone();
    first.shutdown().await.unwrap();

    let up = receiver(0).await;
    let second = with_status_webhooks(&up).database(&database).spawn().await;
    let delivered = wait_for("the next instance delivers both", || async {
        let delivered = events(&second, "?status=delivered").await;
        (delivered.len() == 2).then_some(delivered)
    })
    .await;
    let mut ids: Vec<String> = up
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| header(request, "webhook-id").to_owned())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = delivered.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    expected.sort();
    assert_eq!(ids, expected, "each event once, under the id it was written with");
}

#[actix_web::test]
async fn a_clean_stop_finishes_the_event_being_posted_and_puts_back_the_one_handed_over_meanwhile() {
    // Answers after 3 s (the grace is 10 s): the first event's POST is under way while the second is
    // handed over and the stop begins.
    let slow = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(204).set_delay(std::time::Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let app = with_status_webhooks(&slow).spawn().await;
    let database = app.database.clone();
    database.insert_many(1).await;
    app.tick_and_settle().await;
    wait_for("the first event's POST is under way", || async {
        (slow.received_requests().await.unwrap().len() == 1).then_some(())
    })
    .await;
    database.insert_many(1).await;
    app.tick_and_settle().await;

    app.shutdown().await.unwrap();

    // status, lease_expires_at, last_error, attempts
    type EventRow = (String, Option<chrono::DateTime<Utc>>, Option<String>, i32);
    let rows: Vec<EventRow> =
        sqlx::query_as("SELECT status, lease_expires_at, last_error, attempts FROM status_events ORDER BY seq")
            .fetch_all(database.pg())
            .await
            .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "delivered", "the POST under way finished within the grace");
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1, rows[1].2.as_deref(), rows[1].3),
        (
            "pending",
            None,
            Some("not sent: the instance it was handed to stopped"),
            0
        ),
        "put back due, not left leased to the stopped instance, no attempt counted"
    );
    assert_eq!(
        slow.received_requests().await.unwrap().len(),
        1,
        "the second was never POSTed"
    );
}

/// The real binary with status webhooks to `receiver`, sending at once.
fn serve_with_status_webhooks(
    database: &crate::helpers::TestDatabase,
    provider: &MockServer,
    receiver: &MockServer,
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("WEBHOOK_URL", format!("{}{WEBHOOK_PATH}", provider.uri()))
        .env("STATUS_WEBHOOK_URL", format!("{}/events", receiver.uri()))
        .env("STATUS_WEBHOOK_SECRET", SECRET)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("INTERVAL", "100ms")
        .env("BATCH_SIZE", "10")
        .env("WEBHOOK_TIMEOUT", "1s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the binary starts")
}

#[actix_web::test]
async fn a_process_killed_with_events_pending_loses_none_and_the_restart_delivers_them() {
    let database = crate::helpers::TestDatabase::create().await;
    let ids = database.insert_many(5).await;
    let provider = MockServer::start().await;
    crate::helpers::accept_all(&provider, std::time::Duration::ZERO).await;
    // A receiver that never answers in time: every event is pending or in flight at the kill.
    let hanging = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(std::time::Duration::from_secs(30)))
        .mount(&hanging)
        .await;
    let mut child = serve_with_status_webhooks(&database, &provider, &hanging);
    wait_for("every message is sent and the receiver is being tried", || async {
        let sent = database.count_with_status("sent").await == 5;
        (sent && hanging.received_requests().await.unwrap_or_default().len() >= 5).then_some(())
    })
    .await;
    child.kill().expect("SIGKILL");
    child.wait().expect("the process ends");

    let up = receiver(0).await;
    let app = with_status_webhooks(&up).database(&database).spawn().await;
    assert!(
        app.metric("status_outbox_depth").await >= 1.0,
        "events wait for the leases to run out"
    );
    let delivered = wait_for("the restart delivers every event once its lease ran out", || async {
        let delivered = events(&app, "?status=delivered").await;
        (delivered.len() == 5).then_some(delivered)
    })
    .await;
    let mut messages: Vec<String> = delivered
        .iter()
        .map(|e| e["message_id"].as_str().unwrap().to_owned())
        .collect();
    messages.sort();
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(messages, expected, "one message.sent per message, none lost");
    assert!(delivered.iter().all(|e| e["type"] == json!("message.sent")));
    for request in up.received_requests().await.unwrap() {
        assert_signed(&request);
    }
}

#[actix_web::test]
async fn an_event_is_failed_at_its_max_age_not_a_backoff_past_it() {
    let receiver = receiver(usize::MAX).await;
    let provider = refusing_every_message().await;
    let app = with_status_webhooks(&receiver)
        .var("STATUS_WEBHOOK_MAX_AGE", "1s")
        .var("BACKOFF_MIN", "30s")
        .var("BACKOFF_MAX", "1m")
        .provider(&Arc::new(provider))
        .spawn()
        .await;
    app.database.insert_many(1).await;
    let started = std::time::Instant::now();
    app.tick_and_settle().await;

    wait_for("the event is given up on", || async {
        (!events(&app, "?status=failed").await.is_empty()).then_some(())
    })
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        receiver.received_requests().await.unwrap().len() >= 2,
        "tried again at the horizon"
    );
}
