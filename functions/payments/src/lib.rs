//! The payments function: Stripe's webhooks (`POST /v1/webhooks/stripe`, public: Stripe
//! signs, we verify) and an invoice's payment attempts (`GET /v1/invoices/{id}/payments`);
//! and the charge of a finalized invoice (`PaymentsWorker`, the billing queue's
//! `ChargeInvoice`). Handlers parse, authorize, call a use case of `charging` and answer a
//! view; the use cases' errors map to `ApiError` here, once.

pub mod charging;
pub mod dunning;
pub mod partners;
pub mod refunds;
pub mod views;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use dotmac_billing::{CommissionRates, Money, Period};
use dotmac_domain::{Action, Caller, Denied, Email, PartnerId, PlanId, Resource, TenantId, TenantName};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::idempotency::IdempotencyKeyHeader;
use dotmac_http::{
    Access, ApiError, ApiRoutes, Authenticated, Bearer, ErrorCode, Idempotent, Json, Path, ReadableInvoice,
    Routes, idempotency_key, idempotent, readable_invoice, request_fingerprint, routes,
};
use dotmac_queue::{BillingJob, Delivery, JobError, JobHandler};
use dotmac_store::{Store, parse_invoice_id};
use dotmac_tokens::JwtKeys;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

pub use charging::{Applied, Charged, Payments, PaymentsError};
pub use dunning::{BoxFuture, DunningRun, DunningSettings, NonPaymentSuspension, Stepped, SuspensionError};
pub use partners::{NewPartner, PartnerChanges, Partners, PartnersError, Statement};
pub use refunds::{RefundAsked, RefundError, refund_key};
pub use views::{
    CommissionEntryView, CommissionStatementView, CreditNoteView, CreditNotesView, DunningEntryView,
    DunningView, InvoicePaymentsView, PartnerView, PaymentView, RefundView, WebhookAnswer,
};

impl From<PaymentsError> for ApiError {
    fn from(error: PaymentsError) -> Self {
        match error {
            PaymentsError::NoInvoice(_) => invoice_not_found(),
            PaymentsError::Signature(reason) => {
                ApiError::new(ErrorCode::WebhookSignatureInvalid, reason.to_string())
                    .with_details(json!({ "reason": reason.reason() }))
            }
            PaymentsError::NotAnEvent(reason) => ApiError::new(ErrorCode::MalformedRequest, reason),
            PaymentsError::NotConfigured => {
                ApiError::unavailable("stripe", "no webhook secret is configured")
            }
            PaymentsError::Stripe(error) => ApiError::unavailable("stripe", error),
            PaymentsError::Lifecycle(error) => ApiError::unavailable("lifecycle", error),
            PaymentsError::Refund(error) => (*error).into(),
            PaymentsError::Store(error) => error.into(),
        }
    }
}

impl From<PartnersError> for ApiError {
    fn from(error: PartnersError) -> Self {
        match error {
            PartnersError::Invalid(invalid) => invalid.into(),
            PartnersError::Denied(denied) => denied.into(),
            PartnersError::NotFound(_) => partner_not_found(),
            PartnersError::Exists(id) => {
                ApiError::new(ErrorCode::AlreadyExists, format!("a partner {id} exists already"))
                    .with_details(json!({ "field": "id" }))
            }
            PartnersError::VersionConflict(expected) => ApiError::new(
                ErrorCode::VersionConflict,
                "the partner changed since it was read; read it again",
            )
            .with_details(json!({ "expected_version": expected })),
            PartnersError::Store(error) => error.into(),
        }
    }
}

impl From<RefundError> for ApiError {
    fn from(error: RefundError) -> Self {
        match error {
            RefundError::NoInvoice(_) => invoice_not_found(),
            RefundError::NotPaid(id) => {
                ApiError::new(ErrorCode::InvoiceNotPaid, format!("invoice {id} has no payment to refund"))
            }
            RefundError::Exceeds { requested, refundable } => ApiError::new(
                ErrorCode::RefundExceedsPaid,
                "a refund cannot exceed what was paid less earlier refunds",
            )
            .with_details(json!({ "field": "amount", "requested": requested, "refundable": refundable })),
            RefundError::Raced => ApiError::new(
                ErrorCode::VersionConflict,
                "another refund of the invoice was recorded meanwhile; ask again",
            ),
            RefundError::NotConfigured => {
                ApiError::unavailable("stripe", "no Stripe secret key is configured")
            }
            RefundError::Refused(reason) => {
                ApiError::new(ErrorCode::RefundRefused, format!("Stripe refused the refund: {reason}"))
            }
            RefundError::Stripe(error) => ApiError::unavailable("stripe", error),
            RefundError::Store(error) => error.into(),
        }
    }
}

fn partner_not_found() -> ApiError {
    ApiError::new(ErrorCode::PartnerNotFound, "no such partner where you can see")
}

fn invoice_not_found() -> ApiError {
    ApiError::new(ErrorCode::InvoiceNotFound, "no such invoice where you can see")
}

#[derive(Clone)]
pub struct PaymentsState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
    pub payments: Payments,
}

dotmac_http::bearer_state!(PaymentsState);

pub fn routes() -> Routes<PaymentsState> {
    Routes::new()
        .route(Access::Public, routes!(stripe_webhook))
        .route(Access::Authenticated, routes!(invoice_payments))
        .route(Access::Authenticated, routes!(refund_invoice))
        .route(Access::Authenticated, routes!(invoice_credit_notes))
        .route(Access::Authenticated, routes!(create_partner))
        .route(Access::Authenticated, routes!(get_partner))
        .route(Access::Authenticated, routes!(update_partner))
        .route(Access::Authenticated, routes!(partner_commissions))
}

impl PaymentsState {
    fn partners(&self) -> Partners {
        Partners { store: self.store.clone() }
    }
}

pub fn router(state: PaymentsState) -> ApiRoutes {
    routes().with_state(state)
}

/// A Stripe webhook (Stripe calls it; nobody else can sign one). The raw body is verified
/// against `Stripe-Signature` before it is read; an event is applied once whatever the
/// number of deliveries, and in any order.
#[utoipa::path(
    post,
    path = "/v1/webhooks/stripe",
    tag = "payments",
    operation_id = "stripe_webhook",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix time>,v1=<hex HMAC-SHA256>`, as Stripe signs")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, as Stripe sent it"),
    responses(
        (status = 200, description = "Received (applied, or already applied, or not one we act on)", body = WebhookAnswer),
        (status = 400, description = "`WEBHOOK_SIGNATURE_INVALID` (missing, malformed, wrong, or older than 300 s) or `MALFORMED_REQUEST`", body = ErrorEnvelope),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: no webhook secret configured", body = ErrorEnvelope),
    )
)]
async fn stripe_webhook(
    State(state): State<PaymentsState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<WebhookAnswer>, ApiError> {
    // A header that is not text cannot be a signature.
    let signature = match headers.get("stripe-signature") {
        None => None,
        Some(value) => Some(
            value.to_str().map_err(|_| PaymentsError::Signature(dotmac_stripe::SignatureError::Malformed))?,
        ),
    };
    let outcome = state.payments.apply_webhook(signature, &body, OffsetDateTime::now_utc()).await?;
    Ok(axum::Json(WebhookAnswer { received: true, outcome: outcome.as_str().to_owned() }))
}

/// An invoice's payment history: its payment status, every attempt at charging it (first
/// attempt first) and its dunning's steps.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/payments",
    tag = "payments",
    operation_id = "list_invoice_payments",
    params(("id" = String, Path, description = "The invoice's id (`<tenant id>_<YYYY-MM>`)")),
    responses(
        (status = 200, description = "The invoice's payments", body = InvoicePaymentsView),
        (status = 404, description = "`INVOICE_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn invoice_payments(
    State(state): State<PaymentsState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<axum::Json<InvoicePaymentsView>, ApiError> {
    let ReadableInvoice { fenced, tenant, invoice, .. } =
        readable_invoice(&state.store, bearer, &id, invoice_not_found).await?;
    let period = invoice.period;
    let payments = fenced.invoice_payments(&tenant, period).await?;
    let dunning = fenced.invoice_dunning(&tenant, period).await?;
    Ok(axum::Json(InvoicePaymentsView::of(&invoice, &payments, dunning.as_ref())))
}

/// Refund a paid invoice.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; everything still refundable (paid less earlier refunds) when absent.
    /// (A JSON number with no fraction, `476.0` too, is a whole amount.)
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100_000_000_000_i64)]
    pub amount: Option<serde_json::Number>,
    /// Why (shown on the credit note).
    #[schema(schema_with = dotmac_http::schema::name)]
    pub reason: String,
}

/// The tenant and period an invoice id in a path names, for a caller admitted with it.
fn invoice_of(id: &str) -> Result<(TenantId, Period), ApiError> {
    parse_invoice_id(id).ok_or_else(invoice_not_found)
}

/// Refunds a paid invoice, fully or in part, through Stripe (platform staff only): records a
/// numbered credit note the tenant sees, moves the invoice to `refunded` or
/// `partially_refunded`, and claws back the refunded share of its partner's commission.
#[utoipa::path(
    post,
    path = "/v1/invoices/{id}/refunds",
    tag = "payments",
    operation_id = "refund_invoice",
    params(("id" = String, Path, description = "The invoice's id (`<tenant id>_<YYYY-MM>`)"), IdempotencyKeyHeader),
    request_body = RefundBody,
    responses(
        (status = 201, description = "Refunded; the credit note", body = RefundView),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 404, description = "`INVOICE_NOT_FOUND`: no finalized invoice with that id", body = ErrorEnvelope),
        (status = 409, description = "`INVOICE_NOT_PAID`, `REFUND_EXCEEDS_PAID` (more than paid less earlier refunds), `REFUND_REFUSED` (by Stripe), `VERSION_CONFLICT` or `REQUEST_IN_PROGRESS`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` or `IDEMPOTENCY_KEY_REUSED`", body = ErrorEnvelope),
        (status = 503, description = "`DEPENDENCY_UNAVAILABLE`: Stripe", body = ErrorEnvelope),
    )
)]
async fn refund_invoice(
    State(state): State<PaymentsState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<RefundBody>,
) -> Result<Idempotent<RefundView>, ApiError> {
    // A refund moves platform money: no tenant or partner scope reaches it.
    if !caller.has_global_scope() {
        return Err(Denied { resource: Resource::Payment, action: Action::Update }.into());
    }
    let (tenant, period) = invoice_of(&id)?;
    let reason =
        TenantName::parse(&body.reason).map_err(|e| ApiError::invalid_field("reason", e.reason))?.to_string();
    let amount = match &body.amount {
        None => None,
        Some(number) => Some(
            number
                .as_i64()
                .or_else(|| number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e12).map(|f| f as i64))
                .filter(|a| (1..=100_000_000_000).contains(a))
                .ok_or_else(|| ApiError::invalid_field("amount", "must be 1 to 100000000000 minor units"))?,
        ),
    };
    let canonical = serde_json::to_vec(&body).map_err(ApiError::internal)?;
    let path = format!("/v1/invoices/{id}/refunds");
    let fingerprint = request_fingerprint("POST", &path, &canonical);
    let scope = format!("refunds#{}#{id}", caller.user_id);
    // The same request retried reaches Stripe under the same key, whatever was recorded
    // meanwhile (a webhook may have recorded the refund a crashed first try made).
    let request_key = idempotency_key(&headers)
        .filter(|key| !key.is_empty())
        .map(|key| request_fingerprint("REFUND", &scope, key.as_bytes()));
    let asked = RefundAsked { amount, reason, requested_by: caller.user_id.clone(), request_key };
    idempotent(&state.store, &scope, &headers, &fingerprint, || async {
        let note = state.payments.refund(tenant, period, &asked, OffsetDateTime::now_utc()).await?;
        let status = state
            .store
            .get_invoice(tenant, period)
            .await?
            .and_then(|i| i.payment_status)
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        let view = RefundView {
            credit_note: CreditNoteView::of(&note),
            payment_status: status,
            commission_reversed: note.commission_reversed.map(dotmac_billing::MoneyView::of),
        };
        Ok((StatusCode::CREATED, view))
    })
    .await
}

/// An invoice's credit notes (its refunds), first first: the tenant's admins see their own.
#[utoipa::path(
    get,
    path = "/v1/invoices/{id}/credit-notes",
    tag = "payments",
    operation_id = "list_invoice_credit_notes",
    params(("id" = String, Path, description = "The invoice's id (`<tenant id>_<YYYY-MM>`)")),
    responses(
        (status = 200, description = "The invoice's credit notes", body = CreditNotesView),
        (status = 404, description = "`INVOICE_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn invoice_credit_notes(
    State(state): State<PaymentsState>,
    bearer: Bearer,
    Path(id): Path<String>,
) -> Result<axum::Json<CreditNotesView>, ApiError> {
    let ReadableInvoice { fenced, tenant, invoice, .. } =
        readable_invoice(&state.store, bearer, &id, invoice_not_found).await?;
    let period = invoice.period;
    let notes = fenced.credit_notes(&tenant, period).await?;
    Ok(axum::Json(CreditNotesView {
        invoice_id: invoice.id.clone(),
        refunded: dotmac_billing::MoneyView::of(Money::new(invoice.refunded_minor, invoice.content.currency)),
        items: notes.iter().map(CreditNoteView::of).collect(),
    }))
}

/// A new partner (reseller).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPartnerBody {
    /// What its staff and tenants name it by (`partner_id`).
    #[schema(schema_with = dotmac_http::schema::partner_id)]
    pub id: String,
    #[schema(schema_with = dotmac_http::schema::name)]
    pub name: String,
    #[schema(schema_with = dotmac_http::schema::email)]
    pub contact_email: String,
    /// The default commission on its tenants' paid invoices, a percentage.
    #[schema(schema_with = views::rate_schema)]
    pub commission_rate: String,
    /// Per-plan overrides: plan id → percentage (at most 50; a key naming no plan never
    /// applies).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = views::plan_rates_schema)]
    pub plan_rates: Option<BTreeMap<String, String>>,
}

/// A change of a partner: each field given replaces the stored one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartnerChangesBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = dotmac_http::schema::name)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = dotmac_http::schema::email)]
    pub contact_email: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = views::rate_schema)]
    pub commission_rate: Option<String>,
    /// Replaces every per-plan override (`{}` clears them).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = views::plan_rates_schema)]
    pub plan_rates: Option<BTreeMap<String, String>>,
    /// The version the change was made against: refused with `VERSION_CONFLICT` if the
    /// partner has moved on since.
    /// (A JSON number with no fraction, `3.0` too, is a whole version.)
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = u64, minimum = 1, maximum = 1_000_000_000_i64)]
    pub version: Option<serde_json::Number>,
}

fn plan_rates(
    raw: Option<&BTreeMap<String, String>>,
) -> Result<Option<BTreeMap<String, dotmac_billing::CommissionRate>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.len() > 50 {
        return Err(ApiError::invalid_field("plan_rates", "at most 50 plans"));
    }
    let mut rates = BTreeMap::new();
    for (plan, rate) in raw {
        // A key that is no plan id can never match an invoice line's plan: kept as given.
        let plan = PlanId::parse(plan).map_or_else(|_| plan.clone(), |p| p.to_string());
        rates.insert(plan, partners::parse_rate(rate, "plan_rates")?);
    }
    Ok(Some(rates))
}

/// A JSON number with no fraction (`476` or `476.0`), 1 to 10^11.
fn whole(number: &serde_json::Number, field: &str) -> Result<i64, ApiError> {
    number
        .as_i64()
        .or_else(|| number.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e12).map(|f| f as i64))
        .filter(|n| (1..=100_000_000_000).contains(n))
        .ok_or_else(|| ApiError::invalid_field(field, "must be a whole number from 1 to 100000000000"))
}

/// A field that may be left out but, when given, is not `null` (as the schema says).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

fn parse_partner_id(raw: &str) -> Result<PartnerId, ApiError> {
    // A malformed id names no partner: the same answer as an unknown one.
    PartnerId::parse(raw).map_err(|_| partner_not_found())
}

/// Refuses, before the id is even parsed, anyone who could reach no partner at all (so
/// a malformed id tells a tenant's user nothing the policy would not).
fn may_reach_partners(caller: &Caller, resource: Resource, action: Action) -> Result<(), ApiError> {
    if caller.has_global_scope() || (caller.partner_id.is_some() && action == Action::Read) {
        return Ok(());
    }
    Err(Denied { resource, action }.into())
}

/// Creates a partner (platform staff only).
#[utoipa::path(
    post,
    path = "/v1/partners",
    tag = "partners",
    operation_id = "create_partner",
    request_body = NewPartnerBody,
    responses(
        (status = 201, description = "Created", body = PartnerView),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 409, description = "`ALREADY_EXISTS`: a partner has that id", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` (naming the field)", body = ErrorEnvelope),
    )
)]
async fn create_partner(
    State(state): State<PaymentsState>,
    Authenticated(caller): Authenticated,
    Json(body): Json<NewPartnerBody>,
) -> Result<(StatusCode, axum::Json<PartnerView>), ApiError> {
    may_reach_partners(&caller, Resource::Partner, Action::Create)?;
    let new = NewPartner {
        id: PartnerId::parse(&body.id)?,
        name: TenantName::parse(&body.name)?,
        contact_email: Email::parse_field(&body.contact_email, "contact_email")?,
        rates: CommissionRates {
            default: partners::parse_rate(&body.commission_rate, "commission_rate")?,
            per_plan: plan_rates(body.plan_rates.as_ref())?.unwrap_or_default(),
        },
    };
    let partner = state.partners().create(&caller, new, OffsetDateTime::now_utc()).await?;
    Ok((StatusCode::CREATED, axum::Json(PartnerView::of(&partner))))
}

/// One partner: platform staff any, a partner's staff their own.
#[utoipa::path(
    get,
    path = "/v1/partners/{id}",
    tag = "partners",
    operation_id = "get_partner",
    params(("id" = String, Path, description = "The partner's id")),
    responses(
        (status = 200, description = "The partner", body = PartnerView),
        (status = 403, description = "`FORBIDDEN`", body = ErrorEnvelope),
        (status = 404, description = "`PARTNER_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
    )
)]
async fn get_partner(
    State(state): State<PaymentsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<axum::Json<PartnerView>, ApiError> {
    may_reach_partners(&caller, Resource::Partner, Action::Read)?;
    let id = parse_partner_id(&id)?;
    let partner = state.partners().get(&caller, &id).await?;
    Ok(axum::Json(PartnerView::of(&partner)))
}

/// Changes a partner (platform staff only), against the version read when `version` is given.
#[utoipa::path(
    patch,
    path = "/v1/partners/{id}",
    tag = "partners",
    operation_id = "update_partner",
    params(("id" = String, Path, description = "The partner's id")),
    request_body = PartnerChangesBody,
    responses(
        (status = 200, description = "The partner as changed", body = PartnerView),
        (status = 403, description = "`FORBIDDEN`: platform staff only", body = ErrorEnvelope),
        (status = 404, description = "`PARTNER_NOT_FOUND`", body = ErrorEnvelope),
        (status = 409, description = "`VERSION_CONFLICT`", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED` (naming the field)", body = ErrorEnvelope),
    )
)]
async fn update_partner(
    State(state): State<PaymentsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    Json(body): Json<PartnerChangesBody>,
) -> Result<axum::Json<PartnerView>, ApiError> {
    may_reach_partners(&caller, Resource::Partner, Action::Update)?;
    let id = parse_partner_id(&id)?;
    let changes = PartnerChanges {
        name: body.name.as_deref().map(TenantName::parse).transpose()?,
        contact_email: body
            .contact_email
            .as_deref()
            .map(|e| Email::parse_field(e, "contact_email"))
            .transpose()?,
        commission_rate: body
            .commission_rate
            .as_deref()
            .map(|r| partners::parse_rate(r, "commission_rate"))
            .transpose()?,
        plan_rates: plan_rates(body.plan_rates.as_ref())?,
        version: body.version.as_ref().map(|v| whole(v, "version")).transpose()?.map(|v| v.unsigned_abs()),
    };
    let partner = state.partners().update(&caller, &id, changes, OffsetDateTime::now_utc()).await?;
    Ok(axum::Json(PartnerView::of(&partner)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommissionQuery {
    /// `YYYY-MM`: the month the entries were booked in (the current month by default).
    #[param(pattern = r"^([2-9][0-9]{3})-(0[1-9]|1[0-2])$")]
    period: Option<String>,
}

/// A partner's commissions booked in a month — its monthly statement: accruals on paid
/// invoices, clawbacks on refunds, and the month's totals. Platform staff any partner's; a
/// partner's staff their own.
#[utoipa::path(
    get,
    path = "/v1/partners/{id}/commissions",
    tag = "partners",
    operation_id = "list_partner_commissions",
    params(("id" = String, Path, description = "The partner's id"), CommissionQuery),
    responses(
        (status = 200, description = "The month's statement", body = CommissionStatementView),
        (status = 403, description = "`FORBIDDEN`", body = ErrorEnvelope),
        (status = 404, description = "`PARTNER_NOT_FOUND`: none the caller can see", body = ErrorEnvelope),
        (status = 422, description = "`VALIDATION_FAILED`: `period`", body = ErrorEnvelope),
    )
)]
async fn partner_commissions(
    State(state): State<PaymentsState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<CommissionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<CommissionStatementView>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::new(ErrorCode::ValidationFailed, e.body_text()))?;
    may_reach_partners(&caller, Resource::Commission, Action::Read)?;
    let id = parse_partner_id(&id)?;
    let period = match query.period.as_deref() {
        Some(raw) => Period::parse(raw).map_err(|e| ApiError::invalid_field("period", e.to_string()))?,
        None => Period::containing(OffsetDateTime::now_utc()),
    };
    let statement = state.partners().statement(&caller, &id, period).await?;
    Ok(axum::Json(CommissionStatementView::of(&statement)))
}

/// The billing queue's `ChargeInvoice` jobs.
#[derive(Debug, Clone)]
pub struct PaymentsWorker {
    pub payments: Payments,
}

impl PaymentsWorker {
    /// Runs a `ChargeInvoice`; `None` for the billing queue's other jobs (not this worker's).
    pub async fn charge(&self, job: &BillingJob, delivery: &Delivery) -> Option<Result<(), JobError>> {
        let BillingJob::ChargeInvoice { tenant_id, period, attempt } = job else { return None };
        Some(self.run(*tenant_id, period, *attempt, delivery).await)
    }

    async fn run(
        &self,
        tenant: TenantId,
        period: &str,
        attempt: u32,
        delivery: &Delivery,
    ) -> Result<(), JobError> {
        let Ok(period) = Period::parse(period) else {
            return Err(JobError::Discard(format!("{period:?} is not a period")));
        };
        if attempt == 0 {
            return Err(JobError::Discard("attempts count from 1".into()));
        }
        match self.payments.charge_invoice(tenant, period, attempt, OffsetDateTime::now_utc()).await {
            Ok(charged) => {
                tracing::info!(%tenant, %period, attempt, ?charged, "invoice charge attempted");
                Ok(())
            }
            // Not finalized (or gone): nothing can ever be charged for it.
            Err(PaymentsError::NoInvoice(id)) => Err(JobError::Discard(format!("no finalized invoice {id}"))),
            Err(error) => {
                if delivery.is_last_attempt() {
                    tracing::error!(%tenant, %period, attempt, %error, "the charge goes to the dead-letter queue");
                }
                Err(JobError::Retry(error.to_string()))
            }
        }
    }
}

impl JobHandler<BillingJob> for PaymentsWorker {
    async fn handle(&self, job: BillingJob, delivery: &Delivery) -> Result<(), JobError> {
        match self.charge(&job, delivery).await {
            Some(result) => result,
            None => Err(JobError::Retry("only ChargeInvoice jobs are the payments worker's".into())),
        }
    }
}
