//! `PhoneNumber`: an E.164 number (`+` then 8–15 digits, no leading zero). Its `Debug` and `Display` mask
//! the middle digits, so a log line that prints one cannot leak it; `as_ref` gives the digits to whoever
//! must send them.

use std::fmt;

const MIN_DIGITS: usize = 8;
const MAX_DIGITS: usize = 15;

#[derive(Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneNumberError {
    #[error("must start with + and the country code")]
    MissingPlus,
    #[error("may hold only digits after the +, with optional spaces or dashes")]
    NotDigits,
    #[error("must have {MIN_DIGITS} to {MAX_DIGITS} digits, got {0}")]
    WrongLength(usize),
    #[error("a country code never starts with 0")]
    LeadingZero,
}

impl PhoneNumber {
    /// Accepts `+90 555-111 11 11` and stores `+905551111111`.
    pub fn parse(raw: &str) -> Result<Self, PhoneNumberError> {
        let digits_part = raw.trim().strip_prefix('+').ok_or(PhoneNumberError::MissingPlus)?;
        let mut digits = String::with_capacity(MAX_DIGITS);
        for c in digits_part.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' => {}
                _ => return Err(PhoneNumberError::NotDigits),
            }
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
            return Err(PhoneNumberError::WrongLength(digits.len()));
        }
        if digits.starts_with('0') {
            return Err(PhoneNumberError::LeadingZero);
        }
        Ok(Self(format!("+{digits}")))
    }

    /// `+905551111111` → `+90555****11`: at most the first five digits, then `****`, then the last two.
    /// The shorter the number, the fewer leading digits show (`+12345678` → `+12****78`), so at least
    /// four digits always stay hidden. Works on the parsed form, `+` and digits only.
    pub fn masked(&self) -> String {
        let digits = &self.0[1..];
        let shown_head = digits.len().saturating_sub(6).min(5);
        let tail = &digits[digits.len().saturating_sub(2)..];
        format!("+{}****{tail}", &digits[..shown_head])
    }
}

impl AsRef<str> for PhoneNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_and_dashes_are_dropped() {
        let number = PhoneNumber::parse(" +90 555-111 11 11 ").unwrap();
        assert_eq!(number.as_ref(), "+905551111111");
    }

    #[test]
    fn invalid_numbers_say_why() {
        assert_eq!(PhoneNumber::parse("905551111111"), Err(PhoneNumberError::MissingPlus));
        assert_eq!(PhoneNumber::parse("+90555abc1111"), Err(PhoneNumberError::NotDigits));
        assert_eq!(PhoneNumber::parse("+1234567"), Err(PhoneNumberError::WrongLength(7)));
        assert_eq!(
            PhoneNumber::parse("+1234567890123456"),
            Err(PhoneNumberError::WrongLength(16))
        );
        assert_eq!(PhoneNumber::parse("+0905551111111"), Err(PhoneNumberError::LeadingZero));
        assert_eq!(PhoneNumber::parse(""), Err(PhoneNumberError::MissingPlus));
    }

    #[test]
    fn every_valid_length_parses() {
        for len in MIN_DIGITS..=MAX_DIGITS {
            let raw = format!("+{}", "9".repeat(len));
            assert_eq!(PhoneNumber::parse(&raw).unwrap().as_ref(), raw);
        }
    }

    #[test]
    fn printing_masks_the_number() {
        let number = PhoneNumber::parse("+905551111111").unwrap();
        assert_eq!(number.to_string(), "+90555****11");
        assert_eq!(format!("{number:?}"), "PhoneNumber(+90555****11)");
    }

    #[test]
    fn a_short_number_shows_fewer_leading_digits() {
        assert_eq!(PhoneNumber::parse("+12345678").unwrap().masked(), "+12****78");
    }

    #[test]
    fn a_masked_number_never_shows_more_than_seven_digits() {
        for len in MIN_DIGITS..=MAX_DIGITS {
            let raw = format!("+{}", "7".repeat(len));
            let masked = PhoneNumber::parse(&raw).unwrap().masked();
            let shown = masked.chars().filter(char::is_ascii_digit).count();
            assert!(shown <= 7 && shown + 4 <= len, "{raw} -> {masked}");
        }
    }
}
