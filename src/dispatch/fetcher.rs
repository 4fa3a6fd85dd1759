//! `FetcherActor`: claims messages and keeps this instance's send slots busy, within the pace.
//!
//! It drives the flow control (`flow.rs`): a free slot takes the next message from the run-ahead buffer
//! at once, and a claim refills the buffer as soon as there is room worth a round trip, within the
//! `BATCH_SIZE` each tick allows, the cluster's pace (`RATE_LIMIT`, a provider's 429) and the circuit
//! breaker. It validates what a claim returns (rows may come from plain SQL) and hands the rest to the
//! webhook actor. A claim that ends without a POST (invalid, given back) goes to the persister like an
//! answer, so every claim this instance holds ends recorded; the rescue spares the ones it still holds.
//!
//! Each tick grants the budget and, at most once a second, rescues expired leases of dead senders.

use std::{
    collections::HashSet,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    breaker::{Breaker, BreakerState},
    daily_cap::DailyCap,
    flow::{Flow, FlowLimits, Next, RecentAnswers},
    messages::{
        BreakerReport, Deliver, EndedUnsent, FlowReport, GetBreaker, GetFlow, GetInFlight, PauseClaims, Recorded,
        ResumeClaims, SendEnded, Tick, TickReport, TickSkipped, TickSource,
    },
    quiet_hours::QuietRules,
    verdict::SendSignal,
};
use crate::{
    domain::{MessageContent, MessageStatus, PhoneNumber},
    metrics::Metrics,
    store::{
        ClaimRequest, Claimed, ClaimedMessage, Finish, Frontier, MessageStore, NextState, Pace, Rescue, StoreError,
        Throttle,
    },
    telemetry::error_chain,
};

/// Scheduled ticks rescue at most this often.
const RESCUE_EVERY: Duration = Duration::from_secs(1);
/// A rescue looks at leases that ran out this recently, which keeps it cheap when dead rows pile up in
/// its index; every `FULL_RESCUE_EVERY` it looks at them all.
const RESCUE_WINDOW: Duration = Duration::from_secs(30);
const FULL_RESCUE_EVERY: Duration = Duration::from_secs(60);
/// A replica whose heartbeat is younger than this keeps its leases: three missed beats make it dead.
pub const OWNER_FRESH: Duration = Duration::from_secs(3);
/// Another replica's leases are taken only once this instance has reached the database this long
/// without finding it unreachable: after an outage every heartbeat is old, and a live replica's next one
/// may wait out a pool's acquire timeout before it lands. Rescues run with the scheduled ticks, so with
/// a long `INTERVAL` the first after it may come later.
const UP_BEFORE_RESCUING_OTHERS: Duration = Duration::from_secs(8);
/// After a claim fails, the next waits this long, twice as long after each failure in a row up to
/// `CLAIM_RETRY_MAX`: a claim that fails for what a row holds fails again at once, thousands of times a
/// second, each an error line.
const CLAIM_RETRY_MIN: Duration = Duration::from_secs(1);
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(30);
/// The longest wait after a claim that failed because the database was out of reach: a claim tried every
/// few seconds costs it nothing, and sending resumes within them once it is back. A refused connection
/// fails in a millisecond, so the doubling reached 16 s in a 20 s outage, and sending waited it out.
const CLAIM_RETRY_MAX_OUT_OF_REACH: Duration = Duration::from_secs(4);
/// A 429 without `Retry-After` pauses this instance at least this long (the cluster decides the rest).
const THROTTLE_FLOOR: Duration = Duration::from_secs(1);
/// Claims resume after the last row claimed (`Frontier`), and this often one starts from the oldest due
/// row instead, to find what came due behind the frontier (see `store/postgres/claim_due.sql`).
const SWEEP_EVERY: Duration = Duration::from_secs(3);

pub struct FetcherActor {
    store: Arc<dyn MessageStore>,
    webhook: Recipient<Deliver>,
    persister: Recipient<EndedUnsent>,
    rules: ClaimRules,
    metrics: Metrics,
    flow: Flow,
    breaker: Breaker,
    /// The claims this instance holds, by lease token, from claim until recorded.
    live: HashSet<Uuid>,
    /// Set while sending is stopped: nothing is claimed but on a manual tick, and what waits in the
    /// buffer, or comes back from a claim under way, is given back unsent.
    paused: bool,
    /// A provider's 429 pause, as this instance knows it: no claims, and the buffer waits, until then.
    throttled_until: Option<Instant>,
    /// The cluster's rate let the last claim take fewer than asked: the next waits until then.
    paced_until: Option<Instant>,
    /// The pace as the last claim found it.
    pace: Pace,
    /// What the provider answered here lately: a 429's rate cut starts from it.
    answers: RecentAnswers,
    /// The provider refused our credentials (its status, and since when): nothing is claimed or sent
    /// until an operator starts sending again, or the instance restarts with a key that works.
    refused: Option<(u16, DateTime<Utc>)>,
    wake: Option<(Instant, SpawnHandle)>,
    /// Where the last claim ended; the next resumes after it, unless it sweeps from the oldest due row.
    frontier: Option<Frontier>,
    swept_at: Option<Instant>,
    /// Rows went back behind the frontier (given back, rescued): the next claim sweeps.
    sweep_next: bool,
    rescuing: bool,
    last_rescue: Option<Instant>,
    last_full_rescue: Option<Instant>,
    /// How long this instance's claims and rescues have reached the database.
    store_up: StoreUptime,
    /// Claims failed in a row, and until when the next waits.
    claim_failures: u32,
    claim_retry_at: Option<Instant>,
}

/// Since when the database has answered without being found unreachable.
#[derive(Debug, Default)]
struct StoreUptime(Option<Instant>);

impl StoreUptime {
    /// Notes what the database answered a claim or a rescue: a statement it refused, or SQLite's file
    /// busy with another writer, is no outage.
    fn note<T>(&mut self, result: &Result<T, StoreError>) {
        match result {
            Err(error) if error.is_unreachable() => self.0 = None,
            _ => {
                self.0.get_or_insert_with(Instant::now);
            }
        }
    }

    fn at_least(&self, span: Duration, now: Instant) -> bool {
        self.0.is_some_and(|up| now.saturating_duration_since(up) >= span)
    }
}

/// What one rescue may take.
struct RescueScope {
    /// The claim tokens this instance holds.
    live: Vec<Uuid>,
    /// Only leases that ran out this recently; `None` for all.
    window: Option<Duration>,
    /// Other replicas' leases too (`Rescue::others`).
    others: bool,
}

/// What a claim may take and how its rows are judged.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub owner: String,
    pub lease: Duration,
    pub content_max_chars: usize,
    /// `RATE_LIMIT`, messages a second.
    pub rate_limit: Option<f64>,
    /// `PRIORITY_AGING`: a message due for longer counts as one priority higher.
    pub priority_aging: Duration,
    /// `QUIET_HOURS`: `low` messages wait while it is night where they go.
    pub quiet_hours: Option<QuietRules>,
    /// `RECIPIENT_DAILY_LIMIT`: non-`high` messages to a number sent this many in 24 hours wait.
    pub recipient_daily_limit: Option<NonZeroU32>,
}

/// Where the fetcher hands its work.
pub struct FetcherOutlets {
    pub webhook: Recipient<Deliver>,
    pub persister: Recipient<EndedUnsent>,
}

/// How long a row whose number could not be rewritten in its normal form waits before it is tried again.
const RESPELL_RETRY: Duration = Duration::from_secs(5);

/// One claim's rows, judged: what to send and what failed validation.
struct ClaimedBatch {
    rescued: usize,
    asked: u32,
    claimed: usize,
    /// The final states of the due rows the claim ended unsent instead (expired, suppressed).
    ended: Vec<MessageStatus>,
    deliveries: Vec<Deliver>,
    invalid: Vec<Finish>,
    /// Valid, but held by quiet hours: put back, uncounted, due when the recipient's window ends.
    held: Vec<Finish>,
    /// Valid, but deferred by `RECIPIENT_DAILY_LIMIT`: put back, uncounted, due when the cap frees.
    capped: Vec<Finish>,
    /// Valid, but with the number stored in another spelling: rewritten in its normal form and put back,
    /// uncounted, due at once, so that the next claim checks it against the suppression list.
    respelled: Vec<Finish>,
    pace: Pace,
    frontier: Option<Frontier>,
}

impl FetcherActor {
    pub fn new(
        store: Arc<dyn MessageStore>,
        outlets: FetcherOutlets,
        rules: ClaimRules,
        limits: FlowLimits,
        metrics: Metrics,
    ) -> Self {
        Self {
            store,
            webhook: outlets.webhook,
            persister: outlets.persister,
            rules,
            metrics,
            flow: Flow::new(limits),
            breaker: Breaker::default(),
            live: HashSet::new(),
            paused: true,
            throttled_until: None,
            paced_until: None,
            pace: Pace::default(),
            answers: RecentAnswers::new(Instant::now()),
            refused: None,
            wake: None,
            frontier: None,
            swept_at: None,
            sweep_next: false,
            rescuing: false,
            last_rescue: None,
            last_full_rescue: None,
            store_up: StoreUptime::default(),
            claim_failures: 0,
            claim_retry_at: None,
        }
    }

    fn throttled(&self, now: Instant) -> bool {
        self.throttled_until.is_some_and(|until| now < until)
    }

    /// Feeds free slots from the buffer, then starts a claim when one is due. Run after every event.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.refused.is_none() {
            self.feed_and_claim(ctx, now);
        }
        self.report_gauges(now);
    }

    /// The send slots, the buffer and the breaker as they are: set after every event, so that none stays
    /// at what it was before a pause (the breaker's cool-down ends with no event but `pump`'s wake-up).
    fn report_gauges(&mut self, now: Instant) {
        self.metrics.send_slots_in_use.set(gauge(self.flow.slots_in_use()));
        self.metrics.claim_buffer_depth.set(gauge(self.flow.buffered()));
        self.metrics.breaker_state.set(breaker_gauge(self.breaker.state(now)));
    }

    fn feed_and_claim(&mut self, ctx: &mut Context<Self>, now: Instant) {
        if let BreakerState::Open { .. } = self.breaker.state(now) {
            // Nothing more goes to a provider that keeps failing: what waits for a slot goes back unsent,
            // its attempt unspent, as on a 429.
            let buffered = self.flow.take_buffer();
            if !buffered.is_empty() {
                log::info!(
                    messages = buffered.len();
                    "circuit breaker open: claims waiting for a send slot given back unsent"
                );
            }
            self.give_back(buffered);
        } else if !self.throttled(now) {
            let mut stale = Vec::new();
            let wall = Utc::now();
            while let Some(next) = self.flow.next(now) {
                match next {
                    // It expired while it waited for a slot: never posted; back, and the claim expires it.
                    Next::Post(delivery) if delivery.expires_at.is_some_and(|at| at <= wall) => {
                        self.flow.post_withdrawn();
                        stale.push(delivery);
                    }
                    Next::Post(delivery) => self.webhook.do_send(delivery),
                    Next::GiveBack(delivery) => stale.push(delivery),
                }
            }
            if !stale.is_empty() {
                log::warn!(
                    messages = stale.len(), max_wait:? = self.flow.limits().max_wait;
                    "claims waited too long for a send slot: given back unsent, due again in their place"
                );
                self.give_back(stale);
            }
        }
        let paced = self.paced_until.is_some_and(|until| now < until);
        let failed_lately = self.claim_retry_at.is_some_and(|at| now < at);
        if !self.paused
            && !self.throttled(now)
            && !paced
            && !failed_lately
            && let Some(size) = self.flow.claim_size()
        {
            let allowed = self.breaker.allowance(size as usize, now);
            if allowed > 0 {
                let claim = self.claim(u32::try_from(allowed).unwrap_or(size), false, TickSource::Scheduler);
                ctx.spawn(claim.map(|_, _, _| ()));
            }
        }
        // The earliest deadline still ahead: a past one (a pace already over) must not hide the end of a
        // pause, nor a pause that ended unnoticed the pace's next draw; and the breaker's, so that its probe
        // goes when the cool-down ends, not at the next tick.
        self.wake_at(
            ctx,
            [
                self.throttled_until,
                self.paced_until,
                self.breaker.next_change(),
                self.claim_retry_at,
            ]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .min(),
        );
    }

    /// Runs `pump` again at `at` (a pause or the pace's wait ends), unless a wake-up is already set then.
    fn wake_at(&mut self, ctx: &mut Context<Self>, at: Option<Instant>) {
        let Some(at) = at.filter(|at| *at > Instant::now()) else {
            return;
        };
        if let Some((when, handle)) = self.wake {
            if when <= at && when > Instant::now() {
                return;
            }
            ctx.cancel_future(handle);
        }
        let handle = ctx.run_later(at.saturating_duration_since(Instant::now()), |act, ctx| {
            act.wake = None;
            let now = Instant::now();
            if act.throttled_until.is_some_and(|until| now >= until) {
                act.throttled_until = None;
                log::info!(rate:? = act.pace.rate; "the provider's pause is over: claiming and sending again");
            }
            act.pump(ctx);
        });
        self.wake = Some((at, handle));
    }

    /// One claim of up to `size` (after a rescue, when asked), its rows judged and handed out; what it
    /// came to, as a manual tick reports it.
    fn claim(
        &mut self,
        size: u32,
        rescue: bool,
        source: TickSource,
    ) -> impl ActorFuture<Self, Output = TickReport> + use<> {
        self.flow.claim_started();
        let store = Arc::clone(&self.store);
        let rules = self.rules.clone();
        let rescue = rescue.then(|| self.rescue_scope());
        let after = self.resume_after(source);
        async move { claim_batch(store.as_ref(), &rules, size, rescue, after).await }
            .into_actor(self)
            .map(move |result, act, ctx| {
                let report = act.take(result, source);
                act.pump(ctx);
                report
            })
    }

    /// Where the next claim resumes: after the frontier, or, to sweep (a manual tick, every
    /// `SWEEP_EVERY`, after rows went back behind it), from the oldest due row.
    fn resume_after(&mut self, source: TickSource) -> Option<Frontier> {
        let now = Instant::now();
        let sweep = source == TickSource::Manual
            || self.sweep_next
            || self
                .swept_at
                .is_none_or(|swept| now.saturating_duration_since(swept) >= SWEEP_EVERY);
        if sweep {
            self.swept_at = Some(now);
            self.sweep_next = false;
            return None;
        }
        self.frontier
    }

    /// What a rescue now may take: not this instance's own claims, nor a live replica's, nor any other
    /// replica's until this one has reached the database for `UP_BEFORE_RESCUING_OTHERS`; the recent
    /// leases only, but every minute all of them.
    fn rescue_scope(&mut self) -> RescueScope {
        let now = Instant::now();
        self.last_rescue = Some(now);
        let full = self
            .last_full_rescue
            .is_none_or(|last| now.saturating_duration_since(last) >= FULL_RESCUE_EVERY);
        if full {
            self.last_full_rescue = Some(now);
        }
        RescueScope {
            live: self.live.iter().copied().collect(),
            window: (!full).then_some(RESCUE_WINDOW),
            others: self.store_up.at_least(UP_BEFORE_RESCUING_OTHERS, now),
        }
    }

    /// Takes what a claim returned: the buffer gets the valid rows (or they go back, when sending stopped
    /// meanwhile), the persister the invalid ones, and the pace is noted.
    fn take(&mut self, result: Result<ClaimedBatch, StoreError>, source: TickSource) -> TickReport {
        self.store_up.note(&result);
        let batch = match result {
            Ok(batch) => {
                self.claim_failures = 0;
                self.claim_retry_at = None;
                batch
            }
            Err(error) => {
                self.flow.claim_failed();
                let longest = if error.is_unreachable() {
                    CLAIM_RETRY_MAX_OUT_OF_REACH
                } else {
                    CLAIM_RETRY_MAX
                };
                let wait = CLAIM_RETRY_MIN
                    .saturating_mul(1 << self.claim_failures.min(5))
                    .min(longest);
                self.claim_failures = self.claim_failures.saturating_add(1);
                self.claim_retry_at = Some(Instant::now() + wait);
                self.metrics.tick_errors_total.inc();
                log::error!(retry_in:? = wait; "claim failed, will try again: {}", error_chain(&error));
                return TickReport {
                    skipped: Some(TickSkipped::StoreError),
                    ..TickReport::default()
                };
            }
        };
        let now = Instant::now();
        self.metrics.leases_rescued_total.inc_by(batch.rescued as u64);
        self.metrics
            .sends_total
            .with_label_values(&["invalid"])
            .inc_by(batch.invalid.len() as u64);
        for status in &batch.ended {
            self.metrics.sends_total.with_label_values(&[status.as_str()]).inc();
        }
        self.note_pace(batch.pace, now);
        if let Some(reached) = batch.frontier {
            // A full sweep that stayed behind the frontier may have left more behind it: sweep again.
            let behind = self.frontier.is_some_and(|frontier| reached.is_behind(&frontier));
            self.sweep_next |= behind && batch.claimed >= batch.asked as usize;
            self.frontier.get_or_insert_with(Frontier::default).advance(&reached);
        }
        let claims = batch
            .deliveries
            .iter()
            .map(|d| d.claim)
            .chain(batch.invalid.iter().map(|f| f.claim))
            .chain(batch.held.iter().map(|f| f.claim))
            .chain(batch.capped.iter().map(|f| f.claim))
            .chain(batch.respelled.iter().map(|f| f.claim));
        self.live.extend(claims.map(|claim| claim.token));
        let report = TickReport {
            rescued: batch.rescued,
            claimed: batch.claimed,
            invalid: batch.invalid.len(),
            skipped: if batch.pace.paused_for.is_some() {
                Some(TickSkipped::Throttled)
            } else {
                (batch.claimed == 0 && batch.asked == 0).then_some(TickSkipped::NoFreeSlot)
            },
        };
        self.metrics
            .sends_total
            .with_label_values(&["quiet_hours"])
            .inc_by(batch.held.len() as u64);
        self.metrics
            .sends_total
            .with_label_values(&["daily_cap"])
            .inc_by(batch.capped.len() as u64);
        let mut unsent = batch.invalid;
        unsent.extend(batch.held);
        unsent.extend(batch.capped);
        // Their put-back lands behind the frontier: the next claim sweeps from the oldest due row.
        self.sweep_next |= !batch.respelled.is_empty();
        unsent.extend(batch.respelled);
        if !unsent.is_empty() {
            self.flow.ending_unsent(unsent.len());
            self.persister.do_send(EndedUnsent { finishes: unsent });
        }
        let mut deliveries = batch.deliveries;
        if self.refused.is_some() || (source == TickSource::Scheduler && self.paused) {
            // Sending stopped, or the provider refused our credentials, while this claim ran: give the rows
            // back rather than buffer them where nothing posts them (nor gives them back).
            self.give_back(std::mem::take(&mut deliveries));
        }
        if report.claimed > 0 || report.rescued > 0 {
            // Debug: at full throttle this is hundreds of lines a second; the persister's one line per
            // flush says what came of them.
            log::debug!(
                claimed = report.claimed, invalid = report.invalid, rescued = report.rescued;
                "claimed messages"
            );
        }
        self.breaker.claimed(deliveries.len(), Instant::now());
        // Rows it ended unsent were due, but are no sends: they neither spend the tick's budget nor, short of
        // what was asked, make the queue look drained.
        let asked = batch
            .asked
            .saturating_sub(u32::try_from(batch.ended.len()).unwrap_or(u32::MAX));
        // Held back by the pace, or by the cluster's pause (another replica's 429): not a drained queue, so
        // claims go on when the wait ends (`pump`'s wake-up), not at the next tick.
        let held_back = batch.pace.next_in.is_some() || batch.pace.paused_for.is_some();
        if held_back && batch.claimed < asked as usize {
            self.flow.claim_held_back(batch.claimed, deliveries, now);
        } else {
            self.flow.claim_ended(asked, batch.claimed, deliveries, now);
        }
        report
    }

    /// Notes the pace a claim found: the cluster's pause (a 429 on any replica), the rate in force.
    fn note_pace(&mut self, pace: Pace, now: Instant) {
        if let Some(paused_for) = pace.paused_for {
            self.pause_for(paused_for, now);
        }
        self.paced_until = pace.next_in.map(|wait| now + wait);
        self.pace = pace;
        self.metrics.rate_limit_per_second.set(pace.rate.unwrap_or(0.0));
    }

    /// Pauses claims and sends until `now + pause` (extending a pause under way), and gives the buffer
    /// back: its claims were drawn at the rate the provider just refused, and sent together when the
    /// pause ends they would be the next burst of 429s. After the pause, claims draw at the cut rate.
    fn pause_for(&mut self, pause: Duration, now: Instant) {
        let until = now + pause;
        if self.throttled_until.is_none_or(|current| current < until) {
            if !self.throttled(now) {
                log::warn!(
                    pause:? = pause;
                    "the provider throttles the cluster (429): every replica pauses its claims and sends"
                );
            }
            self.throttled_until = Some(until);
        }
        let buffered = self.flow.take_buffer();
        self.give_back(buffered);
    }

    /// The provider refused our credentials: stop sending here, say so loudly, give the buffer back.
    fn refuse(&mut self, status: u16) {
        if self.refused.is_none() {
            log::error!(
                status = status;
                "the provider refuses our credentials: sending paused on this instance, messages keep their \
                 attempts; fix WEBHOOK_AUTH_KEY and restart, or POST /scheduler/start to try again"
            );
            self.refused = Some((status, Utc::now()));
            self.metrics.provider_credentials_refused.set(1);
        }
        let buffered = self.flow.take_buffer();
        self.give_back(buffered);
    }

    /// Gives claims back unsent, through the persister: due again in their old place, the attempt not
    /// counted.
    fn give_back(&mut self, deliveries: Vec<Deliver>) {
        if deliveries.is_empty() {
            return;
        }
        // They go back to their old places, behind the frontier.
        self.sweep_next = true;
        self.flow.ending_unsent(deliveries.len());
        let finishes = deliveries
            .into_iter()
            .map(|delivery| Finish {
                claim: delivery.claim,
                next: NextState::PutBack {
                    after: None,
                    error: None,
                },
                attempt: None,
            })
            .collect();
        self.persister.do_send(EndedUnsent { finishes });
    }

    /// A scheduled rescue, on its own (a claim may be under way): at most once a second.
    fn rescue_if_due(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.rescuing
            || self
                .last_rescue
                .is_some_and(|last| now.saturating_duration_since(last) < RESCUE_EVERY)
        {
            return;
        }
        self.rescuing = true;
        let store = Arc::clone(&self.store);
        let scope = self.rescue_scope();
        // A claim under way may hold rows not yet in `live` (a slow claim, past its lease): not lost.
        let owner = (!self.flow.is_claiming()).then(|| self.rules.owner.clone());
        ctx.spawn(
            async move { rescue(store.as_ref(), owner.as_deref(), &scope).await }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.rescuing = false;
                    act.store_up.note(&result);
                    match result {
                        Ok(rescued) => {
                            act.metrics.leases_rescued_total.inc_by(rescued as u64);
                            act.sweep_next |= rescued > 0;
                        }
                        Err(error) => {
                            act.metrics.tick_errors_total.inc();
                            log::error!("rescue failed, will try again: {}", error_chain(&error));
                        }
                    }
                    act.pump(ctx);
                }),
        );
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Puts back to `pending` the expired leases no live sender holds (see `MessageStore`).
async fn rescue(store: &dyn MessageStore, owner: Option<&str>, scope: &RescueScope) -> Result<usize, StoreError> {
    let rescued = store
        .rescue_expired_leases(&Rescue {
            owner,
            live: &scope.live,
            owner_fresh: OWNER_FRESH,
            others: scope.others,
            expired_within: scope.window,
        })
        .await?;
    for id in &rescued {
        log::warn!(message_id:% = id; "lease expired before a result was recorded: message back to pending");
    }
    Ok(rescued.len())
}

/// Rescue (when asked), claim, validate: the database side of a claim, without the actor.
async fn claim_batch(
    store: &dyn MessageStore,
    rules: &ClaimRules,
    limit: u32,
    scope: Option<RescueScope>,
    after: Option<Frontier>,
) -> Result<ClaimedBatch, StoreError> {
    let rescued = match &scope {
        // Before this claim's own rows exist, and no other claim runs meanwhile.
        Some(scope) => rescue(store, Some(&rules.owner), scope).await?,
        None => 0,
    };
    let Claimed {
        messages,
        ended,
        pace,
        frontier,
    } = if limit == 0 {
        Claimed {
            messages: Vec::new(),
            ended: Vec::new(),
            pace: Pace::default(),
            frontier: None,
        }
    } else {
        store
            .claim_due(&ClaimRequest {
                limit,
                owner: &rules.owner,
                lease: rules.lease,
                rate_limit: rules.rate_limit,
                after,
                aging: rules.priority_aging,
            })
            .await?
    };
    for (id, status) in &ended {
        log::info!(message_id:% = id, status:% = status; "message ended unsent (expired, or its number opted out)");
    }
    let mut batch = ClaimedBatch {
        rescued,
        asked: limit,
        claimed: messages.len(),
        ended: ended.into_iter().map(|(_, status)| status).collect(),
        deliveries: Vec::with_capacity(messages.len()),
        invalid: Vec::new(),
        held: Vec::new(),
        capped: Vec::new(),
        respelled: Vec::new(),
        pace,
        frontier,
    };
    let now = Utc::now();
    let mut cap = match rules.recipient_daily_limit {
        Some(limit) if !messages.is_empty() => {
            let numbers: Vec<&str> = messages.iter().map(|m| m.phone_number.as_str()).collect();
            let claims: Vec<Uuid> = messages.iter().map(|m| m.claim.token).collect();
            Some(DailyCap::load(store, limit, &numbers, &claims, now).await?)
        }
        _ => None,
    };
    let mut respell = Vec::new();
    for message in messages {
        let quiet = rules.quiet_hours.as_ref().and_then(|quiet| {
            quiet.hold(
                message.priority,
                &message.phone_number,
                message.timezone.as_deref(),
                now,
            )
        });
        match validate(&message, rules.content_max_chars) {
            Ok(delivery) => {
                let put_back = |(wait, why): (Duration, String)| {
                    log::debug!(message_id:% = message.claim.message_id; "{why}");
                    Finish {
                        claim: message.claim,
                        next: NextState::PutBack {
                            after: Some(wait),
                            error: Some(why),
                        },
                        attempt: None,
                    }
                };
                if delivery.to.as_ref() != message.phone_number {
                    respell.push((message.claim.token, delivery.to.as_ref().to_owned()));
                    batch.respelled.push(Finish {
                        claim: message.claim,
                        next: NextState::PutBack {
                            after: None,
                            error: Some(
                                "phone_number rewritten in its normal form, to be checked against the opt-outs"
                                    .to_owned(),
                            ),
                        },
                        attempt: None,
                    });
                } else if let Some(hold) = quiet {
                    batch.held.push(put_back(hold));
                } else if let Some(defer) = cap
                    .as_mut()
                    .and_then(|cap| cap.admit(message.priority, &message.phone_number, now))
                {
                    batch.capped.push(put_back(defer));
                } else {
                    batch.deliveries.push(delivery);
                }
            }
            Err(reason) => {
                log::warn!(message_id:% = message.claim.message_id; "claimed message is invalid, failing it: {reason}");
                batch.invalid.push(Finish {
                    claim: message.claim,
                    next: NextState::Failed { error: reason },
                    attempt: None,
                });
            }
        }
    }
    if !respell.is_empty()
        && let Err(error) = store.respell_numbers(&respell).await
    {
        // Never sent unchecked: back as they are for a later claim to try again, or, when the database
        // refuses the normal form itself (a rule of its own), failed: it would refuse it every time.
        let why = format!(
            "could not rewrite phone_number in its normal form: {}",
            error_chain(&error)
        );
        log::warn!(messages = respell.len(); "{why}");
        for finish in &mut batch.respelled {
            finish.next = if error.is_refusal() {
                NextState::Failed { error: why.clone() }
            } else {
                NextState::PutBack {
                    after: Some(RESPELL_RETRY),
                    error: Some(why.clone()),
                }
            };
        }
    }
    Ok(batch)
}

/// Rows may come from plain SQL inserts, so they are parsed here exactly as the API parses a request.
fn validate(message: &ClaimedMessage, content_max_chars: usize) -> Result<Deliver, String> {
    let to = PhoneNumber::parse(&message.phone_number).map_err(|e| format!("invalid phone_number: {e}"))?;
    let content =
        MessageContent::parse(&message.content, content_max_chars).map_err(|e| format!("invalid content: {e}"))?;
    Ok(Deliver {
        expires_at: message.expires_at,
        claim: message.claim,
        to,
        content,
    })
}

impl Actor for FetcherActor {
    type Context = Context<Self>;
}

impl Handler<Tick> for FetcherActor {
    type Result = ResponseActFuture<Self, TickReport>;

    fn handle(&mut self, tick: Tick, ctx: &mut Self::Context) -> Self::Result {
        let skipped = |reason| {
            Box::pin(actix::fut::ready(TickReport {
                skipped: Some(reason),
                ..TickReport::default()
            })) as Self::Result
        };
        match tick.source {
            TickSource::Scheduler => {
                if self.paused {
                    return skipped(TickSkipped::Paused);
                }
                self.flow.tick();
                self.rescue_if_due(ctx);
                self.pump(ctx);
                Box::pin(actix::fut::ready(TickReport::default()))
            }
            // A manual tick claims at once, even while sending is stopped, and reports what it did.
            TickSource::Manual => {
                if self.refused.is_some() {
                    return skipped(TickSkipped::CredentialsRefused);
                }
                if self.flow.is_claiming() {
                    log::debug!("tick skipped: the previous claim has not returned");
                    return skipped(TickSkipped::ClaimInProgress);
                }
                self.flow.tick();
                let now = Instant::now();
                if self.throttled(now) {
                    return skipped(TickSkipped::Throttled);
                }
                let wanted = self.flow.claim_size().unwrap_or(0) as usize;
                let allowed = self.breaker.allowance(wanted, now);
                let breaker_holds = allowed < wanted;
                let limit = u32::try_from(allowed).unwrap_or(u32::MAX);
                Box::pin(
                    self.claim(limit, true, TickSource::Manual)
                        .map(move |mut report, _, _| {
                            if breaker_holds && report.skipped == Some(TickSkipped::NoFreeSlot) {
                                report.skipped = Some(TickSkipped::BreakerOpen);
                            }
                            report
                        }),
                )
            }
        }
    }
}

impl Handler<SendEnded> for FetcherActor {
    type Result = ();

    fn handle(&mut self, ended: SendEnded, ctx: &mut Self::Context) {
        self.flow.answered();
        let now = Instant::now();
        let before = self.breaker.state(now);
        match ended.signal {
            SendSignal::Answered => {
                self.answers.record(now);
                self.breaker.record(ended.claim.message_id, false, now);
            }
            SendSignal::ProviderFailed => self.breaker.record(ended.claim.message_id, true, now),
            SendSignal::CredentialsRefused { status } => {
                // Its message goes back to its old place, behind the frontier.
                self.sweep_next = true;
                self.refuse(status);
            }
            SendSignal::Throttled { retry_after } => {
                self.sweep_next |= retry_after.is_none();
                self.metrics.throttled_total.inc();
                // The first 429 of a burst tells the cluster; the answers to what was still in flight
                // change nothing more, unless one asks for a longer pause than the one under way.
                let longer =
                    retry_after.is_some_and(|after| self.throttled_until.is_some_and(|until| now + after > until));
                if !self.throttled(now) || longer {
                    let store = Arc::clone(&self.store);
                    let throttle = Throttle {
                        retry_after,
                        rate_limit: self.rules.rate_limit,
                        answered_here: self.answers.last_second(now),
                    };
                    ctx.spawn(async move { store.throttle(&throttle).await }.into_actor(self).map(
                        |result, act, ctx| {
                            match result {
                                Ok(pause) => act.pause_for(pause, Instant::now()),
                                Err(error) => log::error!(
                                    "could not pause the cluster for the provider's 429: {}",
                                    error_chain(&error)
                                ),
                            }
                            act.pump(ctx);
                        },
                    ));
                }
                self.pause_for(retry_after.unwrap_or(THROTTLE_FLOOR), now);
            }
        }
        let after = self.breaker.state(now);
        if before != after {
            match after {
                BreakerState::Open { .. } => log::warn!(
                    cool_down:? = super::breaker::COOL_DOWN;
                    "circuit breaker open: the provider keeps failing, claiming stops for the cool-down"
                ),
                BreakerState::Closed => log::info!("circuit breaker closed: the provider answers again"),
                BreakerState::HalfOpen { .. } => {}
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Recorded> for FetcherActor {
    type Result = ();

    fn handle(&mut self, recorded: Recorded, ctx: &mut Self::Context) {
        self.flow.recorded(recorded.answers.len(), recorded.unsent.len());
        for claim in recorded.answers.iter().chain(&recorded.unsent) {
            self.live.remove(&claim.token);
        }
        self.pump(ctx);
    }
}

impl Handler<PauseClaims> for FetcherActor {
    type Result = ();

    fn handle(&mut self, _: PauseClaims, _: &mut Self::Context) {
        self.paused = true;
        let buffered = self.flow.take_buffer();
        if !buffered.is_empty() {
            log::info!(messages = buffered.len(); "sending stopped: claims waiting for a slot given back unsent");
        }
        self.give_back(buffered);
        self.report_gauges(Instant::now());
    }
}

impl Handler<ResumeClaims> for FetcherActor {
    type Result = ();

    fn handle(&mut self, _: ResumeClaims, ctx: &mut Self::Context) {
        self.paused = false;
        if let Some((status, _)) = self.refused.take() {
            self.metrics.provider_credentials_refused.set(0);
            log::info!(status = status; "sending started again after the provider refused our credentials");
        }
        self.pump(ctx);
    }
}

/// `breaker_state`: 0 closed, 1 open, 2 half-open.
fn breaker_gauge(state: BreakerState) -> i64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open { .. } => 1,
        BreakerState::HalfOpen { .. } => 2,
    }
}

impl Handler<GetBreaker> for FetcherActor {
    type Result = MessageResult<GetBreaker>;

    fn handle(&mut self, _: GetBreaker, _: &mut Self::Context) -> Self::Result {
        let now = Instant::now();
        let state = self.breaker.state(now);
        self.metrics.breaker_state.set(breaker_gauge(state));
        MessageResult(match state {
            BreakerState::Closed => BreakerReport {
                state: "closed",
                probe_in: None,
            },
            BreakerState::Open { until } => BreakerReport {
                state: "open",
                probe_in: Some(until.saturating_duration_since(now)),
            },
            BreakerState::HalfOpen { .. } => BreakerReport {
                state: "half_open",
                probe_in: None,
            },
        })
    }
}

impl Handler<GetInFlight> for FetcherActor {
    type Result = usize;

    fn handle(&mut self, _: GetInFlight, _: &mut Self::Context) -> usize {
        self.flow.in_flight()
    }
}

impl Handler<GetFlow> for FetcherActor {
    type Result = MessageResult<GetFlow>;

    fn handle(&mut self, _: GetFlow, _: &mut Self::Context) -> Self::Result {
        let limits = self.flow.limits();
        let now = Instant::now();
        MessageResult(FlowReport {
            slots_in_use: self.flow.slots_in_use(),
            slots: limits.slots,
            buffered: self.flow.buffered(),
            buffer_capacity: limits.buffer,
            rate_limit: self.rules.rate_limit,
            rate: self.pace.rate,
            throttled_for: self
                .throttled_until
                .map(|until| until.saturating_duration_since(now))
                .filter(|left| !left.is_zero()),
            credentials_refused: self.refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_counts_as_up_from_its_first_answer_until_it_cannot_be_reached() {
        let unreachable = || -> Result<(), StoreError> {
            Err(StoreError::Database {
                action: "claiming due messages",
                source: sqlx::Error::PoolTimedOut,
            })
        };
        let refused = || -> Result<(), StoreError> {
            Err(StoreError::Database {
                action: "claiming due messages",
                source: sqlx::Error::RowNotFound,
            })
        };
        let span = Duration::from_millis(50);
        let mut up = StoreUptime::default();
        assert!(!up.at_least(Duration::ZERO, Instant::now()), "not before it answered");
        up.note(&Ok::<(), StoreError>(()));
        std::thread::sleep(span);
        assert!(up.at_least(span, Instant::now()));
        up.note(&refused());
        assert!(up.at_least(span, Instant::now()), "a statement refused is no outage");
        up.note(&unreachable());
        assert!(!up.at_least(Duration::ZERO, Instant::now()));
        up.note(&refused());
        assert!(
            !up.at_least(span, Instant::now()),
            "answering again starts the count again"
        );
    }
}
