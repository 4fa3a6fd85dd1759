//! `WebhookActor`: POSTs claimed messages to the provider, many at once. Build the request, send it, sort
//! the answer (`provider::Outcome`) and judge it (`Verdict`) the moment it arrives; then tell the fetcher
//! the slot is free and hand the verdict to the persister. Nothing here writes state.
//!
//! The client is reqwest (hyper): it reads past interim 1xx answers (`102 Processing`, `103 Early Hints`)
//! to the final one, as RFC 9110 §15.2 asks. One client, one pool of keep-alive connections, sized to
//! `WEBHOOK_CONCURRENCY`, the most sends the fetcher ever has out.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::{SubsecRound, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::{
    messages::{Answered, Deliver, SendEnded},
    retry::RetryPolicy,
    verdict::Verdict,
};
use crate::{
    metrics::Metrics,
    provider::{AUTH_HEADER, IDEMPOTENCY_HEADER, Outcome, SendRequest},
    secret::Secret,
};

/// Enough for any provider answer we read; a larger body is cut, never buffered whole.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long the body of an answer may take once its status line has arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook's address, key and limits.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// Parsed once: reqwest would parse (and IDNA-map) a string again for every POST.
    pub url: reqwest::Url,
    pub auth_key: Option<Secret>,
    pub timeout: Duration,
    /// `WEBHOOK_CONCURRENCY`: the fetcher never has more sends out, so the pool keeps no more idle.
    pub max_connections: usize,
}

/// Where the webhook actor sends what came of each POST.
pub struct WebhookReports {
    pub persister: Recipient<Answered>,
    pub fetcher: Recipient<SendEnded>,
}

pub struct WebhookActor {
    client: reqwest::Client,
    target: Arc<WebhookTarget>,
    policy: RetryPolicy,
    reports: WebhookReports,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
#[error("an HTTP client (the provider's, or the status webhook's) could not be built")]
pub struct ClientError(#[source] pub(super) reqwest::Error);

impl WebhookActor {
    pub fn new(
        target: WebhookTarget,
        policy: RetryPolicy,
        reports: WebhookReports,
        metrics: Metrics,
    ) -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(target.max_connections)
            .build()
            .map_err(ClientError)?;
        Ok(Self {
            client,
            target: Arc::new(target),
            policy,
            reports,
            metrics,
        })
    }
}

/// One POST, from request to sorted answer. Every path ends in an `Outcome`; none panics.
async fn post(client: &reqwest::Client, target: &WebhookTarget, delivery: &Deliver) -> Outcome {
    let body = SendRequest {
        to: delivery.to.as_ref(),
        content: delivery.content.as_ref(),
    };
    let body = match serde_json::to_vec(&body) {
        Ok(body) => body,
        Err(error) => return Outcome::from_transport_error(&format!("the request could not be encoded: {error}")),
    };
    let mut request = client
        .post(target.url.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(IDEMPOTENCY_HEADER, delivery.claim.message_id.to_string())
        .body(body);
    if let Some(key) = &target.auth_key {
        request = request.header(AUTH_HEADER, key.expose());
    }
    // The time limit covers the request and the status line only: once a 2xx is in hand the provider
    // has the message, and a slow body must not turn it into a resend.
    let mut response = match actix_rt::time::timeout(target.timeout, request.send()).await {
        Ok(Ok(response)) => response,
        // The error's chain, without the URL reqwest adds (it may carry a token in its path or query).
        Ok(Err(error)) => return Outcome::from_transport_error(&transport_problem(&error.without_url())),
        Err(_) => return Outcome::from_transport_error(&format!("timed out after {:?}", target.timeout)),
    };
    // Truncate so both the database and the cache agree on the stored time to the microsecond.
    let answered_at = Utc::now().trunc_subsecs(6);
    let body = match actix_rt::time::timeout(BODY_TIMEOUT, read_body(&mut response)).await {
        Ok(body) => body,
        Err(_) => Err(format!("its body did not arrive within {BODY_TIMEOUT:?}")),
    };
    Outcome::from_response(
        response.status(),
        response.headers(),
        body.as_deref().map_err(String::as_str),
        answered_at,
    )
}

/// The answer's body, up to `MAX_RESPONSE_BYTES`, or why it could not be read.
async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() > MAX_RESPONSE_BYTES => {
                return Err(format!("its body exceeded {} KiB", MAX_RESPONSE_BYTES / 1024));
            }
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => return Ok(body),
            Err(error) => return Err(format!("its body broke off: {}", transport_problem(&error))),
        }
    }
}

/// A transport error and its causes, on one line.
fn transport_problem(error: &reqwest::Error) -> String {
    crate::telemetry::error_chain(error)
}

impl Actor for WebhookActor {
    type Context = Context<Self>;
}

impl Handler<Deliver> for WebhookActor {
    type Result = ();

    fn handle(&mut self, delivery: Deliver, ctx: &mut Self::Context) {
        // Spawned, not awaited: the actor carries every send at once.
        let client = self.client.clone();
        let target = Arc::clone(&self.target);
        let policy = self.policy;
        let persister = self.reports.persister.clone();
        let fetcher = self.reports.fetcher.clone();
        let metrics = self.metrics.clone();
        ctx.spawn(
            async move {
                log::debug!(
                    message_id:% = delivery.claim.message_id, attempt = delivery.claim.attempt, to:% = delivery.to;
                    "posting message to the provider"
                );
                let started_at = Utc::now().trunc_subsecs(6);
                let started = Instant::now();
                let outcome = post(&client, &target, &delivery).await;
                let duration = started.elapsed();
                metrics.observe_send(outcome.label(), duration);
                let claim = delivery.claim;
                let verdict = Verdict::of(&outcome, &claim, &policy, rand::random());
                fetcher.do_send(SendEnded {
                    claim,
                    signal: verdict.signal(),
                });
                let attempt = verdict.attempt(&outcome, &claim, started_at, duration);
                persister.do_send(Answered {
                    claim,
                    verdict,
                    attempt,
                });
            }
            .into_actor(self),
        );
    }
}
