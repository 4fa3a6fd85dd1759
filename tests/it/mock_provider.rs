//! The stand-in provider speaks the contract: 202 with a fresh id, the original id for a repeated key,
//! auth checked when configured, the faults its knobs ask for, arrivals counted per second, and receipts
//! retried until the receiver takes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use insider_messaging::mock_provider::{MockProvider, MockProviderConfig, ReportedDelivery, Stats};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::helpers::wait_for;

async fn post(provider: &MockProvider, key: &str, auth: Option<&str>) -> (u16, Value, Option<String>) {
    let mut request = awc::Client::new()
        .post(format!("{}/sms", provider.url()))
        .insert_header(("Idempotency-Key", key));
    if let Some(auth) = auth {
        request = request.insert_header(("x-ins-auth-key", auth));
    }
    let mut response = request
        .send_json(&json!({"to": "+905551111111", "content": "hi"}))
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (response.status().as_u16(), body, retry_after)
}

/// POSTs `n` messages at once, each under its own key.
async fn post_at_once(provider: &MockProvider, n: usize) -> Vec<(u16, Value, Option<String>)> {
    join_all((0..n).map(|i| async move { post(provider, &format!("key-{i}"), None).await })).await
}

/// The JSON bodies `receiver` was sent, in order.
async fn bodies(receiver: &MockServer) -> Vec<Value> {
    receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| request.body_json().unwrap())
        .collect()
}

async fn get_stats(provider: &MockProvider) -> Stats {
    get_json(provider, "/stats").await
}

async fn get_json<T: serde::de::DeserializeOwned>(provider: &MockProvider, path: &str) -> T {
    awc::Client::new()
        .get(format!("{}{path}", provider.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[actix_web::test]
async fn it_accepts_with_a_fresh_id_and_answers_a_repeated_key_with_the_original() {
    let provider = MockProvider::start(MockProviderConfig::default()).unwrap();

    let (status, first, _) = post(&provider, "key-1", None).await;
    let (_, again, _) = post(&provider, "key-1", None).await;
    let (_, other, _) = post(&provider, "key-2", None).await;

    assert_eq!(status, 202);
    assert_eq!(first["message"], "Accepted");
    assert_eq!(first["messageId"], again["messageId"], "same key, same id");
    assert_ne!(first["messageId"], other["messageId"]);
    let stats = get_stats(&provider).await;
    assert_eq!((stats.received, stats.accepted, stats.duplicates), (3, 3, 1));
    assert_eq!(
        (
            stats.distinct_keys,
            stats.keys_posted_more_than_once,
            stats.max_posts_per_key
        ),
        (2, 1, 2)
    );
    assert_eq!(stats.duplicates_by_key.get("key-1"), Some(&2));
}

#[actix_web::test]
async fn it_checks_the_auth_key_when_given_one() {
    let provider = MockProvider::start(MockProviderConfig {
        auth_key: Some("secret".to_owned()),
        ..MockProviderConfig::default()
    })
    .unwrap();

    assert_eq!(post(&provider, "k", None).await.0, 401);
    assert_eq!(post(&provider, "k", Some("wrong")).await.0, 401);
    assert_eq!(post(&provider, "k", Some("secret")).await.0, 202);
    assert_eq!(provider.stats().unauthorized, 2);
}

#[actix_web::test]
async fn its_knobs_inject_5xx_429_and_timeouts() {
    let failing = MockProvider::start(MockProviderConfig {
        fail_rate: 1.0,
        ..MockProviderConfig::default()
    })
    .unwrap();
    assert_eq!(post(&failing, "k", None).await.0, 500);

    let throttling = MockProvider::start(MockProviderConfig {
        throttle_rate: 1.0,
        retry_after: Duration::from_secs(7),
        ..MockProviderConfig::default()
    })
    .unwrap();
    let (status, _, retry_after) = post(&throttling, "k", None).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("7")));

    let silent = MockProvider::start(MockProviderConfig {
        timeout_rate: 1.0,
        ..MockProviderConfig::default()
    })
    .unwrap();
    let answered = awc::Client::builder()
        .timeout(Duration::from_millis(300))
        .finish()
        .post(format!("{}/sms", silent.url()))
        .send_json(&json!({"to": "+905551111111", "content": "hi"}))
        .await;
    assert!(answered.is_err(), "no answer in time");
    assert_eq!(silent.stats().timed_out, 1);
}

#[actix_web::test]
async fn a_body_without_to_and_content_is_a_400() {
    let provider = MockProvider::start(MockProviderConfig::default()).unwrap();
    let response = awc::Client::new()
        .post(format!("{}/sms", provider.url()))
        .send_json(&json!({"to": "+905551111111"}))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(provider.stats().bad_request, 1);
}

#[actix_web::test]
async fn its_quota_answers_429_beyond_n_posts_in_a_wall_clock_second() {
    let provider = MockProvider::start(MockProviderConfig {
        quota: Some("2/s".parse().unwrap()),
        retry_after: Duration::from_secs(3),
        ..MockProviderConfig::default()
    })
    .unwrap();

    let answers = post_at_once(&provider, 7).await;

    let stats = provider.stats();
    // Seven POSTs at once usually share a second; when they straddle two, each second admits its own two.
    let admitted: u64 = stats.posts_per_second.iter().map(|&posts| posts.min(2)).sum();
    let accepted = answers.iter().filter(|(status, _, _)| *status == 202).count() as u64;
    let throttled: Vec<_> = answers.iter().filter(|(status, _, _)| *status == 429).collect();
    assert_eq!(stats.posts_per_second.iter().sum::<u64>(), 7);
    assert_eq!(accepted, admitted);
    assert_eq!(throttled.len() as u64, 7 - admitted);
    assert!(
        throttled
            .iter()
            .all(|(_, _, retry_after)| retry_after.as_deref() == Some("3"))
    );
    assert_eq!((stats.accepted, stats.throttled), (admitted, 7 - admitted));
}

#[actix_web::test]
async fn its_stats_count_posts_per_second_and_the_busiest_second() {
    let provider = MockProvider::start(MockProviderConfig::default()).unwrap();
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();

    assert_eq!(provider.stats().posts_per_second_from, None);
    post_at_once(&provider, 5).await;

    let stats = get_stats(&provider).await;
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(stats.max_in_any_second, 5, "five POSTs at once fall in one second");
    assert_eq!(stats.posts_per_second.iter().sum::<u64>(), 5);
    let first = stats.posts_per_second_from.unwrap();
    assert!(
        (before..=after).contains(&first),
        "{first} is a wall-clock second of the run"
    );
}

#[actix_web::test]
async fn a_receipt_the_receiver_fails_is_posted_again_until_it_is_taken_and_listed_as_reported() {
    let receiver = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&receiver)
        .await;
    let provider = MockProvider::start(MockProviderConfig {
        receipts_url: Some(format!("{}/receipts", receiver.uri())),
        receipt_delay: Duration::ZERO,
        undelivered_rate: 1.0,
        ..MockProviderConfig::default()
    })
    .unwrap();

    let (_, accepted, _) = post(&provider, "key-1", None).await;

    let reported = wait_for("the third POST of the receipt is taken", || async {
        let reported: Vec<ReportedDelivery> = get_json(&provider, "/receipts").await;
        (reported.iter().map(|delivery| delivery.acknowledged).sum::<u32>() == 1).then_some(reported)
    })
    .await;
    assert_eq!(
        reported,
        vec![ReportedDelivery {
            message_id: accepted["messageId"].as_str().unwrap().to_owned(),
            status: "undelivered".to_owned(),
            copies: 1,
            posts: 3,
            acknowledged: 1,
        }]
    );
    let bodies = bodies(&receiver).await;
    assert_eq!(bodies.len(), 3);
    assert!(
        bodies.iter().all(|body| body == &bodies[0]),
        "the same receipt each time"
    );
    let stats = provider.stats();
    assert_eq!(
        (stats.receipts_sent, stats.receipts_refused, stats.receipts_given_up),
        (3, 2, 0)
    );
}

#[actix_web::test]
async fn a_receipt_refused_with_a_4xx_is_given_up_at_once() {
    let receiver = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&receiver)
        .await;
    let provider = MockProvider::start(MockProviderConfig {
        receipts_url: Some(receiver.uri()),
        receipt_delay: Duration::ZERO,
        ..MockProviderConfig::default()
    })
    .unwrap();

    post(&provider, "key-1", None).await;

    wait_for("the receipt is given up", || async {
        (provider.stats().receipts_given_up == 1).then_some(())
    })
    .await;
    let stats = provider.stats();
    assert_eq!((stats.receipts_sent, stats.receipts_refused), (1, 1));
    assert_eq!(provider.reported_deliveries()[0].acknowledged, 0);
}

#[actix_web::test]
async fn with_a_receipt_batch_the_receipts_waiting_for_a_free_post_go_together_as_an_array() {
    // Slow enough that every POST is taken while the rest of the receipts fall due.
    let receiver = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(202).set_delay(Duration::from_secs(2)))
        .mount(&receiver)
        .await;
    let provider = MockProvider::start(MockProviderConfig {
        receipts_url: Some(receiver.uri()),
        receipt_delay: Duration::ZERO,
        receipt_batch: 1_000,
        ..MockProviderConfig::default()
    })
    .unwrap();

    let accepted = post_at_once(&provider, 100).await;

    wait_for("every receipt is taken", || async {
        let reported = provider.reported_deliveries();
        (reported.len() == 100 && reported.iter().all(|delivery| delivery.acknowledged == 1)).then_some(())
    })
    .await;
    let bodies = bodies(&receiver).await;
    let mut posted: Vec<String> = bodies
        .iter()
        .flat_map(|body| match body {
            Value::Array(receipts) => receipts.clone(),
            receipt => vec![receipt.clone()],
        })
        .map(|receipt| receipt["messageId"].as_str().unwrap().to_owned())
        .collect();
    posted.sort();
    let mut ids: Vec<String> = accepted
        .iter()
        .map(|(_, body, _)| body["messageId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(posted, ids, "each accepted message's receipt, once");
    assert!(
        bodies
            .iter()
            .any(|body| body.as_array().is_some_and(|receipts| receipts.len() > 1)),
        "the receipts that waited went together: {} POSTs",
        bodies.len()
    );
    let stats = provider.stats();
    assert_eq!(
        (stats.receipts_sent, stats.receipt_requests),
        (100, bodies.len() as u64)
    );
}
