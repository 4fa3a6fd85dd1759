//! The cluster's shared state beside the messages: the sending switch every replica follows (the one row
//! of `dispatcher_control`) and each replica's last heartbeat (`replicas`). `ControlActor` beats and
//! follows the switch; the `Pipeline` turns it and lists the replicas. Nothing here touches a message.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    StoreError,
    backend::{Backend, Clocked},
    db,
    rows::{ReplicaRow, replica},
};

/// One instance as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub in_flight: u32,
    pub sending: bool,
}

/// The cluster's sending switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub sending: bool,
    /// When it was last set, on or off: a start sent to any replica while sending was already on still
    /// moves it, which tells every replica to start again (clearing a pause of its own).
    pub changed_at: DateTime<Utc>,
}

/// The seam between the replicas and the switch and heartbeats they share.
#[async_trait]
pub trait ClusterControl: Send + Sync + 'static {
    /// Seeds whether sending is on for every replica, unless an earlier start already did; returns the
    /// setting in force.
    async fn seed_sending(&self, sending: bool, by: &str) -> Result<bool, StoreError>;

    /// Turns sending on or off for every replica.
    async fn set_sending(&self, sending: bool, by: &str) -> Result<(), StoreError>;

    /// Records that `replica` is alive and returns the switch as it stands, in one round trip (`None`
    /// before any instance seeded it).
    async fn heartbeat(&self, replica: &Replica) -> Result<Option<Switch>, StoreError>;

    /// Instances seen since `since`, oldest start first.
    async fn list_replicas(&self, since: DateTime<Utc>) -> Result<Vec<Replica>, StoreError>;

    /// Removes a replica that is shutting down.
    async fn forget_replica(&self, id: &str) -> Result<(), StoreError>;
}

/// The cluster statements whose text is dialect, and the heartbeat, whose shape is: Postgres records it
/// and reads the switch in one statement, SQLite in two.
#[async_trait]
pub(super) trait ClusterSql: Backend {
    /// Seeds the switch to `$1`, by `$2`, unless an earlier start did (and `Backend::clock`).
    const SEED_SENDING: &'static str;
    /// Sets the switch to `$1`, by `$2` (and `Backend::clock`).
    const SET_SENDING: &'static str;

    /// Records `replica`'s heartbeat: the switch's setting and when it was set, `None` before any
    /// instance seeded it.
    async fn beat(&self, replica: &Replica) -> Result<Option<(bool, Self::Time)>, StoreError>;
}

#[async_trait]
impl<B> ClusterControl for B
where
    B: ClusterSql,
    for<'q> &'q str: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'q> bool: sqlx::Encode<'q, B::DB> + sqlx::Type<B::DB>,
    for<'r> (bool,): sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
    for<'r> ReplicaRow<B>: sqlx::FromRow<'r, <B::DB as sqlx::Database>::Row>,
{
    async fn seed_sending(&self, sending: bool, by: &str) -> Result<bool, StoreError> {
        sqlx::query(B::SEED_SENDING)
            .bind(sending)
            .bind(by)
            .clocked::<B>()
            .execute(self.exec())
            .await
            .map_err(db("seeding the sending switch"))?;
        let switch: Option<(bool,)> = sqlx::query_as("SELECT sending FROM dispatcher_control WHERE id = 1")
            .fetch_optional(self.exec())
            .await
            .map_err(db("reading the sending switch"))?;
        // Missing only if deleted by hand since the seed: then what was asked for is in force.
        Ok(switch.map_or(sending, |(sending,)| sending))
    }

    async fn set_sending(&self, sending: bool, by: &str) -> Result<(), StoreError> {
        sqlx::query(B::SET_SENDING)
            .bind(sending)
            .bind(by)
            .clocked::<B>()
            .execute(self.exec())
            .await
            .map_err(db("setting the sending switch"))?;
        Ok(())
    }

    async fn heartbeat(&self, replica: &Replica) -> Result<Option<Switch>, StoreError> {
        Ok(self.beat(replica).await?.map(|(sending, changed_at)| Switch {
            sending,
            changed_at: B::time(changed_at).unwrap_or_default(),
        }))
    }

    async fn list_replicas(&self, since: DateTime<Utc>) -> Result<Vec<Replica>, StoreError> {
        let rows: Vec<ReplicaRow<B>> = sqlx::query_as(
            "SELECT id, host, started_at, last_seen, in_flight, sending FROM replicas
              WHERE last_seen >= $1 ORDER BY started_at, id",
        )
        .bind(B::stored_time(since))
        .fetch_all(self.exec())
        .await
        .map_err(db("listing replicas"))?;
        Ok(rows.into_iter().map(replica::<B>).collect())
    }

    async fn forget_replica(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM replicas WHERE id = $1")
            .bind(id)
            .execute(self.exec())
            .await
            .map_err(db("removing a replica"))?;
        Ok(())
    }
}
