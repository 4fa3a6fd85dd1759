//! The store's contract: claim order, fencing, lease rescue, no double claim, sent-list pages.
//! Each body speaks only through `MessageStore`, and `contract!` runs every one of them against each
//! backend: `store::postgres::<name>` and `store::sqlite::<name>`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{SubsecRound, Utc};
use futures_util::future::join_all;
use insider_messaging::{
    domain::{Attempt, MessageContent, MessageStatus, NewMessage, PhoneNumber, ProviderMessageId},
    store::{Claim, Finish, MessageStore, NextState, PageCursor, Transition},
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
    a_flush_applies_each_result_under_its_own_fence,
    a_message_twice_in_one_flush_ends_as_its_results_in_order_say,
    a_batch_is_queued_in_the_order_given,
    sent_messages_before_the_retention_go_with_their_history,
);

async fn enqueue(store: &dyn MessageStore, n: usize) -> Vec<Uuid> {
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| NewMessage {
            to: PhoneNumber::parse(&format!("+9055511{i:05}")).unwrap(),
            content: MessageContent::parse(&format!("message {i}"), 160).unwrap(),
        })
        .collect();
    store
        .insert_many(&messages)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// A claim's result with no POST for the history.
fn result(claim: Claim, next: NextState) -> Finish {
    Finish {
        claim,
        next,
        attempt: None,
    }
}

/// One result, written alone.
async fn finish(store: &dyn MessageStore, claim: &Claim, next: NextState) -> bool {
    store.finish_claims(&[result(*claim, next)]).await.unwrap()[0]
}

async fn mark_sent(store: &dyn MessageStore, claim: &Claim, provider_message_id: Option<ProviderMessageId>) -> bool {
    let sent_at = Utc::now().trunc_subsecs(6);
    finish(store, claim, sent(provider_message_id, sent_at)).await
}

async fn retry_later(store: &dyn MessageStore, claim: &Claim, delay: Duration, error: &str) -> bool {
    finish(store, claim, retry(delay, error)).await
}

async fn mark_failed(store: &dyn MessageStore, claim: &Claim, error: &str) -> bool {
    finish(store, claim, failed(error)).await
}

fn sent(provider_message_id: Option<ProviderMessageId>, sent_at: chrono::DateTime<Utc>) -> NextState {
    NextState::Sent {
        provider_message_id,
        sent_at,
    }
}

fn retry(delay: Duration, error: &str) -> NextState {
    NextState::RetryLater {
        delay,
        error: error.to_owned(),
    }
}

fn failed(error: &str) -> NextState {
    NextState::Failed {
        error: error.to_owned(),
    }
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

    assert!(retry_later(store.as_ref(), &claim, Duration::from_secs(60), "503").await);

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

    assert!(!mark_failed(store.as_ref(), &forged, "x").await);
    assert!(!retry_later(store.as_ref(), &forged, LEASE, "x").await);
    assert!(!store.release_if_claimed(&forged).await.unwrap());
    assert_eq!(
        store.get(claim.message_id).await.unwrap().unwrap().status,
        MessageStatus::Sending
    );

    assert!(mark_failed(store.as_ref(), &claim, "400").await);
    assert!(!mark_failed(store.as_ref(), &claim, "400 again").await, "reported once");
    assert!(retry_later(store.as_ref(), &other, LEASE, "503").await);
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
    assert!(finish(store.as_ref(), &old, sent(Some(provider_id()), now)).await);
    assert!(!retry_later(store.as_ref(), &new, LEASE, "late 503").await);
    assert!(!mark_failed(store.as_ref(), &new, "late 400").await);
    assert!(!mark_sent(store.as_ref(), &new, None).await, "recorded once");
    let message = store.get(old.message_id).await.unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Sent);
    assert_eq!(message.sent_at, Some(now));
    assert!(message.provider_message_id.is_some());

    // A failed message is final too.
    let failed = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    assert!(mark_failed(store.as_ref(), &failed, "400").await);
    assert!(!mark_sent(store.as_ref(), &failed, None).await);
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
        !retry_later(store.as_ref(), &old, LEASE, "late").await,
        "the old claim is fenced off"
    );
    assert!(
        !mark_failed(store.as_ref(), &old, "late").await,
        "the old claim is fenced off"
    );
    assert!(mark_sent(store.as_ref(), &new, None).await);
    assert!(mark_sent(store.as_ref(), &live, None).await);
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
        assert!(finish(store.as_ref(), &message.claim, sent(None, same_time)).await);
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
        assert!(mark_failed(store.as_ref(), claim, "400").await);
        failed.push(claim.message_id);
        tokio::time::sleep(Duration::from_millis(5)).await; // distinct failure times
    }
    for claim in &claims[3..] {
        assert!(mark_sent(store.as_ref(), claim, None).await);
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
    assert!(mark_failed(store.as_ref(), &claim, "400").await);

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
    let failed_post = Attempt {
        attempt: 1,
        started_at: started,
        duration_ms: 12,
        http_status: Some(503),
        outcome: "retry".to_owned(),
        error: Some("provider answered 503".to_owned()),
        provider_message_id: None,
    };
    let result = Finish {
        claim: first,
        next: retry(Duration::ZERO, "503"),
        attempt: Some(failed_post.clone()),
    };
    assert_eq!(
        store.finish_claims(std::slice::from_ref(&result)).await.unwrap(),
        [true]
    );
    assert_eq!(
        store.finish_claims(&[result]).await.unwrap(),
        [false],
        "a retried write changes nothing more"
    );
    let second = store.claim_due(1, "a", LEASE).await.unwrap()[0].claim;
    let accepted = Attempt {
        attempt: 2,
        started_at: started + chrono::Duration::seconds(1),
        http_status: Some(202),
        outcome: "accepted".to_owned(),
        error: None,
        provider_message_id: Some("p-1".to_owned()),
        ..failed_post.clone()
    };
    let result = Finish {
        claim: second,
        next: sent(Some(ProviderMessageId::parse("p-1").unwrap()), Utc::now()),
        attempt: Some(accepted.clone()),
    };
    assert_eq!(store.finish_claims(&[result]).await.unwrap(), [true]);

    assert_eq!(
        store.list_attempts(ids[0]).await.unwrap(),
        vec![failed_post.clone(), accepted],
        "each claim's POST once, oldest first"
    );
    assert!(store.list_attempts(Uuid::new_v4()).await.unwrap().is_empty());

    // Every message of one claim has its own token, so each keeps its own history.
    let more = enqueue(store.as_ref(), 2).await;
    let results: Vec<Finish> = store
        .claim_due(2, "a", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|m| Finish {
            claim: m.claim,
            next: failed("400"),
            attempt: Some(Attempt {
                attempt: 1,
                ..failed_post.clone()
            }),
        })
        .collect();
    assert_ne!(results[0].claim.token, results[1].claim.token);
    assert_eq!(store.finish_claims(&results).await.unwrap(), [true, true]);
    for id in more {
        assert_eq!(store.list_attempts(id).await.unwrap().len(), 1);
    }
}

async fn a_flush_applies_each_result_under_its_own_fence(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 5).await;
    let claims: Vec<Claim> = store
        .claim_due(5, "a", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|m| m.claim)
        .collect();
    let forged = Claim {
        token: Uuid::new_v4(),
        ..claims[3]
    };
    let sent_at = Utc::now().trunc_subsecs(6);

    let changed = store
        .finish_claims(&[
            result(claims[0], sent(Some(provider_id()), sent_at)),
            result(claims[1], retry(Duration::from_secs(60), "503")),
            result(claims[2], failed("400")),
            result(forged, failed("forged")),
            result(claims[4], sent(None, sent_at)),
        ])
        .await
        .unwrap();

    assert_eq!(changed, [true, true, true, false, true]);
    let status = |i: usize| {
        let store = Arc::clone(&store);
        let id = ids[i];
        async move { store.get(id).await.unwrap().unwrap() }
    };
    let first = status(0).await;
    assert_eq!((first.status, first.sent_at), (MessageStatus::Sent, Some(sent_at)));
    assert!(first.provider_message_id.is_some());
    let retried = status(1).await;
    assert_eq!(retried.status, MessageStatus::Pending);
    assert!(retried.next_attempt_at > Utc::now() + chrono::Duration::seconds(50));
    assert_eq!(retried.last_error.as_deref(), Some("503"));
    assert_eq!(status(2).await.status, MessageStatus::Failed);
    assert_eq!(
        status(3).await.status,
        MessageStatus::Sending,
        "the forged result is fenced off"
    );
    assert_eq!(status(4).await.provider_message_id, None);
    assert!(store.finish_claims(&[]).await.unwrap().is_empty());
}

async fn a_message_twice_in_one_flush_ends_as_its_results_in_order_say(store: Arc<dyn MessageStore>) {
    // Each message is claimed, its lease lost and claimed again, so one flush holds a result of each claim.
    let ids = enqueue(store.as_ref(), 2).await;
    let old = store.claim_due(2, "slow", Duration::from_millis(50)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.rescue_expired_leases().await.unwrap().len(), 2);
    let new = store.claim_due(2, "b", LEASE).await.unwrap();
    let sent_at = Utc::now().trunc_subsecs(6);

    let changed = store
        .finish_claims(&[
            // First message: the old claim's acceptance, then the new claim's retry, which it fences off.
            result(old[0].claim, sent(Some(provider_id()), sent_at)),
            result(new[0].claim, retry(LEASE, "late 503")),
            // Second message: the new claim's retry, then the old claim's acceptance, which still wins.
            result(new[1].claim, retry(LEASE, "503")),
            result(old[1].claim, sent(None, sent_at)),
        ])
        .await
        .unwrap();

    assert_eq!(changed, [true, false, true, true]);
    for id in ids {
        let message = store.get(id).await.unwrap().unwrap();
        assert_eq!(message.status, MessageStatus::Sent, "the acceptance is never lost");
        assert_eq!(message.last_error, None);
    }
}

async fn a_batch_is_queued_in_the_order_given(store: Arc<dyn MessageStore>) {
    let messages: Vec<NewMessage> = (0..50)
        .map(|i| NewMessage {
            to: PhoneNumber::parse(&format!("+9055522{i:05}")).unwrap(),
            content: MessageContent::parse(&format!("batch {i}"), 160).unwrap(),
        })
        .collect();

    let stored = store.insert_many(&messages).await.unwrap();

    assert_eq!(stored.len(), 50);
    for (i, message) in stored.iter().enumerate() {
        assert_eq!(message.content, format!("batch {i}"), "returned in the order given");
        assert_eq!((message.status, message.attempts), (MessageStatus::Pending, 0));
    }
    let claimed: Vec<Uuid> = store
        .claim_due(50, "a", LEASE)
        .await
        .unwrap()
        .iter()
        .map(|m| m.claim.message_id)
        .collect();
    assert_eq!(
        claimed,
        stored.iter().map(|m| m.id).collect::<Vec<_>>(),
        "claimed in the order given"
    );
    assert!(store.insert_many(&[]).await.unwrap().is_empty());
}

async fn sent_messages_before_the_retention_go_with_their_history(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 4).await;
    let claims = store.claim_due(3, "a", LEASE).await.unwrap();
    let long_ago = Utc::now().trunc_subsecs(6) - chrono::Duration::days(40);
    let results: Vec<Finish> = claims
        .iter()
        .enumerate()
        .map(|(i, m)| Finish {
            claim: m.claim,
            // Two sent long ago, one failed: only sent messages are pruned.
            next: if i < 2 { sent(None, long_ago) } else { failed("400") },
            attempt: Some(Attempt {
                attempt: 1,
                started_at: long_ago,
                duration_ms: 3,
                http_status: Some(202),
                outcome: "accepted".to_owned(),
                error: None,
                provider_message_id: None,
            }),
        })
        .collect();
    store.finish_claims(&results).await.unwrap();
    let recent = enqueue(store.as_ref(), 1).await[0];
    let claim = store.claim_due(1, "a", LEASE).await.unwrap();
    assert!(mark_sent(store.as_ref(), &claim[0].claim, None).await);
    let cutoff = Utc::now() - chrono::Duration::days(30);

    assert_eq!(
        store.delete_sent_before(cutoff, 1).await.unwrap(),
        1,
        "at most the limit"
    );
    assert_eq!(store.delete_sent_before(cutoff, 100).await.unwrap(), 1);
    assert_eq!(store.delete_sent_before(cutoff, 100).await.unwrap(), 0);

    for id in &ids[..2] {
        assert!(store.get(*id).await.unwrap().is_none());
        assert!(store.list_attempts(*id).await.unwrap().is_empty(), "history goes too");
    }
    assert_eq!(store.get(ids[2]).await.unwrap().unwrap().status, MessageStatus::Failed);
    assert_eq!(store.list_attempts(ids[2]).await.unwrap().len(), 1);
    assert_eq!(store.get(ids[3]).await.unwrap().unwrap().status, MessageStatus::Sent);
    assert_eq!(store.get(recent).await.unwrap().unwrap().status, MessageStatus::Pending);
}
