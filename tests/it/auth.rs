//! `API_KEY`: operator routes need it, by either header; health, metrics and docs stay open.

use actix_web::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn status_with(app: &TestApp, method: &str, path: &str, header: Option<(&str, &str)>) -> (StatusCode, Value) {
    let client = awc::Client::new();
    let url = format!("{}{path}", app.address);
    let mut request = if method == "POST" {
        client.post(url)
    } else {
        client.get(url)
    };
    if let Some(header) = header {
        request = request.insert_header(header);
    }
    let mut response = if method == "POST" {
        request
            .send_json(&json!({"to": "+905551111111", "content": "hi"}))
            .await
            .unwrap()
    } else {
        request.send().await.unwrap()
    };
    let body = response.body().await.unwrap();
    (response.status(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[actix_web::test]
async fn with_an_api_key_operator_routes_need_it_and_probes_stay_open() {
    let app = TestApp::builder().var("API_KEY", "s3cret-key").spawn().await;
    let protected = [
        ("POST", "/messages"),
        ("GET", "/messages/sent"),
        ("GET", "/messages?status=failed"),
        ("GET", "/stats"),
        ("GET", "/scheduler"),
        ("POST", "/scheduler/start"),
        ("POST", "/scheduler/stop"),
    ];
    for (method, path) in protected {
        for header in [
            None,
            Some(("x-api-key", "wrong")),
            Some(("authorization", "Bearer wrong")),
        ] {
            let (status, body) = status_with(&app, method, path, header).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} {header:?}");
            assert_eq!(body["error"], "unauthorized");
            assert!(!body.to_string().contains("s3cret"), "the key never echoes");
        }
        for header in [("x-api-key", "s3cret-key"), ("authorization", "Bearer s3cret-key")] {
            let (status, body) = status_with(&app, method, path, Some(header)).await;
            assert!(status.is_success(), "{method} {path} with {header:?}: {status} {body}");
        }
    }
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api-docs/openapi.json",
        "/swagger-ui/",
    ] {
        let (status, _) = status_with(&app, "GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "{path} stays open");
    }
}

#[actix_web::test]
async fn the_spec_declares_the_key_on_every_protected_route() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.get("/api-docs/openapi.json").await;
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["api_key"]["name"], "X-API-Key");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let open = ["/healthz", "/readyz", "/metrics"].contains(&path.as_str());
            assert_eq!(operation["security"].is_array(), !open, "{method} {path}");
            assert_eq!(operation["responses"]["401"].is_object(), !open, "{method} {path}");
        }
    }
}

#[actix_web::test]
async fn a_key_set_with_surrounding_spaces_still_lets_its_holder_in() {
    let app = TestApp::builder().var("API_KEY", " padded-key ").spawn().await;
    for header in [("x-api-key", "padded-key"), ("authorization", "Bearer padded-key")] {
        let (status, body) = status_with(&app, "GET", "/scheduler", Some(header)).await;
        assert_eq!(status, StatusCode::OK, "{header:?}: {body}");
    }
}

#[actix_web::test]
async fn each_refused_request_is_counted_and_answered_like_any_other() {
    let app = TestApp::builder().var("API_KEY", "s3cret-key").spawn().await;
    for header in [
        None,
        Some(("x-api-key", "wrong")),
        Some(("authorization", "Bearer wrong")),
    ] {
        let (status, _) = status_with(&app, "POST", "/scheduler/stop", header).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = status_with(&app, "POST", "/scheduler/stop", Some(("x-api-key", "s3cret-key"))).await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(app.metric("auth_failures_total").await, 3.0);
    // Seen by the layers that log and count every answer, as a handler's errors are.
    assert_eq!(
        app.metric("http_requests_total{method=\"POST\",route=\"/scheduler/stop\",status=\"401\"}")
            .await,
        3.0
    );
}
