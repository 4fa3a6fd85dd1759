//! The database going away mid-run, part of it stuck, or an answer lost with its connection: the service
//! stays up, says so in /readyz, and loses nothing.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use actix_web::http::StatusCode;
use futures_util::future::select;
use sqlx::postgres::PgConnectOptions;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::*;

/// Ends every connection to the test database, as a Postgres restart would.
async fn kill_connections(database: &TestDatabase) {
    let name = database.url.rsplit('/').next().unwrap_or_default().to_owned();
    let admin = sqlx::PgPool::connect(&admin_database_url()).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
}

#[actix_web::test]
async fn connections_killed_mid_run_lose_nothing_and_send_nothing_twice() {
    let database = TestDatabase::create().await;
    let ids = database.insert_many(60).await;
    let app = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        // Slow enough that ten kills land while it works: 60 messages take about 1.5 s.
        .var("INTERVAL", "50ms")
        .var("BATCH_SIZE", "2")
        // A claim whose answer was lost with its connection is rescued after this.
        .var("LEASE", "2s")
        .var("WEBHOOK_TIMEOUT", "1s")
        .spawn()
        .await;

    // Each kill lands on a service at work: once it has recorded more since the previous kill, that is,
    // once it recovered from it.
    let total = ids.len() as i64;
    let mut sent_before_kill = 0;
    for _ in 0..10 {
        let database = &database;
        sent_before_kill = wait_for("more messages are sent since the last kill", || async move {
            let sent = database.count_with_status("sent").await;
            (sent > sent_before_kill).then_some(sent)
        })
        .await;
        if sent_before_kill == total {
            break;
        }
        kill_connections(database).await;
    }
    wait_until("every message is sent despite the outages", || async {
        database.count_with_status("sent").await == ids.len() as i64
    })
    .await;
    app.settle().await;

    let posts = posts_per_key(&app.provider).await;
    assert_eq!(posts.len(), ids.len());
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    assert_eq!(app.get("/readyz").await.1["database"], "up", "it recovered by itself");
}

#[actix_web::test]
async fn a_result_the_database_refuses_is_recorded_plainer_not_retried_for_good() {
    let database = TestDatabase::create().await;
    // A check a DBA added: the provider's answer breaks it.
    sqlx::query("ALTER TABLE messages ADD CONSTRAINT no_bad_ids CHECK (provider_message_id <> 'bad') NOT VALID")
        .execute(database.pg())
        .await
        .unwrap();
    let provider = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(
            wiremock::ResponseTemplate::new(202)
                .set_body_json(serde_json::json!({"message": "Accepted", "messageId": "bad"})),
        )
        .mount(&provider)
        .await;
    let app = TestApp::builder()
        .database(&database)
        .provider(&std::sync::Arc::new(provider))
        .spawn()
        .await;
    let id = database.insert_raw("+905551111111", "hello").await;

    // Before, the one result was retried for good: never settled, and sent again after a restart.
    app.tick_and_settle().await;

    let row = database.row(id).await;
    assert_eq!(
        (row.status.as_str(), row.provider_message_id, row.lease_token),
        ("sent", None, None),
        "recorded sent, without the id the database refuses"
    );
    assert_eq!(posts_per_key(&app.provider).await.get(&id.to_string()), Some(&1));
}

/// A claim that fails for what a row holds fails again at once: it was retried at once, thousands of
/// times a second, each an error line. A failed claim waits a second before the next.
#[actix_web::test]
async fn a_claim_that_keeps_failing_is_tried_again_once_a_second_not_at_once() {
    let database = TestDatabase::create().await;
    // A row no claim can take: its update raises, as a check another team added would.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'this row may not be claimed'; END $$;
         CREATE TRIGGER refuse_poison BEFORE UPDATE ON messages
             FOR EACH ROW WHEN (OLD.content = 'poison') EXECUTE FUNCTION refuse_poison();",
    )
    .execute(database.pg())
    .await
    .unwrap();
    database.insert_raw("+905551111111", "poison").await;
    let app = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        .var("INTERVAL", "10ms")
        .spawn()
        .await;

    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    let failures = app.metric("tick_errors_total").await;
    assert!((1.0..=5.0).contains(&failures), "{failures} failed claims in 3 s");
}

/// A claim that failed once (a statement another team's trigger refused for a moment, a restart) is tried
/// again a second later, not at the next tick: with the default `INTERVAL`, two minutes later.
#[actix_web::test]
async fn a_claim_that_failed_once_is_tried_again_a_second_later_not_at_the_next_tick() {
    let database = TestDatabase::create().await;
    sqlx::raw_sql(
        "CREATE TABLE refuse_claims (refuse boolean NOT NULL);
         INSERT INTO refuse_claims VALUES (true);
         CREATE FUNCTION refuse_claims() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN
                  IF (SELECT refuse FROM refuse_claims) THEN RAISE EXCEPTION 'not now'; END IF;
                  RETURN NEW;
                END $$;
         CREATE TRIGGER refuse_claims BEFORE UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION refuse_claims();",
    )
    .execute(database.pg())
    .await
    .unwrap();
    let id = database.insert_raw("+905551111111", "hello").await;
    let app = TestApp::builder()
        .database(&database)
        .var("AUTOSTART", "true")
        .var("INTERVAL", "1h")
        .spawn()
        .await;
    wait_until("the first claim fails", || async {
        app.metric("tick_errors_total").await >= 1.0
    })
    .await;

    sqlx::query("UPDATE refuse_claims SET refuse = false")
        .execute(database.pg())
        .await
        .unwrap();

    wait_until("the message is sent without another tick", || async {
        database.row(id).await.status == "sent"
    })
    .await;
}

/// A flood of API reads that hang in the database (a table locked, a plan gone slow) must not take the
/// connections the dispatcher's claims, flushes and heartbeats need: a flush held past LEASE lets another
/// replica send the message again. Messages go on being claimed, POSTed and recorded sent meanwhile.
#[actix_web::test]
async fn api_reads_stuck_in_the_database_do_not_hold_up_sending() {
    let app = TestApp::builder()
        .var("AUTOSTART", "true")
        .var("INTERVAL", "200ms")
        .spawn()
        .await;
    let database = app.database.clone();
    let lock = database
        .hold_lock("LOCK TABLE inbound_messages IN ACCESS EXCLUSIVE MODE")
        .await;
    // More hanging reads than a pool has connections.
    let client = awc::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .finish();
    let reads: Vec<_> = (0..24)
        .map(|_| {
            let request = client.get(format!("{}/inbound", app.address));
            actix_rt::spawn(async move { request.send().await.map(|response| response.status()) })
        })
        .collect();
    let name = database.url.rsplit('/').next().unwrap_or_default().to_owned();
    wait_until("every connection the reads may take waits on the lock", || async {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'")
                .bind(&name)
                .fetch_one(database.pg())
                .await
                .unwrap();
        waiting >= 10
    })
    .await;

    let ids = database.insert_many(3).await;
    // Well within ACQUIRE_TIMEOUT (5 s) and the reads' statement timeout (10 s), after which a shared
    // pool would free up by itself.
    let sent = tokio::time::timeout(std::time::Duration::from_secs(4), async {
        loop {
            if database.count_with_status("sent").await == ids.len() as i64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    lock.rollback().await.unwrap();
    assert!(sent.is_ok(), "messages stayed unsent while API reads hung");
    for read in reads {
        let status = read.await.unwrap().unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "a read that waited answered {status}"
        );
    }
    for id in ids {
        assert!(cached(id).await.is_some(), "message {id} is cached once sent");
    }
}

/// A TCP proxy to the database of `url` that loses the answer to the first flush of results: once the
/// flush's statement (the one that writes `message_attempts`) has run, it closes the connection where
/// Postgres's "ready for query" would have come, after the commit. Returns the URL to connect through it
/// and whether it did.
async fn proxy_losing_the_first_flush_answer(url: &str) -> (String, Arc<AtomicBool>) {
    let options = PgConnectOptions::from_str(url).unwrap();
    let database = (options.get_host().to_owned(), options.get_port());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let through = format!(
        "postgres://{}@127.0.0.1:{}/{}?sslmode=disable",
        options.get_username(),
        listener.local_addr().unwrap().port(),
        options.get_database().unwrap()
    );
    let lost = Arc::new(AtomicBool::new(false));
    let fired = Arc::clone(&lost);
    actix_rt::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(database.clone()).await.unwrap();
            actix_rt::spawn(relay(client, server, Arc::clone(&fired)));
        }
    });
    (through, lost)
}

/// Relays one connection; see `proxy_losing_the_first_flush_answer`. The statement is recognised by its
/// text in the Parse message (the first flush is the first time any connection prepares it), and its run
/// by the "UPDATE n" that completes it: a Parse is answered with "ready for query" before it runs.
async fn relay(client: TcpStream, server: TcpStream, fired: Arc<AtomicBool>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let armed = Arc::new(AtomicBool::new(false));
    let arm = Arc::clone(&armed);
    let flush = b"INSERT INTO message_attempts";
    let upstream = async move {
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = from_client.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if buffer[..n].windows(flush.len()).any(|window| window == flush) {
                arm.store(true, Ordering::SeqCst);
            }
            to_server.write_all(&buffer[..n]).await?;
        }
    };
    let downstream = async move {
        let mut ran = false;
        loop {
            let mut header = [0u8; 5];
            from_server.read_exact(&mut header).await?;
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut body = vec![0u8; length - 4];
            from_server.read_exact(&mut body).await?;
            if armed.load(Ordering::SeqCst) {
                ran |= header[0] == b'C' && body.starts_with(b"UPDATE");
                // Idle (`I`), not in a transaction (`T`): with status events on, a flush is a
                // transaction, and its answer is lost after the COMMIT.
                let idle = body.first() == Some(&b'I');
                if header[0] == b'Z' && ran && idle && !fired.swap(true, Ordering::SeqCst) {
                    return Ok::<_, std::io::Error>(());
                }
            }
            to_client.write_all(&header).await?;
            to_client.write_all(&body).await?;
        }
    };
    // Whichever side ends, both halves of both connections are dropped: the connection is gone.
    let _ = select(std::pin::pin!(upstream), std::pin::pin!(downstream)).await;
}

/// A flush that committed and whose answer was lost with its connection is written again and changes
/// nothing the second time: the message must still be cached as sent (and its waiting receipts told),
/// not taken for a claim another replica won.
#[actix_web::test]
async fn a_flush_whose_answer_was_lost_after_its_commit_still_caches_what_it_sent() {
    a_flush_s_answer_lost(TestApp::builder()).await;
}

/// The same with status events on: the flush is a transaction with its events, lost after its COMMIT.
#[actix_web::test]
async fn a_flush_and_its_events_whose_answer_was_lost_still_cache_what_it_sent_and_write_one_event() {
    let receiver = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let (database, id) = a_flush_s_answer_lost(
        TestApp::builder()
            .var("STATUS_WEBHOOK_URL", format!("{}/events", receiver.uri()))
            .var("STATUS_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    )
    .await;
    let events: Vec<String> = sqlx::query_scalar("SELECT type FROM status_events WHERE message_id = $1")
        .bind(id)
        .fetch_all(database.pg())
        .await
        .unwrap();
    assert_eq!(events, ["message.sent"]);
}

async fn a_flush_s_answer_lost(app: TestAppBuilder) -> (TestDatabase, uuid::Uuid) {
    let database = TestDatabase::create().await;
    let (through, lost) = proxy_losing_the_first_flush_answer(&database.url).await;
    let id = database.insert_raw("+905551111111", "hello").await;
    let app = app.database(&database).var("DATABASE_URL", through).spawn().await;
    app.tick_and_settle().await;

    assert!(lost.load(Ordering::SeqCst), "the proxy lost the flush's answer");
    let row = database.row(id).await;
    assert_eq!(row.status, "sent");
    let cached = cached(id).await.expect("the sent message is cached");
    assert_eq!(cached["messageId"].as_str(), row.provider_message_id.as_deref());
    assert_eq!(posts_per_key(&app.provider).await.len(), 1, "posted once");
    // While this runtime still relays the app's connections: dropped, the app would wait on them.
    app.shutdown().await.unwrap();
    (database, id)
}

/// A request whose statement Postgres gives up on (its statement timeout, or a DBA's cancel, as here)
/// was rolled back whole: worth trying again, a 503, not an internal error.
#[actix_web::test]
async fn an_api_read_the_database_cancels_answers_503() {
    let app = TestApp::spawn().await;
    let database = app.database.clone();
    let lock = database
        .hold_lock("LOCK TABLE inbound_messages IN ACCESS EXCLUSIVE MODE")
        .await;
    let read = {
        let request = awc::Client::new().get(format!("{}/inbound", app.address));
        actix_rt::spawn(async move {
            let mut response = request.send().await.unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            (response.status(), body)
        })
    };
    let name = database.url.rsplit('/').next().unwrap_or_default().to_owned();
    wait_until("the read waits on the lock, and is cancelled", || async {
        let cancelled: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity
              WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%inbound_messages%'",
        )
        .bind(&name)
        .fetch_one(database.pg())
        .await
        .unwrap();
        cancelled > 0
    })
    .await;
    let (status, body) = read.await.unwrap();
    lock.rollback().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "database_unavailable", "{body}");
}

/// A TCP proxy to the test Redis that can be cut: cut, it ends every connection it relays and every new
/// one at once, as a Redis restarting or a network gone would.
struct RedisProxy {
    url: String,
    up: tokio::sync::watch::Sender<bool>,
}

impl RedisProxy {
    async fn start() -> Self {
        let real = redis_url();
        let rest = real.strip_prefix("redis://").expect("a redis:// URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (format!("{credentials}@"), address.to_owned()),
            None => (String::new(), authority.to_owned()),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{credentials}{}/{path}", listener.local_addr().unwrap());
        let (up, watching) = tokio::sync::watch::channel(true);
        actix_rt::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut down = watching.clone();
                if !*down.borrow() {
                    continue;
                }
                let Ok(mut server) = TcpStream::connect(&address).await else {
                    continue;
                };
                actix_rt::spawn(async move {
                    let relay = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = down.wait_for(|up| !*up);
                    let _ = select(std::pin::pin!(relay), std::pin::pin!(cut)).await;
                });
            }
        });
        Self { url, up }
    }

    fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }
}

/// Messages sent while Redis was out of reach are recorded sent, and their cache entries, which their
/// flush could not write, are written once Redis answers again. They were left out for good.
#[actix_web::test]
async fn messages_sent_while_redis_was_out_of_reach_are_cached_once_it_answers() {
    let redis = RedisProxy::start().await;
    let app = TestApp::builder()
        .var("REDIS_URL", &redis.url)
        .var("BATCH_SIZE", "10")
        .spawn()
        .await;
    let before = app.database.insert_many(1).await[0];
    app.tick_and_settle().await;
    assert!(cached(before).await.is_some(), "cached while Redis answers");

    redis.set_up(false);
    let ids = app.database.insert_many(3).await;
    app.tick_and_settle().await;
    assert_eq!(app.database.count_with_status("sent").await, 4);
    for id in &ids {
        assert!(cached(*id).await.is_none(), "not cached while Redis is out of reach");
    }
    assert!(app.metric("cache_errors_total").await >= 1.0);

    redis.set_up(true);
    wait_until("the missing entries are written", || async {
        for id in &ids {
            if cached(*id).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    for id in ids {
        let entry = cached(id).await.unwrap();
        let row = app.database.row(id).await;
        assert_eq!(entry["messageId"], row.provider_message_id.unwrap().as_str(), "{entry}");
    }
}

/// Postgres refusing new connections (`ALLOW_CONNECTIONS false`, as in a maintenance window; a login
/// refused is the same) is an outage like a lost connection: the API answers 503
/// `database_unavailable`, the provider's receipts too, not 500 `internal_error` (which a provider may
/// take for final). And sending resumes within seconds of its end: each refusal failed in a millisecond,
/// the claim's backoff doubled to 16 s in a 20 s outage, and sending waited it out.
#[actix_web::test]
async fn a_database_refusing_new_connections_is_an_outage_and_sending_resumes_seconds_after() {
    let app = TestApp::builder()
        .var("AUTOSTART", "true")
        .var("INTERVAL", "100ms")
        .var("CALLBACK_AUTH_KEY", "provider-callback-key")
        .spawn()
        .await;
    let database = app.database.clone();
    let name = database.url.rsplit('/').next().unwrap_or_default().to_owned();
    let admin = sqlx::PgPool::connect(&admin_database_url()).await.unwrap();
    let allow = |allowed: bool| {
        let (admin, name) = (admin.clone(), name.clone());
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allowed}"
            )))
            .execute(&admin)
            .await
            .unwrap();
        }
    };
    allow(false).await;
    kill_connections(&database).await;

    let (status, body) = app.get("/stats").await;
    assert_eq!(
        (status, &body["error"]),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!("database_unavailable")
        ),
        "{body}"
    );
    let (status, body) = app
        .request(
            "POST",
            "/receipts",
            &[("x-ins-auth-key", "provider-callback-key")],
            Some((
                Some("application/json"),
                br#"{"messageId":"p-1","status":"delivered","at":"2026-12-02T10:00:03Z"}"#,
            )),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // Long enough for the claim's waits to add up past 16 s (1, 2, 4, 8, then 16 or 4).
    tokio::time::sleep(std::time::Duration::from_secs(17)).await;

    allow(true).await;
    let back = std::time::Instant::now();
    let ids = database.insert_many(2).await;
    wait_until("sending resumes", || async {
        database.count_with_status("sent").await == ids.len() as i64
    })
    .await;
    assert!(
        back.elapsed() < std::time::Duration::from_secs(7),
        "sent {:?} after the database took connections again",
        back.elapsed()
    );
    admin.close().await;
}
