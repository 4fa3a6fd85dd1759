//! `MessageStatus`: where a message stands. The transitions between them are the store's
//! (see `store/mod.rs` for the diagram).

use std::{fmt, str::FromStr};

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for its `next_attempt_at`; the scheduler will claim it.
    Pending,
    /// Claimed by one sender, who holds its lease; only that claim may move it on.
    Sending,
    /// Accepted by the provider. Final: never sent again.
    Sent,
    /// Rejected by the provider, invalid, or out of attempts: the dead letters. Final unless an operator
    /// retries it.
    Failed,
    /// Withdrawn by an operator before it was sent. Final: never sent.
    Cancelled,
    /// Not handed to the provider by its `expires_at`. Final: never sent.
    Expired,
    /// Its number opted out (`POST /opt-outs`, or a STOP reply) before it was sent. Final: never sent.
    Suppressed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Suppressed => "suppressed",
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown message status {0:?}")]
pub struct UnknownStatus(String);

impl FromStr for MessageStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "sending" => Ok(Self::Sending),
            "sent" => Ok(Self::Sent),
            "failed" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            "expired" => Ok(Self::Expired),
            "suppressed" => Ok(Self::Suppressed),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            MessageStatus::Pending,
            MessageStatus::Sending,
            MessageStatus::Sent,
            MessageStatus::Failed,
            MessageStatus::Cancelled,
            MessageStatus::Expired,
            MessageStatus::Suppressed,
        ] {
            assert_eq!(status.as_str().parse::<MessageStatus>().unwrap(), status);
        }
        assert!("queued".parse::<MessageStatus>().is_err());
    }
}
