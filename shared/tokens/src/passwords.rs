//! argon2id with the OWASP-recommended defaults of the `argon2` crate (19 MiB, 2 passes).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct PasswordError(String);

pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError(e.to_string()))
}

/// The hash of a random, discarded password, with the same parameters as real hashes:
/// verified against when the account does not exist, so both paths take the same time.
/// A constant, so cold start pays nothing for it.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$SAovL0jmP6O4eA/UzMbslw$liUG8N/T+QvyW2xHhsiDMrn0MZQk8xTL1VQ5bCt5iaA";

/// Verifies `password` against `stored` (or, with no account, against a decoy). The crate
/// compares in constant time.
pub fn verify_password(password: &str, stored: Option<&str>) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(stored.unwrap_or(DECOY_HASH)).map_err(|e| PasswordError(e.to_string()))?;
    let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
    Ok(matches && stored.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoy_costs_what_a_real_hash_costs() {
        let real = hash_password("any password at all").expect("hash");
        let params = |phc: &str| phc.split('$').nth(3).map(str::to_owned);
        assert_eq!(params(DECOY_HASH), params(&real));
    }

    #[test]
    fn verifies_only_the_right_password() {
        let hash = hash_password("correct horse battery staple").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery staple", Some(&hash)).expect("verify"));
        assert!(!verify_password("wrong", Some(&hash)).expect("verify"));
        assert!(!verify_password("correct horse battery staple", None).expect("verify"));
    }
}
