//! The payments function: Stripe's webhooks (`POST /v1/webhooks/stripe`, public: Stripe
//! signs, we verify) and an invoice's payment attempts (`GET /v1/invoices/{id}/payments`);
//! and the charge of a finalized invoice (`PaymentsWorker`, the billing queue's
//! `ChargeInvoice`). Handlers parse, authorize, call a use case of `charging` and answer a
//! view; the use cases' errors map to `ApiError` here, once.

pub mod charging;
pub mod dunning;
pub mod views;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use dotmac_billing::Period;
use dotmac_domain::{Action, Resource, Target, TenantId, authorize};
use dotmac_http::error::ErrorEnvelope;
use dotmac_http::{Access, ApiError, ApiRoutes, Bearer, ErrorCode, Path, Routes, routes, tenant_in_reach};
use dotmac_queue::{BillingJob, Delivery, JobError, JobHandler};
use dotmac_store::{Also, Store, parse_invoice_id};
use dotmac_tokens::JwtKeys;
use serde_json::json;
use std::sync::Arc;
use time::OffsetDateTime;

pub use charging::{Applied, Charged, Payments, PaymentsError};
pub use dunning::{BoxFuture, DunningRun, DunningSettings, NonPaymentSuspension, Stepped, SuspensionError};
pub use views::{DunningEntryView, DunningView, InvoicePaymentsView, PaymentView, WebhookAnswer};

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
            PaymentsError::Store(error) => error.into(),
        }
    }
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
    let parsed = parse_invoice_id(&id);
    let admitted = bearer.admit(&state.store, parsed.map(|(tenant, _)| Also::Tenant(tenant))).await?;
    let Some((tenant_id, period)) = parsed else {
        // Refused first when the caller may read no invoices at all, as for a real id.
        if !admitted.caller.has_global_scope() {
            authorize(&admitted.caller, Resource::Invoice, Action::Read, Target::default())?;
        }
        return Err(invoice_not_found());
    };
    let tenant = tenant_in_reach(&admitted.caller, Resource::Invoice, tenant_id, admitted.tenant)
        .map_err(|e| if e.code == ErrorCode::TenantNotFound { invoice_not_found() } else { e })?;
    let fenced = state.store.fenced(admitted.caller.fence());
    let invoice = fenced.get_invoice(&tenant, period).await?.ok_or_else(invoice_not_found)?;
    let payments = fenced.invoice_payments(&tenant, period).await?;
    let dunning = fenced.invoice_dunning(&tenant, period).await?;
    Ok(axum::Json(InvoicePaymentsView::of(&invoice, &payments, dunning.as_ref())))
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
