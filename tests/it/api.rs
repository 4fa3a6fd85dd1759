//! The HTTP API as a client sees it: every validation path, the sent list, health, metrics and docs.

use std::time::Duration;

use actix_web::http::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

use crate::helpers::*;

#[actix_web::test]
async fn a_valid_message_is_stored_pending_with_its_sms_encoding() {
    let app = TestApp::spawn().await;

    let (status, body) = app
        .post_json(
            "/messages",
            &json!({"to": "+90 555-111 11 11", "content": "Merhaba, nasılsın?"}),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["to"], "+905551111111");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["encoding"], "ucs2");
    assert_eq!(body["segments"], 1);
    assert_eq!(body["attempts"], 0);
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(app.database.row(id).await.status, "pending");

    let (status, fetched) = app.get(&format!("/messages/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["content"], "Merhaba, nasılsın?");

    app.tick_and_settle().await;
    let (_, fetched) = app.get(&format!("/messages/{id}")).await;
    assert_eq!(fetched["status"], "sent");
    assert_eq!(fetched["attempts"], 1);
    assert!(fetched["provider_message_id"].is_string() && fetched["sent_at"].is_string());
}

#[actix_web::test]
async fn invalid_fields_get_a_400_that_names_the_field() {
    let app = TestApp::builder().var("CONTENT_MAX_CHARS", "5").spawn().await;
    let cases = [
        (json!({"content": "hi"}), "to", "is required"),
        (json!({"to": null, "content": "hi"}), "to", "is required"),
        (
            json!({"to": 905551111111u64, "content": "hi"}),
            "to",
            "must be a string",
        ),
        (
            json!({"to": "905551111111", "content": "hi"}),
            "to",
            "must start with +",
        ),
        (json!({"to": "+90555abc", "content": "hi"}), "to", "only digits"),
        (json!({"to": "+1234567", "content": "hi"}), "to", "8 to 15 digits"),
        (json!({"to": "+905551111111"}), "content", "is required"),
        (
            json!({"to": "+905551111111", "content": ""}),
            "content",
            "must not be empty",
        ),
        (
            json!({"to": "+905551111111", "content": ["hi"]}),
            "content",
            "must be a string",
        ),
        (
            json!({"to": "+905551111111", "content": "şşşşşş"}),
            "content",
            "at most 5 characters, got 6",
        ),
        // Apart by less than the microsecond the store keeps: stored equal, the message could only expire.
        (
            json!({"to": "+905551111111", "content": "hi",
                   "send_at": "2027-01-01T00:00:00.0000001Z", "expires_at": "2027-01-01T00:00:00.0000004Z"}),
            "expires_at",
            "must be after send_at",
        ),
    ];
    for (body, field, message) in cases {
        let (status, error) = app.post_json("/messages", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {error}");
        assert_eq!(error["error"], "invalid_field", "{body}");
        assert_eq!(error["field"], field, "{body} -> {error}");
        let text = error["message"].as_str().unwrap();
        assert!(
            text.starts_with(&format!("{field}: ")) && text.contains(message),
            "{body} -> {text}"
        );
    }
    assert_eq!(
        app.database.count_with_status("pending").await,
        0,
        "nothing invalid was stored"
    );
    // The served spec says the limit this service keeps, not the default.
    let (_, spec) = app.get("/api-docs/openapi.json").await;
    assert_eq!(
        spec["components"]["schemas"]["CreateMessageRequest"]["properties"]["content"]["maxLength"],
        5
    );
}

#[actix_web::test]
async fn bodies_that_are_not_a_json_object_get_a_4xx_never_a_500() {
    let app = TestApp::spawn().await;
    let cases: [(&str, Vec<u8>, StatusCode, &str); 5] = [
        (
            "application/json",
            b"{\"to\":".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "application/json",
            b"[1,2]".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "application/json",
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            "text/plain",
            b"hello".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!("{{\"to\":\"+905551111111\",\"content\":\"{}\"}}", "a".repeat(20_000)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (content_type, body, expected, code) in cases {
        let (status, error) = app.post_raw("/messages", content_type, body).await;
        assert_eq!(status, expected, "{error}");
        assert_eq!(error["error"], code);
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[actix_web::test]
async fn a_key_given_twice_in_a_body_is_refused_naming_it_and_nothing_is_stored() {
    let app = TestApp::builder()
        .var("CALLBACK_AUTH_KEY", "callback-key")
        .spawn()
        .await;
    let cases: [(&str, &str, &str); 4] = [
        (
            "/messages",
            r#"{"to":"+905551111111","to":"+905552222222","content":"hi"}"#,
            "to",
        ),
        (
            "/messages/batch",
            r#"{"messages":[{"to":"+905551111111","content":"hi","content":"bye"}]}"#,
            "content",
        ),
        ("/opt-outs", r#"{"to":"+905551111111","to":"+905552222222"}"#, "to"),
        (
            "/receipts",
            r#"{"messageId":"p-1","status":"delivered","status":"undelivered","at":"2026-12-02T10:05:00Z"}"#,
            "status",
        ),
    ];
    for (path, body, key) in cases {
        let (status, error) = app
            .request(
                "POST",
                path,
                &[("x-ins-auth-key", "callback-key")],
                Some((Some("application/json"), body.as_bytes())),
            )
            .await;
        assert_eq!(
            (status, error["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("malformed_body")),
            "{path}: {error}"
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("the key \"{key}\" is given twice")),
            "{path}: {message}"
        );
    }
    assert_eq!(app.database.count_with_status("pending").await, 0);
    let (_, opt_outs) = app.get("/opt-outs").await;
    assert_eq!(opt_outs["items"], serde_json::json!([]), "{opt_outs}");
    let (_, receipts) = app.get("/receipts").await;
    assert_eq!(receipts["items"], serde_json::json!([]), "{receipts}");
}

/// A field a message does not have is most likely a misspelt one (`sendAt`, camelCase like a receipt's
/// `messageId`): ignored, the message would go out now instead of when it was meant to.
#[actix_web::test]
async fn a_field_a_message_does_not_have_is_refused_naming_it_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let (status, error) = app
        .post_json(
            "/messages",
            &json!({"to": "+905551111111", "content": "later", "sendAt": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["field"], "sendAt", "{error}");
    assert!(error["message"].as_str().unwrap().contains("send_at"), "{error}");

    let (status, batch) = app
        .post_json(
            "/messages/batch",
            &json!({"messages": [
                {"to": "+905551111111", "content": "now"},
                {"to": "+905551111112", "content": "later", "expiresAt": "2030-01-01T00:00:00Z"},
            ]}),
        )
        .await;
    assert!(status.is_success(), "{batch}");
    assert_eq!(batch["items"][1]["error"]["field"], "expiresAt", "{batch}");
    let (status, error) = app
        .post_json(
            "/messages/batch",
            &json!({"send_at": "2030-01-01T00:00:00Z", "messages": [{"to": "+905551111113", "content": "later"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["field"], "send_at", "a batch's own: {error}");
    // A lone message posted as a batch is told what a batch needs, not that `to` is no field of one.
    let (status, error) = app
        .post_json("/messages/batch", &json!({"to": "+905551111113", "content": "hi"}))
        .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("messages")),
        "{error}"
    );
    assert_eq!(app.database.count_with_status("pending").await, 1, "only the valid one");
}

#[actix_web::test]
async fn unknown_ids_and_routes_are_404_and_bad_ids_400() {
    let app = TestApp::spawn().await;

    let (status, error) = app.get(&format!("/messages/{}", Uuid::new_v4())).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("message_not_found"))
    );
    let (status, error) = app.get("/messages/not-a-uuid").await;
    assert_eq!((status, error["field"].as_str()), (StatusCode::BAD_REQUEST, Some("id")));
    let (status, error) = app.get("/nowhere").await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_route"))
    );
}

#[actix_web::test]
async fn the_sent_list_pages_newest_first_across_equal_send_times() {
    let app = TestApp::builder().var("BATCH_SIZE", "7").spawn().await;
    let ids = app.database.insert_many(7).await;
    app.tick_and_settle().await;
    // Four share one send time, to prove the keyset tie-break on id.
    sqlx::query("UPDATE messages SET sent_at = '2026-01-01T00:00:00Z' WHERE id = ANY($1)")
        .bind(&ids[..4])
        .execute(app.database.pg())
        .await
        .unwrap();
    let pending = app.database.insert_raw("+905551111111", "not sent").await;

    let items = app.all_sent(2).await;

    let listed: Vec<Uuid> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed.len(), 7);
    assert_eq!(distinct(&listed), distinct(&ids));
    assert!(!listed.contains(&pending));
    let keys: Vec<(String, Uuid)> = items
        .iter()
        .map(|i| {
            (
                i["sent_at"].as_str().unwrap().to_owned(),
                i["id"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first, ties by id");
    for item in &items {
        for field in ["id", "to", "content", "sent_at", "provider_message_id"] {
            assert!(item[field].is_string(), "{field} in {item}");
        }
    }
}

#[actix_web::test]
async fn the_sent_list_prefers_the_cached_provider_id() {
    let app = TestApp::spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;
    app.tick_and_settle().await;
    let from_db = app.database.row(id).await.provider_message_id.unwrap();
    sqlx::query("UPDATE messages SET provider_message_id = 'stale' WHERE id = $1")
        .bind(id)
        .execute(app.database.pg())
        .await
        .unwrap();

    let items = app.all_sent(20).await;

    assert_eq!(items[0]["provider_message_id"], from_db.as_str());
}

#[actix_web::test]
async fn sent_list_parameters_out_of_range_get_a_400_naming_them() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("limit=-5", "limit"),
        ("cursor=garbage", "cursor"),
        ("cursor=123_notauuid", "cursor"),
        ("cursor=--1_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11", "cursor"),
    ] {
        let (status, error) = app.get(&format!("/messages/sent?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
        assert_eq!(error["field"], field, "{query}");
    }
    let (status, page) = app.get("/messages/sent").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    // The farthest positions the spec's pattern allows (18 digits, either side of 1970) are cursors like
    // any other.
    let farthest = "999999999999999999_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11";
    let earliest = "-999999999999999999_0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11";
    for path in [
        format!("/messages/sent?cursor={farthest}"),
        format!("/messages?status=cancelled&cursor={farthest}"),
        format!("/messages?status=failed&cursor={earliest}"),
    ] {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
    }
}

/// A misspelt parameter is refused, named, not ignored: `?match=false` listed every receipt, the matched
/// ones it was meant to leave out among them.
#[actix_web::test]
async fn a_list_refuses_a_parameter_it_does_not_take_and_names_it() {
    let app = TestApp::spawn().await;
    for (path, field) in [
        ("/messages/sent?limt=5", "limt"),
        ("/messages?status=failed&cursr=", "cursr"),
        ("/receipts?match=false", "match"),
        ("/events?state=failed", "state"),
        ("/opt-outs?page=2", "page"),
        ("/inbound?limit=5&from=%2B905551111111", "from"),
        ("/messages/sent?a%60b=1", "a`b"),
        ("/events?limit=5&limit=6", "limit"),
    ] {
        let (status, error) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {error}");
        assert_eq!(
            (&error["error"], &error["field"]),
            (&json!("invalid_field"), &json!(field)),
            "{path}: {error}"
        );
    }
    let (status, _) = app.get("/events?status=failed&limit=5").await;
    assert_eq!(status, StatusCode::OK, "the parameters it takes still go");
}

/// Postgres, on its planner: a page of the pending list reads about the page, not every pending row. With
/// a backlog queued, each page (the console's pending card asks every few seconds) read and sorted all
/// of them.
#[actix_web::test]
async fn a_page_of_the_pending_list_reads_the_page_not_the_whole_backlog() {
    const PENDING: i64 = 20_000;
    let database = TestDatabase::create().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO messages (phone_number, content)
         SELECT '+90555' || lpad(i::text, 7, '0'), 'queued' FROM generate_series(1, {PENDING}) i;
         ANALYZE messages;"
    )))
    .execute(database.pg())
    .await
    .unwrap();
    // Rows and index entries of `messages` read so far.
    let read = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT t.seq_tup_read + coalesce(sum(i.idx_tup_read), 0)::bigint
               FROM pg_stat_user_tables t LEFT JOIN pg_stat_user_indexes i ON i.relid = t.relid
              WHERE t.relname = 'messages' GROUP BY t.seq_tup_read",
        )
        .fetch_one(database.pg())
        .await
        .unwrap()
    };
    let app = TestApp::builder().database(&database).spawn().await;
    // The application's own reads at start-up, counted once its connections are closed.
    let before = read().await;

    let (status, first) = app.get("/messages?status=pending&limit=20").await;
    assert_eq!(status, StatusCode::OK);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (status, next) = app
        .get(&format!("/messages?status=pending&limit=20&cursor={cursor}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next["items"].as_array().unwrap().len(), 20);
    drop(app);
    // A backend reports what it read by the time it exits.
    wait_until("the pages' reads are counted", || async { read().await > before }).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pages = read().await - before;
    assert!(
        pages <= 1_000,
        "two pages of 20 read {pages} rows and index entries of {PENDING}"
    );
}

#[actix_web::test]
async fn health_and_readiness_report_their_dependencies() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await, (StatusCode::OK, json!({"status": "ok"})));
    assert_eq!(
        app.get("/readyz").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "database": "up", "pipeline": "up", "cache": "up"})
        )
    );

    let no_redis = TestApp::builder().var("REDIS_URL", "redis://127.0.0.1:1").spawn().await;
    assert_eq!(
        no_redis.get("/readyz").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "database": "up", "pipeline": "up", "cache": "down"})
        ),
        "Redis is optional"
    );
}

/// A Redis that accepts connections and never answers (hung, or a black hole between us): readiness
/// still answers within a probe's usual 1 s timeout, ready, the cache `down`. It waited the cache's
/// whole second, and every replica's probe failed together over an optional dependency.
#[actix_web::test]
async fn readiness_answers_quickly_when_redis_hangs() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            open.push(socket);
        }
    });
    let app = TestApp::builder()
        .var("REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .spawn()
        .await;

    for _ in 0..3 {
        let started = std::time::Instant::now();
        let (status, body) = app.get("/readyz").await;
        let took = started.elapsed();
        assert_eq!(
            (status, body),
            (
                StatusCode::OK,
                json!({"status": "ready", "database": "up", "pipeline": "up", "cache": "down"})
            )
        );
        assert!(took < Duration::from_millis(700), "readiness took {took:?}");
    }
    held.abort();
}

#[actix_web::test]
async fn readiness_is_503_when_the_database_is_gone() {
    let app = TestApp::spawn().await;
    let name = app.database.url.rsplit('/').next().unwrap().to_owned();
    app.database.pg().close().await;
    let admin = sqlx::PgPool::connect(&admin_database_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&admin)
        .await
        .unwrap();

    let (status, body) = app.get("/readyz").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["database"], "down");
    let (status, error) = app
        .post_json("/messages", &json!({"to": "+905551111111", "content": "x"}))
        .await;
    assert!(status.is_server_error(), "{status}");
    assert!(
        !error["message"].as_str().unwrap().contains("postgres://"),
        "no connection details leak"
    );
}

#[actix_web::test]
async fn metrics_expose_the_documented_series() {
    let app = TestApp::spawn().await;
    app.database.insert_many(3).await;
    app.tick_and_settle().await;

    let (status, text) = app.get_text("/metrics").await;

    assert_eq!(status, StatusCode::OK);
    for series in [
        "scheduler_running 0",
        "sends_total{outcome=\"accepted\"} 2",
        "retries_total 0",
        "send_duration_seconds_count 2",
        "messages_pending 1",
        "oldest_pending_age_seconds",
        "cache_errors_total 0",
    ] {
        assert!(text.contains(series), "missing {series} in\n{text}");
    }
}

/// `/metrics` is open: a flood of scrapes must not fill the database pool the sends use with counts of
/// the queue. The database's gauges are read at most once a second, however many scrape.
#[actix_web::test]
async fn scrapes_read_the_database_s_gauges_at_most_once_a_second() {
    let app = TestApp::spawn().await;
    let pending = |text: String| {
        text.lines()
            .find_map(|line| line.strip_prefix("messages_pending "))
            .map(str::to_owned)
    };
    let (_, text) = app.get_text("/metrics").await;
    let read_at = std::time::Instant::now();
    assert_eq!(pending(text).as_deref(), Some("0"));

    app.database.insert_many(3).await;
    let mut checked = 0;
    for _ in 0..20 {
        // Only what starts well within the second is sure to find the read still fresh.
        if read_at.elapsed() > std::time::Duration::from_millis(800) {
            break;
        }
        let (status, text) = app.get_text("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(pending(text).as_deref(), Some("0"), "read under a second ago");
        checked += 1;
    }
    assert!(checked > 0, "the machine took 800 ms to enqueue 3 messages");

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, text) = app.get_text("/metrics").await;
    assert_eq!(pending(text).as_deref(), Some("3"));
}

/// A database that does not answer (down, or a table locked) must not hold the page past a scraper's
/// timeout: every series would go missing with it, the error counters that tell of the outage among
/// them. The page comes within about a second, the database's gauges at their last values.
#[actix_web::test]
async fn a_scrape_while_the_database_does_not_answer_comes_within_seconds() {
    let app = TestApp::spawn().await;
    app.database.insert_many(2).await;
    let lock = app
        .database
        .hold_lock("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        .await;
    for scrape in 0..2 {
        let started = std::time::Instant::now();
        let (status, text) = app.get_text("/metrics").await;
        let took = started.elapsed();
        assert_eq!(status, StatusCode::OK);
        assert!(
            took < std::time::Duration::from_secs(3),
            "scrape {scrape} took {took:?}"
        );
        assert!(text.contains("scheduler_running 0"), "{text}");
    }
    lock.rollback().await.unwrap();
    // The read the lock held ends unwatched; the next scrape, a second on, reads again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.database.insert_many(1).await;
    let (_, text) = app.get_text("/metrics").await;
    assert!(
        text.contains("messages_pending 3"),
        "read again once the last read is over:\n{text}"
    );
}

#[actix_web::test]
async fn the_spec_documents_every_route_and_each_one_is_served() {
    let app = TestApp::spawn().await;
    let (status, spec) = app.get("/api-docs/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));

    let mut operations: Vec<String> = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            operations.push(format!("{} {path}", method.to_uppercase()));
            assert!(
                operation["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            assert!(
                operation["description"].is_string() || operation["summary"].is_string(),
                "{method} {path}"
            );
            let concrete = path
                .replace("{id}", &Uuid::new_v4().to_string())
                .replace("{to}", "%2B905551111111")
                .replace("{campaign}", "promo");
            let (status, body) = match method.as_str() {
                "get" => app.get(&concrete).await,
                "delete" => app.request("DELETE", &concrete, &[], None).await,
                _ => app.post_json(&concrete, &json!({})).await,
            };
            assert_ne!(
                body["error"], "no_route",
                "{method} {path} is documented but not served ({status})"
            );
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "DELETE /opt-outs/{to}",
            "GET /campaigns",
            "GET /events",
            "GET /healthz",
            "GET /inbound",
            "GET /messages",
            "GET /messages/sent",
            "GET /messages/{id}",
            "GET /metrics",
            "GET /opt-outs",
            "GET /readyz",
            "GET /receipts",
            "GET /scheduler",
            "GET /stats",
            "POST /campaigns/{campaign}/cancel",
            "POST /campaigns/{campaign}/pause",
            "POST /campaigns/{campaign}/resume",
            "POST /events/{id}/retry",
            "POST /inbound",
            "POST /messages",
            "POST /messages/batch",
            "POST /messages/{id}/cancel",
            "POST /messages/{id}/retry",
            "POST /opt-outs",
            "POST /receipts",
            "POST /scheduler/start",
            "POST /scheduler/stop",
        ]
    );
    for schema in [
        "ErrorBody",
        "MessageResponse",
        "SentPage",
        "SchedulerResponse",
        "CreateMessageRequest",
    ] {
        assert!(spec["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
}

#[actix_web::test]
async fn swagger_ui_is_served_and_other_spellings_redirect_to_it() {
    let app = TestApp::spawn().await;
    let (status, html) = app.get_text("/swagger-ui/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("swagger"), "{html}");

    let client = awc::Client::builder().disable_redirects().finish();
    for from in ["/swagger", "/swagger/", "/swagger/index.html", "/swagger-ui"] {
        let response = client.get(format!("{}{from}", app.address)).send().await.unwrap();
        assert!(response.status().is_redirection(), "{from}: {}", response.status());
        let location = response.headers().get("location").unwrap().to_str().unwrap();
        assert!(location.ends_with("/swagger-ui/"), "{from} -> {location}");
    }
}

#[actix_web::test]
async fn scheduler_state_reports_interval_batch_and_ticks() {
    let app = TestApp::builder()
        .var("INTERVAL", "2m")
        .var("BATCH_SIZE", "3")
        .var("WEBHOOK_CONCURRENCY", "7")
        .spawn()
        .await;
    let (status, mut state) = app.get("/scheduler").await;
    assert_eq!(status, StatusCode::OK);
    let replicas = state.as_object_mut().unwrap().remove("replicas").unwrap();
    let breaker = state.as_object_mut().unwrap().remove("breaker").unwrap();
    assert_eq!(breaker, json!({"state": "closed", "probe_in_seconds": null}));
    let flow = state.as_object_mut().unwrap().remove("flow").unwrap();
    assert_eq!(
        flow,
        json!({"send_slots_in_use": 0, "send_slots": 7, "run_ahead": 0, "run_ahead_capacity": 7,
               "rate_limit_per_second": null, "rate_per_second": null, "throttled_for_seconds": null,
               "credentials_refused": null})
    );
    assert_eq!(
        state,
        json!({"running": false, "interval_seconds": 120.0, "batch_size": 3, "last_tick_at": null,
               "next_tick_at": null, "in_flight": 0, "webhook_concurrency": 7})
    );
    // The heartbeat comes within a second of start-up.
    assert!(replicas.as_array().unwrap().len() <= 1);
    let started = app.post_start().await;
    assert!(
        started["last_tick_at"].is_string() && started["next_tick_at"].is_string(),
        "{started}"
    );
    let _: Value = app.post_stop().await;
}

#[actix_web::test]
async fn dead_letters_are_listed_with_their_reason_and_stats_count_the_last_hour() {
    let app = TestApp::builder().var("BATCH_SIZE", "5").spawn().await;
    let bad = app.database.insert_raw("05551111111", "no plus").await;
    app.database.insert_many(2).await;
    app.database.insert_raw("+905551111111", "later").await;
    app.tick_and_settle().await;
    app.database.insert_raw("+905551111112", "waiting").await;

    let (status, page) = app.get("/messages?status=failed").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], bad.to_string());
    assert_eq!(items[0]["status"], "failed");
    assert!(items[0]["last_error"].as_str().unwrap().contains("phone_number"));
    let (_, sent) = app.get("/messages?status=sent&limit=1").await;
    assert_eq!(sent["items"].as_array().unwrap().len(), 1);
    assert!(sent["next_cursor"].is_string(), "three were sent: more than one page");

    let (status, stats) = app.get("/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert_eq!(stats["pending"], 1);
    assert!(stats["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    let minutes = stats["per_minute"].as_array().unwrap();
    let sent: u64 = minutes.iter().map(|m| m["sent"].as_u64().unwrap()).sum();
    let failed: u64 = minutes.iter().map(|m| m["failed"].as_u64().unwrap()).sum();
    assert_eq!((sent, failed), (3, 1));

    // The hour is this minute and the 59 before: a send 60 minutes back is the 61st minute, which the
    // console's chart has no column for, and is left out.
    sqlx::query(
        "UPDATE messages SET sent_at = date_trunc('minute', now()) - interval '60 minutes' + interval '59.9 seconds'
          WHERE id = (SELECT id FROM messages WHERE status = 'sent' LIMIT 1)",
    )
    .execute(app.database.pg())
    .await
    .unwrap();
    let (_, stats) = app.get("/stats").await;
    let minutes = stats["per_minute"].as_array().unwrap();
    let sent: u64 = minutes.iter().map(|m| m["sent"].as_u64().unwrap()).sum();
    assert_eq!(sent, 2, "{stats}");

    for (query, field) in [
        ("", "status"),
        ("?status=queued", "status"),
        ("?status=failed&limit=0", "limit"),
    ] {
        let (status, error) = app.get(&format!("/messages{query}")).await;
        assert_eq!(
            (status, error["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some(field)),
            "{query}"
        );
    }
}

#[actix_web::test]
async fn an_operator_retries_a_dead_letter_and_cancels_a_pending_message_and_wrong_states_get_409() {
    let provider = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad number"))
        .up_to_n_times(1)
        .mount(&provider)
        .await;
    accept_all(&provider, std::time::Duration::ZERO).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .var("BATCH_SIZE", "1")
        .spawn()
        .await;
    let dead = app.database.insert_raw("+905551111111", "first").await;
    let waiting = app.database.insert_raw("+905551111112", "second").await;
    app.tick_and_settle().await;
    assert_eq!(app.database.row(dead).await.status, "failed");

    let (status, error) = app.post_json(&format!("/messages/{waiting}/retry"), &json!({})).await;
    assert_eq!(
        (status, error["error"].as_str(), error["status"].as_str()),
        (StatusCode::CONFLICT, Some("wrong_state"), Some("pending"))
    );
    let (status, cancelled) = app.post_json(&format!("/messages/{waiting}/cancel"), &json!({})).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, retried) = app.post_json(&format!("/messages/{dead}/retry"), &json!({})).await;
    assert_eq!(
        (status, retried["status"].as_str(), retried["attempts"].as_u64()),
        (StatusCode::OK, Some("pending"), Some(0))
    );

    app.tick_and_settle().await;
    app.tick_and_settle().await;

    let (_, message) = app.get(&format!("/messages/{dead}")).await;
    assert_eq!(message["status"], "sent");
    let history = message["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{message}");
    assert_eq!(
        (history[0]["http_status"].as_u64(), history[0]["outcome"].as_str()),
        (Some(400), Some("rejected"))
    );
    assert_eq!(
        (history[1]["http_status"].as_u64(), history[1]["outcome"].as_str()),
        (Some(202), Some("accepted"))
    );
    assert_eq!(history[1]["provider_message_id"], message["provider_message_id"]);
    assert_eq!(app.database.row(waiting).await.status, "cancelled", "never sent");
    assert_eq!(posts_per_key(&app.provider).await.get(&waiting.to_string()), None);
    let (status, error) = app
        .post_json(&format!("/messages/{}/cancel", uuid::Uuid::new_v4()), &json!({}))
        .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("message_not_found"))
    );
    let (_, cancelled) = app.get("/messages?status=cancelled").await;
    assert_eq!(cancelled["items"][0]["id"], waiting.to_string());
}

#[actix_web::test]
async fn a_wrong_method_on_a_real_route_is_405_with_allow() {
    let app = TestApp::spawn().await;
    let client = awc::Client::new();
    for (method, path, allow) in [
        ("GET", "/scheduler/start", "POST"),
        ("DELETE", "/messages/0b8f3c1e-5d2a-4d6f-9a51-3f0c2f7f1c11", "GET"),
        ("TRACE", "/metrics", "GET"),
        ("GET", "/messages/batch", "POST"),
    ] {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let response = client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(response.headers().get("allow").unwrap(), allow, "{method} {path}");
    }
}

#[actix_web::test]
async fn content_that_is_blank_without_its_invisible_characters_or_holds_bidi_controls_is_refused() {
    let app = TestApp::spawn().await;
    let cases = [
        ("\u{200B}\u{200B}", "must not be empty"),
        ("\u{2800}\u{2800}\u{2800}", "must not be empty"),
        ("\u{FEFF} \u{200D}", "must not be empty"),
        ("\u{E0048}\u{E0069}", "must not be empty"),
        ("pay here \u{202E}gpj.exe", "bidirectional control"),
        ("\u{2066}hidden\u{2069}", "bidirectional control"),
    ];
    for (content, message) in cases {
        let (status, error) = app
            .post_json("/messages", &json!({"to": "+905551111111", "content": content}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{content:?}: {error}");
        assert_eq!(error["field"], "content", "{content:?}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{content:?}: {error}"
        );
    }
    let (status, batch) = app
        .post_json(
            "/messages/batch",
            &json!({"messages": [
                {"to": "+905551111111", "content": "\u{200B}"},
                {"to": "+905551111111", "content": "a\u{202E}b"},
                {"to": "+905551111111", "content": "👍\u{FE0F} visible"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(
        (batch["accepted"].as_u64(), batch["rejected"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(batch["items"][0]["error"]["field"], "content");
    assert_eq!(batch["items"][1]["error"]["field"], "content");
    assert_eq!(app.database.count_with_status("pending").await, 1);
}

#[actix_web::test]
async fn head_on_health_and_readiness_answers_like_get_without_a_body() {
    let app = TestApp::spawn().await;
    let client = awc::Client::new();
    for path in ["/healthz", "/readyz"] {
        let url = format!("{}{path}", app.address);
        let mut get = client.get(&url).send().await.unwrap();
        let get_body = get.body().await.unwrap();
        let mut head = client.head(&url).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "{path}"
        );
        assert_eq!(
            head.headers().get("content-length").unwrap().to_str().unwrap(),
            get_body.len().to_string(),
            "{path}"
        );
        assert!(head.body().await.unwrap().is_empty(), "HEAD {path} has no body");
    }
}

#[actix_web::test]
async fn requests_are_counted_by_route_template_never_by_raw_path() {
    let app = TestApp::spawn().await;
    let unknown = Uuid::new_v4();
    assert_eq!(app.get(&format!("/messages/{unknown}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("/messages/{unknown}")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/messages/sent").await.0, StatusCode::OK);
    assert_eq!(app.get(&format!("/no/such/{unknown}")).await.0, StatusCode::NOT_FOUND);
    let (status, _) = app.request("BREW", &format!("/coffee/{unknown}"), &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, text) = app.get_text("/metrics").await;
    assert!(
        !text.contains(&unknown.to_string()),
        "a raw path became a label:\n{text}"
    );
    for (series, count) in [
        (
            r#"http_requests_total{method="GET",route="/messages/{id}",status="404"}"#,
            2.0,
        ),
        (
            r#"http_requests_total{method="GET",route="/messages/sent",status="200"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="GET",route="unmatched",status="404"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{method="other",route="unmatched",status="404"}"#,
            1.0,
        ),
        (r#"http_request_duration_seconds_count{route="/messages/{id}"}"#, 2.0),
    ] {
        assert_eq!(app.metric(series).await, count, "{series}");
    }
    // The standard process series operators scrape from any process.
    if cfg!(target_os = "linux") {
        assert!(app.metric("process_resident_memory_bytes").await > 0.0);
        assert!(app.metric("process_open_fds").await > 0.0);
        assert!(app.metric("process_start_time_seconds").await > 0.0);
    }
}

#[actix_web::test]
async fn a_sqlite_file_locked_by_another_writer_is_a_503_to_retry_not_a_500() {
    let database = TestDatabase::sqlite().await;
    let app = TestApp::builder().database(&database).spawn().await;
    let other = sqlx::SqlitePool::connect(&database.url).await.expect("another writer");
    let mut writer = other.acquire().await.expect("a connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .expect("take the write lock");

    // Past the store's busy timeout.
    let (status, body) = app
        .post_json("/messages", &json!({"to": "+905551111111", "content": "hello"}))
        .await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "database_unavailable", "{body}");
    sqlx::query("ROLLBACK").execute(&mut *writer).await.expect("release it");
    let (status, body) = app
        .post_json("/messages", &json!({"to": "+905551111111", "content": "hello"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// What the middleware answers on any route is in the spec beside the route's own answers: a body that is
/// not JSON is 415 on every route that writes, and a request a page of another site sent is 403.
#[actix_web::test]
async fn the_spec_lists_the_refusals_every_route_that_writes_gives() {
    use utoipa::OpenApi;
    let app = TestApp::builder()
        .var("CALLBACK_AUTH_KEY", "callback-key")
        .spawn()
        .await;
    let spec = serde_json::to_value(insider_messaging::api::docs::ApiDoc::openapi()).unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if method == "get" {
                continue;
            }
            let listed = |status: &str| operation["responses"].get(status).is_some();
            let url = path
                .replace("{id}", &Uuid::new_v4().to_string())
                .replace("{campaign}", "promo")
                .replace("{to}", "%2B905551111111");
            let verb = method.to_uppercase();
            let (status, _) = app
                .request(&verb, &url, &[], Some((Some("text/plain"), b"hello")))
                .await;
            assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{verb} {path}");
            assert!(listed("415"), "{verb} {path} does not list 415");
            let (status, _) = app
                .request(&verb, &url, &[("origin", "https://evil.example")], None)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{verb} {path}");
            assert!(listed("403"), "{verb} {path} does not list 403");
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "every operation but the reads");
}

/// A client whose request is still arriving when the service stops holds the exit for a few seconds, not
/// for actix's default 30 (nor for the body's 10 s time limit).
#[actix_web::test]
async fn a_request_still_arriving_at_shutdown_holds_the_exit_a_few_seconds_at_most() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn().await;
    let host = app.address.trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&host).await.unwrap();
    slow.write_all(
        format!(
            "POST /messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    app.shutdown().await.expect("a clean stop");

    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    drop(slow);
}
