//! What the API shows of users and roles. A user's view is built field by field, so the
//! password hash (or anything added to the record later) never reaches an answer by default.

use dotmac_domain::{Permission, Role, TenantId};
use dotmac_store::{Delivery, InvitationRecord, RoleRecord, UserRecord};
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

/// An invitation as its inviters see it: never its token (which only the e-mail carries).
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    /// What the account gets when the invitation is accepted.
    pub roles: Vec<String>,
    /// The tenant (or partner) invited into.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub tenant_id: Option<TenantId>,
    pub partner_id: Option<String>,
    /// The user who invited.
    pub invited_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the link stops working.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Whether SES took the e-mail: `pending`, `sent` or `failed` (resend).
    pub delivery: Delivery,
}

impl InvitationView {
    pub fn of(invitation: &InvitationRecord) -> Self {
        InvitationView {
            id: invitation.id.clone(),
            email: invitation.email.to_string(),
            roles: invitation.roles.iter().map(ToString::to_string).collect(),
            tenant_id: invitation.tenant_id,
            partner_id: invitation.partner_id.as_ref().map(ToString::to_string),
            invited_by: invitation.invited_by.clone(),
            created_at: invitation.created_at,
            // A stored expiry is always a time `invite` computed; the epoch stands in for a
            // corrupt one rather than failing the whole list.
            expires_at: OffsetDateTime::from_unix_timestamp(invitation.expires_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            delivery: invitation.delivery,
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
