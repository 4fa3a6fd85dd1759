//! `POST /messages/batch`: many messages in one request, each judged on its own, stored together.

use actix_web::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::*;

#[actix_web::test]
async fn a_batch_stores_the_valid_messages_in_order_and_reports_each_bad_one_at_its_index() {
    let app = TestApp::builder().var("BATCH_SIZE", "10").spawn().await;
    let body = json!({"messages": [
        {"to": "+905551111111", "content": "first"},
        {"to": "05551111111", "content": "no country code"},
        {"to": "+90 555 222 22 22", "content": "second"},
        {"to": "+905553333333", "content": "   "},
        "not an object",
        {"to": "+905554444444", "content": "third"},
    ]});

    let (status, answer) = app.post_json("/messages/batch", &body).await;

    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(3), Some(3))
    );
    let items = answer["items"].as_array().unwrap();
    let indices: Vec<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, [0, 1, 2, 3, 4, 5], "one item per message, in order");
    let refused = |i: usize| &items[i]["error"];
    assert_eq!(
        (refused(1)["error"].as_str(), refused(1)["field"].as_str()),
        (Some("invalid_field"), Some("to"))
    );
    assert_eq!(refused(3)["field"], "content");
    assert_eq!(refused(4)["error"], "malformed_body");
    let stored: Vec<Uuid> = [0, 2, 5]
        .iter()
        .map(|&i| {
            assert_eq!(items[i]["status"], "pending", "{}", items[i]);
            assert!(items[i].get("error").is_none());
            items[i]["id"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(
        app.database.count_with_status("pending").await,
        3,
        "only the valid ones"
    );

    let report = app.tick_and_settle().await;
    assert_eq!(report.claimed, 3);
    for id in &stored {
        assert_eq!(app.database.row(*id).await.status, "sent");
    }
    let (_, message) = app.get(&format!("/messages/{}", stored[1])).await;
    assert_eq!(message["to"], "+905552222222", "stored normalised");
    assert_eq!(message["content"], "second");
}

#[actix_web::test]
async fn a_batch_that_is_not_1_to_1000_messages_is_a_400_naming_messages() {
    let app = TestApp::spawn().await;
    let one = json!({"to": "+905551111111", "content": "hi"});
    for (body, expected) in [
        (json!({}), "messages: is required"),
        (json!({"messages": null}), "messages: is required"),
        (json!({"messages": one}), "messages: must be an array"),
        (json!({"messages": []}), "messages: must hold 1 to 1000 messages, got 0"),
        (
            json!({"messages": vec![one.clone(); 1001]}),
            "messages: must hold 1 to 1000 messages, got 1001",
        ),
    ] {
        let (status, answer) = app.post_json("/messages/batch", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["field"], "messages", "{answer}");
        assert_eq!(answer["message"], expected);
    }
    let (status, answer) = app.post_json("/messages/batch", &json!([one])).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );
    let (status, _) = app.post_raw("/messages/batch", "text/plain", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Within the byte limit, but a million values, each 32 bytes and more in memory: refused as it is read.
    let flood = format!(r#"{{"messages": [{}0]}}"#, "0,".repeat(1_000_000));
    let (status, answer) = app
        .post_raw("/messages/batch", "application/json", flood.into_bytes())
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("malformed_body"))
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("more than 100000 JSON values"),
        "{answer}"
    );
    assert_eq!(app.database.count_with_status("pending").await, 0, "nothing stored");
}

#[actix_web::test]
async fn a_thousand_messages_of_escaped_turkish_fit_and_a_larger_body_is_413() {
    let app = TestApp::spawn().await;
    // The worst case of the body limit: 160 characters, each written as a \u escape.
    let content = "\\u015f".repeat(160);
    let message = format!(r#"{{"to": "+905551111111", "content": "{content}"}}"#);
    let batch = |n: usize| format!(r#"{{"messages": [{}]}}"#, vec![message.as_str(); n].join(","));

    let (status, answer) = app
        .post_raw("/messages/batch", "application/json", batch(1000).into_bytes())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["accepted"], 1000, "{}", answer["items"][0]);
    assert_eq!(app.database.count_with_status("pending").await, 1000);

    let (status, answer) = app
        .post_raw("/messages/batch", "application/json", batch(2200).into_bytes())
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "body_too_large");
}
