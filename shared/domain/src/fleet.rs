//! The fleet's pure rules: how big a tenant's container should be for the customers it
//! serves, and the ids of backups. No I/O here.

use serde::{Deserialize, Serialize};

use crate::plan::TaskSize;
use crate::values::InvalidValue;

/// One size tier: tenants reporting at most `up_to_customers` get at least `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeTier {
    /// The tier's upper bound (inclusive); `None` for the last, open-ended tier.
    pub up_to_customers: Option<u64>,
    pub size: TaskSize,
}

/// The tiers by reported customer count, smallest first. Each is a Fargate pair; the seed's
/// example tenants land on the first three: 500 customers → 0.25 vCPU / 512 MiB, 1,200 →
/// 0.5 vCPU / 1 GiB, 3,000 → 1 vCPU / 2 GiB.
pub const SIZE_TIERS: [SizeTier; 5] = [
    SizeTier { up_to_customers: Some(1_000), size: TaskSize { cpu: 256, memory_mib: 512 } },
    SizeTier { up_to_customers: Some(2_500), size: TaskSize { cpu: 512, memory_mib: 1024 } },
    SizeTier { up_to_customers: Some(5_000), size: TaskSize { cpu: 1024, memory_mib: 2048 } },
    SizeTier { up_to_customers: Some(10_000), size: TaskSize { cpu: 2048, memory_mib: 4096 } },
    SizeTier { up_to_customers: None, size: TaskSize { cpu: 4096, memory_mib: 8192 } },
];

/// The tier a customer count falls in.
pub fn tier_size(customers: u64) -> TaskSize {
    SIZE_TIERS
        .iter()
        .find(|tier| tier.up_to_customers.is_none_or(|max| customers <= max))
        .map(|tier| tier.size)
        .unwrap_or(SIZE_TIERS[SIZE_TIERS.len() - 1].size)
}

/// The size a tenant's container should run at: a platform admin's override when there is
/// one, else the larger of the plan's own size (a floor: an enterprise tenant never shrinks
/// below what its plan promises) and the tier of its latest reported customer count.
pub fn desired_size(plan_size: TaskSize, customers: Option<u64>, manual: Option<TaskSize>) -> TaskSize {
    if let Some(manual) = manual {
        return manual;
    }
    let tier = tier_size(customers.unwrap_or(0));
    if (tier.cpu, tier.memory_mib) >= (plan_size.cpu, plan_size.memory_mib) { tier } else { plan_size }
}

/// A backup's id: `a-z`, `0-9` and `-`, 1–64 characters. On-demand backups get a UUID; the
/// daily schedule's are `daily-YYYYMMDD`, so a repeated schedule run names the same backup.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// The daily schedule's backup of the day `date` (UTC).
    pub fn daily(date: time::Date) -> Self {
        Self(format!("daily-{:04}{:02}{:02}", date.year(), u8::from(date.month()), date.day()))
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::parse_field(raw, "backup_id")
    }

    pub fn parse_field(raw: &str, field: &'static str) -> Result<Self, InvalidValue> {
        let well_formed = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-');
        if !well_formed {
            return Err(InvalidValue::new(field, "must be a backup id (a-z, 0-9 and -, at most 64)"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BackupId {
    type Error = InvalidValue;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> Self {
        id.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SMALL: TaskSize = TaskSize { cpu: 256, memory_mib: 512 };

    #[test]
    fn the_seed_tenants_land_on_their_tiers() {
        assert_eq!(desired_size(SMALL, Some(500), None), TaskSize { cpu: 256, memory_mib: 512 });
        assert_eq!(desired_size(SMALL, Some(1_200), None), TaskSize { cpu: 512, memory_mib: 1024 });
        assert_eq!(desired_size(SMALL, Some(3_000), None), TaskSize { cpu: 1024, memory_mib: 2048 });
        assert_eq!(desired_size(SMALL, None, None), SMALL);
    }

    #[test]
    fn the_plan_is_a_floor_and_an_override_wins() {
        let enterprise = TaskSize { cpu: 1024, memory_mib: 2048 };
        assert_eq!(desired_size(enterprise, Some(500), None), enterprise);
        let manual = TaskSize { cpu: 2048, memory_mib: 4096 };
        assert_eq!(desired_size(SMALL, Some(500), Some(manual)), manual);
        assert_eq!(desired_size(enterprise, Some(50_000), Some(SMALL)), SMALL);
    }

    #[test]
    fn every_tier_is_a_fargate_size_and_they_grow() {
        assert!(SIZE_TIERS.iter().all(|t| t.size.is_valid_fargate_size()));
        assert!(SIZE_TIERS.windows(2).all(|w| w[0].size.cpu < w[1].size.cpu
            && w[0].up_to_customers.is_some_and(|a| w[1].up_to_customers.is_none_or(|b| a < b))));
    }

    #[test]
    fn backup_ids() {
        assert!(BackupId::parse(&BackupId::generate().to_string()).is_ok());
        let day = time::macros::date!(2026 - 12 - 01);
        assert_eq!(BackupId::daily(day).as_str(), "daily-20261201");
        for bad in ["", "-x", "UPPER", "a/b", &"x".repeat(65)] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn more_customers_never_mean_a_smaller_container(a in 0u64..50_000, b in 0u64..50_000) {
            let (low, high) = (a.min(b), a.max(b));
            let (small, big) = (desired_size(SMALL, Some(low), None), desired_size(SMALL, Some(high), None));
            prop_assert!(small.cpu <= big.cpu && small.memory_mib <= big.memory_mib);
            prop_assert!(big.is_valid_fargate_size());
        }
    }
}
