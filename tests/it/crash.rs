//! The real binary, killed with SIGKILL while its sends are in flight, then started again: every
//! claimed message ends `sent`; a request in flight at the kill is posted at most once more (same
//! `Idempotency-Key`), never a third time, and nothing is lost.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use wiremock::MockServer;

use crate::helpers::*;

fn serve(database: &TestDatabase, provider: &MockServer, lease: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("WEBHOOK_URL", format!("{}{WEBHOOK_PATH}", provider.uri()))
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("INTERVAL", "100ms")
        .env("BATCH_SIZE", "4")
        .env("LEASE", lease)
        .env("WEBHOOK_TIMEOUT", "60s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts")
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
    wait_until("the rescued messages are sent", || async {
        database.count_with_status("sent").await == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // a few more ticks: nothing further may go out
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

/// SIGTERM, as an orchestrator stops a container.
fn nix_terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}
