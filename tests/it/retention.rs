//! `SENT_RETENTION`: sent messages older than it go, with their history; nothing else does.

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
