use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::PartnerId;
use crate::plan::{PlanId, TaskSize};
use crate::values::{Email, InvalidValue, TenantName, TenantSlug};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(Uuid);

impl TenantId {
    /// Time-ordered, so ids sort by creation.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Self::parse_field(raw, "id")
    }

    /// `parse`, naming `field` (such as `tenant_id`) when it fails.
    pub fn parse_field(raw: &str, field: &'static str) -> Result<Self, InvalidValue> {
        Uuid::parse_str(raw.trim())
            .map(Self)
            .map_err(|_| InvalidValue::new(field, "must be a tenant id (UUID)"))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A tenant's lifecycle: `pending → provisioning → active ⇄ suspended → deprovisioning →
/// deleted`, with `failed` reachable from the working states and retriable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Pending,
    Provisioning,
    Active,
    Suspended,
    Deprovisioning,
    Deleted,
    Failed,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 7] = [
        TenantStatus::Pending,
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Suspended,
        TenantStatus::Deprovisioning,
        TenantStatus::Deleted,
        TenantStatus::Failed,
    ];

    pub fn can_become(self, next: TenantStatus) -> bool {
        use TenantStatus::*;
        matches!(
            (self, next),
            (Pending, Provisioning)
                | (Provisioning, Active)
                | (Provisioning, Failed)
                | (Active, Suspended)
                | (Suspended, Active)
                | (Active | Suspended | Failed, Deprovisioning)
                | (Deprovisioning, Deleted)
                | (Deprovisioning, Failed)
                | (Failed, Provisioning)
        )
    }

    pub fn as_str(self) -> &'static str {
        use TenantStatus::*;
        match self {
            Pending => "pending",
            Provisioning => "provisioning",
            Active => "active",
            Suspended => "suspended",
            Deprovisioning => "deprovisioning",
            Deleted => "deleted",
            Failed => "failed",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tenant cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: TenantStatus,
    pub to: TenantStatus,
}

/// Where a tenant's dedicated container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub cluster_arn: String,
    pub task_arn: String,
    pub task_definition_arn: String,
    pub task_size: TaskSize,
    pub last_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: TenantSlug,
    pub name: TenantName,
    pub plan: PlanId,
    pub contact_email: Email,
    /// The partner (reseller) that brought the tenant, if any.
    #[serde(default)]
    pub partner_id: Option<PartnerId>,
    /// The tenant's secret (its container's machine token lives there), once provisioned.
    #[serde(default)]
    pub secret_arn: Option<String>,
    pub status: TenantStatus,
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub customer_count: u64,
    #[serde(default)]
    pub bundles: Vec<String>,
    /// Why the last provisioning attempt failed; kept after the tenant is marked `failed`.
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Optimistic lock: the store checks it on every write and bumps it.
    pub version: u64,
}

/// A validated request to onboard an ISP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub name: TenantName,
    pub slug: TenantSlug,
    pub plan: PlanId,
    pub contact_email: Email,
    pub partner_id: Option<PartnerId>,
}

impl Tenant {
    /// A tenant is born `provisioning`: creating it and queueing its provisioning job happen
    /// in the same request.
    pub fn onboard(new: NewTenant, now: OffsetDateTime) -> Self {
        Tenant {
            id: TenantId::generate(),
            slug: new.slug,
            name: new.name,
            plan: new.plan,
            contact_email: new.contact_email,
            partner_id: new.partner_id,
            secret_arn: None,
            status: TenantStatus::Provisioning,
            container: None,
            customer_count: 0,
            bundles: Vec::new(),
            failure_reason: None,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }

    pub fn transition(&mut self, next: TenantStatus, now: OffsetDateTime) -> Result<(), TransitionError> {
        if !self.status.can_become(next) {
            return Err(TransitionError { from: self.status, to: next });
        }
        self.status = next;
        self.updated_at = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tenant() -> Tenant {
        Tenant::onboard(
            NewTenant {
                name: TenantName::parse("Acme").expect("name"),
                slug: TenantSlug::parse("acme").expect("slug"),
                plan: PlanId::parse("usage").expect("plan"),
                contact_email: Email::parse("ops@acme.example").expect("email"),
                partner_id: None,
            },
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn onboarding_starts_in_provisioning() {
        let t = tenant();
        assert_eq!(t.status, TenantStatus::Provisioning);
        assert_eq!(t.version, 1);
    }

    #[test]
    fn the_happy_lifecycle_is_allowed() {
        use TenantStatus::*;
        let mut t = tenant();
        for next in [Active, Suspended, Active, Suspended, Deprovisioning, Deleted] {
            t.transition(next, OffsetDateTime::UNIX_EPOCH).expect("allowed");
        }
        assert_eq!(t.status, Deleted);
    }

    #[test]
    fn deleted_is_final() {
        for next in TenantStatus::ALL {
            assert!(!TenantStatus::Deleted.can_become(next));
        }
    }

    #[test]
    fn status_serializes_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&TenantStatus::Deprovisioning).ok(),
            Some("\"deprovisioning\"".into())
        );
    }

    proptest! {
        #[test]
        fn refused_transitions_change_nothing(steps in proptest::collection::vec(0usize..7, 0..20)) {
            let mut t = tenant();
            for step in steps {
                let next = TenantStatus::ALL[step];
                let before = t.clone();
                match t.transition(next, OffsetDateTime::UNIX_EPOCH) {
                    Ok(()) => {
                        prop_assert!(before.status.can_become(next));
                        prop_assert_eq!(t.status, next);
                    }
                    Err(_) => prop_assert_eq!(&t, &before),
                }
                prop_assert!(t.status != TenantStatus::Pending);
            }
        }
    }
}
