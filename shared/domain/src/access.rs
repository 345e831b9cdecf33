//! Who may do what: the one policy function every handler asks.
//!
//! A permission is resource × action × scope. `Global` reaches every tenant, `Tenant` only the
//! caller's own tenant, `Own` only objects the caller owns inside its tenant.

use serde::{Deserialize, Serialize};

use crate::tenant::TenantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Tenant,
    User,
    Role,
    Plan,
    Service,
    Invoice,
    Payment,
    Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Own,
    Tenant,
    Global,
}

/// `None` in `resource` or `action` is the seed's `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub resource: Option<Resource>,
    pub action: Option<Action>,
    pub scope: Scope,
}

impl Permission {
    const fn new(resource: Option<Resource>, action: Option<Action>, scope: Scope) -> Self {
        Self { resource, action, scope }
    }

    fn covers(&self, resource: Resource, action: Action) -> bool {
        self.resource.is_none_or(|r| r == resource) && self.action.is_none_or(|a| a == action)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    TenantAdmin,
    CustomerUser,
}

impl Role {
    pub fn permissions(self) -> &'static [Permission] {
        const PLATFORM_ADMIN: &[Permission] = &[Permission::new(None, None, Scope::Global)];
        const TENANT_ADMIN: &[Permission] = &[Permission::new(None, None, Scope::Tenant)];
        const CUSTOMER_USER: &[Permission] = &[
            Permission::new(Some(Resource::Service), Some(Action::Read), Scope::Own),
            Permission::new(Some(Resource::Invoice), Some(Action::Read), Scope::Own),
            Permission::new(Some(Resource::Payment), Some(Action::Create), Scope::Own),
        ];
        match self {
            Role::PlatformAdmin => PLATFORM_ADMIN,
            Role::TenantAdmin => TENANT_ADMIN,
            Role::CustomerUser => CUSTOMER_USER,
        }
    }
}

/// The authenticated principal of a request, as resolved from its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub user_id: String,
    pub tenant_id: Option<TenantId>,
    pub roles: Vec<Role>,
}

/// What a request wants to touch: the object's tenant (none for platform-level objects such
/// as plans or the tenant collection) and, where it has one, its owner.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub tenant_id: Option<TenantId>,
    pub owner_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not allowed to {action:?} {resource:?}")]
pub struct Denied {
    pub resource: Resource,
    pub action: Action,
}

pub fn authorize(
    caller: &Caller,
    resource: Resource,
    action: Action,
    target: Target<'_>,
) -> Result<(), Denied> {
    let same_tenant = caller.tenant_id.is_some() && caller.tenant_id == target.tenant_id;
    let owns = same_tenant && target.owner_id == Some(caller.user_id.as_str());
    let allowed = caller
        .roles
        .iter()
        .flat_map(|role| role.permissions())
        .filter(|permission| permission.covers(resource, action))
        .any(|permission| match permission.scope {
            Scope::Global => true,
            Scope::Tenant => same_tenant,
            Scope::Own => owns,
        });
    if allowed { Ok(()) } else { Err(Denied { resource, action }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn caller(tenant: Option<TenantId>, roles: &[Role]) -> Caller {
        Caller { user_id: "u1".into(), tenant_id: tenant, roles: roles.to_vec() }
    }

    fn target(tenant_id: Option<TenantId>, owner_id: Option<&str>) -> Target<'_> {
        Target { tenant_id, owner_id }
    }

    #[test]
    fn platform_admin_reaches_everything() {
        let admin = caller(None, &[Role::PlatformAdmin]);
        let other = Some(TenantId::generate());
        assert!(authorize(&admin, Resource::Tenant, Action::Create, target(None, None)).is_ok());
        assert!(authorize(&admin, Resource::Invoice, Action::Delete, target(other, None)).is_ok());
    }

    #[test]
    fn tenant_admin_is_fenced_to_its_tenant() {
        let mine = TenantId::generate();
        let admin = caller(Some(mine), &[Role::TenantAdmin]);
        assert!(authorize(&admin, Resource::Tenant, Action::Read, target(Some(mine), None)).is_ok());
        assert!(
            authorize(&admin, Resource::Tenant, Action::Read, target(Some(TenantId::generate()), None))
                .is_err()
        );
        assert!(authorize(&admin, Resource::Tenant, Action::Create, target(None, None)).is_err());
    }

    #[test]
    fn customer_user_reads_only_its_own_invoices() {
        let mine = TenantId::generate();
        let user = caller(Some(mine), &[Role::CustomerUser]);
        assert!(authorize(&user, Resource::Invoice, Action::Read, target(Some(mine), Some("u1"))).is_ok());
        assert!(authorize(&user, Resource::Invoice, Action::Read, target(Some(mine), Some("u2"))).is_err());
        assert!(authorize(&user, Resource::Invoice, Action::Update, target(Some(mine), Some("u1"))).is_err());
        assert!(authorize(&user, Resource::Tenant, Action::Read, target(Some(mine), None)).is_err());
    }

    fn any_role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::TenantAdmin), Just(Role::CustomerUser)]
    }

    proptest! {
        /// No role short of platform admin ever reaches another tenant's objects.
        #[test]
        fn tenant_scoped_roles_never_cross_tenants(roles in proptest::collection::vec(any_role(), 0..3), r in 0usize..8, a in 0usize..4) {
            let resources = [Resource::Tenant, Resource::User, Resource::Role, Resource::Plan, Resource::Service, Resource::Invoice, Resource::Payment, Resource::Usage];
            let actions = [Action::Create, Action::Read, Action::Update, Action::Delete];
            let c = caller(Some(TenantId::generate()), &roles);
            let elsewhere = target(Some(TenantId::generate()), Some("u1"));
            prop_assert!(authorize(&c, resources[r], actions[a], elsewhere).is_err());
            prop_assert!(authorize(&c, resources[r], actions[a], target(None, None)).is_err());
        }
    }
}
