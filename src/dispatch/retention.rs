//! `RetentionActor`: with `SENT_RETENTION` set, deletes sent messages older than it, with their history,
//! status events delivered before it and delivery receipts settled before it, when the service starts and
//! then every `PRUNE_EVERY`. Each statement deletes at most `PRUNE_BATCH` rows, so none holds its locks
//! for long, and a round stops after `MAX_BATCHES` of them, so a backlog (retention just switched on over
//! a big table) drains over a few rounds instead of one long one. Every replica prunes: the store skips
//! messages another one is deleting, and a batch of events or receipts another one is deleting waits for
//! it and finds them gone.

use std::{future::Future, sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::Utc;

use crate::{
    metrics::Metrics,
    store::{MessageStore, PruneBatch, ReceiptStore, StatusEventStore, StoreError},
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
                let events = walking(|after| events.delete_delivered_events_before(before, after, PRUNE_BATCH)).await;
                events.report("status events delivered before SENT_RETENTION");
                // Settled receipts, unmatched ones included, are only history too; pending ones stay.
                let receipts =
                    walking(|after| receipts.delete_settled_receipts_before(before, after, PRUNE_BATCH)).await;
                receipts.report("delivery receipts settled before SENT_RETENTION");
                in_batches(|| store.delete_sent_before(before, PRUNE_BATCH)).await
            }
            .into_actor(self)
            .map(|messages, act, _| {
                act.pruning = false;
                // Counted whatever stopped the round: the batches before an error are gone too.
                act.metrics.messages_pruned_total.inc_by(messages.deleted);
                messages.report("sent messages older than SENT_RETENTION");
            }),
        );
    }
}

/// What one round deleted of one kind of row, and the error that ended it early, if one did.
#[derive(Default)]
struct Pruned {
    deleted: u64,
    error: Option<StoreError>,
}

impl Pruned {
    fn report(&self, what: &str) {
        if self.deleted > 0 {
            log::info!(deleted = self.deleted; "deleted {what}");
        }
        if let Some(error) = &self.error {
            log::warn!("could not delete all {what}: {}", error_chain(error));
        }
    }
}

/// One round of sent messages, oldest first: batches until one comes back short, `MAX_BATCHES` at most,
/// stopping at the first error.
async fn in_batches<F, Fut>(mut delete_batch: F) -> Pruned
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut pruned = Pruned::default();
    for _ in 0..MAX_BATCHES {
        match delete_batch().await {
            Ok(batch) => {
                pruned.deleted += batch;
                if batch < u64::from(PRUNE_BATCH) {
                    break;
                }
            }
            Err(error) => {
                pruned.error = Some(error);
                break;
            }
        }
    }
    pruned
}

/// One round of a table pruned in `seq` order (`PruneBatch`): from its head, batch after batch, until
/// one finds nothing old enough (the rows that follow are younger still) or the table ends,
/// `MAX_BATCHES` at most, stopping at the first error.
async fn walking<F, Fut>(mut delete_batch: F) -> Pruned
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<PruneBatch, StoreError>>,
{
    let mut pruned = Pruned::default();
    let mut after = 0;
    for _ in 0..MAX_BATCHES {
        match delete_batch(after).await {
            Ok(batch) => {
                pruned.deleted += batch.deleted;
                match batch.next_after {
                    Some(next) if batch.deleted > 0 => after = next,
                    _ => break,
                }
            }
            Err(error) => {
                pruned.error = Some(error);
                break;
            }
        }
    }
    pruned
}

impl Actor for RetentionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.prune(ctx);
        ctx.run_interval(PRUNE_EVERY, |act, ctx| act.prune(ctx));
    }
}
