//! Our own ticker: autostart, pacing, stop and start, and shutdown with sends in flight.

use std::{sync::Arc, time::Duration};

use actix_web::http::StatusCode;
use chrono::{DateTime, Utc};
use wiremock::MockServer;

use crate::helpers::*;

/// `INTERVAL` of the tests that stop and start sending.
const INTERVAL: Duration = Duration::from_millis(100);

/// Waits until each of the `replicas` that `app` lists has sent a heartbeat after `after`, still not
/// sending. A bounded quiet spell: proving that nothing is sent takes time, and while sending is stopped
/// no tick marks it. A heartbeat does: it is the control loop re-reading the cluster's switch (off) and
/// finding its scheduler stopped, and a stopped scheduler sends no tick.
async fn stopped_heartbeats_after(app: &TestApp, after: DateTime<Utc>, replicas: usize) {
    wait_until("every replica reports a heartbeat, still stopped", || async {
        let listed = app.get("/scheduler").await.1["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        listed.len() == replicas
            && listed.iter().all(|replica| {
                replica["sending"] == false && timestamp(&replica["last_seen"]).is_some_and(|t| t > after)
            })
    })
    .await;
}

#[actix_web::test]
async fn with_autostart_sending_begins_by_itself_and_keeps_the_pace() {
    let database = TestDatabase::create().await;
    let ids = database.insert_many(6).await;
    let app = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        .var("INTERVAL", "300ms")
        .spawn()
        .await;

    wait_until("all six are sent", || async {
        database.count_with_status("sent").await == 6
    })
    .await;

    // Two per tick, oldest first: each pair's sent_at is earlier than the next pair's.
    let mut sent_at = Vec::new();
    for id in &ids {
        sent_at.push(database.row(*id).await.sent_at.unwrap());
    }
    for pair in 0..2 {
        let latest_of_pair = sent_at[pair * 2].max(sent_at[pair * 2 + 1]);
        let earliest_of_next = sent_at[pair * 2 + 2].min(sent_at[pair * 2 + 3]);
        assert!(
            earliest_of_next - latest_of_pair > chrono::Duration::milliseconds(150),
            "pair {pair} and the next went out on the same tick: {sent_at:?}"
        );
    }
    assert_eq!(app.provider.received_requests().await.unwrap().len(), 6);
    assert_eq!(app.get("/scheduler").await.1["running"], true);
}

#[actix_web::test]
async fn stop_halts_sending_and_start_resumes_it() {
    let database = TestDatabase::create().await;
    let app = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        .var("INTERVAL", format!("{}ms", INTERVAL.as_millis()))
        .spawn()
        .await;

    let stopped = app.post_stop().await;
    assert_eq!(stopped["running"], false);
    assert_eq!(stopped["next_tick_at"], serde_json::Value::Null);
    assert_eq!(app.metric("scheduler_running").await, 0.0);
    app.settle().await;
    let ids = database.insert_many(3).await;
    stopped_heartbeats_after(&app, Utc::now() + 5 * INTERVAL, 1).await; // five intervals, no tick
    assert!(
        app.provider.received_requests().await.unwrap().is_empty(),
        "no POST while stopped"
    );
    assert_eq!(database.count_with_status("pending").await, 3);

    let started = app.post_start().await;
    assert_eq!(started["running"], true);
    assert_eq!(started["batch_size"], 2);
    assert_eq!(started["interval_seconds"], 0.1);
    assert_eq!(app.post_start().await["running"], true, "start is idempotent");
    wait_until("the queue drains", || async {
        database.count_with_status("sent").await == 3
    })
    .await;
    assert_eq!(posts_per_key(&app.provider).await.len(), ids.len());
    assert_eq!(app.metric("scheduler_running").await, 1.0);
}

/// `messages` enqueued on a fresh database, and an instance sending them (every 50 ms) to a provider that
/// answers each after `latency`.
async fn sending_to_a_slow_provider(messages: usize, latency: Duration) -> (TestDatabase, TestApp) {
    let provider = MockServer::start().await;
    accept_all(&provider, latency).await;
    let database = TestDatabase::create().await;
    database.insert_many(messages).await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&Arc::new(provider))
        .var("AUTOSTART", "true")
        .var("INTERVAL", "50ms")
        .spawn()
        .await;
    (database, app)
}

#[actix_web::test]
async fn posts_in_flight_never_exceed_the_send_slots_and_claims_run_ahead_by_one_round() {
    let (database, app) = sending_to_a_slow_provider(6, Duration::from_millis(1500)).await;

    wait_until("the first two are posted", || async {
        app.provider.received_requests().await.unwrap().len() == 2
    })
    .await;
    // Ten ticks while the provider is slow (its answers take 1.5 s), as GET /scheduler reports them.
    let both_posted_at = Utc::now();
    wait_until("ten more ticks ran", || async {
        timestamp(&app.get("/scheduler").await.1["last_tick_at"])
            .is_some_and(|last_tick| last_tick > both_posted_at + 9 * Duration::from_millis(50))
    })
    .await;

    assert_eq!(
        app.provider.received_requests().await.unwrap().len(),
        2,
        "slow sends hold their slots"
    );
    assert_eq!(
        database.count_with_status("sending").await,
        4,
        "two posted, two waiting in the run-ahead buffer"
    );
    assert_eq!(
        database.count_with_status("pending").await,
        2,
        "the buffer holds one round of slots, no more"
    );
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["in_flight"], 4, "{scheduler}");
}

#[actix_web::test]
async fn shutdown_waits_for_a_send_in_flight_and_records_it() {
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::from_millis(800)).await;
    let app = TestApp::builder().provider(&Arc::new(provider)).spawn().await;
    let id = app.database.insert_raw("+905551111111", "hello").await;
    let database = app.database.clone();

    app.pipeline.tick_now().await.unwrap();
    wait_until("the provider has the request", || async {
        !app.provider.received_requests().await.unwrap().is_empty()
    })
    .await;
    assert_eq!(database.row(id).await.status, "sending");

    app.shutdown().await.expect("a clean shutdown");

    let row = database.row(id).await;
    assert_eq!(
        row.status, "sent",
        "the answer that arrived during shutdown is recorded"
    );
    assert!(row.provider_message_id.is_some());
}

#[actix_web::test]
async fn a_shutdown_with_nothing_in_flight_is_prompt() {
    let app = TestApp::spawn().await;
    let started = std::time::Instant::now();
    app.shutdown().await.expect("a clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[actix_web::test]
async fn a_stop_on_one_replica_halts_the_others_and_survives_a_restart() {
    let database = TestDatabase::create().await;
    let spawn = || {
        TestApp::builder()
            .database(&database)
            .var("AUTOSTART", "true")
            .var("INTERVAL", format!("{}ms", INTERVAL.as_millis()))
            .spawn()
    };
    let (a, b) = (spawn().await, spawn().await);
    wait_until("both replicas are listed", || async {
        a.get("/scheduler").await.1["replicas"]
            .as_array()
            .is_some_and(|r| r.len() == 2)
    })
    .await;

    a.post_stop().await;
    wait_until("replica B stops too", || async {
        b.get("/scheduler").await.1["running"] == false
    })
    .await;
    database.insert_many(2).await;
    stopped_heartbeats_after(&a, Utc::now() + 5 * INTERVAL, 2).await; // five intervals, no tick
    assert!(a.provider.received_requests().await.unwrap().is_empty());
    assert!(
        b.provider.received_requests().await.unwrap().is_empty(),
        "no POST from the other replica"
    );

    // AUTOSTART only seeds the switch: a fresh instance follows the stop.
    let c = spawn().await;
    assert_eq!(c.get("/scheduler").await.1["running"], false);

    b.post_start().await;
    wait_until("replica A starts again", || async {
        a.get("/scheduler").await.1["running"] == true
    })
    .await;
    wait_until("the queue drains", || async {
        database.count_with_status("sent").await == 2
    })
    .await;
}

#[actix_web::test]
async fn a_stopping_instance_beats_while_it_drains_then_leaves_the_replica_list_for_good() {
    let (database, app) = sending_to_a_slow_provider(1, Duration::from_millis(2500)).await;
    wait_until("the message is posted", || async {
        app.provider.received_requests().await.unwrap().len() == 1
    })
    .await;
    let since = Utc::now() - chrono::Duration::hours(1);
    wait_until("its heartbeat lists it", || async {
        database.all.list_replicas(since).await.unwrap().len() == 1
    })
    .await;

    // The drain waits for the slow answer. Meanwhile the instance still beats, so that no other replica
    // takes its claim for a dead one's.
    let stop_began = Utc::now();
    let stopping = actix_rt::spawn(app.shutdown());
    wait_until("a heartbeat during the drain", || async {
        database
            .all
            .list_replicas(since)
            .await
            .unwrap()
            .iter()
            .any(|replica| replica.last_seen > stop_began)
    })
    .await;
    stopping.await.unwrap().unwrap();
    assert_eq!(
        database.all.list_replicas(since).await.unwrap(),
        vec![],
        "off the list, and not put back by a heartbeat during the drain"
    );
}

#[actix_web::test]
async fn readiness_is_503_draining_while_the_instance_shuts_down() {
    let provider = wiremock::MockServer::start().await;
    accept_all(&provider, std::time::Duration::from_millis(1500)).await;
    let app = TestApp::builder()
        .provider(&std::sync::Arc::new(provider))
        .spawn()
        .await;
    app.database.insert_many(1).await;
    app.pipeline.tick_now().await.expect("tick");
    let (address, client) = (app.address.clone(), awc::Client::default());

    // SIGTERM with a send at the provider: the drain waits for it, the server still answers.
    let drained = actix_rt::spawn(app.shutdown());
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut answer = client.get(format!("{address}/readyz")).send().await.expect("an answer");
    let body: serde_json::Value = answer.json().await.expect("JSON");

    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        (&body["status"], &body["pipeline"]),
        (&serde_json::json!("not_ready"), &serde_json::json!("draining"))
    );
    drained.await.expect("the drain's task").expect("a clean drain");
}

/// SQLite keeps an id as the text it was given, and the service finds a claimed message again by its id
/// in lowercase: an id in capitals (a GUID from .NET or SQL Server) was POSTed every 30 s for good, its
/// result never recorded. Now it is stored in lowercase, and a spelling that is no UUID is refused at
/// the INSERT, not claimed.
#[actix_web::test]
async fn on_sqlite_a_plain_insert_naming_its_id_in_capitals_is_sent_once_and_recorded() {
    let database = TestDatabase::sqlite().await;
    let app = TestApp::builder().database(&database).spawn().await;
    let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
    let insert = |id: &'static str| {
        sqlx::query("INSERT INTO messages (id, phone_number, content) VALUES (?1, '+905551111111', 'hello')")
            .bind(id)
            .execute(&pool)
    };
    insert("6F9619FF-8B86-D011-B42D-00C04FC964FF").await.unwrap();
    for refused in [
        "{6f9619ff-8b86-d011-b42d-00c04fc964fe}",
        "6f9619ff8b86d011b42d00c04fc964fe",
        "42",
    ] {
        let error = insert(refused).await.expect_err(refused).to_string();
        assert!(error.contains("messages.id must be a UUID"), "{refused}: {error}");
    }

    app.tick_and_settle().await;

    let (status, message) = app.get("/messages/6f9619ff-8b86-d011-b42d-00c04fc964ff").await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(message["status"], "sent", "{message}");
    assert_eq!(message["attempts"], 1, "{message}");
    assert_eq!(app.provider.received_requests().await.unwrap().len(), 1);
    assert_eq!(database.count_with_status("sending").await, 0);

    // The producer's retry of its insert, ignoring a duplicate: the same message, not a second row.
    sqlx::query(
        "INSERT OR IGNORE INTO messages (id, phone_number, content)
         VALUES ('6F9619FF-8B86-D011-B42D-00C04FC964FF', '+905551111111', 'hello')",
    )
    .execute(&pool)
    .await
    .unwrap();
    app.tick_and_settle().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    assert_eq!(app.provider.received_requests().await.unwrap().len(), 1);
}

/// SQLite stores what a plain INSERT gives: a time computed in floating point, or written as text, a
/// priority of 1.5, content as bytes. Such a row failed every claim, and every claim took it first, so
/// nothing was sent at all. It is refused at the INSERT, naming the columns, as Postgres refuses it.
#[actix_web::test]
async fn on_sqlite_a_plain_insert_of_a_value_the_service_cannot_read_is_refused_and_the_rest_go() {
    let database = TestDatabase::sqlite().await;
    let app = TestApp::builder().database(&database).spawn().await;
    let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
    let in_an_hour = (Utc::now() + chrono::Duration::hours(1)).timestamp_micros();

    let refused = [
        sqlx::query("INSERT INTO messages (phone_number, content, expires_at) VALUES ('+905551111111', 'a', ?1)")
            .bind(in_an_hour as f64 + 0.5)
            .execute(&pool)
            .await,
        sqlx::query("INSERT INTO messages (phone_number, content, send_at) VALUES ('+905551111111', 'b', ?1)")
            .bind("2026-12-24 09:00")
            .execute(&pool)
            .await,
        sqlx::query("INSERT INTO messages (phone_number, content, priority) VALUES ('+905551111111', 'c', 1.5)")
            .execute(&pool)
            .await,
        sqlx::query("INSERT INTO messages (phone_number, content) VALUES ('+905551111111', ?1)")
            .bind(b"d".to_vec())
            .execute(&pool)
            .await,
        // A column the claim does not read, but whose row every UPDATE would refuse, failing the claim.
        sqlx::query("INSERT INTO messages (phone_number, content, last_error) VALUES ('+905551111111', 'f', ?1)")
            .bind(b"\x01".to_vec())
            .execute(&pool)
            .await,
    ];
    let columns = ["expires_at", "send_at", "priority", "content", "last_error"];
    for (outcome, column) in refused.into_iter().zip(columns) {
        let error = outcome.expect_err(column).to_string();
        assert!(error.contains(column), "{column}: {error}");
    }
    sqlx::query("INSERT INTO messages (phone_number, content, expires_at) VALUES ('+905551111111', 'e', ?1)")
        .bind(in_an_hour)
        .execute(&pool)
        .await
        .unwrap();

    app.tick_and_settle().await;

    assert_eq!(database.count_with_status("sent").await, 1);
    assert_eq!(app.provider.received_requests().await.unwrap().len(), 1);
}

/// Rows a plain INSERT stored before 0.7.14 with values the service cannot read (a REAL time, a text
/// date, content as bytes, an id that is no UUID) are mended by the migrations: the failed list and each
/// message's page answer, and a retried one is sent.
#[actix_web::test]
async fn on_sqlite_rows_stored_with_values_the_service_cannot_read_are_mended_and_listed() {
    let path = std::env::temp_dir().join(format!("insider-it-{}.db", uuid::Uuid::new_v4().simple()));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    // The schema as 0.7.13 left it: the migrations before 2026-12-10.
    let before = std::env::temp_dir().join(format!("insider-it-migrations-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&before).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().as_ref() < "20261210" {
            std::fs::copy(entry.path(), before.join(entry.file_name())).unwrap();
        }
    }
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let in_an_hour = (Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    sqlx::query("INSERT INTO messages (phone_number, content, expires_at) VALUES ('+905551111111', 'real', ?1)")
        .bind(in_an_hour as f64 + 0.5)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO messages (phone_number, content, created_at) VALUES ('+905551111111', 'text', 'soon')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO messages (phone_number, content) VALUES ('+905551111111', ?1)")
        .bind(b"bytes".to_vec())
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO messages (id, phone_number, content) VALUES ('abc', '+905551111111', 'no uuid')")
        .execute(&pool)
        .await
        .unwrap();
    // Bytes that are no UTF-8, and a campaign of bytes that starts with a NUL (its length as text is 0).
    sqlx::query(
        "INSERT INTO messages (phone_number, content, status, campaign) VALUES ('+905551111111', ?1, 'cancelled', ?2)",
    )
    .bind(vec![0xffu8, 0xfe])
    .bind(vec![0u8, b'A'])
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    std::fs::remove_dir_all(&before).unwrap();

    let database = TestDatabase::sqlite_file(path).await;
    let app = TestApp::builder().database(&database).spawn().await;

    let (status, failed) = app.get("/messages?status=failed&limit=10").await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    let failed = failed["items"].as_array().unwrap().clone();
    assert_eq!(failed.len(), 3, "the real time, the bytes and the id: {failed:?}");
    for message in &failed {
        let (status, page) = app.get(&format!("/messages/{}", message["id"].as_str().unwrap())).await;
        assert_eq!(status, StatusCode::OK, "{page}");
    }
    let (status, cancelled) = app.get("/messages?status=cancelled").await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["items"][0]["content"], "FFFE", "bytes as their hex digits");
    let (status, pending) = app.get("/messages?status=pending").await;
    assert_eq!(status, StatusCode::OK, "{pending}");
    assert_eq!(pending["items"][0]["content"], "text", "its created_at read as now");

    let real = failed.iter().find(|m| m["content"] == "real").unwrap();
    let (status, _) = app
        .post_json(
            &format!("/messages/{}/retry", real["id"].as_str().unwrap()),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.tick_and_settle().await;
    app.tick_and_settle().await;
    assert_eq!(
        database.count_with_status("sent").await,
        2,
        "the retried one and the text one"
    );
}
