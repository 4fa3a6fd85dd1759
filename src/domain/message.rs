//! `NewMessage` is what may be enqueued (parsed values only); `Message` is a row as stored.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

use super::{MessageContent, MessageStatus, PhoneNumber, Priority, ReceiptStatus};

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub to: PhoneNumber,
    pub content: MessageContent,
    pub when: Schedule,
}

/// When a message may go, and how urgently: each part optional, the default being "now, normal, for
/// ever".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Not sent before it.
    pub send_at: Option<DateTime<Utc>>,
    /// Never sent after it: it becomes `expired`. After `send_at` when both are set.
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    /// The recipient's time zone for quiet hours; unset, its calling code's (when it has one).
    pub timezone: Option<Tz>,
    /// The campaign it belongs to (1 to 64 characters): paused, resumed and cancelled together.
    pub campaign: Option<String>,
}

/// A stored message. `to` and `content` are kept as stored: rows inserted by plain SQL are only
/// validated when claimed, and an invalid one ends `failed` with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: Uuid,
    pub to: String,
    pub content: String,
    pub status: MessageStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// What the carrier last reported of a sent message (`None`: no receipt applied yet); `delivered` and
    /// `undelivered` are final.
    pub delivery_status: Option<ReceiptStatus>,
    /// When the carrier delivered it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The carrier's code or text when it was undelivered.
    pub delivery_error: Option<String>,
    pub when: Schedule,
}

/// One POST of a message to the provider and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The attempt number the claim had (from 1).
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// The provider's HTTP status; none when it never answered.
    pub http_status: Option<u16>,
    /// `accepted`, `retry`, `throttled`, `unauthorized` or `rejected` (`provider::Outcome::label`).
    pub outcome: String,
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
}
