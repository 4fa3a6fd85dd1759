//! Delivery receipts end to end on Postgres and Redis: `POST /receipts` with `CALLBACK_AUTH_KEY`, the
//! receipt applier matching them through the cache and the database, and what a message then shows.

use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::{DateTime, SubsecRound, Utc};
use deadpool_redis::redis;
use futures_util::future::join_all;
use insider_messaging::domain::ReceiptStatus;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers};

use crate::helpers::{TestApp, TestAppBuilder, WEBHOOK_PATH, cached, redis_connection, wait_for, wait_until};

const CALLBACK_KEY: &str = "provider-callback-key";

/// Receipts tracked: the callback key set.
fn tracked() -> TestAppBuilder {
    TestApp::builder().var("CALLBACK_AUTH_KEY", CALLBACK_KEY)
}

/// A provider that answers every request 202 with the same `messageId`, after `delay`.
struct AcceptWithId {
    id: String,
    delay: Duration,
}

impl Respond for AcceptWithId {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(202)
            .set_body_json(json!({"message": "Accepted", "messageId": self.id}))
            .set_delay(self.delay)
    }
}

async fn provider_answering(id: &str, delay: Duration) -> std::sync::Arc<MockServer> {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path(WEBHOOK_PATH))
        .respond_with(AcceptWithId {
            id: id.to_owned(),
            delay,
        })
        .mount(&server)
        .await;
    std::sync::Arc::new(server)
}

fn receipt(provider_id: &str, status: &str, at: DateTime<Utc>) -> Value {
    json!({"messageId": provider_id, "status": status, "at": at.to_rfc3339(), "error": null})
}

async fn post_receipts(app: &TestApp, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let headers: Vec<(&str, &str)> = key.map(|key| ("x-ins-auth-key", key)).into_iter().collect();
    app.request("POST", "/receipts", &headers, Some((Some("application/json"), &bytes)))
        .await
}

/// Enqueues one message, sends it, and returns its id and the provider's id for it.
async fn send_one(app: &TestApp) -> (Uuid, String) {
    let id = app.database.insert_many(1).await[0];
    app.tick_and_settle().await;
    let message = app.database.store.get(id).await.unwrap().unwrap();
    (id, message.provider_message_id.expect("sent with a provider id"))
}

/// Waits until the message's delivery state is `status`, and returns the message.
async fn wait_for_delivery(app: &TestApp, id: Uuid, status: ReceiptStatus) -> insider_messaging::domain::Message {
    wait_for(&format!("message {id} is {status}"), || async {
        let message = app.database.store.get(id).await.unwrap().unwrap();
        (message.delivery_status == Some(status)).then_some(message)
    })
    .await
}

/// Posts a `delivered` receipt for `provider_id`, now, and checks it is stored.
async fn post_delivered(app: &TestApp, provider_id: &str) {
    let (status, body) = post_receipts(app, &receipt(provider_id, "delivered", Utc::now()), Some(CALLBACK_KEY)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

/// Waits until `GET /receipts?matched=false` lists something, and returns its items.
async fn listed_unmatched(app: &TestApp) -> Vec<Value> {
    wait_for("a receipt is listed as unmatched", || async {
        let (_, page) = app.get("/receipts?matched=false").await;
        page["items"].as_array().filter(|items| !items.is_empty()).cloned()
    })
    .await
}

/// Waits until every stored receipt is settled, and returns them newest first.
async fn settled_receipts(app: &TestApp) -> Vec<Value> {
    wait_for("every receipt is settled", || async {
        let (status, page) = app.get("/receipts").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        items.iter().all(|item| item["outcome"] != "pending").then_some(items)
    })
    .await
}

#[actix_web::test]
async fn a_receipt_that_beats_the_202_waits_and_is_applied_once_the_message_is_recorded_sent() {
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let provider = provider_answering(&provider_id, Duration::from_millis(500)).await;
    let app = tracked().provider(&provider).spawn().await;
    let id = app.database.insert_many(1).await[0];

    // The provider reports delivery while its 202 is still on the way to us.
    assert_eq!(app.pipeline.tick_now().await.unwrap().claimed, 1);
    let at = Utc::now().trunc_subsecs(0);
    let (status, body) = post_receipts(&app, &receipt(&provider_id, "delivered", at), Some(CALLBACK_KEY)).await;
    assert_eq!((status, &body["stored"]), (StatusCode::ACCEPTED, &json!(1)), "{body}");

    let message = wait_for_delivery(&app, id, ReceiptStatus::Delivered).await;
    assert_eq!(message.delivered_at, Some(at));
    let receipts = settled_receipts(&app).await;
    assert_eq!(receipts.len(), 1);
    assert_eq!(
        (&receipts[0]["outcome"], &receipts[0]["message_id"]),
        (&json!("applied"), &json!(id))
    );
    let received_at: DateTime<Utc> = serde_json::from_value(receipts[0]["received_at"].clone()).unwrap();
    assert!(
        received_at < message.sent_at.unwrap(),
        "the receipt was stored before the send was recorded"
    );
    // The cache entry that matches the next receipts for this id names this message.
    let mut redis = redis_connection().await;
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg(insider_messaging::cache::provider_key(&provider_id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(members, [id.to_string()]);
}

#[actix_web::test]
async fn a_duplicate_receipt_changes_nothing_and_a_final_state_is_never_undone() {
    let app = tracked().spawn().await;
    let (id, provider_id) = send_one(&app).await;
    let at = Utc::now().trunc_subsecs(0);

    let first = receipt(&provider_id, "delivered", at);
    assert_eq!(
        post_receipts(&app, &first, Some(CALLBACK_KEY)).await.0,
        StatusCode::ACCEPTED
    );
    wait_for_delivery(&app, id, ReceiptStatus::Delivered).await;
    // The same receipt again, a later copy, then an intermediate state that arrives out of order.
    let late = json!([
        first,
        receipt(&provider_id, "delivered", at + chrono::Duration::seconds(5)),
        receipt(&provider_id, "buffered", at + chrono::Duration::seconds(9))
    ]);
    assert_eq!(
        post_receipts(&app, &late, Some(CALLBACK_KEY)).await.0,
        StatusCode::ACCEPTED
    );

    let receipts = settled_receipts(&app).await;
    let outcomes: Vec<&str> = receipts.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["ignored", "ignored", "ignored", "applied"], "newest first");
    let message = app.database.store.get(id).await.unwrap().unwrap();
    assert_eq!(
        (message.delivery_status, message.delivered_at),
        (Some(ReceiptStatus::Delivered), Some(at))
    );
    assert_eq!(app.metric("receipts_total{status=\"delivered\"}").await, 3.0);
    assert_eq!(app.metric("receipts_total{status=\"buffered\"}").await, 1.0);
}

#[actix_web::test]
async fn an_undelivered_receipt_keeps_the_carriers_error_and_intermediate_states_come_first() {
    let app = tracked().spawn().await;
    let (id, provider_id) = send_one(&app).await;
    let at = Utc::now().trunc_subsecs(0);

    post_receipts(&app, &receipt(&provider_id, "buffered", at), Some(CALLBACK_KEY)).await;
    wait_for_delivery(&app, id, ReceiptStatus::Buffered).await;
    let mut undelivered = receipt(&provider_id, "undelivered", at + chrono::Duration::seconds(1));
    undelivered["error"] = json!("EC 34: absent subscriber");
    post_receipts(&app, &undelivered, Some(CALLBACK_KEY)).await;

    let message = wait_for_delivery(&app, id, ReceiptStatus::Undelivered).await;
    assert_eq!(message.delivery_error.as_deref(), Some("EC 34: absent subscriber"));
    assert_eq!(message.delivered_at, None);
}

#[actix_web::test]
async fn a_numeric_provider_id_is_matched_by_its_digits() {
    // Fresh each run: Redis outlives the test's database.
    let numeric = u64::from_le_bytes(Uuid::new_v4().as_bytes()[..8].try_into().unwrap()) >> 1;
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({"message": "Accepted", "messageId": numeric})))
        .mount(&provider)
        .await;
    let app = tracked().provider(&std::sync::Arc::new(provider)).spawn().await;
    let (id, provider_id) = send_one(&app).await;
    assert_eq!(provider_id, numeric.to_string());

    let body = json!({"messageId": numeric, "status": "delivered", "at": Utc::now().to_rfc3339()});
    let (status, answer) = post_receipts(&app, &body, Some(CALLBACK_KEY)).await;

    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    wait_for_delivery(&app, id, ReceiptStatus::Delivered).await;
    let fraction = json!({"messageId": 12.5, "status": "delivered", "at": Utc::now().to_rfc3339()});
    let (status, answer) = post_receipts(&app, &fraction, Some(CALLBACK_KEY)).await;
    assert_eq!(
        (status, &answer["field"]),
        (StatusCode::BAD_REQUEST, &json!("messageId"))
    );
}

#[actix_web::test]
async fn a_cached_provider_id_naming_a_message_the_database_no_longer_has_does_not_make_a_receipt_ambiguous() {
    let provider_id = Uuid::new_v4().to_string();
    // A message SENT_RETENTION deleted, or another deployment's on the same Redis: still in the set.
    let mut redis = redis_connection().await;
    redis::cmd("SADD")
        .arg(format!("provider:{provider_id}"))
        .arg(Uuid::new_v4().to_string())
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
    let app = tracked()
        .provider(&provider_answering(&provider_id, Duration::ZERO).await)
        .spawn()
        .await;
    let (id, _) = send_one(&app).await;

    post_receipts(
        &app,
        &receipt(&provider_id, "delivered", Utc::now()),
        Some(CALLBACK_KEY),
    )
    .await;

    wait_for_delivery(&app, id, ReceiptStatus::Delivered).await;
}

/// Puts `message_id` alone in the cache's set for `provider_id`, as another deployment sharing the Redis
/// (or a message since deleted) leaves it.
async fn cache_names(provider_id: &str, message_id: Uuid) {
    let mut redis = redis_connection().await;
    redis::cmd("SADD")
        .arg(insider_messaging::cache::provider_key(provider_id))
        .arg(message_id.to_string())
        .query_async::<()>(&mut redis)
        .await
        .unwrap();
}

#[actix_web::test]
async fn an_early_receipt_is_not_spent_on_the_message_a_stale_cache_entry_names() {
    let provider_id = format!("prov-{}", Uuid::new_v4());
    cache_names(&provider_id, Uuid::new_v4()).await;
    let provider = provider_answering(&provider_id, Duration::from_millis(500)).await;
    let app = tracked().provider(&provider).spawn().await;
    let id = app.database.insert_many(1).await[0];

    // The receipt arrives while the 202 is on its way, the cache naming only a message we never had.
    assert_eq!(app.pipeline.tick_now().await.unwrap().claimed, 1);
    post_delivered(&app, &provider_id).await;

    wait_for_delivery(&app, id, ReceiptStatus::Delivered).await;
    let receipts = settled_receipts(&app).await;
    assert_eq!(
        (receipts.len(), &receipts[0]["outcome"], &receipts[0]["message_id"]),
        (1, &json!("applied"), &json!(id))
    );
}

#[actix_web::test]
async fn a_receipt_for_another_deployments_message_is_listed_unmatched_not_settled_as_matched() {
    let provider_id = format!("prov-{}", Uuid::new_v4());
    // Another deployment sent a message under this id and cached it in the Redis both use.
    cache_names(&provider_id, Uuid::new_v4()).await;
    let app = tracked().var("RECEIPT_MATCH_WINDOW", "1s").spawn().await;

    post_delivered(&app, &provider_id).await;

    let listed = listed_unmatched(&app).await;
    assert_eq!(
        (&listed[0]["outcome"], &listed[0]["message_id"]),
        (&json!("unmatched"), &Value::Null)
    );
    assert_eq!(app.metric("receipts_unmatched_total").await, 1.0);
    let (_, matched) = app.get("/receipts?matched=true").await;
    assert_eq!(matched["items"], json!([]));
}

#[actix_web::test]
async fn a_report_dated_in_the_future_does_not_outrank_the_ones_after_it() {
    let app = tracked().spawn().await;
    let (id, provider_id) = send_one(&app).await;
    // A carrier whose clock is a year ahead.
    let ahead = Utc::now() + chrono::Duration::days(365);
    post_receipts(&app, &receipt(&provider_id, "accepted", ahead), Some(CALLBACK_KEY)).await;
    wait_for_delivery(&app, id, ReceiptStatus::Accepted).await;

    let later = Utc::now() + chrono::Duration::seconds(1);
    post_receipts(&app, &receipt(&provider_id, "buffered", later), Some(CALLBACK_KEY)).await;

    wait_for_delivery(&app, id, ReceiptStatus::Buffered).await;
}

#[actix_web::test]
async fn a_receipt_whose_id_names_several_messages_is_applied_to_none_and_counted() {
    // webhook.site answers every request with the same id.
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let provider = provider_answering(&provider_id, Duration::ZERO).await;
    let app = tracked().var("BATCH_SIZE", "10").provider(&provider).spawn().await;
    let ids = app.database.insert_many(3).await;
    app.tick_and_settle().await;
    for id in &ids {
        let message = app.database.store.get(*id).await.unwrap().unwrap();
        assert_eq!(message.provider_message_id.as_deref(), Some(provider_id.as_str()));
    }
    // Two are enough to know the id is ambiguous: the set does not grow with every send.
    let mut redis = redis_connection().await;
    let members: usize = redis::cmd("SCARD")
        .arg(insider_messaging::cache::provider_key(&provider_id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(members, 2);

    let (status, _) = post_receipts(
        &app,
        &receipt(&provider_id, "delivered", Utc::now()),
        Some(CALLBACK_KEY),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let (_, page) = app.get("/receipts?matched=false").await;
    let listed = wait_for("the receipt is listed as ambiguous", || async {
        let (_, page) = app.get("/receipts?matched=false").await;
        let items = page["items"].as_array().unwrap().clone();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(listed.len(), 1, "{page}");
    assert_eq!(
        (&listed[0]["outcome"], &listed[0]["message_id"]),
        (&json!("ambiguous"), &Value::Null)
    );
    assert_eq!(app.metric("receipts_ambiguous_total").await, 1.0);
    for id in ids {
        assert_eq!(app.database.store.get(id).await.unwrap().unwrap().delivery_status, None);
    }
}

#[actix_web::test]
async fn a_receipt_that_matches_nothing_is_listed_unmatched_once_its_window_runs_out() {
    let app = tracked().var("RECEIPT_MATCH_WINDOW", "1s").spawn().await;
    let provider_id = format!("prov-{}", Uuid::new_v4());

    post_receipts(
        &app,
        &receipt(&provider_id, "delivered", Utc::now()),
        Some(CALLBACK_KEY),
    )
    .await;
    let (_, pending) = app.get("/receipts").await;
    assert_eq!(pending["items"][0]["provider_message_id"], json!(provider_id));

    let listed = listed_unmatched(&app).await;
    assert_eq!(
        (&listed[0]["outcome"], &listed[0]["status"]),
        (&json!("unmatched"), &json!("delivered"))
    );
    assert_eq!(app.metric("receipts_unmatched_total").await, 1.0);
    let (_, matched) = app.get("/receipts?matched=true").await;
    assert_eq!(matched["items"], json!([]));
}

#[actix_web::test]
async fn receipts_need_the_callback_key_not_the_api_key() {
    let app = tracked().var("API_KEY", "operator-key").spawn().await;
    let body = receipt("prov-x", "delivered", Utc::now());

    for key in [None, Some("wrong"), Some("operator-key")] {
        let (status, answer) = post_receipts(&app, &body, key).await;
        assert_eq!(
            (status, &answer["error"]),
            (StatusCode::UNAUTHORIZED, &json!("unauthorized")),
            "{key:?}"
        );
    }
    assert_eq!(
        post_receipts(&app, &body, Some(CALLBACK_KEY)).await.0,
        StatusCode::ACCEPTED
    );
    // The operators' list is behind API_KEY like every other route.
    assert_eq!(app.get("/receipts").await.0, StatusCode::UNAUTHORIZED);
    let (status, page) = app
        .request("GET", "/receipts", &[("x-api-key", "operator-key")], None)
        .await;
    assert_eq!(
        (status, page["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    assert_eq!(app.metric("auth_failures_total").await, 4.0);
}

#[actix_web::test]
async fn the_callback_key_is_asked_before_the_body_is_read() {
    let app = tracked().spawn().await;
    // Over the 1 MiB a request may hold: without the key, the answer is the 401, not the 413.
    let oversized = serde_json::to_vec(&vec![receipt("prov-x", "delivered", Utc::now()); 12_000]).unwrap();
    assert!(oversized.len() > 1024 * 1024);
    let (status, answer) = app
        .request("POST", "/receipts", &[], Some((Some("application/json"), &oversized)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let key = [("x-ins-auth-key", CALLBACK_KEY)];
    let (status, answer) = app
        .request("POST", "/receipts", &key, Some((Some("application/json"), &oversized)))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")),
        "a JSON answer like every route's"
    );
    let (_, page) = app.request("GET", "/receipts", &[], None).await;
    assert_eq!(page["items"], json!([]), "nothing stored");
}

#[actix_web::test]
async fn receipts_are_refused_with_503_naming_the_setting_when_no_callback_key_is_set() {
    let app = TestApp::spawn().await;
    let (status, body) = post_receipts(&app, &receipt("prov-x", "delivered", Utc::now()), Some("anything")).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("callbacks_off"))
    );
    assert!(
        body["message"].as_str().unwrap().contains("CALLBACK_AUTH_KEY"),
        "{body}"
    );
    let (_, page) = app.get("/receipts").await;
    assert_eq!(page["items"], json!([]), "nothing stored");
}

#[actix_web::test]
async fn a_malformed_receipt_is_refused_naming_the_field_and_nothing_is_stored() {
    let app = tracked().spawn().await;
    let good = receipt("prov-x", "delivered", Utc::now());
    let cases = [
        (
            json!([good, {"messageId": "prov-y", "status": "sent", "at": "2026-12-02T10:00:03Z"}]),
            "status",
            "receipt 1: ",
        ),
        (
            json!({"status": "delivered", "at": "2026-12-02T10:00:03Z"}),
            "messageId",
            "is required",
        ),
        (
            json!({"messageId": "p", "status": "delivered", "at": "soon"}),
            "at",
            "RFC 3339",
        ),
        // Go's zero time: it became the message's `delivered_at`.
        (
            json!({"messageId": "p", "status": "delivered", "at": "0001-01-01T00:00:00Z"}),
            "at",
            "between",
        ),
        (json!([]), "receipts", "empty"),
        (Value::Array(vec![good.clone(); 1001]), "receipts", "at most 1000"),
    ];
    for (body, field, says) in cases {
        let (status, answer) = post_receipts(&app, &body, Some(CALLBACK_KEY)).await;
        assert_eq!(
            (status, &answer["field"]),
            (StatusCode::BAD_REQUEST, &json!(field)),
            "{answer}"
        );
        assert!(answer["message"].as_str().unwrap().contains(says), "{answer}");
    }
    let (status, answer) = app
        .request(
            "POST",
            "/receipts",
            &[("x-ins-auth-key", CALLBACK_KEY)],
            Some((Some("application/json"), b"{")),
        )
        .await;
    assert_eq!(
        (status, &answer["error"]),
        (StatusCode::BAD_REQUEST, &json!("malformed_body"))
    );
    let (_, page) = app.get("/receipts").await;
    assert_eq!(page["items"], json!([]));
    // A thousand in one request is fine.
    let batch = Value::Array(
        (0..1000)
            .map(|i| receipt(&format!("prov-{i}"), "accepted", Utc::now()))
            .collect(),
    );
    let (status, answer) = post_receipts(&app, &batch, Some(CALLBACK_KEY)).await;
    assert_eq!((status, &answer["stored"]), (StatusCode::ACCEPTED, &json!(1000)));
    // A "max date" ahead of the clock counts as now, as any time ahead of it does: not refused.
    let max_date = json!({"messageId": "prov-max", "status": "delivered", "at": "9999-12-31T23:59:59Z"});
    let (status, answer) = post_receipts(&app, &max_date, Some(CALLBACK_KEY)).await;
    assert_eq!(
        (status, &answer["stored"]),
        (StatusCode::ACCEPTED, &json!(1)),
        "{answer}"
    );
}

#[actix_web::test]
async fn a_sent_message_shows_its_delivery_on_its_page_the_sent_list_and_the_stats() {
    let app = tracked().var("BATCH_SIZE", "3").spawn().await;
    let ids = app.database.insert_many(3).await;
    app.tick_and_settle().await;
    let mut provider_ids = Vec::new();
    for id in &ids {
        let message = app.database.store.get(*id).await.unwrap().unwrap();
        provider_ids.push(message.provider_message_id.unwrap());
    }
    let at = Utc::now().trunc_subsecs(0);
    let mut undelivered = receipt(&provider_ids[1], "undelivered", at);
    undelivered["error"] = json!(34);
    let body = json!([receipt(&provider_ids[0], "delivered", at), undelivered]);
    assert_eq!(
        post_receipts(&app, &body, Some(CALLBACK_KEY)).await.0,
        StatusCode::ACCEPTED
    );
    wait_for_delivery(&app, ids[1], ReceiptStatus::Undelivered).await;
    wait_for_delivery(&app, ids[0], ReceiptStatus::Delivered).await;

    let (_, delivered) = app.get(&format!("/messages/{}", ids[0])).await;
    assert_eq!(
        (
            &delivered["delivery_status"],
            &delivered["delivered_at"],
            &delivered["delivery_error"]
        ),
        (&json!("delivered"), &json!(at), &Value::Null),
        "{delivered}"
    );
    let (_, failed) = app.get(&format!("/messages/{}", ids[1])).await;
    assert_eq!(
        (&failed["delivery_status"], &failed["delivery_error"]),
        (&json!("undelivered"), &json!("34"))
    );
    let (_, waiting) = app.get(&format!("/messages/{}", ids[2])).await;
    assert_eq!(waiting["delivery_status"], json!("awaiting_receipt"));

    let sent = app.all_sent(10).await;
    let status_of = |id: Uuid| {
        sent.iter()
            .find(|item| item["id"] == json!(id))
            .map(|item| item["delivery_status"].clone())
    };
    assert_eq!(status_of(ids[0]), Some(json!("delivered")));
    assert_eq!(status_of(ids[1]), Some(json!("undelivered")));
    assert_eq!(status_of(ids[2]), Some(json!("awaiting_receipt")));

    let (_, stats) = app.get("/stats").await;
    for window in ["last_hour", "last_day"] {
        assert_eq!(
            stats["delivery"][window],
            json!({"delivered": 1, "undelivered": 1, "rate": 0.5}),
            "{stats}"
        );
    }
}

#[actix_web::test]
async fn a_sent_message_with_no_final_receipt_within_the_timeout_shows_no_receipt() {
    let app = tracked().var("RECEIPT_TIMEOUT", "1s").spawn().await;
    let (id, provider_id) = send_one(&app).await;
    post_receipts(&app, &receipt(&provider_id, "buffered", Utc::now()), Some(CALLBACK_KEY)).await;
    wait_for_delivery(&app, id, ReceiptStatus::Buffered).await;

    wait_for("the message shows no_receipt", || async {
        let (_, message) = app.get(&format!("/messages/{id}")).await;
        (message["delivery_status"] == json!("no_receipt")).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn without_the_callback_key_sent_messages_are_not_tracked() {
    let app = TestApp::spawn().await;
    let (id, provider_id) = send_one(&app).await;
    // Cached as ever, but not indexed by the provider's id: no receipt will ever look it up.
    assert_eq!(cached(id).await.unwrap()["messageId"], json!(provider_id));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(insider_messaging::cache::provider_key(&provider_id))
        .query_async(&mut redis_connection().await)
        .await
        .unwrap();
    assert_eq!(exists, 0, "no provider index without receipts");
    let (_, message) = app.get(&format!("/messages/{id}")).await;
    assert_eq!(message["delivery_status"], json!("not_tracked"));
    assert_eq!(app.all_sent(10).await[0]["delivery_status"], json!("not_tracked"));
    let (_, stats) = app.get("/stats").await;
    assert_eq!(stats["delivery"], Value::Null, "{stats}");
    let pending = app.database.insert_many(1).await[0];
    let (_, pending) = app.get(&format!("/messages/{pending}")).await;
    assert_eq!(
        pending["delivery_status"],
        Value::Null,
        "not sent: nothing to deliver yet"
    );
}

#[actix_web::test]
async fn the_stand_in_provider_reports_delivery_early_and_twice_and_each_message_ends_delivered_once() {
    use insider_messaging::mock_provider::{MockProvider, MockProviderConfig};
    let provider = MockProvider::start(MockProviderConfig {
        receipt_delay: Duration::ZERO,
        duplicate_receipt_rate: 1.0,
        early_receipt_rate: 1.0,
        ..MockProviderConfig::default()
    })
    .unwrap();
    let app = tracked()
        .var("WEBHOOK_URL", format!("{}/sms", provider.url()))
        .var("BATCH_SIZE", "4")
        .spawn()
        .await;
    provider.send_receipts_to(format!("{}/receipts", app.address), Some(CALLBACK_KEY.to_owned()));
    let ids = app.database.insert_many(4).await;
    app.tick_and_settle().await;

    for id in &ids {
        wait_for_delivery(&app, *id, ReceiptStatus::Delivered).await;
    }
    let receipts = settled_receipts(&app).await;
    let count = |outcome: &str| receipts.iter().filter(|r| r["outcome"] == outcome).count();
    assert_eq!(
        (count("applied"), count("ignored"), receipts.len()),
        (4, 4, 8),
        "{receipts:?}"
    );
    let stats = provider.stats();
    assert_eq!((stats.receipts_sent, stats.receipts_refused), (8, 0));
}

#[actix_web::test]
async fn receipts_of_concurrent_requests_are_stored_together_and_one_the_database_refuses_fails_alone() {
    let app = tracked().spawn().await;
    let pg = app.database.pg();
    // A receipt the database refuses, as one that a gap in the validation let through would be.
    sqlx::query("ALTER TABLE receipts ADD CONSTRAINT no_poison CHECK (provider_message_id <> 'poison')")
        .execute(pg)
        .await
        .unwrap();
    // The table held, the first write waits and the next requests gather behind it, to go as one write.
    let lock = app.database.hold_lock("LOCK TABLE receipts IN EXCLUSIVE MODE").await;
    let at = Utc::now();
    let names: Vec<String> = (0..10)
        .map(|i| {
            if i == 4 {
                "poison".to_owned()
            } else {
                format!("gathered-{i}")
            }
        })
        .collect();
    let first_body = receipt("first", "delivered", at);
    let bodies: Vec<Value> = names.iter().map(|name| receipt(name, "delivered", at)).collect();
    let first = post_receipts(&app, &first_body, Some(CALLBACK_KEY));
    let gathered = async {
        wait_until("the first write waits for the table", || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INTO receipts%'",
            )
            .fetch_one(pg)
            .await
            .unwrap()
                == 1
        })
        .await;
        let posts = join_all(bodies.iter().map(|body| post_receipts(&app, body, Some(CALLBACK_KEY))));
        let release = async {
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
            lock.commit().await.unwrap();
        };
        futures_util::future::join(posts, release).await.0
    };
    let (first, gathered) = futures_util::future::join(first, gathered).await;

    assert_eq!(first.0, StatusCode::ACCEPTED);
    for (name, (status, body)) in names.iter().zip(&gathered) {
        let expected = if name == "poison" {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::ACCEPTED
        };
        assert_eq!(*status, expected, "{name}: {body}");
    }
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT provider_message_id FROM receipts ORDER BY provider_message_id")
            .fetch_all(pg)
            .await
            .unwrap();
    let mut expected: Vec<String> = names.into_iter().filter(|name| name != "poison").collect();
    expected.push("first".to_owned());
    expected.sort();
    assert_eq!(stored, expected, "every request but the refused one is stored");
}

#[actix_web::test]
async fn a_receipt_behind_a_long_backlog_waiting_out_its_window_is_still_found_by_the_sweep() {
    use insider_messaging::domain::{ProviderMessageId, Receipt};
    let app = tracked().spawn().await;
    let (id, provider_id) = send_one(&app).await;
    let stored = |provider_id: String| Receipt {
        provider_message_id: ProviderMessageId::parse(&provider_id).unwrap(),
        status: ReceiptStatus::Delivered,
        reported_at: Utc::now(),
        error: None,
    };
    // More receipts for ids nobody sent than one sweep reads (20 batches of 1,000), stored past the
    // applier (no POST /receipts tells it): only the sweep finds them, and they wait out their hour.
    for _ in 0..21 {
        let unknown: Vec<Receipt> = (0..1_000)
            .map(|_| stored(format!("nobody-{}", Uuid::new_v4())))
            .collect();
        app.database.receipts.insert_receipts(&unknown).await.unwrap();
    }
    // Then the one for the message sent, the same way: behind all of them.
    app.database
        .receipts
        .insert_receipts(&[stored(provider_id)])
        .await
        .unwrap();
    let message = wait_for_delivery(&app, id, ReceiptStatus::Delivered).await;
    assert!(message.delivered_at.is_some());
}

#[actix_web::test]
async fn a_receipt_for_a_message_stored_with_a_time_out_of_range_settles_and_so_do_those_beside_it() {
    let app = tracked().spawn().await;
    let (ok, ok_provider_id) = send_one(&app).await;
    let pg = app.database.pg();
    // Sent before 0.7.10, with a send time in year 0 (the API took it then; plain SQL still could).
    sqlx::query("ALTER TABLE messages DROP CONSTRAINT messages_times_in_range")
        .execute(pg)
        .await
        .unwrap();
    let legacy_provider_id = format!("legacy-{}", Uuid::new_v4());
    let legacy: Uuid = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, send_at, status, attempts, sent_at, provider_message_id)
         VALUES ('+905552222222', 'old', '0001-12-31 BC', 'sent', 1, now(), $1) RETURNING id",
    )
    .bind(&legacy_provider_id)
    .fetch_one(pg)
    .await
    .unwrap();
    for migration in [
        include_str!("../../migrations/postgres/20261208000001_messages_times_in_range.sql"),
        include_str!("../../migrations/postgres/20261209000001_messages_times_valid.sql"),
    ] {
        sqlx::raw_sql(migration)
            .execute(pg)
            .await
            .expect("the migration applies");
    }

    let at = Utc::now().trunc_subsecs(0);
    let both = json!([
        receipt(&legacy_provider_id, "delivered", at),
        receipt(&ok_provider_id, "delivered", at)
    ]);
    let (status, body) = post_receipts(&app, &both, Some(CALLBACK_KEY)).await;
    assert_eq!((status, &body["stored"]), (StatusCode::ACCEPTED, &json!(2)), "{body}");

    wait_for_delivery(&app, ok, ReceiptStatus::Delivered).await;
    let legacy = wait_for_delivery(&app, legacy, ReceiptStatus::Delivered).await;
    assert_eq!(legacy.when.send_at, None, "a send time out of range is none");
}
