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

/// `text` (a provider's error body, say) with every run of `MIN_DIGITS` to `MAX_DIGITS` digits that
/// stands alone (a `+` before it or not; no letter, digit, `_`, `-` or `.` on either side) masked as
/// `PhoneNumber` masks a number: a provider that echoes the number it refuses does not put it in a log
/// line. A date, a UUID or an id with letters in it is left as it is.
pub fn mask_numbers_in(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let joined = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let mut masked = String::with_capacity(text.len());
    let mut at = 0;
    while at < chars.len() {
        let plus = chars[at] == '+';
        let start = at + usize::from(plus);
        let end = start + chars[start..].iter().take_while(|c| c.is_ascii_digit()).count();
        let standalone = !joined(at.checked_sub(1).and_then(|before| chars.get(before))) && !joined(chars.get(end));
        if end > start && standalone && (MIN_DIGITS..=MAX_DIGITS).contains(&(end - start)) {
            let digits: String = chars[start..end].iter().collect();
            let number = PhoneNumber(format!("+{digits}")).masked();
            masked.push_str(if plus { &number } else { &number[1..] });
            at = end;
        } else {
            // A run too short or too long, or part of a word: copied whole, not scanned again from within.
            let copied = if end > start { end } else { at + 1 };
            masked.extend(&chars[at..copied]);
            at = copied;
        }
    }
    masked
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
    fn numbers_standing_alone_in_a_text_are_masked_and_dates_and_ids_are_not() {
        assert_eq!(
            mask_numbers_in("invalid 'to': +905551112233 (905551112233)."),
            "invalid 'to': +90555****33 (90555****33)."
        );
        for kept in [
            "at 2026-12-02T10:00:03Z",
            "id 67f2f8a8-ea58-4ed0-a6f9-123456789012",
            "req_1234567890",
            "code 21211",
            "1234567890123456 is too long",
            "v1.123456789",
        ] {
            assert_eq!(mask_numbers_in(kept), kept);
        }
        assert_eq!(
            mask_numbers_in("é+12345678é"),
            "é+12345678é",
            "a letter on each side: part of a word"
        );
        assert_eq!(mask_numbers_in("«12345678»"), "«12****78»");
    }

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
