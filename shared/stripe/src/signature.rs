//! `Stripe-Signature` verification, as Stripe specifies it
//! (<https://docs.stripe.com/webhooks#verify-manually>) and its own libraries do it:
//! - the header is comma-separated `key=value` pairs; `t` is the Unix timestamp, every `v1` is
//!   a signature (there are several while an endpoint's secret is being rolled), other schemes
//!   (`v0`) are ignored;
//! - a signature is the hex HMAC-SHA256 of `"{t}.{raw body}"` under the endpoint secret, and
//!   one matching `v1` is enough; each is compared in constant time (`hmac`'s `verify_slice`);
//! - then the timestamp must be no older than the tolerance (300 s by default), which bounds
//!   replays of a captured delivery.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Stripe's default tolerance.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("unable to extract the timestamp and signatures from the Stripe-Signature header")]
    Malformed,
    #[error("no signatures found with the expected scheme (v1)")]
    NoV1,
    #[error("no signature found matching the expected signature for the payload")]
    Mismatch,
    #[error("the timestamp is outside the tolerance zone ({age} s old, {tolerance} s allowed)")]
    Stale { age: i64, tolerance: i64 },
}

impl SignatureError {
    /// A stable name for the error envelope's details.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::NoV1 => "no_v1_signature",
            SignatureError::Mismatch => "mismatch",
            SignatureError::Stale { .. } => "stale",
        }
    }
}

/// The pieces of a `Stripe-Signature` header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header<'a> {
    timestamp: i64,
    v1: Vec<&'a str>,
}

fn parse(header: &str) -> Result<Header<'_>, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for pair in header.split(',') {
        let Some((key, value)) = pair.trim().split_once('=') else { continue };
        match key {
            "t" => timestamp = value.parse::<i64>().ok(),
            "v1" => v1.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1);
    }
    Ok(Header { timestamp, v1 })
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header Stripe would send for `body` at `timestamp` (the local double and tests).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

/// Verifies `header` for `body` under `secret` at `now` (Unix seconds). Returns the signed
/// timestamp.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
    tolerance_seconds: i64,
) -> Result<i64, SignatureError> {
    let header = parse(header.ok_or(SignatureError::Missing)?)?;
    let expected = mac(secret, header.timestamp, body);
    let matched = header.v1.iter().any(|candidate| {
        // Not hex, or not 32 bytes: cannot be ours; `verify_slice` is constant-time.
        hex::decode(candidate).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok())
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let age = now - header.timestamp;
    if tolerance_seconds > 0 && age > tolerance_seconds {
        return Err(SignatureError::Stale { age, tolerance: tolerance_seconds });
    }
    Ok(header.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_796_000_000;

    fn check(header: Option<&str>, body: &[u8]) -> Result<i64, SignatureError> {
        verify(header, body, SECRET, NOW, DEFAULT_TOLERANCE_SECONDS)
    }

    /// A known answer: HMAC-SHA256("whsec_test_secret", "1796000000.{BODY}"), computed with
    /// Python's `hmac` module, so the construction is Stripe's and not only self-consistent.
    #[test]
    fn a_known_signature_matches() {
        let header = sign(SECRET, NOW, BODY);
        assert_eq!(
            header,
            "t=1796000000,v1=f2ebfe393f7786bebb6041d5f6f04acb481fad13e8b8b052711163ed0d98791e"
        );
        assert_eq!(check(Some(&header), BODY), Ok(NOW));
    }

    #[test]
    fn one_matching_v1_among_several_is_enough() {
        let good = sign(SECRET, NOW, BODY);
        let good_v1 = good.split_once("v1=").map(|(_, v)| v).unwrap_or_default();
        let wrong = sign("whsec_old_secret", NOW, BODY);
        let wrong_v1 = wrong.split_once("v1=").map(|(_, v)| v).unwrap_or_default();
        let header = format!("t={NOW},v1={wrong_v1},v0=deadbeef,v1={good_v1}");
        assert_eq!(check(Some(&header), BODY), Ok(NOW));
        let header = format!("t={NOW},v1={good_v1},v1={wrong_v1}");
        assert_eq!(check(Some(&header), BODY), Ok(NOW));
        // Whitespace around pairs, as some proxies leave it.
        let header = format!("t={NOW}, v1={wrong_v1}, v1={good_v1}");
        assert_eq!(check(Some(&header), BODY), Ok(NOW));
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        let tampered = br#"{"id":"evt_1","object":"event","type":"payment_intent.payment_failed"}"#;
        assert_eq!(check(Some(&header), tampered), Err(SignatureError::Mismatch));
        // One byte more (a trailing newline a framework might add) is a different body too.
        let mut longer = BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(check(Some(&header), &longer), Err(SignatureError::Mismatch));
    }

    #[test]
    fn the_wrong_secret_is_refused() {
        let header = sign("whsec_someone_else", NOW, BODY);
        assert_eq!(check(Some(&header), BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_stale_timestamp_is_refused_after_the_signature_is_checked() {
        let old = NOW - DEFAULT_TOLERANCE_SECONDS - 1;
        let header = sign(SECRET, old, BODY);
        assert_eq!(
            check(Some(&header), BODY),
            Err(SignatureError::Stale {
                age: DEFAULT_TOLERANCE_SECONDS + 1,
                tolerance: DEFAULT_TOLERANCE_SECONDS
            })
        );
        // At the edge it is still fresh.
        let edge = sign(SECRET, NOW - DEFAULT_TOLERANCE_SECONDS, BODY);
        assert_eq!(check(Some(&edge), BODY), Ok(NOW - DEFAULT_TOLERANCE_SECONDS));
        // The timestamp is signed: moving it forward breaks the signature.
        let good = sign(SECRET, old, BODY);
        let v1 = good.split_once("v1=").map(|(_, v)| v).unwrap_or_default();
        assert_eq!(check(Some(&format!("t={NOW},v1={v1}")), BODY), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_missing_or_malformed_header_is_refused() {
        assert_eq!(check(None, BODY), Err(SignatureError::Missing));
        assert_eq!(check(Some(""), BODY), Err(SignatureError::Malformed));
        assert_eq!(check(Some("garbage"), BODY), Err(SignatureError::Malformed));
        assert_eq!(check(Some("t=notanumber,v1=00"), BODY), Err(SignatureError::Malformed));
        assert_eq!(check(Some(&format!("t={NOW}")), BODY), Err(SignatureError::NoV1));
        assert_eq!(check(Some(&format!("t={NOW},v0=abcd")), BODY), Err(SignatureError::NoV1));
        assert_eq!(check(Some(&format!("t={NOW},v1=zz-not-hex")), BODY), Err(SignatureError::Mismatch));
        assert_eq!(check(Some(&format!("t={NOW},v1=abcd")), BODY), Err(SignatureError::Mismatch));
    }

    proptest! {
        /// Whatever the body and secret, our signature verifies and any flipped byte of the
        /// body does not.
        #[test]
        fn sign_then_verify(body in proptest::collection::vec(any::<u8>(), 0..512), secret in "[a-z0-9_]{1,40}", flip in any::<prop::sample::Index>()) {
            let header = sign(&secret, NOW, &body);
            prop_assert_eq!(verify(Some(&header), &body, &secret, NOW, 300), Ok(NOW));
            if !body.is_empty() {
                let mut tampered = body.clone();
                let at = flip.index(tampered.len());
                tampered[at] ^= 0x01;
                prop_assert_eq!(verify(Some(&header), &tampered, &secret, NOW, 300), Err(SignatureError::Mismatch));
            }
        }

        /// Arbitrary headers never panic.
        #[test]
        fn any_header_is_answered(header in ".{0,200}") {
            let _ = verify(Some(&header), BODY, SECRET, NOW, 300);
        }
    }
}
