use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused; `field` names the input field for the 422 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidValue {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidValue {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// A tenant's URL-safe handle: 3–40 characters of `a-z`, `0-9` and single inner hyphens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantSlug(String);

/// Names that would collide with platform routes or hostnames.
const RESERVED_SLUGS: &[&str] = &["admin", "api", "app", "www", "platform", "dotmac", "status", "health"];

impl TenantSlug {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let invalid = |reason: &str| InvalidValue::new("slug", reason);
        let slug = raw.trim();
        if !(3..=40).contains(&slug.len()) {
            return Err(invalid("must be 3 to 40 characters"));
        }
        if !slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(invalid("may contain only lowercase letters, digits and hyphens"));
        }
        if slug.starts_with('-') || slug.ends_with('-') || slug.contains("--") {
            return Err(invalid("hyphens must separate letters or digits"));
        }
        if RESERVED_SLUGS.contains(&slug) {
            return Err(invalid("is reserved"));
        }
        Ok(Self(slug.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: 1–120 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > 120 {
            return Err(InvalidValue::new("name", "must be 1 to 120 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(InvalidValue::new("name", "must not contain control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address, kept in lower case so lookups are case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse_field(raw: &str, field: &'static str) -> Result<Self, InvalidValue> {
        let email = raw.trim().to_lowercase();
        let invalid = || InvalidValue::new(field, "must be an e-mail address like name@example.com");
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::parse_field(raw, "email")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_conversions {
    ($($ty:ident),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = InvalidValue;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

string_newtype_conversions!(TenantSlug, TenantName, Email);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        assert!(TenantSlug::parse("acme-fiber").is_ok());
        assert!(TenantSlug::parse("isp42").is_ok());
        for bad in ["ab", "Acme", "-acme", "acme-", "ac--me", "acme fiber", "admin", "ãcme", &"a".repeat(41)]
        {
            assert!(TenantSlug::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn emails_are_lowercased_and_checked() {
        assert_eq!(Email::parse(" Ops@Acme.Example ").map(|e| e.0), Ok("ops@acme.example".into()));
        for bad in
            ["", "ops", "ops@", "@acme.example", "ops@acme", "ops@.acme", "o ps@acme.example", "a@b@c.d"]
        {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn names() {
        assert_eq!(TenantName::parse("  Acme Fiber ").map(|n| n.0), Ok("Acme Fiber".into()));
        assert!(TenantName::parse("   ").is_err());
        assert!(TenantName::parse("a\u{0007}b").is_err());
        assert!(TenantName::parse(&"é".repeat(120)).is_ok());
        assert!(TenantName::parse(&"é".repeat(121)).is_err());
    }

    proptest! {
        #[test]
        fn every_accepted_slug_is_url_safe_and_stable(raw in "\\PC{0,50}") {
            if let Ok(slug) = TenantSlug::parse(&raw) {
                prop_assert!(slug.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert_eq!(TenantSlug::parse(slug.as_str()), Ok(slug.clone()));
            }
        }

        #[test]
        fn generated_valid_slugs_are_accepted(parts in proptest::collection::vec("[a-z0-9]{1,8}", 1..4)) {
            let raw = parts.join("-");
            prop_assume!((3..=40).contains(&raw.len()) && !RESERVED_SLUGS.contains(&raw.as_str()));
            prop_assert!(TenantSlug::parse(&raw).is_ok());
        }

        #[test]
        fn emails_round_trip(raw in "\\PC{0,40}") {
            if let Ok(email) = Email::parse(&raw) {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            }
        }
    }
}
