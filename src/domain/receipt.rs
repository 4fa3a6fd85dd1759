//! A delivery receipt: what the carrier said became of a message the provider accepted
//! (`provider-contract.md`, "Delivery receipts"). `Receipt` holds only parsed values; `ReceiptStatus` is
//! the carrier's state, `delivered` and `undelivered` being final.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ProviderMessageId;

/// The most characters of a carrier's error kept; longer ones are cut.
pub const ERROR_MAX_CHARS: usize = 255;

/// A carrier's state for one message, as a receipt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReceiptStatus {
    /// The carrier took it. On the way.
    Accepted,
    /// The carrier holds it until the phone can take it. On the way.
    Buffered,
    /// The phone has it. Final.
    Delivered,
    /// The carrier gave up on it, with its error. Final.
    Undelivered,
}

impl ReceiptStatus {
    pub const NAMES: &'static str = "accepted, buffered, delivered, undelivered";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Buffered => "buffered",
            Self::Delivered => "delivered",
            Self::Undelivered => "undelivered",
        }
    }

    /// No later receipt changes a message in this state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Undelivered)
    }
}

impl fmt::Display for ReceiptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("must be one of {names}, got {0:?}", names = ReceiptStatus::NAMES)]
pub struct UnknownReceiptStatus(String);

impl FromStr for ReceiptStatus {
    type Err = UnknownReceiptStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "accepted" => Ok(Self::Accepted),
            "buffered" => Ok(Self::Buffered),
            "delivered" => Ok(Self::Delivered),
            "undelivered" => Ok(Self::Undelivered),
            other => Err(UnknownReceiptStatus(other.to_owned())),
        }
    }
}

/// A receipt as the provider sent it, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// The id from the provider's 202: not unique (see `ProviderMessageId`).
    pub provider_message_id: ProviderMessageId,
    pub status: ReceiptStatus,
    /// When the carrier reported it.
    pub reported_at: DateTime<Utc>,
    /// The carrier's code or text, for `undelivered`; at most `ERROR_MAX_CHARS`.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_two_are_final() {
        for status in [
            ReceiptStatus::Accepted,
            ReceiptStatus::Buffered,
            ReceiptStatus::Delivered,
            ReceiptStatus::Undelivered,
        ] {
            assert_eq!(status.as_str().parse::<ReceiptStatus>().unwrap(), status);
            assert_eq!(status.is_final(), status.as_str().ends_with("delivered"));
        }
        assert!("DELIVERED".parse::<ReceiptStatus>().is_err());
    }
}

/// Where a sent message stands with the carrier, as the API shows it: its stored `ReceiptStatus`, read
/// with whether receipts are tracked (`CALLBACK_AUTH_KEY`) and how long a final one may take
/// (`RECEIPT_TIMEOUT`). Worked out when read, so `no_receipt` needs no job to set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Receipts are not tracked: `CALLBACK_AUTH_KEY` is unset.
    NotTracked,
    /// Sent; no receipt yet.
    AwaitingReceipt,
    /// The carrier took it; no final receipt yet.
    Accepted,
    /// The carrier holds it until the phone can take it; no final receipt yet.
    Buffered,
    /// Final: the phone has it (`delivered_at`).
    Delivered,
    /// Final: the carrier gave up on it (`delivery_error`).
    Undelivered,
    /// No final receipt within `RECEIPT_TIMEOUT` of the send.
    NoReceipt,
}

impl DeliveryStatus {
    /// A message sent at `sent_at` with `stored` as its last receipt; `receipt_timeout` is `None` when
    /// receipts are not tracked. A final state shows whatever the tracking, as it was reported.
    pub fn of(
        sent_at: DateTime<Utc>,
        stored: Option<ReceiptStatus>,
        receipt_timeout: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> Self {
        match stored {
            Some(ReceiptStatus::Delivered) => return Self::Delivered,
            Some(ReceiptStatus::Undelivered) => return Self::Undelivered,
            _ => {}
        }
        let Some(timeout) = receipt_timeout else {
            return Self::NotTracked;
        };
        let timed_out = chrono::Duration::from_std(timeout)
            .ok()
            .and_then(|timeout| sent_at.checked_add_signed(timeout))
            .is_some_and(|deadline| deadline <= now);
        match stored {
            _ if timed_out => Self::NoReceipt,
            Some(ReceiptStatus::Accepted) => Self::Accepted,
            Some(ReceiptStatus::Buffered) => Self::Buffered,
            _ => Self::AwaitingReceipt,
        }
    }
}

#[cfg(test)]
mod delivery_status_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_sent_message_awaits_then_has_no_receipt_after_the_timeout_unless_final() {
        let now = Utc::now();
        let day = Some(Duration::from_secs(86_400));
        let fresh = now - chrono::Duration::hours(1);
        let old = now - chrono::Duration::hours(25);
        assert_eq!(
            DeliveryStatus::of(fresh, None, day, now),
            DeliveryStatus::AwaitingReceipt
        );
        assert_eq!(
            DeliveryStatus::of(fresh, Some(ReceiptStatus::Buffered), day, now),
            DeliveryStatus::Buffered
        );
        assert_eq!(DeliveryStatus::of(old, None, day, now), DeliveryStatus::NoReceipt);
        assert_eq!(
            DeliveryStatus::of(old, Some(ReceiptStatus::Accepted), day, now),
            DeliveryStatus::NoReceipt
        );
        assert_eq!(
            DeliveryStatus::of(old, Some(ReceiptStatus::Delivered), day, now),
            DeliveryStatus::Delivered
        );
        assert_eq!(DeliveryStatus::of(fresh, None, None, now), DeliveryStatus::NotTracked);
        assert_eq!(
            DeliveryStatus::of(fresh, Some(ReceiptStatus::Undelivered), None, now),
            DeliveryStatus::Undelivered
        );
    }
}
