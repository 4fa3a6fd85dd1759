//! The real binary, killed with SIGKILL while its sends are in flight, then started again: every
//! claimed message ends `sent`; a request in flight at the kill is posted at most once more (same
//! `Idempotency-Key`), never a third time, and nothing is lost.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::oneshot;
use wiremock::MockServer;

use crate::helpers::*;

const INTERVAL: Duration = Duration::from_millis(100);

fn serve(database: &TestDatabase, provider: &MockServer, lease: &str) -> Child {
    serve_command(database, provider)
        .env("LEASE", lease)
        .spawn()
        .expect("the binary starts")
}

/// `serve` on `database` and `provider`, before it is spawned: a test adds to its environment.
fn serve_command(database: &TestDatabase, provider: &MockServer) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_insider-messaging"));
    command
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("WEBHOOK_URL", format!("{}{WEBHOOK_PATH}", provider.uri()))
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("INTERVAL", format!("{}ms", INTERVAL.as_millis()))
        .env("BATCH_SIZE", "4")
        .env("WEBHOOK_TIMEOUT", "60s")
        // `info`, for the line that says which port it bound.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// The `http://127.0.0.1:<port>` the process logs once it listens. Its log is read to the end, so the
/// process never blocks on a full pipe.
fn address_of(child: &mut Child) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    rx.recv_timeout(WAIT).expect("the process reports where it listens")
}

/// `last_tick_at` of `GET /scheduler`, when nothing is in flight.
async fn last_tick_with_nothing_in_flight(address: &str) -> Option<DateTime<Utc>> {
    let mut response = awc::Client::default()
        .get(format!("{address}/scheduler"))
        .send()
        .await
        .ok()?;
    let scheduler: Value = response.json().await.ok()?;
    timestamp(&scheduler["last_tick_at"]).filter(|_| scheduler["in_flight"] == 0)
}

#[actix_web::test]
async fn a_process_killed_mid_send_loses_nothing_and_posts_at_most_once_more() {
    let database = TestDatabase::create().await;
    let ids = database.insert_many(4).await;
    let provider = MockServer::start().await;
    // Slow enough that the kill lands while all four requests are open.
    accept_all(&provider, Duration::from_secs(30)).await;

    // A short lease so the restart need not wait long; the kill comes well within it.
    let mut first = serve(&database, &provider, "5s");
    address_of(&mut first);
    wait_until("all four are in flight", || async {
        provider.received_requests().await.unwrap().len() == 4
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let before_kill = posts_per_key(&provider).await;
    assert_eq!(
        database.count_with_status("sending").await,
        4,
        "claimed, no result recorded"
    );

    provider.reset().await;
    accept_all(&provider, Duration::ZERO).await;
    let mut second = serve(&database, &provider, "30s");
    let address = address_of(&mut second);
    wait_until("the rescued messages are sent", || async {
        database.count_with_status("sent").await == 4
    })
    .await;
    // Nothing further may go out. A repeat needs a claim and a claim needs a tick, so the quiet spell is
    // over once three ticks have run since, with nothing in flight.
    let all_sent_at = Utc::now();
    wait_until("three more ticks ran, with nothing in flight", || async {
        last_tick_with_nothing_in_flight(&address)
            .await
            .is_some_and(|last_tick| last_tick > all_sent_at + 2 * INTERVAL)
    })
    .await;
    let after_restart = posts_per_key(&provider).await;

    nix_terminate(&second);
    let status = second.wait().expect("reaped");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    for id in &ids {
        let key = id.to_string();
        let total = before_kill.get(&key).copied().unwrap_or(0) + after_restart.get(&key).copied().unwrap_or(0);
        assert_eq!(total, 2, "{key}: once in flight at the kill, once after the lease");
        let row = database.row(*id).await;
        assert_eq!((row.status.as_str(), row.attempts), ("sent", 2));
    }
}

#[actix_web::test]
async fn sigterm_while_a_statement_waits_exits_0_once_the_statement_returns() {
    let database = TestDatabase::create().await;
    database.insert_many(2).await;
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::ZERO).await;
    let mut service = serve(&database, &provider, "30s");
    address_of(&mut service);
    wait_until("the first messages are sent", || async {
        database.count_with_status("sent").await == 2
    })
    .await;

    // The next claim waits on this lock, holding a pooled connection, when SIGTERM comes.
    let lock = database.hold_lock("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE").await;
    a_statement_waits_on_a_lock(&database).await;
    nix_terminate(&service);
    // Long enough for the drain and the server's stop to finish while the statement still waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    lock.rollback().await.unwrap();

    let status = wait_for("the process exits", || {
        std::future::ready(service.try_wait().ok().flatten())
    })
    .await;
    // The connection the statement holds is given back before the runtime ends: sqlx's `Drop` spawns
    // on the runtime, and panics (SIGABRT) when there is none.
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
}

/// Statements that wait past the close grace (a lock held by someone else) do not turn the exit into an
/// abort. Sends still at a slow provider when the drain's grace runs out are recorded by flushes that
/// then wait on the lock, each holding a connection: the process gives up on them and exits 0 while
/// they still wait. Their connections were dropped with the runtime, outside it, where sqlx's `Drop`
/// panics; a second such panic is an abort (exit 134).
#[actix_web::test]
async fn sigterm_while_statements_outlast_the_close_grace_exits_0_without_them() {
    let (database, _provider, mut service) = sending_slowly(20, Duration::from_secs(1), "3s", 8).await;

    let lock = database.hold_lock("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE").await;
    nix_terminate(&service);
    let status = wait_for("the process exits while the lock is held", || {
        std::future::ready(service.try_wait().ok().flatten())
    })
    .await;
    lock.rollback().await.unwrap();
    assert!(status.success(), "SIGTERM exits 0, not an abort: {status:?}");
}

/// An operator stopped sending; the instance restarts with `AUTOSTART=true` (the default): it stays
/// stopped, as the cluster's switch says, and says so, instead of a log that ends at "listening on".
#[actix_web::test]
async fn a_restart_into_a_cluster_stopped_by_an_operator_says_it_sends_nothing() {
    let database = TestDatabase::create().await;
    let provider = MockServer::start().await;
    let mut first = serve(&database, &provider, "30s");
    address_of(&mut first);
    sqlx::query("UPDATE dispatcher_control SET sending = false, changed_by = 'operator' WHERE id = 1")
        .execute(database.pg())
        .await
        .unwrap();
    nix_terminate(&first);
    first.wait().unwrap();

    let mut second = serve(&database, &provider, "30s");
    let received = lines_of(second.stderr.take().expect("piped stderr"));
    let said = loop {
        let line = received.recv_timeout(WAIT).expect("the process logs until it listens");
        if line.contains("sending is stopped for the whole cluster") {
            break true;
        }
        if line.contains("listening on ") {
            break false;
        }
    };
    let _ = second.kill();
    let _ = second.wait();
    assert!(said, "a restart into a stopped cluster says so before it listens");
}

/// SIGTERM starts the drain, which waits for a provider that takes its time; a second signal (an
/// operator's second Ctrl-C) ends the process at once. It was ignored, and the drain waited it out.
#[actix_web::test]
async fn a_second_signal_during_the_drain_exits_at_once() {
    the_second_of_two_signals_exits_at_once(Duration::from_millis(500)).await;
}

/// The second signal right behind the first, before the drain has begun: not lost between two handlers.
#[actix_web::test]
async fn a_second_signal_right_behind_the_first_is_not_lost() {
    the_second_of_two_signals_exits_at_once(Duration::ZERO).await;
}

async fn the_second_of_two_signals_exits_at_once(between: Duration) {
    let (_database, _provider, mut service) = sending_slowly(2, Duration::from_secs(30), "40s", 2).await;

    nix_terminate(&service);
    if !between.is_zero() {
        tokio::time::sleep(between).await;
        assert!(service.try_wait().unwrap().is_none(), "the first signal drains");
    }
    let second = std::time::Instant::now();
    nix_terminate(&service);
    let status = wait_for("the process exits", || {
        std::future::ready(service.try_wait().ok().flatten())
    })
    .await;
    assert!(second.elapsed() < Duration::from_secs(5), "{:?}", second.elapsed());
    assert_eq!(status.code(), Some(143), "as a process SIGTERM ended: {status:?}");
}

/// The harness's promise to every test: one that ends while the application's statements wait stops the
/// application as SIGTERM would, instead of tearing its runtime down under them.
#[actix_web::test]
async fn a_test_that_ends_while_a_statement_waits_stops_its_application_cleanly() {
    let app = TestApp::builder()
        .var("INTERVAL", "50ms")
        .var("AUTOSTART", "true")
        .spawn()
        .await;
    // Kept past the application, so that its database is not dropped with it.
    let database = app.database.clone();
    database.insert_many(2).await;
    wait_until("the first messages are sent", || async {
        database.count_with_status("sent").await == 2
    })
    .await;
    // The lock lives on a thread of its own, so that it outlives this test's runtime by a second.
    let url = database.url.clone();
    let (locked, on_lock) = oneshot::channel();
    let holder = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let mut lock = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
                .execute(&mut *lock)
                .await
                .unwrap();
            let _ = locked.send(());
            tokio::time::sleep(Duration::from_secs(1)).await;
            lock.rollback().await.unwrap();
            pool.close().await;
        })
    });
    on_lock.await.unwrap();
    a_statement_waits_on_a_lock(&database).await;
    drop(app);
    holder.join().unwrap();
}

/// Waits until a statement on `database` (of the service under test: the test's own hold the lock)
/// waits on a lock.
async fn a_statement_waits_on_a_lock(database: &TestDatabase) {
    wait_until("a statement of the service waits on the lock", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
        )
        .fetch_one(database.pg())
        .await
        .unwrap()
            > 0
    })
    .await;
}

/// `serve` with `SHUTDOWN_GRACE=grace` over `messages` enqueued, at a provider that answers each after
/// `delay`, once `posted` of them are at the provider.
async fn sending_slowly(
    messages: usize,
    delay: Duration,
    grace: &str,
    posted: usize,
) -> (TestDatabase, MockServer, Child) {
    let database = TestDatabase::create().await;
    database.insert_many(messages).await;
    let provider = MockServer::start().await;
    accept_all(&provider, delay).await;
    let mut service = serve_command(&database, &provider)
        .env("SHUTDOWN_GRACE", grace)
        .spawn()
        .expect("the binary starts");
    address_of(&mut service);
    wait_until("sends are at the provider", || async {
        provider.received_requests().await.unwrap_or_default().len() >= posted
    })
    .await;
    (database, provider, service)
}

/// SIGTERM, as an orchestrator stops a container.
fn nix_terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[actix_web::test]
async fn a_plain_insert_of_a_time_the_service_cannot_read_is_refused_and_the_rest_go() {
    let app = TestApp::spawn().await;
    // 'infinity' is a natural way to say "never expires"; decoded, it panicked the fetcher.
    for (column, value) in [
        ("expires_at", "infinity"),
        ("send_at", "-infinity"),
        ("created_at", "200000-01-01"),
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO messages (phone_number, content, {column}) VALUES ('+905551111111', 'hi', '{value}')"
        )))
        .execute(app.database.pg())
        .await
        .expect_err("refused at the INSERT");
        assert!(
            refused.to_string().contains("messages_times_in_range"),
            "{column}: {refused}"
        );
    }
    // Each claim adds one to an int4: at its largest, every claim it was in failed.
    let refused = sqlx::query(
        "INSERT INTO messages (phone_number, content, attempts) VALUES ('+905551111111', 'hi', 2147483647)",
    )
    .execute(app.database.pg())
    .await
    .expect_err("refused at the INSERT");
    assert!(refused.to_string().contains("messages.attempts"), "{refused}");
    let plain = app.database.insert_raw("+905552222222", "hello").await;

    app.tick_and_settle().await;

    assert_eq!(app.database.row(plain).await.status, "sent");
    let (status, _) = app.get("/messages?status=sent").await;
    assert_eq!(status, actix_web::http::StatusCode::OK);
}

#[actix_web::test]
async fn the_time_check_s_migration_first_mends_the_rows_still_to_be_claimed_or_rescued() {
    let app = TestApp::spawn().await;
    let pg = app.database.pg();
    // As before the migration: the check absent, and plain INSERTs of times the service cannot read.
    sqlx::query("ALTER TABLE messages DROP CONSTRAINT messages_times_in_range")
        .execute(pg)
        .await
        .unwrap();
    let never: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, expires_at) VALUES ('+905551111111', 'hi', 'infinity') RETURNING id",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    // Claimed by a replica that died (the old panic), its lease run out: the rescue's to take.
    let stranded: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, expires_at, status, attempts, lease_owner, lease_token,
                               lease_expires_at)
         VALUES ('+905552222222', 'hi', '-infinity', 'sending', 1, 'dead', gen_random_uuid(),
                 now() - interval '1 second')
         RETURNING id",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    sqlx::raw_sql(include_str!(
        "../../migrations/postgres/20261208000001_messages_times_in_range.sql"
    ))
    .execute(pg)
    .await
    .expect("the migration applies");

    // A dead replica's lease is taken once this instance has reached the database for a few seconds.
    wait_until("the dead replica's row is rescued and claimed", || async {
        app.tick_and_settle().await;
        app.database.row(stranded).await.status != "sending"
    })
    .await;
    app.tick_and_settle().await;

    assert_eq!(app.database.row(never).await.status, "sent", "never expires: no expiry");
    assert_eq!(
        app.database.row(stranded).await.status,
        "expired",
        "already expired: expired by the claim after its rescue, never sent"
    );
}

/// After a database outage longer than the lease, every replica's heartbeat is old, a live one's too: the
/// first to reach the database again must not take the leases of another that is about to record the
/// provider's 202 (its flush retrying), or the message is POSTed twice. Leases of a replica whose
/// heartbeat stays old are taken a few seconds later.
#[actix_web::test]
async fn a_replica_just_back_on_the_database_does_not_take_leases_before_the_others_could_beat() {
    let database = TestDatabase::create().await;
    let pg = database.pg();
    // Replica "a": its claim's lease ran out during the outage, its last heartbeat from before it.
    sqlx::query(
        "INSERT INTO replicas (id, host, started_at, last_seen, in_flight, sending)
                  VALUES ('a', 'a', now(), now() - interval '40 seconds', 1, true)",
    )
    .execute(pg)
    .await
    .unwrap();
    let held: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO messages (phone_number, content, status, attempts, lease_owner, lease_token, lease_expires_at)
         VALUES ('+905551111111', 'hi', 'sending', 1, 'a', gen_random_uuid(), now() - interval '10 seconds')
         RETURNING id",
    )
    .fetch_one(pg)
    .await
    .unwrap();
    let app = TestApp::builder().database(&database).spawn().await;

    let report = app.tick_and_settle().await;
    assert_eq!(report.rescued, 0, "{report:?}");
    assert_eq!(app.database.row(held).await.status, "sending", "left to replica a");
    assert!(app.provider.received_requests().await.unwrap().is_empty());

    // Replica "a" never beats again: it is dead, and its message is sent.
    wait_until("the dead replica's message is sent", || async {
        app.tick_and_settle().await;
        app.database.row(held).await.status == "sent"
    })
    .await;
    assert_eq!(app.provider.received_requests().await.unwrap().len(), 1);
}

/// An `HTTP_ADDR` another process holds is a start-up error said once, naming it: the binary exits
/// without a panic, and without having started sending (nothing is claimed or POSTed).
#[actix_web::test]
async fn a_busy_http_addr_ends_the_binary_with_its_error_and_nothing_sent() {
    let database = TestDatabase::create().await;
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::ZERO).await;
    let id = database.insert_raw("+905551111111", "hello").await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("WEBHOOK_URL", format!("{}{WEBHOOK_PATH}", provider.uri()))
        .env("HTTP_ADDR", busy.local_addr().unwrap().to_string())
        .env("INTERVAL", "1ms")
        .env("AUTOSTART", "true")
        .env("RUST_LOG", "info")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP_ADDR"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("sending started"), "{stderr}");
    assert_eq!(database.row(id).await.status, "pending");
    assert!(provider.received_requests().await.unwrap_or_default().is_empty());
}

/// While the migrations wait for the database, HTTP_ADDR is bound (a port in use would have stopped the
/// start) but refuses connections: a TCP probe must not find a service that cannot serve yet. It listened
/// at once, and a client's connection hung in the backlog instead.
#[test]
fn the_port_refuses_connections_until_the_migrations_are_done() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    // A database that takes connections and never answers: the migrations wait for it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let database = format!("postgres://postgres@{}/insider", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept() {
            open.push(socket);
        }
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database)
        .env("WEBHOOK_URL", "http://127.0.0.1:9/sms")
        .env("HTTP_ADDR", address.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    std::thread::sleep(Duration::from_millis(1500));
    let still_migrating = child.try_wait().unwrap().is_none();
    let connected = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1));
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_migrating, "the start is still waiting for the database");
    let error = connected.expect_err("nothing listens before the migrations are done");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused, "{error}");
}

/// A Redis that refuses connections (stopped, a wrong port) is said once, not once per flush: the cache
/// rests after a refusal as after a timeout. It logged a warning for every flush, hundreds a second while
/// a backlog drained.
#[actix_web::test]
async fn a_redis_that_refuses_is_warned_about_once_not_per_flush() {
    let database = TestDatabase::create().await;
    database.insert_many(12).await;
    let provider = MockServer::start().await;
    accept_all(&provider, Duration::ZERO).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis = format!("redis://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let mut command = serve_command(&database, &provider);
    let mut child = command
        .env("REDIS_URL", &redis)
        .env("BATCH_SIZE", "1")
        .env("INTERVAL", "20ms")
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    wait_until("the twelve are sent, one a flush", || async {
        database.count_with_status("sent").await == 12
    })
    .await;
    nix_terminate(&child);
    assert!(child.wait().unwrap().success());

    let lines = log.join().unwrap();
    let warned = lines
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("not cached"))
        .count();
    assert!(warned <= 1, "{warned} warnings for 12 flushes:\n{}", lines.join("\n"));
}

/// Another server (which sets SO_REUSEADDR, as most do) listens on HTTP_ADDR while the migrations wait:
/// a bound socket does not keep it off. The start must end there, before any actor runs: it went on to
/// start sending, then failed to listen and panicked in actix's timers.
#[actix_web::test]
async fn a_port_taken_while_the_migrations_wait_ends_the_start_before_anything_runs() {
    let database = TestDatabase::create().await;
    let provider = MockServer::start().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let lock = database
        .hold_lock("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
        .await;
    let child = serve_command(&database, &provider)
        .env("HTTP_ADDR", address.to_string())
        .env("AUTOSTART", "true")
        .spawn()
        .expect("the binary starts");
    a_statement_waits_on_a_lock(&database).await;
    let other = std::net::TcpListener::bind(address).expect("a bound socket does not hold the port");
    lock.rollback().await.unwrap();

    let output = child.wait_with_output().unwrap();
    drop(other);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("HTTP_ADDR"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("sending started"), "{stderr}");
}

/// A database started beside the service (Kubernetes, systemd) refuses connections for a moment: the
/// start waits for it, as the pool's own connections do, instead of failing at once.
#[actix_web::test]
async fn a_database_that_comes_up_a_second_late_is_waited_for() {
    let database = TestDatabase::create().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let late = free.local_addr().unwrap();
    drop(free);
    let (authority_start, authority_end) = {
        let at = database.url.find('@').expect("a user in the test database URL") + 1;
        let end = at + database.url[at..].find('/').expect("a database in the URL");
        (at, end)
    };
    let upstream = database.url[authority_start..authority_end].to_owned();
    let url = format!(
        "{}{late}{}",
        &database.url[..authority_start],
        &database.url[authority_end..]
    );
    // Listens a second from now, then passes each connection on to the real database.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let listener = std::net::TcpListener::bind(late).unwrap();
        for client in listener.incoming().map_while(Result::ok) {
            let server = std::net::TcpStream::connect(&upstream).unwrap();
            let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut client_in, &mut server_out));
            let (mut server_in, mut client_out) = (server, client);
            std::thread::spawn(move || std::io::copy(&mut server_in, &mut client_out));
        }
    });

    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("migrations applied"), "{stderr}");
}

/// Redis is optional, so a `REDIS_URL` that does not answer does not stop the start; but it is said at
/// once, naming the variable and not its password, not first at the first send.
#[actix_web::test]
async fn a_redis_that_does_not_answer_is_said_at_start_up_without_its_password() {
    let database = TestDatabase::create().await;
    let provider = MockServer::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut child = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("WEBHOOK_URL", format!("{}{WEBHOOK_PATH}", provider.uri()))
        .env("REDIS_URL", format!("redis://:hunter2@127.0.0.1:{port}/0"))
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("AUTOSTART", "false")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let received = lines_of(child.stderr.take().expect("piped stderr"));
    let mut seen = Vec::new();
    let warned = loop {
        match received.recv_timeout(Duration::from_secs(15)) {
            Ok(line) if line.contains("listening on") => break false,
            Ok(line) if line.contains("REDIS_URL does not answer") => {
                seen.push(line);
                break true;
            }
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning before listening:\n{}", seen.join("\n"));
    assert!(seen.iter().all(|line| !line.contains("hunter2")), "{}", seen.join("\n"));
}
