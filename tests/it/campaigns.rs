//! Campaigns across two replicas on one database: a pause on one holds on both, a resume on the other
//! lets both claim again, and a cancel takes every pending message at once.

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn enqueue(app: &TestApp, to: &str, campaign: Option<&str>) -> String {
    let mut body = json!({"to": to, "content": "Kampanya"});
    if let Some(campaign) = campaign {
        body["campaign"] = json!(campaign);
    }
    let (status, message) = app.post_json("/messages", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{message}");
    assert_eq!(message["campaign"], body["campaign"]);
    message["id"].as_str().expect("an id").to_owned()
}

async fn campaign(app: &TestApp, name: &str) -> Value {
    let (status, list) = app.get("/campaigns").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["campaign"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[actix_web::test]
async fn a_campaign_paused_on_one_replica_holds_on_both_resumes_from_the_other_and_cancels_at_once() {
    let first = TestApp::builder().var("BATCH_SIZE", "10").spawn().await;
    let second = TestApp::builder()
        .var("BATCH_SIZE", "10")
        .database(&first.database)
        .provider(&first.provider)
        .spawn()
        .await;
    let promo: Vec<String> = [
        enqueue(&first, "+905551111111", Some("promo")).await,
        enqueue(&first, "+905551111112", Some("promo")).await,
    ]
    .into();
    let plain = enqueue(&first, "+905552222222", None).await;

    let (status, paused) = first.post_json("/campaigns/promo/pause", &json!({})).await;
    assert_eq!(
        (status, paused["paused"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{paused}"
    );
    first.tick_and_settle().await;
    second.tick_and_settle().await;

    let posted: Vec<String> = posts_per_key(&first.provider).await.into_keys().collect();
    assert_eq!(posted, vec![plain], "neither replica claims the paused campaign");
    let seen = campaign(&second, "promo").await;
    assert_eq!(
        (seen["paused"].as_bool(), seen["counts"]["pending"].as_u64()),
        (Some(true), Some(2)),
        "{seen}"
    );

    let (status, _) = second.post_json("/campaigns/promo/resume", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    first.tick_and_settle().await;
    let posted = posts_per_key(&first.provider).await;
    assert!(
        promo.iter().all(|id| posted.get(id) == Some(&1)),
        "resumed: each sent once"
    );

    let later = [
        enqueue(&second, "+905551111113", Some("promo")).await,
        enqueue(&second, "+905551111114", Some("promo")).await,
    ];
    let (status, cancelled) = second.post_json("/campaigns/promo/cancel", &json!({})).await;
    assert_eq!(
        (status, cancelled["cancelled"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{cancelled}"
    );
    for id in &later {
        assert_eq!(first.database.row(id.parse().unwrap()).await.status, "cancelled");
    }
    let seen = campaign(&first, "promo").await;
    assert_eq!(seen["counts"], json!({"cancelled": 2, "sent": 2}), "{seen}");
    assert_eq!(seen["paused"], true, "a cancel pauses: what comes back pending is held");
    assert_eq!(cancelled["paused"], true);
}

#[actix_web::test]
async fn a_campaign_label_out_of_bounds_gets_a_400_naming_it() {
    let app = TestApp::spawn().await;
    for bad in [
        json!(""),
        json!("x".repeat(65)),
        json!("a/b"),
        json!(7),
        json!("   "),
        json!("\u{200B}"),
        json!("\u{202E}evil\u{202C}"),
        json!("bad\u{FFFD}"),
    ] {
        let (status, answer) = app
            .post_json(
                "/messages",
                &json!({"to": "+905551111111", "content": "x", "campaign": bad}),
            )
            .await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("campaign")),
            "{bad}"
        );
    }
    // A label too long, and one whose percent escapes are not UTF-8 (`%FE` decoded alike).
    for path in [&"x".repeat(65), "%FF"] {
        let (status, answer) = app.post_json(&format!("/campaigns/{path}/pause"), &json!({})).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("campaign")),
            "{path}: {answer}"
        );
    }
}

#[actix_web::test]
async fn a_large_campaigns_cancel_commits_a_chunk_at_a_time() {
    const ROWS: i64 = 100_000;
    let app = TestApp::spawn().await;
    sqlx::query(
        "INSERT INTO messages (phone_number, content, campaign)
         SELECT '+90555' || lpad(i::text, 7, '0'), 'Kampanya', 'big' FROM generate_series(1, $1) AS i",
    )
    .bind(ROWS)
    .execute(app.database.pg())
    .await
    .expect("a large campaign");
    let cancelled_so_far = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM messages WHERE status = 'cancelled'")
            .fetch_one(app.database.pg())
            .await
            .expect("count")
    };

    // A million rows in one statement passed the 10 s statement timeout, on every retry; in chunks,
    // each committed, the cancel gets through, and an operator watching sees it advance.
    let empty = json!({});
    let cancel = app.post_json("/campaigns/big/cancel", &empty);
    let watch = async {
        let mut seen = Vec::new();
        loop {
            let now = cancelled_so_far().await;
            seen.push(now);
            if now == ROWS {
                return seen;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let ((status, body), seen) = futures_util::join!(cancel, watch);

    assert_eq!(
        (status, body["cancelled"].as_i64()),
        (StatusCode::OK, Some(ROWS)),
        "{body}"
    );
    assert!(
        seen.iter().any(|n| *n > 0 && *n < ROWS),
        "partly cancelled at some point: {seen:?}"
    );
}

#[actix_web::test]
async fn a_cancel_leaves_a_row_a_claim_took_meanwhile_to_its_claim() {
    let app = TestApp::spawn().await;
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, campaign) VALUES ('+905551111111', 'hi', 'promo') RETURNING id",
    )
    .fetch_one(app.database.pg())
    .await
    .unwrap();
    // A claim (begun on another replica before the pause) that has the row and has not committed yet.
    let mut claim = app.database.pg().begin().await.unwrap();
    sqlx::query(
        "UPDATE messages SET status = 'sending', attempts = 1, lease_owner = 'other', lease_token = gen_random_uuid(),
                lease_expires_at = now() + interval '30 seconds' WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *claim)
    .await
    .unwrap();

    let empty = json!({});
    let cancel = app.post_json("/campaigns/promo/cancel", &empty);
    let commit = async {
        actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
        claim.commit().await.unwrap();
    };
    let ((status, body), ()) = futures_util::join!(cancel, commit);

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cancelled"], 0, "{body}");
    assert_eq!(
        app.database.row(id).await.status,
        "sending",
        "its claim's: the send's result decides it"
    );
}

#[actix_web::test]
async fn a_cancel_takes_the_rows_a_claim_locked_and_left_pending() {
    let app = TestApp::spawn().await;
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, campaign)
         SELECT '+90555111111' || n, 'hi', 'promo' FROM generate_series(1, 2) AS n RETURNING id",
    )
    .fetch_all(app.database.pg())
    .await
    .unwrap();
    // A claim (begun on another replica before the pause) that read the lane's rows under lock and was
    // granted none of them by the pace: they stay pending, and locked until it commits.
    let mut claim = app.database.pg().begin().await.unwrap();
    sqlx::query("SELECT id FROM messages WHERE campaign = 'promo' FOR UPDATE SKIP LOCKED")
        .execute(&mut *claim)
        .await
        .unwrap();

    let empty = json!({});
    let cancel = app.post_json("/campaigns/promo/cancel", &empty);
    let commit = async {
        actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
        claim.commit().await.unwrap();
    };
    let ((status, body), ()) = futures_util::join!(cancel, commit);

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cancelled"], 2, "{body}");
    for id in ids {
        assert_eq!(app.database.row(id).await.status, "cancelled");
    }
}
