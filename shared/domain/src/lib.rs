//! Pure types and rules of the platform: no I/O here. Values are parsed once at the edge
//! (`TenantSlug::parse`, `Email::parse`, ...) so everything past it can trust them.

pub mod access;
pub mod dunning;
pub mod events;
pub mod fleet;
pub mod password_policy;
pub mod plan;
#[cfg(test)]
mod strategies;
pub mod tenant;
pub mod values;

pub use access::{
    Account, Action, AssignmentError, Caller, CustomRole, Denied, Fence, PartnerId, Permission, Resource,
    Role, RoleName, Scope, Target, authorize, check_assignment, may_define,
};
pub use dunning::{BillingStanding, DunningSchedule, ScheduleError};
pub use events::{DomainEvent, ENVELOPE_VERSION, EventEnvelope};
pub use fleet::{
    BackupId, Drift, Expected, ObservedTask, Recorded, RolloutChoice, SIZE_TIERS, SizeTier, Verdict,
    classify, desired_size, expects_compute, rollout_choice, rollout_failed, select_batch, tier_size,
};
pub use plan::{Plan, PlanId, TaskSize, seed_plans};
pub use tenant::{
    Container, LifecycleError, NewTenant, SuspensionReason, Tenant, TenantId, TenantStatus, TransitionError,
    tenant_events,
};
pub use values::{Email, InvalidValue, TenantName, TenantSlug};
