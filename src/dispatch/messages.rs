//! Every message the dispatch actors exchange, with who sends it and why.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};

use crate::{
    domain::{MessageContent, PhoneNumber},
    provider::Outcome,
    store::Claim,
};

/// Scheduler → fetcher, once per `INTERVAL` while running (and `Pipeline::tick_now`, to run one tick
/// at once): rescue expired leases, then claim what the free send slots can take and hand it out.
#[derive(Debug, Message)]
#[rtype(result = "TickReport")]
pub struct Tick {
    pub source: TickSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickSource {
    /// The scheduler's timer: skipped while claims are paused.
    Scheduler,
    /// Asked for explicitly (tests, operators): runs even while the scheduler is stopped.
    Manual,
}

/// Scheduler → fetcher, when sending stops: claim nothing more, and give back unsent what a tick
/// already under way claims. Sent before the stop is acknowledged, so no POST follows a stop.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PauseClaims;

/// Scheduler → fetcher, when sending starts (before its first tick).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ResumeClaims;

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub rescued: usize,
    pub claimed: usize,
    pub invalid: usize,
    /// Set when the tick claimed nothing on purpose or could not.
    pub skipped: Option<TickSkipped>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickSkipped {
    /// The previous tick's claim has not returned yet: ticks never pile up.
    ClaimInProgress,
    /// Every send slot is taken: claiming more would only age leases in memory.
    NoFreeSlot,
    /// The database failed; logged and counted.
    StoreError,
    /// Sending is stopped; a scheduled tick that was already queued does nothing.
    Paused,
    /// The circuit breaker is open (or its probe is out): the provider looks down.
    BreakerOpen,
}

/// Fetcher → one webhook actor: POST this claimed, validated message to the provider.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub claim: Claim,
    pub to: PhoneNumber,
    pub content: MessageContent,
}

/// Webhook actor → persister: the provider's answer to one `Deliver`, to be recorded under its claim.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DeliveryFinished {
    pub claim: Claim,
    pub outcome: Outcome,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
}

/// Persister → fetcher, once per flush: these claims' results are recorded (or their claims were lost),
/// so their send slots are free again. One entry per slot, oldest first: whether the provider failed
/// that send (5xx, 429, timeout), which feeds the circuit breaker.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SlotsFreed {
    pub provider_failed: Vec<bool>,
}

/// API → fetcher: how the circuit breaker stands.
#[derive(Debug, Message)]
#[rtype(result = "BreakerReport")]
pub struct GetBreaker;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerReport {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// While open: how long until a probe may go.
    pub probe_in: Option<Duration>,
}

/// API or start-up → scheduler: tick now, then every `INTERVAL`. Idempotent.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct StartSending;

/// API or shutdown → scheduler: claim nothing more; sends in flight finish and are recorded. Idempotent.
/// With `for_good` (shutdown), later `StartSending`s are refused.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct StopSending {
    pub for_good: bool,
}

/// API → scheduler: how it stands.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct GetSchedulerState;

/// API or shutdown → fetcher: how many claimed messages are not yet recorded.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct GetInFlight;

/// How the scheduler stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerState {
    pub running: bool,
    pub interval: Duration,
    pub batch_size: u32,
    pub last_tick_at: Option<DateTime<Utc>>,
    /// `None` while stopped.
    pub next_tick_at: Option<DateTime<Utc>>,
}
