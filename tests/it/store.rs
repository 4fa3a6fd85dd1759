//! The store's contract: claim order, fencing, lease rescue, no double claim, sent-list pages.
//! Each body speaks only through `MessageStore`, and `contract!` runs every one of them against each
//! backend: `store::postgres::<name>` and `store::sqlite::<name>`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{SubsecRound, Utc};
use futures_util::future::join_all;
use insider_messaging::{
    domain::{Attempt, MessageContent, MessageStatus, NewMessage, PhoneNumber, ProviderMessageId},
    store::{Claim, MessageStore, PageCursor, Transition},
};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);

macro_rules! contract {
    ($($test:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let database = crate::helpers::TestDatabase::create().await;
                    super::$test(std::sync::Arc::clone(&database.store)).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let database = crate::helpers::TestDatabase::sqlite().await;
                    super::$test(std::sync::Arc::clone(&database.store)).await;
                }
            )*
        }
    };
}

contract!(
    claims_take_due_messages_oldest_first_up_to_the_limit,
    a_message_waiting_for_a_retry_is_not_claimed_before_it_is_due,
    transitions_out_of_sending_only_succeed_under_the_claim_that_holds_the_row,
    an_acceptance_is_recorded_even_after_the_claim_was_lost_and_final_states_stay_final,
    an_expired_lease_is_rescued_and_the_old_claim_can_no_longer_write,
    a_released_claim_is_due_again_without_spending_an_attempt,
    concurrent_claimers_never_share_a_message,
    sent_pages_are_stable_when_many_messages_share_a_sent_at,
    dead_letters_page_newest_failure_first_and_activity_counts_per_minute,
    operators_retry_only_failed_and_cancel_only_pending_messages,
    attempts_are_recorded_once_per_claim_oldest_first,
);

async fn enqueue(store: &dyn MessageStore, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let message = NewMessage {
            to: PhoneNumber::parse(&format!("+9055511{i:05}")).unwrap(),
            content: MessageContent::parse(&format!("message {i}"), 160).unwrap(),
        };
        ids.push(store.insert(&message).await.unwrap().id);
    }
    ids
}

fn provider_id() -> ProviderMessageId {
    ProviderMessageId::parse(&Uuid::new_v4().to_string()).unwrap()
}

async fn claims_take_due_messages_oldest_first_up_to_the_limit(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 5).await;

    let first = store.claim_due(2, "a", LEASE).await.unwrap();
    let second = store.claim_due(2, "a", LEASE).await.unwrap();

    let claimed: Vec<Uuid> = first.iter().chain(&second).map(|m| m.claim.message_id).collect();
    assert_eq!(claimed, ids[..4]);
    assert!(first.iter().all(|m| m.claim.attempt == 1));
    for id in &ids[..4] {
        assert_eq!(store.get(*id).await.unwrap().unwrap().status, MessageStatus::Sending);
    }
    assert_eq!(store.queue_stats().await.unwrap().pending, 1);
}

async fn a_message_waiting_for_a_retry_is_not_claimed_before_it_is_due(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 1).await;
    let claim = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;

    assert!(
        store
            .retry_later_if_claimed(&claim, Duration::from_secs(60), "503")
            .await
            .unwrap()
    );

    assert!(store.claim_due(10, "a", LEASE).await.unwrap().is_empty());
    let message = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Pending);
    assert_eq!(message.last_error.as_deref(), Some("503"));
}

async fn transitions_out_of_sending_only_succeed_under_the_claim_that_holds_the_row(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 2).await;
    let claims = store.claim_due(2, "a", LEASE).await.unwrap();
    let (claim, other) = (claims[0].claim, claims[1].claim);
    let forged = Claim {
        token: Uuid::new_v4(),
        ..claim
    };

    assert!(!store.mark_failed_if_claimed(&forged, "x").await.unwrap());
    assert!(!store.retry_later_if_claimed(&forged, LEASE, "x").await.unwrap());
    assert!(!store.release_if_claimed(&forged).await.unwrap());
    assert_eq!(
        store.get(claim.message_id).await.unwrap().unwrap().status,
        MessageStatus::Sending
    );

    assert!(store.mark_failed_if_claimed(&claim, "400").await.unwrap());
    assert!(
        !store.mark_failed_if_claimed(&claim, "400 again").await.unwrap(),
        "reported once"
    );
    assert!(store.retry_later_if_claimed(&other, LEASE, "503").await.unwrap());
    assert!(
        !store.release_if_claimed(&other).await.unwrap(),
        "the claim ended with the retry"
    );
}

async fn an_acceptance_is_recorded_even_after_the_claim_was_lost_and_final_states_stay_final(
    store: Arc<dyn MessageStore>,
) {
    enqueue(store.as_ref(), 2).await;
    let old = store.claim_due(1, "slow", Duration::from_millis(50)).await.unwrap()[0].claim;
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.rescue_expired_leases().await.unwrap();
    let new = store.claim_due(1, "b", LEASE).await.unwrap()[0].claim;
    assert_eq!(new.message_id, old.message_id);
    let now = Utc::now().trunc_subsecs(6);

    // The provider accepted the old claim's POST: that wins, and the new claim's results are fenced off.
    assert!(
        store
            .mark_sent_unless_final(&old, Some(&provider_id()), now)
            .await
            .unwrap()
    );
    assert!(!store.retry_later_if_claimed(&new, LEASE, "late 503").await.unwrap());
    assert!(!store.mark_failed_if_claimed(&new, "late 400").await.unwrap());
    assert!(
        !store.mark_sent_unless_final(&new, None, Utc::now()).await.unwrap(),
        "recorded once"
    );
    let message = store.get(old.message_id).await.unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Sent);
    assert_eq!(message.sent_at, Some(now));
    assert!(message.provider_message_id.is_some());

    // A failed message is final too.
    let failed = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    assert!(store.mark_failed_if_claimed(&failed, "400").await.unwrap());
    assert!(!store.mark_sent_unless_final(&failed, None, Utc::now()).await.unwrap());
    assert_eq!(
        store.get(failed.message_id).await.unwrap().unwrap().status,
        MessageStatus::Failed
    );
}

async fn a_released_claim_is_due_again_without_spending_an_attempt(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 1).await;
    let claim = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;

    assert!(store.release_if_claimed(&claim).await.unwrap());

    let message = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((message.status, message.attempts), (MessageStatus::Pending, 0));
    let again = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    assert_eq!((again.message_id, again.attempt), (ids[0], 1));
}

async fn an_expired_lease_is_rescued_and_the_old_claim_can_no_longer_write(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 2).await;
    let old = store.claim_due(1, "dead", Duration::from_millis(50)).await.unwrap()[0].claim;
    let live = store.claim_due(1, "alive", LEASE).await.unwrap()[0].claim;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let rescued = store.rescue_expired_leases().await.unwrap();

    assert_eq!(rescued, vec![ids[0]], "only the expired lease");
    let new = store.claim_due(1, "b", LEASE).await.unwrap()[0].claim;
    assert_eq!(new.message_id, old.message_id);
    assert_eq!(new.attempt, 2);
    assert_ne!(new.token, old.token);
    assert!(
        !store.retry_later_if_claimed(&old, LEASE, "late").await.unwrap(),
        "the old claim is fenced off"
    );
    assert!(
        !store.mark_failed_if_claimed(&old, "late").await.unwrap(),
        "the old claim is fenced off"
    );
    assert!(store.mark_sent_unless_final(&new, None, Utc::now()).await.unwrap());
    assert!(store.mark_sent_unless_final(&live, None, Utc::now()).await.unwrap());
}

async fn concurrent_claimers_never_share_a_message(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 200).await;

    let claimers = (0..8).map(|i| {
        let store = Arc::clone(&store);
        async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_due(7, &format!("claimer-{i}"), LEASE).await.unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|m| m.claim.message_id));
            }
        }
    });
    let claimed: Vec<Uuid> = join_all(claimers).await.into_iter().flatten().collect();

    let distinct: HashSet<Uuid> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 200, "every message claimed exactly once");
    assert_eq!(distinct, ids.into_iter().collect());
}

async fn sent_pages_are_stable_when_many_messages_share_a_sent_at(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 10).await;
    let same_time = Utc::now().trunc_subsecs(6);
    for message in store.claim_due(10, "a", LEASE).await.unwrap() {
        assert!(
            store
                .mark_sent_unless_final(&message.claim, None, same_time)
                .await
                .unwrap()
        );
    }

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_by_status(MessageStatus::Sent, 3, cursor).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        cursor = Some(PageCursor {
            at: last.sent_at.unwrap(),
            id: last.id,
        });
        seen.extend(page.into_iter().map(|m| m.id));
    }

    assert_eq!(seen.len(), 10);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10, "no message twice");
    let mut expected = seen.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, expected, "ties on sent_at are broken by id, newest first");
}

async fn dead_letters_page_newest_failure_first_and_activity_counts_per_minute(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 5).await;
    let since = Utc::now() - chrono::Duration::minutes(1);
    let claims: Vec<Claim> = store
        .claim_due(5, "a", LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.claim)
        .collect();
    let mut failed = Vec::new();
    for claim in &claims[..3] {
        assert!(store.mark_failed_if_claimed(claim, "400").await.unwrap());
        failed.push(claim.message_id);
        tokio::time::sleep(Duration::from_millis(5)).await; // distinct failure times
    }
    for claim in &claims[3..] {
        assert!(store.mark_sent_unless_final(claim, None, Utc::now()).await.unwrap());
    }

    let first = store.list_by_status(MessageStatus::Failed, 2, None).await.unwrap();
    let last = first.last().unwrap();
    let rest = store
        .list_by_status(
            MessageStatus::Failed,
            2,
            Some(PageCursor {
                at: last.updated_at,
                id: last.id,
            }),
        )
        .await
        .unwrap();
    let listed: Vec<Uuid> = first.iter().chain(&rest).map(|m| m.id).collect();
    failed.reverse();
    assert_eq!(listed, failed, "most recent failure first, across pages");
    assert!(first.iter().all(|m| m.last_error.as_deref() == Some("400")));

    let activity = store.activity_since(since).await.unwrap();
    let sent: u64 = activity.iter().map(|m| m.sent).sum();
    let failed: u64 = activity.iter().map(|m| m.failed).sum();
    assert_eq!((sent, failed), (2, 3));
    assert!(activity.iter().all(|m| m.minute.timestamp() % 60 == 0), "whole minutes");
    assert!(
        store
            .activity_since(Utc::now() + chrono::Duration::minutes(1))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn operators_retry_only_failed_and_cancel_only_pending_messages(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 3).await;
    let claim = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    assert!(store.mark_failed_if_claimed(&claim, "400").await.unwrap());

    let Transition::Changed(retried) = store.retry_if_failed(ids[0]).await.unwrap() else {
        panic!("not retried")
    };
    assert_eq!((retried.status, retried.attempts), (MessageStatus::Pending, 0));
    assert_eq!(
        store.retry_if_failed(ids[0]).await.unwrap(),
        Transition::Refused(MessageStatus::Pending)
    );
    assert_eq!(
        store.retry_if_failed(Uuid::new_v4()).await.unwrap(),
        Transition::Missing
    );

    let Transition::Changed(cancelled) = store.cancel_if_pending(ids[1]).await.unwrap() else {
        panic!("not cancelled")
    };
    assert_eq!(cancelled.status, MessageStatus::Cancelled);
    assert_eq!(
        store.cancel_if_pending(ids[1]).await.unwrap(),
        Transition::Refused(MessageStatus::Cancelled)
    );
    let claimed: Vec<Uuid> = store
        .claim_due(10, "a", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|m| m.claim.message_id)
        .collect();
    assert_eq!(
        claimed,
        vec![ids[0], ids[2]],
        "the retried one is due again, the cancelled one never"
    );
    assert_eq!(
        store.cancel_if_pending(ids[2]).await.unwrap(),
        Transition::Refused(MessageStatus::Sending)
    );
    let listed = store.list_by_status(MessageStatus::Cancelled, 10, None).await.unwrap();
    assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[1]]);
}

async fn attempts_are_recorded_once_per_claim_oldest_first(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 1).await;
    let first = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    let started = Utc::now().trunc_subsecs(6);
    let retry = Attempt {
        attempt: 1,
        started_at: started,
        duration_ms: 12,
        http_status: Some(503),
        outcome: "retry".to_owned(),
        error: Some("provider answered 503".to_owned()),
        provider_message_id: None,
    };
    store.record_attempt(&first, &retry).await.unwrap();
    store.record_attempt(&first, &retry).await.unwrap(); // a retried write
    assert!(
        store
            .retry_later_if_claimed(&first, Duration::ZERO, "503")
            .await
            .unwrap()
    );
    let second = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    let accepted = Attempt {
        attempt: 2,
        started_at: started + chrono::Duration::seconds(1),
        http_status: Some(202),
        outcome: "accepted".to_owned(),
        error: None,
        provider_message_id: Some("p-1".to_owned()),
        ..retry.clone()
    };
    store.record_attempt(&second, &accepted).await.unwrap();

    assert_eq!(
        store.list_attempts(ids[0]).await.unwrap(),
        vec![retry.clone(), accepted]
    );
    assert!(store.list_attempts(Uuid::new_v4()).await.unwrap().is_empty());

    // Every message of one claim has its own token, so each keeps its own history.
    let more = enqueue(store.as_ref(), 2).await;
    let claims: Vec<Claim> = store
        .claim_due(2, "a", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|m| m.claim)
        .collect();
    assert_ne!(claims[0].token, claims[1].token);
    for claim in &claims {
        store
            .record_attempt(
                claim,
                &Attempt {
                    attempt: 1,
                    ..retry.clone()
                },
            )
            .await
            .unwrap();
    }
    for id in more {
        assert_eq!(store.list_attempts(id).await.unwrap().len(), 1);
    }
}
