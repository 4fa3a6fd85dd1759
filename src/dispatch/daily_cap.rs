//! `RECIPIENT_DAILY_LIMIT`: a number already sent that many messages in the last 24 hours gets no more
//! non-`high` ones until the oldest of them is a day old. Decided after the claim, in Rust, from one
//! read of what the batch's numbers were sent and are being sent (`MessageStore::sends_to_since`); a
//! deferred message goes back `pending`, its attempt not counted, due when it may go. Messages of the
//! same batch count too, as in flight (they may yet fail), so one claim cannot send a number past the
//! cap, and a message behind one that then fails waits seconds, not a day.
//!
//! Messages being sent under another claim count as sends: the read follows the batch's committed
//! claim, so of two claims racing for one number's last place (two replicas, or a batch claimed while
//! the previous one is in flight) at least one sees the other. One held only by messages in flight
//! waits seconds, not a day: those may yet fail or come back.

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::Priority,
    store::{MessageStore, StoreError},
};

/// The window the cap counts over.
const DAY: chrono::Duration = chrono::Duration::hours(24);

/// How long a message held only by messages in flight waits before it is looked at again, before
/// jitter (so two held by each other do not come back together).
const IN_FLIGHT_RECHECK: Duration = Duration::from_secs(2);

/// What each number of one batch was sent within the last day, and the cap.
#[derive(Debug)]
pub struct DailyCap {
    limit: usize,
    sends: HashMap<String, Sends>,
}

/// One number's sends that count.
#[derive(Debug, Default)]
struct Sends {
    /// Send times, oldest first.
    sent: Vec<DateTime<Utc>>,
    /// Being sent: under other claims, and this batch's admitted so far.
    in_flight: usize,
}

impl DailyCap {
    /// Reads what `numbers` were sent in the day before `now`, and are being sent under claims other
    /// than `claims` (the batch's own).
    pub async fn load(
        store: &dyn MessageStore,
        limit: NonZeroU32,
        numbers: &[&str],
        claims: &[Uuid],
        now: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let mut sends: HashMap<String, Sends> = HashMap::new();
        for send in store.sends_to_since(numbers, now - DAY, claims).await? {
            let entry = sends.entry(send.phone_number).or_default();
            match send.sent_at {
                Some(at) => entry.sent.push(at),
                None => entry.in_flight += 1,
            }
        }
        Ok(Self::new(limit, sends))
    }

    fn new(limit: NonZeroU32, sends: HashMap<String, Sends>) -> Self {
        Self {
            limit: usize::try_from(limit.get()).unwrap_or(usize::MAX),
            sends,
        }
    }

    /// Counts a message to `to` going now (in flight until it is sent); or, when the cap holds it, how
    /// long it must wait and why. `high` messages always go (and count).
    pub fn admit(&mut self, priority: Priority, to: &str, now: DateTime<Utc>) -> Option<(Duration, String)> {
        let sends = self.sends.entry(to.to_owned()).or_default();
        if priority != Priority::High && sends.sent.len() >= self.limit {
            // The cap frees a place when the send `limit` places from the end ages out of the day.
            let frees_at = sends.sent[sends.sent.len() - self.limit] + DAY;
            let wait = (frees_at - now).to_std().unwrap_or_default();
            return Some((
                wait,
                format!(
                    "deferred by RECIPIENT_DAILY_LIMIT ({} in 24 h) until {}",
                    self.limit,
                    frees_at.to_rfc3339()
                ),
            ));
        }
        if priority != Priority::High && sends.sent.len() + sends.in_flight >= self.limit {
            return Some((
                IN_FLIGHT_RECHECK.mul_f64(0.5 + rand::random::<f64>()),
                format!(
                    "deferred by RECIPIENT_DAILY_LIMIT ({} in 24 h): another message to this number is being sent",
                    self.limit
                ),
            ));
        }
        sends.in_flight += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_defers_all_but_high_until_the_oldest_send_is_a_day_old() {
        let now = Utc::now();
        let earlier = now - chrono::Duration::hours(20);
        let limit = NonZeroU32::new(2).unwrap();
        let sends = Sends {
            sent: vec![earlier],
            in_flight: 0,
        };
        let mut cap = DailyCap::new(limit, HashMap::from([("+905551111111".to_owned(), sends)]));

        assert!(
            cap.admit(Priority::Normal, "+905551111111", now).is_none(),
            "the second of the day"
        );
        let (wait, why) = cap.admit(Priority::Low, "+905551111111", now).expect("the third waits");
        assert!(
            wait <= IN_FLIGHT_RECHECK * 3 / 2,
            "behind the second, still in flight: {wait:?}"
        );
        assert!(why.contains("being sent"), "{why}");

        // The next claim reads the second as sent: now the third waits for the oldest to age out.
        let sends = Sends {
            sent: vec![earlier, now],
            in_flight: 0,
        };
        let mut cap = DailyCap::new(limit, HashMap::from([("+905551111111".to_owned(), sends)]));
        let (wait, why) = cap.admit(Priority::Low, "+905551111111", now).expect("the third waits");
        assert_eq!(
            wait.as_secs() / 60,
            4 * 60,
            "until the 20-hour-old send is a day old: {wait:?}"
        );
        assert!(why.contains("RECIPIENT_DAILY_LIMIT"), "{why}");
        assert!(
            cap.admit(Priority::High, "+905551111111", now).is_none(),
            "high always goes"
        );
        assert!(
            cap.admit(Priority::Normal, "+905552222222", now).is_none(),
            "another number"
        );
    }

    #[test]
    fn a_message_behind_one_of_its_own_batch_waits_seconds_not_a_day() {
        // Two to one number in one claim, a cap of one: the first may yet fail, and then the number
        // was sent nothing.
        let now = Utc::now();
        let mut cap = DailyCap::new(NonZeroU32::new(1).unwrap(), HashMap::new());

        assert!(cap.admit(Priority::Normal, "+905551111111", now).is_none());
        let (wait, why) = cap
            .admit(Priority::Normal, "+905551111111", now)
            .expect("the first takes the place");
        assert!(wait <= IN_FLIGHT_RECHECK * 3 / 2, "{wait:?}");
        assert!(why.contains("being sent"), "{why}");
    }

    #[test]
    fn a_message_held_only_by_one_in_flight_waits_seconds_not_a_day() {
        let now = Utc::now();
        let limit = NonZeroU32::new(1).unwrap();
        let sends = Sends {
            sent: Vec::new(),
            in_flight: 1,
        };
        let mut cap = DailyCap::new(limit, HashMap::from([("+905551111111".to_owned(), sends)]));

        let (wait, why) = cap
            .admit(Priority::Normal, "+905551111111", now)
            .expect("the one in flight takes the place");
        assert!(
            (IN_FLIGHT_RECHECK / 2..=IN_FLIGHT_RECHECK * 3 / 2).contains(&wait),
            "{wait:?}"
        );
        assert!(why.contains("being sent"), "{why}");
        assert!(
            cap.admit(Priority::High, "+905551111111", now).is_none(),
            "high always goes"
        );
    }
}
