use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access::PartnerId;
use crate::events::DomainEvent;
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

/// Why a tenant is suspended. A tenant may be suspended for several reasons at once (an
/// admin's hold on top of non-payment); it is active again only once none is left. Each
/// reason is lifted only by a resume naming it, except that a resume naming none lifts every
/// reason but `non_payment`: only billing (a payment) ends a suspension for non-payment.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionReason {
    /// A platform admin's decision.
    Admin,
    /// Billing: invoices unpaid past dunning.
    NonPayment,
    /// Terms of service (abuse, fraud).
    Abuse,
    /// The ISP asked for it.
    TenantRequest,
}

impl SuspensionReason {
    pub const ALL: [SuspensionReason; 4] = [
        SuspensionReason::Admin,
        SuspensionReason::NonPayment,
        SuspensionReason::Abuse,
        SuspensionReason::TenantRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuspensionReason::Admin => "admin",
            SuspensionReason::NonPayment => "non_payment",
            SuspensionReason::Abuse => "abuse",
            SuspensionReason::TenantRequest => "tenant_request",
        }
    }

    /// Whether a resume naming `lifted` (none: a plain resume) lifts this reason.
    pub fn lifted_by(self, lifted: Option<SuspensionReason>) -> bool {
        match lifted {
            Some(named) => named == self,
            None => self != SuspensionReason::NonPayment,
        }
    }
}

/// Why a lifecycle request changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Illegal(#[from] TransitionError),
    /// A resume that lifts none of the reasons the tenant is suspended for.
    #[error("the tenant stays suspended for {remaining:?}")]
    StillSuspended { remaining: Vec<SuspensionReason> },
}

impl LifecycleError {
    /// The tenant's status when the request was refused.
    pub fn status(&self) -> TenantStatus {
        match self {
            LifecycleError::Illegal(error) => error.from,
            LifecycleError::StillSuspended { .. } => TenantStatus::Suspended,
        }
    }
}

/// The event types a tenant's own lifecycle emits.
pub mod tenant_events {
    pub const CREATED: &str = "tenant.created";
    pub const PROVISIONED: &str = "tenant.provisioned";
    pub const FAILED: &str = "tenant.failed";
    pub const SUSPENDED: &str = "tenant.suspended";
    /// Still suspended, for another set of reasons (one added, or one lifted of several).
    pub const SUSPENSION_CHANGED: &str = "tenant.suspension_changed";
    pub const RESUMED: &str = "tenant.resumed";
    pub const DEPROVISIONING: &str = "tenant.deprovisioning";
    pub const DELETED: &str = "tenant.deleted";
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
    /// Why the tenant is suspended (sorted, no repeats); empty unless `suspended`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspended_for: Vec<SuspensionReason>,
    /// How far dunning has degraded the tenant (`current` unless an invoice is unpaid); its
    /// license states it. Moved only by the dunning store writes, version-checked.
    #[serde(default, skip_serializing_if = "crate::dunning::BillingStanding::is_current")]
    pub billing_standing: crate::dunning::BillingStanding,
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
            suspended_for: Vec::new(),
            billing_standing: crate::dunning::BillingStanding::Current,
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

    /// The event of the tenant's creation (written with it).
    pub fn created_event(&self) -> DomainEvent {
        DomainEvent::new(
            tenant_events::CREATED,
            serde_json::json!({ "slug": self.slug.as_str(), "plan": self.plan.as_str(),
                "partner_id": self.partner_id.as_ref().map(|p| p.as_str()) }),
        )
    }

    /// `provisioning → active`: its container runs.
    pub fn activate(
        &mut self,
        container: Container,
        secret_arn: String,
        now: OffsetDateTime,
    ) -> Result<DomainEvent, TransitionError> {
        self.transition(TenantStatus::Active, now)?;
        // No ARNs: tenant admins read their log too, and ARNs name the platform's account.
        let data = serde_json::json!({ "task_size": container.task_size });
        self.container = Some(container);
        self.secret_arn = Some(secret_arn);
        self.failure_reason = None;
        Ok(DomainEvent::new(tenant_events::PROVISIONED, data))
    }

    /// A working step (provisioning, deprovisioning) `→ failed`, keeping the reason.
    pub fn fail(&mut self, reason: &str, now: OffsetDateTime) -> Result<DomainEvent, TransitionError> {
        let from = self.status;
        self.transition(TenantStatus::Failed, now)?;
        self.failure_reason = Some(reason.to_owned());
        Ok(DomainEvent::new(tenant_events::FAILED, serde_json::json!({ "from": from, "reason": reason })))
    }

    /// Suspends the tenant for `reason`: `active → suspended`, or one more reason on a
    /// suspended tenant. `None` when nothing changes (already suspended for it): a repeat.
    pub fn suspend(
        &mut self,
        reason: SuspensionReason,
        now: OffsetDateTime,
    ) -> Result<Option<DomainEvent>, LifecycleError> {
        if self.status == TenantStatus::Suspended {
            if self.suspended_for.contains(&reason) {
                return Ok(None);
            }
            self.suspended_for.push(reason);
            self.suspended_for.sort_unstable();
            self.updated_at = now;
            return Ok(Some(self.suspension_event(tenant_events::SUSPENSION_CHANGED, reason)));
        }
        self.transition(TenantStatus::Suspended, now)?;
        self.suspended_for = vec![reason];
        Ok(Some(self.suspension_event(tenant_events::SUSPENDED, reason)))
    }

    /// Lifts the reasons a resume naming `reason` lifts (`SuspensionReason::lifted_by`);
    /// `suspended → active` once none is left. `None` for a resume of an active tenant (a
    /// repeat); a resume that lifts nothing is `StillSuspended`.
    pub fn resume(
        &mut self,
        reason: Option<SuspensionReason>,
        now: OffsetDateTime,
    ) -> Result<Option<DomainEvent>, LifecycleError> {
        if self.status == TenantStatus::Active {
            return Ok(None);
        }
        if self.status != TenantStatus::Suspended {
            return Err(TransitionError { from: self.status, to: TenantStatus::Active }.into());
        }
        let remaining: Vec<SuspensionReason> =
            self.suspended_for.iter().copied().filter(|held| !held.lifted_by(reason)).collect();
        if remaining.len() == self.suspended_for.len() && !remaining.is_empty() {
            return Err(LifecycleError::StillSuspended { remaining });
        }
        let lifted: Vec<SuspensionReason> =
            self.suspended_for.iter().copied().filter(|held| held.lifted_by(reason)).collect();
        self.suspended_for = remaining;
        if !self.suspended_for.is_empty() {
            self.updated_at = now;
            let data = serde_json::json!({ "lifted": lifted, "reasons": self.suspended_for });
            return Ok(Some(DomainEvent::new(tenant_events::SUSPENSION_CHANGED, data)));
        }
        self.transition(TenantStatus::Active, now)?;
        Ok(Some(DomainEvent::new(tenant_events::RESUMED, serde_json::json!({ "lifted": lifted }))))
    }

    /// `active | suspended | failed → deprovisioning`. `None` when it already is (a repeat).
    pub fn begin_deprovisioning(
        &mut self,
        now: OffsetDateTime,
    ) -> Result<Option<DomainEvent>, LifecycleError> {
        if self.status == TenantStatus::Deprovisioning {
            return Ok(None);
        }
        let from = self.status;
        self.transition(TenantStatus::Deprovisioning, now)?;
        self.suspended_for.clear();
        Ok(Some(DomainEvent::new(tenant_events::DEPROVISIONING, serde_json::json!({ "from": from }))))
    }

    /// `deprovisioning → deleted`: compute, definition, secret and token are gone; the record
    /// stays (billing history).
    pub fn finish_deprovisioning(&mut self, now: OffsetDateTime) -> Result<DomainEvent, TransitionError> {
        self.transition(TenantStatus::Deleted, now)?;
        self.container = None;
        self.failure_reason = None;
        Ok(DomainEvent::new(tenant_events::DELETED, serde_json::json!({ "slug": self.slug.as_str() })))
    }

    fn suspension_event(&self, event_type: &str, reason: SuspensionReason) -> DomainEvent {
        DomainEvent::new(event_type, serde_json::json!({ "reason": reason, "reasons": self.suspended_for }))
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

    /// One lifecycle request of the use cases, for the walks below.
    #[derive(Debug, Clone)]
    enum Request {
        Suspend(SuspensionReason),
        Resume(Option<SuspensionReason>),
        Delete,
        FinishDelete,
        Fail,
    }

    fn request() -> impl Strategy<Value = Request> {
        let reason = proptest::sample::select(SuspensionReason::ALL.to_vec());
        prop_oneof![
            3 => reason.clone().prop_map(Request::Suspend),
            3 => proptest::option::of(reason).prop_map(Request::Resume),
            1 => Just(Request::Delete),
            1 => Just(Request::FinishDelete),
            1 => Just(Request::Fail),
        ]
    }

    fn active() -> Tenant {
        let mut t = tenant();
        t.transition(TenantStatus::Active, OffsetDateTime::UNIX_EPOCH).expect("active");
        t
    }

    #[test]
    fn suspend_and_resume_are_refused_from_every_status_that_cannot_get_there() {
        for status in TenantStatus::ALL {
            let mut t = Tenant { status, ..tenant() };
            let before = t.clone();
            let suspended = t.suspend(SuspensionReason::Admin, OffsetDateTime::UNIX_EPOCH);
            if matches!(status, TenantStatus::Active | TenantStatus::Suspended) {
                continue;
            }
            assert_eq!(
                suspended,
                Err(LifecycleError::Illegal(TransitionError { from: status, to: TenantStatus::Suspended }))
            );
            assert_eq!(t, before, "a refused suspend changes nothing");
            let resumed = t.resume(None, OffsetDateTime::UNIX_EPOCH);
            assert_eq!(resumed.map_err(|e| e.status()), Err(status));
            assert_eq!(t, before, "a refused resume changes nothing");
        }
    }

    #[test]
    fn only_a_resume_for_non_payment_lifts_a_non_payment_suspension() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let mut t = active();
        let event = t.suspend(SuspensionReason::NonPayment, now).expect("suspended").expect("an event");
        assert_eq!(event.event_type, tenant_events::SUSPENDED);
        assert_eq!(t.suspend(SuspensionReason::NonPayment, now), Ok(None), "a repeat changes nothing");
        let before = t.clone();
        for refused in [None, Some(SuspensionReason::Admin), Some(SuspensionReason::Abuse)] {
            assert_eq!(
                t.resume(refused, now),
                Err(LifecycleError::StillSuspended { remaining: vec![SuspensionReason::NonPayment] })
            );
            assert_eq!(t, before);
        }
        // An admin hold on top: a plain resume lifts it, non-payment stays.
        let added = t.suspend(SuspensionReason::Admin, now).expect("added").expect("event");
        assert_eq!(added.event_type, tenant_events::SUSPENSION_CHANGED);
        assert_eq!(t.suspended_for, [SuspensionReason::Admin, SuspensionReason::NonPayment]);
        let lifted = t.resume(None, now).expect("admin lifted").expect("event");
        assert_eq!(lifted.event_type, tenant_events::SUSPENSION_CHANGED);
        assert_eq!(
            (t.status, t.suspended_for.clone()),
            (TenantStatus::Suspended, vec![SuspensionReason::NonPayment])
        );
        let resumed = t.resume(Some(SuspensionReason::NonPayment), now).expect("paid").expect("event");
        assert_eq!(resumed.event_type, tenant_events::RESUMED);
        assert_eq!((t.status, t.suspended_for.len()), (TenantStatus::Active, 0));
        assert_eq!(t.resume(None, now), Ok(None), "resuming an active tenant is a repeat");
    }

    #[test]
    fn delete_runs_from_active_suspended_and_failed_only_and_keeps_the_record() {
        let now = OffsetDateTime::UNIX_EPOCH;
        for status in TenantStatus::ALL {
            let mut t = Tenant { status, ..active() };
            let outcome = t.begin_deprovisioning(now);
            match status {
                TenantStatus::Active | TenantStatus::Suspended | TenantStatus::Failed => {
                    assert_eq!(
                        outcome.expect("allowed").map(|e| e.event_type),
                        Some(tenant_events::DEPROVISIONING.into())
                    );
                    let deleted = t.finish_deprovisioning(now).expect("deleted");
                    assert_eq!(deleted.event_type, tenant_events::DELETED);
                    assert_eq!((t.status, t.container.is_none()), (TenantStatus::Deleted, true));
                }
                TenantStatus::Deprovisioning => assert_eq!(outcome, Ok(None), "a repeat"),
                _ => assert_eq!(outcome.map_err(|e| e.status()), Err(status)),
            }
        }
    }

    proptest! {
        /// Random requests against the use-case methods: every status move is one the table
        /// allows, a refused or repeated request changes nothing, the suspension reasons are
        /// there exactly while suspended (sorted, once each), and non-payment is lifted only
        /// by a resume naming it.
        #[test]
        fn lifecycle_requests_keep_their_invariants(requests in proptest::collection::vec(request(), 0..60)) {
            let mut t = active();
            let mut now = OffsetDateTime::UNIX_EPOCH;
            for request in requests {
                now += time::Duration::seconds(1);
                let before = t.clone();
                let outcome: Result<Option<DomainEvent>, LifecycleError> = match request.clone() {
                    Request::Suspend(reason) => t.suspend(reason, now),
                    Request::Resume(reason) => t.resume(reason, now),
                    Request::Delete => t.begin_deprovisioning(now),
                    Request::FinishDelete => t.finish_deprovisioning(now).map(Some).map_err(Into::into),
                    Request::Fail => t.fail("boom", now).map(Some).map_err(Into::into),
                };
                match &outcome {
                    Err(error) => {
                        prop_assert_eq!(&t, &before, "{:?} refused but changed the tenant", request);
                        prop_assert_eq!(error.status(), before.status);
                    }
                    Ok(None) => prop_assert_eq!(&t, &before, "{:?} was a repeat but changed the tenant", request),
                    Ok(Some(event)) => {
                        prop_assert!(event.event_type.starts_with("tenant."));
                        prop_assert!(t.status == before.status || allowed(before.status, t.status),
                            "{} -> {} by {:?}", before.status, t.status, request);
                        prop_assert_eq!(t.updated_at, now);
                    }
                }
                prop_assert_eq!(t.status == TenantStatus::Suspended, !t.suspended_for.is_empty());
                prop_assert!(t.suspended_for.windows(2).all(|w| w[0] < w[1]), "{:?}", t.suspended_for);
                let held_non_payment = before.suspended_for.contains(&SuspensionReason::NonPayment);
                let lifted_non_payment = held_non_payment && !t.suspended_for.contains(&SuspensionReason::NonPayment);
                if lifted_non_payment && !matches!(request, Request::Delete) {
                    prop_assert!(matches!(request, Request::Resume(Some(SuspensionReason::NonPayment))), "{:?}", request);
                }
            }
        }
    }
}
