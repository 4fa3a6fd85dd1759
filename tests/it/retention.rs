//! `SENT_RETENTION`: sent messages older than it go, with their history, and receipts settled before it;
//! nothing else does.

use crate::helpers::*;

#[actix_web::test]
async fn sent_messages_older_than_the_retention_are_deleted_and_nothing_else() {
    let database = TestDatabase::create().await;
    let ids = database.insert_many(4).await;
    // Two sent long ago, one sent just now, one still pending.
    for (id, sent_ago) in [(ids[0], "3 hours"), (ids[1], "2 hours"), (ids[2], "1 second")] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE messages SET status = 'sent', sent_at = now() - interval '{sent_ago}' WHERE id = $1"
        )))
        .bind(id)
        .execute(database.pg())
        .await
        .unwrap();
    }

    let app = pruning_an_hour_back(&database).await;

    wait_until("the old sent messages are gone", || async {
        database.count_with_status("sent").await == 1
    })
    .await;
    assert_eq!(database.row(ids[2]).await.status, "sent", "a recent one stays");
    assert_eq!(database.row(ids[3]).await.status, "pending");
    assert_eq!(app.metric("messages_pruned_total").await, 2.0);
    let (status, _) = app.get(&format!("/messages/{}", ids[0])).await;
    assert_eq!(status, actix_web::http::StatusCode::NOT_FOUND);
}

/// A batch that fails (here a trigger refuses one row of the second) ends the round, but the batches
/// before it are gone all the same, and counted: `messages_pruned_total` lost them.
#[actix_web::test]
async fn sent_messages_pruned_before_an_error_are_counted() {
    let database = TestDatabase::create().await;
    sqlx::raw_sql(
        "INSERT INTO messages (phone_number, content, status, sent_at, provider_message_id)
         SELECT '+90555' || lpad(i::text, 7, '0'), CASE WHEN i = 10001 THEN 'kept' ELSE 'old' END, 'sent',
                now() - interval '2 hours' + i * interval '1 millisecond', 'p-' || i
           FROM generate_series(1, 10001) i;
         CREATE FUNCTION refuse_kept() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF OLD.content = 'kept' THEN RAISE EXCEPTION 'this one stays'; END IF;
             RETURN OLD;
         END $$;
         CREATE TRIGGER refuse_kept BEFORE DELETE ON messages FOR EACH ROW EXECUTE FUNCTION refuse_kept();",
    )
    .execute(database.pg())
    .await
    .unwrap();

    let app = pruning_an_hour_back(&database).await;

    wait_until("the first batch is gone", || async {
        database.count_with_status("sent").await == 1
    })
    .await;
    wait_until("and counted", || async {
        app.metric("messages_pruned_total").await == 10_000.0
    })
    .await;
}

#[actix_web::test]
async fn receipts_settled_before_the_retention_are_deleted_and_pending_ones_stay() {
    let database = TestDatabase::create().await;
    let seqs: Vec<(i64, String)> = sqlx::query_as(
        "INSERT INTO receipts (provider_message_id, status, reported_at, outcome, settled_at)
         VALUES ('old-applied', 'delivered', now(), 'applied', now() - interval '2 hours'),
                ('old-unmatched', 'delivered', now(), 'unmatched', now() - interval '3 hours'),
                ('recent', 'delivered', now(), 'applied', now() - interval '1 minute'),
                ('waiting', 'delivered', now() - interval '5 hours', 'pending', NULL)
         RETURNING seq, provider_message_id",
    )
    .fetch_all(database.pg())
    .await
    .unwrap();
    assert_eq!(seqs.len(), 4);

    let _app = pruning_an_hour_back(&database).await;

    let left = || async {
        sqlx::query_scalar::<_, String>("SELECT provider_message_id FROM receipts ORDER BY seq")
            .fetch_all(database.pg())
            .await
            .unwrap()
    };
    wait_until("the receipts settled long ago are gone", || async {
        left().await.len() == 2
    })
    .await;
    assert_eq!(
        left().await,
        vec!["recent", "waiting"],
        "a recent one and a pending one stay"
    );
}

/// One delivered event young at the head of the table (a replay of an old one keeps its `seq`, or one
/// delivered after days of retries), more old ones behind it than one batch takes: the round walks on
/// past what it keeps. It stopped after the first batch, short by the young one, every round, so the
/// table grew by all but 9,999 of each minute's old events.
#[actix_web::test]
async fn a_young_delivered_event_at_the_head_does_not_stop_the_round() {
    only_the_young_head_is_left(
        "INSERT INTO status_events (id, message_id, type, payload, status, delivered_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'message.sent', '{}', 'delivered',
                CASE WHEN i = 1 THEN now() ELSE now() - interval '2 hours' END
           FROM generate_series(1, 15000) i ORDER BY i",
        "status_events",
        "delivered_at",
    )
    .await;
}

/// As for events: a receipt settled just now at the head of the table does not end the round there.
#[actix_web::test]
async fn a_young_settled_receipt_at_the_head_does_not_stop_the_round() {
    only_the_young_head_is_left(
        "INSERT INTO receipts (provider_message_id, status, reported_at, outcome, settled_at)
         SELECT 'p-' || i, 'delivered', now(), 'applied',
                CASE WHEN i = 1 THEN now() ELSE now() - interval '2 hours' END
           FROM generate_series(1, 15000) i ORDER BY i",
        "receipts",
        "settled_at",
    )
    .await;
}

/// Rows inserted by `insert`, the first (lowest `seq`) young and the others two hours old, pruned with
/// `SENT_RETENTION=1h`: all but the young one go, `column` telling their age.
async fn only_the_young_head_is_left(insert: &'static str, table: &str, column: &str) {
    let database = TestDatabase::create().await;
    sqlx::query(insert).execute(database.pg()).await.unwrap();

    let _app = pruning_an_hour_back(&database).await;

    let left = format!("SELECT count(*), count(*) FILTER (WHERE {column} > now() - interval '1 hour') FROM {table}");
    wait_until("every old row is gone and the young one stays", || async {
        sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(left.clone()))
            .fetch_one(database.pg())
            .await
            .unwrap()
            == (1, 1)
    })
    .await;
}

/// The service on `database`, keeping an hour of history (`SENT_RETENTION=1h`): its first prune round
/// runs as it starts.
async fn pruning_an_hour_back(database: &TestDatabase) -> TestApp {
    TestApp::builder()
        .database(database)
        .var("SENT_RETENTION", "1h")
        .spawn()
        .await
}
