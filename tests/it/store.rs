//! The store's contract: claim order, fencing, lease rescue, no double claim, sent-list pages.
//! Each body speaks only through `MessageStore`, and `contract!` runs every one of them against each
//! backend: `store::postgres::<name>` and `store::sqlite::<name>`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{SubsecRound, Utc};
use futures_util::future::join_all;
use insider_messaging::{
    domain::{Attempt, MessageContent, MessageStatus, NewMessage, PhoneNumber, Priority, ProviderMessageId, Schedule},
    store::{
        Claim, ClaimRequest, Claimed, ClaimedMessage, Finish, MessageStore, NextState, PageCursor, RecentSend, Rescue,
        Throttle, Transition,
    },
};
use uuid::Uuid;

use crate::helpers::{TestDatabase, wait_for, wait_until};

const LEASE: Duration = Duration::from_secs(30);
/// `PRIORITY_AGING`'s default: no test waits that long.
const AGING: Duration = Duration::from_secs(600);

contract!(
    |database| std::sync::Arc::clone(&database.store);
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
    a_rate_limit_grants_a_burst_then_the_next_message_when_it_fits,
    a_paced_claim_that_finds_fewer_due_than_granted_is_not_held_back,
    a_throttle_pauses_every_claim_then_the_rate_comes_back_cut,
    a_throttle_right_after_a_burst_cuts_from_the_answers_not_yet_recorded,
    a_rescue_spares_the_claims_the_rescuer_still_holds,
    a_put_back_keeps_its_place_and_a_throttled_one_waits_uncounted,
    a_claim_resumes_after_its_frontier_and_a_sweep_finds_what_came_due_behind_it,
    a_scheduled_message_is_due_at_its_send_at_and_not_before,
    the_queue_s_age_counts_the_messages_due_from_when_they_came_due,
    a_due_message_past_its_expires_at_is_expired_by_the_claim_and_never_handed_out,
    a_retry_that_comes_due_after_the_expiry_expires_instead,
    claims_take_high_before_normal_before_low_and_oldest_first_within_each,
    a_message_due_for_longer_than_the_aging_counts_one_level_higher,
    each_priority_lane_resumes_after_its_own_frontier,
    the_daily_cap_reads_sends_and_others_claims_in_flight_but_not_the_askers_own,
    a_claimed_rows_number_is_respelled_only_under_its_claim,
    expired_rows_take_no_share_of_the_rate_limit,
    ended_rows_at_the_front_of_a_lane_let_no_lower_lane_pass_it,
);

/// The contract of the seams beside the messages (the suppression list, campaigns, replies), on each
/// backend: `opt_outs::postgres::<name>`, `opt_outs::sqlite::<name>`.
mod opt_outs {
    use super::{
        a_due_message_to_an_opted_out_number_is_suppressed_whether_enqueued_before_or_after,
        a_number_put_on_the_list_by_plain_sql_is_kept_as_the_claim_compares_it,
        a_paused_campaign_is_skipped_without_blocking_others_resumes_in_place_and_cancels_at_once,
        a_reply_acts_on_the_list_once_and_never_over_a_later_keyword,
        a_reply_ahead_of_the_clock_and_an_operators_opt_out_count_as_when_they_reached_us,
        inbound_replies_are_kept_with_their_action_and_listed_newest_first,
        keywords_of_a_number_taken_at_once_leave_the_one_sent_last_in_force,
        the_messages_of_a_paused_campaign_do_not_age_the_queue, the_opt_out_list_adds_once_pages_in_order_and_removes,
    };

    contract!(
        |database| database.clone();
        the_opt_out_list_adds_once_pages_in_order_and_removes,
        a_due_message_to_an_opted_out_number_is_suppressed_whether_enqueued_before_or_after,
        a_number_put_on_the_list_by_plain_sql_is_kept_as_the_claim_compares_it,
        a_paused_campaign_is_skipped_without_blocking_others_resumes_in_place_and_cancels_at_once,
        inbound_replies_are_kept_with_their_action_and_listed_newest_first,
        a_reply_acts_on_the_list_once_and_never_over_a_later_keyword,
        a_reply_ahead_of_the_clock_and_an_operators_opt_out_count_as_when_they_reached_us,
        keywords_of_a_number_taken_at_once_leave_the_one_sent_last_in_force,
        the_messages_of_a_paused_campaign_do_not_age_the_queue,
    );
}

/// Rescues as a tick would, until a lease has run out and something is rescued; returns what was. The
/// wait ends on the lease's expiry, not on a guess at how long the clock takes to get there.
async fn rescue_once_expired(store: &dyn MessageStore) -> Vec<Uuid> {
    wait_for("a lease expires and is rescued", || async move {
        Some(rescue(store).await).filter(|rescued| !rescued.is_empty())
    })
    .await
}

async fn enqueue(store: &dyn MessageStore, n: usize) -> Vec<Uuid> {
    let messages: Vec<NewMessage> = (0..n)
        .map(|i| NewMessage {
            to: PhoneNumber::parse(&format!("+9055511{i:05}")).unwrap(),
            content: MessageContent::parse(&format!("message {i}"), 160).unwrap(),
            when: Schedule::default(),
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
/// Claims as the fetcher does, with no rate limit: the claimed messages, oldest first.
async fn claim_due(store: &dyn MessageStore, limit: u32, owner: &str, lease: Duration) -> Vec<ClaimedMessage> {
    let request = ClaimRequest {
        limit,
        owner,
        lease,
        rate_limit: None,
        after: None,
        aging: AGING,
    };
    store.claim_due(&request).await.unwrap().messages
}

/// Rescues as a dispatcher holding no claims would: every expired lease of a replica not seen lately.
async fn rescue(store: &dyn MessageStore) -> Vec<Uuid> {
    let rescue = Rescue {
        owner: Some("rescuer"),
        live: &[],
        owner_fresh: Duration::from_secs(3),
        others: true,
        expired_within: None,
    };
    store.rescue_expired_leases(&rescue).await.unwrap()
}

/// Gives a claim back unsent, as the fetcher does when sending stops.
async fn put_back(store: &dyn MessageStore, claim: &Claim) -> bool {
    finish(
        store,
        claim,
        NextState::PutBack {
            after: None,
            error: None,
        },
    )
    .await
}

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

async fn the_daily_cap_reads_sends_and_others_claims_in_flight_but_not_the_askers_own(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 4).await;
    let claimed = claim_due(store.as_ref(), 4, "a", LEASE).await;
    let number = |i: usize| claimed[i].phone_number.clone();
    assert!(mark_sent(store.as_ref(), &claimed[0].claim, None).await);
    let sent_at = store.get(claimed[0].claim.message_id).await.unwrap().unwrap().sent_at;
    // 1 stays in flight under another claim; 2 and 3 are the asking batch's own.
    let numbers: Vec<String> = (0..4).map(number).collect();
    let numbers: Vec<&str> = numbers.iter().map(String::as_str).collect();
    let own = [claimed[2].claim.token, claimed[3].claim.token];

    let mut sends = store
        .sends_to_since(&numbers, Utc::now() - chrono::Duration::hours(1), &own)
        .await
        .unwrap();
    sends.sort_by(|a, b| a.phone_number.cmp(&b.phone_number));
    assert_eq!(
        sends,
        vec![
            RecentSend {
                phone_number: number(0),
                sent_at,
            },
            RecentSend {
                phone_number: number(1),
                sent_at: None,
            },
        ]
    );

    let later = store
        .sends_to_since(&numbers, Utc::now() + chrono::Duration::seconds(1), &own)
        .await
        .unwrap();
    assert_eq!(
        later,
        vec![RecentSend {
            phone_number: number(1),
            sent_at: None,
        }],
        "a send before the window is not counted; one in flight always is"
    );
}

async fn a_claimed_rows_number_is_respelled_only_under_its_claim(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 2).await;
    let claimed = claim_due(store.as_ref(), 1, "a", LEASE).await;
    let before = store.get(ids[1]).await.unwrap().unwrap().to;

    store
        .respell_numbers(&[
            (claimed[0].claim.token, "+905559999999".to_owned()),
            (Uuid::new_v4(), "+905558888888".to_owned()),
        ])
        .await
        .unwrap();

    assert_eq!(store.get(ids[0]).await.unwrap().unwrap().to, "+905559999999");
    assert_eq!(
        store.get(ids[1]).await.unwrap().unwrap().to,
        before,
        "an unclaimed row is left as it is"
    );
}

async fn claims_take_due_messages_oldest_first_up_to_the_limit(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 5).await;

    let first = claim_due(store.as_ref(), 2, "a", LEASE).await;
    let second = claim_due(store.as_ref(), 2, "a", LEASE).await;

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
    let claim = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;

    assert!(retry_later(store.as_ref(), &claim, Duration::from_secs(60), "503").await);

    assert!(claim_due(store.as_ref(), 10, "a", LEASE).await.is_empty());
    let message = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(message.status, MessageStatus::Pending);
    assert_eq!(message.last_error.as_deref(), Some("503"));
}

async fn transitions_out_of_sending_only_succeed_under_the_claim_that_holds_the_row(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 2).await;
    let claims = claim_due(store.as_ref(), 2, "a", LEASE).await;
    let (claim, other) = (claims[0].claim, claims[1].claim);
    let forged = Claim {
        token: Uuid::new_v4(),
        ..claim
    };

    assert!(!mark_failed(store.as_ref(), &forged, "x").await);
    assert!(!retry_later(store.as_ref(), &forged, LEASE, "x").await);
    assert!(!put_back(store.as_ref(), &forged).await);
    assert_eq!(
        store.get(claim.message_id).await.unwrap().unwrap().status,
        MessageStatus::Sending
    );

    assert!(mark_failed(store.as_ref(), &claim, "400").await);
    assert!(!mark_failed(store.as_ref(), &claim, "400 again").await, "reported once");
    assert!(retry_later(store.as_ref(), &other, LEASE, "503").await);
    assert!(
        !put_back(store.as_ref(), &other).await,
        "the claim ended with the retry"
    );
}

async fn an_acceptance_is_recorded_even_after_the_claim_was_lost_and_final_states_stay_final(
    store: Arc<dyn MessageStore>,
) {
    enqueue(store.as_ref(), 2).await;
    let old = claim_due(store.as_ref(), 1, "slow", Duration::from_millis(50)).await[0].claim;
    rescue_once_expired(store.as_ref()).await;
    let new = claim_due(store.as_ref(), 1, "b", LEASE).await[0].claim;
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
    let failed = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;
    assert!(mark_failed(store.as_ref(), &failed, "400").await);
    assert!(!mark_sent(store.as_ref(), &failed, None).await);
    assert_eq!(
        store.get(failed.message_id).await.unwrap().unwrap().status,
        MessageStatus::Failed
    );
}

async fn a_released_claim_is_due_again_without_spending_an_attempt(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 1).await;
    let claim = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;

    assert!(put_back(store.as_ref(), &claim).await);

    let message = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((message.status, message.attempts), (MessageStatus::Pending, 0));
    let again = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;
    assert_eq!((again.message_id, again.attempt), (ids[0], 1));
}

async fn an_expired_lease_is_rescued_and_the_old_claim_can_no_longer_write(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 2).await;
    let old = claim_due(store.as_ref(), 1, "dead", Duration::from_millis(50)).await[0].claim;
    let live = claim_due(store.as_ref(), 1, "alive", LEASE).await[0].claim;

    let rescued = rescue_once_expired(store.as_ref()).await;

    assert_eq!(rescued, vec![ids[0]], "only the expired lease");
    let new = claim_due(store.as_ref(), 1, "b", LEASE).await[0].claim;
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
                let batch = claim_due(store.as_ref(), 7, &format!("claimer-{i}"), LEASE).await;
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
    for message in claim_due(store.as_ref(), 10, "a", LEASE).await {
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
    let claims: Vec<Claim> = claim_due(store.as_ref(), 5, "a", LEASE)
        .await
        .into_iter()
        .map(|m| m.claim)
        .collect();
    let mut failed = Vec::new();
    for claim in &claims[..3] {
        assert!(mark_failed(store.as_ref(), claim, "400").await);
        failed.push(claim.message_id);
        // Distinct failure times: the next failure is stamped after the clock has passed this one.
        let failed_at = store.get(claim.message_id).await.unwrap().unwrap().updated_at;
        wait_until("the clock moves past the last failure", || async move {
            Utc::now().trunc_subsecs(6) > failed_at
        })
        .await;
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
    let claim = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;
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
    let claimed: Vec<Uuid> = claim_due(store.as_ref(), 10, "a", LEASE)
        .await
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
    let first = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;
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
    let second = claim_due(store.as_ref(), 1, "a", LEASE).await[0].claim;
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
    let results: Vec<Finish> = claim_due(store.as_ref(), 2, "a", LEASE)
        .await
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
    let claims: Vec<Claim> = claim_due(store.as_ref(), 5, "a", LEASE)
        .await
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
    let old = claim_due(store.as_ref(), 2, "slow", Duration::from_millis(50)).await;
    assert_eq!(rescue_once_expired(store.as_ref()).await.len(), 2);
    let new = claim_due(store.as_ref(), 2, "b", LEASE).await;
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
            when: Schedule::default(),
        })
        .collect();

    let stored = store.insert_many(&messages).await.unwrap();

    assert_eq!(stored.len(), 50);
    for (i, message) in stored.iter().enumerate() {
        assert_eq!(message.content, format!("batch {i}"), "returned in the order given");
        assert_eq!((message.status, message.attempts), (MessageStatus::Pending, 0));
    }
    let claimed: Vec<Uuid> = claim_due(store.as_ref(), 50, "a", LEASE)
        .await
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
    let claims = claim_due(store.as_ref(), 3, "a", LEASE).await;
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
    let claim = claim_due(store.as_ref(), 1, "a", LEASE).await;
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

/// A claim under `RATE_LIMIT` `rate`, of up to `limit`.
async fn claim_paced(store: &dyn MessageStore, limit: u32, rate: f64) -> Claimed {
    let request = ClaimRequest {
        limit,
        owner: "a",
        lease: LEASE,
        rate_limit: Some(rate),
        after: None,
        aging: AGING,
    };
    store.claim_due(&request).await.unwrap()
}

async fn a_rate_limit_grants_a_burst_then_the_next_message_when_it_fits(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 50).await;

    // 200 a second: a burst of 50 ms' worth, 10, and the claim is told it was held back.
    let first = claim_paced(store.as_ref(), 40, 200.0).await;
    assert_eq!(first.messages.len(), 10, "{:?}", first.pace);
    assert_eq!(first.pace.rate, Some(200.0));
    assert!(first.pace.next_in.is_some(), "held back by the rate: {:?}", first.pace);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // One a second: a burst of one, then nothing until a second has passed since.
    let one = claim_paced(store.as_ref(), 40, 1.0).await;
    assert_eq!(one.messages.len(), 1, "{:?}", one.pace);
    let none = claim_paced(store.as_ref(), 40, 1.0).await;
    assert!(none.messages.is_empty(), "{:?}", none.pace);
    let wait = none.pace.next_in.expect("the rate says when the next fits");
    assert!(
        wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    tokio::time::sleep(wait + Duration::from_millis(50)).await;
    assert_eq!(
        claim_paced(store.as_ref(), 40, 1.0).await.messages.len(),
        1,
        "never more than the burst"
    );

    // Without a cap, a claim takes what it asks for.
    assert_eq!(claim_due(store.as_ref(), 5, "a", LEASE).await.len(), 5);
}

/// Fewer due than the rate granted: the queue is drained, not held back (which the fetcher would claim again
/// for as soon as the rate allows: a hundred empty claims a second at 100/s).
async fn a_paced_claim_that_finds_fewer_due_than_granted_is_not_held_back(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 3).await;
    let short = claim_paced(store.as_ref(), 40, 200.0).await;
    assert_eq!(short.messages.len(), 3, "{:?}", short.pace);
    assert_eq!(short.pace.next_in, None, "{:?}", short.pace);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let empty = claim_paced(store.as_ref(), 40, 200.0).await;
    assert!(empty.messages.is_empty());
    assert_eq!(empty.pace.next_in, None, "{:?}", empty.pace);
}

async fn a_throttle_pauses_every_claim_then_the_rate_comes_back_cut(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 10).await;
    for message in claim_due(store.as_ref(), 2, "a", LEASE).await {
        assert!(mark_sent(store.as_ref(), &message.claim, None).await);
    }

    let pause = store
        .throttle(&throttle(Some(Duration::from_millis(600)), 0))
        .await
        .unwrap();
    assert!(
        pause > Duration::from_millis(400) && pause <= Duration::from_millis(600),
        "{pause:?}"
    );
    // The answers to what else was in flight stretch nothing.
    let again = store.throttle(&throttle(None, 0)).await.unwrap();
    assert!(again <= pause, "{again:?} after {pause:?}");

    let paused = claim_due_all(store.as_ref()).await;
    assert!(paused.messages.is_empty());
    assert!(paused.pace.paused_for.is_some(), "{:?}", paused.pace);

    let resumed = first_claim_after_the_pause(&store).await;
    // Two were accepted in the last second before the 429: the cut rate is half of that, at least 1/s.
    let rate = resumed.pace.rate.expect("a cut rate in force");
    assert!((1.0..2.0).contains(&rate), "{rate}");
    assert_eq!(resumed.messages.len(), 1, "the cut rate's burst: one");
}

async fn a_throttle_right_after_a_burst_cuts_from_the_answers_not_yet_recorded(store: Arc<dyn MessageStore>) {
    enqueue(store.as_ref(), 10).await;
    // The provider accepted 40 in the last second, none of them flushed yet: no row is `sent`.
    store
        .throttle(&throttle(Some(Duration::from_millis(300)), 40))
        .await
        .unwrap();

    let resumed = first_claim_after_the_pause(&store).await;
    let rate = resumed.pace.rate.expect("a cut rate in force");
    assert!((20.0..23.0).contains(&rate), "half of the 40 answered, not 1/s: {rate}");
}

/// The first claim of up to 10 that gets messages: the one after a throttle's pause ends.
async fn first_claim_after_the_pause(store: &Arc<dyn MessageStore>) -> Claimed {
    wait_for("the pause ends", || {
        let store = Arc::clone(store);
        async move { Some(claim_due_all(store.as_ref()).await).filter(|claimed| !claimed.messages.is_empty()) }
    })
    .await
}

fn throttle(retry_after: Option<Duration>, answered_here: u32) -> Throttle {
    Throttle {
        retry_after,
        rate_limit: None,
        answered_here,
    }
}

/// A claim of up to 10 with no cap of its own.
async fn claim_due_all(store: &dyn MessageStore) -> Claimed {
    let request = ClaimRequest {
        limit: 10,
        owner: "a",
        lease: LEASE,
        rate_limit: None,
        after: None,
        aging: AGING,
    };
    store.claim_due(&request).await.unwrap()
}

async fn a_rescue_spares_the_claims_the_rescuer_still_holds(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 2).await;
    let held = claim_due(store.as_ref(), 1, "me", Duration::from_millis(50)).await[0].claim;
    let lost = claim_due(store.as_ref(), 1, "me", Duration::from_millis(50)).await[0].claim;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let rescue = Rescue {
        owner: Some("me"),
        live: &[held.token],
        owner_fresh: Duration::from_secs(3),
        others: true,
        expired_within: None,
    };
    let rescued = store.rescue_expired_leases(&rescue).await.unwrap();

    assert_eq!(rescued, vec![ids[1]], "only the claim the rescuer no longer holds");
    assert_eq!(lost.message_id, ids[1]);
    let recent = Rescue {
        owner: Some("me"),
        live: &[],
        owner_fresh: Duration::from_secs(3),
        others: true,
        expired_within: Some(Duration::from_millis(1)),
    };
    assert!(
        store.rescue_expired_leases(&recent).await.unwrap().is_empty(),
        "its lease ran out longer ago than the window"
    );
    assert_eq!(rescue_once_expired(store.as_ref()).await, vec![held.message_id]);
}

async fn a_put_back_keeps_its_place_and_a_throttled_one_waits_uncounted(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 3).await;
    let claims = claim_due(store.as_ref(), 2, "a", LEASE).await;

    assert!(put_back(store.as_ref(), &claims[0].claim).await);
    let throttled = NextState::PutBack {
        after: Some(Duration::from_secs(60)),
        error: Some("provider answered 429".to_owned()),
    };
    assert!(finish(store.as_ref(), &claims[1].claim, throttled).await);

    let first = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((first.status, first.attempts), (MessageStatus::Pending, 0));
    let second = store.get(ids[1]).await.unwrap().unwrap();
    assert_eq!((second.status, second.attempts), (MessageStatus::Pending, 0));
    assert_eq!(second.last_error.as_deref(), Some("provider answered 429"));
    assert!(second.next_attempt_at > Utc::now() + chrono::Duration::seconds(50));
    let next: Vec<Uuid> = claim_due(store.as_ref(), 3, "a", LEASE)
        .await
        .iter()
        .map(|m| m.claim.message_id)
        .collect();
    assert_eq!(
        next,
        vec![ids[0], ids[2]],
        "the one put back first, in its place; the throttled one waits"
    );
}

async fn a_claim_resumes_after_its_frontier_and_a_sweep_finds_what_came_due_behind_it(store: Arc<dyn MessageStore>) {
    let ids = enqueue(store.as_ref(), 6).await;
    let request = |after| ClaimRequest {
        limit: 2,
        owner: "a",
        lease: LEASE,
        rate_limit: None,
        after,
        aging: AGING,
    };
    let first = store.claim_due(&request(None)).await.unwrap();
    let frontier = first.frontier.expect("the last claimed row's place");
    assert!(
        put_back(store.as_ref(), &first.messages[0].claim).await,
        "back behind the frontier"
    );

    let resumed = store.claim_due(&request(Some(frontier))).await.unwrap();
    let taken: Vec<Uuid> = resumed.messages.iter().map(|m| m.claim.message_id).collect();
    assert_eq!(taken, vec![ids[2], ids[3]], "after the frontier, not the one put back");
    let reached = resumed.frontier.expect("claimed");
    assert!(frontier.is_behind(&reached));
    assert!(reached.lane(Priority::Normal) > frontier.lane(Priority::Normal));

    let swept = store.claim_due(&request(None)).await.unwrap();
    let taken: Vec<Uuid> = swept.messages.iter().map(|m| m.claim.message_id).collect();
    assert_eq!(taken, vec![ids[0], ids[4]], "a sweep starts from the oldest due row");
}

/// One message to `+9055522xxxxx` (`i`) with this schedule.
fn scheduled(i: usize, when: Schedule) -> NewMessage {
    NewMessage {
        to: PhoneNumber::parse(&format!("+9055522{i:05}")).unwrap(),
        content: MessageContent::parse(&format!("scheduled {i}"), 160).unwrap(),
        when,
    }
}

fn with_priority(priority: Priority) -> Schedule {
    Schedule {
        priority,
        ..Schedule::default()
    }
}

async fn enqueue_each(store: &dyn MessageStore, messages: Vec<NewMessage>) -> Vec<Uuid> {
    store
        .insert_many(&messages)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// Claims up to `limit` with this aging, as the fetcher does on a sweep.
async fn claim_aged(store: &dyn MessageStore, limit: u32, aging: Duration) -> Claimed {
    let request = ClaimRequest {
        limit,
        owner: "a",
        lease: LEASE,
        rate_limit: None,
        after: None,
        aging,
    };
    store.claim_due(&request).await.unwrap()
}

fn ids_of(claimed: &Claimed) -> Vec<Uuid> {
    claimed.messages.iter().map(|m| m.claim.message_id).collect()
}

async fn a_scheduled_message_is_due_at_its_send_at_and_not_before(store: Arc<dyn MessageStore>) {
    let later = Utc::now().trunc_subsecs(6) + chrono::Duration::milliseconds(300);
    let ids = enqueue_each(
        store.as_ref(),
        vec![
            scheduled(
                0,
                Schedule {
                    send_at: Some(later),
                    ..Schedule::default()
                },
            ),
            scheduled(1, Schedule::default()),
        ],
    )
    .await;
    let stored = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((stored.when.send_at, stored.next_attempt_at), (Some(later), later));

    assert_eq!(
        ids_of(&claim_aged(store.as_ref(), 10, AGING).await),
        vec![ids[1]],
        "only the due one"
    );
    let claimed = wait_for("the send_at passes", || async {
        Some(claim_aged(store.as_ref(), 10, AGING).await).filter(|claimed| !claimed.messages.is_empty())
    })
    .await;
    assert!(Utc::now() >= later, "never before its send_at");
    assert_eq!(ids_of(&claimed), vec![ids[0]]);
}

async fn the_queue_s_age_counts_the_messages_due_from_when_they_came_due(store: Arc<dyn MessageStore>) {
    let tomorrow = Utc::now() + chrono::Duration::days(1);
    enqueue_each(
        store.as_ref(),
        vec![scheduled(
            0,
            Schedule {
                send_at: Some(tomorrow),
                ..Schedule::default()
            },
        )],
    )
    .await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.oldest_pending_age),
        (1, None),
        "a message scheduled for tomorrow is not late"
    );

    enqueue(store.as_ref(), 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let age = store
        .queue_stats()
        .await
        .unwrap()
        .oldest_pending_age
        .expect("one is due");
    assert!(
        age >= Duration::from_millis(40) && age < Duration::from_secs(30),
        "the due one's wait, not a day: {age:?}"
    );
}

async fn a_due_message_past_its_expires_at_is_expired_by_the_claim_and_never_handed_out(store: Arc<dyn MessageStore>) {
    let soon = Utc::now() + chrono::Duration::milliseconds(50);
    let ids = enqueue_each(
        store.as_ref(),
        vec![
            scheduled(
                0,
                Schedule {
                    expires_at: Some(soon),
                    ..Schedule::default()
                },
            ),
            scheduled(
                1,
                Schedule {
                    expires_at: Some(Utc::now() + chrono::Duration::hours(1)),
                    ..Schedule::default()
                },
            ),
        ],
    )
    .await;
    wait_until("the first expires", || async { Utc::now() > soon }).await;

    let claimed = claim_aged(store.as_ref(), 10, AGING).await;

    assert_eq!(ids_of(&claimed), vec![ids[1]], "the one not expired is claimed");
    assert_eq!(claimed.ended, vec![(ids[0], MessageStatus::Expired)]);
    let expired = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((expired.status, expired.attempts), (MessageStatus::Expired, 0));
    assert!(expired.last_error.unwrap().contains("expires_at"));
    let listed = store.list_by_status(MessageStatus::Expired, 10, None).await.unwrap();
    assert_eq!(listed.iter().map(|m| m.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert!(claim_aged(store.as_ref(), 10, AGING).await.messages.is_empty(), "final");
}

async fn a_retry_that_comes_due_after_the_expiry_expires_instead(store: Arc<dyn MessageStore>) {
    let expires_at = Utc::now() + chrono::Duration::milliseconds(200);
    let ids = enqueue_each(
        store.as_ref(),
        vec![scheduled(
            0,
            Schedule {
                expires_at: Some(expires_at),
                ..Schedule::default()
            },
        )],
    )
    .await;
    let claim = claim_aged(store.as_ref(), 1, AGING).await.messages[0].claim;
    assert!(retry_later(store.as_ref(), &claim, Duration::from_millis(300), "503").await);

    let claimed = wait_for("the retry comes due", || async {
        Some(claim_aged(store.as_ref(), 1, AGING).await).filter(|c| !c.messages.is_empty() || !c.ended.is_empty())
    })
    .await;

    assert!(claimed.messages.is_empty(), "not attempted again after its expiry");
    assert_eq!(claimed.ended, vec![(ids[0], MessageStatus::Expired)]);
    let message = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!((message.status, message.attempts), (MessageStatus::Expired, 1));
}

async fn claims_take_high_before_normal_before_low_and_oldest_first_within_each(store: Arc<dyn MessageStore>) {
    use Priority::*;
    let order = [Low, Normal, High, Low, High, Normal];
    let ids = enqueue_each(
        store.as_ref(),
        order
            .iter()
            .enumerate()
            .map(|(i, p)| scheduled(i, with_priority(*p)))
            .collect(),
    )
    .await;

    let first = claim_aged(store.as_ref(), 3, AGING).await;
    let second = claim_aged(store.as_ref(), 3, AGING).await;

    assert_eq!(
        ids_of(&first),
        vec![ids[2], ids[4], ids[1]],
        "both high, then the oldest normal"
    );
    assert_eq!(
        ids_of(&second),
        vec![ids[5], ids[0], ids[3]],
        "the other normal, then the lows oldest first"
    );
    let stored = store.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(stored.when.priority, High);
}

async fn a_message_due_for_longer_than_the_aging_counts_one_level_higher(store: Arc<dyn MessageStore>) {
    // A past `send_at` is due now, so age comes only from waiting. The fresh messages must be claimed
    // inside the aging: 2 s leaves room for a loaded machine (200 ms made this flaky under load).
    let aging = Duration::from_secs(2);
    let starved = enqueue_each(store.as_ref(), vec![scheduled(0, with_priority(Priority::Low))]).await[0];
    let waited_since = Utc::now();
    wait_until("the low message has waited out the aging", || async {
        Utc::now() > waited_since + chrono::Duration::milliseconds(2_500)
    })
    .await;
    let fresh = enqueue_each(
        store.as_ref(),
        vec![
            scheduled(1, with_priority(Priority::Normal)),
            scheduled(2, with_priority(Priority::High)),
        ],
    )
    .await;

    let without_aging = claim_aged(store.as_ref(), 2, AGING).await;
    assert_eq!(
        ids_of(&without_aging),
        vec![fresh[1], fresh[0]],
        "strict priority: the low waits"
    );
    for message in &without_aging.messages {
        assert!(put_back(store.as_ref(), &message.claim).await);
    }

    let aged = claim_aged(store.as_ref(), 2, aging).await;
    assert_eq!(
        ids_of(&aged),
        vec![fresh[1], starved],
        "the starved low counts as normal and is older than the fresh normal; the fresh high still first"
    );
}

async fn expired_rows_take_no_share_of_the_rate_limit(store: Arc<dyn MessageStore>) {
    let soon = Utc::now() + chrono::Duration::milliseconds(50);
    let expiring: Vec<NewMessage> = (0..3)
        .map(|i| {
            scheduled(
                i,
                Schedule {
                    expires_at: Some(soon),
                    ..Schedule::default()
                },
            )
        })
        .collect();
    let expiring = enqueue_each(store.as_ref(), expiring).await;
    let plain = enqueue_each(store.as_ref(), vec![scheduled(3, Schedule::default())]).await[0];
    wait_until("the first three have expired", || async { Utc::now() > soon }).await;

    // A rate of 1/s grants one row: the three ahead of it end unsent and leave it that row.
    let claimed = claim_paced(store.as_ref(), 10, 1.0).await;

    let mut ended: Vec<Uuid> = claimed.ended.iter().map(|(id, _)| *id).collect();
    ended.sort();
    let mut expected = expiring.clone();
    expected.sort();
    assert_eq!(ended, expected);
    assert!(
        claimed
            .ended
            .iter()
            .all(|(_, status)| *status == MessageStatus::Expired)
    );
    assert_eq!(ids_of(&claimed), vec![plain]);
}

/// Rows the claim ends unsent at the front of the high lane do not let normal rows pass the high one
/// behind them: it is the next claimed, by this claim or the next.
async fn ended_rows_at_the_front_of_a_lane_let_no_lower_lane_pass_it(store: Arc<dyn MessageStore>) {
    use Priority::*;
    let soon = Utc::now() + chrono::Duration::milliseconds(50);
    let message = |i, priority, expires_at| {
        scheduled(
            i,
            Schedule {
                priority,
                expires_at,
                ..Schedule::default()
            },
        )
    };
    let ids = enqueue_each(
        store.as_ref(),
        vec![
            message(0, High, Some(soon)),
            message(1, High, Some(soon)),
            message(2, High, None),
            message(3, Normal, None),
            message(4, Normal, None),
        ],
    )
    .await;
    wait_until("the first two have expired", || async { Utc::now() > soon }).await;

    let first = claim_aged(store.as_ref(), 2, AGING).await;
    assert_eq!(first.ended.len(), 2, "{first:?}");
    let claimed = if first.messages.is_empty() {
        ids_of(&claim_aged(store.as_ref(), 2, AGING).await)
    } else {
        ids_of(&first)
    };
    assert_eq!(claimed, vec![ids[2], ids[3]], "the high one first");
}

async fn each_priority_lane_resumes_after_its_own_frontier(store: Arc<dyn MessageStore>) {
    use Priority::*;
    let ids = enqueue_each(
        store.as_ref(),
        [High, Low, High, Low]
            .iter()
            .enumerate()
            .map(|(i, p)| scheduled(i, with_priority(*p)))
            .collect(),
    )
    .await;
    let request = |after| ClaimRequest {
        limit: 2,
        owner: "a",
        lease: LEASE,
        rate_limit: None,
        after,
        aging: AGING,
    };
    let first = store.claim_due(&request(None)).await.unwrap();
    assert_eq!(ids_of(&first), vec![ids[0], ids[2]]);
    let frontier = first.frontier.expect("the high lane's place");
    assert_eq!(frontier.lane(Low), None, "nothing claimed in the low lane");
    assert!(put_back(store.as_ref(), &first.messages[0].claim).await);

    let resumed = store.claim_due(&request(Some(frontier))).await.unwrap();
    assert_eq!(
        ids_of(&resumed),
        vec![ids[1], ids[3]],
        "the high lane resumes after its frontier; the low lane, with none, from its oldest"
    );
    let swept = store.claim_due(&request(None)).await.unwrap();
    assert_eq!(
        ids_of(&swept),
        vec![ids[0]],
        "a sweep finds the high put back behind the frontier"
    );
}

fn number(raw: &str) -> PhoneNumber {
    PhoneNumber::parse(raw).unwrap()
}

async fn the_opt_out_list_adds_once_pages_in_order_and_removes(database: TestDatabase) {
    let list = database.opt_outs;
    let (first, new) = list.add_opt_out(&number("+905552222222")).await.unwrap();
    assert!(new);
    assert_eq!(first.to, "+905552222222");
    let (again, new) = list.add_opt_out(&number("+90 555 222 22 22")).await.unwrap();
    assert!(!new, "already on the list");
    assert_eq!(again.to, first.to, "the same entry");
    assert!(again.created_at >= first.created_at, "on the list as of the second add");
    list.add_opt_out(&number("+441234567890")).await.unwrap();
    list.add_opt_out(&number("+905551111111")).await.unwrap();

    let page = list.list_opt_outs(2, None).await.unwrap();
    let numbers: Vec<&str> = page.iter().map(|e| e.to.as_str()).collect();
    assert_eq!(numbers, ["+441234567890", "+905551111111"]);
    let rest = list.list_opt_outs(2, Some("+905551111111")).await.unwrap();
    assert_eq!(
        rest.iter().map(|e| e.to.as_str()).collect::<Vec<_>>(),
        ["+905552222222"]
    );

    assert!(list.remove_opt_out(&number("+905552222222")).await.unwrap());
    assert!(
        !list.remove_opt_out(&number("+905552222222")).await.unwrap(),
        "gone already"
    );
    assert_eq!(list.list_opt_outs(10, None).await.unwrap().len(), 2);
}

/// Another system's plain SQL puts a number on the list with spaces and dashes, twice: it is kept once,
/// as the claim compares a message's number, so the number's message is suppressed. What is no E.164
/// number even so is refused.
async fn a_number_put_on_the_list_by_plain_sql_is_kept_as_the_claim_compares_it(database: TestDatabase) {
    // The second names a number on the list already: skipped, as an upsert of it would be.
    for spelling in ["+90 555-888 00 01", "+90-555-888-00-01"] {
        database
            .execute(
                &format!("INSERT INTO opt_outs (phone_number) VALUES ('{spelling}') ON CONFLICT DO NOTHING"),
                &format!(
                    "INSERT INTO opt_outs (phone_number, created_at) VALUES ('{spelling}', 0) ON CONFLICT DO NOTHING"
                ),
            )
            .await
            .unwrap_or_else(|error| panic!("{spelling}: {error}"));
    }
    let listed: Vec<String> = database
        .opt_outs
        .list_opt_outs(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.to)
        .collect();
    assert_eq!(listed, ["+905558880001"]);
    for refused in ["905558880002", "+0555888000", "+90555888000x", "+1234567"] {
        let error = database
            .execute(
                &format!("INSERT INTO opt_outs (phone_number) VALUES ('{refused}')"),
                &format!("INSERT INTO opt_outs (phone_number, created_at) VALUES ('{refused}', 0)"),
            )
            .await
            .expect_err(refused);
        assert!(error.to_string().contains("E.164"), "{refused}: {error}");
    }
    // SQLite's TEXT PRIMARY KEY would take a NULL; Postgres's refuses it.
    database
        .execute(
            "INSERT INTO opt_outs (phone_number) VALUES (NULL)",
            "INSERT INTO opt_outs (phone_number, created_at) VALUES (NULL, 0)",
        )
        .await
        .expect_err("a NULL number");

    let store = database.store;
    let message = NewMessage {
        to: number("+905558880001"),
        content: MessageContent::parse("hi", 160).unwrap(),
        when: Schedule::default(),
    };
    let id = store.insert_many(&[message]).await.unwrap()[0].id;
    let claimed = claim_aged(store.as_ref(), 10, AGING).await;
    assert!(ids_of(&claimed).is_empty(), "nothing handed out");
    assert_eq!(store.get(id).await.unwrap().unwrap().status, MessageStatus::Suppressed);
}

async fn a_due_message_to_an_opted_out_number_is_suppressed_whether_enqueued_before_or_after(database: TestDatabase) {
    let (store, list) = (database.store, database.opt_outs);
    let before = enqueue_each(store.as_ref(), vec![scheduled(0, Schedule::default())]).await[0];
    let opted_out = store.get(before).await.unwrap().unwrap().to;
    list.add_opt_out(&number(&opted_out)).await.unwrap();
    let after = enqueue_each(
        store.as_ref(),
        vec![scheduled(0, Schedule::default()), scheduled(1, Schedule::default())],
    )
    .await;

    let claimed = claim_aged(store.as_ref(), 10, AGING).await;

    assert_eq!(
        ids_of(&claimed),
        vec![after[1]],
        "only the other number's message is claimed"
    );
    assert!(
        claimed
            .ended
            .iter()
            .all(|(_, status)| *status == MessageStatus::Suppressed)
    );
    let mut ended: Vec<Uuid> = claimed.ended.iter().map(|(id, _)| *id).collect();
    ended.sort();
    let mut expected = vec![before, after[0]];
    expected.sort();
    assert_eq!(
        ended, expected,
        "enqueued before and after the opt-out, both suppressed"
    );
    for id in [before, after[0]] {
        let message = store.get(id).await.unwrap().unwrap();
        assert_eq!((message.status, message.attempts), (MessageStatus::Suppressed, 0));
        assert!(message.last_error.unwrap().contains("opted out"));
    }
    assert!(list.remove_opt_out(&number(&opted_out)).await.unwrap());
    let again = enqueue_each(store.as_ref(), vec![scheduled(0, Schedule::default())]).await[0];
    assert_eq!(
        ids_of(&claim_aged(store.as_ref(), 10, AGING).await),
        vec![again],
        "opted in again"
    );
}

fn in_campaign(campaign: &str) -> Schedule {
    Schedule {
        campaign: Some(campaign.to_owned()),
        ..Schedule::default()
    }
}

async fn a_paused_campaign_is_skipped_without_blocking_others_resumes_in_place_and_cancels_at_once(
    database: TestDatabase,
) {
    let (store, campaigns) = (database.store, database.campaigns);
    let promo = enqueue_each(
        store.as_ref(),
        vec![
            scheduled(0, in_campaign("promo")),
            scheduled(1, in_campaign("promo")),
            scheduled(2, Schedule::default()),
        ],
    )
    .await;
    assert!(campaigns.pause_campaign("promo").await.unwrap());
    assert!(!campaigns.pause_campaign("promo").await.unwrap(), "already paused");
    assert!(
        campaigns.pause_campaign("later").await.unwrap(),
        "a name with no messages yet"
    );

    let claimed = claim_aged(store.as_ref(), 1, AGING).await;
    assert_eq!(
        ids_of(&claimed),
        vec![promo[2]],
        "the paused rows ahead of it do not block it"
    );
    let listed = campaigns.list_campaigns().await.unwrap();
    let names: Vec<(&str, bool)> = listed.iter().map(|c| (c.name.as_str(), c.paused)).collect();
    assert_eq!(names, [("later", true), ("promo", true)]);
    assert_eq!(listed[1].counts.get("pending"), Some(&2));

    assert!(campaigns.resume_campaign("promo").await.unwrap());
    assert!(!campaigns.resume_campaign("promo").await.unwrap(), "already running");
    let resumed = claim_aged(store.as_ref(), 10, AGING).await;
    assert_eq!(ids_of(&resumed), vec![promo[0], promo[1]], "in their places");
    for message in &resumed.messages {
        assert!(mark_sent(store.as_ref(), &message.claim, None).await);
    }

    let more = enqueue_each(
        store.as_ref(),
        vec![
            scheduled(3, in_campaign("promo")),
            scheduled(4, in_campaign("promo")),
            scheduled(5, in_campaign("promo")),
        ],
    )
    .await;
    // One is being sent when the campaign is cancelled.
    let in_flight = claim_aged(store.as_ref(), 1, AGING).await.messages[0].claim;
    assert_eq!(in_flight.message_id, more[0]);
    assert_eq!(campaigns.cancel_campaign("promo").await.unwrap(), 2);
    for id in &more[1..] {
        assert_eq!(store.get(*id).await.unwrap().unwrap().status, MessageStatus::Cancelled);
    }
    // Its send fails and puts it back pending: the cancel's pause holds it.
    assert!(put_back(store.as_ref(), &in_flight).await);
    assert!(
        claim_aged(store.as_ref(), 10, AGING).await.messages.is_empty(),
        "a cancelled campaign sends nothing more"
    );
    let promo = campaigns
        .list_campaigns()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "promo")
        .unwrap();
    assert!(promo.paused, "a cancel pauses");
    assert_eq!(
        promo.counts.into_iter().collect::<Vec<_>>(),
        [("cancelled", 2), ("pending", 1), ("sent", 2)]
    );
}

async fn inbound_replies_are_kept_with_their_action_and_listed_newest_first(database: TestDatabase) {
    use insider_messaging::{
        domain::InboundAction,
        store::{InboundReply, TakenReply},
    };
    let log = database.inbound;
    let at = Utc::now().trunc_subsecs(6);
    let mut kept = Vec::new();
    for (content, action) in [
        ("STOP", InboundAction::OptOut),
        ("hello", InboundAction::Other),
        ("START", InboundAction::OptIn),
    ] {
        let reply = InboundReply {
            from: "+905551111111",
            content,
            at,
            action,
        };
        match log.take_reply(&reply).await.unwrap() {
            TakenReply::Kept(stored) => kept.push(stored),
            other => panic!("{content}: {other:?}"),
        }
    }
    assert_eq!((kept[0].action.as_str(), kept[0].at), ("opt_out", at));

    let first = log.list_inbound(2, None).await.unwrap();
    assert_eq!(
        first.iter().map(|r| r.content.as_str()).collect::<Vec<_>>(),
        ["START", "hello"]
    );
    let rest = log.list_inbound(2, Some(first[1].id)).await.unwrap();
    assert_eq!(rest, vec![kept[0].clone()]);
}

/// A keyword acts on the suppression list unless a later one of its number is kept; the provider's
/// retry of a reply is the reply as first kept and acts again on nothing.
async fn a_reply_acts_on_the_list_once_and_never_over_a_later_keyword(database: TestDatabase) {
    use insider_messaging::{
        domain::InboundAction,
        store::{InboundReply, TakenReply},
    };
    let (log, list) = (database.inbound, database.opt_outs);
    let number = "+905551111112";
    let on_list = || async {
        list.list_opt_outs(10, None)
            .await
            .unwrap()
            .iter()
            .any(|entry| entry.to == number)
    };
    // A minute ago: a reply dated ahead of the clock counts as sent when it arrived.
    let at = Utc::now().trunc_subsecs(6) - chrono::Duration::minutes(1);
    let reply = |content, action, at| InboundReply {
        from: number,
        content,
        at,
        action,
    };
    let TakenReply::Kept(stop) = log.take_reply(&reply("STOP", InboundAction::OptOut, at)).await.unwrap() else {
        panic!("a first STOP is kept")
    };
    assert!(on_list().await);
    let start = reply("START", InboundAction::OptIn, at + chrono::Duration::seconds(1));
    assert!(matches!(log.take_reply(&start).await.unwrap(), TakenReply::Kept(_)));
    assert!(!on_list().await);

    // The STOP again, after the START: the one kept first, and the number stays off the list.
    assert_eq!(
        log.take_reply(&reply("STOP", InboundAction::OptOut, at)).await.unwrap(),
        TakenReply::Duplicate(stop)
    );
    assert!(!on_list().await);
    // A STOP the phone sent before the START, not seen before: kept as nothing.
    let earlier = reply("Stop", InboundAction::OptOut, at + chrono::Duration::milliseconds(500));
    let TakenReply::Outdated(outdated) = log.take_reply(&earlier).await.unwrap() else {
        panic!("an earlier STOP is outdated")
    };
    assert_eq!(outdated.action, "other");
    assert!(!on_list().await);
    assert_eq!(
        log.list_inbound(10, None).await.unwrap().len(),
        3,
        "the duplicate is not kept"
    );
}

/// A reply dated ahead of the clock is kept as dated, so the provider's retry of it is a duplicate, but
/// it counts as sent when it arrived: the STOP after it stands. An operator's opt-out counts from when
/// it was made: a START sent before it changes nothing. A STOP's place on the list dates from the STOP.
async fn a_reply_ahead_of_the_clock_and_an_operators_opt_out_count_as_when_they_reached_us(database: TestDatabase) {
    use insider_messaging::{
        domain::InboundAction,
        store::{InboundReply, TakenReply},
    };
    let (log, list) = (database.inbound, database.opt_outs);
    let entry = |number: &'static str| {
        let list = list.clone();
        async move {
            list.list_opt_outs(10, None)
                .await
                .unwrap()
                .into_iter()
                .find(|entry| entry.to == number)
        }
    };
    let reply = |from, content, action, at| InboundReply {
        from,
        content,
        at,
        action,
    };
    let skewed = "+905551111113";
    let ahead = Utc::now().trunc_subsecs(6) + chrono::Duration::hours(1);
    let TakenReply::Kept(start) = log
        .take_reply(&reply(skewed, "START", InboundAction::OptIn, ahead))
        .await
        .unwrap()
    else {
        panic!("a first START is kept")
    };
    assert_eq!(start.at, ahead, "kept as dated");
    let stop_at = Utc::now().trunc_subsecs(6);
    let stop = log
        .take_reply(&reply(skewed, "STOP", InboundAction::OptOut, stop_at))
        .await
        .unwrap();
    assert!(matches!(stop, TakenReply::Kept(_)), "{stop:?}");
    assert_eq!(
        entry(skewed).await.map(|e| e.created_at),
        Some(stop_at),
        "on the list since the STOP"
    );
    assert_eq!(
        log.take_reply(&reply(skewed, "START", InboundAction::OptIn, ahead))
            .await
            .unwrap(),
        TakenReply::Duplicate(start),
        "the provider's retry"
    );
    assert!(entry(skewed).await.is_some(), "the STOP stands");

    let operated = "+905551111114";
    list.add_opt_out(&PhoneNumber::parse(operated).unwrap()).await.unwrap();
    let before = Utc::now().trunc_subsecs(6) - chrono::Duration::hours(1);
    let late = log
        .take_reply(&reply(operated, "START", InboundAction::OptIn, before))
        .await
        .unwrap();
    assert!(matches!(late, TakenReply::Outdated(_)), "{late:?}");
    assert!(entry(operated).await.is_some(), "the operator's opt-out stands");
    let after = Utc::now().trunc_subsecs(6) + chrono::Duration::milliseconds(1);
    let start = log
        .take_reply(&reply(operated, "START", InboundAction::OptIn, after))
        .await
        .unwrap();
    assert!(matches!(start, TakenReply::Kept(_)), "{start:?}");
    assert!(entry(operated).await.is_none(), "a START sent after it opts back in");

    // A number the phone's STOP put on the list, put on it again by an operator: as of then.
    let again = "+905551111115";
    let stopped_at = Utc::now().trunc_subsecs(6) - chrono::Duration::minutes(10);
    log.take_reply(&reply(again, "STOP", InboundAction::OptOut, stopped_at))
        .await
        .unwrap();
    let (entry_again, new) = list.add_opt_out(&PhoneNumber::parse(again).unwrap()).await.unwrap();
    assert!(!new, "it was on the list");
    assert!(entry_again.created_at > stopped_at, "as of the operator's add");
    let between = Utc::now().trunc_subsecs(6) - chrono::Duration::minutes(5);
    let late = log
        .take_reply(&reply(again, "START", InboundAction::OptIn, between))
        .await
        .unwrap();
    assert!(matches!(late, TakenReply::Outdated(_)), "{late:?}");
    assert!(entry(again).await.is_some(), "the operator's add stands");
}

/// Replies of one number taken at the same time: the keyword the phone sent last is in force, whichever
/// was taken first.
async fn keywords_of_a_number_taken_at_once_leave_the_one_sent_last_in_force(database: TestDatabase) {
    use insider_messaging::{domain::InboundAction, store::InboundReply};
    let (log, list) = (database.inbound, database.opt_outs);
    // A minute ago: a reply dated ahead of the clock counts as sent when it arrived.
    let at = Utc::now().trunc_subsecs(6) - chrono::Duration::minutes(1);
    let numbers: Vec<String> = (0..12).map(|round| format!("+9055522200{round:02}")).collect();
    for (round, number) in numbers.iter().enumerate() {
        // Even rounds: the START was sent last; odd rounds: the STOP.
        let (stop_at, start_at) = if round % 2 == 0 {
            (at, at + chrono::Duration::seconds(1))
        } else {
            (at + chrono::Duration::seconds(1), at)
        };
        let stop = InboundReply {
            from: number,
            content: "STOP",
            at: stop_at,
            action: InboundAction::OptOut,
        };
        let start = InboundReply {
            from: number,
            content: "START",
            at: start_at,
            action: InboundAction::OptIn,
        };
        let (stopped, started) = tokio::join!(log.take_reply(&stop), log.take_reply(&start));
        stopped.unwrap();
        started.unwrap();
    }
    let listed: Vec<String> = list
        .list_opt_outs(100, None)
        .await
        .unwrap()
        .into_iter()
        .map(|entry| entry.to)
        .collect();
    let sent_stop_last: Vec<String> = numbers.iter().skip(1).step_by(2).cloned().collect();
    assert_eq!(listed, sent_stop_last);
}

/// The rescue as an instance with a heartbeat does it: `store::rescue::postgres::<name>`, `…::sqlite::<name>`.
mod rescue {
    use super::*;

    contract!(
        |database| std::sync::Arc::clone(&database.all);
        a_rescue_takes_the_rescuers_own_expired_claims_it_lost_but_not_a_live_replicas,
    );

    /// A claim that committed and then failed on its way to the buffer leaves rows leased to a live instance
    /// that no longer knows them: its own rescue takes them back, while another live replica's stay its own.
    /// A dead replica's are taken only when the rescuer says it may take others'.
    async fn a_rescue_takes_the_rescuers_own_expired_claims_it_lost_but_not_a_live_replicas(
        database: Arc<dyn insider_messaging::store::Database>,
    ) {
        use insider_messaging::store::Replica;
        let store: &dyn MessageStore = database.as_ref();
        let ids = enqueue(store, 3).await;
        let lost = claim_due(store, 1, "me", Duration::from_millis(50)).await[0].claim;
        let others = claim_due(store, 1, "other", Duration::from_millis(50)).await[0].claim;
        let dead = claim_due(store, 1, "dead", Duration::from_millis(50)).await[0].claim;
        for id in ["me", "other"] {
            database
                .heartbeat(&Replica {
                    id: id.to_owned(),
                    host: "test".to_owned(),
                    started_at: Utc::now(),
                    last_seen: Utc::now(),
                    in_flight: 0,
                    sending: true,
                })
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rescue = |owner: Option<&'static str>, others: bool| Rescue {
            owner,
            live: &[],
            owner_fresh: Duration::from_secs(3),
            others,
            expired_within: None,
        };

        assert!(
            store
                .rescue_expired_leases(&rescue(None, false))
                .await
                .unwrap()
                .is_empty(),
            "with a claim of its own under way, its rows may not be in `live` yet: none is taken"
        );
        let rescued = store.rescue_expired_leases(&rescue(Some("me"), false)).await.unwrap();
        assert_eq!(rescued, vec![lost.message_id], "its own, though its heartbeat is fresh");
        let rescued = store.rescue_expired_leases(&rescue(Some("me"), true)).await.unwrap();
        assert_eq!(
            rescued,
            vec![dead.message_id],
            "the dead replica's, once others' may be taken"
        );
        assert_eq!(
            (lost.message_id, others.message_id, dead.message_id),
            (ids[0], ids[1], ids[2])
        );
        let spared = store.get(others.message_id).await.unwrap().unwrap();
        assert_eq!(
            spared.status,
            MessageStatus::Sending,
            "the other replica is alive: it will record it"
        );
    }
}

async fn the_messages_of_a_paused_campaign_do_not_age_the_queue(database: TestDatabase) {
    let (store, campaigns) = (database.store, database.campaigns);
    assert!(campaigns.pause_campaign("promo").await.unwrap());
    enqueue_each(store.as_ref(), vec![scheduled(0, in_campaign("promo"))]).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stats = store.queue_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.oldest_pending_age),
        (1, None),
        "held by the operator's pause, not late"
    );
    assert!(campaigns.resume_campaign("promo").await.unwrap());
    assert!(store.queue_stats().await.unwrap().oldest_pending_age.is_some());
}

#[test]
fn two_processes_starting_on_a_fresh_sqlite_file_both_migrate_it() {
    for _ in 0..5 {
        let path = std::env::temp_dir().join(format!("insider-it-{}.db", Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", path.display());
        // Each on a thread and a runtime of its own, released together, as two processes are.
        let start = Arc::new(std::sync::Barrier::new(2));
        let starting = |url: String, start: Arc<std::sync::Barrier>| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                start.wait();
                runtime
                    .block_on(insider_messaging::startup::migrate(&url))
                    .map(|_| ())
                    .map_err(|e| format!("{e:#}"))
            })
        };
        let first = starting(url.clone(), Arc::clone(&start));
        let second = starting(url, start);
        let outcome = (first.join().expect("first"), second.join().expect("second"));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        assert!(outcome.0.is_ok() && outcome.1.is_ok(), "{outcome:?}");
    }
}

/// A Postgres restart ends the statements under way with an error of its own (57P01, "terminating
/// connection due to administrator command"), not a lost connection: it is an outage all the same, and
/// the rescue's wait before it takes other replicas' leases starts again from it.
#[tokio::test]
async fn a_statement_ended_by_a_restart_is_the_database_unreachable() {
    let database = TestDatabase::create().await;
    let store = std::sync::Arc::clone(&database.store);
    enqueue(store.as_ref(), 1).await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_claim() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$;
         CREATE TRIGGER slow_claim BEFORE UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION slow_claim();",
    )
    .execute(database.pg())
    .await
    .unwrap();
    let claiming = tokio::spawn(async move {
        let request = ClaimRequest {
            limit: 1,
            owner: "me",
            lease: LEASE,
            rate_limit: None,
            after: None,
            aging: AGING,
        };
        store.claim_due(&request).await.map(|_| ())
    });
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    wait_until("the claim sleeps in its trigger", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep'",
        )
        .bind(&name)
        .fetch_one(database.pg())
        .await
        .unwrap()
            > 0
    })
    .await;
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND wait_event = 'PgSleep'")
        .bind(&name)
        .execute(database.pg())
        .await
        .unwrap();

    let error = claiming.await.unwrap().expect_err("the claim was ended");
    assert!(error.is_unreachable(), "{error:?}");
}

/// Postgres: the migration that indexes the pending list builds on every row of `messages`, waiting for
/// the writes under way. It runs without the 10 s statement timeout of the service's connections: with
/// it, a write holding the table past 10 s (or a big table's build) failed the migration, and every
/// replica's start with it.
#[tokio::test]
async fn the_pending_index_migration_waits_for_the_table_past_the_statement_timeout() {
    let database = crate::helpers::TestDatabase::create().await;
    sqlx::raw_sql(
        "DROP INDEX messages_pending_created_idx;
         DELETE FROM _sqlx_migrations WHERE version = 20261213000001;",
    )
    .execute(database.pg())
    .await
    .unwrap();
    let writer = database.hold_lock("LOCK TABLE messages IN ROW EXCLUSIVE MODE").await;
    let migrating = tokio::spawn({
        let url = database.url.clone();
        async move { insider_messaging::startup::migrate(&url).await.map(|_| ()) }
    });
    tokio::time::sleep(Duration::from_secs(11)).await;
    writer.rollback().await.unwrap();
    let migrated = migrating.await.unwrap();
    assert!(migrated.is_ok(), "{migrated:?}");
    let indexed: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE indexname = 'messages_pending_created_idx')")
            .fetch_one(database.pg())
            .await
            .unwrap();
    assert!(indexed);
}
