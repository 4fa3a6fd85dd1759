//! `RetentionActor`: with `SENT_RETENTION` set, deletes sent messages older than it, with their history,
//! status events delivered before it and delivery receipts settled before it, when the service starts and
//! then every `PRUNE_EVERY`. Each statement deletes at most `PRUNE_BATCH` rows, so none holds its locks
//! for long, and a round stops after `MAX_BATCHES` of them, so a backlog (retention just switched on over
//! a big table) drains over a few rounds instead of one long one. Every replica prunes; the store skips
//! rows another one is deleting.

use std::{future::Future, sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::Utc;

use crate::{
    metrics::Metrics,
    store::{MessageStore, ReceiptStore, StatusEventStore, StoreError},
    telemetry::error_chain,
};

pub const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_BATCH: u32 = 10_000;
const MAX_BATCHES: usize = 50;

pub struct RetentionActor {
    store: Arc<dyn MessageStore>,
    events: Arc<dyn StatusEventStore>,
    receipts: Arc<dyn ReceiptStore>,
    retention: Duration,
    metrics: Metrics,
    pruning: bool,
}

impl RetentionActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        events: Arc<dyn StatusEventStore>,
        receipts: Arc<dyn ReceiptStore>,
        retention: Duration,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            events,
            receipts,
            retention,
            metrics,
            pruning: false,
        }
    }

    fn prune(&mut self, ctx: &mut Context<Self>) {
        if self.pruning {
            return;
        }
        let Ok(retention) = chrono::Duration::from_std(self.retention) else {
            return;
        };
        self.pruning = true;
        let store = Arc::clone(&self.store);
        let events = Arc::clone(&self.events);
        let receipts = Arc::clone(&self.receipts);
        ctx.spawn(
            async move {
                let before = Utc::now() - retention;
                // Delivered events are only history once acknowledged; pending and failed ones stay.
                match in_batches(|| events.delete_delivered_events_before(before, PRUNE_BATCH)).await {
                    Ok(0) => {}
                    Ok(deleted) => {
                        log::info!(deleted = deleted; "deleted status events delivered before SENT_RETENTION")
                    }
                    Err(error) => log::warn!("could not delete old status events: {}", error_chain(&error)),
                }
                // Settled receipts, unmatched ones included, are only history too; pending ones stay.
                match in_batches(|| receipts.delete_settled_receipts_before(before, PRUNE_BATCH)).await {
                    Ok(0) => {}
                    Ok(deleted) => {
                        log::info!(deleted = deleted; "deleted delivery receipts settled before SENT_RETENTION")
                    }
                    Err(error) => log::warn!("could not delete old delivery receipts: {}", error_chain(&error)),
                }
                in_batches(|| store.delete_sent_before(before, PRUNE_BATCH)).await
            }
            .into_actor(self)
            .map(|result, act, _| {
                act.pruning = false;
                match result {
                    Ok(0) => {}
                    Ok(deleted) => {
                        act.metrics.messages_pruned_total.inc_by(deleted);
                        log::info!(
                            deleted = deleted, retention:? = act.retention;
                            "deleted sent messages older than SENT_RETENTION"
                        );
                    }
                    Err(error) => log::warn!("could not delete old sent messages: {}", error_chain(&error)),
                }
            }),
        );
    }
}

/// One round of one kind of row: batches until one comes back short, `MAX_BATCHES` at most, stopping at the
/// first error. Returns how many went.
async fn in_batches<F, Fut>(mut delete_batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut deleted = 0;
    for _ in 0..MAX_BATCHES {
        let batch = delete_batch().await?;
        deleted += batch;
        if batch < u64::from(PRUNE_BATCH) {
            break;
        }
    }
    Ok(deleted)
}

impl Actor for RetentionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.prune(ctx);
        ctx.run_interval(PRUNE_EVERY, |act, ctx| act.prune(ctx));
    }
}
