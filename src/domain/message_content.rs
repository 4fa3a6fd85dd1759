//! `MessageContent`: the text of a message, 1 to `CONTENT_MAX_CHARS` characters (characters, not bytes,
//! as SMS counts them), with at least one visible character and no control characters but line breaks
//! and tabs, nor bidirectional controls. It also knows how an SMS network will carry it: GSM-7 when
//! every character is in the GSM 03.38 alphabet, UCS-2 otherwise (Turkish ş, ğ, ı…), and how many
//! segments that takes. The API and the fetcher (for rows inserted by plain SQL) both parse through here.

use std::ops::RangeInclusive;

use serde::Serialize;
use utoipa::ToSchema;

/// GSM 03.38 basic alphabet: one septet each.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38 extension table: an escape plus the character, two septets each.
const GSM7_EXTENSION: &str = "\u{0C}^{}\\[~]|€";

const GSM7_SINGLE_SEGMENT: usize = 160;
const GSM7_CONCATENATED_SEGMENT: usize = 153;
const UCS2_SINGLE_SEGMENT: usize = 70;
const UCS2_CONCATENATED_SEGMENT: usize = 67;

/// Characters that show nothing by themselves: Unicode's default-ignorable code points (zero-width
/// spaces and joiners, the byte order mark, variation selectors, fillers, tags), the other format
/// characters (general category `Cf`), and U+2800, the braille blank, which renders as an empty cell.
/// Content of these and white space alone would reach the phone as an empty message. They stay allowed
/// beside visible text, where they do their job (a joiner in an emoji sequence, a soft hyphen).
/// `CreateMessageRequest`'s OpenAPI pattern lists the ones below U+10000.
const INVISIBLE: &[RangeInclusive<char>] = &[
    '\u{00AD}'..='\u{00AD}',
    '\u{034F}'..='\u{034F}',
    '\u{0600}'..='\u{0605}',
    '\u{061C}'..='\u{061C}',
    '\u{06DD}'..='\u{06DD}',
    '\u{070F}'..='\u{070F}',
    '\u{0890}'..='\u{0891}',
    '\u{08E2}'..='\u{08E2}',
    '\u{115F}'..='\u{1160}',
    '\u{17B4}'..='\u{17B5}',
    '\u{180B}'..='\u{180F}',
    '\u{200B}'..='\u{200F}',
    '\u{202A}'..='\u{202E}',
    '\u{2060}'..='\u{206F}',
    '\u{2800}'..='\u{2800}',
    '\u{3164}'..='\u{3164}',
    '\u{FE00}'..='\u{FE0F}',
    '\u{FEFF}'..='\u{FEFF}',
    '\u{FFA0}'..='\u{FFA0}',
    '\u{FFF0}'..='\u{FFFB}',
    '\u{110BD}'..='\u{110BD}',
    '\u{110CD}'..='\u{110CD}',
    '\u{13430}'..='\u{1343F}',
    '\u{1BCA0}'..='\u{1BCA3}',
    '\u{1D173}'..='\u{1D17A}',
    '\u{E0000}'..='\u{E0FFF}',
];

/// Bidirectional embeddings, overrides and isolates. They reorder how the text around them is shown, so
/// a message could read on the phone otherwise than it reads in the database ("Trojan Source").
const BIDI_CONTROLS: &[RangeInclusive<char>] = &['\u{202A}'..='\u{202E}', '\u{2066}'..='\u{2069}'];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("must not be empty, nor hold only spaces and invisible characters")]
    Empty,
    #[error("must be at most {max} characters, got {got}")]
    TooLong { max: usize, got: usize },
    #[error("must not contain control characters other than line breaks and tabs")]
    ControlCharacters,
    #[error("must not contain bidirectional control characters (U+202A to U+202E, U+2066 to U+2069)")]
    BidiControls,
}

/// How an SMS network encodes the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// 7-bit GSM alphabet: 160 characters in one segment.
    Gsm7,
    /// UTF-16: 70 characters in one segment.
    Ucs2,
}

impl MessageContent {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ContentError> {
        if raw.chars().all(|c| c.is_whitespace() || is_in(c, INVISIBLE)) {
            return Err(ContentError::Empty);
        }
        if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
            return Err(ContentError::ControlCharacters);
        }
        if raw.chars().any(|c| is_in(c, BIDI_CONTROLS)) {
            return Err(ContentError::BidiControls);
        }
        let chars = raw.chars().count();
        if chars > max_chars {
            return Err(ContentError::TooLong {
                max: max_chars,
                got: chars,
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn encoding(&self) -> Encoding {
        Encoding::of(&self.0)
    }

    /// How many SMS segments the network sends for this content.
    pub fn segments(&self) -> usize {
        segments_of(&self.0)
    }
}

/// A character that shows nothing by itself (`INVISIBLE`).
pub fn is_invisible(c: char) -> bool {
    is_in(c, INVISIBLE)
}

/// A character that reorders how the text around it is shown (`BIDI_CONTROLS`).
pub fn is_bidi_control(c: char) -> bool {
    is_in(c, BIDI_CONTROLS)
}

fn is_in(c: char, ranges: &[RangeInclusive<char>]) -> bool {
    ranges.iter().any(|range| range.contains(&c))
}

impl Encoding {
    /// The encoding of any text, valid content or not (a stored row may predate the current limit).
    pub fn of(text: &str) -> Self {
        if text
            .chars()
            .all(|c| GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c))
        {
            Self::Gsm7
        } else {
            Self::Ucs2
        }
    }
}

/// How many SMS segments the network sends for any text.
pub fn segments_of(text: &str) -> usize {
    let (units, single, concatenated) = match Encoding::of(text) {
        Encoding::Gsm7 => {
            let septets = text
                .chars()
                .map(|c| if GSM7_EXTENSION.contains(c) { 2 } else { 1 })
                .sum();
            (septets, GSM7_SINGLE_SEGMENT, GSM7_CONCATENATED_SEGMENT)
        }
        Encoding::Ucs2 => (
            text.encode_utf16().count(),
            UCS2_SINGLE_SEGMENT,
            UCS2_CONCATENATED_SEGMENT,
        ),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(concatenated)
    }
}

impl AsRef<str> for MessageContent {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_characters_not_bytes() {
        let turkish = "ş".repeat(160); // 320 bytes
        assert!(MessageContent::parse(&turkish, 160).is_ok());
        assert_eq!(
            MessageContent::parse(&"a".repeat(161), 160),
            Err(ContentError::TooLong { max: 160, got: 161 })
        );
    }

    #[test]
    fn blank_content_is_rejected() {
        assert_eq!(MessageContent::parse("", 160), Err(ContentError::Empty));
        assert_eq!(MessageContent::parse(" \n ", 160), Err(ContentError::Empty));
    }

    #[test]
    fn control_characters_are_rejected_but_line_breaks_kept() {
        assert_eq!(
            MessageContent::parse("a\u{0}b", 160),
            Err(ContentError::ControlCharacters)
        );
        assert_eq!(
            MessageContent::parse("a\u{7}b", 160),
            Err(ContentError::ControlCharacters)
        );
        assert!(MessageContent::parse("line one\r\nline two\tend", 160).is_ok());
    }

    #[test]
    fn content_of_invisible_characters_alone_is_blank() {
        for blank in [
            "\u{200B}",
            "\u{2800}\u{2800}",
            "\u{FEFF}",
            " \u{200D}\u{2060} ",
            "\u{00AD}",
            "\u{3164}",
            "\u{E0041}\u{E0042}",
            "\u{FE0F}",
        ] {
            assert_eq!(MessageContent::parse(blank, 160), Err(ContentError::Empty), "{blank:?}");
        }
        // Beside visible text they keep their use: a family emoji is joined with U+200D.
        assert!(MessageContent::parse("👨\u{200D}👩\u{200D}👧", 160).is_ok());
        assert!(MessageContent::parse("\u{2800}a", 160).is_ok());
    }

    #[test]
    fn bidirectional_controls_are_rejected() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let content = format!("invoice{c}fdp.exe");
            assert_eq!(
                MessageContent::parse(&content, 160),
                Err(ContentError::BidiControls),
                "{c:?}"
            );
        }
        // The marks that only give a direction to neutral characters stay: Arabic and Hebrew text uses them.
        assert!(MessageContent::parse("שלום\u{200F}!", 160).is_ok());
    }

    #[test]
    fn plain_text_is_gsm7_and_turkish_letters_need_ucs2() {
        let plain = MessageContent::parse("Insider - Project", 160).unwrap();
        assert_eq!(plain.encoding(), Encoding::Gsm7);
        let turkish = MessageContent::parse("Güzel bir gün, şimdi", 160).unwrap();
        assert_eq!(turkish.encoding(), Encoding::Ucs2);
    }

    #[test]
    fn segments_follow_the_sms_limits() {
        let segments = |s: &str| MessageContent::parse(s, 1000).unwrap().segments();
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // Extension characters take two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"ş".repeat(70)), 1);
        assert_eq!(segments(&"ş".repeat(71)), 2);
        assert_eq!(segments(&"ş".repeat(134)), 2);
        assert_eq!(segments(&"ş".repeat(135)), 3);
    }
}
