//! `NewMessage` is what may be enqueued (parsed values only); `Message` is a row as stored.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MessageContent, MessageStatus, PhoneNumber};

#[derive(Debug, Clone)]
pub struct NewMessage {
    pub to: PhoneNumber,
    pub content: MessageContent,
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
    /// `accepted`, `retry` or `rejected`.
    pub outcome: String,
    pub error: Option<String>,
    pub provider_message_id: Option<String>,
}
