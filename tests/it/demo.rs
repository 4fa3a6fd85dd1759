//! The README's first command: `insider-messaging demo` in an empty folder, with nothing configured.

use std::{
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::helpers::lines_of;

/// `serve` run to its end in `folder`, with `vars` and nothing else of this environment.
fn serve_in(folder: &std::path::Path, vars: &[(&str, &str)]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(folder)
        .output()
        .unwrap()
}

/// `serve` in a folder of its own holding a `.env` of `contents` (removed after).
fn serve_beside_env_file(contents: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let folder = std::env::temp_dir().join(format!("insider-env-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join(".env"), contents).unwrap();
    let output = serve_in(&folder, vars);
    std::fs::remove_dir_all(&folder).unwrap();
    output
}

fn demo_in(folder: &std::path::Path) -> std::process::Child {
    demo_with(folder, &[])
}

fn demo_with(folder: &std::path::Path, vars: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("demo")
        .current_dir(folder)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the demo starts")
}

/// Reads the demo's lines until one contains `needle`; fails after 20 s.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("the demo never printed {needle:?}"),
        }
    }
}

fn terminate(child: &mut std::process::Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(child.wait().unwrap().success(), "the demo exits 0 on SIGTERM");
}

#[test]
fn the_demo_sends_its_samples_in_seconds_and_a_restart_resends_nothing() {
    let folder = std::env::temp_dir().join(format!("insider-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();

    let mut first = demo_in(&folder);
    let lines = lines_of(first.stdout.take().expect("piped stdout"));
    wait_for_line(&lines, "enqueued 6 sample messages");
    wait_for_line(&lines, "pending 0 · accepted by the provider this run 6");
    terminate(&mut first);
    assert!(
        folder.join("data/demo.db").exists(),
        "the embedded database is a file under ./data/"
    );

    let mut second = demo_in(&folder);
    let lines = lines_of(second.stdout.take().expect("piped stdout"));
    wait_for_line(&lines, "nothing new enqueued, nothing resent");
    // Nothing resent needs a quiet spell with ticks in it. The demo's first progress report comes 2 s
    // after start, by when its scheduler (a tick at start, then every second) has ticked at least twice.
    wait_for_line(&lines, "demo: pending");
    terminate(&mut second);
    let summary = wait_for_line(&lines, "demo: stopped");
    assert!(summary.contains("received 0 POSTs"), "{summary}");

    std::fs::remove_dir_all(&folder).unwrap();
}

/// An empty setting counts as unset, and the demo's own default takes its place, not `serve`'s: with an
/// empty `INTERVAL` the demo ticked every 2 minutes, with an empty `HTTP_ADDR` it listened on 0.0.0.0.
#[test]
fn an_empty_setting_takes_the_demo_s_default() {
    let folder = std::env::temp_dir().join(format!("insider-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();
    let mut demo = demo_with(&folder, &[("INTERVAL", ""), ("BATCH_SIZE", " ")]);
    let lines = lines_of(demo.stdout.take().expect("piped stdout"));
    wait_for_line(&lines, "enqueued 6 sample messages");
    // Two a second: all six within the 20 s, where serve's pace sends two, then two more in 2 minutes.
    wait_for_line(&lines, "pending 0 · accepted by the provider this run 6");
    terminate(&mut demo);
    std::fs::remove_dir_all(&folder).unwrap();
}

/// A `.env` written for `serve` names the real queue and cache: the demo keeps to its own, so it neither
/// sends the real messages to its stand-in nor seeds the real queue with samples. (And a blank
/// `WEBHOOK_AUTH_KEY` leaves both sides keyless: the stand-in used to ask for an empty key the
/// dispatcher never sent.)
#[tokio::test]
async fn a_demo_next_to_a_serve_env_file_keeps_to_its_own_database() {
    let database = crate::helpers::TestDatabase::create().await;
    let real = database.insert_many(1).await[0];
    let folder = std::env::temp_dir().join(format!("insider-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join(".env"),
        format!(
            "DATABASE_URL={}\nREDIS_URL=redis://127.0.0.1:6379\nSTATUS_WEBHOOK_URL=http://127.0.0.1:9/events\n\
             STATUS_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
            database.url
        ),
    )
    .unwrap();

    // A blank key is no key, for the stand-in as for the dispatcher.
    let mut demo = demo_with(&folder, &[("WEBHOOK_AUTH_KEY", " ")]);
    let lines = lines_of(demo.stdout.take().expect("piped stdout"));
    wait_for_line(&lines, "DATABASE_URL is serve's");
    wait_for_line(&lines, "enqueued 6 sample messages");
    wait_for_line(&lines, "pending 0 · accepted by the provider this run 6");
    terminate(&mut demo);

    assert!(folder.join("data/demo.db").exists());
    let demo_db = sqlx::SqlitePool::connect(&format!("sqlite://{}", folder.join("data/demo.db").display()))
        .await
        .unwrap();
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM status_events")
        .fetch_one(&demo_db)
        .await
        .unwrap();
    assert_eq!(events, 0, "no status webhooks to the real receiver about the samples");
    demo_db.close().await;
    let untouched = database.store.get(real).await.unwrap().unwrap();
    assert_eq!(
        untouched.status,
        insider_messaging::domain::MessageStatus::Pending,
        "the real queue's message is not the demo's to send"
    );
    assert_eq!(
        database.store.queue_stats().await.unwrap().pending,
        1,
        "no samples in the real queue"
    );
    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn serve_without_a_webhook_url_refuses_and_points_at_the_demo() {
    let output = serve_in(&std::env::temp_dir(), &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("WEBHOOK_URL is required") && stderr.contains("insider-messaging demo"),
        "{stderr}"
    );
}

#[test]
fn serve_reads_the_env_file_of_its_working_directory_not_a_parents() {
    let parent = std::env::temp_dir().join(format!("insider-env-{}", uuid::Uuid::new_v4().simple()));
    let child = parent.join("app");
    std::fs::create_dir_all(&child).unwrap();
    std::fs::write(
        parent.join(".env"),
        "WEBHOOK_URL=http://127.0.0.1:9/from-the-parent\nHTTP_ADDR=nowhere\n",
    )
    .unwrap();
    let output = serve_in(&child, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WEBHOOK_URL is required"),
        "the parent's .env is not this service's: {stderr}"
    );
    std::fs::remove_dir_all(&parent).unwrap();
}

#[test]
fn a_malformed_env_file_is_refused_without_showing_its_values() {
    // An unclosed quote: a parser reads on to the end of the file.
    let output = serve_beside_env_file("API_KEY=\"s3cr3t-api-key\nWEBHOOK_AUTH_KEY=s3cr3t-provider-key\n", &[]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".env"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

/// `migrate` without `DATABASE_URL` migrates the embedded default: it says which database it migrated, so
/// that an operator who forgot to export the Postgres URL does not take the SQLite file for it.
#[test]
fn migrate_names_the_database_it_migrated() {
    let folder = std::env::temp_dir().join(format!("insider-migrate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&folder).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("migrate")
        .env_clear()
        .current_dir(&folder)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&folder).unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("migrations applied to the SQLite file data/insider-messaging.db"),
        "{stderr}"
    );
}

/// `.env` puts another variable's value (most often nothing) in place of `$name`: `API_KEY=abc$def`
/// was the key `abc`, the API guarded by three letters, silently. Refused, naming the variable.
#[test]
fn a_dollar_in_an_env_file_value_is_refused_not_substituted() {
    let output = serve_beside_env_file(
        "WEBHOOK_URL=http://127.0.0.1:9/\nAPI_KEY=s3cr3t$key\n",
        &[("HTTP_ADDR", "127.0.0.1:0")],
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("API_KEY") && stderr.contains("single quotes"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

#[test]
fn a_database_url_parameter_sqlx_does_not_know_is_never_logged_with_its_value() {
    let output = serve_in(
        &std::env::temp_dir(),
        &[
            ("RUST_LOG", "debug"),
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/insider_no_such_db?sslpassword=s3cr3t",
            ),
            ("WEBHOOK_URL", "http://127.0.0.1:9/"),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ],
    );

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not exist"),
        "it got as far as the database: {stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

/// A Postgres nobody listens for: the error says so, not only that a pool timed out five seconds later.
#[test]
fn a_database_out_of_reach_is_named_with_its_cause() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("migrate")
        .env_clear()
        .env(
            "DATABASE_URL",
            format!("postgres://postgres:s3cr3t@127.0.0.1:{port}/insider"),
        )
        .output()
        .unwrap();

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("pool timed out"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

#[test]
fn a_demo_with_a_bad_setting_exits_2_naming_it_as_serve_does() {
    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("demo")
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BATCH_SIZE", "many")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("configuration error") && stderr.contains("BATCH_SIZE"),
        "{stderr}"
    );
}
