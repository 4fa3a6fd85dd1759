//! `Secret`: a value that must never reach a log line or an error body (credentials, and URLs that may
//! carry one).

use std::{borrow::Cow, fmt};

/// `Debug` prints a placeholder, and there is no `Display`: neither `{:?}` nor `{}` can show the value,
/// so a settings struct or an error that holds one can be logged whole. `expose` is the only way to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this secret, compared without stopping at the first difference, so that
    /// timing does not reveal how much of a guess was right (only its length).
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (presented.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// What an error message about a URL that may carry credentials shows of it: its scheme and host, with
/// `[redacted]` for whatever precedes an `@`, and nothing of its path or query (`?api_key=…`), which are
/// elided. Works on text that does not parse as a URL too: that is when it gets printed. A scheme counts
/// only at the start (`https://` inside a query is not one).
pub fn redact_url_credentials(url: &str) -> Cow<'_, str> {
    let scheme_len = url
        .find("://")
        .filter(|&end| {
            let scheme = &url[..end];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .map_or(0, |end| end + 3);
    let rest = &url[scheme_len..];
    // Any `@` may end a password holding `/`, `?` or `#` unescaped: the host follows the last one.
    let (redacted, host) = match rest.rfind('@') {
        Some(at) => ("[redacted]@", &rest[at + 1..]),
        None => ("", rest),
    };
    let host_end = host.find(['/', '?', '#']).unwrap_or(host.len());
    let elided = if host[host_end..].trim_matches('/').is_empty() {
        ""
    } else {
        "/…"
    };
    if redacted.is_empty() && elided.is_empty() {
        return Cow::Borrowed(url);
    }
    Cow::Owned(format!("{}{redacted}{}{elided}", &url[..scheme_len], &host[..host_end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_url_credentials("ftp://user:hunter2@host/path"),
            "ftp://[redacted]@host/…"
        );
        assert_eq!(
            redact_url_credentials("redis://:hunter2@h:6379"),
            "redis://[redacted]@h:6379"
        );
        assert_eq!(redact_url_credentials("user:p@ss@host"), "[redacted]@host");
        assert_eq!(
            redact_url_credentials("htps://sms.example/send?api_key=hunter2"),
            "htps://sms.example/…"
        );
        assert_eq!(redact_url_credentials("ftp://u:hun/ter2@h/"), "ftp://[redacted]@h");
        assert_eq!(redact_url_credentials("https://host/"), "https://host/");
        assert_eq!(
            redact_url_credentials("redis://:pa?ss@host:6379"),
            "redis://[redacted]@host:6379"
        );
        assert_eq!(
            redact_url_credentials("sms.example/send?api_key=hunter2&cb=https://me"),
            "sms.example/…"
        );
        assert_eq!(redact_url_credentials("not a url"), "not a url");
    }

    #[test]
    fn a_secret_matches_only_itself() {
        let secret = Secret::new("secret");
        assert!(secret.matches("secret"));
        assert!(!secret.matches("secreT"));
        assert!(!secret.matches("secret2"));
        assert!(!Secret::new("").matches("x"));
    }

    #[test]
    fn debug_prints_a_placeholder_and_expose_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret([redacted]))");
        assert_eq!(secret.expose(), "hunter2");
    }
}
