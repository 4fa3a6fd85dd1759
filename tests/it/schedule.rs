//! When and whether a message goes (issue 14): `send_at`, `expires_at` and `priority` through the API,
//! as the provider sees them, on Postgres.

use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::helpers::*;

fn id_of(message: &Value) -> Uuid {
    message["id"].as_str().expect("an id").parse().expect("a uuid")
}

async fn enqueue(app: &TestApp, body: Value) -> Value {
    let (status, message) = app.post_json("/messages", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    message
}

/// An instance whose provider takes 1.5 s to accept each message: long enough to act while one is out.
async fn with_a_slow_provider(builder: TestAppBuilder) -> TestApp {
    let provider = wiremock::MockServer::start().await;
    accept_all(&provider, Duration::from_millis(1500)).await;
    builder.provider(&std::sync::Arc::new(provider)).spawn().await
}

/// The provider's requests so far, as the ids (`Idempotency-Key`) they carried, in arrival order.
async fn posted(app: &TestApp) -> Vec<String> {
    app.provider
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key")?.to_str().ok().map(str::to_owned))
        .collect()
}

#[actix_web::test]
async fn a_scheduled_message_is_not_posted_before_its_send_at_and_goes_out_within_one_interval_after() {
    const INTERVAL: Duration = Duration::from_millis(500);
    let app = TestApp::builder()
        .var("INTERVAL", "500ms")
        .var("AUTOSTART", "true")
        .spawn()
        .await;
    let send_at = Utc::now().trunc_subsecs(6) + chrono::Duration::seconds(2);
    let scheduled = enqueue(
        &app,
        json!({"to": "+905551111111", "content": "later", "send_at": send_at.to_rfc3339()}),
    )
    .await;
    let now = enqueue(&app, json!({"to": "+905552222222", "content": "now"})).await;
    assert_eq!(timestamp(&scheduled["send_at"]), Some(send_at));
    assert_eq!(
        timestamp(&scheduled["next_attempt_at"]),
        Some(send_at),
        "due at its send_at"
    );
    assert_eq!(scheduled["priority"], "normal");

    wait_until("the unscheduled one is sent", || async {
        app.database.row(id_of(&now)).await.status == "sent"
    })
    .await;
    let id = id_of(&scheduled);
    let sent = wait_for("the scheduled one is sent", || async {
        let (_, message) = app.get(&format!("/messages/{id}")).await;
        (message["status"] == "sent").then_some(message)
    })
    .await;

    let posted_at = timestamp(&sent["history"][0]["started_at"]).expect("its POST");
    assert!(
        posted_at >= send_at,
        "posted at {posted_at}, before its send_at {send_at}"
    );
    let late = (posted_at - send_at).to_std().expect("not early");
    assert!(
        late <= INTERVAL + Duration::from_millis(250),
        "posted {late:?} after its send_at, more than one INTERVAL"
    );
    assert_eq!(posts_per_key(&app.provider).await.get(&id.to_string()), Some(&1));
}

#[actix_web::test]
async fn an_expired_message_is_never_posted_and_is_listed_as_expired() {
    let app = TestApp::spawn().await;
    let expires_at = Utc::now() + chrono::Duration::milliseconds(300);
    let expiring = enqueue(
        &app,
        json!({"to": "+905551111111", "content": "a code", "expires_at": expires_at.to_rfc3339()}),
    )
    .await;
    let lasting = enqueue(
        &app,
        json!({"to": "+905552222222", "content": "a notice",
               "expires_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339()}),
    )
    .await;
    wait_until("the code's expiry passes", || async { Utc::now() > expires_at }).await;

    let report = app.tick_and_settle().await;

    assert_eq!(report.claimed, 1, "only the message still in time is claimed");
    assert_eq!(
        posted(&app).await,
        vec![id_of(&lasting).to_string()],
        "the expired one never POSTed"
    );
    let (status, page) = app.get("/messages?status=expired").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["id"], expiring["id"]);
    assert_eq!(items[0]["status"], "expired");
    assert_eq!(items[0]["attempts"], 0);
    assert!(
        items[0]["last_error"].as_str().unwrap().contains("expires_at"),
        "{page}"
    );
    assert_eq!(app.metric("sends_total{outcome=\"expired\"}").await, 1.0);
    app.tick_and_settle().await;
    assert_eq!(posted(&app).await.len(), 1, "final: never claimed again");
}

#[actix_web::test]
async fn a_mixed_backlog_goes_out_high_first_then_normal_then_low_oldest_first_within_each() {
    let app = TestApp::spawn().await;
    let (status, answer) = app
        .post_json(
            "/messages/batch",
            &json!({"messages": [
                {"to": "+905551111111", "content": "low 1", "priority": "low"},
                {"to": "+905551111112", "content": "normal 1"},
                {"to": "+905551111113", "content": "high 1", "priority": "high"},
                {"to": "+905551111114", "content": "low 2", "priority": "low"},
                {"to": "+905551111115", "content": "normal 2", "priority": "normal"},
                {"to": "+905551111116", "content": "high 2", "priority": "high"},
            ]}),
        )
        .await;
    assert_eq!(
        (status, answer["accepted"].as_u64()),
        (StatusCode::OK, Some(6)),
        "{answer}"
    );
    let id = |i: usize| answer["items"][i]["id"].as_str().unwrap().to_owned();

    // BATCH_SIZE=2: each tick takes the next two in the claim's order.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let before = posted(&app).await.len();
        app.tick_and_settle().await;
        let mut round = posted(&app).await.split_off(before);
        round.sort();
        rounds.push(round);
    }

    let pair = |a: usize, b: usize| {
        let mut pair = vec![id(a), id(b)];
        pair.sort();
        pair
    };
    assert_eq!(
        rounds,
        vec![pair(2, 5), pair(1, 4), pair(0, 3)],
        "high, then normal, then low"
    );
}

#[actix_web::test]
async fn a_low_message_waiting_longer_than_the_aging_goes_before_newer_normal_ones() {
    let app = TestApp::builder().var("PRIORITY_AGING", "300ms").spawn().await;
    let starved = enqueue(
        &app,
        json!({"to": "+905551111111", "content": "offer", "priority": "low"}),
    )
    .await;
    let since = Utc::now();
    wait_until("the low message has waited out the aging", || async {
        Utc::now() > since + chrono::Duration::milliseconds(400)
    })
    .await;
    let mut normals = Vec::new();
    for i in 0..2 {
        normals.push(enqueue(&app, json!({"to": format!("+90555222222{i}"), "content": "notice"})).await);
    }

    app.tick_and_settle().await;

    let mut first_round = posted(&app).await;
    first_round.sort();
    let mut expected = vec![id_of(&starved).to_string(), id_of(&normals[0]).to_string()];
    expected.sort();
    assert_eq!(first_round, expected, "the aged low counts as normal, and is older");
}

#[actix_web::test]
async fn bad_send_at_expires_at_or_priority_get_a_400_naming_the_field_in_a_message_and_a_batch_item() {
    let app = TestApp::spawn().await;
    let soon = Utc::now() + chrono::Duration::hours(1);
    let cases = [
        (json!({"send_at": "tomorrow"}), "send_at"),
        (json!({"expires_at": soon.to_rfc3339() + "x"}), "expires_at"),
        (
            json!({"send_at": soon.to_rfc3339(), "expires_at": soon.to_rfc3339()}),
            "expires_at",
        ),
        (
            json!({"send_at": soon.to_rfc3339(), "expires_at": (soon - chrono::Duration::minutes(5)).to_rfc3339()}),
            "expires_at",
        ),
        (json!({"send_at": 1_764_000_000}), "send_at"),
        (json!({"priority": "urgent"}), "priority"),
        (json!({"priority": 0}), "priority"),
        // Valid RFC 3339, outside what the store keeps: was a 500 (and a whole batch with it).
        (json!({"send_at": "0000-06-01T00:00:00Z"}), "send_at"),
        (json!({"expires_at": "9999-12-31T23:00:00-02:00"}), "expires_at"),
        // Go's zero time: within year 1, and still refused by the store's constraint.
        (json!({"expires_at": "0001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"send_at": "0001-01-01T00:00:00Z"}), "send_at"),
    ];
    for (extra, field) in &cases {
        let mut body = json!({"to": "+905551111111", "content": "hello"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());

        let (status, answer) = app.post_json("/messages", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["field"], *field, "{body}: {answer}");

        let (status, answer) = app.post_json("/messages/batch", &json!({"messages": [body]})).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["items"][0]["error"]["field"], *field, "{answer}");
    }
    assert_eq!(app.database.count_with_status("pending").await, 0, "nothing stored");
}

#[actix_web::test]
async fn a_plain_insert_naming_send_at_is_due_then_and_takes_the_other_defaults() {
    let app = TestApp::spawn().await;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, send_at) VALUES ('+905551111111', 'by SQL', now() + interval '1 hour')
         RETURNING id",
    )
    .fetch_one(app.database.pg())
    .await
    .expect("a plain insert");
    let plain = app.database.insert_raw("+905552222222", "by SQL, no schedule").await;

    let (_, message) = app.get(&format!("/messages/{id}")).await;
    assert_eq!(message["next_attempt_at"], message["send_at"], "{message}");
    assert_eq!(
        (message["priority"].as_str(), message["expires_at"].as_null()),
        (Some("normal"), Some(()))
    );
    let report = app.tick_and_settle().await;
    assert_eq!(report.claimed, 1);
    assert_eq!(posted(&app).await, vec![plain.to_string()], "the scheduled one waits");
}

/// `QUIET_HOURS` from an hour before to an hour after now in Istanbul (UTC+3 all year): inside the window
/// for a Turkish number, outside it for a British one (UTC+0 in winter, +1 in summer), whatever the time
/// the test runs.
fn quiet_hours_around_now_in_istanbul() -> String {
    let now = Utc::now().with_timezone(&chrono_tz::Tz::Europe__Istanbul);
    let at = |offset: i64| (now + chrono::Duration::hours(offset)).format("%H:%M").to_string();
    format!("{}-{}", at(-1), at(1))
}

#[actix_web::test]
async fn quiet_hours_hold_a_low_message_to_a_turkish_number_while_a_british_one_outside_them_goes() {
    let app = TestApp::builder()
        .var("QUIET_HOURS", quiet_hours_around_now_in_istanbul())
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;
    let turkish_low = enqueue(
        &app,
        json!({"to": "+905551111111", "content": "Kampanya", "priority": "low"}),
    )
    .await;
    let british_low = enqueue(
        &app,
        json!({"to": "+447911123456", "content": "Offer", "priority": "low"}),
    )
    .await;
    let turkish_normal = enqueue(&app, json!({"to": "+905552222222", "content": "Kargonuz yolda"})).await;
    let tokyo_low = enqueue(
        &app,
        json!({"to": "+447911123457", "content": "Offer", "priority": "low", "timezone": "Europe/Istanbul"}),
    )
    .await;
    assert_eq!(tokyo_low["timezone"], "Europe/Istanbul");

    let report = app.tick_and_settle().await;

    assert_eq!(report.claimed, 4);
    let mut sent = posted(&app).await;
    sent.sort();
    let mut expected = vec![id_of(&british_low).to_string(), id_of(&turkish_normal).to_string()];
    expected.sort();
    assert_eq!(
        sent, expected,
        "the low ones in Istanbul's quiet hours wait; the rest go"
    );
    for held in [&turkish_low, &tokyo_low] {
        let (_, message) = app.get(&format!("/messages/{}", id_of(held))).await;
        assert_eq!(
            (message["status"].as_str(), message["attempts"].as_u64()),
            (Some("pending"), Some(0))
        );
        let due = timestamp(&message["next_attempt_at"]).expect("due again");
        let wait = (due - Utc::now()).num_seconds();
        assert!(
            (3_480..=3_660).contains(&wait),
            "due when the window ends, in about an hour: {wait} s"
        );
        assert!(
            message["last_error"].as_str().unwrap().contains("Europe/Istanbul"),
            "{message}"
        );
    }
    assert_eq!(app.metric("sends_total{outcome=\"quiet_hours\"}").await, 2.0);
    app.tick_and_settle().await;
    assert_eq!(posted(&app).await.len(), 2, "not due again before the window ends");
}

#[actix_web::test]
async fn a_bad_timezone_or_quiet_hours_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    let (status, answer) = app
        .post_json(
            "/messages",
            &json!({"to": "+905551111111", "content": "x", "timezone": "Mars/Olympus"}),
        )
        .await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("timezone"))
    );

    for (name, value) in [("QUIET_HOURS", "9pm-8am"), ("QUIET_HOURS_TZ", "Mars/Olympus")] {
        let vars = [
            ("DATABASE_URL", "sqlite://x.db"),
            ("WEBHOOK_URL", "http://127.0.0.1:9/hook"),
            (name, value),
        ];
        let error = insider_messaging::config::Settings::from_lookup(|wanted| {
            vars.iter().find(|(n, _)| *n == wanted).map(|(_, v)| (*v).to_owned())
        })
        .expect_err("refused");
        assert_eq!(error.variable, name);
    }
}

#[actix_web::test]
async fn the_daily_cap_defers_a_numbers_messages_past_the_limit_but_never_a_high_one() {
    let app = TestApp::builder()
        .var("RECIPIENT_DAILY_LIMIT", "2")
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;
    let first = enqueue(&app, json!({"to": "+905551111111", "content": "one"})).await;
    app.tick_and_settle().await;
    let high = enqueue(
        &app,
        json!({"to": "+905551111111", "content": "code", "priority": "high"}),
    )
    .await;
    let normals = [
        enqueue(&app, json!({"to": "+905551111111", "content": "two"})).await,
        enqueue(
            &app,
            json!({"to": "+905551111111", "content": "three", "priority": "low"}),
        )
        .await,
    ];
    let other = enqueue(&app, json!({"to": "+905552222222", "content": "elsewhere"})).await;

    let report = app.tick_and_settle().await;

    assert_eq!(report.claimed, 4);
    let mut sent = posted(&app).await;
    sent.sort();
    let mut expected: Vec<String> = [&first, &high, &other].iter().map(|m| id_of(m).to_string()).collect();
    expected.sort();
    assert_eq!(
        sent, expected,
        "the high one goes past the cap; the number's others wait"
    );
    // Behind the high one of their own batch, in flight when they were claimed: seconds, for it might
    // have failed. Claimed again, they find it sent, and wait for the first send to age out.
    for deferred in &normals {
        let (_, message) = app.get(&format!("/messages/{}", id_of(deferred))).await;
        let due = timestamp(&message["next_attempt_at"]).expect("due again");
        assert!((due - Utc::now()).num_seconds() <= 3, "{message}");
        app.database.make_due(id_of(deferred)).await;
    }
    assert_eq!(app.tick_and_settle().await.claimed, 2);
    for deferred in &normals {
        let (_, message) = app.get(&format!("/messages/{}", id_of(deferred))).await;
        assert_eq!(
            (message["status"].as_str(), message["attempts"].as_u64()),
            (Some("pending"), Some(0))
        );
        let due = timestamp(&message["next_attempt_at"]).expect("due again");
        let wait = (due - Utc::now()).num_minutes();
        assert!(
            (1_430..=1_440).contains(&wait),
            "deferred about a day, until the first send ages out: {wait}"
        );
        assert!(
            message["last_error"]
                .as_str()
                .unwrap()
                .contains("RECIPIENT_DAILY_LIMIT")
        );
    }
    assert_eq!(app.metric("sends_total{outcome=\"daily_cap\"}").await, 4.0);
}

/// Two messages to one number in one claim, a cap of one, and the first fails for good: the number was
/// sent nothing, so the second goes seconds later, not the next day.
#[actix_web::test]
async fn a_message_behind_one_of_its_batch_that_fails_goes_seconds_later_not_tomorrow() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_partial_json(json!({"content": "refused"})))
        .respond_with(ResponseTemplate::new(400))
        .mount(&provider)
        .await;
    accept_all(&provider, Duration::ZERO).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("RECIPIENT_DAILY_LIMIT", "1")
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;
    let refused = enqueue(&app, json!({"to": "+905551111111", "content": "refused"})).await;
    let next = enqueue(&app, json!({"to": "+905551111111", "content": "next"})).await;

    assert_eq!(app.tick_and_settle().await.claimed, 2);
    let (_, failed) = app.get(&format!("/messages/{}", id_of(&refused))).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let (_, waiting) = app.get(&format!("/messages/{}", id_of(&next))).await;
    let due = timestamp(&waiting["next_attempt_at"]).expect("due again");
    assert!(
        (due - Utc::now()).num_seconds() <= 3,
        "seconds behind the one in flight, not a day: {waiting}"
    );

    app.database.make_due(id_of(&next)).await;
    app.tick_and_settle().await;
    let (_, sent) = app.get(&format!("/messages/{}", id_of(&next))).await;
    assert_eq!(sent["status"], "sent", "{sent}");
}

#[actix_web::test]
async fn the_daily_cap_counts_a_message_still_being_sent() {
    let app = with_a_slow_provider(TestApp::builder().var("RECIPIENT_DAILY_LIMIT", "1")).await;
    let first = enqueue(&app, json!({"to": "+905551111111", "content": "one"})).await;
    app.pipeline.tick_now().await.expect("tick");
    let second = enqueue(&app, json!({"to": "+905551111111", "content": "two"})).await;

    // The first is still at the provider: the second may not take the day's only place beside it.
    let report = app.pipeline.tick_now().await.expect("tick");
    assert_eq!(report.claimed, 1);
    app.settle().await;
    assert_eq!(posted(&app).await, vec![id_of(&first).to_string()]);
    let (_, held) = app.get(&format!("/messages/{}", id_of(&second))).await;
    assert_eq!(held["status"], "pending", "{held}");
    assert!(held["last_error"].as_str().unwrap().contains("being sent"), "{held}");
    let due = timestamp(&held["next_attempt_at"]).expect("due again");
    assert!(
        due < Utc::now() + chrono::Duration::seconds(4),
        "looked at again in seconds, the first may yet fail: {due}"
    );

    // Once the first is sent, the second waits out the day.
    wait_until("the held one is due again", || async { Utc::now() > due }).await;
    assert_eq!(app.tick_and_settle().await.claimed, 1);
    assert_eq!(posted(&app).await, vec![id_of(&first).to_string()]);
    let (_, held) = app.get(&format!("/messages/{}", id_of(&second))).await;
    let due = timestamp(&held["next_attempt_at"]).expect("due again");
    assert!(
        (due - Utc::now()).num_minutes() >= 1_430,
        "deferred until the first send is a day old: {held}"
    );
}

#[actix_web::test]
async fn a_message_that_expires_while_it_waits_for_a_send_slot_is_never_posted() {
    let app = with_a_slow_provider(TestApp::builder().var("WEBHOOK_CONCURRENCY", "1")).await;
    let first = enqueue(&app, json!({"to": "+905551111111", "content": "slow"})).await;
    let expires_at = Utc::now() + chrono::Duration::milliseconds(700);
    let waiting = enqueue(
        &app,
        json!({"to": "+905552222222", "content": "a code", "expires_at": expires_at.to_rfc3339()}),
    )
    .await;

    // One slot: the first takes it for 1.5 s, the second waits in the run-ahead buffer past its expiry.
    let report = app.tick_and_settle().await;
    assert_eq!(report.claimed, 2, "both claimed, the second into the buffer");
    app.tick_and_settle().await;

    assert_eq!(
        posted(&app).await,
        vec![id_of(&first).to_string()],
        "the expired one was never posted"
    );
    let row = app.database.row(id_of(&waiting)).await;
    assert_eq!(
        (row.status.as_str(), row.attempts),
        ("expired", 0),
        "given back uncounted, expired by the next claim"
    );
}
