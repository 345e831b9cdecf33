//! The tenants function: onboard an ISP (write it, queue its provisioning) and read tenants;
//! the catalogue (plans, versioned prices, bundles) and each tenant's subscriptions.

pub mod catalog;
mod catalog_routes;
pub mod onboarding;
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
        .route(Access::Authenticated, routes!(catalog_routes::list_plans))
        .route(Access::Authenticated, routes!(catalog_routes::create_plan))
        .route(Access::Authenticated, routes!(catalog_routes::get_plan))
        .route(Access::Authenticated, routes!(catalog_routes::change_price))
        .route(Access::Authenticated, routes!(catalog_routes::list_bundles))
        .route(Access::Authenticated, routes!(catalog_routes::tenant_bundles))
        .route(Access::Authenticated, routes!(catalog_routes::add_bundle))
        .route(Access::Authenticated, routes!(catalog_routes::remove_bundle))
        .route(Access::Authenticated, routes!(catalog_routes::change_plan))
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
