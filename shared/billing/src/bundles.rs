//! Bundles: premium add-ons a tenant subscribes to on top of its plan, each a flat monthly
//! price (prorated by day when added or removed mid-period) and the entitlement its
//! container's license names by `code`.

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Stable id, as licenses and invoices name it: `a-z`, `0-9` and inner hyphens.
    pub code: String,
    pub name: String,
    pub description: String,
    /// The flat monthly price.
    pub monthly: Money,
}

impl Bundle {
    /// Whether `code` is well formed (1–40 of `a-z`, `0-9`, `-`, not starting or ending with `-`).
    pub fn is_code(code: &str) -> bool {
        (1..=40).contains(&code.len())
            && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !code.starts_with('-')
            && !code.ends_with('-')
    }
}

/// The catalogue every stack is seeded with (USD, documented in the README):
/// CRM 49.00, Project Management 29.00, AI 99.00 a month.
pub fn seed_bundles() -> [Bundle; 3] {
    let bundle = |code: &str, name: &str, description: &str, cents: i64| Bundle {
        code: code.to_owned(),
        name: name.to_owned(),
        description: description.to_owned(),
        monthly: Money::new(cents, Currency::USD),
    };
    [
        bundle("crm", "CRM", "Customer relationship management: leads, tickets, campaigns", 4_900),
        bundle("project-management", "Project Management", "Field work orders, projects and crews", 2_900),
        bundle("ai", "AI", "AI assistant for support and network operations", 9_900),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_bundles_have_distinct_well_formed_codes_and_positive_prices() {
        let bundles = seed_bundles();
        let codes: std::collections::HashSet<_> = bundles.iter().map(|b| b.code.as_str()).collect();
        assert_eq!(codes, ["crm", "project-management", "ai"].into_iter().collect());
        assert!(bundles.iter().all(|b| Bundle::is_code(&b.code) && b.monthly.minor > 0));
        assert!(!Bundle::is_code("CRM") && !Bundle::is_code("-crm") && !Bundle::is_code(""));
    }
}
