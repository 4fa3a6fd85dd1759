//! A reply from a phone (`POST /inbound`), and the one verdict it gets on arrival: an opt-out keyword
//! adds its number to the suppression list, an opt-in keyword takes it off, anything else is only kept.

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
    pub fn of(content: &str) -> Self {
        let word = content.trim().to_uppercase();
        if OPT_OUT.contains(&word.as_str()) {
            Self::OptOut
        } else if OPT_IN.contains(&word.as_str()) {
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
            ("please stop", Other),
            ("stopp", Other),
            ("", Other),
        ] {
            assert_eq!(InboundAction::of(text), action, "{text:?}");
        }
    }
}
