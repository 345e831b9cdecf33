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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A platform admin's choice of container size, which the automatic sizing by customer
    /// count respects (`None`: sized automatically).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_size_override: Option<TaskSize>,
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
            task_size_override: None,
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

    fn new_tenant() -> NewTenant {
        NewTenant {
            name: TenantName::parse("Acme").expect("name"),
            slug: TenantSlug::parse("acme").expect("slug"),
            plan: PlanId::parse("usage").expect("plan"),
            contact_email: Email::parse("ops@acme.example").expect("email"),
            partner_id: None,
        }
    }

    fn tenant() -> Tenant {
        Tenant::onboard(new_tenant(), OffsetDateTime::UNIX_EPOCH)
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

    /// Row = from, column = to, both in `index` order. Written out from the lifecycle the
    /// type documents (pending → provisioning → active ⇄ suspended → deprovisioning →
    /// deleted; failed from the working states, provisioning and deprovisioning, and retried
    /// from there), not from `can_become`, so a move added or dropped there is caught.
    const ALLOWED: [[bool; 7]; 7] = {
        const O: bool = false;
        const X: bool = true;
        [
            //  pend prov actv susp depr dele fail
            [O, X, O, O, O, O, O], // pending
            [O, O, X, O, O, O, X], // provisioning
            [O, O, O, X, X, O, O], // active
            [O, O, X, O, X, O, O], // suspended
            [O, O, O, O, O, X, X], // deprovisioning
            [O, O, O, O, O, O, O], // deleted
            [O, X, O, O, X, O, O], // failed
        ]
    };

    /// Position in `ALLOWED`; a match rather than `ALL`'s order, so a reordered or extended
    /// `ALL` cannot shift the table (a new status will not compile here).
    fn index(status: TenantStatus) -> usize {
        use TenantStatus::*;
        match status {
            Pending => 0,
            Provisioning => 1,
            Active => 2,
            Suspended => 3,
            Deprovisioning => 4,
            Deleted => 5,
            Failed => 6,
        }
    }

    fn allowed(from: TenantStatus, to: TenantStatus) -> bool {
        ALLOWED[index(from)][index(to)]
    }

    #[test]
    fn every_pair_of_statuses_follows_the_table() {
        let distinct: std::collections::HashSet<usize> =
            TenantStatus::ALL.iter().map(|s| index(*s)).collect();
        assert_eq!(distinct.len(), 7, "ALL lists every status once");
        for from in TenantStatus::ALL {
            for to in TenantStatus::ALL {
                assert_eq!(from.can_become(to), allowed(from, to), "{from} -> {to}");
            }
        }
    }

    /// One step of a random walk: either one of the moves the table allows from wherever the
    /// tenant is (so walks reach suspended, deleted and the retries instead of stalling in
    /// provisioning), or any status at all (mostly refused); and how far the clock moved.
    fn step() -> impl Strategy<Value = (bool, usize, i64)> {
        (proptest::bool::weighted(0.7), 0usize..7, 0i64..=86_400_000_000_000)
    }

    proptest! {
        #[test]
        fn random_walks_keep_the_lifecycle_invariants(
            start in 0i64..=4_102_444_800,
            // A reason an earlier attempt left (the provisioner keeps it while it retries).
            failure_reason in proptest::option::of("[a-zA-Z :]{1,30}"),
            steps in proptest::collection::vec(step(), 0..40),
        ) {
            let born = OffsetDateTime::from_unix_timestamp(start).expect("time");
            let mut t = Tenant { failure_reason, ..Tenant::onboard(new_tenant(), born) };
            let mut now = born;
            for (follow_table, pick, elapsed_ns) in steps {
                let moves: Vec<TenantStatus> =
                    TenantStatus::ALL.into_iter().filter(|to| allowed(t.status, *to)).collect();
                let next = if follow_table && !moves.is_empty() {
                    moves[pick % moves.len()]
                } else {
                    TenantStatus::ALL[pick]
                };
                now += time::Duration::nanoseconds(elapsed_ns);
                let before = t.clone();
                match t.transition(next, now) {
                    Ok(()) => {
                        prop_assert!(allowed(before.status, next), "{} -> {next} accepted", before.status);
                        prop_assert_eq!(t.status, next);
                        prop_assert_eq!(t.updated_at, now);
                        // Only the status and its time change: the version is the store's to
                        // bump, the failure reason the provisioner's to set or clear.
                        let untouched = Tenant { status: before.status, updated_at: before.updated_at, ..t.clone() };
                        prop_assert_eq!(&untouched, &before);
                    }
                    Err(error) => {
                        prop_assert!(!allowed(before.status, next), "{} -> {next} refused", before.status);
                        prop_assert_eq!(error, TransitionError { from: before.status, to: next });
                        prop_assert_eq!(&t, &before);
                    }
                }
                prop_assert!(t.updated_at >= before.updated_at, "updated_at went backwards");
                prop_assert!(t.created_at == born && t.updated_at >= t.created_at);
                prop_assert_eq!(t.version, 1);
                prop_assert!(t.status != TenantStatus::Pending, "nothing leads back to pending");
                if before.status == TenantStatus::Deleted {
                    prop_assert_eq!(t.status, TenantStatus::Deleted);
                }
            }
        }
    }
}
