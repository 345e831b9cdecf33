//! Pure types and rules of the platform: no I/O here. Values are parsed once at the edge
//! (`TenantSlug::parse`, `Email::parse`, ...) so everything past it can trust them.

pub mod access;
pub mod password_policy;
pub mod plan;
pub mod tenant;
pub mod values;

pub use access::{Action, Caller, Denied, Permission, Resource, Role, Scope, Target, authorize};
pub use plan::{Plan, PlanId, TaskSize, seed_plans};
pub use tenant::{Container, NewTenant, Tenant, TenantId, TenantStatus, TransitionError};
pub use values::{Email, InvalidValue, TenantName, TenantSlug};
