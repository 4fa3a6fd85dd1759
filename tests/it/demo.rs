//! The README's first command: `insider-messaging demo` in an empty folder, with nothing configured.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

fn demo_in(folder: &std::path::Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("demo")
        .current_dir(folder)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
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

fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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
    let lines = lines_of(&mut first);
    wait_for_line(&lines, "enqueued 6 sample messages");
    wait_for_line(&lines, "pending 0 · accepted by the provider this run 6");
    terminate(&mut first);
    assert!(
        folder.join("data/insider-messaging.db").exists(),
        "the embedded database is a file under ./data/"
    );

    let mut second = demo_in(&folder);
    let lines = lines_of(&mut second);
    wait_for_line(&lines, "nothing new enqueued, nothing resent");
    // Nothing resent needs a quiet spell with ticks in it. The demo's first progress report comes 2 s
    // after start, by when its scheduler (a tick at start, then every second) has ticked at least twice.
    wait_for_line(&lines, "demo: pending");
    terminate(&mut second);
    let summary = wait_for_line(&lines, "demo: stopped");
    assert!(summary.contains("received 0 POSTs"), "{summary}");

    std::fs::remove_dir_all(&folder).unwrap();
}

#[test]
fn serve_without_a_webhook_url_refuses_and_points_at_the_demo() {
    let output = Command::new(env!("CARGO_BIN_EXE_insider-messaging"))
        .arg("serve")
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("WEBHOOK_URL is required") && stderr.contains("insider-messaging demo"),
        "{stderr}"
    );
}
