//! The tenants function: onboard an ISP (write it, queue its provisioning) and read tenants.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;

use dotmac_domain::{
    Action, Caller, Email, NewTenant, PartnerId, PlanId, Resource, Target, Tenant, TenantId, TenantName,
    TenantSlug, authorize,
};
use dotmac_http::{
    Access, ApiError, ApiRoutes, Authenticated, ErrorCode, Json, Routes, idempotent, request_fingerprint,
};
use dotmac_queue::{ProvisioningJob, SqsQueue};
use dotmac_store::{HealthStatus, Heartbeat, Store, StoreError};
use dotmac_tokens::JwtKeys;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Clone)]
pub struct TenantsState {
    pub store: Store,
    pub provisioning: SqsQueue,
    pub keys: Arc<JwtKeys>,
}

dotmac_http::bearer_state!(TenantsState);

pub fn router(state: TenantsState) -> ApiRoutes {
    Routes::new()
        .route(Method::GET, "/v1/tenants", Access::Authenticated, list_tenants)
        .route(Method::POST, "/v1/tenants", Access::Authenticated, create_tenant)
        .route(Method::GET, "/v1/tenants/{id}", Access::Authenticated, get_tenant)
        .route(Method::POST, "/v1/tenants/{id}/health", Access::Authenticated, report_health)
        .route(Method::GET, "/v1/tenants/{id}/health", Access::Authenticated, latest_health)
        .with_state(state)
}

/// Only these fields are accepted: status, ids, containers and the like are the platform's
/// to set (no mass assignment).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenantRequest {
    name: String,
    slug: String,
    plan: String,
    contact_email: String,
    /// Platform staff may name the partner that brought the tenant; a partner's own
    /// onboardings are always its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partner_id: Option<String>,
}

impl CreateTenantRequest {
    /// Parses every field and reports all that are wrong, the first one as `field`.
    fn parse(&self) -> Result<NewTenant, ApiError> {
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

fn tenant_body(tenant: &Tenant) -> Result<Value, ApiError> {
    serde_json::to_value(tenant).map_err(ApiError::internal)
}

/// What a tenant's own users see: no platform internals (ARNs carry the account id, the
/// endpoint is a private address, failure reasons quote infrastructure errors).
fn tenant_view_for_its_users(tenant: &Tenant) -> Result<Value, ApiError> {
    let mut body = tenant_body(tenant)?;
    if let Some(object) = body.as_object_mut() {
        object.remove("failure_reason");
        object.remove("version");
        object.remove("secret_arn");
    }
    if let Some(container) = body.get_mut("container").and_then(Value::as_object_mut) {
        for internal in ["cluster_arn", "task_arn", "task_definition_arn", "endpoint"] {
            container.remove(internal);
        }
    }
    Ok(body)
}

/// The platform's staff see everything; anyone else the tenant's own view.
fn view_for(caller: &dotmac_domain::Caller, tenant: &Tenant) -> Result<Value, ApiError> {
    if authorize(caller, Resource::Tenant, Action::Read, Target::default()).is_ok() {
        tenant_body(tenant)
    } else {
        tenant_view_for_its_users(tenant)
    }
}

async fn create_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Json(request): Json<CreateTenantRequest>,
) -> Result<Response, ApiError> {
    let mut new = request.parse()?;
    if new.partner_id.is_none() {
        new.partner_id = caller.partner_id.clone();
    }
    authorize(&caller, Resource::Tenant, Action::Create, Target::default().partner(new.partner_id.as_ref()))?;
    let canonical = serde_json::to_vec(&request).map_err(ApiError::internal)?;
    let fingerprint = request_fingerprint("POST", "/v1/tenants", &canonical);
    let scope = format!("tenants#{}", caller.user_id);
    let request_ref = headers
        .get(dotmac_http::idempotency::IDEMPOTENCY_KEY_HEADER)
        .and_then(|key| key.to_str().ok())
        .map(|key| format!("{scope}#{key}#{fingerprint}"));
    idempotent(&state.store, &scope, &headers, &fingerprint, || onboard(&state, &caller, new, request_ref))
        .await
}

/// `request_ref` names the keyed request (caller, Idempotency-Key, body) doing the work.
async fn onboard(
    state: &TenantsState,
    caller: &Caller,
    new: NewTenant,
    request_ref: Option<String>,
) -> Result<(StatusCode, Value), ApiError> {
    if state.store.get_plan(&new.plan).await?.is_none() {
        return Err(ApiError::invalid_field("plan", format!("no plan {} exists", new.plan)));
    }
    let tenant = Tenant::onboard(new, OffsetDateTime::now_utc());
    match state.store.fenced(caller.fence()).create_tenant(&tenant, request_ref.as_deref()).await {
        Ok(()) => {}
        Err(StoreError::SlugTaken(slug)) => {
            return retried_onboarding(state, caller, &slug, request_ref.as_deref())
                .await?
                .ok_or_else(|| StoreError::SlugTaken(slug).into());
        }
        Err(error) => return Err(error.into()),
    }
    let job = ProvisioningJob::ProvisionTenant { tenant_id: tenant.id };
    if let Err(error) = state.provisioning.enqueue(job).await {
        // Without its job the tenant would sit in `provisioning` forever: take it back so the
        // client's retry starts clean.
        if let Err(undo) = state.store.delete_new_tenant(&tenant).await {
            tracing::error!(tenant_id = %tenant.id, error = %undo, "tenant left without a provisioning job");
        }
        return Err(ApiError::unavailable("sqs", error));
    }
    tracing::info!(tenant_id = %tenant.id, slug = %tenant.slug, "tenant onboarded; provisioning queued");
    Ok((StatusCode::ACCEPTED, view_for(caller, &tenant)?))
}

/// The same keyed request ran before and created this slug's tenant, but its response was
/// never saved (it crashed in between): answer with that tenant, and queue its job again in
/// case that was what was lost (the provisioner takes duplicates in its stride).
async fn retried_onboarding(
    state: &TenantsState,
    caller: &Caller,
    slug: &str,
    request_ref: Option<&str>,
) -> Result<Option<(StatusCode, Value)>, ApiError> {
    let Some(request_ref) = request_ref else { return Ok(None) };
    let Some((id, Some(created_by))) = state.store.slug_claim(slug).await? else { return Ok(None) };
    if created_by != request_ref {
        return Ok(None);
    }
    let Some(tenant) = state.store.fenced(caller.fence()).get_tenant(id).await? else { return Ok(None) };
    if tenant.status == dotmac_domain::TenantStatus::Provisioning {
        state
            .provisioning
            .enqueue(ProvisioningJob::ProvisionTenant { tenant_id: id })
            .await
            .map_err(|e| ApiError::unavailable("sqs", e))?;
    }
    tracing::info!(tenant_id = %id, "retried onboarding recognised; answering with its tenant");
    Ok(Some((StatusCode::ACCEPTED, view_for(caller, &tenant)?)))
}

fn parse_tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(ApiError::from)
}

async fn get_tenant(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_tenant_id(&id)?;
    let tenant = readable_tenant(&state, &caller, id).await?;
    Ok(axum::Json(view_for(&caller, &tenant)?))
}

/// The tenant, if the caller may read it: its own, one its partner brought, or any for the
/// platform's staff.
async fn readable_tenant(state: &TenantsState, caller: &Caller, id: TenantId) -> Result<Tenant, ApiError> {
    let direct = authorize(caller, Resource::Tenant, Action::Read, Target::tenant(id));
    if let (Err(denied), None) = (&direct, &caller.partner_id) {
        return Err(denied.clone().into());
    }
    // A partner's reach depends on what the tenant records, so it is read first (through the
    // partner's fence, which refuses other partners' tenants on its own).
    let tenant = state
        .store
        .fenced(caller.fence())
        .get_tenant(id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see"))?;
    authorize(
        caller,
        Resource::Tenant,
        Action::Read,
        Target::tenant(id).partner(tenant.partner_id.as_ref()),
    )?;
    Ok(tenant)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthReport {
    status: HealthStatus,
    #[serde(default)]
    detail: Option<String>,
}

/// A tenant's container reports its health with its machine token (or an admin on its
/// behalf). Only the newest report is kept.
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

async fn latest_health(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let id = parse_tenant_id(&id)?;
    authorize(&caller, Resource::Health, Action::Read, Target::tenant(id))?;
    let heartbeat = state.store.fenced(caller.fence()).latest_heartbeat(id).await?;
    Ok(axum::Json(json!({ "tenant_id": id, "latest": heartbeat })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
}

const DEFAULT_PAGE: i32 = 20;
const MAX_PAGE: i32 = 100;

async fn list_tenants(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(raw) => raw.parse::<i32>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            ApiError::invalid_field("limit", format!("must be a whole number from 1 to {MAX_PAGE}"))
        })?,
    };
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
            .map(|t| view_for(&caller, t))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(axum::Json(json!({ "items": items, "next_cursor": page.next_cursor })));
    }
    // A tenant-scoped caller sees the one tenant it belongs to.
    let own = caller.tenant_id.ok_or_else(|| {
        ApiError::from(dotmac_domain::Denied { resource: Resource::Tenant, action: Action::Read })
    })?;
    authorize(&caller, Resource::Tenant, Action::Read, Target::tenant(own))?;
    let items = match (query.cursor, state.store.fenced(caller.fence()).get_tenant(own).await?) {
        (None, Some(tenant)) => vec![tenant_view_for_its_users(&tenant)?],
        _ => Vec::new(),
    };
    Ok(axum::Json(json!({ "items": items, "next_cursor": null })))
}
