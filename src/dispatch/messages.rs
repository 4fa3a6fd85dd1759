//! Every message the dispatch actors exchange, with who sends it and why.

use std::time::Duration;

use actix::Message;
use chrono::{DateTime, Utc};

use super::verdict::{SendSignal, Verdict};
use crate::{
    domain::{Attempt, MessageContent, PhoneNumber},
    store::{Claim, Finish},
};

/// Scheduler → fetcher, once per `INTERVAL` while running (and `Pipeline::tick_now`, to run one tick
/// at once): the pace allows `BATCH_SIZE` more claims; rescue expired leases (at most once a second on
/// the scheduler's ticks), then claim what the free send slots and the run-ahead buffer can take.
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

/// Scheduler → fetcher, when sending stops: claim nothing more, and give back unsent what waits in the
/// run-ahead buffer and what a claim already under way brings. Sent before the stop is acknowledged, so
/// no POST follows a stop.
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
    /// The send slots and the run-ahead buffer are full, or recording is behind: claiming more would
    /// only age leases in memory.
    NoFreeSlot,
    /// The database failed; logged and counted.
    StoreError,
    /// Sending is stopped; a scheduled tick that was already queued does nothing.
    Paused,
    /// The circuit breaker is open (or its probe is out): the provider looks down.
    BreakerOpen,
    /// The provider throttled the cluster (429): every replica's claims pause.
    Throttled,
    /// The provider refused our credentials: this instance sends nothing until started again.
    CredentialsRefused,
}

/// Fetcher → one webhook actor: POST this claimed, validated message to the provider.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub claim: Claim,
    pub to: PhoneNumber,
    pub content: MessageContent,
    /// Not to be posted after this (`expires_at`): one that waited past it for a slot is given back,
    /// and the next claim expires it.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Webhook actor → persister: the provider's answer to one `Deliver`, judged on arrival, to be recorded
/// under its claim with its history entry.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Answered {
    pub claim: Claim,
    pub verdict: Verdict,
    pub attempt: Attempt,
}

/// Webhook actor → fetcher, as the answer (or the timeout) arrives: the send's slot is free, and what the
/// send says about the provider.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SendEnded {
    pub claim: Claim,
    pub signal: SendSignal,
}

/// Fetcher → persister: claims that end without a POST, to be recorded like answers: given back unsent
/// (`NextState::PutBack`), or failed for what the row holds.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndedUnsent {
    pub finishes: Vec<Finish>,
}

/// Persister → fetcher, once per flush: these claims are recorded (or their claims were lost), and no
/// longer this instance's to hold: `answers` came from `Answered`, `unsent` from `EndedUnsent`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Recorded {
    pub answers: Vec<Claim>,
    pub unsent: Vec<Claim>,
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

/// API or control actor → scheduler: tick now, then every `INTERVAL`. Idempotent; refused after a
/// `ShutDown`, and when a heartbeat's, if an operator's came since the heartbeat read the scheduler.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct StartSending(pub Asker);

/// API or control actor → scheduler: claim nothing more; sends in flight finish and are recorded. A later
/// `StartSending` starts again. Idempotent; refused as `StartSending` is.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct StopSending(pub Asker);

/// Who starts or stops the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// `POST /scheduler/start|stop` on this instance: always followed.
    Operator,
    /// The control actor, following the cluster's switch as a heartbeat read it, after reading the
    /// scheduler's state (`SchedulerState::operator_commands`): not followed when an operator's command
    /// came in between, which the switch it read may predate. The next heartbeat reads both again.
    Heartbeat { operator_commands_seen: u64 },
}

/// Shutdown (`Pipeline::drain`) → scheduler: stop as `StopSending` does, for the rest of this process:
/// a later `StartSending` (the cluster's switch still on, seen by the control actor) is refused.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct ShutDown;

/// Shutdown (`Pipeline::drain`, first thing) → control actor: go on beating, so that no other replica
/// takes this one's claims for a dead instance's while they are recorded, but no longer start or stop
/// the scheduler by the cluster's switch (it would start the scheduler the drain just shut down).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Draining;

/// Shutdown (`Pipeline::drain`, once the sends are recorded) → control actor: beat no more, and take this
/// instance off the replica list once the heartbeat under way (if any) is written; answered then (a
/// heartbeat written after would put it back).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Leave;

/// Shutdown (`Pipeline::drain`, once the sends are recorded) → status dispatcher: claim no more events
/// and start no more POSTs; the events it holds unPOSTed go back due at once, for another instance (or
/// this one's restart) instead of after their lease. Answers whether it is still busy (POSTs under way,
/// or their recording, or a put-back); sent again until it is not.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct StopDelivering;

/// API or control actor → scheduler: how it stands.
#[derive(Debug, Message)]
#[rtype(result = "SchedulerState")]
pub struct GetSchedulerState;

/// API, control actor or shutdown → fetcher: how many claimed messages are not yet recorded.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct GetInFlight;

/// API → fetcher: the flow control of this instance.
#[derive(Debug, Message)]
#[rtype(result = "FlowReport")]
pub struct GetFlow;

/// The flow control of one instance, as `GET /scheduler` and the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowReport {
    /// POSTs in flight, and `WEBHOOK_CONCURRENCY`.
    pub slots_in_use: usize,
    pub slots: usize,
    /// Claimed messages waiting for a slot, and how many may.
    pub buffered: usize,
    pub buffer_capacity: usize,
    /// `RATE_LIMIT`, messages a second.
    pub rate_limit: Option<f64>,
    /// The rate in force as the last claim found it: `RATE_LIMIT`, or lower after a provider's 429.
    pub rate: Option<f64>,
    /// The provider's 429 pauses claiming (every replica's) for this long still.
    pub throttled_for: Option<Duration>,
    /// The provider refused our credentials (its status, and since when): this instance sends nothing.
    pub credentials_refused: Option<(u16, DateTime<Utc>)>,
}

/// How the scheduler stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerState {
    pub running: bool,
    pub interval: Duration,
    pub batch_size: u32,
    pub last_tick_at: Option<DateTime<Utc>>,
    /// `None` while stopped.
    pub next_tick_at: Option<DateTime<Utc>>,
    /// The operators' starts and stops followed so far (see `Asker::Heartbeat`).
    pub operator_commands: u64,
}

/// Receipt writer → receipt applier: these receipts were just stored (`POST /receipts`); apply them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiptsStored {
    pub seqs: Vec<i64>,
}

/// Persister → receipt applier, after each flush that recorded messages sent: their provider ids, whose
/// receipts may have arrived first and wait pending.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MessagesSent {
    pub provider_message_ids: Vec<String>,
}
