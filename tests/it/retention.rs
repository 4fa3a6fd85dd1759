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

    let app = TestApp::builder()
        .database(&database)
        .var("SENT_RETENTION", "1h")
        .spawn()
        .await;

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

    let _app = TestApp::builder()
        .database(&database)
        .var("SENT_RETENTION", "1h")
        .spawn()
        .await;

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
