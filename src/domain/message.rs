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
