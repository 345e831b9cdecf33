//! The billing function: billing runs (`POST /v1/billing/runs`, `GET /v1/billing/runs/{id}`),
//! invoices (`GET /v1/invoices`, `GET /v1/invoices/{id}`, its printable page
//! `GET /v1/invoices/{id}/html`, `POST /v1/invoices/{id}/finalize`) and a tenant's upcoming invoice (`GET /v1/tenants/{id}/invoices/upcoming`); and the billing
//! worker (`worker::BillingWorker`) with the schedules (`Billing::scheduled_run`,
//! `Billing::finalize_due`). Handlers parse, authorize, call a use case of `invoicing` and
//! answer a view; the use cases' errors map to `ApiError` here, once.

pub mod inputs;
pub mod invoicing;
pub mod printable;
pub mod views;
pub mod worker;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use dotmac_billing::Period;
use dotmac_domain::{Action, Denied, Resource, Target, TenantId, authorize};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{
    Access, ApiError, ApiRoutes, Authenticated, Bearer, ErrorCode, Json, Page, Path, Routes,
    page::page_limit, routes, tenant_in_reach,
};
use dotmac_store::{Also, InvoiceFilter, InvoiceStatus, Store, parse_invoice_id};
use dotmac_tokens::JwtKeys;
use serde::Deserialize;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

pub use invoicing::{Billing, BillingError};
pub use views::{BillingRunView, InvoiceView};
pub use worker::BillingWorker;

impl From<BillingError> for ApiError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::Denied(denied) => denied.into(),
            BillingError::Invalid(field, reason) => ApiError::invalid_field(field, reason),
            BillingError::NoRun(id) => {
                ApiError::new(ErrorCode::BillingRunNotFound, format!("no billing run {id}"))
            }
            BillingError::NoInvoice(id) => invoice_not_found(&id),
            unbillable @ BillingError::Unbillable(_) => ApiError::internal(unbillable),
            BillingError::Store(error) => error.into(),
            BillingError::Queue(error) => ApiError::unavailable("sqs", error),
        }
    }
}

/// The id is not repeated: it names a tenant, and an answer never names one the caller may
/// not see.
fn invoice_not_found(_id: &str) -> ApiError {
    ApiError::new(ErrorCode::InvoiceNotFound, "no such invoice where you can see")
}

#[derive(Clone)]
pub struct BillingState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
    pub billing: Billing,
}

dotmac_http::bearer_state!(BillingState);

pub fn routes() -> Routes<BillingState> {
    Routes::new()
        .route(Access::Authenticated, routes!(open_run))
        .route(Access::Authenticated, routes!(get_run))
        .route(Access::Authenticated, routes!(list_invoices))
        .route(Access::Authenticated, routes!(get_invoice))
        .route(Access::Authenticated, routes!(invoice_page))
        .route(Access::Authenticated, routes!(finalize_invoice))
        .route(Access::Authenticated, routes!(upcoming_invoice))
}

pub fn router(state: BillingState) -> ApiRoutes {
    routes().with_state(state)
}

fn parse_period(raw: &str) -> Result<Period, ApiError> {
    Period::parse(raw).map_err(|e| ApiError::invalid_field("period", e.to_string()))
}

/// Open a billing run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRun {
    /// `YYYY-MM`; the period just ended by default. The current period is allowed: its
    /// invoices are drafts that later runs recompute in place.
    #[serde(default)]
    #[schema(pattern = r"^([2-9][0-9]{3})-(0[1-9]|1[0-2])$")]
    period: Option<String>,
    /// Only these tenants (at most 100); every active tenant by default.
    #[serde(default)]
    #[schema(max_items = 100)]
    tenant_ids: Option<Vec<uuid::Uuid>>,
}

/// Open a billing run (platform admins): recorded, `billing.cycle_started` in the outbox, one
/// invoice job per tenant queued by its fan-out.
#[utoipa::path(
    post,
    path = "/v1/billing/runs",
    tag = "billing",
    operation_id = "open_billing_run",
    request_body = NewRun,
    responses(
        (status = 202, description = "The run is open; its jobs are being queued", body = BillingRunView),
    )
)]
async fn open_run(
    State(state): State<BillingState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<serde_json::Value>,
) -> Result<(StatusCode, axum::Json<BillingRunView>), ApiError> {
    // Refused before the body is looked at: only platform staff learn what it would do.
    if !caller.has_global_scope() {
        return Err(Denied { resource: Resource::Invoice, action: Action::Create }.into());
    }
    // An object only: serde would read a struct from a JSON array too (`[null, null]`).
    if !body.is_object() {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "the body must be a JSON object"));
    }
    let body: NewRun = serde_json::from_value(body)
        .map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.to_string()))?;
    let period = body.period.as_deref().map(parse_period).transpose()?;
    let tenant_ids = body
        .tenant_ids
        .unwrap_or_default()
        .iter()
        .map(|id| TenantId::parse_field(&id.to_string(), "tenant_ids").map_err(ApiError::from))
        .collect::<Result<Vec<_>, _>>()?;
    let run = state.billing.open_run(&caller, period, tenant_ids, OffsetDateTime::now_utc()).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(BillingRunView::of(&run, &[]))))
}

/// A billing run's progress: tenants total, invoiced, failed (with reasons).
#[utoipa::path(
    get,
    path = "/v1/billing/runs/{id}",
    tag = "billing",
    operation_id = "get_billing_run",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = BillingRunView),
        (status = 404, description = "`BILLING_RUN_NOT_FOUND`", body = ErrorEnvelope),
    )
)]
async fn get_run(
    State(state): State<BillingState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<BillingRunView>, ApiError> {
    if !caller.has_global_scope() {
        return Err(Denied { resource: Resource::Invoice, action: Action::Read }.into());
    }
    if id.is_empty() || id.len() > 64 {
        return Err(BillingError::NoRun(id).into());
    }
    let (run, failures) = state.billing.run(&caller, &id).await?;
    Ok(axum::Json(BillingRunView::of(&run, &failures)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// One tenant's invoices (a tenant's admins: their own, the default).
    #[param(format = Uuid)]
    tenant_id: Option<String>,
    /// `draft` or `finalized`.
    #[param(pattern = "^(draft|finalized)$")]
    status: Option<String>,
    /// `YYYY-MM`.
    #[param(pattern = r"^([2-9][0-9]{3})-(0[1-9]|1[0-2])$")]
    period: Option<String>,
    /// Items per page, 1–100 (default 20).
    #[param(value_type = Option<i32>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` from the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// Invoices, newest period first: one tenant's (`tenant_id`; a tenant's admins see theirs),
/// or every tenant's for platform admins, or a partner's tenants'.
#[utoipa::path(
    get,
    path = "/v1/invoices",
    tag = "billing",
    operation_id = "list_invoices",
    params(InvoiceQuery),
    responses(
        (status = 200, description = "One page", body = Page<InvoiceView>),
        (status = 404, description = "`TENANT_NOT_FOUND`: no such tenant where the caller can see", body = ErrorEnvelope),
    )
)]
async fn list_invoices(
    State(state): State<BillingState>,
    bearer: Bearer,
    query: Result<Query<InvoiceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Page<InvoiceView>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    let named = query.tenant_id.as_deref().map(|raw| TenantId::parse_field(raw, "tenant_id")).transpose()?;
    let admitted = bearer.admit(&state.store, named.map(Also::Tenant)).await?;
    let caller = admitted.caller;
    let limit = page_limit(query.limit.as_deref())?;
    let filter = InvoiceFilter {
        status: match query.status.as_deref() {
            None => None,
            Some("draft") => Some(InvoiceStatus::Draft),
            Some("finalized") => Some(InvoiceStatus::Finalized),
            Some(_) => return Err(ApiError::invalid_field("status", "must be draft or finalized")),
        },
        period: query.period.as_deref().map(parse_period).transpose()?,
    };
    let store = state.store.fenced(caller.fence());
    let cursor = query.cursor.as_deref();
    let page = match (named, &caller.partner_id) {
        (Some(id), _) => {
            let tenant = tenant_in_reach(&caller, Resource::Invoice, id, admitted.tenant)?;
            store.list_tenant_invoices(&tenant, &filter, limit, cursor).await?
        }
        (None, _) if caller.has_global_scope() => store.list_invoices(&filter, limit, cursor).await?,
        (None, Some(partner)) => {
            authorize(&caller, Resource::Invoice, Action::Read, Target::default().partner(Some(partner)))?;
            store.list_invoices(&filter, limit, cursor).await?
        }
        (None, None) => {
            let own = caller.tenant_id.ok_or_else(|| {
                ApiError::from(Denied { resource: Resource::Invoice, action: Action::Read })
            })?;
            authorize(&caller, Resource::Invoice, Action::Read, Target::tenant(own))?;
            let tenant = store.get_tenant(own).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see")
            })?;
            store.list_tenant_invoices(&tenant, &filter, limit, cursor).await?
        }
    };
    Ok(axum::Json(Page::new(page.items.iter().map(InvoiceView::of).collect(), page.next_cursor)))
}

/// Reads the invoice `id` names, if the caller may read its tenant's invoices.
async fn invoice_in_reach(
    state: &BillingState,
    bearer: Bearer,
    id: &str,
) -> Result<(dotmac_domain::Caller, dotmac_store::InvoiceRecord), ApiError> {
    let readable = dotmac_http::readable_invoice(&state.store, bearer, id, || invoice_not_found(id)).await?;
    Ok((readable.caller, readable.invoice))
}

/// One invoice with its line items.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}",
    tag = "billing",
    operation_id = "get_invoice",
    params(("id" = String, Path, description = "The invoice's id (`<tenant id>_<YYYY-MM>`)")),
    responses(
        (status = 200, description = "The invoice", body = InvoiceView),
        (status = 404, description = "`INVOICE_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn get_invoice(
    State(state): State<BillingState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<axum::Json<InvoiceView>, ApiError> {
    let (_, invoice) = invoice_in_reach(&state, bearer, &id).await?;
    Ok(axum::Json(InvoiceView::of(&invoice)))
}

/// One invoice as a page a person can print: the same invoice and the same readers as
/// `GET /v1/invoices/{id}`, as HTML (every value escaped; no script).
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/html",
    tag = "billing",
    operation_id = "get_invoice_html",
    params(("id" = String, Path, description = "The invoice's id (`<tenant id>_<YYYY-MM>`)")),
    responses(
        (status = 200, description = "The invoice as an HTML page", content_type = "text/html", body = String),
        (status = 404, description = "`INVOICE_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn invoice_page(
    State(state): State<BillingState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (_, invoice) = invoice_in_reach(&state, bearer, &id).await?;
    Ok(printable::page(&InvoiceView::of(&invoice)))
}

/// Finalize a draft now (platform admins; e.g. a tenant's final invoice): recomputed a last
/// time and numbered. A finalized invoice is answered as it is.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/finalize",
    tag = "billing",
    operation_id = "finalize_invoice",
    params(("id" = String, Path, description = "The invoice's id (`<tenant id>_<YYYY-MM>`)")),
    responses(
        (status = 200, description = "The finalized invoice", body = InvoiceView),
        (status = 404, description = "`INVOICE_NOT_FOUND`", body = ErrorEnvelope),
    )
)]
async fn finalize_invoice(
    State(state): State<BillingState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<InvoiceView>, ApiError> {
    if !caller.has_global_scope() {
        return Err(Denied { resource: Resource::Invoice, action: Action::Update }.into());
    }
    let (tenant, period) = parse_invoice_id(&id).ok_or_else(|| invoice_not_found(&id))?;
    let invoice = state.billing.finalize_early(&caller, tenant, period, OffsetDateTime::now_utc()).await?;
    Ok(axum::Json(InvoiceView::of(&invoice)))
}

/// What the current period would cost now (computed from the reports so far, not stored).
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/invoices/upcoming",
    tag = "billing",
    operation_id = "get_upcoming_invoice",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    responses(
        (status = 200, description = "The current period's invoice as it stands", body = InvoiceView),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn upcoming_invoice(
    State(state): State<BillingState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<axum::Json<InvoiceView>, ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_in_reach(&admitted.caller, Resource::Invoice, id, admitted.tenant)?;
    let store = state.store.fenced(admitted.caller.fence());
    let invoice = state.billing.upcoming(store, &tenant, OffsetDateTime::now_utc()).await?;
    Ok(axum::Json(InvoiceView::upcoming(&invoice)))
}
