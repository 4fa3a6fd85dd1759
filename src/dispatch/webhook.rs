//! `WebhookActor`: POSTs one claimed message to the provider and reports what came of it to the
//! persister. Build the request, send it, sort the answer (`provider::Outcome`); nothing here writes
//! state. Each actor keeps its own keep-alive connection pool; the fetcher spreads work across them.

use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{SubsecRound, Utc};

use super::messages::{Deliver, DeliveryFinished};
use crate::{
    config::Secret,
    metrics::Metrics,
    provider::{AUTH_HEADER, IDEMPOTENCY_HEADER, Outcome, SendRequest},
};

/// Enough for any provider answer we read; a larger body is cut, never buffered whole.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long the body of an answer may take once its status line has arrived.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook's address, key and limits, shared by every actor of the pool.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub auth_key: Option<Secret>,
    pub timeout: Duration,
    /// `WEBHOOK_CONCURRENCY`: the fetcher never has more sends out, so no actor's pool needs more
    /// connections, and none waits for one.
    pub max_connections: usize,
}

pub struct WebhookActor {
    client: awc::Client,
    target: WebhookTarget,
    persister: Recipient<DeliveryFinished>,
    metrics: Metrics,
}

impl WebhookActor {
    pub fn new(target: WebhookTarget, persister: Recipient<DeliveryFinished>, metrics: Metrics) -> Self {
        // awc's client is !Send: it is built here, on the arbiter that runs this actor, and stays there.
        // awc's default pool holds 100 connections: a larger WEBHOOK_CONCURRENCY would queue sends inside
        // the client, where their time runs against WEBHOOK_TIMEOUT. Idle connections close after 15 s.
        let connector = awc::Connector::new().limit(target.max_connections);
        let client = awc::Client::builder()
            .connector(connector)
            .timeout(target.timeout)
            .disable_redirects()
            .finish();
        Self {
            client,
            target,
            persister,
            metrics,
        }
    }
}

/// One POST, from request to sorted answer. Every path ends in an `Outcome`; none panics.
async fn post(client: &awc::Client, target: &WebhookTarget, delivery: &Deliver) -> Outcome {
    let mut request = client
        .post(&target.url)
        .insert_header((IDEMPOTENCY_HEADER, delivery.claim.message_id.to_string()));
    if let Some(key) = &target.auth_key {
        request = request.insert_header((AUTH_HEADER, key.expose()));
    }
    let body = SendRequest {
        to: delivery.to.as_ref(),
        content: delivery.content.as_ref(),
    };
    // The time limit covers the request and the status line only: once a 2xx is in hand the provider
    // has the message, and a slow body must not turn it into a resend.
    let mut response = match actix_rt::time::timeout(target.timeout, request.send_json(&body)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Outcome::from_transport_error(&error.to_string()),
        Err(_) => return Outcome::from_transport_error(&format!("timed out after {:?}", target.timeout)),
    };
    // Truncate so both the database and the cache agree on the stored time to the microsecond.
    let answered_at = Utc::now().trunc_subsecs(6);
    let bytes = match actix_rt::time::timeout(BODY_TIMEOUT, response.body().limit(MAX_RESPONSE_BYTES)).await {
        Ok(Ok(bytes)) => bytes,
        // An unreadable body still leaves a status to act on; a 2xx stays accepted.
        Ok(Err(_)) | Err(_) => Default::default(),
    };
    Outcome::from_response(response.status(), response.headers(), &bytes, answered_at)
}

impl Actor for WebhookActor {
    type Context = Context<Self>;
}

impl Handler<Deliver> for WebhookActor {
    type Result = ();

    fn handle(&mut self, delivery: Deliver, ctx: &mut Self::Context) {
        // Spawned, not awaited: one actor carries many sends at once.
        let client = self.client.clone();
        let target = self.target.clone();
        let persister = self.persister.clone();
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
                persister.do_send(DeliveryFinished {
                    claim: delivery.claim,
                    outcome,
                    started_at,
                    duration,
                });
            }
            .into_actor(self),
        );
    }
}
