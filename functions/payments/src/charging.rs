//! The payments use cases: charge a finalized invoice (the billing queue's `ChargeInvoice`),
//! apply a verified Stripe webhook, read an invoice's attempts. Plain functions over the
//! store and the Stripe client; the HTTP handlers and the worker only call them.
//!
//! Charging one attempt, each step safe to repeat:
//! 1. the invoice must be finalized and not paid (else the charge is simply done);
//! 2. the tenant's Stripe customer: read from the store, or created with the idempotency key
//!    `dotmac-customer-<tenant>` and kept with a create-if-absent write (a race or a retry
//!    finds the first one; Stripe answers a repeated create with the same customer);
//! 3. the attempt is recorded `pending` with the payment method it charges, before Stripe is
//!    asked (a retry reads it back and sends exactly the same request);
//! 4. one PaymentIntent, confirmed off-session, under `dotmac-charge-<invoice>-<attempt>`:
//!    a redelivered job gets Stripe's stored answer, never a second charge;
//! 5. the answer decides the attempt and the invoice (`Store::decide_payment`) — or the
//!    webhook does, whichever comes first; the other changes nothing.

use std::collections::HashMap;

use dotmac_billing::Period;
use dotmac_domain::TenantId;
use dotmac_store::{
    AttemptStatus, Decided, Decision, InvoiceStatus, Payment, PaymentStatus, Store, StoreError,
    StripeEventRecord, invoice_id, parse_payment_id, payment_id,
};
use dotmac_stripe::{
    Charge, ChargeOutcome, DEFAULT_TOLERANCE_SECONDS, IntentEventKind, SignatureError, Stripe,
    StripeCallError, WebhookEvent,
};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("no invoice {0}")]
    NoInvoice(String),
    #[error("Stripe is not configured (DOTMAC_STRIPE_SECRET_KEY / DOTMAC_STRIPE_WEBHOOK_SECRET)")]
    NotConfigured,
    #[error("the webhook's signature is not valid: {0}")]
    Signature(#[from] SignatureError),
    #[error("the webhook's body is not a Stripe event: {0}")]
    NotAnEvent(String),
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    /// The lifecycle or the provisioning queue could not take a dunning move: retried.
    #[error("dunning could not reach the tenant's lifecycle: {0}")]
    Lifecycle(String),
    /// Recording a refund Stripe reported (`charge.refunded`) failed.
    #[error(transparent)]
    Refund(Box<crate::refunds::RefundError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::refunds::RefundError> for PaymentsError {
    fn from(error: crate::refunds::RefundError) -> Self {
        use crate::refunds::RefundError;
        match error {
            RefundError::Store(error) => PaymentsError::Store(error),
            RefundError::Stripe(error) => PaymentsError::Stripe(error),
            RefundError::NotConfigured => PaymentsError::NotConfigured,
            other => PaymentsError::Refund(Box::new(other)),
        }
    }
}

/// What one `ChargeInvoice` came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    Paid,
    Failed {
        code: String,
    },
    /// Stripe's answer is not final; the webhook will decide.
    Pending,
    /// Nothing was charged: the invoice was paid already, or has nothing to charge.
    NothingToDo,
}

/// What a webhook delivery did (the answer's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It moved a payment (and its invoice).
    Applied,
    /// Its payment already had that answer or a stronger one (out of order, or the job's
    /// own answer came first).
    Unchanged,
    /// This event id was applied before.
    Duplicate,
    /// Not an event we act on, or about a payment this platform never made.
    Ignored,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Applied => "applied",
            Applied::Unchanged => "unchanged",
            Applied::Duplicate => "duplicate",
            Applied::Ignored => "ignored",
        }
    }
}

#[derive(Clone)]
pub struct Payments {
    pub store: Store,
    /// `None` when no secret key is configured: charges wait (retried, then dead-lettered).
    pub stripe: Option<Stripe>,
    /// The webhook endpoint's signing secret (`whsec_...`).
    pub webhook_secret: Option<String>,
    /// What a decided payment moves (`crate::dunning`).
    pub dunning: crate::dunning::DunningSettings,
}

impl std::fmt::Debug for Payments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payments").field("stripe", &self.stripe.is_some()).finish_non_exhaustive()
    }
}

/// The idempotency key of a tenant's customer creation.
pub fn customer_key(tenant: TenantId) -> String {
    format!("dotmac-customer-{tenant}")
}

/// The idempotency key of an attempt's charge.
pub fn charge_key(tenant: TenantId, period: Period, attempt: u32) -> String {
    format!("dotmac-charge-{}-{attempt}", invoice_id(tenant, period))
}

impl Payments {
    fn stripe(&self) -> Result<&Stripe, PaymentsError> {
        self.stripe.as_ref().ok_or(PaymentsError::NotConfigured)
    }

    /// The tenant's Stripe customer, created on first need (see the module's step 2).
    pub async fn customer(&self, tenant: TenantId, now: OffsetDateTime) -> Result<String, PaymentsError> {
        if let Some(id) = self.store.stripe_customer(tenant).await? {
            return Ok(id);
        }
        let name = self
            .store
            .get_tenant(tenant)
            .await?
            .map(|t| t.name.to_string())
            .unwrap_or_else(|| tenant.to_string());
        let created =
            self.stripe()?.create_customer(&tenant.to_string(), &name, &customer_key(tenant)).await?;
        let kept = self.store.keep_stripe_customer(tenant, &created, now).await?;
        if kept != created {
            // Only if the stored id was written by a creation under another key (never by us).
            tracing::warn!(%tenant, kept, created, "the tenant already had another Stripe customer; keeping it");
        }
        Ok(kept)
    }

    /// One `ChargeInvoice`: attempt `attempt` at the tenant's invoice of `period`.
    pub async fn charge_invoice(
        &self,
        tenant: TenantId,
        period: Period,
        attempt: u32,
        now: OffsetDateTime,
    ) -> Result<Charged, PaymentsError> {
        let id = invoice_id(tenant, period);
        let invoice = self
            .store
            .get_invoice(tenant, period)
            .await?
            .ok_or_else(|| PaymentsError::NoInvoice(id.clone()))?;
        if invoice.status != InvoiceStatus::Finalized {
            return Err(PaymentsError::NoInvoice(id));
        }
        if matches!(
            invoice.payment_status,
            Some(PaymentStatus::Paid | PaymentStatus::Refunded | PaymentStatus::PartiallyRefunded)
        ) {
            // Paid by another attempt or a webhook: its dunning (if any) is cleared.
            self.follow_payment(tenant, period, now).await?;
            self.store.clear_charge_due(tenant, period).await?;
            return Ok(Charged::NothingToDo);
        }
        let amount = invoice.content.total;
        if amount.minor <= 0 {
            self.store.settle_without_charge(tenant, period, now).await?;
            self.store.clear_charge_due(tenant, period).await?;
            return Ok(Charged::NothingToDo);
        }
        let payment = match self.store.get_payment(tenant, period, attempt).await? {
            Some(existing) => existing,
            None => {
                let customer = self.customer(tenant, now).await?;
                let method = self.stripe()?.default_payment_method(&customer).await?;
                let fresh = Payment {
                    id: payment_id(tenant, period, attempt),
                    invoice_id: id.clone(),
                    tenant_id: tenant,
                    period,
                    attempt,
                    amount,
                    status: AttemptStatus::Pending,
                    stripe_customer_id: customer,
                    stripe_payment_method_id: method,
                    stripe_payment_intent_id: None,
                    failure_code: None,
                    failure_message: None,
                    created_at: now,
                    processed_at: None,
                    decided_by_event: None,
                    version: 1,
                };
                self.store.begin_payment(&fresh).await?
            }
        };
        match payment.status {
            AttemptStatus::Succeeded => {
                self.follow_payment(tenant, period, now).await?;
                self.store.clear_charge_due(tenant, period).await?;
                return Ok(Charged::Paid);
            }
            AttemptStatus::Failed => {
                self.follow_payment(tenant, period, now).await?;
                self.store.clear_charge_due(tenant, period).await?;
                return Ok(Charged::Failed { code: payment.failure_code.clone().unwrap_or_default() });
            }
            AttemptStatus::Pending => {}
        }
        let Some(method) = payment.stripe_payment_method_id.as_deref() else {
            // Nothing Stripe could charge: the attempt fails without a request (dunning asks
            // the tenant for a card and retries).
            let decision = Decision::Failed {
                payment_intent: None,
                code: "no_payment_method".into(),
                message: "the tenant's Stripe customer has no default payment method".into(),
            };
            self.store.decide_payment(&payment, &decision, None, now).await?;
            self.follow_payment(tenant, period, now).await?;
            self.store.clear_charge_due(tenant, period).await?;
            return Ok(Charged::Failed { code: "no_payment_method".into() });
        };
        let metadata = HashMap::from([
            ("payment_id".to_owned(), payment.id.clone()),
            ("invoice_id".to_owned(), id.clone()),
            ("tenant_id".to_owned(), tenant.to_string()),
            ("attempt".to_owned(), attempt.to_string()),
        ]);
        let currency = payment.amount.currency.to_string();
        let outcome = self
            .stripe()?
            .charge(Charge {
                customer: &payment.stripe_customer_id,
                payment_method: method,
                amount: payment.amount.minor,
                currency: &currency,
                description: format!("DotMac invoice {id}"),
                metadata,
                idempotency_key: &charge_key(tenant, period, attempt),
            })
            .await?;
        let charged = match outcome {
            ChargeOutcome::Succeeded { payment_intent } => {
                let decision = Decision::Succeeded { payment_intent: Some(payment_intent) };
                self.store.decide_payment(&payment, &decision, None, now).await?;
                Charged::Paid
            }
            ChargeOutcome::Declined { payment_intent, code, message } => {
                let decision = Decision::Failed { payment_intent, code: code.clone(), message };
                self.store.decide_payment(&payment, &decision, None, now).await?;
                Charged::Failed { code }
            }
            ChargeOutcome::Pending { payment_intent, status } => {
                tracing::info!(payment = payment.id, status, "Stripe has not decided yet; the webhook will");
                self.store.note_payment_intent(&payment, &payment_intent).await?;
                return Ok(Charged::Pending);
            }
        };
        // Before the charge-due item goes: a crash here leaves the job to run again, and it
        // finds the attempt decided and follows it then.
        self.follow_payment(tenant, period, now).await?;
        self.store.clear_charge_due(tenant, period).await?;
        Ok(charged)
    }

    /// Applies one webhook delivery: verified (`Stripe-Signature`), deduplicated by event id,
    /// then its payment decided. Safe in any order and any number of times.
    pub async fn apply_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<Applied, PaymentsError> {
        let secret = self.webhook_secret.as_deref().ok_or(PaymentsError::NotConfigured)?;
        dotmac_stripe::verify(signature, body, secret, now.unix_timestamp(), DEFAULT_TOLERANCE_SECONDS)?;
        let event = WebhookEvent::parse(body).map_err(|e| PaymentsError::NotAnEvent(e.to_string()))?;
        if self.store.stripe_event(&event.id).await?.is_some() {
            return Ok(Applied::Duplicate);
        }
        let outcome = self.decide_from(&event, now).await?;
        let record = StripeEventRecord {
            event_id: event.id.clone(),
            kind: event.kind.clone(),
            outcome: outcome.as_str().to_owned(),
            received_at: now,
        };
        // Recorded after applying: a crash in between leaves the event to be applied again on
        // Stripe's redelivery, which changes nothing the first time did not.
        if !self.store.record_stripe_event(&record).await? {
            return Ok(Applied::Duplicate);
        }
        Ok(outcome)
    }

    async fn decide_from(&self, event: &WebhookEvent, now: OffsetDateTime) -> Result<Applied, PaymentsError> {
        if let Some(charge) = event.refunded_charge().map_err(|e| PaymentsError::NotAnEvent(e.to_string()))? {
            return Ok(match self.import_refunds(&charge, now).await? {
                crate::refunds::ImportedRefunds::NotOurs => Applied::Ignored,
                crate::refunds::ImportedRefunds::Recorded(0) => Applied::Unchanged,
                crate::refunds::ImportedRefunds::Recorded(_) => Applied::Applied,
            });
        }
        let Some(intent) = event.intent().map_err(|e| PaymentsError::NotAnEvent(e.to_string()))? else {
            return Ok(Applied::Ignored);
        };
        let Some((tenant, period, attempt)) =
            intent.metadata.get("payment_id").and_then(|id| parse_payment_id(id))
        else {
            return Ok(Applied::Ignored);
        };
        let Some(payment) = self.store.get_payment(tenant, period, attempt).await? else {
            return Ok(Applied::Ignored);
        };
        let same_money = payment.amount.minor == intent.amount
            && payment.amount.currency.to_string().eq_ignore_ascii_case(&intent.currency);
        let same_intent =
            payment.stripe_payment_intent_id.as_deref().is_none_or(|pi| pi == intent.payment_intent);
        if !same_money || !same_intent {
            tracing::warn!(
                payment = payment.id,
                event = event.id,
                "a webhook about another charge than this attempt's; ignored"
            );
            return Ok(Applied::Ignored);
        }
        let decision = match intent.kind {
            IntentEventKind::Succeeded => {
                Decision::Succeeded { payment_intent: Some(intent.payment_intent.clone()) }
            }
            IntentEventKind::Failed => {
                let (code, message) =
                    intent.failure.clone().unwrap_or_else(|| ("payment_failed".into(), String::new()));
                Decision::Failed { payment_intent: Some(intent.payment_intent.clone()), code, message }
            }
        };
        // The charge-due item stays: the next sweep's job finds the attempt decided and takes
        // it off (so this function needs no DeleteItem).
        let decided = self.store.decide_payment(&payment, &decision, Some(&event.id), now).await?;
        // Whichever answer came first, the invoice's dunning follows its payment state (an
        // error here leaves the event unrecorded: Stripe's redelivery follows it again).
        self.follow_payment(tenant, period, now).await?;
        Ok(match decided {
            Decided::Applied => Applied::Applied,
            Decided::Unchanged => Applied::Unchanged,
        })
    }

    /// Every attempt at an invoice, first first.
    pub async fn payments_of(&self, tenant: TenantId, period: Period) -> Result<Vec<Payment>, PaymentsError> {
        Ok(self.store.invoice_payments(tenant, period).await?)
    }
}
