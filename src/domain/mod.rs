//! The values a message is made of, each parsed once at the edge (API body or claimed row).

mod message;
mod message_content;
mod message_status;
mod phone_number;
mod provider_message_id;

pub use message::{Attempt, Message, NewMessage};
pub use message_content::{ContentError, Encoding, MessageContent, segments_of};
pub use message_status::MessageStatus;
pub use phone_number::{PhoneNumber, PhoneNumberError};
pub use provider_message_id::{ProviderMessageId, ProviderMessageIdError};
