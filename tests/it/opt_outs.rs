//! The suppression list through the API: a number on it is never sent to, whether its messages were
//! enqueued before or after it opted out, and taking it off lets new messages go.

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

const OPTED_OUT: &str = "+905551111111";

async fn enqueue(app: &TestApp, to: &str) -> String {
    let (status, message) = app
        .post_json("/messages", &json!({"to": to, "content": "Kampanya"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    message["id"].as_str().expect("an id").to_owned()
}

async fn posted_keys(app: &TestApp) -> Vec<String> {
    posts_per_key(&app.provider).await.into_keys().collect()
}

#[actix_web::test]
async fn a_number_that_opted_out_gets_nothing_enqueued_before_or_after_until_it_opts_in_again() {
    let app = TestApp::builder().var("BATCH_SIZE", "10").spawn().await;
    let before = enqueue(&app, OPTED_OUT).await;

    let (status, entry) = app.post_json("/opt-outs", &json!({"to": "+90 555 111 11 11"})).await;
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    assert_eq!(entry["to"], OPTED_OUT, "normalised as a message's to");
    let (status, _) = app.post_json("/opt-outs", &json!({"to": OPTED_OUT})).await;
    assert_eq!(status, StatusCode::OK, "already on the list");
    let after = enqueue(&app, OPTED_OUT).await;
    let other = enqueue(&app, "+905552222222").await;

    app.tick_and_settle().await;

    assert_eq!(
        posted_keys(&app).await,
        vec![other.clone()],
        "only the other number's message is POSTed"
    );
    let (_, page) = app.get("/messages?status=suppressed").await;
    let mut suppressed: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    suppressed.sort();
    let mut expected = vec![before.as_str(), after.as_str()];
    expected.sort();
    assert_eq!(suppressed, expected, "{page}");
    assert_eq!(page["items"][0]["last_error"], "suppressed: the number opted out");
    assert_eq!(app.metric("sends_total{outcome=\"suppressed\"}").await, 2.0);

    let (status, _) = app.request("DELETE", "/opt-outs/%2B905551111111", &[], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.request("DELETE", "/opt-outs/+905551111111", &[], None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("opt_out_not_found"))
    );
    let again = enqueue(&app, OPTED_OUT).await;
    app.tick_and_settle().await;
    assert!(posted_keys(&app).await.contains(&again), "opted in again: sent");
    assert_eq!(
        app.database.count_with_status("suppressed").await,
        2,
        "those suppressed stay so"
    );
}

#[actix_web::test]
async fn a_row_inserted_with_the_number_spelled_otherwise_is_still_suppressed() {
    let app = TestApp::builder().var("BATCH_SIZE", "10").spawn().await;
    let (status, _) = app.post_json("/opt-outs", &json!({"to": OPTED_OUT})).await;
    assert_eq!(status, StatusCode::CREATED);
    // Another system's plain INSERT, in spellings the API itself accepts.
    let suppressed = app.database.insert_raw("+90 555 111 11 11", "Kampanya").await;
    let other = app.database.insert_raw("+90 555-222-22-22", "Kampanya").await;

    app.tick_and_settle().await;
    app.tick_and_settle().await;

    assert_eq!(
        posted_keys(&app).await,
        vec![other.to_string()],
        "the opted-out number got nothing"
    );
    let row = app.database.row(suppressed).await;
    assert_eq!((row.status.as_str(), row.attempts), ("suppressed", 0));
    let row = app.database.row(other).await;
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 1));
    let (_, sent) = app.get(&format!("/messages/{other}")).await;
    assert_eq!(sent["to"], "+905552222222", "stored in its normal form once claimed");
}

#[actix_web::test]
async fn a_number_whose_normal_form_the_database_refuses_fails_unsent() {
    let app = TestApp::builder().var("BATCH_SIZE", "10").spawn().await;
    // A rule of the database's own that the spaced spelling passes and the normal form breaks.
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT no_plain_numbers CHECK (phone_number LIKE '% %')")
        .execute(app.database.pg())
        .await
        .unwrap();
    let id = app.database.insert_raw("+90 555 111 11 11", "Kampanya").await;

    app.tick_and_settle().await;

    let row = app.database.row(id).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert!(row.last_error.unwrap().contains("normal form"));
    assert!(posted_keys(&app).await.is_empty());
}

/// Postgres: rows stored before numbers were spelled plainly, which the migration left as they were, are
/// listed once each, page after page, and the walk ends. A cursor of their digits named another place
/// (`905551110003` came back as `+905551110003`, before itself) or was refused.
#[actix_web::test]
async fn the_opt_out_list_pages_through_numbers_stored_before_they_were_spelled_plainly() {
    let app = TestApp::spawn().await;
    for to in ["+905551110001", "+905551110002"] {
        let (status, body) = app.post_json("/opt-outs", &json!({"to": to})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    sqlx::raw_sql(
        "ALTER TABLE opt_outs DISABLE TRIGGER opt_outs_spelled_plainly;
         INSERT INTO opt_outs (phone_number) VALUES ('905551110003'), ('905551110004'), ('+90 555 ABC 12');
         ALTER TABLE opt_outs ENABLE TRIGGER opt_outs_spelled_plainly;",
    )
    .execute(app.database.pg())
    .await
    .unwrap();

    let mut listed = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let (status, page) = app.get(&format!("/opt-outs?limit=1&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        listed.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["to"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let mut expected = vec![
        "+905551110001",
        "+905551110002",
        "905551110003",
        "905551110004",
        "+90 555 ABC 12",
    ];
    expected.sort_unstable();
    let mut got = listed.clone();
    got.sort_unstable();
    assert_eq!(got, expected, "each once, and the walk ends: {listed:?}");
}

#[actix_web::test]
async fn the_opt_out_list_pages_by_cursor_and_bad_input_gets_a_400_naming_the_field() {
    let app = TestApp::spawn().await;
    for to in ["+905553333333", "+441234567890", "+905551111111"] {
        let (status, body) = app.post_json("/opt-outs", &json!({"to": to})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let (status, first) = app.get("/opt-outs?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let numbers = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["to"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(numbers(&first), ["+441234567890", "+905551111111"]);
    let cursor = first["next_cursor"].as_str().expect("another page");
    let (_, second) = app.get(&format!("/opt-outs?limit=2&cursor={cursor}")).await;
    assert_eq!(numbers(&second), ["+905553333333"]);
    assert!(second["next_cursor"].is_null(), "the last page");
    // Any cursor the spec allows is a place in the list: a NUL (`AA`), which Postgres refused with a 500,
    // and bytes that are no UTF-8 (`bJp`), read as the nearest text.
    for cursor in ["AA", "bJp"] {
        let (status, page) = app.get(&format!("/opt-outs?limit=5&cursor={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{cursor}: {page}");
    }

    for (body, field) in [
        (json!({}), "to"),
        (json!({"to": "05551111111"}), "to"),
        (json!({"to": 905551111111_u64}), "to"),
    ] {
        let (status, answer) = app.post_json("/opt-outs", &body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{body}"
        );
    }
    for (path, field) in [
        ("/opt-outs?limit=0", "limit"),
        ("/opt-outs?cursor=%2B90", "cursor"),
        // No length base64url has.
        ("/opt-outs?cursor=abcde", "cursor"),
    ] {
        let (status, answer) = app.get(path).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{path}"
        );
    }
    let (status, answer) = app.request("DELETE", "/opt-outs/not-a-number", &[], None).await;
    assert_eq!(
        (status, answer["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("to"))
    );
}
