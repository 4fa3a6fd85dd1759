//! Prometheus metrics.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{HttpResponse, get, web};
use futures_util::{
    FutureExt,
    future::{BoxFuture, Shared},
};

use crate::{
    api::{AppState, error::ApiError},
    telemetry::error_chain,
};

/// The database's gauges are read at most this often, whoever scrapes: the route is open, and each read
/// counts the pending rows on the pool the sends use.
const GAUGES_FRESH_FOR: Duration = Duration::from_secs(1);
/// How long a scrape waits for the database's gauges before it answers with their last values: a
/// database down or locked must not hold the page past a scraper's timeout (Prometheus's is 10 s), or
/// every series, the error counters that tell of the outage among them, goes missing with it.
const GAUGES_WAIT: Duration = Duration::from_secs(1);

/// The read of the database's gauges last started; scrapes meanwhile share it, and one still under way
/// is not started again.
#[derive(Default)]
pub struct GaugeReads(Mutex<Option<GaugeRead>>);

struct GaugeRead {
    started: Instant,
    /// Set by the read's task as it ends: a `Shared` future says it is done only once polled after.
    done: Arc<AtomicBool>,
    read: Shared<BoxFuture<'static, ()>>,
}

impl GaugeReads {
    /// The read under way, or a new one started when the last is done and older than `GAUGES_FRESH_FOR`.
    fn current(&self, state: &web::Data<AppState>) -> Shared<BoxFuture<'static, ()>> {
        let mut last = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Done when its task says so, or when its task is gone (its worker stopped) and a scrape saw it end.
        if let Some(last) = last.as_ref()
            && (last.started.elapsed() < GAUGES_FRESH_FOR
                || !(last.done.load(Ordering::Acquire) || last.read.peek().is_some()))
        {
            return last.read.clone();
        }
        let done = Arc::new(AtomicBool::new(false));
        // A task of its own: a scrape that stops waiting leaves the statements to finish, not cut off.
        let read = actix_rt::spawn({
            let (state, done) = (state.clone(), Arc::clone(&done));
            async move {
                read_gauges(state).await;
                done.store(true, Ordering::Release);
            }
        })
        .map(|_| ())
        .boxed()
        .shared();
        *last = Some(GaugeRead {
            started: Instant::now(),
            done,
            read: read.clone(),
        });
        read
    }
}

async fn read_gauges(state: web::Data<AppState>) {
    let (queue, outbox) = futures_util::future::join(state.store.queue_stats(), state.events.outbox_stats()).await;
    match queue {
        Ok(stats) => state.metrics.set_queue(&stats),
        Err(error) => log::warn!("metrics: queue depth not refreshed: {}", error_chain(&error)),
    }
    match outbox {
        Ok(stats) => state.metrics.set_outbox(&stats),
        Err(error) => log::warn!("metrics: status outbox depth not refreshed: {}", error_chain(&error)),
    }
}

/// Prometheus metrics in the text exposition format.
///
/// Queue depth, the age of the oldest pending message and the status events outbox's depth are read from
/// the database, at most once a second however many scrape; when it does not answer within a second they
/// keep their last values.
#[utoipa::path(
    tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4",
               body = String, example = "scheduler_running 1\nmessages_pending 4\n"))
)]
#[get("/metrics")]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let read = state.gauge_reads.current(&state);
    // Past the wait, the gauges keep their last values; the read goes on and serves a later scrape.
    let _ = actix_rt::time::timeout(GAUGES_WAIT, read).await;
    let text = state.metrics.render().map_err(|e| ApiError::Unexpected(Box::new(e)))?;
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text))
}
