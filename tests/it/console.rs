//! The operator console is served from the binary: the page at `/` and `/console`, its stylesheet and
//! script with their types, a 304 for a browser that already holds them, and no key needed for any of
//! them. What the page does in a browser is tested in `tests/console/` (`.ci/console-test`).

use actix_web::http::{StatusCode, header};

use crate::helpers::TestApp;

const TITLE: &str = "<title>insider-messaging · operator console</title>";

#[actix_web::test]
async fn the_console_page_and_its_assets_are_served_with_their_types_even_with_an_api_key_set() {
    let app = TestApp::builder().var("API_KEY", "console-key").spawn().await;
    let client = awc::Client::default();

    for path in ["/", "/console"] {
        let mut response = client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let content_type = response.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
        assert!(content_type.starts_with("text/html"), "{path}: {content_type}");
        assert!(
            response.headers().contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        let body = response.body().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains(TITLE), "{path}");
    }

    for (path, expected_type, marker) in [
        ("/console/console.css", "text/css", ".layout"),
        ("/console/console.js", "text/javascript", "export function mask"),
    ] {
        let mut response = client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        let content_type = headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
        assert!(content_type.starts_with(expected_type), "{path}: {content_type}");
        assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-cache", "{path}");
        let body = response.body().await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains(marker), "{path}");

        let etag = headers.get(header::ETAG).expect("an ETag").clone();
        let revalidated = client
            .get(format!("{}{path}", app.address))
            .insert_header((header::IF_NONE_MATCH, etag))
            .send()
            .await
            .unwrap();
        assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED, "{path}");
    }
}

#[actix_web::test]
async fn no_page_of_ours_can_be_framed_by_another_site() {
    let app = TestApp::spawn().await;
    let client = awc::Client::default();

    for path in ["/swagger-ui/", "/api-docs/openapi.json", "/scheduler"] {
        let response = client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        assert_eq!(headers.get(header::X_FRAME_OPTIONS).unwrap(), "DENY", "{path}");
        assert_eq!(
            headers.get(header::CONTENT_SECURITY_POLICY).unwrap(),
            "frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(
            headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff",
            "{path}"
        );
    }
    let response = client.get(format!("{}/console", app.address)).send().await.unwrap();
    let policy = response
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "the console keeps its own policy: {policy}"
    );
}
