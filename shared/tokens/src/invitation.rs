//! Invitation tokens: 32 bytes from the operating system's CSPRNG, handed to the invitee once
//! (in the e-mail's link) and kept by the platform only as their SHA-256, so a read of the
//! table gives nobody a link that works.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;

/// Random bytes in a token: 256 bits, beyond guessing however many tries are made.
const TOKEN_BYTES: usize = 32;
/// Its length as unpadded base64url.
pub const INVITATION_TOKEN_LENGTH: usize = 43;

#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed: {0}")]
pub struct RandomnessError(String);

/// An invitation token as the invitee holds it (base64url, no padding). `Debug` never shows
/// it, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationToken(String);

impl InvitationToken {
    pub fn generate() -> Result<Self, RandomnessError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| RandomnessError(e.to_string()))?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as a client sent it; `None` for anything `generate` cannot have made.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.len() != INVITATION_TOKEN_LENGTH {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).ok()?;
        // Only the canonical spelling: another one of the same bytes would hash differently.
        (bytes.len() == TOKEN_BYTES && URL_SAFE_NO_PAD.encode(&bytes) == raw).then(|| Self(raw.to_owned()))
    }

    /// What the invitee puts in the link. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the platform stores and looks the invitation up by: SHA-256 of the token, base64url.
    pub fn digest(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvitationToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_back_and_hashes_to_a_stable_digest() {
        let token = InvitationToken::generate().expect("token");
        assert_eq!(token.expose().len(), INVITATION_TOKEN_LENGTH);
        let parsed = InvitationToken::parse(token.expose()).expect("its own token parses");
        assert_eq!(parsed.digest(), token.digest());
        assert_ne!(token.digest(), token.expose(), "only the digest is stored");
        assert_ne!(InvitationToken::generate().expect("token"), token, "fresh bytes every time");
        assert!(!format!("{token:?}").contains(token.expose()), "Debug hides the token");
    }

    #[test]
    fn the_digest_is_sha256_of_the_token_text() {
        // SHA-256("abc"), base64url: the published test vector, so the digest is what it says.
        let abc = InvitationToken("abc".to_owned());
        assert_eq!(abc.digest(), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }

    #[test]
    fn only_tokens_of_the_generated_shape_parse() {
        let token = InvitationToken::generate().expect("token");
        let raw = token.expose();
        for bad in [
            "",
            &raw[1..],
            &format!("{raw}A"),
            &format!("{}+", &raw[..42]),
            &format!("{}=", &raw[..42]),
            // The last character carries 2 spare bits: a non-zero one is another spelling.
            &format!("{}B", &raw[..42]),
        ] {
            if bad == raw {
                continue;
            }
            assert!(InvitationToken::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
