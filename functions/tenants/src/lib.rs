//! The tenants function: onboard an ISP (write it, queue its provisioning) and read tenants;
//! the catalogue (plans, versioned prices, bundles) and each tenant's subscriptions.

pub mod catalog;
mod catalog_routes;
pub mod fleet;
pub mod lifecycle;
pub mod onboarding;
pub mod rollouts;
pub mod subscriptions;
pub mod views;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};

use dotmac_domain::{
    Action, Caller, Denied, Email, NewTenant, PartnerId, PlanId, Resource, Target, TenantId, TenantName,
    TenantSlug, authorize,
};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::idempotency::IdempotencyKeyHeader;
use dotmac_http::schema;
use dotmac_http::{
    Access, ApiError, ApiRoutes, Authenticated, Bearer, ErrorCode, Idempotent, Json, Page, PageQuery, Path,
    Routes, idempotency_key, idempotent, request_fingerprint, routes, tenant_in_reach,
};
use dotmac_queue::SqsQueue;
use dotmac_store::{Also, HealthStatus, Heartbeat, Store};
use dotmac_tokens::JwtKeys;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::ToSchema;

pub use lifecycle::{Actor, Lifecycle, TenantLifecycleError};
pub use onboarding::{Onboarding, OnboardingError};
pub use views::{HealthView, TenantAnswer, TenantStaffView, TenantView};

impl From<OnboardingError> for ApiError {
    fn from(error: OnboardingError) -> Self {
        match error {
            OnboardingError::Denied(denied) => denied.into(),
            OnboardingError::UnknownPlan(plan) => {
                ApiError::invalid_field("plan", format!("no plan {plan} exists"))
            }
            OnboardingError::SlugTaken(slug) => {
                ApiError::new(ErrorCode::SlugTaken, format!("the slug {slug} is already taken"))
                    .with_details(json!({ "field": "slug", "slug": slug }))
            }
            OnboardingError::QueueUnavailable(cause) => ApiError::unavailable("sqs", cause),
            OnboardingError::Store(error) => error.into(),
        }
    }
}

impl From<TenantLifecycleError> for ApiError {
    fn from(error: TenantLifecycleError) -> Self {
        match error {
            TenantLifecycleError::Denied(denied) => denied.into(),
            refused @ TenantLifecycleError::NotBillingsReason => {
                ApiError::new(ErrorCode::Forbidden, refused.to_string())
            }
            TenantLifecycleError::NotFound(_) => {
                ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see")
            }
            TenantLifecycleError::Conflict { error, tenant } => {
                let remaining = match &error {
                    dotmac_domain::LifecycleError::StillSuspended { remaining } => remaining.clone(),
                    dotmac_domain::LifecycleError::Illegal(_) => tenant.suspended_for.clone(),
                };
                ApiError::new(ErrorCode::TenantStateConflict, error.to_string()).with_details(json!({
                    "status": tenant.status,
                    "suspended_for": remaining,
                    "version": tenant.version,
                }))
            }
            contended @ TenantLifecycleError::Contended => {
                ApiError::new(ErrorCode::RequestInProgress, contended.to_string())
            }
            TenantLifecycleError::QueueUnavailable(cause) => ApiError::unavailable("sqs", cause),
            TenantLifecycleError::Store(error) => error.into(),
        }
    }
}

#[derive(Clone)]
pub struct TenantsState {
    pub store: Store,
    pub provisioning: SqsQueue,
    pub keys: Arc<JwtKeys>,
}

dotmac_http::bearer_state!(TenantsState);

impl TenantsState {
    fn onboarding(&self) -> Onboarding {
        Onboarding { store: self.store.clone(), provisioning: self.provisioning.clone() }
    }

    fn lifecycle(&self) -> Lifecycle {
        Lifecycle { store: self.store.clone(), provisioning: self.provisioning.clone() }
    }
}

/// The function's routes, before they are given a state (what the OpenAPI document and the
/// route checks read).
pub fn routes() -> Routes<TenantsState> {
    Routes::new()
        .route(Access::Authenticated, routes!(list_tenants))
        .route(Access::Authenticated, routes!(create_tenant))
        .route(Access::Authenticated, routes!(get_tenant))
        .route(Access::Authenticated, routes!(report_health))
        .route(Access::Authenticated, routes!(latest_health))
        .route(Access::Authenticated, routes!(fleet::create_backup))
        .route(Access::Authenticated, routes!(fleet::get_backups))
        .route(Access::Authenticated, routes!(fleet::restore_backup))
        .route(Access::Authenticated, routes!(fleet::scale_tenant))
        .route(Access::Authenticated, routes!(catalog_routes::list_plans))
        .route(Access::Authenticated, routes!(catalog_routes::create_plan))
        .route(Access::Authenticated, routes!(catalog_routes::get_plan))
        .route(Access::Authenticated, routes!(catalog_routes::change_price))
        .route(Access::Authenticated, routes!(catalog_routes::list_bundles))
        .route(Access::Authenticated, routes!(catalog_routes::tenant_bundles))
        .route(Access::Authenticated, routes!(catalog_routes::add_bundle))
        .route(Access::Authenticated, routes!(catalog_routes::remove_bundle))
        .route(Access::Authenticated, routes!(catalog_routes::change_plan))
        .route(Access::Authenticated, routes!(suspend_tenant))
        .route(Access::Authenticated, routes!(resume_tenant))
        .route(Access::Authenticated, routes!(delete_tenant))
        .route(Access::Authenticated, routes!(tenant_events))
        .route(Access::Authenticated, routes!(rollouts::create_rollout))
        .route(Access::Authenticated, routes!(rollouts::show_rollout))
        .route(Access::Authenticated, routes!(rollouts::pause_rollout))
        .route(Access::Authenticated, routes!(rollouts::resume_rollout))
}

pub fn router(state: TenantsState) -> ApiRoutes {
    routes().with_state(state)
}

/// Only these fields are accepted: status, ids, containers and the like are the platform's
/// to set (no mass assignment).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// The ISP's name, 1–120 characters.
    #[schema(schema_with = schema::name)]
    name: String,
    /// 3–40 characters of `a-z`, `0-9` and inner hyphens; unique across the platform, and
    /// not a reserved word (`admin`, `api`, ...: a 422).
    #[schema(schema_with = schema::slug)]
    slug: String,
    /// One of the plans (`usage`, `scaled`, `enterprise`).
    #[schema(schema_with = seeded_plan)]
    plan: String,
    #[schema(schema_with = schema::email)]
    contact_email: String,
    /// Platform staff may name the partner that brought the tenant; a partner's own
    /// onboardings are always its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = schema::partner_id)]
    partner_id: Option<String>,
}

/// The plans every stack is seeded with; a plan id the store does not hold is a 422.
fn seeded_plan() -> utoipa::openapi::Object {
    let ids: Vec<String> = dotmac_domain::seed_plans().into_iter().map(|plan| plan.id.to_string()).collect();
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(ids))
        .build()
}

impl CreateTenantRequest {
    /// Who is asking, and a digest of what: an `Idempotency-Key` is honoured per caller, and a
    /// key reused with another body is caught by the digest.
    fn scope_and_fingerprint(&self, caller: &Caller) -> Result<(String, String), ApiError> {
        let canonical = serde_json::to_vec(self).map_err(ApiError::internal)?;
        let fingerprint = request_fingerprint("POST", "/v1/tenants", &canonical);
        Ok((format!("tenants#{}", caller.user_id), fingerprint))
    }

    /// Names this request, made by `caller` under `key`, as the slug claim records it: a retry
    /// of the same keyed request finds the tenant it created even when its answer was lost.
    pub fn request_ref(&self, caller: &Caller, key: &str) -> Result<String, ApiError> {
        let (scope, fingerprint) = self.scope_and_fingerprint(caller)?;
        Ok(format!("{scope}#{key}#{fingerprint}"))
    }

    /// Parses every field and reports all that are wrong, the first one as `field`.
    pub fn parse(&self) -> Result<NewTenant, ApiError> {
        let name = TenantName::parse(&self.name);
        let slug = TenantSlug::parse(&self.slug);
        let plan = PlanId::parse(&self.plan);
        let contact_email = Email::parse_field(&self.contact_email, "contact_email");
        let partner_id = self.partner_id.as_deref().map(PartnerId::parse).transpose();
        match (name, slug, plan, contact_email, partner_id) {
            (Ok(name), Ok(slug), Ok(plan), Ok(contact_email), Ok(partner_id)) => {
                Ok(NewTenant { name, slug, plan, contact_email, partner_id })
            }
            (name, slug, plan, email, partner) => {
                let errors: Vec<_> = [name.err(), slug.err(), plan.err(), email.err(), partner.err()]
                    .into_iter()
                    .flatten()
                    .collect();
                let fields: Map<String, Value> =
                    errors.iter().map(|e| (e.field.to_owned(), Value::String(e.reason.clone()))).collect();
                let first = errors
                    .first()
                    .cloned()
                    .map(ApiError::from)
                    .unwrap_or_else(|| ApiError::invalid_field("body", "invalid"));
                let field = first.details["field"].clone();
                let reason = first.details["reason"].clone();
                Err(first.with_details(json!({ "field": field, "reason": reason, "fields": fields })))
            }
        }
    }
}

/// Onboard an ISP: the tenant is written and its provisioning queued; it becomes `active`
/// once its container runs.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "create_tenant",
    params(IdempotencyKeyHeader),
    request_body = CreateTenantRequest,
    responses(
        (status = 202, description = "The tenant, in `provisioning`", body = TenantAnswer,
            headers(("idempotent-replayed" = String, description = "`true` when this is the saved answer of an earlier request with the same key"))),
        (status = 409, description = "`SLUG_TAKEN`, or `REQUEST_IN_PROGRESS` while the first request with this key runs", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` naming the field (also a reserved slug or an unknown plan), or `IDEMPOTENCY_KEY_REUSED` (same key, other body)", body = ErrorEnvelope),
    )
)]
async fn create_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Json(request): Json<CreateTenantRequest>,
) -> Result<Idempotent<TenantAnswer>, ApiError> {
    let new = onboarding::authorized(&caller, request.parse()?)?;
    let (scope, fingerprint) = request.scope_and_fingerprint(&caller)?;
    let request_ref = idempotency_key(&headers).map(|key| format!("{scope}#{key}#{fingerprint}"));
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let tenant = state.onboarding().onboard(&caller, new, request_ref.as_deref()).await?;
        Ok((StatusCode::ACCEPTED, TenantAnswer::for_caller(&caller, &tenant)))
    })
    .await
}

fn parse_tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(ApiError::from)
}

/// One tenant: the staff view for platform staff, the tenant's own view for anyone else.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "get_tenant",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant", body = TenantAnswer),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn get_tenant(
    State(state): State<TenantsState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantAnswer>, ApiError> {
    let id = parse_tenant_id(&id)?;
    // The tenant is read in the same round trip as the token's checks.
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_in_reach(&admitted.caller, Resource::Tenant, id, admitted.tenant)?;
    Ok(axum::Json(TenantAnswer::for_caller(&admitted.caller, &tenant)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    status: HealthStatus,
    /// At most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    detail: Option<String>,
}

/// A tenant's container reports its health with its machine token (or an admin on its
/// behalf). Only the newest report is kept.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/health",
    tag = "tenants",
    operation_id = "report_tenant_health",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    request_body = HealthReport,
    responses((status = 204, description = "Recorded"))
)]
async fn report_health(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(report): Json<HealthReport>,
) -> Result<StatusCode, ApiError> {
    let id = parse_tenant_id(&id)?;
    authorize(&caller, Resource::Health, Action::Create, Target::tenant(id))?;
    if report.detail.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::invalid_field("detail", "must be at most 500 characters"));
    }
    let heartbeat =
        Heartbeat { status: report.status, detail: report.detail, reported_at: OffsetDateTime::now_utc() };
    state.store.fenced(caller.fence()).record_heartbeat(id, &heartbeat).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The container's newest health report.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/health",
    tag = "tenants",
    operation_id = "get_tenant_health",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    responses((status = 200, description = "The newest report, if any", body = HealthView))
)]
async fn latest_health(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<HealthView>, ApiError> {
    let id = parse_tenant_id(&id)?;
    authorize(&caller, Resource::Health, Action::Read, Target::tenant(id))?;
    let heartbeat = state.store.fenced(caller.fence()).latest_heartbeat(id).await?;
    Ok(axum::Json(HealthView::of(id, heartbeat.as_ref())))
}

/// Tenants a page at a time: every tenant for platform staff, a partner's own, or a tenant's
/// users' one tenant.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    operation_id = "list_tenants",
    params(PageQuery),
    responses((status = 200, description = "One page", body = Page<TenantAnswer>))
)]
async fn list_tenants(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Page<TenantAnswer>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    let limit = query.limit()?;
    if authorize(&caller, Resource::Tenant, Action::Read, Target::default()).is_ok()
        || caller.partner_id.is_some()
    {
        let page = state.store.fenced(caller.fence()).list_tenants(limit, query.cursor.as_deref()).await?;
        let items = page
            .items
            .iter()
            .filter(|t| {
                let target = Target::tenant(t.id).partner(t.partner_id.as_ref());
                authorize(&caller, Resource::Tenant, Action::Read, target).is_ok()
            })
            .map(|t| TenantAnswer::for_caller(&caller, t))
            .collect();
        return Ok(axum::Json(Page::new(items, page.next_cursor)));
    }
    // A tenant-scoped caller sees the one tenant it belongs to.
    let own = caller
        .tenant_id
        .ok_or_else(|| ApiError::from(Denied { resource: Resource::Tenant, action: Action::Read }))?;
    authorize(&caller, Resource::Tenant, Action::Read, Target::tenant(own))?;
    // Its list is one page long, so no cursor of ours leads anywhere from it.
    if query.cursor.is_some() {
        return Err(dotmac_store::StoreError::BadCursor.into());
    }
    let items = match state.store.fenced(caller.fence()).get_tenant(own).await? {
        Some(tenant) => vec![TenantAnswer::Tenant(TenantView::of(&tenant))],
        None => Vec::new(),
    };
    Ok(axum::Json(Page::new(items, None)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    /// Why: `admin`, `non_payment`, `abuse` or `tenant_request`. A tenant may be suspended
    /// for several reasons at once; it runs again once every one is lifted.
    reason: dotmac_domain::SuspensionReason,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeRequest {
    /// The reason to lift. Without one, every reason but `non_payment` is lifted: a
    /// suspension for non-payment ends only by a resume naming `non_payment` (billing's, on
    /// payment).
    #[serde(default)]
    reason: Option<dotmac_domain::SuspensionReason>,
}

/// Suspend a tenant: its container stops (a queued job), its secret, task definition and data
/// stay. Platform staff only. Repeating it changes nothing and queues the job again.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/suspend",
    tag = "tenants",
    operation_id = "suspend_tenant",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    request_body = SuspendRequest,
    responses(
        (status = 202, description = "The tenant, `suspended` (its task is being stopped)", body = TenantAnswer),
        (status = 404, description = "`TENANT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`TENANT_STATE_CONFLICT`: not active or suspended; `details.status` is its status", body = ErrorEnvelope),
    )
)]
async fn suspend_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(request): Json<SuspendRequest>,
) -> Result<(StatusCode, axum::Json<TenantAnswer>), ApiError> {
    let id = parse_tenant_id(&id)?;
    lifecycle::authorized(&caller, Action::Update)?;
    let tenant = state.lifecycle().suspend(Actor::Caller(&caller), id, request.reason).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TenantAnswer::for_caller(&caller, &tenant))))
}

/// Lift a suspension: once no reason is left the tenant is `active` and its container starts
/// again (a queued job) with the same task family and secret. Platform staff only.
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/resume",
    tag = "tenants",
    operation_id = "resume_tenant",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    request_body = ResumeRequest,
    responses(
        (status = 202, description = "The tenant: `active` (its task is starting), or still `suspended` for the reasons left", body = TenantAnswer),
        (status = 404, description = "`TENANT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`TENANT_STATE_CONFLICT`: not suspended, or suspended only for reasons this resume does not lift; `details.status` and `details.suspended_for`", body = ErrorEnvelope),
    )
)]
async fn resume_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(request): Json<ResumeRequest>,
) -> Result<(StatusCode, axum::Json<TenantAnswer>), ApiError> {
    let id = parse_tenant_id(&id)?;
    lifecycle::authorized(&caller, Action::Update)?;
    let tenant = state.lifecycle().resume(Actor::Caller(&caller), id, request.reason).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TenantAnswer::for_caller(&caller, &tenant))))
}

/// Delete a tenant: `deprovisioning` now; a queued saga stops its task, deregisters its task
/// definition, revokes its machine token and deletes its secret (recoverable for the
/// configured window), then marks it `deleted`. The record stays for billing history and
/// keeps its slug. Platform admins only.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}",
    tag = "tenants",
    operation_id = "delete_tenant",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    responses(
        (status = 202, description = "The tenant, `deprovisioning`", body = TenantAnswer),
        (status = 404, description = "`TENANT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`TENANT_STATE_CONFLICT`: still provisioning, or deleted already; `details.status`", body = ErrorEnvelope),
    )
)]
async fn delete_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, axum::Json<TenantAnswer>), ApiError> {
    let id = parse_tenant_id(&id)?;
    lifecycle::authorized(&caller, Action::Delete)?;
    let tenant = state.lifecycle().delete(&caller, id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(TenantAnswer::for_caller(&caller, &tenant))))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `newest` first (the default) or `oldest` first.
    #[param(pattern = "^(newest|oldest)$")]
    order: Option<String>,
    /// Events per page, 1–100 (default 20).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` from the previous page (of the same order).
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// A tenant's event log, a page at a time: newest first by default, `?order=oldest` from the
/// start. Each event is the envelope published to EventBridge. Platform staff, the tenant's
/// own admins and the partner that brought it may read it.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/events",
    tag = "tenants",
    operation_id = "list_tenant_events",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id"), EventsQuery),
    responses(
        (status = 200, description = "One page of events", body = Page<dotmac_domain::EventEnvelope>),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn tenant_events(
    State(state): State<TenantsState>,
    bearer: Bearer,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Page<dotmac_domain::EventEnvelope>>, ApiError> {
    let id = parse_tenant_id(&id)?;
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    let limit = dotmac_http::page::page_limit(query.limit.as_deref())?;
    let order = match query.order.as_deref() {
        None | Some("newest") => dotmac_store::EventOrder::NewestFirst,
        Some("oldest") => dotmac_store::EventOrder::OldestFirst,
        Some(_) => return Err(ApiError::invalid_field("order", "must be newest or oldest")),
    };
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_in_reach(&admitted.caller, Resource::Tenant, id, admitted.tenant)?;
    let caller = &admitted.caller;
    let page = state
        .store
        .fenced(caller.fence())
        .tenant_events(&tenant, order, limit, query.cursor.as_deref())
        .await?;
    let items = page.items.into_iter().map(|event| views::event_for_caller(caller, event)).collect();
    Ok(axum::Json(Page::new(items, page.next_cursor)))
}
