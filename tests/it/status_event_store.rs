//! The status events outbox's contract, on both backends (`status_event_store::postgres::<name>`,
//! `status_event_store::sqlite::<name>`): events are written in the transaction of the change they
//! report, claimed one message at a time in order, and settled.

use std::time::Duration;

use chrono::Utc;
use insider_messaging::{
    domain::{ProviderMessageId, Receipt, ReceiptStatus, StatusEventType},
    store::{ClaimRequest, EventDelivery, EventFeed, EventStatus, Finish, NextState, Settlement},
};
use uuid::Uuid;

use crate::helpers::TestDatabase;

contract!(
    changes_write_their_events_only_when_they_happen_and_only_while_events_are_on,
    a_message_s_events_are_claimed_one_at_a_time_in_order_and_settled,
    a_round_of_deliveries_is_recorded_by_one_call_and_each_event_ends_in_its_state,
    with_a_feed_an_event_is_handed_over_leased_unless_another_of_its_message_is_pending,
    an_event_put_back_is_due_at_once_with_its_attempt_given_back_unless_it_is_no_longer_leased,
    a_holder_that_lost_its_event_to_another_claim_records_and_puts_back_nothing,
    an_event_that_fails_takes_the_pending_events_written_after_it_for_its_message_with_it,
    an_event_written_after_one_of_its_message_failed_is_written_failed,
    a_replay_leaves_an_event_being_sent_to_its_post,
    a_replay_of_an_event_behind_a_failed_one_replays_that_one_first,
    a_failed_replay_of_an_acknowledged_event_fails_none_after_it,
    an_event_written_beside_a_handed_one_but_not_leased_holds_no_room_in_the_feed,
);

const LEASE: Duration = Duration::from_secs(30);

/// Claims `n` messages and finishes them as `next` says, in one flush; returns their ids.
async fn finish_all(database: &TestDatabase, nexts: Vec<NextState>) -> Vec<Uuid> {
    let ids = database.insert_many(nexts.len()).await;
    let request = ClaimRequest {
        limit: u32::try_from(ids.len()).unwrap(),
        owner: "a",
        lease: LEASE,
        rate_limit: None,
        after: None,
        aging: std::time::Duration::from_secs(600),
    };
    let claimed = database.store.claim_due(&request).await.unwrap().messages;
    let finishes: Vec<Finish> = claimed
        .iter()
        .zip(nexts)
        .map(|(claimed, next)| Finish {
            claim: claimed.claim,
            next,
            attempt: None,
        })
        .collect();
    database.store.finish_claims(&finishes).await.unwrap();
    ids
}

/// A `delivered` receipt for `message_id`, sent under `provider_id`, stored and settled.
async fn deliver(database: &TestDatabase, provider_id: &str, message_id: Uuid) {
    let seqs = database
        .receipts
        .insert_receipts(&[Receipt {
            provider_message_id: ProviderMessageId::parse(provider_id).unwrap(),
            status: ReceiptStatus::Delivered,
            reported_at: Utc::now(),
            error: None,
        }])
        .await
        .unwrap();
    database
        .receipts
        .settle_receipts(&[Settlement::Apply {
            seq: seqs[0],
            message_id,
        }])
        .await
        .unwrap();
}

fn sent(provider_id: &str) -> NextState {
    NextState::Sent {
        provider_message_id: Some(ProviderMessageId::parse(provider_id).unwrap()),
        sent_at: Utc::now(),
    }
}

async fn changes_write_their_events_only_when_they_happen_and_only_while_events_are_on(database: &TestDatabase) {
    let events = database.all.as_ref();
    finish_all(database, vec![sent("off")]).await;
    assert!(
        events.list_events(None, 10, None).await.unwrap().is_empty(),
        "events off"
    );

    events.write_status_events(true);
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let ids = finish_all(
        database,
        vec![
            sent(&provider_id),
            NextState::Failed {
                error: "rejected".to_owned(),
            },
            NextState::RetryLater {
                delay: Duration::from_secs(60),
                error: "503".to_owned(),
            },
        ],
    )
    .await;
    let written = events.list_events(None, 10, None).await.unwrap();
    let kinds: Vec<(StatusEventType, Uuid)> = written.iter().map(|e| (e.kind, e.message_id)).collect();
    assert_eq!(
        kinds,
        [(StatusEventType::Failed, ids[1]), (StatusEventType::Sent, ids[0])],
        "newest first"
    );
    assert!(
        written
            .iter()
            .all(|e| e.status == EventStatus::Pending && e.attempts == 0)
    );
    let body: serde_json::Value = serde_json::from_str(&written[1].payload).unwrap();
    assert_eq!(body["data"]["provider_message_id"], serde_json::json!(provider_id));

    // A receipt's final state is an event; a duplicate that changes nothing is not.
    let at = Utc::now();
    let receipt = Receipt {
        provider_message_id: ProviderMessageId::parse(&provider_id).unwrap(),
        status: ReceiptStatus::Undelivered,
        reported_at: at,
        error: Some("34".to_owned()),
    };
    let seqs = database
        .receipts
        .insert_receipts(&[receipt.clone(), receipt])
        .await
        .unwrap();
    let settlements: Vec<Settlement> = seqs
        .iter()
        .map(|&seq| Settlement::Apply {
            seq,
            message_id: ids[0],
        })
        .collect();
    database.receipts.settle_receipts(&settlements).await.unwrap();
    let written = events.list_events(None, 10, None).await.unwrap();
    assert_eq!(written.len(), 3);
    assert_eq!(written[0].kind, StatusEventType::Undelivered);
    let body: serde_json::Value = serde_json::from_str(&written[0].payload).unwrap();
    assert_eq!(body["data"]["delivery_error"], serde_json::json!("34"));
}

async fn a_message_s_events_are_claimed_one_at_a_time_in_order_and_settled(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let ids = finish_all(database, vec![sent(&provider_id)]).await;
    deliver(database, &provider_id, ids[0]).await;

    let first = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [StatusEventType::Sent]
    );
    assert_eq!(first[0].attempts, 1);
    assert!(
        events.claim_due_events(10, LEASE).await.unwrap().is_empty(),
        "leased, and the next waits for it"
    );

    events
        .finish_events(&[(
            first[0].held(),
            EventDelivery::RetryIn {
                delay: Duration::ZERO,
                error: "the receiver answered 500".to_owned(),
            },
        )])
        .await
        .unwrap();
    let again = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        (again[0].id, again[0].attempts),
        (first[0].id, 2),
        "the same event, its id kept"
    );
    events
        .finish_events(&[(again[0].held(), EventDelivery::Delivered)])
        .await
        .unwrap();

    let next = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        next.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [StatusEventType::Delivered]
    );
    events
        .finish_events(&[(
            next[0].held(),
            EventDelivery::Failed {
                error: "too old".to_owned(),
            },
        )])
        .await
        .unwrap();
    let failed = events.list_events(Some(EventStatus::Failed), 10, None).await.unwrap();
    assert_eq!((failed.len(), failed[0].last_error.as_deref()), (1, Some("too old")));
    let delivered = events
        .list_events(Some(EventStatus::Delivered), 10, None)
        .await
        .unwrap();
    assert!(delivered[0].delivered_at.is_some());

    let replayed = events.retry_event(failed[0].id).await.unwrap().unwrap();
    assert_eq!((replayed.status, replayed.id), (EventStatus::Pending, failed[0].id));
    assert_eq!(events.claim_due_events(10, LEASE).await.unwrap()[0].id, failed[0].id);
    assert!(events.retry_event(Uuid::new_v4()).await.unwrap().is_none());

    // Retention takes delivered events only.
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        events
            .delete_delivered_events_before(later, 0, 10)
            .await
            .unwrap()
            .deleted,
        1
    );
    let left = events.list_events(None, 10, None).await.unwrap();
    assert_eq!(
        (left.len(), left[0].status),
        (1, EventStatus::Pending),
        "the replayed one stays"
    );
}

async fn a_round_of_deliveries_is_recorded_by_one_call_and_each_event_ends_in_its_state(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let providers: Vec<String> = (0..3).map(|_| format!("prov-{}", Uuid::new_v4())).collect();
    finish_all(database, providers.iter().map(|p| sent(p)).collect()).await;
    let round = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(round.len(), 3);

    events
        .finish_events(&[
            (round[0].held(), EventDelivery::Delivered),
            (
                round[1].held(),
                EventDelivery::RetryIn {
                    delay: Duration::ZERO,
                    error: "the receiver answered 503".to_owned(),
                },
            ),
            (
                round[2].held(),
                EventDelivery::Failed {
                    error: "too old".to_owned(),
                },
            ),
        ])
        .await
        .unwrap();

    let now_stand = events.list_events(None, 10, None).await.unwrap();
    let state_of = |seq: i64| now_stand.iter().find(|e| e.seq == seq).unwrap();
    let delivered = state_of(round[0].seq);
    assert_eq!(delivered.status, EventStatus::Delivered);
    assert!(delivered.delivered_at.is_some());
    let retrying = state_of(round[1].seq);
    assert_eq!(
        (retrying.status, retrying.last_error.as_deref(), retrying.delivered_at),
        (EventStatus::Pending, Some("the receiver answered 503"), None)
    );
    let failed = state_of(round[2].seq);
    assert_eq!(
        (failed.status, failed.last_error.as_deref()),
        (EventStatus::Failed, Some("too old"))
    );

    let again = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        again.iter().map(|e| (e.id, e.attempts)).collect::<Vec<_>>(),
        [(round[1].id, 2)],
        "only the one to retry is due again, its lease ended and its id kept"
    );
    events.finish_events(&[]).await.unwrap();
}

async fn with_a_feed_an_event_is_handed_over_leased_unless_another_of_its_message_is_pending(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let (feed, mut handed) = EventFeed::new(2, LEASE);
    events.hand_status_events_to(feed);
    let providers: Vec<String> = (0..3).map(|_| format!("prov-{}", Uuid::new_v4())).collect();
    let ids = finish_all(database, providers.iter().map(|p| sent(p)).collect()).await;

    // Room for two: those two come through the feed, leased; the third waits for a claim.
    let first = handed.try_recv().expect("the flush's events are handed over");
    let mut got: Vec<(Uuid, &str, u32)> = first
        .events
        .iter()
        .map(|e| (e.message_id, e.kind.as_str(), e.attempts))
        .collect();
    got.sort();
    let mut expected = vec![(ids[0], "message.sent", 1), (ids[1], "message.sent", 1)];
    expected.sort();
    assert_eq!(got, expected);
    assert!(handed.try_recv().is_err(), "one handover per commit");
    let claimed = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        claimed.iter().map(|e| e.message_id).collect::<Vec<_>>(),
        [ids[2]],
        "the handed ones are leased"
    );

    // The room comes back once the handover is dropped (recorded); an event behind one of its message
    // still pending is written, but not handed over: the claim takes it when its turn comes.
    let sent_event = first.events.iter().find(|e| e.message_id == ids[0]).unwrap().held();
    drop(first);
    deliver(database, &providers[0], ids[0]).await;
    assert!(handed.try_recv().is_err(), "its message.sent is not acknowledged yet");
    assert!(events.claim_due_events(10, LEASE).await.unwrap().is_empty());
    events
        .finish_events(&[(sent_event, EventDelivery::Delivered)])
        .await
        .unwrap();
    let next = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        next.iter().map(|e| (e.message_id, e.kind)).collect::<Vec<_>>(),
        [(ids[0], StatusEventType::Delivered)]
    );

    // With the room back, a new message's event is handed over again.
    let more = finish_all(database, vec![sent(&format!("prov-{}", Uuid::new_v4()))]).await;
    let again = handed.try_recv().expect("room again");
    assert_eq!(again.events.iter().map(|e| e.message_id).collect::<Vec<_>>(), [more[0]]);
}

async fn an_event_put_back_is_due_at_once_with_its_attempt_given_back_unless_it_is_no_longer_leased(
    database: &TestDatabase,
) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let ids = finish_all(
        database,
        (0..3).map(|_| sent(&format!("prov-{}", Uuid::new_v4()))).collect(),
    )
    .await;
    let claimed = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let held_of = |id: Uuid| claimed.iter().find(|e| e.message_id == id).unwrap().held();
    events
        .finish_events(&[(held_of(ids[0]), EventDelivery::Delivered)])
        .await
        .unwrap();

    // The delivered one is no longer leased: left as it is.
    let put_back = events
        .put_back_events(&[held_of(ids[0]), held_of(ids[1])], "not sent: stopping")
        .await
        .unwrap();
    assert_eq!(put_back, 1);

    let again = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        again.iter().map(|e| (e.message_id, e.attempts)).collect::<Vec<_>>(),
        [(ids[1], 1)],
        "due at once, its lease's attempt given back (then counted again by this claim); the third still leased"
    );
    let delivered = events
        .list_events(Some(EventStatus::Delivered), 10, None)
        .await
        .unwrap();
    assert_eq!(delivered.iter().map(|e| e.message_id).collect::<Vec<_>>(), [ids[0]]);
    let listed = events.list_events(None, 10, None).await.unwrap();
    let put_back_event = listed.iter().find(|e| e.message_id == ids[1]).unwrap();
    assert_eq!(put_back_event.last_error.as_deref(), Some("not sent: stopping"));
}

async fn a_holder_that_lost_its_event_to_another_claim_records_and_puts_back_nothing(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    finish_all(database, vec![sent(&format!("prov-{}", Uuid::new_v4()))]).await;
    // A lease of nothing: it has run out by the next claim, which takes the event as attempt 2.
    let lost = events.claim_due_events(10, Duration::ZERO).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let taken = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        taken.iter().map(|e| (e.id, e.attempts)).collect::<Vec<_>>(),
        [(lost[0].id, 2)]
    );

    assert_eq!(
        events
            .put_back_events(&[lost[0].held()], "not sent: stopping")
            .await
            .unwrap(),
        0
    );
    events
        .finish_events(&[(
            lost[0].held(),
            EventDelivery::RetryIn {
                delay: Duration::ZERO,
                error: "the receiver answered 500".to_owned(),
            },
        )])
        .await
        .unwrap();
    let listed = events.list_events(None, 10, None).await.unwrap();
    assert_eq!(
        (listed[0].status, listed[0].last_error.as_deref()),
        (EventStatus::Pending, None),
        "the first holder's late answer is not recorded"
    );
    assert!(
        events.claim_due_events(10, LEASE).await.unwrap().is_empty(),
        "still leased to its new holder"
    );

    events
        .finish_events(&[(taken[0].held(), EventDelivery::Delivered)])
        .await
        .unwrap();
    let listed = events.list_events(None, 10, None).await.unwrap();
    assert_eq!(listed[0].status, EventStatus::Delivered);
}

async fn an_event_that_fails_takes_the_pending_events_written_after_it_for_its_message_with_it(
    database: &TestDatabase,
) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let providers: Vec<String> = (0..2).map(|_| format!("prov-{}", Uuid::new_v4())).collect();
    let ids = finish_all(database, providers.iter().map(|p| sent(p)).collect()).await;
    deliver(database, &providers[0], ids[0]).await;
    deliver(database, &providers[1], ids[1]).await;

    let round = events.claim_due_events(10, LEASE).await.unwrap();
    let of = |id: Uuid| round.iter().find(|e| e.message_id == id).unwrap();
    events
        .finish_events(&[
            (
                of(ids[0]).held(),
                EventDelivery::Failed {
                    error: "not acknowledged within STATUS_WEBHOOK_MAX_AGE".to_owned(),
                },
            ),
            (
                of(ids[1]).held(),
                EventDelivery::RetryIn {
                    delay: Duration::ZERO,
                    error: "the receiver answered 503".to_owned(),
                },
            ),
        ])
        .await
        .unwrap();

    let failed = events.list_events(Some(EventStatus::Failed), 10, None).await.unwrap();
    let mut kinds: Vec<(Uuid, StatusEventType)> = failed.iter().map(|e| (e.message_id, e.kind)).collect();
    kinds.sort_by_key(|(_, kind)| kind.as_str());
    assert_eq!(
        kinds,
        [(ids[0], StatusEventType::Delivered), (ids[0], StatusEventType::Sent)],
        "its message.delivered could not go before its message.sent"
    );
    let behind = failed.iter().find(|e| e.kind == StatusEventType::Delivered).unwrap();
    assert_eq!(
        behind.last_error.as_deref(),
        Some(format!("not sent: event {} of this message, before it, failed", of(ids[0]).id).as_str())
    );
    assert_eq!(
        events
            .claim_due_events(10, LEASE)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.message_id, e.kind))
            .collect::<Vec<_>>(),
        [(ids[1], StatusEventType::Sent)],
        "the other message's events are untouched"
    );

    // Replayed, the first goes again; the one behind it waits for its own replay.
    events.retry_event(of(ids[0]).id).await.unwrap().unwrap();
    assert_eq!(
        events
            .claim_due_events(10, LEASE)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [of(ids[0]).id]
    );
}

async fn an_event_written_after_one_of_its_message_failed_is_written_failed(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    // With a feed: the event that would be handed over leased is not, being behind a failed one.
    let (feed, mut handed) = EventFeed::new(10, LEASE);
    events.hand_status_events_to(feed);
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let ids = finish_all(database, vec![sent(&provider_id)]).await;
    let sent_event = handed.try_recv().expect("the message.sent event is handed over").events[0].clone();
    events
        .finish_events(&[(
            sent_event.held(),
            EventDelivery::Failed {
                error: "not acknowledged within STATUS_WEBHOOK_MAX_AGE".to_owned(),
            },
        )])
        .await
        .unwrap();

    // The carrier's receipt comes after: its message.delivered must not go before message.sent.
    deliver(database, &provider_id, ids[0]).await;
    assert!(handed.try_recv().is_err(), "not handed over");
    assert!(
        events.claim_due_events(10, LEASE).await.unwrap().is_empty(),
        "nor claimable"
    );
    let failed = events.list_events(Some(EventStatus::Failed), 10, None).await.unwrap();
    let delivered = failed
        .iter()
        .find(|e| e.kind == StatusEventType::Delivered)
        .expect("written failed");
    assert_eq!(
        delivered.last_error.as_deref(),
        Some(format!("not sent: event {} of this message, before it, failed", sent_event.id).as_str())
    );
}

async fn a_replay_leaves_an_event_being_sent_to_its_post(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    finish_all(database, vec![sent(&format!("prov-{}", Uuid::new_v4()))]).await;
    let held = events.claim_due_events(10, LEASE).await.unwrap();

    let replayed = events.retry_event(held[0].id).await.unwrap().expect("it exists");
    assert_eq!((replayed.status, replayed.attempts), (EventStatus::Pending, 1));
    assert!(
        events.claim_due_events(10, LEASE).await.unwrap().is_empty(),
        "still its holder's: not due again beside the POST under way"
    );
    events
        .finish_events(&[(held[0].held(), EventDelivery::Delivered)])
        .await
        .unwrap();
    let listed = events.list_events(None, 10, None).await.unwrap();
    assert_eq!(
        listed[0].status,
        EventStatus::Delivered,
        "its POST's outcome is recorded"
    );

    // One waiting out a retry's backoff, unleased, is due at once when replayed.
    finish_all(database, vec![sent(&format!("prov-{}", Uuid::new_v4()))]).await;
    let waiting = events.claim_due_events(10, LEASE).await.unwrap();
    events
        .finish_events(&[(
            waiting[0].held(),
            EventDelivery::RetryIn {
                delay: Duration::from_secs(3600),
                error: "the receiver answered 503".to_owned(),
            },
        )])
        .await
        .unwrap();
    assert!(
        events.claim_due_events(10, LEASE).await.unwrap().is_empty(),
        "an hour to wait"
    );
    events.retry_event(waiting[0].id).await.unwrap().unwrap();
    assert_eq!(events.claim_due_events(10, LEASE).await.unwrap()[0].id, waiting[0].id);

    // Once delivered, a replay sends it again, under its id.
    let again = events.retry_event(held[0].id).await.unwrap().unwrap();
    assert_eq!(again.status, EventStatus::Pending);
    assert_eq!(events.claim_due_events(10, LEASE).await.unwrap()[0].id, held[0].id);
}

/// Postgres only, on its planner: a retention round reads about the batch it asks for, also when fewer
/// events than that are old enough (each minute's round, once the backlog is gone). Ordered by
/// `delivered_at`, which no index holds, a round read and sorted every delivered event kept; asked as
/// "the oldest 10 delivered before the cut", it walked all of them looking for 10 when 5 were.
#[tokio::test]
async fn a_retention_batch_of_delivered_events_reads_the_batch_not_every_delivered_event() {
    const DELIVERED: i64 = 20_000;
    let database = TestDatabase::create().await;
    let store = insider_messaging::startup::migrate(&database.url).await.unwrap();
    // Set up on a connection of its own, closed after: a backend reports what it read when it exits.
    let setup = sqlx::PgPool::connect(&database.url).await.unwrap();
    sqlx::query(
        "INSERT INTO status_events (id, message_id, type, payload, status, delivered_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'message.sent', '{}', 'delivered',
                CASE WHEN i <= 5 THEN now() - interval '2 days' ELSE now() END
           FROM generate_series(1, $1) i",
    )
    .bind(DELIVERED)
    .execute(&setup)
    .await
    .unwrap();
    sqlx::query("ANALYZE status_events").execute(&setup).await.unwrap();
    setup.close().await;

    // Rows and index entries of `status_events` read so far, inserted, deleted.
    async fn counted(database: &TestDatabase) -> (i64, i64, i64) {
        sqlx::query_as(
            "SELECT t.seq_tup_read + coalesce(sum(i.idx_tup_read), 0)::bigint, t.n_tup_ins, t.n_tup_del
               FROM pg_stat_user_tables t LEFT JOIN pg_stat_user_indexes i ON i.relid = t.relid
              WHERE t.relname = 'status_events' GROUP BY t.seq_tup_read, t.n_tup_ins, t.n_tup_del",
        )
        .fetch_one(database.pg())
        .await
        .unwrap()
    }
    crate::helpers::wait_until("the set-up is counted", || async {
        counted(&database).await.1 >= DELIVERED
    })
    .await;
    let (read_before, _, _) = counted(&database).await;

    let day_ago = Utc::now() - chrono::Duration::days(1);
    let deleted = store
        .delete_delivered_events_before(day_ago, 0, 10)
        .await
        .unwrap()
        .deleted;
    assert_eq!(deleted, 5, "the five delivered two days ago");
    drop(store);
    crate::helpers::wait_until("the delete is counted", || async { counted(&database).await.2 >= 5 }).await;
    let (read_after, _, _) = counted(&database).await;
    let read = read_after - read_before;
    assert!(
        read <= 500,
        "deleting the 5 old ones of {DELIVERED} delivered events read {read} rows and index entries"
    );
}

/// On Postgres a change writing its message's next event can run beside the delivery record that fails
/// the one before: the write saw that one still pending, and the failure's cascade cannot see a row not
/// yet committed. The claim then finds the later event behind a failed one, and fails it instead of
/// sending it out of order.
#[tokio::test]
async fn an_event_written_while_the_one_before_it_failed_is_failed_by_the_claim_not_sent() {
    let database = TestDatabase::create().await;
    let events = database.all.as_ref();
    events.write_status_events(true);
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let ids = finish_all(&database, vec![sent(&provider_id)]).await;
    let sent_event = events.claim_due_events(10, LEASE).await.unwrap().remove(0);

    // The carrier's receipt's change, written as `settle_receipts` writes it, its commit still ahead.
    let mut change = database.pg().begin().await.unwrap();
    sqlx::query(
        "INSERT INTO status_events (id, message_id, type, payload) VALUES (gen_random_uuid(), $1, 'message.delivered', '{}')",
    )
    .bind(ids[0])
    .execute(&mut *change)
    .await
    .unwrap();
    events
        .finish_events(&[(
            sent_event.held(),
            EventDelivery::Failed {
                error: "not acknowledged within STATUS_WEBHOOK_MAX_AGE".to_owned(),
            },
        )])
        .await
        .unwrap();
    change.commit().await.unwrap();

    assert!(
        events.claim_due_events(10, LEASE).await.unwrap().is_empty(),
        "message.delivered does not go after message.sent failed"
    );
    let failed = events.list_events(Some(EventStatus::Failed), 10, None).await.unwrap();
    let delivered = failed
        .iter()
        .find(|e| e.kind == StatusEventType::Delivered)
        .expect("failed by the claim");
    assert_eq!(
        delivered.last_error.as_deref(),
        Some(format!("not sent: event {} of this message, before it, failed", sent_event.id).as_str())
    );
    assert!(
        events
            .list_events(Some(EventStatus::Pending), 10, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_replay_of_an_event_behind_a_failed_one_replays_that_one_first(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let ids = finish_all(database, vec![sent(&provider_id)]).await;
    deliver(database, &provider_id, ids[0]).await;
    let sent_event = events.claim_due_events(10, LEASE).await.unwrap().remove(0);
    assert_eq!(sent_event.kind, StatusEventType::Sent);
    events
        .finish_events(&[(
            sent_event.held(),
            EventDelivery::Failed {
                error: "not acknowledged within STATUS_WEBHOOK_MAX_AGE".to_owned(),
            },
        )])
        .await
        .unwrap();
    let failed = events.list_events(Some(EventStatus::Failed), 10, None).await.unwrap();
    let delivered_event = failed.iter().find(|e| e.kind == StatusEventType::Delivered).unwrap();

    // The operator replays the newest failed event, the first `GET /events?status=failed` lists.
    let replayed = events.retry_event(delivered_event.id).await.unwrap().unwrap();
    assert_eq!(replayed.status, EventStatus::Pending);
    let round = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(
        round.iter().map(|e| e.id).collect::<Vec<_>>(),
        [sent_event.id],
        "its message.sent goes again, first"
    );
    events
        .finish_events(&[(round[0].held(), EventDelivery::Delivered)])
        .await
        .unwrap();
    assert_eq!(
        events
            .claim_due_events(10, LEASE)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        [delivered_event.id]
    );
}

/// The receiver lost an event it had acknowledged; the operator replays it while a later event of its
/// message waits for a retry, and the replay fails: the later one is not failed with it (the receiver had
/// the earlier one), and goes on.
async fn a_failed_replay_of_an_acknowledged_event_fails_none_after_it(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let provider_id = format!("prov-{}", Uuid::new_v4());
    let ids = finish_all(database, vec![sent(&provider_id)]).await;
    let sent_event = events.claim_due_events(10, LEASE).await.unwrap().remove(0);
    events
        .finish_events(&[(sent_event.held(), EventDelivery::Delivered)])
        .await
        .unwrap();
    deliver(database, &provider_id, ids[0]).await;
    let delivered_event = events.claim_due_events(10, LEASE).await.unwrap().remove(0);
    assert_eq!(delivered_event.kind, StatusEventType::Delivered);
    events
        .finish_events(&[(
            delivered_event.held(),
            EventDelivery::RetryIn {
                delay: Duration::ZERO,
                error: "the receiver answered 503".to_owned(),
            },
        )])
        .await
        .unwrap();

    let replayed = events.retry_event(sent_event.id).await.unwrap().unwrap();
    assert!(replayed.delivered_at.is_some(), "it keeps the time the receiver had it");
    let round = events.claim_due_events(10, LEASE).await.unwrap();
    assert_eq!(round.iter().map(|e| e.id).collect::<Vec<_>>(), [sent_event.id]);
    events
        .finish_events(&[(
            round[0].held(),
            EventDelivery::Failed {
                error: "not acknowledged within STATUS_WEBHOOK_MAX_AGE".to_owned(),
            },
        )])
        .await
        .unwrap();

    let pending = events.list_events(Some(EventStatus::Pending), 10, None).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.id).collect::<Vec<_>>(), [delivered_event.id]);
    assert_eq!(
        events.claim_due_events(10, LEASE).await.unwrap()[0].id,
        delivered_event.id,
        "it goes on"
    );
}

/// Of two events written together, one handed over and one behind a pending event of its message (not
/// leased), only the handed one holds room in the feed: the next message's event is handed over too.
async fn an_event_written_beside_a_handed_one_but_not_leased_holds_no_room_in_the_feed(database: &TestDatabase) {
    let events = database.all.as_ref();
    events.write_status_events(true);
    let (feed, mut handed) = EventFeed::new(4, LEASE);
    events.hand_status_events_to(feed);
    let providers: Vec<String> = (0..2).map(|_| format!("prov-{}", Uuid::new_v4())).collect();
    let ids = finish_all(database, providers.iter().map(|p| sent(p)).collect()).await;
    let first = handed.try_recv().expect("both message.sent events are handed over");
    let b_sent = first.events.iter().find(|e| e.message_id == ids[1]).unwrap().held();
    events
        .finish_events(&[(b_sent, EventDelivery::Delivered)])
        .await
        .unwrap();

    // Both delivered in one settle: A's event waits behind its message.sent, B's is handed over.
    let seqs = database
        .receipts
        .insert_receipts(
            &providers
                .iter()
                .map(|p| Receipt {
                    provider_message_id: ProviderMessageId::parse(p).unwrap(),
                    status: ReceiptStatus::Delivered,
                    reported_at: Utc::now(),
                    error: None,
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    database
        .receipts
        .settle_receipts(&[
            Settlement::Apply {
                seq: seqs[0],
                message_id: ids[0],
            },
            Settlement::Apply {
                seq: seqs[1],
                message_id: ids[1],
            },
        ])
        .await
        .unwrap();
    let second = handed.try_recv().expect("B's message.delivered is handed over");
    assert_eq!(second.events.iter().map(|e| e.message_id).collect::<Vec<_>>(), [ids[1]]);

    // Room for four: two held by the first handover, one by the second.
    let more = finish_all(database, vec![sent(&format!("prov-{}", Uuid::new_v4()))]).await;
    let third = handed.try_recv().expect("room for one more");
    assert_eq!(third.events.iter().map(|e| e.message_id).collect::<Vec<_>>(), [more[0]]);
    drop((first, second));
}
