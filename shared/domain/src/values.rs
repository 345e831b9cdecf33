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
    use crate::strategies::*;
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

    /// A reference for slugs written from the doc ("3–40 characters of a-z, 0-9 and single
    /// inner hyphens", not a reserved word), to compare the parser against on near-miss input.
    fn slug_reference(raw: &str) -> Result<&str, &'static str> {
        let slug = raw.trim();
        let runs_ok = slug.split('-').all(|run| !run.is_empty());
        let charset_ok = slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if slug.len() < 3 || slug.len() > 40 {
            Err(SLUG_LENGTH)
        } else if !charset_ok {
            Err(SLUG_CHARSET)
        } else if !runs_ok {
            Err(SLUG_HYPHENS)
        } else if EXPECTED_RESERVED_SLUGS.contains(&slug) {
            Err(SLUG_RESERVED)
        } else {
            Ok(slug)
        }
    }

    /// A reference for e-mails written from the rules (lowercased, at most 254 bytes, no
    /// spaces or control characters, one `@`, a 1–64 byte local part, a dotted domain with
    /// no empty label at either end or in the middle).
    fn email_reference(raw: &str) -> Option<String> {
        let email = raw.trim().to_lowercase();
        let parts: Vec<&str> = email.split('@').collect();
        let [local, domain] = parts.as_slice() else { return None };
        let clean = !email.chars().any(|c| c.is_whitespace() || c.is_control());
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2 && labels.iter().all(|label| !label.is_empty());
        let ok = email.len() <= 254 && clean && (1..=64).contains(&local.len()) && domain_ok;
        ok.then_some(email)
    }

    proptest! {
        #[test]
        fn generated_valid_slugs_are_accepted_as_given(raw in valid_slug()) {
            let slug = TenantSlug::parse(&raw).map_err(|e| e.to_string());
            prop_assert_eq!(slug.as_ref().map(TenantSlug::as_str), Ok(raw.as_str()));
            // And through serde, the way request bodies reach it.
            let json = serde_json::to_string(&raw).expect("json");
            prop_assert_eq!(serde_json::from_str::<TenantSlug>(&json).ok(), slug.ok());
        }

        #[test]
        fn each_broken_slug_rule_is_refused_with_its_own_reason((raw, reason) in invalid_slug()) {
            prop_assert_eq!(TenantSlug::parse(&raw), Err(InvalidValue::new("slug", reason)));
        }

        /// Near misses land on both sides of every rule; the parser's verdict, reason
        /// included, must match the reference.
        #[test]
        fn slug_verdicts_match_the_documented_rules(raw in near_miss_slug()) {
            let expected = slug_reference(&raw).map_err(|reason| InvalidValue::new("slug", reason));
            let actual = TenantSlug::parse(&raw);
            prop_assert_eq!(actual.as_ref().map(TenantSlug::as_str), expected.as_ref().copied());
            if let Ok(slug) = actual {
                prop_assert_eq!(TenantSlug::parse(slug.as_str()), Ok(slug.clone()));
            }
        }

        #[test]
        fn generated_valid_emails_are_accepted_trimmed_and_lowercased(
            raw in valid_email(),
            field in proptest::sample::select(vec!["email", "contact_email"]),
        ) {
            let expected = raw.trim().to_lowercase();
            let email = Email::parse_field(&raw, field).map_err(|e| e.to_string());
            prop_assert_eq!(email.as_ref().map(Email::as_str), Ok(expected.as_str()));
            // Parsing what was stored gives it back unchanged.
            let again = Email::parse(&expected).map_err(|e| e.to_string());
            prop_assert_eq!(again, email);
        }

        #[test]
        fn each_broken_email_rule_is_refused_naming_the_field(
            raw in invalid_email(),
            field in proptest::sample::select(vec!["email", "contact_email"]),
        ) {
            prop_assert_eq!(Email::parse_field(&raw, field), Err(InvalidValue::new(field, EMAIL_REFUSED)));
        }

        /// Near misses and arbitrary text: the verdict must match the reference, and whatever
        /// is accepted parses again to itself.
        #[test]
        fn email_verdicts_match_the_documented_rules(raw in prop_oneof![near_miss_email(), "\\PC{0,40}"]) {
            let email = Email::parse(&raw);
            let expected = email_reference(&raw);
            prop_assert_eq!(email.as_ref().map(Email::as_str).ok(), expected.as_deref());
            if let Ok(email) = email {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
            }
        }
    }
}
