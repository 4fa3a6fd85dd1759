//! A reply from a phone (`POST /inbound`), and the one verdict it gets on arrival: an opt-out keyword
//! adds its number to the suppression list, an opt-in keyword takes it off, anything else is only kept.

use unicode_normalization::UnicodeNormalization;

use super::message_content::is_invisible;

/// What an inbound reply asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundAction {
    OptOut,
    OptIn,
    Other,
}

/// The keywords people send (see `provider-contract.md`, "Inbound messages"), upper case.
const OPT_OUT: &[&str] = &["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "IPTAL", "İPTAL", "DUR"];
const OPT_IN: &[&str] = &["START", "UNSTOP"];

impl InboundAction {
    /// The whole trimmed text, case-insensitively: "stop" opts out, "please stop" does not. Turkish
    /// dotless and dotted i both upper-case into a listed spelling (ıptal → IPTAL, iptal → IPTAL).
    /// What a phone adds without the sender seeing it does not hide a keyword: invisible characters (a
    /// byte order mark, a zero-width space), compatibility forms (full-width ＳＴＯＰ, İ as I and a
    /// combining dot: NFKC), and a closing full stop or exclamation mark ("Stop.").
    pub fn of(content: &str) -> Self {
        // Upper case, NFKC, upper case: `i̇ptal` (i and a combining dot) upper-cases to I and the dot,
        // which NFKC composes into İ; `𝐬𝐭𝐨𝐩` (a keyboard's "fancy" letters) has no upper case until NFKC
        // makes it `stop`.
        let visible: String = content.chars().filter(|c| !is_invisible(*c)).collect();
        let upper = visible.to_uppercase().nfkc().collect::<String>().to_uppercase();
        let word = upper.trim().trim_end_matches(['.', '!']).trim_end();
        if OPT_OUT.contains(&word) {
            Self::OptOut
        } else if OPT_IN.contains(&word) {
            Self::OptIn
        } else {
            Self::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::OptIn => "opt_in",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InboundAction::{self, *};

    #[test]
    fn keywords_match_the_whole_trimmed_text_in_any_case() {
        for (text, action) in [
            ("STOP", OptOut),
            ("  stop\n", OptOut),
            ("Unsubscribe", OptOut),
            ("iptal", OptOut),
            ("İPTAL", OptOut),
            ("ıptal", OptOut),
            ("dur", OptOut),
            ("Start", OptIn),
            ("UNSTOP", OptIn),
            ("\u{FEFF}STOP", OptOut),
            ("STOP\u{200B}", OptOut),
            ("ＳＴＯＰ", OptOut),
            ("I\u{0307}PTAL", OptOut),
            ("i\u{0307}ptal", OptOut),
            ("\u{1D42C}\u{1D42D}\u{1D428}\u{1D429}", OptOut),
            ("Stop.", OptOut),
            ("STOP!", OptOut),
            ("start !", OptIn),
            ("please stop", Other),
            ("stop?", Other),
            ("!", Other),
            ("stopp", Other),
            ("", Other),
        ] {
            assert_eq!(InboundAction::of(text), action, "{text:?}");
        }
    }
}
