//! `ProviderMessageId`: the provider's id for an accepted message. Not unique: webhook.site answers every
//! request with the same id, so it is stored and cached, never used as a key.

use std::fmt;

const MAX_LEN: usize = 255;

#[derive(Clone, PartialEq, Eq)]
pub struct ProviderMessageId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderMessageIdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("contains control characters")]
    ControlCharacters,
}

impl ProviderMessageId {
    pub fn parse(raw: &str) -> Result<Self, ProviderMessageIdError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ProviderMessageIdError::Empty);
        }
        if trimmed.chars().count() > MAX_LEN {
            return Err(ProviderMessageIdError::TooLong);
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ProviderMessageIdError::ControlCharacters);
        }
        Ok(Self(trimmed.to_owned()))
    }
}

impl AsRef<str> for ProviderMessageId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProviderMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderMessageId({})", self.0)
    }
}

impl fmt::Display for ProviderMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_trimmed_and_bounded() {
        assert_eq!(ProviderMessageId::parse(" abc ").unwrap().as_ref(), "abc");
        assert_eq!(ProviderMessageId::parse("  "), Err(ProviderMessageIdError::Empty));
        assert_eq!(
            ProviderMessageId::parse(&"x".repeat(256)),
            Err(ProviderMessageIdError::TooLong)
        );
        assert!(ProviderMessageId::parse(&"x".repeat(255)).is_ok());
        assert_eq!(
            ProviderMessageId::parse("a\u{0}b"),
            Err(ProviderMessageIdError::ControlCharacters)
        );
    }
}
