//! What each audience sees of a tenant. A field reaches an audience only when it is written
//! into that audience's view here, so a new field on `Tenant` stays internal until someone
//! decides who may see it.

use dotmac_domain::{
    Action, BillingStanding, Caller, Container, Resource, SuspensionReason, Target, TaskSize, Tenant,
    TenantId, TenantStatus, authorize,
};
use dotmac_store::{HealthStatus, Heartbeat};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// A tenant as the platform's staff see it: everything, ARNs and failure detail included.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantStaffView {
    #[schema(value_type = String, format = Uuid)]
    pub id: TenantId,
    #[schema(value_type = String)]
    pub slug: String,
    pub name: String,
    pub plan: String,
    pub contact_email: String,
    pub partner_id: Option<String>,
    /// The tenant's secret (its container's machine token lives there), once provisioned.
    pub secret_arn: Option<String>,
    pub status: TenantStatus,
    /// Why it is suspended (empty unless `suspended`).
    pub suspended_for: Vec<SuspensionReason>,
    /// `current`, or how far dunning degraded it (`past_due`, `restricted`, `suspended`)
    /// while an invoice is unpaid.
    pub billing_standing: BillingStanding,
    pub container: Option<StaffContainerView>,
    pub customer_count: u64,
    pub bundles: Vec<String>,
    /// Why the last provisioning attempt failed; kept after the tenant is marked `failed`.
    pub failure_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Optimistic lock: bumped by every change.
    pub version: u64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StaffContainerView {
    pub cluster_arn: String,
    pub task_arn: String,
    pub task_definition_arn: String,
    pub task_size: TaskSize,
    /// ECS's last reported status of the task (`RUNNING`, ...).
    pub last_status: String,
    /// The task's private address, when ECS reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// A tenant as its own users and its partner see it: no platform internals (ARNs carry the
/// account id, the endpoint is a private address, failure reasons quote infrastructure
/// errors).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantView {
    #[schema(value_type = String, format = Uuid)]
    pub id: TenantId,
    pub slug: String,
    pub name: String,
    pub plan: String,
    pub contact_email: String,
    pub partner_id: Option<String>,
    pub status: TenantStatus,
    /// Why it is suspended (empty unless `suspended`).
    pub suspended_for: Vec<SuspensionReason>,
    /// `current`, or how far dunning degraded it (`past_due`, `restricted`, `suspended`)
    /// while an invoice is unpaid.
    pub billing_standing: BillingStanding,
    pub container: Option<ContainerView>,
    pub customer_count: u64,
    pub bundles: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerView {
    pub task_size: TaskSize,
    pub last_status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// A tenant as the caller may see it: the staff view for platform staff, else the tenant's.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TenantAnswer {
    Staff(TenantStaffView),
    Tenant(TenantView),
}

impl TenantStaffView {
    pub fn of(tenant: &Tenant) -> Self {
        TenantStaffView {
            id: tenant.id,
            slug: tenant.slug.to_string(),
            name: tenant.name.to_string(),
            plan: tenant.plan.to_string(),
            contact_email: tenant.contact_email.to_string(),
            partner_id: tenant.partner_id.as_ref().map(ToString::to_string),
            secret_arn: tenant.secret_arn.clone(),
            status: tenant.status,
            suspended_for: tenant.suspended_for.clone(),
            billing_standing: tenant.billing_standing,
            container: tenant.container.as_ref().map(StaffContainerView::of),
            customer_count: tenant.customer_count,
            bundles: tenant.bundles.clone(),
            failure_reason: tenant.failure_reason.clone(),
            created_at: tenant.created_at,
            updated_at: tenant.updated_at,
            version: tenant.version,
        }
    }
}

impl StaffContainerView {
    fn of(container: &Container) -> Self {
        StaffContainerView {
            cluster_arn: container.cluster_arn.clone(),
            task_arn: container.task_arn.clone(),
            task_definition_arn: container.task_definition_arn.clone(),
            task_size: container.task_size,
            last_status: container.last_status.clone(),
            endpoint: container.endpoint.clone(),
            started_at: container.started_at,
        }
    }
}

impl TenantView {
    pub fn of(tenant: &Tenant) -> Self {
        TenantView {
            id: tenant.id,
            slug: tenant.slug.to_string(),
            name: tenant.name.to_string(),
            plan: tenant.plan.to_string(),
            contact_email: tenant.contact_email.to_string(),
            partner_id: tenant.partner_id.as_ref().map(ToString::to_string),
            status: tenant.status,
            suspended_for: tenant.suspended_for.clone(),
            billing_standing: tenant.billing_standing,
            container: tenant.container.as_ref().map(|c| ContainerView {
                task_size: c.task_size,
                last_status: c.last_status.clone(),
                started_at: c.started_at,
            }),
            customer_count: tenant.customer_count,
            bundles: tenant.bundles.clone(),
            created_at: tenant.created_at,
            updated_at: tenant.updated_at,
        }
    }
}

impl TenantAnswer {
    /// The platform's staff (whoever may read every tenant) get the staff view.
    pub fn for_caller(caller: &Caller, tenant: &Tenant) -> Self {
        if authorize(caller, Resource::Tenant, Action::Read, Target::default()).is_ok() {
            TenantAnswer::Staff(TenantStaffView::of(tenant))
        } else {
            TenantAnswer::Tenant(TenantView::of(tenant))
        }
    }
}

/// A container's newest health report.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    /// `null` until the container first reports.
    pub latest: Option<HeartbeatView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatView {
    pub status: HealthStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub reported_at: OffsetDateTime,
}

impl HealthView {
    pub fn of(tenant_id: TenantId, latest: Option<&Heartbeat>) -> Self {
        HealthView {
            tenant_id,
            latest: latest.map(|beat| HeartbeatView {
                status: beat.status,
                detail: beat.detail.clone(),
                reported_at: beat.reported_at,
            }),
        }
    }
}

/// An event as the caller may see it: platform staff see every event whole; anyone else sees
/// a failure without its reason (it quotes infrastructure errors, as `failure_reason` does).
pub fn event_for_caller(
    caller: &Caller,
    mut event: dotmac_domain::EventEnvelope,
) -> dotmac_domain::EventEnvelope {
    let staff = authorize(caller, Resource::Tenant, Action::Read, Target::default()).is_ok();
    if !staff
        && event.event_type == dotmac_domain::tenant_events::FAILED
        && let Some(data) = event.data.as_object_mut()
    {
        data.remove("reason");
    }
    event
}
