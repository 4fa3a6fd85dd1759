//! `ReceiptApplierActor`: settles stored delivery receipts against the messages they name.
//!
//! `POST /receipts` stores receipts and answers at once; this actor applies them behind. It runs one
//! pass at a time over what it was told about, and what arrives meanwhile waits for the next pass:
//! - `ReceiptsStored` (from the receipt writer): receipts just stored here;
//! - `MessagesSent` (from the persister, after each flush): provider ids just recorded sent, whose
//!   receipts may have come first (the provider is faster than our flush) and wait `pending`;
//! - every `SWEEP_EVERY`, a sweep of the pending receipts in the order they arrived, up to
//!   `MAX_SWEEP_BATCHES` of them, the next sweep going on where it stopped: those stored by another
//!   replica for a message this one did not send, those a crash or a failed pass left, and those whose
//!   `RECEIPT_MATCH_WINDOW` ran out (`unmatched`).
//!
//! A receipt's provider id is looked up in the Redis cache (`provider:<id>`, written with each sent
//! message) and, on a miss, in the database. One message: the receipt is applied to it; several: it is
//! applied to none (`ambiguous`, logged once, when it is settled); none: it stays pending until its window
//! runs out. The store's statement checks the match again, so a stale cache entry cannot misapply one.
//! Each receipt is settled once, whichever replica gets there first (see `store/receipts.rs`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::messages::{MessagesSent, ReceiptsStored};
use crate::{
    cache::Cache,
    metrics::Metrics,
    store::{PendingReceipts, ReceiptOutcome, ReceiptStore, Settlement, StoreError, StoredReceipt},
    telemetry::error_chain,
};

/// How often every pending receipt is looked at again.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Receipts read and settled per statement.
const BATCH: usize = 1_000;
/// A sweep stops after this many batches; the next one goes on after the last receipt it read, so that
/// receipts waiting out their window at the head of the backlog cannot hide those behind them.
const MAX_SWEEP_BATCHES: usize = 20;

pub struct ReceiptApplierActor {
    store: Arc<dyn ReceiptStore>,
    cache: Cache,
    metrics: Metrics,
    match_window: Duration,
    /// A pass is running: what arrives waits in `queued`.
    running: bool,
    queued: Work,
    /// Where the next sweep starts: after this `seq`, or from the oldest.
    sweep_after: Option<i64>,
}

/// What a pass is to look at.
#[derive(Debug, Default)]
struct Work {
    seqs: Vec<i64>,
    provider_ids: HashSet<String>,
    sweep: bool,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.seqs.is_empty() && self.provider_ids.is_empty() && !self.sweep
    }
}

impl ReceiptApplierActor {
    pub fn new(store: Arc<dyn ReceiptStore>, cache: Cache, metrics: Metrics, match_window: Duration) -> Self {
        Self {
            store,
            cache,
            metrics,
            match_window,
            running: false,
            queued: Work::default(),
            sweep_after: None,
        }
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        if self.running || self.queued.is_empty() {
            return;
        }
        self.running = true;
        let work = std::mem::take(&mut self.queued);
        let sweep_from = work.sweep.then_some(self.sweep_after);
        let applier = Applier {
            store: Arc::clone(&self.store),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            match_window: self.match_window,
        };
        ctx.spawn(
            async move { applier.pass(work, sweep_from).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.running = false;
                    match result {
                        Ok((summary, sweep_stopped_after)) => {
                            if sweep_from.is_some() {
                                act.sweep_after = sweep_stopped_after;
                            }
                            summary.log();
                        }
                        Err(error) => {
                            // What was not settled stays pending: the next sweep takes it again.
                            log::warn!("could not settle delivery receipts: {}", error_chain(&error));
                        }
                    }
                    act.run(ctx);
                }),
        );
    }
}

/// What a pass needs, apart from the actor.
struct Applier {
    store: Arc<dyn ReceiptStore>,
    cache: Cache,
    metrics: Metrics,
    match_window: Duration,
}

impl Applier {
    /// Settles what `work` names, then sweeps after `sweep_from` when given: with where the sweep stopped,
    /// `None` when it reached the newest pending receipt.
    async fn pass(&self, work: Work, sweep_from: Option<Option<i64>>) -> Result<(Summary, Option<i64>), StoreError> {
        let mut summary = Summary::default();
        for seqs in work.seqs.chunks(BATCH) {
            let receipts = self.store.pending_receipts(PendingReceipts::Seqs(seqs)).await?;
            self.settle(receipts, &mut summary).await?;
        }
        let provider_ids: Vec<String> = work.provider_ids.into_iter().collect();
        for provider_ids in provider_ids.chunks(BATCH) {
            let receipts = self
                .store
                .pending_receipts(PendingReceipts::ProviderIds(provider_ids))
                .await?;
            self.settle(receipts, &mut summary).await?;
        }
        let mut stopped_after = None;
        if let Some(mut after) = sweep_from {
            for batch in 0..MAX_SWEEP_BATCHES {
                let receipts = self
                    .store
                    .pending_receipts(PendingReceipts::After {
                        after,
                        limit: BATCH as u32,
                    })
                    .await?;
                let Some(last) = receipts.last() else { break };
                after = Some(last.seq);
                let full = receipts.len() == BATCH;
                self.settle(receipts, &mut summary).await?;
                if !full {
                    break;
                }
                if batch + 1 == MAX_SWEEP_BATCHES {
                    stopped_after = after;
                }
            }
        }
        Ok((summary, stopped_after))
    }

    /// Matches pending receipts to their messages and settles what can be settled now. A receipt whose
    /// cached message turns out not to be sent under its id (another deployment's entry in the same Redis,
    /// or one left from an earlier message the provider gave that id) is matched again in the database.
    async fn settle(&self, receipts: Vec<StoredReceipt>, summary: &mut Summary) -> Result<(), StoreError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let candidates = self.candidates(&receipts).await?;
        let misled = self.settle_against(receipts, &candidates, summary).await?;
        if misled.is_empty() {
            return Ok(());
        }
        let mut candidates = HashMap::new();
        self.add_from_database(&mut candidates, provider_ids_of(&misled))
            .await?;
        let still_misled = self.settle_against(misled, &candidates, summary).await?;
        // The database's own answer changed under us (a message deleted meanwhile): the next sweep.
        summary.waiting += still_misled.len();
        Ok(())
    }

    /// Settles `receipts` against the messages `candidates` names for their provider ids; returns those
    /// applied to a message that is not sent under their id, left pending.
    async fn settle_against(
        &self,
        receipts: Vec<StoredReceipt>,
        candidates: &HashMap<String, Vec<Uuid>>,
        summary: &mut Summary,
    ) -> Result<Vec<StoredReceipt>, StoreError> {
        let now = Utc::now();
        let settlements: Vec<Settlement> = receipts
            .iter()
            .filter_map(|receipt| {
                let messages = candidates
                    .get(&receipt.provider_message_id)
                    .map_or(&[][..], Vec::as_slice);
                decide(receipt, messages, now, self.match_window)
            })
            .collect();
        summary.waiting += receipts.len() - settlements.len();
        if settlements.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = self.store.settle_receipts(&settlements).await?;
        let mut by_seq: HashMap<i64, StoredReceipt> =
            receipts.into_iter().map(|receipt| (receipt.seq, receipt)).collect();
        let mut misled = Vec::new();
        for (settlement, outcome) in settlements.iter().zip(outcomes) {
            let Some(outcome) = outcome else {
                continue; // another replica settled it first
            };
            if outcome == ReceiptOutcome::Pending {
                misled.extend(by_seq.remove(&settlement.seq()));
                continue;
            }
            summary.count(outcome);
            let Some(receipt) = by_seq.get(&settlement.seq()) else {
                continue;
            };
            match outcome {
                ReceiptOutcome::Ambiguous => {
                    self.metrics.receipts_ambiguous_total.inc();
                    log::warn!(
                        receipt = receipt.seq, provider_message_id = receipt.provider_message_id.as_str(),
                        status = receipt.status.as_str();
                        "delivery receipt applied to no message: its provider id names several"
                    );
                }
                ReceiptOutcome::Unmatched => {
                    self.metrics.receipts_unmatched_total.inc();
                    log::warn!(
                        receipt = receipt.seq, provider_message_id = receipt.provider_message_id.as_str(),
                        window:? = self.match_window;
                        "delivery receipt matched no sent message within RECEIPT_MATCH_WINDOW"
                    );
                }
                _ => {}
            }
        }
        Ok(misled)
    }

    /// The sent messages each receipt's provider id names: from the cache, else from the database.
    async fn candidates(&self, receipts: &[StoredReceipt]) -> Result<HashMap<String, Vec<Uuid>>, StoreError> {
        let provider_ids = provider_ids_of(receipts);
        let mut candidates: HashMap<String, Vec<Uuid>> = HashMap::new();
        match self.cache.messages_of_provider_ids(&provider_ids).await {
            Ok(cached) => {
                // One message is taken as cached (the apply checks again that no other has the id). Several
                // are asked of the database: one of them may be gone (deleted by SENT_RETENTION, its
                // cache entry not) or another deployment's sharing the Redis, and the receipt would be
                // refused as ambiguous for it.
                for (provider_id, messages) in provider_ids.iter().zip(cached) {
                    if messages.len() == 1 {
                        candidates.insert(provider_id.clone(), messages);
                    }
                }
            }
            Err(error) if error.is_resting() => {
                self.metrics.cache_errors_total.inc();
                log::debug!("receipts matched without the cache: {error}");
            }
            Err(error) => {
                self.metrics.cache_errors_total.inc();
                log::warn!("could not read the cache to match receipts: {}", error_chain(&error));
            }
        }
        let misses: Vec<String> = provider_ids
            .into_iter()
            .filter(|provider_id| !candidates.contains_key(provider_id))
            .collect();
        self.add_from_database(&mut candidates, misses).await?;
        Ok(candidates)
    }

    /// Adds the sent messages the database has for `provider_ids` to `candidates`.
    async fn add_from_database(
        &self,
        candidates: &mut HashMap<String, Vec<Uuid>>,
        provider_ids: Vec<String>,
    ) -> Result<(), StoreError> {
        if provider_ids.is_empty() {
            return Ok(());
        }
        for (provider_id, message_id) in self.store.messages_by_provider_id(&provider_ids).await? {
            candidates.entry(provider_id).or_default().push(message_id);
        }
        Ok(())
    }
}

/// The provider ids `receipts` name, each once.
fn provider_ids_of(receipts: &[StoredReceipt]) -> Vec<String> {
    receipts
        .iter()
        .map(|receipt| receipt.provider_message_id.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

/// What to do with a pending receipt whose provider id names `messages`: apply it to the one, refuse it
/// for several, and for none wait until `match_window` after it arrived. `None`: leave it pending.
fn decide(
    receipt: &StoredReceipt,
    messages: &[Uuid],
    now: DateTime<Utc>,
    match_window: Duration,
) -> Option<Settlement> {
    let seq = receipt.seq;
    match messages {
        [message_id] => Some(Settlement::Apply {
            seq,
            message_id: *message_id,
        }),
        [] => {
            let window = chrono::Duration::from_std(match_window).unwrap_or(chrono::Duration::MAX);
            let expired = receipt
                .received_at
                .checked_add_signed(window)
                .is_some_and(|deadline| deadline <= now);
            expired.then_some(Settlement::Unmatched { seq })
        }
        _ => Some(Settlement::Ambiguous { seq }),
    }
}

/// What one pass came to, for its log line.
#[derive(Debug, Default)]
struct Summary {
    applied: usize,
    ignored: usize,
    ambiguous: usize,
    unmatched: usize,
    /// Looked at, still waiting for their message.
    waiting: usize,
}

impl Summary {
    fn count(&mut self, outcome: ReceiptOutcome) {
        match outcome {
            ReceiptOutcome::Applied => self.applied += 1,
            ReceiptOutcome::Ignored => self.ignored += 1,
            ReceiptOutcome::Ambiguous => self.ambiguous += 1,
            ReceiptOutcome::Unmatched => self.unmatched += 1,
            ReceiptOutcome::Pending => {}
        }
    }

    fn log(&self) {
        if self.applied + self.ignored + self.ambiguous + self.unmatched == 0 {
            return;
        }
        log::info!(
            applied = self.applied, ignored = self.ignored, ambiguous = self.ambiguous,
            unmatched = self.unmatched, waiting = self.waiting;
            "delivery receipts settled"
        );
    }
}

impl Actor for ReceiptApplierActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.queued.sweep = true;
        self.run(ctx);
        ctx.run_interval(SWEEP_EVERY, |act, ctx| {
            act.queued.sweep = true;
            act.run(ctx);
        });
    }
}

impl Handler<ReceiptsStored> for ReceiptApplierActor {
    type Result = ();

    fn handle(&mut self, stored: ReceiptsStored, ctx: &mut Self::Context) {
        self.queued.seqs.extend(stored.seqs);
        self.run(ctx);
    }
}

impl Handler<MessagesSent> for ReceiptApplierActor {
    type Result = ();

    fn handle(&mut self, sent: MessagesSent, ctx: &mut Self::Context) {
        self.queued.provider_ids.extend(sent.provider_message_ids);
        self.run(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ReceiptStatus;

    fn receipt(received_at: DateTime<Utc>) -> StoredReceipt {
        StoredReceipt {
            seq: 7,
            provider_message_id: "p".to_owned(),
            status: ReceiptStatus::Delivered,
            reported_at: received_at,
            error: None,
            received_at,
            outcome: ReceiptOutcome::Pending,
            message_id: None,
            settled_at: None,
        }
    }

    #[test]
    fn one_message_applies_several_refuse_and_none_waits_out_the_window() {
        let now = Utc::now();
        let window = Duration::from_secs(3600);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let fresh = receipt(now - chrono::Duration::minutes(59));
        assert_eq!(
            decide(&fresh, &[a], now, window),
            Some(Settlement::Apply { seq: 7, message_id: a })
        );
        assert_eq!(
            decide(&fresh, &[a, b], now, window),
            Some(Settlement::Ambiguous { seq: 7 })
        );
        assert_eq!(decide(&fresh, &[], now, window), None, "within its window it waits");
        let old = receipt(now - chrono::Duration::minutes(61));
        assert_eq!(decide(&old, &[], now, window), Some(Settlement::Unmatched { seq: 7 }));
        assert_eq!(
            decide(&old, &[a], now, window),
            Some(Settlement::Apply { seq: 7, message_id: a }),
            "a message recorded late still gets its receipt while it is pending"
        );
    }
}
