//! `/v1/roles`: the built-in roles and a tenant's custom roles.

use axum::extract::State;
use axum::http::StatusCode;
use dotmac_domain::{
    Action, Caller, CustomRole, Permission, Resource, Role, RoleName, Target, TenantId, authorize, may_define,
};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{ApiError, Authenticated, ErrorCode, Json, Path};
use dotmac_store::{RoleRecord, RoleWrite, StoreError};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::views::{RoleList, RoleView};
use crate::{RolePath, RoleScopeQuery, UsersState};

/// The tenant whose roles a request is about: the caller's own unless platform staff name one.
fn tenant_of(query: &RoleScopeQuery, caller: &Caller) -> Result<Option<TenantId>, ApiError> {
    match query.tenant_id.as_deref() {
        Some(raw) => Ok(Some(TenantId::parse_field(raw, "tenant_id")?)),
        None => Ok(caller.tenant_id),
    }
}

fn target(tenant: Option<TenantId>) -> Target<'static> {
    Target { tenant_id: tenant, ..Target::default() }
}

fn role_not_found(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no role {name}"))
}

fn parse_name(raw: &str) -> Result<RoleName, ApiError> {
    RoleName::parse(raw).map_err(|e| ApiError::invalid_field("name", e.reason))
}

/// The built-in roles and the tenant's custom ones, with their permissions.
#[utoipa::path(
    get,
    path = "/v1/roles",
    tag = "roles",
    operation_id = "list_roles",
    params(RoleScopeQuery),
    responses((status = 200, description = "Every role", body = RoleList))
)]
pub(crate) async fn list(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    query: RoleScopeQuery,
) -> Result<axum::Json<RoleList>, ApiError> {
    let tenant = tenant_of(&query, &caller)?;
    authorize(&caller, Resource::Role, Action::Read, target(tenant))?;
    let mut items: Vec<RoleView> = Role::ALL.into_iter().map(RoleView::builtin).collect();
    if let Some(tenant) = tenant {
        let custom = state.store.fenced(caller.fence()).list_roles(tenant).await?;
        items.extend(custom.iter().filter(|record| !record.retiring).map(RoleView::custom));
    }
    Ok(axum::Json(RoleList { items }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoleRequest {
    /// Not a built-in role's name.
    #[schema(schema_with = dotmac_http::schema::role_name)]
    name: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    description: String,
    /// 1–50 permissions, none reaching beyond the tenant (`own` or `tenant` scope) or beyond
    /// what the caller holds.
    #[schema(min_items = 1, max_items = 50)]
    permissions: Vec<Permission>,
    /// Platform staff name the tenant; others define roles in their own.
    #[serde(default)]
    #[schema(format = Uuid)]
    tenant_id: Option<String>,
}

/// Checks a definition: valid on its own, and granting nothing the caller does not hold.
fn definition(
    caller: &Caller,
    name: RoleName,
    description: String,
    permissions: Vec<Permission>,
) -> Result<CustomRole, ApiError> {
    let role = CustomRole::new(name, description, permissions)?;
    if !may_define(caller, &role) {
        return Err(ApiError::new(ErrorCode::Forbidden, "a role cannot grant more than you hold"));
    }
    Ok(role)
}

/// Define a custom role in a tenant; the same definition again is a 200, another definition
/// under the name a 409.
#[utoipa::path(
    post,
    path = "/v1/roles",
    tag = "roles",
    operation_id = "create_role",
    request_body = CreateRoleRequest,
    responses(
        (status = 201, description = "The role", body = RoleView),
        (status = 200, description = "The same definition existed already", body = RoleView),
        (status = 409, description = "`ALREADY_EXISTS`: another definition under this name", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Json(request): Json<CreateRoleRequest>,
) -> Result<(StatusCode, axum::Json<RoleView>), ApiError> {
    let tenant = match request.tenant_id.as_deref() {
        Some(raw) => Some(TenantId::parse_field(raw, "tenant_id")?),
        None => caller.tenant_id,
    };
    authorize(&caller, Resource::Role, Action::Create, target(tenant))?;
    let tenant =
        tenant.ok_or_else(|| ApiError::invalid_field("tenant_id", "name the tenant the role belongs to"))?;
    let role = definition(&caller, parse_name(&request.name)?, request.description, request.permissions)?;
    let record =
        RoleRecord { role, tenant_id: tenant, updated_at: OffsetDateTime::now_utc(), retiring: false };
    match state.store.fenced(caller.fence()).put_role(&record, RoleWrite::Create).await {
        Ok(_) => {}
        Err(StoreError::AlreadyExists) => {
            // The same definition again is a retry, not a conflict.
            let existing = state.store.fenced(caller.fence()).get_role(tenant, &record.role.name).await?;
            return match existing {
                Some(existing) if existing.retiring => Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("the role {} is being deleted; repeat the DELETE to finish it", record.role.name),
                )
                .with_details(json!({ "field": "name" }))),
                Some(existing) if existing.role == record.role => {
                    Ok((StatusCode::OK, axum::Json(RoleView::custom(&existing))))
                }
                _ => Err(ApiError::new(
                    ErrorCode::AlreadyExists,
                    format!("the role {} already exists", record.role.name),
                )
                .with_details(json!({ "field": "name" }))),
            };
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(role = %record.role.name, %tenant, by = %caller.user_id, "role created");
    Ok((StatusCode::CREATED, axum::Json(RoleView::custom(&record))))
}

#[utoipa::path(
    get,
    path = "/v1/roles/{name}",
    tag = "roles",
    operation_id = "get_role",
    params(RolePath, RoleScopeQuery),
    responses(
        (status = 200, description = "The role", body = RoleView),
        (status = 404, description = "`NOT_FOUND`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    query: RoleScopeQuery,
) -> Result<axum::Json<RoleView>, ApiError> {
    let tenant = tenant_of(&query, &caller)?;
    authorize(&caller, Resource::Role, Action::Read, target(tenant))?;
    let name = RoleName::parse(&name).map_err(|_| role_not_found(&name))?;
    if let Some(builtin) = name.builtin() {
        return Ok(axum::Json(RoleView::builtin(builtin)));
    }
    let tenant = tenant.ok_or_else(|| role_not_found(name.as_str()))?;
    let record = state
        .store
        .fenced(caller.fence())
        .get_role(tenant, &name)
        .await?
        .filter(|record| !record.retiring)
        .ok_or_else(|| role_not_found(name.as_str()))?;
    Ok(axum::Json(RoleView::custom(&record)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplaceRoleRequest {
    #[serde(default)]
    #[schema(max_length = 200)]
    description: String,
    /// As for a new role.
    #[schema(min_items = 1, max_items = 50)]
    permissions: Vec<Permission>,
}

/// The custom role `name` of `tenant`, if the caller may change or delete it: not a built-in
/// role, and granting nothing the caller does not hold (else rewriting or deleting it would
/// take rights from its holders that the caller never had).
async fn changeable_role(
    state: &UsersState,
    caller: &Caller,
    tenant: Option<TenantId>,
    name: &RoleName,
) -> Result<TenantId, ApiError> {
    if name.builtin().is_some() {
        return Err(ApiError::new(ErrorCode::Forbidden, "built-in roles cannot be changed or deleted"));
    }
    let tenant = tenant.ok_or_else(|| role_not_found(name.as_str()))?;
    let existing = state
        .store
        .fenced(caller.fence())
        .get_role(tenant, name)
        .await?
        .ok_or_else(|| role_not_found(name.as_str()))?;
    if !may_define(caller, &existing.role) {
        return Err(ApiError::new(ErrorCode::Forbidden, "this role grants more than you hold"));
    }
    Ok(tenant)
}

/// Replaces a custom role's definition; it applies to its holders' next request.
#[utoipa::path(
    put,
    path = "/v1/roles/{name}",
    tag = "roles",
    operation_id = "replace_role",
    params(RolePath, RoleScopeQuery),
    request_body = ReplaceRoleRequest,
    responses(
        (status = 200, description = "The role as replaced", body = RoleView),
        (status = 404, description = "`NOT_FOUND`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn replace(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    query: RoleScopeQuery,
    Json(request): Json<ReplaceRoleRequest>,
) -> Result<axum::Json<RoleView>, ApiError> {
    let tenant = tenant_of(&query, &caller)?;
    authorize(&caller, Resource::Role, Action::Update, target(tenant))?;
    let name = parse_name(&name)?;
    let tenant = changeable_role(&state, &caller, tenant, &name).await?;
    let role = definition(&caller, name, request.description, request.permissions)?;
    let record =
        RoleRecord { role, tenant_id: tenant, updated_at: OffsetDateTime::now_utc(), retiring: false };
    if !state.store.fenced(caller.fence()).put_role(&record, RoleWrite::Replace).await? {
        return Err(role_not_found(record.role.name.as_str()));
    }
    tracing::info!(role = %record.role.name, %tenant, by = %caller.user_id, "role replaced");
    Ok(axum::Json(RoleView::custom(&record)))
}

/// Deletes a custom role and takes it from every user holding it (their sessions end, as
/// with any change of roles), so a role defined later under the same name grants nothing to
/// anyone who held this one. Interrupted, it answers 5xx and is finished by repeating it.
#[utoipa::path(
    delete,
    path = "/v1/roles/{name}",
    tag = "roles",
    operation_id = "delete_role",
    params(RolePath, RoleScopeQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`NOT_FOUND`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    query: RoleScopeQuery,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant_of(&query, &caller)?;
    authorize(&caller, Resource::Role, Action::Delete, target(tenant))?;
    let name = RoleName::parse(&name).map_err(|_| role_not_found(&name))?;
    let tenant = changeable_role(&state, &caller, tenant, &name).await?;
    let now_ms = dotmac_store::unix_ms(OffsetDateTime::now_utc());
    if !state.store.fenced(caller.fence()).delete_role(tenant, &name, now_ms).await? {
        return Err(role_not_found(name.as_str()));
    }
    tracing::info!(role = %name, %tenant, by = %caller.user_id, "role deleted");
    Ok(StatusCode::NO_CONTENT)
}
