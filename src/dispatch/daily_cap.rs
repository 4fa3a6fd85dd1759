//! `RECIPIENT_DAILY_LIMIT`: a number already sent that many messages in the last 24 hours gets no more
//! non-`high` ones until the oldest of them is a day old. Decided after the claim, in Rust, from one
//! read of what the batch's numbers were sent (`MessageStore::sent_to_since`); a deferred message goes
//! back `pending`, its attempt not counted, due when it may go. Messages of the same batch count too, so
//! one claim cannot send a number past the cap.

use std::{collections::HashMap, num::NonZeroU32, time::Duration};

use chrono::{DateTime, Utc};

use crate::{
    domain::Priority,
    store::{MessageStore, StoreError},
};

/// The window the cap counts over.
const DAY: chrono::Duration = chrono::Duration::hours(24);

/// What each number of one batch was sent within the last day, and the cap.
#[derive(Debug)]
pub struct DailyCap {
    limit: usize,
    /// Send times per number, oldest first, those of this batch included as they are admitted.
    sent: HashMap<String, Vec<DateTime<Utc>>>,
}

impl DailyCap {
    /// Reads what `numbers` were sent in the day before `now`.
    pub async fn load(
        store: &dyn MessageStore,
        limit: NonZeroU32,
        numbers: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        let mut sent: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for (number, at) in store.sent_to_since(numbers, now - DAY).await? {
            sent.entry(number).or_default().push(at);
        }
        Ok(Self::new(limit, sent))
    }

    fn new(limit: NonZeroU32, sent: HashMap<String, Vec<DateTime<Utc>>>) -> Self {
        Self {
            limit: usize::try_from(limit.get()).unwrap_or(usize::MAX),
            sent,
        }
    }

    /// Counts a message to `to` going at `now`; or, when the cap holds it, how long it must wait and why.
    /// `high` messages always go (and count).
    pub fn admit(&mut self, priority: Priority, to: &str, now: DateTime<Utc>) -> Option<(Duration, String)> {
        let sent = self.sent.entry(to.to_owned()).or_default();
        if priority != Priority::High && sent.len() >= self.limit {
            // The cap frees a place when the send `limit` places from the end ages out of the day.
            let frees_at = sent[sent.len() - self.limit] + DAY;
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
        sent.push(now);
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
        let mut cap = DailyCap::new(limit, HashMap::from([("+905551111111".to_owned(), vec![earlier])]));

        assert!(
            cap.admit(Priority::Normal, "+905551111111", now).is_none(),
            "the second of the day"
        );
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
}
