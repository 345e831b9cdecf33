//! The users function: user and role management under `/v1/users` and `/v1/roles`.
//!
//! Every request is scoped twice: the policy (`authorize`, `check_assignment`) decides what
//! the caller may do, and the store's fence keeps its reads and writes inside the caller's
//! tenant whatever the policy said.

mod roles;
mod users;

use axum::http::Method;
use dotmac_domain::{Caller, PartnerId, TenantId};
use dotmac_http::{Access, ApiError, ApiRoutes, ErrorCode, Routes};
use dotmac_store::{Store, UserHome};
use dotmac_tokens::JwtKeys;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
pub struct UsersState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
}

dotmac_http::bearer_state!(UsersState);

pub fn router(state: UsersState) -> ApiRoutes {
    Routes::new()
        .route(Method::GET, "/v1/users", Access::Authenticated, users::list)
        .route(Method::POST, "/v1/users", Access::Authenticated, users::create)
        .route(Method::GET, "/v1/users/{id}", Access::Authenticated, users::get)
        .route(Method::PATCH, "/v1/users/{id}", Access::Authenticated, users::update)
        .route(Method::DELETE, "/v1/users/{id}", Access::Authenticated, users::delete)
        .route(Method::GET, "/v1/roles", Access::Authenticated, roles::list)
        .route(Method::POST, "/v1/roles", Access::Authenticated, roles::create)
        .route(Method::GET, "/v1/roles/{name}", Access::Authenticated, roles::get)
        .route(Method::PUT, "/v1/roles/{name}", Access::Authenticated, roles::replace)
        .route(Method::DELETE, "/v1/roles/{name}", Access::Authenticated, roles::delete)
        .with_state(state)
}

/// Which tenant (or partner) a collection request is about: the caller's own unless
/// platform staff name another.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopeQuery {
    tenant_id: Option<String>,
    partner_id: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
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
        const MAX_PAGE: i32 = 100;
        match self.limit.as_deref() {
            None => Ok(20),
            Some(raw) => raw.parse::<i32>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                ApiError::invalid_field("limit", format!("must be a whole number from 1 to {MAX_PAGE}"))
            }),
        }
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

fn rfc3339(at: time::OffsetDateTime) -> Option<String> {
    at.format(&time::format_description::well_known::Rfc3339).ok()
}
