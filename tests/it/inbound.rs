//! Replies from phones (`POST /inbound`, the provider's call, with `CALLBACK_AUTH_KEY`): STOP opts the
//! number out, so its pending message is never sent; START opts it back in; every reply is listed.

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const CALLBACK_KEY: &str = "callback-key";
const API_KEY: &str = "operator-key";
const NUMBER: &str = "+905551111111";

async fn spawn() -> TestApp {
    TestApp::builder()
        .var("CALLBACK_AUTH_KEY", CALLBACK_KEY)
        .var("API_KEY", API_KEY)
        .var("BATCH_SIZE", "10")
        .spawn()
        .await
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes());
    app.request(
        method,
        path,
        headers,
        bytes.as_deref().map(|b| (Some("application/json"), b)),
    )
    .await
}

async fn reply(app: &TestApp, content: &str) -> Value {
    reply_at(app, content, "2026-12-02T10:05:00Z").await
}

/// A reply the phone sent at `at`.
async fn reply_at(app: &TestApp, content: &str, at: &str) -> Value {
    let (status, stored) = call(
        app,
        "POST",
        "/inbound",
        &[("x-ins-auth-key", CALLBACK_KEY)],
        Some(json!({"from": NUMBER, "content": content, "at": at})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    stored
}

/// A reply whose content is `escaped` as it stands in the JSON, escapes and all, as a provider that
/// escapes what serde would not writes it.
async fn reply_escaped(app: &TestApp, escaped: &str) -> (StatusCode, Value) {
    let body = format!(r#"{{"from":"{NUMBER}","content":"{escaped}","at":"2026-12-02T10:05:00Z"}}"#);
    app.request(
        "POST",
        "/inbound",
        &[("x-ins-auth-key", CALLBACK_KEY)],
        Some((Some("application/json"), body.as_bytes())),
    )
    .await
}

async fn opted_out(app: &TestApp) -> bool {
    let (status, page) = call(app, "GET", "/opt-outs", &[("x-api-key", API_KEY)], None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|entry| entry["to"] == NUMBER)
}

async fn enqueue(app: &TestApp) -> String {
    let (status, message) = call(
        app,
        "POST",
        "/messages",
        &[("x-api-key", API_KEY)],
        Some(json!({"to": NUMBER, "content": "Kampanya"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    message["id"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn stop_by_inbound_suppresses_a_pending_message_and_start_lets_the_next_one_go() {
    let app = spawn().await;
    let pending = enqueue(&app).await;

    let stop = reply(&app, "  stop ").await;
    assert_eq!(stop["action"], "opt_out");
    app.tick_and_settle().await;

    assert!(posts_per_key(&app.provider).await.is_empty(), "never POSTed after STOP");
    assert_eq!(app.database.row(pending.parse().unwrap()).await.status, "suppressed");
    assert_eq!(reply(&app, "Hello, who is this?").await["action"], "other");
    assert_eq!(
        reply(&app, "İPTAL").await["action"],
        "opt_out",
        "the Turkish keyword too"
    );

    assert_eq!(reply(&app, "START").await["action"], "opt_in");
    let next = enqueue(&app).await;
    app.tick_and_settle().await;
    assert_eq!(
        posts_per_key(&app.provider).await.get(&next),
        Some(&1),
        "opted in: sent"
    );

    let (status, page) = call(&app, "GET", "/inbound?limit=3", &[("x-api-key", API_KEY)], None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let actions: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["opt_in", "opt_out", "other"], "newest first");
    let cursor = page["next_cursor"].as_str().expect("one more");
    let (_, rest) = call(
        &app,
        "GET",
        &format!("/inbound?cursor={cursor}"),
        &[("x-api-key", API_KEY)],
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["content"], "  stop ");
    assert_eq!(rest["items"][0]["from"], NUMBER);
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(metrics.contains("inbound_total{action=\"opt_out\"} 2"), "{metrics}");
}

#[actix_web::test]
async fn a_keyword_sent_before_the_numbers_latest_one_changes_nothing() {
    let app = spawn().await;
    reply_at(&app, "STOP", "2026-12-02T10:01:00Z").await;

    // The provider retries a START the phone sent before its STOP: the STOP stands.
    let late = reply_at(&app, "START", "2026-12-02T10:00:00Z").await;
    assert_eq!(late["action"], "other", "kept as what it did: nothing");
    assert!(opted_out(&app).await, "the later STOP stands");
    let pending = enqueue(&app).await;
    app.tick_and_settle().await;
    assert!(posts_per_key(&app.provider).await.is_empty(), "never POSTed");
    assert_eq!(app.database.row(pending.parse().unwrap()).await.status, "suppressed");

    // And the other way round: a START, then a STOP sent before it arrives late.
    reply_at(&app, "START", "2026-12-02T10:02:00Z").await;
    reply_at(&app, "STOP", "2026-12-02T10:01:30Z").await;
    assert!(!opted_out(&app).await, "the later START stands");
    let next = enqueue(&app).await;
    app.tick_and_settle().await;
    assert_eq!(posts_per_key(&app.provider).await.get(&next), Some(&1));
}

#[actix_web::test]
async fn a_reply_dated_in_the_future_does_not_outrank_the_keywords_sent_after_it() {
    let app = spawn().await;
    // A provider whose clock is off by decades, or a bad year.
    reply_at(&app, "START", "2099-01-01T00:00:00Z").await;

    let now = chrono::Utc::now().to_rfc3339();
    reply_at(&app, "STOP", &now).await;

    assert!(opted_out(&app).await, "the STOP the phone sent now counts");
}

/// A reply dated ahead of our clock counts as sent when it arrived, but the provider's retry of it is
/// the same reply: recognised by the time it carries, not a new START that undoes the STOP after it.
#[actix_web::test]
async fn the_retry_of_a_start_dated_ahead_of_our_clock_does_not_undo_the_stop_after_it() {
    let app = spawn().await;
    let ahead = (chrono::Utc::now() + chrono::Duration::seconds(60)).to_rfc3339();
    let start = reply_at(&app, "START", &ahead).await;
    let now = chrono::Utc::now().to_rfc3339();
    reply_at(&app, "STOP", &now).await;
    assert!(opted_out(&app).await, "the STOP sent after the START's arrival counts");

    let (status, again) = call(
        &app,
        "POST",
        "/inbound",
        &[("x-ins-auth-key", CALLBACK_KEY)],
        Some(json!({"from": NUMBER, "content": "START", "at": ahead})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, start, "the reply as first kept");
    assert!(opted_out(&app).await, "the STOP stands");
    let pending = enqueue(&app).await;
    app.tick_and_settle().await;
    assert!(posts_per_key(&app.provider).await.is_empty(), "never POSTed");
    assert_eq!(app.database.row(pending.parse().unwrap()).await.status, "suppressed");
}

/// A provider's "max date" (`9999-12-31T23:59:59Z`, a day past what a send time may be) on a STOP:
/// refused, the STOP would be lost (a provider does not resend a 400). It is taken, as of its arrival.
#[actix_web::test]
async fn a_stop_dated_at_the_end_of_time_is_taken() {
    let app = spawn().await;
    let stop = reply_at(&app, "STOP", "9999-12-31T23:59:59Z").await;
    assert_eq!(stop["action"], "opt_out", "{stop}");
    assert!(opted_out(&app).await);
    let now = chrono::Utc::now().to_rfc3339();
    let start = reply_at(&app, "START", &now).await;
    assert_eq!(
        start["action"], "opt_in",
        "the START sent after its arrival counts: {start}"
    );
}

/// An operator's opt-out is news as of when it was made: a START the phone sent before it (a late
/// delivery, a retry) leaves it in force; one sent after it opts the number back in.
#[actix_web::test]
async fn a_start_sent_before_an_operators_opt_out_leaves_it_in_force() {
    let app = spawn().await;
    let (status, entry) = call(
        &app,
        "POST",
        "/opt-outs",
        &[("x-api-key", API_KEY)],
        Some(json!({"to": NUMBER})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");

    let before = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let late = reply_at(&app, "START", &before).await;
    assert_eq!(late["action"], "other", "{late}");
    assert!(opted_out(&app).await, "the operator's opt-out stands");

    let now = chrono::Utc::now().to_rfc3339();
    let start = reply_at(&app, "START", &now).await;
    assert_eq!(start["action"], "opt_in", "{start}");
    assert!(!opted_out(&app).await, "a START sent after it opts back in");
}

#[actix_web::test]
async fn inbound_takes_only_the_callback_key_and_its_list_only_the_api_key() {
    let app = spawn().await;
    let body = json!({"from": NUMBER, "content": "STOP"});
    for headers in [vec![], vec![("x-ins-auth-key", "wrong")], vec![("x-api-key", API_KEY)]] {
        let (status, _) = call(&app, "POST", "/inbound", &headers, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}");
    }
    let (status, _) = call(&app, "GET", "/inbound", &[("x-ins-auth-key", CALLBACK_KEY)], None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the list is the operators'");
    let (status, answer) = call(
        &app,
        "POST",
        "/inbound",
        &[("x-ins-auth-key", CALLBACK_KEY)],
        Some(json!({"from": "0555", "content": "STOP"})),
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("from"))
    );
    // Go's zero time is no time a phone sent a reply at.
    let (status, answer) = call(
        &app,
        "POST",
        "/inbound",
        &[("x-ins-auth-key", CALLBACK_KEY)],
        Some(json!({"from": NUMBER, "content": "STOP", "at": "0001-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("at")),
        "{answer}"
    );
    let (_, list) = call(&app, "GET", "/opt-outs", &[("x-api-key", API_KEY)], None).await;
    assert_eq!(list["items"], json!([]), "nothing refused changed the list");
}

#[actix_web::test]
async fn without_a_callback_key_a_reply_takes_the_api_key_like_any_route() {
    let app = TestApp::builder().var("API_KEY", API_KEY).spawn().await;
    let body = json!({"from": NUMBER, "content": "STOP"});
    let (status, _) = call(&app, "POST", "/inbound", &[], Some(body.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, stored) = call(&app, "POST", "/inbound", &[("x-api-key", API_KEY)], Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["action"], "opt_out");
}

#[actix_web::test]
async fn a_reply_with_a_nul_is_kept_without_its_control_characters() {
    let app = spawn().await;
    let stored = reply(&app, "STOP\u{0}\u{7}\nthanks").await;
    assert_eq!(stored["content"], "STOP\nthanks");
    let (_, list) = call(&app, "GET", "/inbound", &[("x-api-key", API_KEY)], None).await;
    assert_eq!(list["items"][0]["content"], "STOP\nthanks");
}

/// Half an emoji alone (`\ud83d`, the other half in the next SMS part), as a provider escaping every
/// UTF-16 unit sends it: the reply is kept with U+FFFD there. Refused with a 400, the provider retried
/// it forever.
#[actix_web::test]
async fn a_reply_with_half_an_emoji_is_kept_with_a_replacement_character() {
    let app = spawn().await;
    let (status, stored) = reply_escaped(&app, r"see you \ud83d").await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["content"], "see you \u{FFFD}");
}

#[actix_web::test]
async fn the_key_is_asked_before_the_body_is_read() {
    let app = spawn().await;
    let oversized = format!("{{\"from\":\"{NUMBER}\",\"content\":\"{}\"}}", "a".repeat(40_000));
    let (status, answer) = app
        .request(
            "POST",
            "/inbound",
            &[],
            Some((Some("application/json"), oversized.as_bytes())),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    let key = [("x-ins-auth-key", CALLBACK_KEY)];
    let (status, answer) = app
        .request(
            "POST",
            "/inbound",
            &key,
            Some((Some("application/json"), oversized.as_bytes())),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    let (status, answer) = app
        .request("POST", "/inbound", &key, Some((Some("text/plain"), b"STOP")))
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type"))
    );
}

#[actix_web::test]
async fn the_providers_retry_of_a_reply_is_kept_once_and_acted_on_once() {
    let app = spawn().await;
    let stop = reply_at(&app, "STOP", "2026-12-02T10:01:00Z").await;
    reply_at(&app, "START", "2026-12-02T10:02:00Z").await;

    // The provider did not see our 201 for the STOP and sends it again, after the START.
    let (status, again) = call(
        &app,
        "POST",
        "/inbound",
        &[("x-ins-auth-key", CALLBACK_KEY)],
        Some(json!({"from": NUMBER, "content": "STOP", "at": "2026-12-02T10:01:00Z"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, stop, "the reply as first kept");
    assert!(!opted_out(&app).await, "the START stands");
    let (_, page) = call(&app, "GET", "/inbound", &[("x-api-key", API_KEY)], None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
    let (_, metrics) = app.get_text("/metrics").await;
    assert!(metrics.contains("inbound_total{action=\"opt_out\"} 1"), "{metrics}");
}

#[actix_web::test]
async fn a_stop_and_a_start_arriving_together_leave_the_one_the_phone_sent_last_in_force() {
    let app = spawn().await;
    let numbers: Vec<String> = (0..12).map(|round| format!("+9055522200{round:02}")).collect();
    for (round, number) in numbers.iter().enumerate() {
        // Even rounds: the phone sent START last; odd rounds: STOP.
        let (stop_at, start_at) = if round % 2 == 0 {
            ("2026-12-02T10:00:00Z", "2026-12-02T10:00:01Z")
        } else {
            ("2026-12-02T10:00:01Z", "2026-12-02T10:00:00Z")
        };
        let send = |content: &'static str, at: &'static str| {
            call(
                &app,
                "POST",
                "/inbound",
                &[("x-ins-auth-key", CALLBACK_KEY)],
                Some(json!({"from": number, "content": content, "at": at})),
            )
        };
        let ((stopped, _), (started, _)) = tokio::join!(send("STOP", stop_at), send("START", start_at));
        assert_eq!((stopped, started), (StatusCode::CREATED, StatusCode::CREATED));
    }
    let (status, page) = call(&app, "GET", "/opt-outs?limit=100", &[("x-api-key", API_KEY)], None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["to"].as_str().unwrap())
        .collect();
    let sent_stop_last: Vec<&str> = numbers.iter().skip(1).step_by(2).map(String::as_str).collect();
    assert_eq!(listed, sent_stop_last);
}

#[actix_web::test]
async fn the_longest_reply_is_taken_with_every_character_escaped() {
    let app = spawn().await;
    // As a provider whose JSON escapes all but ASCII sends 1,600 emoji: `\ud83d\ude00` each.
    let (status, stored) = reply_escaped(&app, &"\\ud83d\\ude00".repeat(1600)).await;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert_eq!(stored["content"].as_str().unwrap().chars().count(), 1600);
}
