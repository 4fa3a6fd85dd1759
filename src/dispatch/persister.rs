//! `PersisterActor`: records what each claim came to, a flush at a time, then caches what was sent and
//! tells the fetcher which claims it no longer holds.
//!
//! What it records arrives judged: a provider's answer with its verdict (`Answered`, from the webhook
//! actor), or a claim that ended without a POST (`EndedUnsent`, from the fetcher: given back, or invalid).
//! No send slot waits for it: the slot was freed when the answer arrived. Entries wait in a buffer and are
//! written together, one statement per flush (`MessageStore::finish_claims`). A flush starts once
//! `FLUSH_MAX` entries wait or `FLUSH_DELAY` after the first of them arrived, and at most `MAX_FLUSHES`
//! run at once: under load the flushes grow instead of statements queueing for connections, and at the
//! default pace a flush is one tick's answers, a couple of milliseconds late.
//!
//! Every write is fenced on the claim (see `store/mod.rs`): a result whose claim was lost changes
//! nothing. A flush that fails (database down right after a 202) is retried until it succeeds, so an
//! accepted message is never dropped and never turned into a resend while the process lives; meanwhile
//! the fetcher sees the answers pile up unrecorded and stops claiming. A flush the database refuses for
//! what one entry holds is written again entry by entry, so that entry holds up only itself. The cache
//! comes after the database, which stays the source of truth: a crash between the two leaves only missing
//! cache entries. Those a Redis out of reach kept from their flush are written once it answers again,
//! read back from the sent list (`repair_cache`).

use std::{sync::Arc, time::Duration};

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::{
    messages::{Answered, EndedUnsent, MessagesSent, Recorded},
    verdict::Verdict,
};
use crate::{
    cache::{Cache, SentRecord},
    domain::MessageStatus,
    metrics::Metrics,
    store::{Finish, MessageStore, NextState, PageCursor},
    telemetry::error_chain,
};

/// A flush starts at once when this many entries wait.
pub const FLUSH_MAX: usize = 500;
/// Otherwise, this long after the first waiting entry arrived.
const FLUSH_DELAY: Duration = Duration::from_millis(2);
/// Flushes in flight at once; more entries wait for the next one and make it larger.
const MAX_FLUSHES: usize = 2;
const WRITE_RETRY_MIN: Duration = Duration::from_millis(100);
const WRITE_RETRY_MAX: Duration = Duration::from_secs(5);
/// While sent messages wait for their cache entries, how often the persister tries to write them.
const REPAIR_EVERY: Duration = Duration::from_secs(5);
/// Sent messages read back at a time to write their cache entries.
const REPAIR_PAGE: u32 = 1_000;

pub struct PersisterActor {
    store: Arc<dyn MessageStore>,
    cache: Cache,
    metrics: Metrics,
    fetcher: Recipient<Recorded>,
    /// The receipt applier, told the provider ids of each flush's sent messages (when receipts are on).
    receipts: Option<Recipient<MessagesSent>>,
    /// Entries not yet in a flush, oldest first.
    waiting: Vec<Entry>,
    /// Whether the waiting entries may be flushed now (`FLUSH_DELAY` passed, or `FLUSH_MAX` wait).
    due: bool,
    timer: Option<SpawnHandle>,
    flushes: usize,
    /// The cache entries a failed write left out, until `repair_cache` has written them.
    uncached: Option<Uncached>,
    repairing: bool,
}

/// Sent messages whose cache entries are missing: those sent since `since`, newest first, from `resume`
/// on when a repair that stopped midway wrote those before it.
#[derive(Debug, Clone, Copy)]
struct Uncached {
    since: DateTime<Utc>,
    resume: Option<PageCursor>,
}

impl Uncached {
    /// Also those sent since `since`: a walk from the newest again, as they may be newer than `resume`.
    fn and_since(this: Option<Self>, since: DateTime<Utc>) -> Self {
        Self {
            since: this.map_or(since, |uncached| uncached.since.min(since)),
            resume: None,
        }
    }
}

/// One claim's end, to be written: the transition and history entry, and the verdict it came from
/// (`None` for a claim that ended without a POST).
struct Entry {
    finish: Finish,
    verdict: Option<Verdict>,
}

impl PersisterActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        cache: Cache,
        metrics: Metrics,
        fetcher: Recipient<Recorded>,
        receipts: Option<Recipient<MessagesSent>>,
    ) -> Self {
        Self {
            store,
            cache,
            metrics,
            fetcher,
            receipts,
            waiting: Vec::new(),
            due: false,
            timer: None,
            flushes: 0,
            uncached: None,
            repairing: false,
        }
    }

    /// Writes the cache entries a failed write left out, when some wait, no repair runs, and Redis
    /// answers.
    fn repair(&mut self, ctx: &mut Context<Self>) {
        if self.repairing {
            return;
        }
        let Some(uncached) = self.uncached.take() else {
            return;
        };
        self.repairing = true;
        let store = Arc::clone(&self.store);
        let cache = self.cache.clone();
        ctx.spawn(
            async move { repair_cache(store.as_ref(), &cache, uncached).await }
                .into_actor(self)
                .map(move |result, act, _| {
                    act.repairing = false;
                    let stopped = match result {
                        Ok(0) => return,
                        Ok(written) => {
                            log::info!(
                                messages = written;
                                "cache entries written for messages sent while Redis was out of reach"
                            );
                            return;
                        }
                        Err(stopped) => stopped,
                    };
                    // Tried again in `REPAIR_EVERY`, from where it stopped unless more went uncached since.
                    act.uncached = Some(match act.uncached {
                        Some(_) => Uncached::and_since(act.uncached, uncached.since),
                        None => Uncached {
                            since: uncached.since,
                            resume: stopped.resume,
                        },
                    });
                    match stopped.cause {
                        // Redis out of reach again: the flushes and the cache's rest say so.
                        RepairCause::Cache(error) => log::debug!("cache entries not written yet: {error}"),
                        RepairCause::Database(error) => log::warn!(
                            "could not read sent messages back to write their cache entries: {}",
                            error_chain(&error)
                        ),
                    }
                }),
        );
    }

    fn wait_for_flush(&mut self, entries: impl IntoIterator<Item = Entry>, ctx: &mut Context<Self>) {
        self.waiting.extend(entries);
        if self.waiting.len() >= FLUSH_MAX {
            self.due = true;
        } else if !self.due && self.timer.is_none() {
            self.timer = Some(ctx.run_later(FLUSH_DELAY, |act, ctx| {
                act.timer = None;
                act.due = true;
                act.flush(ctx);
            }));
        }
        self.flush(ctx);
    }

    /// Starts flushes while entries are due and a flush may start.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        while self.due && self.flushes < MAX_FLUSHES && !self.waiting.is_empty() {
            let take = self.waiting.len().min(FLUSH_MAX);
            let batch: Vec<Entry> = self.waiting.drain(..take).collect();
            if self.waiting.is_empty() {
                self.due = false;
                if let Some(timer) = self.timer.take() {
                    ctx.cancel_future(timer);
                }
            }
            self.flushes += 1;
            ctx.spawn(self.record(batch).map(|flushed, act, ctx| {
                act.flushes -= 1;
                act.settle(flushed, ctx);
                act.flush(ctx);
            }));
        }
    }

    fn record(&self, batch: Vec<Entry>) -> impl ActorFuture<Self, Output = Flushed> + 'static {
        let store = Arc::clone(&self.store);
        let cache = self.cache.clone();
        let metrics = self.metrics.clone();
        let receipts = self.receipts.clone();
        async move {
            let flushed = record(store.as_ref(), &cache, &metrics, batch).await;
            // After the cache, so that the applier finds the new entries there.
            if let (Some(receipts), Flushed::Recorded { sent_provider_ids, .. }) = (&receipts, &flushed)
                && !sent_provider_ids.is_empty()
            {
                receipts.do_send(MessagesSent {
                    provider_message_ids: sent_provider_ids.clone(),
                });
            }
            flushed
        }
        .into_actor(self)
    }

    /// Tells the fetcher what a recorded flush ended; writes each entry of a refused one on its own. Those
    /// are not counted among the flushes: an entry the database keeps refusing must not hold a flush for
    /// good.
    fn settle(&mut self, flushed: Flushed, ctx: &mut Context<Self>) {
        match flushed {
            Flushed::Recorded {
                recorded,
                uncached_since,
                ..
            } => {
                if let Some(since) = uncached_since {
                    self.uncached = Some(Uncached::and_since(self.uncached, since));
                }
                self.fetcher.do_send(recorded);
            }
            Flushed::Refused(batch) => {
                for entry in batch {
                    ctx.spawn(
                        self.record(vec![entry])
                            .map(|flushed, act, ctx| act.settle(flushed, ctx)),
                    );
                }
            }
        }
    }
}

/// What came of writing one flush.
enum Flushed {
    Recorded {
        recorded: Recorded,
        /// The provider ids of the messages this flush recorded sent.
        sent_provider_ids: Vec<String>,
        /// The earliest send time of those whose cache entries could not be written.
        uncached_since: Option<DateTime<Utc>>,
    },
    /// The database refused the flush for what one of its entries holds: each is to be written alone.
    Refused(Vec<Entry>),
}

/// Writes one flush, logs and counts what came of each entry, and caches what was sent.
async fn record(store: &dyn MessageStore, cache: &Cache, metrics: &Metrics, batch: Vec<Entry>) -> Flushed {
    let finishes: Vec<Finish> = batch.iter().map(|entry| entry.finish.clone()).collect();
    let Some(changed) = write_until_recorded(store, metrics, &finishes).await else {
        return Flushed::Refused(batch);
    };
    let mut summary = Summary::default();
    let mut to_cache = Vec::new();
    let mut recorded = Recorded {
        answers: Vec::new(),
        unsent: Vec::new(),
    };
    for (entry, changed) in batch.into_iter().zip(changed) {
        let claim = entry.finish.claim;
        summary.count(&entry, changed, metrics);
        if let (
            true,
            NextState::Sent {
                provider_message_id: Some(provider_id),
                sent_at,
            },
        ) = (changed, &entry.finish.next)
        {
            let record = SentRecord {
                message_id: provider_id.to_string(),
                sent_at: *sent_at,
            };
            to_cache.push((claim.message_id, record));
        }
        match entry.verdict {
            Some(_) => recorded.answers.push(claim),
            None => recorded.unsent.push(claim),
        }
    }
    summary.log();
    let cached = cache.put_sent_many(&to_cache).await;
    match &cached {
        Ok(()) => {}
        // The failure that began the rest was logged: a line per flush would say it again.
        Err(error) if error.is_resting() => {
            metrics.cache_errors_total.inc();
            log::debug!(messages = to_cache.len(); "sent, but not cached yet: {error}");
        }
        Err(error) => {
            metrics.cache_errors_total.inc();
            log::warn!(
                messages = to_cache.len();
                "sent, but not cached yet (written once Redis answers): {}", error_chain(error)
            );
        }
    }
    let uncached_since = cached
        .is_err()
        .then(|| to_cache.iter().map(|(_, record)| record.sent_at).min())
        .flatten();
    let sent_provider_ids = to_cache.into_iter().map(|(_, record)| record.message_id).collect();
    Flushed::Recorded {
        recorded,
        sent_provider_ids,
        uncached_since,
    }
}

/// Where a repair of the cache stopped, and why.
struct RepairStopped {
    /// The page to go on from: those before it are written.
    resume: Option<PageCursor>,
    cause: RepairCause,
}

enum RepairCause {
    Cache(crate::cache::CacheError),
    Database(crate::store::StoreError),
}

/// Writes the cache entries of the messages sent since `uncached.since` (newest first, a page at a time,
/// from `uncached.resume`), back to `REDIS_TTL` ago at most: older ones would have expired by now. Redis
/// is asked first, so that a repair while it is still out of reach reads nothing. Returns how many it
/// wrote.
async fn repair_cache(store: &dyn MessageStore, cache: &Cache, uncached: Uncached) -> Result<usize, RepairStopped> {
    let stopped = |resume, cause| RepairStopped { resume, cause };
    let mut cursor = uncached.resume;
    cache
        .ping()
        .await
        .map_err(|error| stopped(cursor, RepairCause::Cache(error)))?;
    let expired_before = chrono::Duration::from_std(cache.ttl())
        .ok()
        .and_then(|ttl| Utc::now().checked_sub_signed(ttl));
    let floor = expired_before.map_or(uncached.since, |expired| uncached.since.max(expired));
    let mut written = 0;
    loop {
        let page = store
            .list_by_status(MessageStatus::Sent, REPAIR_PAGE, cursor)
            .await
            .map_err(|error| stopped(cursor, RepairCause::Database(error)))?;
        let entries: Vec<(uuid::Uuid, SentRecord)> = page
            .iter()
            .filter_map(|message| {
                let sent_at = message.sent_at.filter(|at| *at >= floor)?;
                let provider_id = message.provider_message_id.clone()?;
                Some((
                    message.id,
                    SentRecord {
                        message_id: provider_id,
                        sent_at,
                    },
                ))
            })
            .collect();
        cache
            .put_sent_many(&entries)
            .await
            .map_err(|error| stopped(cursor, RepairCause::Cache(error)))?;
        written += entries.len();
        let last = page.last().and_then(|message| Some((message.sent_at?, message.id)));
        match last {
            Some((at, id)) if page.len() == REPAIR_PAGE as usize && at >= floor => {
                cursor = Some(PageCursor { at, id });
            }
            _ => return Ok(written),
        }
    }
}

/// Writes `finishes` until the database takes them; a lost connection or a timeout retries the flush as
/// it is. `None` when the database refuses a flush of several for what they hold: the caller writes
/// them one by one. A single result it refuses is written plainer (`plainer`), down to the state
/// change alone: retried as it was, it would hold the claim for good, and the message, rescued after
/// a restart, would be sent again.
async fn write_until_recorded(store: &dyn MessageStore, metrics: &Metrics, finishes: &[Finish]) -> Option<Vec<bool>> {
    let mut wait = WRITE_RETRY_MIN;
    let mut finishes = std::borrow::Cow::Borrowed(finishes);
    let mut plainness = Plainness::AsItIs;
    // Whether a write failed in a way that may have hidden its commit.
    let mut answer_lost = false;
    loop {
        let error = match store.finish_claims(&finishes).await {
            Ok(mut changed) => {
                if answer_lost {
                    find_sent_by_an_earlier_write(store, &finishes, &mut changed).await;
                }
                return Some(changed);
            }
            Err(error) => error,
        };
        metrics.result_write_errors_total.inc();
        if finishes.len() > 1 && error.is_refusal() {
            log::error!(
                results = finishes.len();
                "the database refused a flush of results, writing them one by one: {}", error_chain(&error)
            );
            return None;
        }
        if let ([finish], Some(plainer_form)) = (&*finishes, plainness.next())
            && error.is_refusal()
        {
            log::error!(
                message_id:% = finish.claim.message_id, now:? = plainer_form;
                "the database refused the result of one message, writing it plainer: {}", error_chain(&error)
            );
            finishes = std::borrow::Cow::Owned(vec![plainer(finish, plainer_form)]);
            plainness = plainer_form;
            continue;
        }
        let first = &finishes.first()?.claim;
        log::error!(
            results = finishes.len(), message_id:% = first.message_id, retry_in:? = wait;
            "could not record the provider's answers: {}", error_chain(&error)
        );
        answer_lost = true;
        actix_rt::time::sleep(wait).await;
        wait = (wait * 2).min(WRITE_RETRY_MAX);
    }
}

/// Marks as changed each `Sent` result that a write retried after a failure found already recorded, as
/// the failed write left it: sent, with this result's provider id, at its time. That write committed and
/// its answer was lost with the connection; taken as a claim lost to another sender, its message would
/// go uncached and its waiting receipts untold. Another sender's send of the message has its own id and
/// time. Only after a failed write, so the reads cost nothing on the way a flush normally goes.
async fn find_sent_by_an_earlier_write(store: &dyn MessageStore, finishes: &[Finish], changed: &mut [bool]) {
    for (finish, changed) in finishes.iter().zip(changed.iter_mut()) {
        let NextState::Sent {
            provider_message_id,
            sent_at,
        } = &finish.next
        else {
            continue;
        };
        if *changed {
            continue;
        }
        match store.get(finish.claim.message_id).await {
            Ok(Some(message)) => {
                *changed = message.status == MessageStatus::Sent
                    && message.provider_message_id.as_deref() == provider_message_id.as_ref().map(AsRef::as_ref)
                    && message.sent_at.map(|at| at.timestamp_micros()) == Some(sent_at.timestamp_micros());
            }
            Ok(None) => {}
            Err(error) => {
                // Left as not recorded: the database is failing again, and the rest would wait on it too.
                log::warn!(
                    message_id:% = finish.claim.message_id;
                    "could not check whether a retried result was recorded before: {}", error_chain(&error)
                );
                return;
            }
        }
    }
}

/// How plainly a refused result is written, each step leaving out more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plainness {
    AsItIs,
    /// Without its history row (`message_attempts`), the message's own change as it was.
    WithoutHistory,
    /// And its reason in printable ASCII, at most `PLAIN_TEXT_CHARS`: what a database in another
    /// encoding, or a check on a column's length, refuses is gone. The provider's id is kept as it is:
    /// another id would match another message's receipts.
    AsciiReason,
    /// The state change alone: no reason, no provider id.
    StateOnly,
}

impl Plainness {
    fn next(self) -> Option<Self> {
        match self {
            Self::AsItIs => Some(Self::WithoutHistory),
            Self::WithoutHistory => Some(Self::AsciiReason),
            Self::AsciiReason => Some(Self::StateOnly),
            Self::StateOnly => None,
        }
    }
}

const PLAIN_TEXT_CHARS: usize = 200;

/// `finish` written `how`: the same claim, the same state change.
fn plainer(finish: &Finish, how: Plainness) -> Finish {
    let text = |text: &str| -> String {
        match how {
            Plainness::AsItIs | Plainness::WithoutHistory => text.to_owned(),
            Plainness::AsciiReason => text
                .chars()
                .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
                .take(PLAIN_TEXT_CHARS)
                .collect(),
            Plainness::StateOnly => "(not recorded: the database refused the text)".to_owned(),
        }
    };
    let next = match &finish.next {
        NextState::Sent {
            provider_message_id,
            sent_at,
        } => NextState::Sent {
            provider_message_id: provider_message_id.clone().filter(|_| how != Plainness::StateOnly),
            sent_at: *sent_at,
        },
        NextState::RetryLater { delay, error } => NextState::RetryLater {
            delay: *delay,
            error: text(error),
        },
        NextState::Failed { error } => NextState::Failed { error: text(error) },
        NextState::PutBack { after, error } => NextState::PutBack {
            after: *after,
            error: error.as_deref().map(text),
        },
    };
    Finish {
        claim: finish.claim,
        next,
        attempt: finish.attempt.clone().filter(|_| how == Plainness::AsItIs),
    }
}

/// What one flush came to, for its log line.
#[derive(Default)]
struct Summary {
    sent: usize,
    retrying: usize,
    failed: usize,
    throttled: usize,
    given_back: usize,
    lost: usize,
}

impl Summary {
    /// Logs and counts one entry once its write is done; `changed` is whether it moved the message.
    fn count(&mut self, entry: &Entry, changed: bool, metrics: &Metrics) {
        let claim = &entry.finish.claim;
        if !changed {
            self.lost += 1;
            log::warn!(
                message_id:% = claim.message_id, attempt = claim.attempt;
                "result not recorded: the claim was lost (its lease expired and the message was rescued)"
            );
            return;
        }
        let Some(verdict) = &entry.verdict else {
            // A claim given back unsent, or failed for what it holds: the fetcher logged why.
            match entry.finish.next {
                NextState::Failed { .. } => self.failed += 1,
                _ => self.given_back += 1,
            }
            return;
        };
        let duration_ms = entry.finish.attempt.as_ref().map_or(0, |attempt| attempt.duration_ms);
        match verdict {
            Verdict::Sent {
                provider_message_id,
                body_problem,
                ..
            } => {
                self.sent += 1;
                if let Some(problem) = body_problem {
                    log::warn!(message_id:% = claim.message_id; "provider accepted the message but its answer is odd: {problem}");
                }
                log::debug!(
                    message_id:% = claim.message_id, attempt = claim.attempt, duration_ms = duration_ms,
                    provider_message_id = provider_message_id.as_ref().map_or("none", AsRef::as_ref);
                    "message sent"
                );
            }
            Verdict::RetryIn { delay, status, .. } => {
                self.retrying += 1;
                metrics.retries_total.inc();
                // The reason may quote the provider's body; it goes to the row, not the log.
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status:? = status,
                    duration_ms = duration_ms, retry_in:? = delay;
                    "send failed, will retry"
                );
            }
            Verdict::GaveUp { status, .. } => {
                self.failed += 1;
                metrics.dead_letters_total.inc();
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status:? = status;
                    "send failed and the attempts are spent: message failed (dead letter)"
                );
            }
            Verdict::Rejected { status, .. } => {
                self.failed += 1;
                log::warn!(
                    message_id:% = claim.message_id, attempt = claim.attempt, status = status;
                    "provider rejected the message; it will not be retried"
                );
            }
            Verdict::CredentialsRefused { status, .. } => {
                self.given_back += 1;
                log::debug!(
                    message_id:% = claim.message_id, status = status;
                    "provider refused our credentials: message back to pending in its place, attempt not counted"
                );
            }
            Verdict::Throttled { retry_after, .. } => {
                self.throttled += 1;
                log::debug!(
                    message_id:% = claim.message_id, retry_after:? = retry_after;
                    "provider throttled the send (429): message back to pending, attempt not counted"
                );
            }
        }
    }

    fn log(&self) {
        log::info!(
            sent = self.sent, retrying = self.retrying, failed = self.failed, throttled = self.throttled,
            given_back = self.given_back, lost = self.lost;
            "results recorded"
        );
    }
}

impl Actor for PersisterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(REPAIR_EVERY, |act, ctx| act.repair(ctx));
    }
}

impl Handler<Answered> for PersisterActor {
    type Result = ();

    fn handle(&mut self, answered: Answered, ctx: &mut Self::Context) {
        let entry = Entry {
            finish: Finish {
                claim: answered.claim,
                next: answered.verdict.next_state(),
                attempt: Some(answered.attempt),
            },
            verdict: Some(answered.verdict),
        };
        self.wait_for_flush([entry], ctx);
    }
}

impl Handler<EndedUnsent> for PersisterActor {
    type Result = ();

    fn handle(&mut self, ended: EndedUnsent, ctx: &mut Self::Context) {
        let entries = ended.finishes.into_iter().map(|finish| Entry { finish, verdict: None });
        self.wait_for_flush(entries, ctx);
    }
}
