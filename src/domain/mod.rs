//! The values a message is made of, each parsed once at the edge (API body or claimed row).

mod calling_zone;
mod inbound;
mod message;
mod message_content;
mod message_status;
mod phone_number;
mod priority;
mod provider_message_id;
mod receipt;
mod status_event;

pub use calling_zone::zone_of_number;
pub use inbound::InboundAction;
pub use message::{Attempt, Message, NewMessage, Schedule};
pub use message_content::{ContentError, Encoding, MessageContent, is_bidi_control, is_invisible, segments_of};
pub use message_status::{MessageStatus, UnknownStatus};
pub use phone_number::{PhoneNumber, PhoneNumberError, mask_numbers_in};
pub use priority::{Priority, UnknownPriority};
pub use provider_message_id::{ProviderMessageId, ProviderMessageIdError};
pub use receipt::{DeliveryStatus, ERROR_MAX_CHARS, Receipt, ReceiptStatus, UnknownReceiptStatus};
pub use status_event::{NewStatusEvent, StatusEventType};
