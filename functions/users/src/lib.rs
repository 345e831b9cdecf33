//! The users function: user and role management under `/v1/users` and `/v1/roles`, and the
//! invitations (`/v1/invitations`) through which accounts other than platform staff's come to
//! be.
//!
//! Every request is scoped twice: the policy (`authorize`, `check_assignment`) decides what
//! the caller may do, and the store's fence keeps its reads and writes inside the caller's
//! tenant whatever the policy said.

mod accept_page;
mod invitations;
pub mod invite;
pub mod mail;
pub mod new_user;
mod roles;
mod users;
pub mod views;

pub use accept_page::ACCEPT_PAGE_PATH;
pub use invite::{InvitationError, Invitations};
pub use mail::InvitationMail;
pub use new_user::{CreateUserError, NewAccount, NewUser, check_new_user, create_user};
pub use views::{InvitationView, RoleView, UserView};

use dotmac_domain::{Caller, PartnerId, TenantId};
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Routes, routes};
use dotmac_store::{Store, UserHome};
use dotmac_tokens::JwtKeys;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
pub struct UsersState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
    pub invitations: Invitations,
}

dotmac_http::bearer_state!(UsersState);

pub fn routes() -> Routes<UsersState> {
    Routes::new()
        .route(Access::Authenticated, routes!(users::list))
        .route(Access::Authenticated, routes!(users::create))
        .route(Access::Authenticated, routes!(users::get))
        .route(Access::Authenticated, routes!(users::update))
        .route(Access::Authenticated, routes!(users::delete))
        .route(Access::Authenticated, routes!(roles::list))
        .route(Access::Authenticated, routes!(roles::create))
        .route(Access::Authenticated, routes!(roles::get))
        .route(Access::Authenticated, routes!(roles::replace))
        .route(Access::Authenticated, routes!(roles::delete))
        .route(Access::Authenticated, routes!(invitations::create))
        .route(Access::Authenticated, routes!(invitations::list))
        .route(Access::Authenticated, routes!(invitations::delete))
        .route(Access::Authenticated, routes!(invitations::send_again))
        .route(Access::Public, routes!(invitations::accept_invitation))
        .page(ACCEPT_PAGE_PATH, accept_page::accept_page)
}

pub fn router(state: UsersState) -> ApiRoutes {
    routes().with_state(state)
}

/// Which tenant (or partner) a collection request (users, invitations) is about: the
/// caller's own unless platform staff name another.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ScopeQuery {
    /// The tenant (platform staff and partners name one; others get their own).
    #[param(format = Uuid)]
    tenant_id: Option<String>,
    /// The partner whose staff (or invitations) to list (platform staff only).
    #[param(schema_with = dotmac_http::schema::partner_id)]
    partner_id: Option<String>,
    /// Items per page, 1–100 (default 20).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` from the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// Which tenant's roles a request is about: the caller's own unless platform staff name one.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RoleScopeQuery {
    /// The tenant (platform staff name one; others get their own).
    #[param(format = Uuid)]
    tenant_id: Option<String>,
}

/// A role, by name, in the path.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct RolePath {
    /// A role's name (the same rule as `dotmac_http::schema::role_name`; a test holds them
    /// together: `schema_with` would drop the path parameter's `required`).
    #[param(pattern = "^[a-z][a-z0-9_-]{1,39}$", min_length = 2, max_length = 40)]
    name: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RoleScopeQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<RoleScopeQuery>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| query)
            .map_err(|rejection| ApiError::new(ErrorCode::ValidationFailed, rejection.body_text()))
    }
}

impl ScopeQuery {
    /// The home named by the query, or the caller's own.
    fn home(&self, caller: &Caller) -> Result<UserHome, ApiError> {
        let tenant = self
            .tenant_id
            .as_deref()
            .map(|raw| TenantId::parse_field(raw, "tenant_id"))
            .transpose()
            .map_err(ApiError::from)?;
        let partner = self.partner_id.as_deref().map(PartnerId::parse).transpose().map_err(ApiError::from)?;
        Ok(match (tenant, partner) {
            (Some(tenant), _) => UserHome::Tenant(tenant),
            (None, Some(partner)) => UserHome::Partner(partner),
            (None, None) => UserHome::of(caller.tenant_id, caller.partner_id.as_ref()),
        })
    }

    fn limit(&self) -> Result<i32, ApiError> {
        dotmac_http::page::page_limit(self.limit.as_deref())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ScopeQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<ScopeQuery>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(query)| query)
            .map_err(|rejection| ApiError::new(ErrorCode::ValidationFailed, rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use utoipa::IntoParams;

    #[test]
    fn the_role_path_parameter_follows_the_role_name_rule() {
        let parameters = serde_json::to_value(super::RolePath::into_params(|| None)).expect("parameters");
        let rule = serde_json::to_value(dotmac_http::schema::role_name()).expect("rule");
        assert_eq!(parameters[0]["required"], true);
        assert_eq!(parameters[0]["schema"]["pattern"], rule["pattern"]);
        assert_eq!(parameters[0]["schema"]["maxLength"], rule["maxLength"]);
    }
}
