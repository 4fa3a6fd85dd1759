//! A page of another site open in the operator's browser must not drive the API: state-changing
//! requests whose `Origin` or `Sec-Fetch-Site` names another site get 403, bodies that are not JSON 415,
//! while the console (same origin) and clients that send no browser headers (curl, newman) go through.

use actix_web::http::StatusCode;

use crate::helpers::*;

const MESSAGE: &[u8] = br#"{"to": "+905551111111", "content": "from elsewhere"}"#;

#[actix_web::test]
async fn a_post_sent_by_a_page_of_another_site_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.post_start().await;
    let port: u16 = app.address.rsplit(':').next().unwrap().parse().unwrap();
    let other_port = format!("http://127.0.0.1:{}", port.wrapping_add(1));
    let foreign: [&[(&str, &str)]; 4] = [
        // What `fetch(url, {method: 'POST', mode: 'no-cors'})` sends from another site.
        &[
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
        ],
        &[("origin", "http://evil.example")],
        &[("sec-fetch-site", "cross-site")],
        // Another port of the same host: the browser calls it same-site, but it is another server.
        &[("origin", other_port.as_str()), ("sec-fetch-site", "same-site")],
    ];
    for headers in foreign {
        let (status, body) = app.request("POST", "/scheduler/stop", headers, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}: {body}");
        assert_eq!(body["error"], "cross_site_request", "{headers:?}");
        assert!(body["message"].as_str().unwrap().contains("another site"), "{body}");

        let (status, _) = app
            .request("POST", "/messages", headers, Some((Some("application/json"), MESSAGE)))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{headers:?}");
    }
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["running"], true, "sending was never stopped");
    assert_eq!(
        app.database.count_with_status("pending").await,
        0,
        "nothing was enqueued"
    );
}

#[actix_web::test]
async fn the_console_and_clients_without_browser_headers_are_served() {
    let app = TestApp::spawn().await;
    let own_origin = app.address.clone();
    let ours: [&[(&str, &str)]; 4] = [
        // The console: same origin.
        &[("origin", own_origin.as_str()), ("sec-fetch-site", "same-origin")],
        // Typed in the address bar, or a bookmark.
        &[("sec-fetch-site", "none")],
        // curl, newman, another service.
        &[],
        // A browser that sends only Origin.
        &[("origin", own_origin.as_str())],
    ];
    for headers in ours {
        let (status, body) = app.request("POST", "/scheduler/stop", headers, None).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}: {body}");
        let (status, body) = app
            .request("POST", "/messages", headers, Some((Some("application/json"), MESSAGE)))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{headers:?}: {body}");
    }
    // Reads are never refused: another site cannot read the answer anyway.
    let (status, _) = app
        .request("GET", "/scheduler", &[("sec-fetch-site", "cross-site")], None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_refused_on_every_post_route() {
    let app = TestApp::spawn().await;
    let id = app.database.insert_raw("+905551111111", "waiting").await;
    let form: &[u8] = b"to=%2B905551111111&content=hi";
    let routes = [
        "/scheduler/start".to_owned(),
        "/scheduler/stop".to_owned(),
        "/messages".to_owned(),
        "/messages/batch".to_owned(),
        format!("/messages/{id}/cancel"),
        format!("/messages/{id}/retry"),
    ];
    // What a form or a no-cors fetch can send without asking: text, urlencoded, multipart, or untyped.
    let content_types = [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ];
    for route in &routes {
        for content_type in content_types {
            let (status, body) = app.request("POST", route, &[], Some((content_type, form))).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{route} {content_type:?}: {body}"
            );
            assert_eq!(body["error"], "unsupported_media_type");
        }
    }
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["running"], false, "never started");
    assert_eq!(app.database.row(id).await.status, "pending", "never cancelled");

    // Routes without a body still take a JSON one, and an empty POST (cancel first: a start claims it).
    let (status, _) = app
        .request(
            "POST",
            &format!("/messages/{id}/cancel"),
            &[],
            Some((Some("application/json"), b"{}")),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.request("POST", "/scheduler/start", &[], None).await;
    assert_eq!(status, StatusCode::OK);
}

#[actix_web::test]
async fn with_no_api_key_a_page_rebound_to_this_server_is_refused_but_its_address_served() {
    let app = TestApp::builder().without("API_KEY").spawn().await;
    app.post_start().await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    // What a page of rebind.attacker.example sends once its name resolves to this server: to the
    // browser it is the page's own origin.
    let rebound = format!("rebind.attacker.example:{port}");
    let origin = format!("http://{rebound}");
    let headers: &[(&str, &str)] = &[("host", rebound.as_str()), ("origin", origin.as_str())];

    let (status, body) = app.request("POST", "/scheduler/stop", headers, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "cross_site_request");
    assert!(body["message"].as_str().unwrap().contains("API_KEY"), "{body}");
    let (_, scheduler) = app.get("/scheduler").await;
    assert_eq!(scheduler["running"], true, "sending was never stopped");

    // A page by the address, localhost or a compose service name; a provider calling a public name.
    for host in [format!("localhost.:{port}"), format!("insider-messaging:{port}")] {
        let origin = format!("http://{host}");
        let (status, body) = app
            .request(
                "POST",
                "/scheduler/start",
                &[("host", host.as_str()), ("origin", origin.as_str())],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    let reply = br#"{"from": "+905551111111", "content": "STOP"}"#;
    let (status, body) = app
        .request(
            "POST",
            "/inbound",
            &[("host", "sms.example.com")],
            Some((Some("application/json"), reply)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "no page sent it: {body}");
}
