//! What the payments routes answer, built field by field from the records.

use dotmac_billing::MoneyView;
use dotmac_domain::BillingStanding;
use dotmac_store::{Dunning, DunningEntry, DunningStatus, InvoiceRecord, Payment};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// The answer to Stripe.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    pub received: bool,
    /// `applied`, `unchanged` (its payment already had that answer or a final one),
    /// `duplicate` (this event was applied before) or `ignored` (not one we act on).
    pub outcome: String,
}

/// One attempt at charging an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    /// `<invoice id>_<attempt>`.
    pub id: String,
    pub invoice_id: String,
    pub attempt: u32,
    pub amount: MoneyView,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub stripe_customer_id: String,
    pub stripe_payment_intent_id: Option<String>,
    /// On a failure: Stripe's decline code (`card_declined`, `insufficient_funds`, ...) or
    /// `no_payment_method`.
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: String,
    /// When the attempt got its final answer.
    pub processed_at: Option<String>,
}

impl PaymentView {
    pub fn of(payment: &Payment) -> Self {
        PaymentView {
            id: payment.id.clone(),
            invoice_id: payment.invoice_id.clone(),
            attempt: payment.attempt,
            amount: MoneyView::of(payment.amount),
            status: payment.status.as_str().to_owned(),
            stripe_customer_id: payment.stripe_customer_id.clone(),
            stripe_payment_intent_id: payment.stripe_payment_intent_id.clone(),
            failure_code: payment.failure_code.clone(),
            failure_message: payment.failure_message.clone(),
            created_at: rfc3339(payment.created_at),
            processed_at: payment.processed_at.map(rfc3339),
        }
    }
}

/// One entry of a dunning's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct DunningEntryView {
    /// `started` (the payment failed), `step` (a scheduled step: a retry, and the tenant
    /// degraded) or `cleared` (a payment ended it).
    pub kind: String,
    pub step: u32,
    pub standing: BillingStanding,
    /// The charge attempt a step queued.
    pub attempt: Option<u32>,
    pub at: String,
}

/// An invoice's dunning: where it stands and every step so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct DunningView {
    pub status: DunningStatus,
    /// The last step made (0: started by the failure).
    pub step: u32,
    /// The standing this invoice holds its tenant at (`current` once cleared).
    pub standing: BillingStanding,
    pub started_at: String,
    /// When the next step is due, if one is left.
    pub next_at: Option<String>,
    pub history: Vec<DunningEntryView>,
}

impl DunningView {
    pub fn of(dunning: &Dunning) -> Self {
        let entry = |e: &DunningEntry| DunningEntryView {
            kind: e.kind.clone(),
            step: e.step,
            standing: e.standing,
            attempt: e.attempt,
            at: rfc3339(e.at),
        };
        DunningView {
            status: dunning.status,
            step: dunning.step,
            standing: dunning.standing,
            started_at: rfc3339(dunning.started_at),
            next_at: dunning.next_at.map(rfc3339),
            history: dunning.history.iter().map(entry).collect(),
        }
    }
}

/// An invoice's payment status, its attempts and its dunning: the invoice's payment history.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePaymentsView {
    pub invoice_id: String,
    /// `open`, `paid`, `failed` or `refunded`; none while the invoice is a draft.
    pub payment_status: Option<String>,
    pub items: Vec<PaymentView>,
    /// The dunning a failed payment started, if any (kept, `cleared`, once paid).
    pub dunning: Option<DunningView>,
}

impl InvoicePaymentsView {
    pub fn of(invoice: &InvoiceRecord, payments: &[Payment], dunning: Option<&Dunning>) -> Self {
        InvoicePaymentsView {
            invoice_id: invoice.id.clone(),
            payment_status: invoice.payment_status.map(|s| s.as_str().to_owned()),
            items: payments.iter().map(PaymentView::of).collect(),
            dunning: dunning.map(DunningView::of),
        }
    }
}
