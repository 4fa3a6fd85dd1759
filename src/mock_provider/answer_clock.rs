//! When the stand-in answers: `--latency` after the request arrived, to a tenth of a millisecond.
//!
//! The async runtime's timer counts whole milliseconds and rounds every deadline up, so a 20 ms sleep
//! answered after 21 to 22 ms (21.6 to 21.7 ms median of 400 requests, idle machine): a scenario
//! of "a provider that takes 20 ms" measured a provider that took 8% longer. One thread of the stand-in
//! keeps the due answers in order and wakes each from a precise sleep of the OS instead.

use std::{
    collections::BTreeMap,
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::Instant,
};

use anyhow::Context as _;
use tokio::sync::oneshot;

type Due = (Instant, oneshot::Sender<()>);

/// The answers waiting for their moment, and the thread that releases them.
pub struct AnswerClock {
    due: mpsc::Sender<Due>,
}

impl AnswerClock {
    pub fn start() -> anyhow::Result<Self> {
        let (due, waiting) = mpsc::channel();
        thread::Builder::new()
            .name("stand-in-answers".into())
            .spawn(move || release_when_due(&waiting))
            .context("starting the stand-in provider's answer clock")?;
        Ok(Self { due })
    }

    /// Returns at `deadline` (within the OS's timer slack, never before it).
    pub async fn until(&self, deadline: Instant) {
        let (done, wait) = oneshot::channel();
        let queued = self.due.send((deadline, done)).is_ok();
        if !queued || wait.await.is_err() {
            // The clock's thread is gone: the runtime's coarser timer still keeps the answer back.
            actix_rt::time::sleep_until(deadline.into()).await;
        }
    }
}

fn release_when_due(waiting: &mpsc::Receiver<Due>) {
    // Keyed by a sequence number too: two answers can be due at the same instant.
    let mut due: BTreeMap<(Instant, u64), oneshot::Sender<()>> = BTreeMap::new();
    let mut sequence = 0_u64;
    loop {
        let now = Instant::now();
        while let Some(first) = due.first_entry() {
            if first.key().0 > now {
                break;
            }
            // A request whose client went away dropped its receiver: nothing to wake.
            let _ = first.remove().send(());
        }
        let next = match due.first_key_value() {
            Some(((at, _), _)) => waiting.recv_timeout(at.saturating_duration_since(now)),
            None => waiting.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((at, done)) => {
                due.insert((at, sequence), done);
                sequence += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[actix_rt::test]
    async fn answers_are_released_in_deadline_order_and_never_early() {
        let clock = std::sync::Arc::new(AnswerClock::start().unwrap());
        let start = Instant::now();
        let (woke, mut order) = tokio::sync::mpsc::unbounded_channel();
        // Queued latest first: the clock must not release them in the order they came.
        for millis in [30_u64, 20, 10, 0] {
            let clock = std::sync::Arc::clone(&clock);
            let woke = woke.clone();
            let deadline = start + Duration::from_millis(millis);
            actix_rt::spawn(async move {
                clock.until(deadline).await;
                woke.send((millis, Instant::now() >= deadline)).unwrap();
            });
        }
        drop(woke);
        let mut released = Vec::new();
        while let Some(answer) = order.recv().await {
            released.push(answer);
        }
        assert_eq!(released, vec![(0, true), (10, true), (20, true), (30, true)]);
    }

    #[actix_rt::test]
    async fn answers_closer_to_their_deadline_than_the_runtime_timer_does() {
        let clock = AnswerClock::start().unwrap();
        let wait = Duration::from_millis(5);
        let (mut ours, mut runtime) = (Vec::new(), Vec::new());
        // Interleaved, so a busy machine slows both alike.
        for _ in 0..15 {
            let deadline = Instant::now() + wait;
            clock.until(deadline).await;
            ours.push(Instant::now() - deadline);
            let deadline = Instant::now() + wait;
            actix_rt::time::sleep_until(deadline.into()).await;
            runtime.push(Instant::now() - deadline);
        }
        ours.sort();
        runtime.sort();
        // The runtime's timer rounds a deadline up to its next millisecond tick and then some (1.2 ms
        // late at the median where this was written); the clock is late by the OS's wake-up, about 0.2 ms.
        assert!(
            ours[7] + Duration::from_micros(400) < runtime[7],
            "median late by {:?}, the runtime's timer by {:?}",
            ours[7],
            runtime[7]
        );
    }
}
