//! Flow control of one instance, as plain state that `FetcherActor` drives (and tests drive directly).
//!
//! - A *send slot* is one POST in flight; `WEBHOOK_CONCURRENCY` of them. A slot is free the moment the
//!   provider's answer (or the timeout) is in; recording the answer happens behind, in the persister.
//! - The *run-ahead buffer* holds claimed, validated messages waiting for a slot, so that a free slot
//!   never waits for a tick or a claim's round trip. It holds one more round of slots at most, and a
//!   message that waited in it longer than `max_wait` is given back instead of posted, so that no claim is
//!   posted late in its lease.
//! - The *budget* is the brief's pace: each tick allows `BATCH_SIZE` more claims, and what a tick does not
//!   use does not carry over. A claim that finds fewer due messages than it asked for means the queue is
//!   drained: the next claim waits for the next tick (rows added meanwhile go out then).
//! - *Back-pressure*: answers handed to the persister and not yet recorded are counted; while too many
//!   wait (the database is slow or down), nothing more is claimed, so memory stays bounded.
//!
//! Every claim this instance holds is in one of four places: the claim under way, the buffer, a slot, or
//! the persister's queue; `in_flight` counts them all, and the claims only leave by being recorded.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::messages::Deliver;

/// The limits of one instance's flow.
#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    /// `WEBHOOK_CONCURRENCY`: POSTs in flight at once.
    pub slots: usize,
    /// Claimed messages waiting for a slot, at most.
    pub buffer: usize,
    /// A message that waited longer than this for a slot is given back (with a buffer; without one, a
    /// claim takes only free slots and nothing waits).
    pub max_wait: Duration,
    /// `BATCH_SIZE`: claims each tick allows.
    pub batch_size: u32,
    /// While this many answers wait to be recorded, nothing more is claimed.
    pub recording_behind: usize,
}

/// What to do with the next message out of the buffer.
#[derive(Debug)]
pub enum Next {
    /// POST it: a slot is now taken for it.
    Post(Deliver),
    /// It waited too long for a slot: give it back unsent.
    GiveBack(Deliver),
}

#[derive(Debug)]
pub struct Flow {
    limits: FlowLimits,
    buffer: VecDeque<(Deliver, Instant)>,
    posting: usize,
    unrecorded: usize,
    /// Claims that ended without a POST (given back, or found invalid) and are not yet recorded.
    ending_unsent: usize,
    claiming: bool,
    budget: u32,
    drained: bool,
}

impl Flow {
    pub fn new(limits: FlowLimits) -> Self {
        Self {
            limits,
            buffer: VecDeque::with_capacity(limits.buffer),
            posting: 0,
            unrecorded: 0,
            ending_unsent: 0,
            claiming: false,
            budget: 0,
            drained: false,
        }
    }

    pub fn limits(&self) -> FlowLimits {
        self.limits
    }

    /// A tick: the pace allows `BATCH_SIZE` claims again, and the queue is worth asking again.
    pub fn tick(&mut self) {
        self.budget = self.limits.batch_size;
        self.drained = false;
    }

    /// How many to claim now, if a claim should start: none while one runs, while the tick's budget is
    /// spent or its queue came back short, or while recording is behind; otherwise what the free slots
    /// and the buffer can take, once that is worth a round trip (half the buffer, or the whole budget).
    pub fn claim_size(&self) -> Option<u32> {
        if self.claiming || self.drained || self.budget == 0 || self.unrecorded >= self.limits.recording_behind {
            return None;
        }
        let room = (self.limits.slots - self.posting.min(self.limits.slots))
            + (self.limits.buffer - self.buffer.len().min(self.limits.buffer));
        let room = u32::try_from(room).unwrap_or(u32::MAX);
        let worth = (u32::try_from(self.limits.buffer / 2).unwrap_or(u32::MAX)).clamp(1, self.budget);
        (room >= worth).then_some(room.min(self.budget))
    }

    pub fn claim_started(&mut self) {
        self.claiming = true;
    }

    /// A claim asked for `asked` and got `claimed` rows (invalid ones included), of which `deliveries`
    /// are to be sent. `short_of_due` when it got fewer than asked because fewer were due (not because the
    /// cluster's pace allowed fewer): the queue is drained until the next tick.
    pub fn claim_ended(&mut self, asked: u32, claimed: usize, deliveries: Vec<Deliver>, now: Instant) {
        self.claiming = false;
        let claimed = u32::try_from(claimed).unwrap_or(u32::MAX);
        self.budget = self.budget.saturating_sub(claimed);
        self.drained |= claimed < asked;
        self.buffer
            .extend(deliveries.into_iter().map(|delivery| (delivery, now)));
    }

    /// The pace allowed fewer than asked: not a drained queue, so the budget stays for later.
    pub fn claim_held_back(&mut self, claimed: usize, deliveries: Vec<Deliver>, now: Instant) {
        self.claiming = false;
        self.budget = self.budget.saturating_sub(u32::try_from(claimed).unwrap_or(u32::MAX));
        self.buffer
            .extend(deliveries.into_iter().map(|delivery| (delivery, now)));
    }

    pub fn claim_failed(&mut self) {
        self.claiming = false;
    }

    /// The next message out of the buffer while a slot is free.
    pub fn next(&mut self, now: Instant) -> Option<Next> {
        if self.posting >= self.limits.slots {
            return None;
        }
        let (delivery, claimed_at) = self.buffer.pop_front()?;
        // Without run-ahead (no room for it in the lease) a claim only takes free slots: it never waits.
        if self.limits.buffer > 0 && now.saturating_duration_since(claimed_at) > self.limits.max_wait {
            return Some(Next::GiveBack(delivery));
        }
        self.posting += 1;
        Some(Next::Post(delivery))
    }

    /// Everything in the buffer, to be given back (sending stopped, or the provider asked for a pause
    /// longer than a message may wait).
    pub fn take_buffer(&mut self) -> Vec<Deliver> {
        self.buffer.drain(..).map(|(delivery, _)| delivery).collect()
    }

    /// Claims that end without a POST are on their way to the persister.
    pub fn ending_unsent(&mut self, count: usize) {
        self.ending_unsent += count;
    }

    /// A message `next` handed out to post is not posted after all (it expired while it waited): its slot
    /// is free again, with no answer to record.
    pub fn post_withdrawn(&mut self) {
        self.posting = self.posting.saturating_sub(1);
    }

    /// A POST's answer is in: its slot is free, and the answer waits to be recorded.
    pub fn answered(&mut self) {
        self.posting = self.posting.saturating_sub(1);
        self.unrecorded += 1;
    }

    /// The persister recorded these many answers and these many claims ended unsent.
    pub fn recorded(&mut self, answers: usize, unsent: usize) {
        self.unrecorded = self.unrecorded.saturating_sub(answers);
        self.ending_unsent = self.ending_unsent.saturating_sub(unsent);
    }

    /// Claims this instance holds that are not yet recorded (a claim under way counts as one).
    pub fn in_flight(&self) -> usize {
        self.buffer.len() + self.posting + self.unrecorded + self.ending_unsent + usize::from(self.claiming)
    }

    pub fn slots_in_use(&self) -> usize {
        self.posting
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_claiming(&self) -> bool {
        self.claiming
    }
}

/// Answers the provider gave this instance over the last second, in tenths of a second: what a 429's rate
/// cut starts from when no rate is in force. The database's count of messages sent lags by the flushes
/// not yet committed, and right after a burst that is all of them: the cut then started from nothing.
#[derive(Debug)]
pub struct RecentAnswers {
    origin: Instant,
    /// Answers per tenth of a second, the latest at `latest % 10`.
    tenths: [u32; 10],
    latest: u64,
}

impl RecentAnswers {
    pub fn new(now: Instant) -> Self {
        Self {
            origin: now,
            tenths: [0; 10],
            latest: 0,
        }
    }

    pub fn record(&mut self, now: Instant) {
        let tenth = self.advance(now);
        self.tenths[tenth] = self.tenths[tenth].saturating_add(1);
    }

    pub fn last_second(&mut self, now: Instant) -> u32 {
        self.advance(now);
        self.tenths.iter().fold(0, |sum, count| sum.saturating_add(*count))
    }

    /// Empties the tenths that went by since the latest; returns the slot of `now`'s.
    fn advance(&mut self, now: Instant) -> usize {
        let tenth = u64::try_from(now.saturating_duration_since(self.origin).as_millis() / 100).unwrap_or(u64::MAX);
        if tenth > self.latest {
            for gone in (self.latest + 1)..=tenth.min(self.latest + 10) {
                self.tenths[(gone % 10) as usize] = 0;
            }
            self.latest = tenth;
        }
        (self.latest % 10) as usize
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::{
        domain::{MessageContent, PhoneNumber},
        store::Claim,
    };

    fn limits(slots: usize, buffer: usize, batch_size: u32) -> FlowLimits {
        FlowLimits {
            slots,
            buffer,
            max_wait: Duration::from_secs(5),
            batch_size,
            recording_behind: 10,
        }
    }

    fn deliveries(n: usize) -> Vec<Deliver> {
        (0..n)
            .map(|_| Deliver {
                expires_at: None,
                claim: Claim {
                    message_id: Uuid::new_v4(),
                    token: Uuid::new_v4(),
                    attempt: 1,
                },
                to: PhoneNumber::parse("+905551111111").unwrap(),
                content: MessageContent::parse("hi", 160).unwrap(),
            })
            .collect()
    }

    fn post_all(flow: &mut Flow, now: Instant) -> usize {
        let mut posted = 0;
        while let Some(next) = flow.next(now) {
            assert!(matches!(next, Next::Post(_)));
            posted += 1;
        }
        posted
    }

    #[test]
    fn the_briefs_pace_claims_batch_size_per_tick_and_no_more() {
        let now = Instant::now();
        let mut flow = Flow::new(limits(2, 2, 2));
        assert_eq!(flow.claim_size(), None, "nothing before the first tick");
        flow.tick();
        assert_eq!(flow.claim_size(), Some(2));
        flow.claim_started();
        assert_eq!(flow.claim_size(), None, "one claim at a time");
        flow.claim_ended(2, 2, deliveries(2), now);
        assert_eq!(post_all(&mut flow, now), 2);
        flow.answered();
        flow.answered();
        assert_eq!(
            flow.claim_size(),
            None,
            "the tick's budget is spent, though the slots are free"
        );
        flow.tick();
        assert_eq!(flow.claim_size(), Some(2));
    }

    #[test]
    fn a_free_slot_is_fed_from_the_buffer_and_the_buffer_refilled_within_the_budget() {
        let now = Instant::now();
        let mut flow = Flow::new(limits(4, 4, 500));
        flow.tick();
        assert_eq!(flow.claim_size(), Some(8), "the slots and the buffer");
        flow.claim_started();
        flow.claim_ended(8, 8, deliveries(8), now);
        assert_eq!(post_all(&mut flow, now), 4);
        assert_eq!((flow.slots_in_use(), flow.buffered()), (4, 4));
        assert_eq!(flow.claim_size(), None, "no room");
        flow.answered();
        assert_eq!(post_all(&mut flow, now), 1, "the freed slot at once, no claim needed");
        assert_eq!(flow.claim_size(), None, "one free place is not worth a round trip");
        flow.answered();
        post_all(&mut flow, now);
        assert_eq!(flow.claim_size(), Some(2));
        assert_eq!(flow.in_flight(), 2 + 4 + 2, "buffered, posting, unrecorded");
        flow.recorded(2, 0);
        assert_eq!(flow.in_flight(), 6);
    }

    #[test]
    fn a_short_claim_waits_for_the_next_tick_but_a_paced_one_does_not() {
        let now = Instant::now();
        let mut flow = Flow::new(limits(4, 4, 500));
        flow.tick();
        flow.claim_started();
        flow.claim_ended(8, 3, deliveries(3), now);
        post_all(&mut flow, now);
        assert_eq!(flow.claim_size(), None, "the queue is drained for this tick");
        flow.tick();
        flow.claim_started();
        flow.claim_held_back(1, deliveries(1), now);
        assert!(
            flow.claim_size().is_some(),
            "the pace held it back; the queue may have more"
        );
    }

    #[test]
    fn recording_behind_stops_claiming() {
        let now = Instant::now();
        let mut flow = Flow::new(limits(20, 0, 500));
        flow.tick();
        flow.claim_started();
        flow.claim_ended(20, 20, deliveries(20), now);
        post_all(&mut flow, now);
        for _ in 0..10 {
            flow.answered();
        }
        assert_eq!(flow.claim_size(), None, "ten answers wait to be recorded");
        flow.recorded(1, 0);
        assert_eq!(flow.claim_size(), Some(10));
    }

    #[test]
    fn a_message_that_waited_too_long_is_given_back_not_posted() {
        let now = Instant::now();
        let mut flow = Flow::new(limits(1, 4, 500));
        flow.tick();
        flow.claim_started();
        flow.claim_ended(5, 2, deliveries(2), now);
        assert!(matches!(flow.next(now), Some(Next::Post(_))));
        assert!(flow.next(now).is_none(), "the one slot is taken");
        flow.answered();
        let later = now + Duration::from_secs(6);
        assert!(matches!(flow.next(later), Some(Next::GiveBack(_))));
        flow.ending_unsent(1);
        assert_eq!(flow.in_flight(), 2, "one answer and one give-back to record");
        flow.recorded(1, 1);
        assert_eq!(flow.in_flight(), 0);
    }

    #[test]
    fn recent_answers_count_the_last_second_and_forget_older_ones() {
        let start = Instant::now();
        let mut recent = RecentAnswers::new(start);
        for i in 0..10 {
            recent.record(start + Duration::from_millis(i * 50));
        }
        assert_eq!(recent.last_second(start + Duration::from_millis(500)), 10);
        // 1.25 s in: the answers of the first 300 ms (six of them) are over a second old.
        assert_eq!(recent.last_second(start + Duration::from_millis(1_250)), 4);
        assert_eq!(recent.last_second(start + Duration::from_secs(5)), 0);
        recent.record(start + Duration::from_secs(5));
        assert_eq!(recent.last_second(start + Duration::from_secs(5)), 1);
    }
}
