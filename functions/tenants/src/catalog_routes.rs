//! The catalogue's routes (`/v1/plans`, `/v1/bundles`) and a tenant's subscriptions
//! (`/v1/tenants/{id}/bundles`, `/v1/tenants/{id}/plan`): parse, authorize, call the use case
//! (`catalog`, `subscriptions`), answer a view.

use axum::extract::State;
use axum::http::StatusCode;
use dotmac_billing::{Bundle, Price};
use dotmac_domain::{Action, Caller, PlanId, Resource, Target, TaskSize, Tenant, TenantId, authorize};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{ApiError, Authenticated, Bearer, ErrorCode, Json, Path, tenant_in_reach};
use dotmac_store::{Also, BundleSpan, PlanSpan, PriceVersion};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::TenantsState;
use crate::catalog::{self, CatalogError, PlanPrices};
use crate::subscriptions::{Changed, Subscribing, SubscriptionError};

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Denied(denied) => denied.into(),
            CatalogError::PlanNotFound(plan) => {
                ApiError::new(ErrorCode::PlanNotFound, format!("no plan {plan}"))
            }
            CatalogError::Invalid { field, reason } => ApiError::invalid_field(field, reason),
            exists @ CatalogError::PlanExists(_) => {
                ApiError::new(ErrorCode::AlreadyExists, exists.to_string())
            }
            CatalogError::VersionConflict { plan, expected, current } => ApiError::new(
                ErrorCode::VersionConflict,
                format!("the price of {plan} changed: it is at version {current}"),
            )
            .with_details(json!({ "expected": expected, "current": current })),
            CatalogError::Store(error) => error.into(),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(error: SubscriptionError) -> Self {
        match error {
            SubscriptionError::Denied(denied) => denied.into(),
            SubscriptionError::BundleNotFound(code) => {
                ApiError::new(ErrorCode::BundleNotFound, format!("no bundle {code}"))
            }
            SubscriptionError::PlanNotFound(plan) => {
                ApiError::invalid_field("plan", format!("no plan {plan} exists"))
            }
            held @ SubscriptionError::NotSubscribed(_) => {
                ApiError::new(ErrorCode::SubscriptionNotFound, held.to_string())
            }
            SubscriptionError::TenantGone => {
                ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see")
            }
            busy @ SubscriptionError::Contended => {
                ApiError::new(ErrorCode::VersionConflict, busy.to_string())
            }
            SubscriptionError::QueueUnavailable(cause) => ApiError::unavailable("sqs", cause),
            SubscriptionError::Store(error) => error.into(),
        }
    }
}

impl TenantsState {
    fn subscribing(&self) -> Subscribing {
        Subscribing { store: self.store.clone(), provisioning: self.provisioning.clone() }
    }
}

// ---- schemas of the billing types (the types themselves live in the pure billing crate) ----

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = TierMode)]
#[serde(rename_all = "snake_case")]
enum TierModeSchema {
    /// Each tier's price applies to the customers within it.
    Graduated,
    /// The tier the whole count falls in prices every customer.
    Volume,
}

/// One tier: customers up to `up_to` (inclusive; `null` for the last, unbounded tier).
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Tier)]
struct TierSchema {
    #[schema(minimum = 1, maximum = 100_000_000)]
    up_to: Option<u64>,
    #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,6})?$")]
    unit_price: String,
    /// Charged once when the count reaches the tier (none by default).
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,6})?$")]
    flat_fee: String,
}

/// How customers are priced: tiers (graduated or volume), or packages of `size` customers.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = PerCustomer)]
#[serde(tag = "model", rename_all = "snake_case")]
enum PerCustomerSchema {
    Tiered {
        mode: TierModeSchema,
        /// 1 to 20 tiers, bounds rising, only the last unbounded.
        #[schema(min_items = 1, max_items = 20)]
        tiers: Vec<TierSchema>,
    },
    Package {
        #[schema(minimum = 1, maximum = 100_000_000)]
        size: u64,
        #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,6})?$")]
        package_price: String,
    },
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Aggregation)]
#[serde(rename_all = "snake_case")]
enum AggregationSchema {
    Max,
    Latest,
    Average,
}

/// A plan's price, in one currency (amounts in major units, as decimal strings).
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = Price)]
struct PriceSchema {
    /// ISO 4217, three capital letters.
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: String,
    per_customer: PerCustomerSchema,
    /// The least a month costs (none by default).
    #[serde(default)]
    #[schema(pattern = r"^[0-9]{1,12}(\.[0-9]{1,6})?$")]
    monthly_minimum: String,
    /// How a period's reports make its billable count (`max` by default).
    #[serde(default)]
    aggregation: AggregationSchema,
}

pub use dotmac_billing::MoneyView;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

// ---- plans and prices ----

/// One version of a plan's price.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceVersionView {
    pub version: u32,
    /// The first period (`YYYY-MM`, UTC) it prices.
    #[schema(example = "2027-04")]
    pub effective_from: String,
    #[schema(value_type = PriceSchema)]
    pub price: Price,
}

impl PriceVersionView {
    fn of(version: &PriceVersion) -> Self {
        PriceVersionView {
            version: version.version,
            effective_from: version.effective_from.to_string(),
            price: version.price.clone(),
        }
    }
}

/// A plan, the price in force now and the versions scheduled after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub task_size: TaskSize,
    /// In force this period (`null` only for a plan priced from a later period on).
    pub current_price: Option<PriceVersionView>,
    /// Versions taking effect in later periods, soonest first.
    pub scheduled_prices: Vec<PriceVersionView>,
}

impl PlanView {
    fn of(plan: &PlanPrices) -> Self {
        PlanView {
            id: plan.plan.id.to_string(),
            name: plan.plan.name.clone(),
            description: plan.plan.description.clone(),
            task_size: plan.plan.task_size,
            current_price: plan.current.as_ref().map(PriceVersionView::of),
            scheduled_prices: plan.scheduled.iter().map(PriceVersionView::of).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    pub items: Vec<PlanView>,
}

fn plan_id(raw: &str) -> Result<PlanId, ApiError> {
    PlanId::parse(raw).map_err(|_| ApiError::new(ErrorCode::PlanNotFound, format!("no plan {raw}")))
}

/// The plans, each with its price in force and the ones scheduled.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "catalogue",
    operation_id = "list_plans",
    responses((status = 200, description = "Every plan", body = PlanList))
)]
pub async fn list_plans(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<PlanList>, ApiError> {
    let plans = catalog::list_plans(&state.store, &caller, OffsetDateTime::now_utc()).await?;
    Ok(axum::Json(PlanList { items: plans.iter().map(PlanView::of).collect() }))
}

/// One plan with its price versions: the one in force and those scheduled.
#[utoipa::path(
    get,
    path = "/v1/plans/{id}",
    tag = "catalogue",
    operation_id = "get_plan",
    params(("id" = String, Path, description = "The plan's id (`usage`, ...)")),
    responses(
        (status = 200, description = "The plan", body = PlanView),
        (status = 404, description = "`PLAN_NOT_FOUND`", body = ErrorEnvelope),
    )
)]
pub async fn get_plan(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<PlanView>, ApiError> {
    catalog::may_read(&caller)?;
    let id = plan_id(&id)?;
    let plan = catalog::get_plan(&state.store, &caller, &id, OffsetDateTime::now_utc()).await?;
    Ok(axum::Json(PlanView::of(&plan)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanRequest {
    /// 1–40 of `a-z`, `0-9` and `-`.
    #[schema(min_length = 1, max_length = 40, pattern = "^[a-z0-9-]{1,40}$")]
    id: String,
    #[schema(min_length = 1, max_length = 80)]
    name: String,
    #[serde(default)]
    #[schema(max_length = 500)]
    description: String,
    /// A Fargate cpu/memory pair (256/512, 512/1024, 1024/2048, ...).
    task_size: TaskSize,
    /// Its first price, in force from the current period.
    #[schema(value_type = PriceSchema)]
    price: Price,
}

/// Create a plan with its first price (platform staff). The same definition again answers
/// the plan (200); another definition under its id is a 409.
#[utoipa::path(
    post,
    path = "/v1/plans",
    tag = "catalogue",
    operation_id = "create_plan",
    request_body = CreatePlanRequest,
    responses(
        (status = 201, description = "Created", body = PlanView),
        (status = 200, description = "The same plan was created before", body = PlanView),
        (status = 409, description = "`ALREADY_EXISTS`: a plan with this id and another definition", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` naming the field (`task_size` not a Fargate pair, `price` tiers not rising, ...)", body = ErrorEnvelope),
    )
)]
pub async fn create_plan(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Json(request): Json<CreatePlanRequest>,
) -> Result<(StatusCode, axum::Json<PlanView>), ApiError> {
    catalog::may_change(&caller, Action::Create)?;
    let plan = catalog::new_plan(&request.id, &request.name, &request.description, request.task_size)?;
    let (plan, created) =
        catalog::create_plan(&state.store, &caller, plan, request.price, OffsetDateTime::now_utc()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(PlanView::of(&plan))))
}

/// The highest version number a request may name.
const MAX_VERSION: u32 = 1_000_000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceChangeRequest {
    #[schema(value_type = PriceSchema)]
    price: Price,
    /// The version this change is based on: if the plan's latest version is another, the
    /// change is refused (409) rather than replacing one the caller has not seen.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1_000_000)]
    expected_version: Option<u32>,
}

/// A new price version (platform staff): it takes effect from the next period (UTC month),
/// never the current one. The same change again answers the version it made (200).
#[utoipa::path(
    post,
    path = "/v1/plans/{id}/prices",
    tag = "catalogue",
    operation_id = "change_plan_price",
    params(("id" = String, Path, description = "The plan's id")),
    request_body = PriceChangeRequest,
    responses(
        (status = 201, description = "The new version", body = PriceVersionView),
        (status = 200, description = "The same change was made before: its version", body = PriceVersionView),
        (status = 404, description = "`PLAN_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`VERSION_CONFLICT`: another change came first (`details.current`)", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` naming `price` (tier bounds not rising, ...)", body = ErrorEnvelope),
    )
)]
pub async fn change_price(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(request): Json<PriceChangeRequest>,
) -> Result<(StatusCode, axum::Json<PriceVersionView>), ApiError> {
    catalog::may_change(&caller, Action::Update)?;
    if request.expected_version.is_some_and(|v| !(1..=MAX_VERSION).contains(&v)) {
        return Err(ApiError::invalid_field("expected_version", "must be a version from 1 to 1,000,000"));
    }
    let id = plan_id(&id)?;
    let (version, created) = catalog::change_price(
        &state.store,
        &caller,
        &id,
        request.price,
        request.expected_version,
        OffsetDateTime::now_utc(),
    )
    .await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(PriceVersionView::of(&version))))
}

// ---- bundles ----

#[derive(Debug, Serialize, ToSchema)]
pub struct BundleView {
    pub code: String,
    pub name: String,
    pub description: String,
    pub monthly: MoneyView,
}

impl BundleView {
    fn of(bundle: &Bundle) -> Self {
        BundleView {
            code: bundle.code.clone(),
            name: bundle.name.clone(),
            description: bundle.description.clone(),
            monthly: MoneyView::of(bundle.monthly),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BundleList {
    pub items: Vec<BundleView>,
}

/// The bundle catalogue: monthly flat add-ons.
#[utoipa::path(
    get,
    path = "/v1/bundles",
    tag = "catalogue",
    operation_id = "list_bundles",
    responses((status = 200, description = "Every bundle", body = BundleList))
)]
pub async fn list_bundles(
    State(state): State<TenantsState>,
    Authenticated(caller): Authenticated,
) -> Result<axum::Json<BundleList>, ApiError> {
    let bundles = catalog::list_bundles(&state.store, &caller).await?;
    Ok(axum::Json(BundleList { items: bundles.iter().map(BundleView::of).collect() }))
}

// ---- a tenant's subscriptions ----

/// A bundle subscription: held from `from` until `to` (`null` while held), at the monthly
/// price it had when added.
#[derive(Debug, Serialize, ToSchema)]
pub struct BundleSubscriptionView {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub bundle: String,
    pub name: String,
    pub monthly: MoneyView,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: Option<String>,
}

impl BundleSubscriptionView {
    fn of(tenant: TenantId, span: &BundleSpan) -> Self {
        BundleSubscriptionView {
            tenant_id: tenant,
            bundle: span.bundle.clone(),
            name: span.name.clone(),
            monthly: MoneyView::of(span.monthly),
            from: rfc3339(span.from),
            to: span.to.map(rfc3339),
        }
    }
}

/// A plan span: the plan held from `from` until `to` (`null` while held).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanSubscriptionView {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub plan: String,
    #[schema(format = DateTime)]
    pub from: String,
    #[schema(format = DateTime)]
    pub to: Option<String>,
}

impl PlanSubscriptionView {
    fn of(tenant: TenantId, span: &PlanSpan) -> Self {
        PlanSubscriptionView {
            tenant_id: tenant,
            plan: span.plan_id.to_string(),
            from: rfc3339(span.from),
            to: span.to.map(rfc3339),
        }
    }
}

/// A tenant's bundles: those it holds now, and every span (ended ones included) for the
/// record.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantBundles {
    #[schema(value_type = String, format = Uuid)]
    pub tenant_id: TenantId,
    pub items: Vec<BundleSubscriptionView>,
    pub history: Vec<BundleSubscriptionView>,
    pub plans: Vec<PlanSubscriptionView>,
}

/// The tenant, for a change of its subscriptions by `caller`: anyone but a partner is
/// refused before learning whether it exists (as `tenant_in_reach` does for reads).
fn tenant_to_change(
    caller: &Caller,
    action: Action,
    id: TenantId,
    found: Option<Tenant>,
) -> Result<Tenant, ApiError> {
    let direct = authorize(caller, Resource::Subscription, action, Target::tenant(id));
    if let (Err(denied), None) = (&direct, &caller.partner_id) {
        return Err(denied.clone().into());
    }
    found.ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see"))
}

fn bundle_code(raw: &str) -> Result<&str, ApiError> {
    if Bundle::is_code(raw) {
        Ok(raw)
    } else {
        Err(ApiError::new(ErrorCode::BundleNotFound, format!("no bundle {raw}")))
    }
}

/// The bundles a tenant holds, and its subscription history.
#[utoipa::path(
    get,
    path = "/v1/tenants/{id}/bundles",
    tag = "subscriptions",
    operation_id = "list_tenant_bundles",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    responses(
        (status = 200, description = "Its bundles", body = TenantBundles),
        (status = 404, description = "`TENANT_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
pub async fn tenant_bundles(
    State(state): State<TenantsState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<axum::Json<TenantBundles>, ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_in_reach(&admitted.caller, Resource::Subscription, id, admitted.tenant)?;
    let held = state.subscribing().read(&admitted.caller, &tenant).await?;
    Ok(axum::Json(TenantBundles {
        tenant_id: id,
        items: held
            .bundles
            .iter()
            .filter(|s| s.to.is_none())
            .map(|s| BundleSubscriptionView::of(id, s))
            .collect(),
        history: held.bundles.iter().map(|s| BundleSubscriptionView::of(id, s)).collect(),
        plans: held.plans.iter().map(|s| PlanSubscriptionView::of(id, s)).collect(),
    }))
}

/// Subscribe the tenant to a bundle from now (prorated by day on its invoice). Adding one it
/// holds answers the running subscription (200).
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/bundles/{bundle}",
    tag = "subscriptions",
    operation_id = "add_tenant_bundle",
    params(
        ("id" = String, Path, format = Uuid, description = "The tenant's id"),
        ("bundle" = String, Path, description = "The bundle's code (`crm`, `project-management`, `ai`)"),
    ),
    responses(
        (status = 201, description = "Subscribed", body = BundleSubscriptionView),
        (status = 200, description = "Already subscribed: the running subscription", body = BundleSubscriptionView),
        (status = 404, description = "`TENANT_NOT_FOUND` or `BUNDLE_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`VERSION_CONFLICT`: the tenant kept changing under the request; retry", body = ErrorEnvelope),
    )
)]
pub async fn add_bundle(
    State(state): State<TenantsState>,
    bearer: Bearer,
    Path((id, bundle)): Path<(String, String)>,
) -> Result<(StatusCode, axum::Json<BundleSubscriptionView>), ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_to_change(&admitted.caller, Action::Create, id, admitted.tenant)?;
    let bundle = bundle_code(&bundle)?;
    let Changed { span, created } =
        state.subscribing().add_bundle(&admitted.caller, tenant, bundle, OffsetDateTime::now_utc()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(BundleSubscriptionView::of(id, &span))))
}

/// End the tenant's subscription to a bundle now. One it does not hold (never, or no longer)
/// is a 404 `SUBSCRIPTION_NOT_FOUND`.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{id}/bundles/{bundle}",
    tag = "subscriptions",
    operation_id = "remove_tenant_bundle",
    params(
        ("id" = String, Path, format = Uuid, description = "The tenant's id"),
        ("bundle" = String, Path, description = "The bundle's code"),
    ),
    responses(
        (status = 200, description = "The ended subscription", body = BundleSubscriptionView),
        (status = 404, description = "`TENANT_NOT_FOUND`, `BUNDLE_NOT_FOUND` or `SUBSCRIPTION_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`VERSION_CONFLICT`: the tenant kept changing under the request; retry", body = ErrorEnvelope),
    )
)]
pub async fn remove_bundle(
    State(state): State<TenantsState>,
    bearer: Bearer,
    Path((id, bundle)): Path<(String, String)>,
) -> Result<axum::Json<BundleSubscriptionView>, ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    let tenant = tenant_to_change(&admitted.caller, Action::Delete, id, admitted.tenant)?;
    let bundle = bundle_code(&bundle)?;
    let ended = state
        .subscribing()
        .remove_bundle(&admitted.caller, tenant, bundle, OffsetDateTime::now_utc())
        .await?;
    Ok(axum::Json(BundleSubscriptionView::of(id, &ended)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChangeRequest {
    /// The plan's id.
    #[schema(min_length = 1, max_length = 40, pattern = "^[a-z0-9-]{1,40}$")]
    plan: String,
}

/// Move the tenant to another plan from now (platform staff; prorated by day on its
/// invoice). Its current plan again answers the running plan span (200).
#[utoipa::path(
    post,
    path = "/v1/tenants/{id}/plan",
    tag = "subscriptions",
    operation_id = "change_tenant_plan",
    params(("id" = String, Path, format = Uuid, description = "The tenant's id")),
    request_body = PlanChangeRequest,
    responses(
        (status = 201, description = "Changed: the new plan span", body = PlanSubscriptionView),
        (status = 200, description = "Already on that plan: the running span", body = PlanSubscriptionView),
        (status = 404, description = "`TENANT_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`VERSION_CONFLICT`: the tenant kept changing under the request; retry", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` naming `plan` (no such plan)", body = ErrorEnvelope),
    )
)]
pub async fn change_plan(
    State(state): State<TenantsState>,
    bearer: Bearer,
    Path(id): Path<String>,
    Json(request): Json<PlanChangeRequest>,
) -> Result<(StatusCode, axum::Json<PlanSubscriptionView>), ApiError> {
    let id = TenantId::parse(&id).map_err(ApiError::from)?;
    let admitted = bearer.admit(&state.store, Some(Also::Tenant(id))).await?;
    // Platform staff's: refused before anything about the tenant is told.
    authorize(&admitted.caller, Resource::Plan, Action::Update, Target::default())?;
    let tenant = admitted
        .tenant
        .ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, "no such tenant where you can see"))?;
    let plan = PlanId::parse(&request.plan).map_err(ApiError::from)?;
    let Changed { span, created } =
        state.subscribing().change_plan(&admitted.caller, tenant, &plan, OffsetDateTime::now_utc()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(PlanSubscriptionView::of(id, &span))))
}
