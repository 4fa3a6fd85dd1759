//! A request body that stalls is cut off after `BODY_TIMEOUT` with a 408 that says so, and the
//! connection is closed: a client cannot hold a connection open by announcing more than it sends.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use actix_web::http::StatusCode;
use insider_messaging::api::body_timeout::BODY_TIMEOUT;

use crate::helpers::*;

/// Announces a 1,000-byte JSON body, sends 5 bytes of it, and reads what comes back until the server
/// closes the connection (or `WAIT` runs out): the answer, and how long it took.
fn send_a_stalled_body(host: &str, path: &str) -> (String, Duration) {
    let mut stream = TcpStream::connect(host).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    stream.write_all(br#"{"to""#).expect("send 5 bytes");
    let started = Instant::now();
    let mut answer = Vec::new();
    let result = stream.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        result.is_ok(),
        "{path}: the server still held the connection after {waited:?}: {result:?}, {:?}",
        String::from_utf8_lossy(&answer)
    );
    (String::from_utf8_lossy(&answer).into_owned(), waited)
}

#[actix_web::test]
async fn a_body_that_stalls_is_cut_off_with_408_and_the_connection_closed() {
    let app = TestApp::spawn().await;
    let host = app.address.trim_start_matches("http://").to_owned();

    // Both JSON routes at once: the wait is the same for both.
    let runs = ["/messages", "/messages/batch"].map(|path| {
        let host = host.clone();
        (
            path,
            tokio::task::spawn_blocking(move || send_a_stalled_body(&host, path)),
        )
    });
    for (path, run) in runs {
        let (answer, waited) = run.await.expect("the client thread");
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{path}: {answer}"
        );
        assert!(answer.contains(r#""error":"body_timeout""#), "{path}: {answer}");
        assert!(
            answer.contains("the request body did not arrive within 10s"),
            "{path}: {answer}"
        );
        assert!(
            waited + Duration::from_millis(200) >= BODY_TIMEOUT,
            "{path}: cut after {waited:?}"
        );
    }
    assert_eq!(app.database.count_with_status("pending").await, 0);
    assert_eq!(
        app.metric("http_requests_total{method=\"POST\",route=\"/messages\",status=\"408\"}")
            .await,
        1.0
    );
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "the server serves on");
}
