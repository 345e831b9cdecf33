//! `/v1/users`: list, create, read, update (roles and the active flag only), delete.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use dotmac_domain::{
    Account, Action, AssignmentError, Caller, CustomRole, Email, Fence, PartnerId, Resource, RoleName,
    Target, TenantId, authorize, check_assignment,
};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::idempotency::IdempotencyKeyHeader;
use dotmac_http::schema;
use dotmac_http::{
    ApiError, Authenticated, ErrorCode, Idempotent, Json, Page, Path, idempotent, request_fingerprint,
};
use dotmac_store::{Store, StoreError, UserChanges, UserHome, UserRecord};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::new_user::{CreateUserError, NewAccount, NewUser, create_user};
use crate::views::UserView;
use crate::{ScopeQuery, UsersState};

/// The policy's view of a user: the tenant it belongs to and the user as owner.
fn target(user: &UserRecord) -> Target<'_> {
    Target { tenant_id: user.tenant_id, partner_id: None, owner_id: Some(&user.id) }
}

pub(crate) fn home_target(home: &UserHome) -> Target<'_> {
    match home {
        UserHome::Tenant(tenant) => Target::tenant(*tenant),
        UserHome::Partner(_) | UserHome::Platform => Target::default(),
    }
}

/// Says nothing of whether the id exists elsewhere.
fn user_not_found(_id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such user where you can see")
}

pub(crate) fn assignment_refused(error: AssignmentError) -> ApiError {
    match error {
        AssignmentError::UnknownRole(role) => {
            ApiError::invalid_field("roles", format!("the tenant has no role {role}"))
        }
        AssignmentError::Count => ApiError::invalid_field("roles", "must list 1 to 10 roles"),
        other => ApiError::new(ErrorCode::Forbidden, other.to_string()),
    }
}

/// Whether the caller could have given the account the roles it holds (roles since deleted
/// from the tenant grant nothing and are ignored).
pub(crate) fn may_manage(
    caller: &Caller,
    account: Account<'_>,
    held: &[RoleName],
    custom: &[CustomRole],
) -> bool {
    let known: Vec<RoleName> = held
        .iter()
        .filter(|role| role.builtin().is_some() || custom.iter().any(|c| &c.name == *role))
        .cloned()
        .collect();
    known.is_empty() || check_assignment(caller, account, &known, custom).is_ok()
}

fn beyond_yours() -> ApiError {
    ApiError::new(ErrorCode::Forbidden, "this user holds roles beyond yours; you cannot change it")
}

/// The custom roles defined in the account's tenant (what assignments are checked against).
pub(crate) async fn tenant_roles(
    store: &Store,
    caller: &Caller,
    tenant: Option<TenantId>,
) -> Result<Vec<CustomRole>, StoreError> {
    let Some(tenant) = tenant else { return Ok(Vec::new()) };
    let records = store.fenced(caller.fence()).list_roles(tenant).await?;
    // A role being deleted can no longer be handed out.
    Ok(records.into_iter().filter(|r| !r.retiring).map(|r| r.role).collect())
}

/// Finds the user `id` where the caller may look: in its own tenant (or partner), or, for
/// platform staff, wherever it lives.
async fn find_user(
    state: &UsersState,
    caller: &Caller,
    id: &str,
    action: Action,
) -> Result<UserRecord, ApiError> {
    // Refused before looking, so a caller without the right learns nothing from a 404.
    let own_home = UserHome::of(caller.tenant_id, caller.partner_id.as_ref());
    authorize(caller, Resource::User, action, home_target(&own_home).owner(id))?;
    if id.is_empty() || id.len() > 64 {
        return Err(user_not_found(id));
    }
    let home = match caller.fence() {
        Fence::Global => state.store.find_user_home(id).await?.ok_or_else(|| user_not_found(id))?,
        Fence::Tenant(_) | Fence::Partner(_) => own_home,
        Fence::Nothing => {
            return Err(ApiError::from(dotmac_domain::Denied {
                resource: Resource::User,
                action: Action::Read,
            }));
        }
    };
    state.store.fenced(caller.fence()).get_user(&home, id).await?.ok_or_else(|| user_not_found(id))
}

/// Users of one tenant (or partner), a page at a time; never a password hash.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    operation_id = "list_users",
    params(ScopeQuery),
    responses((status = 200, description = "One page", body = Page<UserView>))
)]
pub(crate) async fn list(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    query: ScopeQuery,
) -> Result<axum::Json<Page<UserView>>, ApiError> {
    let home = query.home(&caller)?;
    authorize(&caller, Resource::User, Action::Read, home_target(&home))?;
    let page =
        state.store.fenced(caller.fence()).list_users(&home, query.limit()?, query.cursor.as_deref()).await?;
    Ok(axum::Json(Page::new(page.items.iter().map(UserView::of).collect(), page.next_cursor)))
}

/// Only these fields: ids, hashes, timestamps and the like are the platform's to set.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUserRequest {
    #[schema(schema_with = schema::email)]
    email: String,
    /// 12–128 characters, not the e-mail, not built from breached words, no repeats or runs
    /// (the policy's refusals are 422s naming `password`).
    #[schema(format = Password, min_length = 12, max_length = 128)]
    password: String,
    /// Built-in or the tenant's custom roles, 1 to 10.
    #[schema(min_items = 1, max_items = 10)]
    roles: Vec<String>,
    /// Platform staff name the tenant (or partner) of the new user; others create users in
    /// their own tenant and may leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::partner_id)]
    partner_id: Option<String>,
}

pub(crate) fn parse_roles(raw: &[String]) -> Result<Vec<RoleName>, ApiError> {
    let mut roles: Vec<RoleName> = raw
        .iter()
        .map(|r| RoleName::parse(r))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::invalid_field("roles", e.reason))?;
    roles.sort();
    roles.dedup();
    Ok(roles)
}

impl CreateUserRequest {
    fn parse(&self, caller: &Caller) -> Result<NewUser, ApiError> {
        let account = new_account(
            caller,
            &self.email,
            &self.roles,
            self.tenant_id.as_deref(),
            self.partner_id.as_deref(),
        )?;
        Ok(NewUser { account, password: self.password.clone() })
    }
}

/// An account as a body describes it (`POST /v1/users`, `POST /v1/invitations`): the e-mail,
/// the roles, and the home, which is the tenant or partner the body names, else the caller's.
pub(crate) fn new_account(
    caller: &Caller,
    email: &str,
    roles: &[String],
    tenant_id: Option<&str>,
    partner_id: Option<&str>,
) -> Result<NewAccount, ApiError> {
    let email = Email::parse(email)?;
    let roles = parse_roles(roles)?;
    let tenant_id = match tenant_id {
        Some(raw) => Some(TenantId::parse_field(raw, "tenant_id")?),
        None if partner_id.is_none() => caller.tenant_id,
        None => None,
    };
    let partner_id = match partner_id {
        Some(raw) => Some(PartnerId::parse(raw)?),
        None if tenant_id.is_none() => caller.partner_id.clone(),
        None => None,
    };
    if tenant_id.is_some() && partner_id.is_some() {
        return Err(ApiError::invalid_field(
            "partner_id",
            "a user belongs to a tenant or to a partner, not both",
        ));
    }
    Ok(NewAccount { email, roles, tenant_id, partner_id })
}

impl From<CreateUserError> for ApiError {
    fn from(error: CreateUserError) -> Self {
        match error {
            CreateUserError::Denied(denied) => denied.into(),
            CreateUserError::InviteInstead => ApiError::new(
                ErrorCode::Forbidden,
                "only platform staff create users directly; invite them with POST /v1/invitations",
            )
            .with_details(json!({ "invite": "/v1/invitations" })),
            CreateUserError::Assignment(refused) => assignment_refused(refused),
            CreateUserError::Invalid(invalid) => invalid.into(),
            CreateUserError::EmailTaken => {
                ApiError::new(ErrorCode::AlreadyExists, "a user with this e-mail already exists")
                    .with_details(json!({ "field": "email" }))
            }
            CreateUserError::Store(error) => error.into(),
            CreateUserError::Hashing(cause) => ApiError::internal(cause),
        }
    }
}

/// Create a user directly, with its password: platform staff only (seeding). Everyone else
/// invites (`POST /v1/invitations`); a tenant's or partner's admin gets a 403 saying so.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    operation_id = "create_user",
    params(IdempotencyKeyHeader),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "The user", body = UserView),
        (status = 403, description = "`FORBIDDEN`: not allowed there, or not platform staff (invite instead)", body = ErrorEnvelope),
        (status = 409, description = "`ALREADY_EXISTS` (the e-mail), or `REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` (password policy, unknown role, ...) or `IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
    )
)]
pub(crate) async fn create(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Json(mut request): Json<CreateUserRequest>,
) -> Result<Idempotent<UserView>, ApiError> {
    let new = request.parse(&caller)?;
    // The password stays out of the fingerprint: a plain digest of it would be stored with the
    // idempotency record, open to offline guessing.
    request.password.clear();
    let canonical = serde_json::to_vec(&request).map_err(ApiError::internal)?;
    let fingerprint = request_fingerprint("POST", "/v1/users", &canonical);
    let scope = format!("users#{}", caller.user_id);
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let user = create_user(&state.store, &caller, new).await?;
        Ok((StatusCode::CREATED, UserView::of(&user)))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    operation_id = "get_user",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "`NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
pub(crate) async fn get(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = find_user(&state, &caller, &id, Action::Read).await?;
    authorize(&caller, Resource::User, Action::Read, target(&user))?;
    Ok(axum::Json(UserView::of(&user)))
}

/// What an update may change. Unknown fields (`tenant_id`, `id`, `email`, `password_hash`,
/// ...) are refused, so no body can move a user or rewrite what the platform owns.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateUserRequest {
    #[schema(min_items = 1, max_items = 10)]
    roles: Option<Vec<String>>,
    active: Option<bool>,
}

/// Change a user's roles or whether it may sign in.
#[utoipa::path(
    patch,
    path = "/v1/users/{id}",
    tag = "users",
    operation_id = "update_user",
    params(("id" = String, Path, description = "The user's id")),
    request_body = UpdateUserRequest,
    responses(
        (status = 200, description = "The user as changed", body = UserView),
        (status = 404, description = "`NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
pub(crate) async fn update(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(request): Json<UpdateUserRequest>,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = find_user(&state, &caller, &id, Action::Update).await?;
    authorize(&caller, Resource::User, Action::Update, target(&user))?;
    if user.id == caller.user_id {
        // Covers roles and the active flag alike: nobody promotes, demotes or locks out
        // themselves.
        return Err(ApiError::new(ErrorCode::Forbidden, "nobody changes their own roles or status"));
    }
    let roles = request.roles.as_deref().map(parse_roles).transpose()?;
    let account =
        Account { user_id: &user.id, tenant_id: user.tenant_id, partner_id: user.partner_id.as_ref() };
    let custom = tenant_roles(&state.store, &caller, user.tenant_id).await?;
    // Nobody changes (roles or status) a user holding roles they could not have given.
    if !may_manage(&caller, account, &user.roles, &custom) {
        return Err(beyond_yours());
    }
    if let Some(roles) = &roles {
        check_assignment(&caller, account, roles, &custom).map_err(assignment_refused)?;
    }

    let changes = UserChanges { roles, active: request.active };
    let updated = state
        .store
        .fenced(caller.fence())
        .update_user(&user.home(), &user.id, &changes, dotmac_store::unix_ms(time::OffsetDateTime::now_utc()))
        .await?
        .ok_or_else(|| user_not_found(&id))?;
    tracing::info!(user_id = %updated.id, by = %caller.user_id, "user updated");
    Ok(axum::Json(UserView::of(&updated)))
}

#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    operation_id = "delete_user",
    params(("id" = String, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
pub(crate) async fn delete(
    State(state): State<UsersState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = find_user(&state, &caller, &id, Action::Delete).await?;
    authorize(&caller, Resource::User, Action::Delete, target(&user))?;
    if user.id == caller.user_id {
        return Err(ApiError::new(ErrorCode::Forbidden, "nobody deletes their own account here"));
    }
    let custom = tenant_roles(&state.store, &caller, user.tenant_id).await?;
    let account =
        Account { user_id: &user.id, tenant_id: user.tenant_id, partner_id: user.partner_id.as_ref() };
    if !may_manage(&caller, account, &user.roles, &custom) {
        return Err(beyond_yours());
    }
    if !state.store.fenced(caller.fence()).delete_user(&user).await? {
        return Err(user_not_found(&id));
    }
    tracing::info!(user_id = %user.id, by = %caller.user_id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}
