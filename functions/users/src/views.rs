//! What the API shows of users and roles. A user's view is built field by field, so the
//! password hash (or anything added to the record later) never reaches an answer by default.

use dotmac_domain::{Permission, Role, TenantId};
use dotmac_store::{RoleRecord, UserRecord};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserView {
    pub id: String,
    pub email: String,
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<String>,
    pub roles: Vec<String>,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_login: Option<OffsetDateTime>,
}

impl UserView {
    pub fn of(user: &UserRecord) -> Self {
        UserView {
            id: user.id.clone(),
            email: user.email.to_string(),
            tenant_id: user.tenant_id,
            partner_id: user.partner_id.as_ref().map(ToString::to_string),
            roles: user.roles.iter().map(ToString::to_string).collect(),
            active: user.active,
            created_at: user.created_at,
            last_login: user.last_login,
        }
    }
}

/// A built-in role (`builtin: true`, read-only) or one of a tenant's custom roles.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleView {
    pub name: String,
    pub builtin: bool,
    /// The tenant a custom role belongs to (absent for built-in roles).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub permissions: Vec<Permission>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
}

impl RoleView {
    pub fn builtin(role: Role) -> Self {
        RoleView {
            name: role.name().to_owned(),
            builtin: true,
            tenant_id: None,
            description: None,
            permissions: role.permissions().to_vec(),
            updated_at: None,
        }
    }

    pub fn custom(record: &RoleRecord) -> Self {
        RoleView {
            name: record.role.name.to_string(),
            builtin: false,
            tenant_id: Some(record.tenant_id),
            description: Some(record.role.description.clone()),
            permissions: record.role.permissions.clone(),
            updated_at: Some(record.updated_at),
        }
    }
}

/// Every role the caller may assign in a tenant: the built-in ones, then the tenant's own.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleList {
    pub items: Vec<RoleView>,
}
