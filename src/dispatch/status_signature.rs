//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`, the key being the base64 after `whsec_`
//! in `STATUS_WEBHOOK_SECRET`.
//!
//! Written on `hmac` + `sha2` + `base64` rather than the `standardwebhooks` crate: these three are
//! already in our dependency tree (so nothing new is downloaded or audited), and the crate's signer wants
//! the body as bytes it re-reads on every attempt, where ours is fixed in the outbox. Any Standard Webhooks
//! library verifies what this signs; the integration test checks it with Python's standard library.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::Secret;

/// Signs status events with one key.
#[derive(Clone)]
pub struct StatusSigner {
    key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("STATUS_WEBHOOK_SECRET is not whsec_ and base64")]
pub struct SignerError;

impl std::fmt::Debug for StatusSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatusSigner([redacted])")
    }
}

impl StatusSigner {
    pub fn new(secret: &Secret) -> Result<Self, SignerError> {
        let encoded = secret.expose().trim().strip_prefix("whsec_").ok_or(SignerError)?;
        let key = STANDARD.decode(encoded).map_err(|_| SignerError)?;
        Ok(Self { key })
    }

    /// The `webhook-signature` header's value for this id, Unix timestamp and body.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_spec_example() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let signer = StatusSigner::new(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(StatusSigner::new(&Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).is_err());
    }
}
