//! The stand-in provider speaks the contract: 202 with a fresh id, the original id for a repeated key,
//! auth checked when configured, and the faults its knobs ask for.

use std::time::Duration;

use insider_messaging::mock_provider::{MockProvider, MockProviderConfig, Stats};
use serde_json::{Value, json};

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
    let stats: Stats = awc::Client::new()
        .get(format!("{}/stats", provider.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
