//! A status event: a change of a message that the sender is told about at `STATUS_WEBHOOK_URL`, in the
//! Standard Webhooks shape `{"type", "timestamp", "data"}`. Its body is fixed when the change commits,
//! so every attempt sends the same bytes under the same id.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

/// What happened to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum StatusEventType {
    #[serde(rename = "message.sent")]
    Sent,
    /// A dead letter, or a message the provider rejected.
    #[serde(rename = "message.failed")]
    Failed,
    #[serde(rename = "message.delivered")]
    Delivered,
    #[serde(rename = "message.undelivered")]
    Undelivered,
}

impl StatusEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "message.sent",
            Self::Failed => "message.failed",
            Self::Delivered => "message.delivered",
            Self::Undelivered => "message.undelivered",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        Some(match stored {
            "message.sent" => Self::Sent,
            "message.failed" => Self::Failed,
            "message.delivered" => Self::Delivered,
            "message.undelivered" => Self::Undelivered,
            _ => return None,
        })
    }
}

impl fmt::Display for StatusEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to write beside the change it reports.
#[derive(Debug, Clone, PartialEq)]
pub struct NewStatusEvent {
    /// The `webhook-id`.
    pub id: Uuid,
    pub message_id: Uuid,
    pub kind: StatusEventType,
    /// The body: `{"type", "timestamp", "data": {"id": <message id>, ...}}`.
    pub payload: String,
}

impl NewStatusEvent {
    /// An event of `kind` about message `message_id`, at `at`; `data` adds to the message's id what the
    /// change set.
    pub fn new(kind: StatusEventType, message_id: Uuid, at: DateTime<Utc>, mut data: Value) -> Self {
        if let Value::Object(fields) = &mut data {
            fields.insert("id".to_owned(), json!(message_id));
        }
        let payload = json!({
            "type": kind.as_str(),
            "timestamp": at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "data": data,
        });
        Self {
            id: Uuid::now_v7(),
            message_id,
            kind,
            payload: payload.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_its_type_time_and_the_message_id_in_its_data() {
        let message_id = Uuid::new_v4();
        let at = DateTime::parse_from_rfc3339("2026-12-02T10:00:03Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = NewStatusEvent::new(StatusEventType::Sent, message_id, at, json!({"status": "sent"}));
        let body: Value = serde_json::from_str(&event.payload).unwrap();
        assert_eq!(
            body,
            json!({"type": "message.sent", "timestamp": "2026-12-02T10:00:03.000000Z",
                   "data": {"id": message_id, "status": "sent"}})
        );
        assert_eq!(
            StatusEventType::parse("message.undelivered"),
            Some(StatusEventType::Undelivered)
        );
    }
}
