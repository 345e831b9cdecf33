//! Who may do what: the one policy function every handler asks, and the rules for handing
//! out roles.
//!
//! A permission is resource × action × scope. `Global` reaches every tenant, `Partner` the
//! tenants a partner brought, `Tenant` only the caller's own tenant, `Own` only objects the
//! caller owns inside its tenant.

use serde::de::{DeserializeOwned, IntoDeserializer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

use crate::tenant::TenantId;
use crate::values::InvalidValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// A tenant container's health reports.
    Health,
    /// A tenant's backups: taking one (create), listing them (read), restoring one (update).
    Backup,
    /// A tenant's subscriptions: the bundles it holds (its plan is platform staff's to change).
    Subscription,
    /// A reseller's record (name, contact, commission rates): platform staff's; a partner's
    /// own staff read it.
    Partner,
    /// A partner's commission ledger and monthly statement.
    Commission,
}

impl Resource {
    pub const ALL: [Resource; 13] = [
        Resource::Tenant,
        Resource::User,
        Resource::Role,
        Resource::Plan,
        Resource::Service,
        Resource::Invoice,
        Resource::Payment,
        Resource::Usage,
        Resource::Health,
        Resource::Backup,
        Resource::Subscription,
        Resource::Partner,
        Resource::Commission,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Create, Action::Read, Action::Update, Action::Delete];
}

/// Ordered by reach: a permission can only be handed out by someone whose own reaches as far.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Own,
    Tenant,
    Partner,
    Global,
}

/// `None` in `resource` or `action` is the seed's `*` (written `"*"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Permission {
    #[serde(with = "star")]
    #[schema(schema_with = star::any_resource, required = true)]
    pub resource: Option<Resource>,
    #[serde(with = "star")]
    #[schema(schema_with = star::any_action, required = true)]
    pub action: Option<Action>,
    pub scope: Scope,
}

/// `"*"` for "any", else the value's own name.
mod star {
    use super::*;

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Option<T>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            None => serializer.serialize_str("*"),
            Some(value) => value.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        deserializer: D,
    ) -> Result<Option<T>, D::Error> {
        let raw = String::deserialize(deserializer)?;
        if raw == "*" {
            return Ok(None);
        }
        let value: serde::de::value::StringDeserializer<D::Error> = raw.into_deserializer();
        T::deserialize(value).map(Some)
    }

    /// The schema of a field that is one of `names` or `"*"`.
    fn one_of_or_any<T: Serialize>(names: &[T]) -> utoipa::openapi::Object {
        let mut values: Vec<serde_json::Value> =
            names.iter().filter_map(|n| serde_json::to_value(n).ok()).collect();
        values.push(serde_json::Value::from("*"));
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(values))
            .description(Some("a name, or `*` for any"))
            .build()
    }

    pub fn any_resource() -> utoipa::openapi::Object {
        one_of_or_any(&Resource::ALL)
    }

    pub fn any_action() -> utoipa::openapi::Object {
        one_of_or_any(&Action::ALL)
    }
}

impl Permission {
    pub const fn new(resource: Option<Resource>, action: Option<Action>, scope: Scope) -> Self {
        Self { resource, action, scope }
    }

    fn covers(&self, resource: Resource, action: Action) -> bool {
        self.resource.is_none_or(|r| r == resource) && self.action.is_none_or(|a| a == action)
    }

    /// True when holding `self` already gives everything `other` gives.
    pub fn includes(&self, other: &Permission) -> bool {
        let resource = self.resource.is_none() || self.resource == other.resource;
        let action = self.action.is_none() || self.action == other.action;
        resource && action && self.scope >= other.scope
    }
}

/// The built-in roles. Custom roles (per tenant, see `CustomRole`) sit beside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    PlatformAdmin,
    /// A reseller: onboards tenants and reads the ones it brought.
    Partner,
    TenantAdmin,
    CustomerUser,
    /// A tenant's own container: reports usage and health for its tenant, nothing else.
    TenantMachine,
}

impl Role {
    pub const ALL: [Role; 5] =
        [Role::PlatformAdmin, Role::Partner, Role::TenantAdmin, Role::CustomerUser, Role::TenantMachine];

    pub fn name(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::Partner => "partner",
            Role::TenantAdmin => "tenant_admin",
            Role::CustomerUser => "customer_user",
            Role::TenantMachine => "tenant_machine",
        }
    }

    pub fn permissions(self) -> &'static [Permission] {
        use Action::{Create, Read};
        use Resource::{
            Commission, Health, Invoice, Partner, Payment, Plan, Service, Subscription, Tenant, Usage,
        };
        const PLATFORM_ADMIN: &[Permission] = &[Permission::new(None, None, Scope::Global)];
        const PARTNER: &[Permission] = &[
            Permission::new(Some(Tenant), Some(Create), Scope::Partner),
            Permission::new(Some(Tenant), Some(Read), Scope::Partner),
            Permission::new(Some(Usage), Some(Read), Scope::Partner),
            Permission::new(Some(Invoice), Some(Read), Scope::Partner),
            // The catalogue it onboards onto, and what the tenants it brought hold.
            Permission::new(Some(Plan), Some(Read), Scope::Partner),
            Permission::new(Some(Subscription), Some(Read), Scope::Partner),
            // Its own record and commissions (the target names the partner, not a tenant).
            Permission::new(Some(Partner), Some(Read), Scope::Partner),
            Permission::new(Some(Commission), Some(Read), Scope::Partner),
        ];
        const TENANT_ADMIN: &[Permission] = &[Permission::new(None, None, Scope::Tenant)];
        const CUSTOMER_USER: &[Permission] = &[
            Permission::new(Some(Service), Some(Read), Scope::Own),
            Permission::new(Some(Invoice), Some(Read), Scope::Own),
            Permission::new(Some(Payment), Some(Create), Scope::Own),
        ];
        const TENANT_MACHINE: &[Permission] = &[
            Permission::new(Some(Usage), Some(Create), Scope::Tenant),
            Permission::new(Some(Health), Some(Create), Scope::Tenant),
        ];
        match self {
            Role::PlatformAdmin => PLATFORM_ADMIN,
            Role::Partner => PARTNER,
            Role::TenantAdmin => TENANT_ADMIN,
            Role::CustomerUser => CUSTOMER_USER,
            Role::TenantMachine => TENANT_MACHINE,
        }
    }

    /// Which kind of account may hold the role.
    fn holder(self) -> Holder {
        match self {
            Role::PlatformAdmin => Holder::Staff,
            Role::Partner => Holder::Partner,
            Role::TenantAdmin | Role::CustomerUser => Holder::TenantUser,
            Role::TenantMachine => Holder::Machine,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Staff,
    Partner,
    TenantUser,
    Machine,
}

/// A role as users hold it and tokens carry it: a built-in role's name, or the name of one of
/// the tenant's custom roles (`a-z`, `0-9`, `-`, `_`; 2–40 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let invalid = |reason: &str| InvalidValue::new("role", reason);
        if !(2..=40).contains(&raw.len()) {
            return Err(invalid("must be 2 to 40 characters"));
        }
        if !raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err(invalid("may contain only lowercase letters, digits, '-' and '_'"));
        }
        if !raw.as_bytes()[0].is_ascii_lowercase() {
            return Err(invalid("must start with a letter"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn builtin(&self) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == self.0)
    }
}

impl From<Role> for RoleName {
    fn from(role: Role) -> Self {
        Self(role.name().to_owned())
    }
}

impl TryFrom<String> for RoleName {
    type Error = InvalidValue;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<RoleName> for String {
    fn from(name: RoleName) -> Self {
        name.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A partner (reseller): `a-z`, `0-9` and `-`, 2–64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PartnerId(String);

impl PartnerId {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let ok = (2..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue::new("partner_id", "must be 2 to 64 lowercase letters, digits or hyphens"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PartnerId {
    type Error = InvalidValue;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<PartnerId> for String {
    fn from(id: PartnerId) -> Self {
        id.0
    }
}

impl fmt::Display for PartnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's own role: a name that is not a built-in one, and permissions that stay inside
/// the tenant (`own` or `tenant` scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRole {
    pub name: RoleName,
    pub description: String,
    pub permissions: Vec<Permission>,
}

impl CustomRole {
    pub fn new(
        name: RoleName,
        description: String,
        permissions: Vec<Permission>,
    ) -> Result<Self, InvalidValue> {
        if name.builtin().is_some() {
            return Err(InvalidValue::new("name", "is a built-in role"));
        }
        if description.chars().count() > 200 {
            return Err(InvalidValue::new("description", "must be at most 200 characters"));
        }
        if permissions.is_empty() || permissions.len() > 50 {
            return Err(InvalidValue::new("permissions", "must list 1 to 50 permissions"));
        }
        if permissions.iter().any(|p| p.scope > Scope::Tenant) {
            return Err(InvalidValue::new(
                "permissions",
                "a tenant's role reaches no further than the tenant",
            ));
        }
        Ok(Self { name, description, permissions })
    }
}

/// The authenticated principal of a request, as resolved from its token (and, for custom
/// roles, from its tenant's role definitions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    pub user_id: String,
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<PartnerId>,
    pub roles: Vec<RoleName>,
    /// What the caller's custom roles grant, as defined when the request came in.
    pub custom_permissions: Vec<Permission>,
}

impl Caller {
    pub fn new(user_id: impl Into<String>, tenant_id: Option<TenantId>, roles: &[Role]) -> Self {
        Caller {
            user_id: user_id.into(),
            tenant_id,
            roles: roles.iter().copied().map(RoleName::from).collect(),
            ..Caller::default()
        }
    }

    pub fn permissions(&self) -> impl Iterator<Item = &Permission> {
        self.roles
            .iter()
            .filter_map(|role| role.builtin())
            .flat_map(|role| role.permissions().iter())
            .chain(self.custom_permissions.iter())
    }

    /// The custom roles among the caller's roles (to resolve from its tenant's definitions).
    pub fn custom_roles(&self) -> impl Iterator<Item = &RoleName> {
        self.roles.iter().filter(|role| role.builtin().is_none())
    }

    pub fn has_global_scope(&self) -> bool {
        self.permissions().any(|p| p.scope == Scope::Global)
    }

    /// Where the caller's reads and writes may land in the store.
    pub fn fence(&self) -> Fence {
        if self.has_global_scope() {
            Fence::Global
        } else if let Some(tenant) = self.tenant_id {
            Fence::Tenant(tenant)
        } else if let Some(partner) = &self.partner_id {
            Fence::Partner(partner.clone())
        } else {
            Fence::Nothing
        }
    }
}

/// The part of the store a caller may touch: the store refuses any key outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    Global,
    Tenant(TenantId),
    /// The tenants whose `partner_id` is this partner (checked on the item itself).
    Partner(PartnerId),
    Nothing,
}

/// What a request wants to touch: the object's tenant (none for platform-level objects such
/// as plans or the tenant collection), the partner that brought that tenant, and, where it
/// has one, its owner.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<&'a PartnerId>,
    pub owner_id: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn tenant(tenant_id: TenantId) -> Self {
        Target { tenant_id: Some(tenant_id), ..Target::default() }
    }

    pub fn partner(mut self, partner_id: Option<&'a PartnerId>) -> Self {
        self.partner_id = partner_id;
        self
    }

    pub fn owner(mut self, owner_id: &'a str) -> Self {
        self.owner_id = Some(owner_id);
        self
    }
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
    let brought = caller.partner_id.is_some() && caller.partner_id.as_ref() == target.partner_id;
    let allowed =
        caller.permissions().filter(|permission| permission.covers(resource, action)).any(|permission| {
            match permission.scope {
                Scope::Global => true,
                Scope::Partner => brought,
                Scope::Tenant => same_tenant,
                Scope::Own => owns,
            }
        });
    if allowed { Ok(()) } else { Err(Denied { resource, action }) }
}

/// The account a role assignment is for.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    pub user_id: &'a str,
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<&'a PartnerId>,
}

impl Account<'_> {
    fn holder(&self) -> Holder {
        match (self.tenant_id, self.partner_id) {
            (Some(_), _) => Holder::TenantUser,
            (None, Some(_)) => Holder::Partner,
            (None, None) => Holder::Staff,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("nobody changes their own roles")]
    OwnRoles,
    #[error("the role {0} cannot be held by this kind of account")]
    WrongHolder(RoleName),
    #[error("the role {0} grants more than you hold")]
    Escalation(RoleName),
    #[error("the tenant has no role {0}")]
    UnknownRole(RoleName),
    #[error("an account needs 1 to 10 roles")]
    Count,
}

/// Whether `caller` may give `account` exactly `roles`. `custom` holds the account's tenant's
/// custom roles. Nobody hands out more than they hold, nor touches their own roles.
pub fn check_assignment(
    caller: &Caller,
    account: Account<'_>,
    roles: &[RoleName],
    custom: &[CustomRole],
) -> Result<(), AssignmentError> {
    if account.user_id == caller.user_id {
        return Err(AssignmentError::OwnRoles);
    }
    if roles.is_empty() || roles.len() > 10 {
        return Err(AssignmentError::Count);
    }
    let held: Vec<&Permission> = caller.permissions().collect();
    for role in roles {
        let (holder, grants): (Holder, &[Permission]) = match role.builtin() {
            Some(builtin) => (builtin.holder(), builtin.permissions()),
            None => {
                let defined = custom
                    .iter()
                    .find(|c| &c.name == role)
                    .ok_or_else(|| AssignmentError::UnknownRole(role.clone()))?;
                (Holder::TenantUser, defined.permissions.as_slice())
            }
        };
        if holder != account.holder() {
            return Err(AssignmentError::WrongHolder(role.clone()));
        }
        if !grants.iter().all(|wanted| held.iter().any(|mine| mine.includes(wanted))) {
            return Err(AssignmentError::Escalation(role.clone()));
        }
    }
    Ok(())
}

/// Whether `caller` may define a custom role with these permissions (no escalation).
pub fn may_define(caller: &Caller, role: &CustomRole) -> bool {
    let held: Vec<&Permission> = caller.permissions().collect();
    role.permissions.iter().all(|wanted| held.iter().any(|mine| mine.includes(wanted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn caller(tenant: Option<TenantId>, roles: &[Role]) -> Caller {
        Caller::new("u1", tenant, roles)
    }

    fn target(tenant_id: Option<TenantId>, owner_id: Option<&str>) -> Target<'_> {
        Target { tenant_id, partner_id: None, owner_id }
    }

    #[test]
    fn platform_admin_reaches_everything() {
        let admin = caller(None, &[Role::PlatformAdmin]);
        let other = Some(TenantId::generate());
        assert!(authorize(&admin, Resource::Tenant, Action::Create, target(None, None)).is_ok());
        assert!(authorize(&admin, Resource::Invoice, Action::Delete, target(other, None)).is_ok());
        assert_eq!(admin.fence(), Fence::Global);
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
        assert_eq!(admin.fence(), Fence::Tenant(mine));
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

    #[test]
    fn partner_reaches_only_the_tenants_it_brought() {
        let acme = PartnerId::parse("acme").expect("id");
        let other = PartnerId::parse("other").expect("id");
        let partner = Caller { partner_id: Some(acme.clone()), ..caller(None, &[Role::Partner]) };
        let tenant = TenantId::generate();
        let brought = Target::tenant(tenant).partner(Some(&acme));
        assert!(authorize(&partner, Resource::Tenant, Action::Read, brought).is_ok());
        assert!(
            authorize(&partner, Resource::Tenant, Action::Create, Target::default().partner(Some(&acme)))
                .is_ok()
        );
        assert!(
            authorize(&partner, Resource::Tenant, Action::Read, Target::tenant(tenant).partner(Some(&other)))
                .is_err()
        );
        assert!(authorize(&partner, Resource::Tenant, Action::Read, Target::tenant(tenant)).is_err());
        assert!(authorize(&partner, Resource::Tenant, Action::Update, brought).is_err());
        assert!(authorize(&partner, Resource::User, Action::Read, brought).is_err());
        assert_eq!(partner.fence(), Fence::Partner(acme));
    }

    #[test]
    fn machines_report_for_their_own_tenant_only() {
        let mine = TenantId::generate();
        let machine = caller(Some(mine), &[Role::TenantMachine]);
        assert!(authorize(&machine, Resource::Health, Action::Create, Target::tenant(mine)).is_ok());
        assert!(authorize(&machine, Resource::Usage, Action::Create, Target::tenant(mine)).is_ok());
        assert!(
            authorize(&machine, Resource::Health, Action::Create, Target::tenant(TenantId::generate()))
                .is_err()
        );
        assert!(authorize(&machine, Resource::Tenant, Action::Read, Target::tenant(mine)).is_err());
        assert!(authorize(&machine, Resource::User, Action::Read, Target::tenant(mine)).is_err());
    }

    #[test]
    fn custom_roles_grant_what_they_define_inside_the_tenant() {
        let mine = TenantId::generate();
        let clerk = Caller {
            roles: vec![RoleName::parse("billing-clerk").expect("name")],
            custom_permissions: vec![Permission::new(Some(Resource::Invoice), None, Scope::Tenant)],
            ..caller(Some(mine), &[])
        };
        assert!(authorize(&clerk, Resource::Invoice, Action::Update, Target::tenant(mine)).is_ok());
        assert!(
            authorize(&clerk, Resource::Invoice, Action::Read, Target::tenant(TenantId::generate())).is_err()
        );
        assert!(authorize(&clerk, Resource::User, Action::Read, Target::tenant(mine)).is_err());
    }

    #[test]
    fn custom_roles_stay_inside_the_tenant_and_off_builtin_names() {
        let name = RoleName::parse("support").expect("name");
        let global = vec![Permission::new(None, Some(Action::Read), Scope::Global)];
        assert!(CustomRole::new(name.clone(), String::new(), global).is_err());
        assert!(CustomRole::new(RoleName::from(Role::TenantAdmin), String::new(), vec![]).is_err());
        assert!(CustomRole::new(name, String::new(), vec![]).is_err());
        assert!(RoleName::parse("Admin").is_err());
        assert!(RoleName::parse("9lives").is_err());
    }

    #[test]
    fn permissions_read_and_write_star_for_any() {
        let json = r#"{"resource":"*","action":"read","scope":"tenant"}"#;
        let permission: Permission = serde_json::from_str(json).expect("parses");
        assert_eq!(permission, Permission::new(None, Some(Action::Read), Scope::Tenant));
        assert_eq!(serde_json::to_string(&permission).expect("json"), json);
        assert!(
            serde_json::from_str::<Permission>(r#"{"resource":"planet","action":"*","scope":"own"}"#)
                .is_err()
        );
    }

    #[test]
    fn assignments_never_escalate_nor_touch_ones_own_roles() {
        let mine = TenantId::generate();
        let admin = caller(Some(mine), &[Role::TenantAdmin]);
        let user = Account { user_id: "u2", tenant_id: Some(mine), partner_id: None };
        let staff = Account { user_id: "u2", tenant_id: None, partner_id: None };
        let tenant_admin = RoleName::from(Role::TenantAdmin);
        let platform_admin = RoleName::from(Role::PlatformAdmin);
        assert_eq!(check_assignment(&admin, user, std::slice::from_ref(&tenant_admin), &[]), Ok(()));
        assert!(matches!(
            check_assignment(&admin, user, std::slice::from_ref(&platform_admin), &[]),
            Err(AssignmentError::WrongHolder(_))
        ));
        assert!(matches!(
            check_assignment(&admin, staff, std::slice::from_ref(&platform_admin), &[]),
            Err(AssignmentError::Escalation(_))
        ));
        let me = Account { user_id: "u1", tenant_id: Some(mine), partner_id: None };
        assert_eq!(
            check_assignment(&admin, me, std::slice::from_ref(&tenant_admin), &[]),
            Err(AssignmentError::OwnRoles)
        );
        let machine = RoleName::from(Role::TenantMachine);
        assert!(matches!(
            check_assignment(&admin, user, &[machine], &[]),
            Err(AssignmentError::WrongHolder(_))
        ));
        let customer = caller(Some(mine), &[Role::CustomerUser]);
        assert!(matches!(
            check_assignment(&customer, user, &[tenant_admin], &[]),
            Err(AssignmentError::Escalation(_))
        ));
        let root = caller(None, &[Role::PlatformAdmin]);
        assert_eq!(check_assignment(&root, staff, &[platform_admin], &[]), Ok(()));
        let unknown = RoleName::parse("ghost").expect("name");
        assert_eq!(
            check_assignment(&admin, user, std::slice::from_ref(&unknown), &[]),
            Err(AssignmentError::UnknownRole(unknown))
        );
    }

    fn any_tenant_role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::TenantAdmin), Just(Role::CustomerUser), Just(Role::TenantMachine)]
    }

    fn any_permission() -> impl Strategy<Value = Permission> {
        (
            proptest::option::of(proptest::sample::select(Resource::ALL.to_vec())),
            proptest::option::of(proptest::sample::select(Action::ALL.to_vec())),
            prop_oneof![Just(Scope::Own), Just(Scope::Tenant)],
        )
            .prop_map(|(resource, action, scope)| Permission::new(resource, action, scope))
    }

    proptest! {
        /// No tenant-scoped role, built-in or custom, ever reaches another tenant's objects
        /// or the platform's.
        #[test]
        fn tenant_scoped_roles_never_cross_tenants(
            roles in proptest::collection::vec(any_tenant_role(), 0..3),
            custom in proptest::collection::vec(any_permission(), 0..4),
            r in proptest::sample::select(Resource::ALL.to_vec()),
            a in proptest::sample::select(Action::ALL.to_vec()),
        ) {
            let c = Caller { custom_permissions: custom, ..caller(Some(TenantId::generate()), &roles) };
            let elsewhere = target(Some(TenantId::generate()), Some("u1"));
            prop_assert!(authorize(&c, r, a, elsewhere).is_err());
            prop_assert!(authorize(&c, r, a, target(None, None)).is_err());
            prop_assert!(matches!(c.fence(), Fence::Tenant(_)));
        }

        /// Whatever a caller may hand out, it could already do itself: granters hold built-in
        /// roles as well as custom permissions, and most wanted roles are cut from what the
        /// granter holds, so `may_define` says yes often enough for the check to bite.
        #[test]
        fn granted_roles_never_exceed_the_granter(
            (granter, wanted) in any_granter().prop_flat_map(|g| {
                let wanted = prop_oneof![
                    3 => cut_from(g.held.clone()),
                    1 => proptest::collection::vec(any_permission(), 1..4),
                ];
                (Just(g), wanted)
            }),
            r in proptest::sample::select(Resource::ALL.to_vec()),
            a in proptest::sample::select(Action::ALL.to_vec()),
        ) {
            // The granter works in the holder's tenant; one holding the partner role is the
            // partner that brought it (a partner's scope reaches only the tenants it brought,
            // so elsewhere its `partner` permissions would not cover the holder's `tenant` ones).
            let acme = partner_acme();
            let partner_id = granter.builtin.contains(&Role::Partner).then(partner_acme);
            let granter = Caller { tenant_id: Some(tenant_a()), partner_id, ..granter.caller };
            let role = CustomRole::new(RoleName::parse("wanted").expect("name"), String::new(), wanted.clone()).expect("valid");
            if may_define(&granter, &role) {
                let holder = Caller { user_id: "u2".into(), roles: vec![role.name.clone()], custom_permissions: wanted, ..granter.clone() };
                let in_tenant = Target::tenant(tenant_a()).partner(Some(&acme));
                for scope_target in [in_tenant, in_tenant.owner("u2")] {
                    if authorize(&holder, r, a, scope_target).is_ok() {
                        let as_granter = Target { owner_id: scope_target.owner_id.map(|_| GRANTER), ..scope_target };
                        prop_assert!(authorize(&granter, r, a, as_granter).is_ok());
                    }
                }
            }
        }

        /// The exact verdict, reason included, for any granter (built-in roles too), any
        /// account and any list of roles, against a model written from the README's rules.
        #[test]
        fn check_assignment_agrees_with_the_documented_rules(
            g in any_granter(),
            ((user_id, kind), roles) in any_account().prop_flat_map(|(user_id, kind)| {
                let roles = prop_oneof![
                    3 => proptest::collection::vec(role_name_for(kind), 1..4),
                    1 => proptest::collection::vec(any_role_name(), 0..12),
                ];
                (Just((user_id, kind)), roles)
            }),
            custom in tenant_custom_roles(),
        ) {
            let partner = partner_acme();
            let account = account(user_id, kind, &partner);
            let expected = model_assignment(&g.held, user_id, kind, &roles, &custom);
            prop_assert_eq!(check_assignment(&g.caller, account, &roles, &custom), expected);
        }

        /// README: nobody grants a role with a permission they do not hold. Checked on what
        /// the roles let one do, not on how the permissions are written.
        #[test]
        fn no_assignment_reaches_beyond_the_granter(
            g in any_granter(),
            ((user_id, kind), roles) in any_account().prop_flat_map(|(user_id, kind)| {
                let roles = proptest::collection::vec(prop_oneof![3 => role_name_for(kind), 1 => any_role_name()], 1..4);
                (Just((user_id, kind)), roles)
            }),
            custom in tenant_custom_roles(),
        ) {
            let partner = partner_acme();
            if check_assignment(&g.caller, account(user_id, kind, &partner), &roles, &custom).is_ok() {
                let granted: Vec<Permission> = roles.iter().flat_map(|role| grants_of(role, &custom)).collect();
                prop_assert!(reach_all(&granted).is_subset(&reach_all(&g.held)));
            }
        }

        #[test]
        fn platform_and_partner_roles_never_go_to_a_tenants_user(
            g in any_granter(),
            staff_role in prop_oneof![Just(Role::PlatformAdmin), Just(Role::Partner)],
            others in proptest::collection::vec(any_role_name(), 0..4),
            at in any::<usize>(),
        ) {
            // Even platform_admin, who holds everything, cannot.
            let root = Caller { roles: vec![Role::PlatformAdmin.into()], ..g.caller.clone() };
            let user = Account { user_id: "someone", tenant_id: Some(tenant_a()), partner_id: None };
            let name = RoleName::from(staff_role);
            for granter in [&g.caller, &root] {
                prop_assert_eq!(
                    check_assignment(granter, user, std::slice::from_ref(&name), &[]),
                    Err(AssignmentError::WrongHolder(name.clone()))
                );
                let mut mixed = others.clone();
                mixed.insert(at % (others.len() + 1), name.clone());
                prop_assert!(check_assignment(granter, user, &mixed, &tenant_custom_roles_fixed()).is_err());
            }
        }

        /// README: a granter can hand out anything it holds, cut down as it likes; a role for a
        /// tenant's user is cut down to `own` or `tenant` scope.
        #[test]
        fn a_granter_can_grant_and_define_any_part_of_what_it_holds(
            (g, part) in any_granter()
                .prop_filter("a granter holding nothing has nothing to give", |g| !g.held.is_empty())
                .prop_flat_map(|g| { let part = cut_from(g.held.clone()); (Just(g), part) }),
        ) {
            let part = CustomRole::new(RoleName::parse("part").expect("name"), String::new(), part).expect("valid");
            prop_assert!(may_define(&g.caller, &part));
            let user = Account { user_id: "someone", tenant_id: Some(tenant_a()), partner_id: None };
            let custom = std::slice::from_ref(&part);
            prop_assert_eq!(check_assignment(&g.caller, user, std::slice::from_ref(&part.name), custom), Ok(()));
            // And each built-in role it holds, to the kind of account that role is for
            // (tenant_machine is for no account: provisioning issues it).
            let partner = partner_acme();
            for role in &g.builtin {
                let kind = match role {
                    Role::PlatformAdmin => Kind::Staff,
                    Role::Partner => Kind::Partner,
                    Role::TenantAdmin | Role::CustomerUser => Kind::TenantUser,
                    Role::TenantMachine => continue,
                };
                let with_part = if kind == Kind::TenantUser { vec![RoleName::from(*role), part.name.clone()] } else { vec![RoleName::from(*role)] };
                prop_assert_eq!(check_assignment(&g.caller, account("someone", kind, &partner), &with_part, custom), Ok(()));
            }
        }

        /// `may_define` says yes exactly when each wanted permission fits inside one held
        /// permission, and then the role reaches nothing the definer cannot.
        #[test]
        fn may_define_allows_exactly_what_the_definer_holds(
            (g, wanted) in any_granter().prop_flat_map(|g| {
                let wanted = prop_oneof![cut_from(g.held.clone()), proptest::collection::vec(any_permission(), 1..4)];
                (Just(g), wanted)
            }),
        ) {
            let role = CustomRole::new(RoleName::parse("wanted").expect("name"), String::new(), wanted.clone()).expect("valid");
            let fits = wanted.iter().all(|w| g.held.iter().any(|h| reach(w).is_subset(&reach(h))));
            prop_assert_eq!(may_define(&g.caller, &role), fits);
            if fits {
                prop_assert!(reach_all(&wanted).is_subset(&reach_all(&g.held)));
            }
        }
    }

    const GRANTER: &str = "u1";

    fn tenant_a() -> TenantId {
        TenantId::parse("0192f0c1-0000-7000-8000-00000000000a").expect("uuid")
    }

    fn partner_acme() -> PartnerId {
        PartnerId::parse("acme").expect("id")
    }

    /// A granter and, spelled out from the inputs rather than read back from `Caller`, what
    /// it holds.
    #[derive(Debug, Clone)]
    struct Granter {
        caller: Caller,
        builtin: Vec<Role>,
        held: Vec<Permission>,
    }

    /// Any mix of built-in roles and custom permissions, on any kind of account.
    fn any_granter() -> impl Strategy<Value = Granter> {
        (
            proptest::collection::vec(proptest::sample::select(Role::ALL.to_vec()), 0..3),
            proptest::collection::vec(any_permission(), 0..3),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(builtin, custom, in_tenant, of_partner)| {
                let mut roles: Vec<RoleName> = builtin.iter().copied().map(RoleName::from).collect();
                if !custom.is_empty() {
                    roles.push(RoleName::parse("granter-role").expect("name"));
                }
                let held = builtin
                    .iter()
                    .flat_map(|r| r.permissions().iter().copied())
                    .chain(custom.iter().copied())
                    .collect();
                let caller = Caller {
                    user_id: GRANTER.into(),
                    tenant_id: in_tenant.then(tenant_a),
                    partner_id: of_partner.then(partner_acme),
                    roles,
                    custom_permissions: custom,
                };
                Granter { caller, builtin, held }
            })
    }

    /// Permissions cut from `held`: each narrows one held permission (a `*` resource or
    /// action made concrete or kept, the scope lowered) to at most `tenant` scope, as a
    /// tenant's custom role must be.
    fn cut_from(held: Vec<Permission>) -> impl Strategy<Value = Vec<Permission>> {
        let n = held.len().max(1);
        let cut = (
            0..n,
            proptest::option::of(proptest::sample::select(Resource::ALL.to_vec())),
            proptest::option::of(proptest::sample::select(Action::ALL.to_vec())),
            any::<bool>(),
        );
        proptest::collection::vec(cut, 1..4)
            .prop_map(move |cuts| {
                cuts.into_iter()
                    .filter_map(|(i, resource, action, lower)| {
                        let h = held.get(i)?;
                        let ceiling =
                            if rank(h.scope) >= rank(Scope::Tenant) { Scope::Tenant } else { Scope::Own };
                        let scope = if lower { Scope::Own } else { ceiling };
                        Some(Permission::new(h.resource.or(resource), h.action.or(action), scope))
                    })
                    .collect::<Vec<_>>()
            })
            .prop_map(|cut| {
                if cut.is_empty() {
                    vec![Permission::new(Some(Resource::Service), Some(Action::Read), Scope::Own)]
                } else {
                    cut
                }
            })
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Staff,
        Partner,
        TenantUser,
    }

    /// Mostly someone else, sometimes the granter itself.
    fn any_account() -> impl Strategy<Value = (&'static str, Kind)> {
        (
            prop_oneof![9 => Just("someone"), 1 => Just(GRANTER)],
            prop_oneof![Just(Kind::Staff), Just(Kind::Partner), Just(Kind::TenantUser)],
        )
    }

    fn account<'a>(user_id: &'a str, kind: Kind, partner: &'a PartnerId) -> Account<'a> {
        match kind {
            Kind::Staff => Account { user_id, tenant_id: None, partner_id: None },
            Kind::Partner => Account { user_id, tenant_id: None, partner_id: Some(partner) },
            Kind::TenantUser => Account { user_id, tenant_id: Some(tenant_a()), partner_id: None },
        }
    }

    /// Built-in names, two roles the tenant defines and one it does not.
    fn any_role_name() -> impl Strategy<Value = RoleName> {
        proptest::sample::select(vec![
            "platform_admin",
            "partner",
            "tenant_admin",
            "customer_user",
            "tenant_machine",
            "clerk",
            "viewer",
            "ghost",
        ])
        .prop_map(|name| RoleName::parse(name).expect("name"))
    }

    /// The roles meant for this kind of account (so lists are not all refused for one wrong
    /// holder); whether the granter may hand them out is left to chance.
    fn role_name_for(kind: Kind) -> impl Strategy<Value = RoleName> {
        let names = match kind {
            Kind::Staff => vec!["platform_admin"],
            Kind::Partner => vec!["partner"],
            Kind::TenantUser => vec!["tenant_admin", "customer_user", "clerk", "viewer"],
        };
        proptest::sample::select(names).prop_map(|name| RoleName::parse(name).expect("name"))
    }

    fn tenant_custom_roles() -> impl Strategy<Value = Vec<CustomRole>> {
        (proptest::collection::vec(any_permission(), 1..4), proptest::collection::vec(any_permission(), 1..4))
            .prop_map(|(clerk, viewer)| {
                [("clerk", clerk), ("viewer", viewer)]
                    .into_iter()
                    .map(|(name, permissions)| {
                        CustomRole::new(RoleName::parse(name).expect("name"), String::new(), permissions)
                            .expect("valid")
                    })
                    .collect()
            })
    }

    fn tenant_custom_roles_fixed() -> Vec<CustomRole> {
        let read = vec![Permission::new(Some(Resource::Invoice), Some(Action::Read), Scope::Own)];
        vec![CustomRole::new(RoleName::parse("clerk").expect("name"), String::new(), read).expect("valid")]
    }

    fn rank(scope: Scope) -> u8 {
        match scope {
            Scope::Own => 0,
            Scope::Tenant => 1,
            Scope::Partner => 2,
            Scope::Global => 3,
        }
    }

    /// Everything a permission lets one do, spelled out: each resource and action it names
    /// (all of them for `*`), at its scope and every narrower one.
    fn reach(p: &Permission) -> HashSet<(Resource, Action, u8)> {
        let resources = Resource::ALL.into_iter().filter(|r| p.resource.is_none_or(|x| x == *r));
        resources
            .flat_map(|r| {
                let actions = Action::ALL.into_iter().filter(|a| p.action.is_none_or(|x| x == *a));
                actions.flat_map(move |a| (0..=rank(p.scope)).map(move |s| (r, a, s)))
            })
            .collect()
    }

    fn reach_all(permissions: &[Permission]) -> HashSet<(Resource, Action, u8)> {
        permissions.iter().flat_map(reach).collect()
    }

    /// What assigning `role` grants: a built-in role's permissions, or the tenant's definition.
    fn grants_of(role: &RoleName, custom: &[CustomRole]) -> Vec<Permission> {
        match Role::ALL.into_iter().find(|r| RoleName::from(*r) == *role) {
            Some(builtin) => builtin.permissions().to_vec(),
            None => {
                custom.iter().find(|c| c.name == *role).map(|c| c.permissions.clone()).unwrap_or_default()
            }
        }
    }

    /// `check_assignment` as the README states it: not one's own roles; 1 to 10 roles; then,
    /// role by role, a role the tenant knows, held by the right kind of account, and every
    /// permission it grants inside one the granter holds.
    fn model_assignment(
        held: &[Permission],
        user_id: &str,
        kind: Kind,
        roles: &[RoleName],
        custom: &[CustomRole],
    ) -> Result<(), AssignmentError> {
        if user_id == GRANTER {
            return Err(AssignmentError::OwnRoles);
        }
        if !(1..=10).contains(&roles.len()) {
            return Err(AssignmentError::Count);
        }
        for role in roles {
            let for_kind = match role.as_str() {
                "platform_admin" => Some(Kind::Staff),
                "partner" => Some(Kind::Partner),
                "tenant_admin" | "customer_user" => Some(Kind::TenantUser),
                // A container's role comes with its machine token, never by assignment.
                "tenant_machine" => None,
                _ if custom.iter().any(|c| c.name == *role) => Some(Kind::TenantUser),
                _ => return Err(AssignmentError::UnknownRole(role.clone())),
            };
            if for_kind != Some(kind) {
                return Err(AssignmentError::WrongHolder(role.clone()));
            }
            let fits = |wanted: &Permission| held.iter().any(|h| reach(wanted).is_subset(&reach(h)));
            if !grants_of(role, custom).iter().all(fits) {
                return Err(AssignmentError::Escalation(role.clone()));
            }
        }
        Ok(())
    }
}
