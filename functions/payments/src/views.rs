//! What the payments routes answer, built field by field from the records.

use dotmac_billing::MoneyView;
use dotmac_store::{InvoiceRecord, Payment};
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

/// An invoice's payment status and its attempts.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePaymentsView {
    pub invoice_id: String,
    /// `open`, `paid`, `failed` or `refunded`; none while the invoice is a draft.
    pub payment_status: Option<String>,
    pub items: Vec<PaymentView>,
}

impl InvoicePaymentsView {
    pub fn of(invoice: &InvoiceRecord, payments: &[Payment]) -> Self {
        InvoicePaymentsView {
            invoice_id: invoice.id.clone(),
            payment_status: invoice.payment_status.map(|s| s.as_str().to_owned()),
            items: payments.iter().map(PaymentView::of).collect(),
        }
    }
}
