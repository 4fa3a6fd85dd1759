//! The receipt store's contract, on both backends (`receipt_store::postgres::<name>`,
//! `receipt_store::sqlite::<name>`): receipts are stored pending, settled once, and move a message's
//! delivery state only forward, never on the wrong message.

use std::sync::Arc;

use chrono::{DateTime, Duration as Span, SubsecRound, Utc};
use insider_messaging::{
    domain::{ProviderMessageId, Receipt, ReceiptStatus},
    store::{
        ClaimRequest, EventStatus, Finish, MessageStore, NextState, PendingReceipts, ReceiptFilter, ReceiptOutcome,
        ReceiptStore, Settlement,
    },
};
use uuid::Uuid;

use crate::helpers::TestDatabase;

contract!(
    receipts_are_stored_pending_in_order_and_found_by_seq_provider_id_or_sweep,
    a_final_state_is_never_undone_and_duplicates_and_older_reports_change_nothing,
    an_id_that_names_several_messages_is_applied_to_none,
    a_receipt_applied_to_a_message_not_sent_under_its_id_stays_pending,
    a_receipt_is_settled_once_and_the_lists_show_what_became_of_each,
    a_batch_for_many_messages_settles_in_one_call_with_an_event_per_final_state,
    settled_receipts_are_deleted_oldest_first_in_batches_and_pending_ones_stay,
);

fn unique_id() -> String {
    format!("prov-{}", Uuid::new_v4())
}

fn receipt(provider_id: &str, status: ReceiptStatus, at: DateTime<Utc>, error: Option<&str>) -> Receipt {
    Receipt {
        provider_message_id: ProviderMessageId::parse(provider_id).unwrap(),
        status,
        reported_at: at,
        error: error.map(str::to_owned),
    }
}

/// `n` messages, each recorded sent under the provider id given for it.
async fn sent_under(database: &TestDatabase, provider_ids: &[&str]) -> Vec<Uuid> {
    let store: &dyn MessageStore = database.store.as_ref();
    let ids = database.insert_many(provider_ids.len()).await;
    let request = ClaimRequest {
        limit: u32::try_from(ids.len()).unwrap(),
        owner: "a",
        lease: std::time::Duration::from_secs(30),
        rate_limit: None,
        after: None,
        aging: std::time::Duration::from_secs(600),
    };
    let claimed = store.claim_due(&request).await.unwrap().messages;
    let finishes: Vec<Finish> = claimed
        .iter()
        .zip(provider_ids)
        .map(|(claimed, provider_id)| Finish {
            claim: claimed.claim,
            next: NextState::Sent {
                provider_message_id: Some(ProviderMessageId::parse(provider_id).unwrap()),
                sent_at: Utc::now(),
            },
            attempt: None,
        })
        .collect();
    assert!(
        store
            .finish_claims(&finishes)
            .await
            .unwrap()
            .iter()
            .all(|changed| *changed)
    );
    ids
}

async fn settle_one(receipts: &dyn ReceiptStore, settlement: Settlement) -> Option<ReceiptOutcome> {
    receipts.settle_receipts(&[settlement]).await.unwrap()[0]
}

async fn receipts_are_stored_pending_in_order_and_found_by_seq_provider_id_or_sweep(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let (a, b) = (unique_id(), unique_id());
    let at = Utc::now().trunc_subsecs(6);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Buffered, at, None),
            receipt(&b, ReceiptStatus::Undelivered, at, Some("34")),
            receipt(&a, ReceiptStatus::Delivered, at, None),
        ])
        .await
        .unwrap();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");

    let all = receipts
        .pending_receipts(PendingReceipts::After { after: None, limit: 10 })
        .await
        .unwrap();
    assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    assert!(
        all.iter()
            .all(|r| r.outcome == ReceiptOutcome::Pending && r.settled_at.is_none())
    );
    assert_eq!(
        (all[1].provider_message_id.as_str(), all[1].error.as_deref()),
        (b.as_str(), Some("34"))
    );
    assert_eq!((all[1].status, all[1].reported_at), (ReceiptStatus::Undelivered, at));

    let after_first = receipts
        .pending_receipts(PendingReceipts::After {
            after: Some(seqs[0]),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(after_first.iter().map(|r| r.seq).collect::<Vec<_>>(), [seqs[1]]);
    let of_a = receipts
        .pending_receipts(PendingReceipts::ProviderIds(std::slice::from_ref(&a)))
        .await
        .unwrap();
    assert_eq!(of_a.iter().map(|r| r.seq).collect::<Vec<_>>(), [seqs[0], seqs[2]]);
    let by_seq = receipts
        .pending_receipts(PendingReceipts::Seqs(&seqs[1..2]))
        .await
        .unwrap();
    assert_eq!(by_seq[0].provider_message_id, b);

    // Matching sees only sent messages.
    assert!(
        receipts
            .messages_by_provider_id(std::slice::from_ref(&a))
            .await
            .unwrap()
            .is_empty()
    );
    let ids = sent_under(database, &[&a]).await;
    assert_eq!(
        receipts.messages_by_provider_id(&[a.clone(), b]).await.unwrap(),
        [(a, ids[0])]
    );
}

async fn a_final_state_is_never_undone_and_duplicates_and_older_reports_change_nothing(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let a = unique_id();
    let ids = sent_under(database, &[&a]).await;
    let t0 = Utc::now().trunc_subsecs(6) - Span::minutes(10);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Buffered, t0 + Span::minutes(2), None),
            receipt(&a, ReceiptStatus::Accepted, t0 + Span::minutes(1), None),
            receipt(&a, ReceiptStatus::Delivered, t0 + Span::minutes(3), None),
            receipt(&a, ReceiptStatus::Delivered, t0 + Span::minutes(4), None),
            receipt(&a, ReceiptStatus::Buffered, t0 + Span::minutes(5), None),
            receipt(&a, ReceiptStatus::Undelivered, t0 + Span::minutes(6), Some("late")),
        ])
        .await
        .unwrap();
    let settlements: Vec<Settlement> = seqs
        .iter()
        .map(|&seq| Settlement::Apply {
            seq,
            message_id: ids[0],
        })
        .collect();
    let outcomes = receipts.settle_receipts(&settlements).await.unwrap();
    use ReceiptOutcome::{Applied, Ignored};
    assert_eq!(
        outcomes,
        [
            Some(Applied),
            Some(Ignored),
            Some(Applied),
            Some(Ignored),
            Some(Ignored),
            Some(Ignored)
        ],
        "buffered; an older accepted; delivered; its duplicate; buffered and undelivered after it"
    );
    let counts = receipts.delivery_counts_since(t0).await.unwrap();
    assert_eq!((counts.delivered, counts.undelivered), (1, 0));
    let message = database.store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(message.delivery_status, Some(ReceiptStatus::Delivered));
    assert_eq!(
        message.delivered_at,
        Some(t0 + Span::minutes(3)),
        "the first delivery's time stays"
    );
    assert_eq!(message.delivery_error, None);
}

/// What a stale cache entry leads to: the message named is not sent under the receipt's id (sent under
/// another, not sent yet, or not in this database). The receipt stays for a match the database makes.
async fn a_receipt_applied_to_a_message_not_sent_under_its_id_stays_pending(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let (a, b, other) = (unique_id(), unique_id(), unique_id());
    // `ours` is sent under `b`: a receipt for `b` settled against another message is not ambiguous
    // for it, but pending, for the database to match to `ours`.
    let sent_ids = sent_under(database, &[&other, &b]).await;
    let (sent, ours) = (sent_ids[0], sent_ids[1]);
    let unsent = database.insert_many(1).await[0];
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Delivered, Utc::now(), None),
            receipt(&a, ReceiptStatus::Delivered, Utc::now(), None),
            receipt(&a, ReceiptStatus::Delivered, Utc::now(), None),
            receipt(&b, ReceiptStatus::Delivered, Utc::now(), None),
        ])
        .await
        .unwrap();
    let settlements = [
        Settlement::Apply {
            seq: seqs[0],
            message_id: sent,
        },
        Settlement::Apply {
            seq: seqs[1],
            message_id: unsent,
        },
        Settlement::Apply {
            seq: seqs[2],
            message_id: Uuid::new_v4(),
        },
        Settlement::Apply {
            seq: seqs[3],
            message_id: Uuid::new_v4(),
        },
    ];
    let outcomes = receipts.settle_receipts(&settlements).await.unwrap();
    assert_eq!(outcomes, [Some(ReceiptOutcome::Pending); 4]);
    let pending = receipts.pending_receipts(PendingReceipts::Seqs(&seqs)).await.unwrap();
    assert_eq!(pending.len(), 4, "all four still pending: {pending:?}");
    assert!(
        pending
            .iter()
            .all(|receipt| receipt.message_id.is_none() && receipt.settled_at.is_none())
    );
    let message = database.store.get(sent).await.unwrap().unwrap();
    assert_eq!(
        message.delivery_status, None,
        "the message sent under another id did not move"
    );
    let outcome = settle_one(
        receipts,
        Settlement::Apply {
            seq: seqs[3],
            message_id: ours,
        },
    )
    .await;
    assert_eq!(
        outcome,
        Some(ReceiptOutcome::Applied),
        "matched to the message sent under `b`"
    );

    // Once the message is sent under the id, the same receipt applies to it. (The claim takes the oldest
    // due message first: the one not sent before, not the one `sent_under` adds.)
    sent_under(database, &[&a]).await;
    let outcome = settle_one(
        receipts,
        Settlement::Apply {
            seq: seqs[0],
            message_id: unsent,
        },
    )
    .await;
    assert_eq!(outcome, Some(ReceiptOutcome::Applied));
}

async fn an_id_that_names_several_messages_is_applied_to_none(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let (shared, own) = (unique_id(), unique_id());
    let ids = sent_under(database, &[&shared, &shared, &own]).await;
    let at = Utc::now().trunc_subsecs(6);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&shared, ReceiptStatus::Delivered, at, None),
            receipt(&own, ReceiptStatus::Undelivered, at, Some("EC 34")),
        ])
        .await
        .unwrap();
    let mut matched = receipts
        .messages_by_provider_id(std::slice::from_ref(&shared))
        .await
        .unwrap();
    matched.sort();
    let mut expected = vec![(shared.clone(), ids[0]), (shared.clone(), ids[1])];
    expected.sort();
    assert_eq!(matched, expected);

    // Even when told (by a stale cache) that the id names one message, the store refuses to apply it.
    let outcomes = receipts
        .settle_receipts(&[
            Settlement::Apply {
                seq: seqs[0],
                message_id: ids[0],
            },
            Settlement::Apply {
                seq: seqs[1],
                message_id: ids[2],
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [Some(ReceiptOutcome::Ambiguous), Some(ReceiptOutcome::Applied)]
    );
    for id in &ids[..2] {
        assert_eq!(database.store.get(*id).await.unwrap().unwrap().delivery_status, None);
    }
    let undelivered = database.store.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(undelivered.delivery_status, Some(ReceiptStatus::Undelivered));
    assert_eq!(
        (undelivered.delivered_at, undelivered.delivery_error.as_deref()),
        (None, Some("EC 34"))
    );
    let counts = receipts.delivery_counts_since(at - Span::hours(1)).await.unwrap();
    assert_eq!((counts.delivered, counts.undelivered), (0, 1));
}

async fn a_receipt_is_settled_once_and_the_lists_show_what_became_of_each(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let (a, lost, twice) = (unique_id(), unique_id(), unique_id());
    let ids = sent_under(database, &[&a, &twice, &twice]).await;
    let at = Utc::now().trunc_subsecs(6);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Delivered, at, None),
            receipt(&lost, ReceiptStatus::Delivered, at, None),
            receipt(&twice, ReceiptStatus::Delivered, at, None),
            receipt(&a, ReceiptStatus::Delivered, at, None),
        ])
        .await
        .unwrap();
    let apply = |seq| Settlement::Apply {
        seq,
        message_id: ids[0],
    };
    assert_eq!(
        settle_one(receipts, apply(seqs[0])).await,
        Some(ReceiptOutcome::Applied)
    );
    assert_eq!(settle_one(receipts, apply(seqs[0])).await, None, "already settled");
    assert_eq!(
        settle_one(receipts, Settlement::Unmatched { seq: seqs[1] }).await,
        Some(ReceiptOutcome::Unmatched)
    );
    assert_eq!(settle_one(receipts, Settlement::Unmatched { seq: seqs[1] }).await, None);
    assert_eq!(
        settle_one(receipts, Settlement::Ambiguous { seq: seqs[2] }).await,
        Some(ReceiptOutcome::Ambiguous)
    );
    assert_eq!(
        settle_one(receipts, apply(seqs[3])).await,
        Some(ReceiptOutcome::Ignored)
    );
    assert!(
        receipts
            .pending_receipts(PendingReceipts::After { after: None, limit: 10 })
            .await
            .unwrap()
            .is_empty()
    );

    let seqs_of = |list: Vec<insider_messaging::store::StoredReceipt>| list.iter().map(|r| r.seq).collect::<Vec<_>>();
    let not_matched = receipts
        .list_receipts(ReceiptFilter::NotMatched, 10, None)
        .await
        .unwrap();
    assert_eq!(seqs_of(not_matched.clone()), [seqs[2], seqs[1]], "newest first");
    assert!(
        not_matched
            .iter()
            .all(|r| r.message_id.is_none() && r.settled_at.is_some())
    );
    let matched = receipts.list_receipts(ReceiptFilter::Matched, 10, None).await.unwrap();
    assert_eq!(seqs_of(matched.clone()), [seqs[3], seqs[0]]);
    assert!(matched.iter().all(|r| r.message_id == Some(ids[0])));
    assert_eq!(
        seqs_of(
            receipts
                .list_receipts(ReceiptFilter::All, 2, Some(seqs[2]))
                .await
                .unwrap()
        ),
        [seqs[1], seqs[0]],
        "a page before a cursor"
    );
    let _: &Arc<dyn ReceiptStore> = &database.receipts;
}

async fn a_batch_for_many_messages_settles_in_one_call_with_an_event_per_final_state(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let events = database.all.as_ref();
    let (a, b, c, twice) = (unique_id(), unique_id(), unique_id(), unique_id());
    let ids = sent_under(database, &[&a, &b, &c, &twice, &twice]).await;
    events.write_status_events(true);
    let at = Utc::now().trunc_subsecs(6) - Span::minutes(1);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Buffered, at, None),
            receipt(&b, ReceiptStatus::Undelivered, at, Some("34")),
            receipt(&a, ReceiptStatus::Delivered, at + Span::seconds(1), None),
            receipt(&c, ReceiptStatus::Buffered, at, None),
            receipt(&twice, ReceiptStatus::Delivered, at, None),
            receipt(&unique_id(), ReceiptStatus::Delivered, at, None),
        ])
        .await
        .unwrap();
    let settlements = [
        Settlement::Apply {
            seq: seqs[0],
            message_id: ids[0],
        },
        Settlement::Apply {
            seq: seqs[1],
            message_id: ids[1],
        },
        Settlement::Apply {
            seq: seqs[2],
            message_id: ids[0],
        },
        Settlement::Apply {
            seq: seqs[3],
            message_id: ids[2],
        },
        Settlement::Apply {
            seq: seqs[4],
            message_id: ids[3],
        },
        Settlement::Unmatched { seq: seqs[5] },
    ];
    let outcomes = receipts.settle_receipts(&settlements).await.unwrap();
    use ReceiptOutcome::{Ambiguous, Applied, Unmatched};
    assert_eq!(
        outcomes,
        [
            Some(Applied),
            Some(Applied),
            Some(Applied),
            Some(Applied),
            Some(Ambiguous),
            Some(Unmatched)
        ],
        "a's buffered then delivered, b undelivered, c buffered; an id naming two; one matching nothing"
    );
    let mut statuses = Vec::new();
    for id in &ids[..4] {
        statuses.push(database.store.get(*id).await.unwrap().unwrap().delivery_status);
    }
    assert_eq!(
        statuses,
        [
            Some(ReceiptStatus::Delivered),
            Some(ReceiptStatus::Undelivered),
            Some(ReceiptStatus::Buffered),
            None
        ]
    );

    let written = events.list_events(Some(EventStatus::Pending), 20, None).await.unwrap();
    let mut finals: Vec<(Uuid, String, serde_json::Value)> = written
        .iter()
        .filter(|e| e.kind != insider_messaging::domain::StatusEventType::Sent)
        .map(|e| {
            let body: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            (
                e.message_id,
                e.kind.as_str().to_owned(),
                body["data"]["delivery_error"].clone(),
            )
        })
        .collect();
    finals.sort_by_key(|(id, _, _)| ids.iter().position(|i| i == id));
    assert_eq!(
        finals,
        [
            (ids[0], "message.delivered".to_owned(), serde_json::Value::Null),
            (ids[1], "message.undelivered".to_owned(), serde_json::json!("34")),
        ],
        "one event per final state reached, none for an intermediate one, an ambiguous or an unmatched"
    );
    assert_eq!(
        receipts.settle_receipts(&settlements).await.unwrap(),
        [None, None, None, None, None, None],
        "settled once"
    );
}

async fn settled_receipts_are_deleted_oldest_first_in_batches_and_pending_ones_stay(database: &TestDatabase) {
    let receipts = database.receipts.as_ref();
    let (a, b, waiting) = (unique_id(), unique_id(), unique_id());
    let at = Utc::now().trunc_subsecs(6);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Delivered, at, None),
            receipt(&b, ReceiptStatus::Delivered, at, None),
            receipt(&waiting, ReceiptStatus::Delivered, at, None),
        ])
        .await
        .unwrap();
    for seq in &seqs[..2] {
        assert_eq!(
            settle_one(receipts, Settlement::Unmatched { seq: *seq }).await,
            Some(ReceiptOutcome::Unmatched)
        );
    }

    let prune = |before, limit| async move {
        receipts
            .delete_settled_receipts_before(before, 0, limit)
            .await
            .unwrap()
            .deleted
    };
    let long_ago = Utc::now() - Span::hours(1);
    assert_eq!(prune(long_ago, 10).await, 0, "settled just now: younger than the cut");
    let later = Utc::now() + Span::minutes(1);
    assert_eq!(prune(later, 1).await, 1, "one batch of one");
    let left = |list: Vec<insider_messaging::store::StoredReceipt>| list.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(
        left(receipts.list_receipts(ReceiptFilter::All, 10, None).await.unwrap()),
        vec![seqs[2], seqs[1]],
        "the oldest settled went first"
    );
    assert_eq!(prune(later, 10).await, 1);
    assert_eq!(prune(later, 10).await, 0);
    assert_eq!(
        left(receipts.list_receipts(ReceiptFilter::All, 10, None).await.unwrap()),
        vec![seqs[2]],
        "the pending receipt stays"
    );
}

/// Postgres only: SQLite has one writer, so two settlers never overlap there.
#[actix_web::test]
async fn a_receipt_another_replica_is_settling_is_skipped_not_waited_for() {
    let database = TestDatabase::create().await;
    let receipts = database.receipts.as_ref();
    let (a, b) = (unique_id(), unique_id());
    let ids = sent_under(&database, &[&a, &b]).await;
    let at = Utc::now().trunc_subsecs(6);
    let seqs = receipts
        .insert_receipts(&[
            receipt(&a, ReceiptStatus::Delivered, at, None),
            receipt(&b, ReceiptStatus::Delivered, at, None),
            receipt(&unique_id(), ReceiptStatus::Delivered, at, None),
        ])
        .await
        .unwrap();
    // Another replica's settle holds the first receipt and the unmatched one.
    let mut other = database.pg().begin().await.unwrap();
    sqlx::query("SELECT seq FROM receipts WHERE seq = ANY($1) FOR UPDATE")
        .bind(vec![seqs[0], seqs[2]])
        .execute(&mut *other)
        .await
        .unwrap();

    let settled = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        receipts.settle_receipts(&[
            Settlement::Apply {
                seq: seqs[0],
                message_id: ids[0],
            },
            Settlement::Apply {
                seq: seqs[1],
                message_id: ids[1],
            },
            Settlement::Unmatched { seq: seqs[2] },
        ]),
    )
    .await
    .expect("settling does not wait for the other replica")
    .unwrap();
    assert_eq!(settled, vec![None, Some(ReceiptOutcome::Applied), None]);

    other.rollback().await.unwrap();
    let pending: Vec<i64> = receipts
        .pending_receipts(PendingReceipts::After { after: None, limit: 10 })
        .await
        .unwrap()
        .iter()
        .map(|receipt| receipt.seq)
        .collect();
    assert_eq!(
        pending,
        vec![seqs[0], seqs[2]],
        "the other replica failed: still pending for the next sweep"
    );
}

/// Postgres only, on its planner: reading and settling a batch reads the batch, not the backlog.
/// Postgres may keep the plan of a prepared statement that it made while the tables were small (a
/// generic plan, made again only when a table is analyzed, and a burst outruns autovacuum). The settle's
/// statement, so kept, went through every pending receipt for each batch: 70,000 index entries for a
/// batch of 83 in the bench; the reads of a batch by seq and by provider id went through them too, and
/// the match of provider ids to sent messages through every sent message. Here Postgres is told to keep
/// plans from the first execution on, as it may choose to after five.
#[actix_web::test]
async fn settling_a_batch_reads_the_batch_not_the_backlog() {
    const BACKLOG: usize = 20_000;
    let database = TestDatabase::create().await;
    let provider_ids: Vec<String> = (0..10).map(|_| unique_id()).collect();
    let ids = sent_under(&database, &provider_ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET plan_cache_mode = force_generic_plan"
    )))
    .execute(database.pg())
    .await
    .unwrap();
    let store = insider_messaging::startup::migrate(&database.url).await.unwrap();
    let receipts: &dyn ReceiptStore = store.as_ref();
    let at = Utc::now().trunc_subsecs(6);
    // What the applier does while `receipts` holds a few rows: what a kept plan is made from. (A report
    // on the way, applied then ignored as said again, so the batch's `delivered` below still applies.)
    for _ in 0..5 {
        let provider_id = provider_ids[0].clone();
        let seqs = receipts
            .insert_receipts(&[receipt(&provider_id, ReceiptStatus::Buffered, at, None)])
            .await
            .unwrap();
        receipts.pending_receipts(PendingReceipts::Seqs(&seqs)).await.unwrap();
        receipts
            .pending_receipts(PendingReceipts::ProviderIds(std::slice::from_ref(&provider_id)))
            .await
            .unwrap();
        receipts.messages_by_provider_id(&[provider_id]).await.unwrap();
        receipts
            .settle_receipts(&[Settlement::Apply {
                seq: seqs[0],
                message_id: ids[0],
            }])
            .await
            .unwrap();
    }
    for _ in 0..BACKLOG / 1_000 {
        let waiting: Vec<Receipt> = (0..1_000)
            .map(|_| receipt(&unique_id(), ReceiptStatus::Delivered, at, None))
            .collect();
        receipts.insert_receipts(&waiting).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO messages (phone_number, content, status, sent_at, provider_message_id)
         SELECT '+90555' || lpad(i::text, 7, '0'), 'sent before', 'sent', now(), 'bulk-' || i
           FROM generate_series(1, $1) i",
    )
    .bind(BACKLOG as i64)
    .execute(database.pg())
    .await
    .unwrap();
    let batch: Vec<Receipt> = provider_ids
        .iter()
        .map(|provider_id| receipt(provider_id, ReceiptStatus::Delivered, at, None))
        .collect();
    let seqs = receipts.insert_receipts(&batch).await.unwrap();

    // What Postgres counts of a table's rows read and updated (inserts read none), as each backend
    // reports it: when it exits, or within 10 s of its last report.
    async fn counted(database: &TestDatabase, table: &str) -> (i64, i64) {
        sqlx::query_as(
            "SELECT t.seq_tup_read + coalesce(sum(i.idx_tup_read), 0)::bigint, t.n_tup_upd
               FROM pg_stat_user_tables t LEFT JOIN pg_stat_user_indexes i ON i.relid = t.relid
              WHERE t.relname = $1 GROUP BY t.seq_tup_read, t.n_tup_upd",
        )
        .bind(table)
        .fetch_one(database.pg())
        .await
        .unwrap()
    }

    let by_seq = receipts.pending_receipts(PendingReceipts::Seqs(&seqs)).await.unwrap();
    let by_provider_id = receipts
        .pending_receipts(PendingReceipts::ProviderIds(&provider_ids))
        .await
        .unwrap();
    let messages = receipts.messages_by_provider_id(&provider_ids).await.unwrap();
    assert_eq!((by_seq.len(), by_provider_id.len(), messages.len()), (10, 10, 10));
    let settlements: Vec<Settlement> = seqs
        .iter()
        .zip(&ids)
        .map(|(&seq, &message_id)| Settlement::Apply { seq, message_id })
        .collect();
    let outcomes = receipts.settle_receipts(&settlements).await.unwrap();
    assert_eq!(outcomes, vec![Some(ReceiptOutcome::Applied); 10]);
    // Closing the store's connections has each report what it counted; then every settle is counted:
    // the 5 made while the tables were small, and the 10.
    drop(store);
    crate::helpers::wait_until("the settles are counted", || async {
        counted(&database, "receipts").await.1 >= 15
    })
    .await;
    for table in ["receipts", "messages"] {
        let (read, _) = counted(&database, table).await;
        assert!(
            read <= 300,
            "reading and settling 10 receipts with {BACKLOG} pending and {BACKLOG} sent (and 5 before, alone) \
             read {read} {table} rows and index entries"
        );
    }
}
