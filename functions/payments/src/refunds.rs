//! Refunding a paid invoice, fully or in part (platform staff only): the money goes back
//! through Stripe, and one transaction records the credit note, the invoice's payment status
//! (`refunded` or `partially_refunded`), the `invoice.refunded` event and, when a partner
//! earned on the invoice, the clawback of the refunded share of its commission.
//!
//! Each refund has a place: its sequence among the invoice's credit notes (1, 2, ...). The
//! Stripe refund is made under `dotmac-refund-<invoice id>-<sequence>`, so a retry after a
//! lost answer or a crash before the record (the place is still free) gets Stripe's stored
//! refund, never a second one; and the credit note is created only if its place is free, so
//! two refunds racing for one place cannot both be recorded.

use std::collections::HashMap;

use dotmac_billing::{Money, Period};
use dotmac_domain::TenantId;
use dotmac_store::{
    AttemptStatus, CreditNote, InvoiceStatus, PaymentStatus, RefundRecord, Refunded, StoreError,
    credit_note_id, invoice_id,
};
use dotmac_stripe::{RefundRequest, StripeCallError};
use time::OffsetDateTime;

use crate::charging::Payments;

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("no finalized invoice {0}")]
    NoInvoice(String),
    #[error("invoice {0} has no payment to refund")]
    NotPaid(String),
    #[error("{requested} is more than the {refundable} still refundable")]
    Exceeds { requested: i64, refundable: i64 },
    #[error("another refund of the invoice was recorded meanwhile; ask again")]
    Raced,
    #[error("Stripe is not configured (DOTMAC_STRIPE_SECRET_KEY)")]
    NotConfigured,
    #[error("Stripe refused the refund: {0}")]
    Refused(String),
    #[error(transparent)]
    Stripe(StripeCallError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<StripeCallError> for RefundError {
    fn from(error: StripeCallError) -> Self {
        match error {
            StripeCallError::Refused { kind, message } => RefundError::Refused(format!("{kind}: {message}")),
            other => RefundError::Stripe(other),
        }
    }
}

/// A refund asked for.
#[derive(Debug, Clone)]
pub struct RefundAsked {
    /// Minor units; everything still refundable when `None`.
    pub amount: Option<i64>,
    pub reason: String,
    /// Who asked (the platform admin's user id), recorded on the credit note.
    pub requested_by: String,
}

/// The idempotency key of an invoice's `sequence`-th refund at Stripe.
pub fn refund_key(tenant: TenantId, period: Period, sequence: u32) -> String {
    format!("dotmac-refund-{}-{sequence}", invoice_id(tenant, period))
}

impl Payments {
    pub async fn refund(
        &self,
        tenant: TenantId,
        period: Period,
        asked: &RefundAsked,
        now: OffsetDateTime,
    ) -> Result<CreditNote, RefundError> {
        let id = invoice_id(tenant, period);
        let invoice = self
            .store
            .get_invoice(tenant, period)
            .await?
            .filter(|i| i.status == InvoiceStatus::Finalized)
            .ok_or_else(|| RefundError::NoInvoice(id.clone()))?;
        match invoice.payment_status {
            Some(PaymentStatus::Paid | PaymentStatus::PartiallyRefunded) => {}
            // Everything paid went back already: nothing is left to refund.
            Some(PaymentStatus::Refunded) => {
                return Err(RefundError::Exceeds { requested: asked.amount.unwrap_or(0), refundable: 0 });
            }
            _ => return Err(RefundError::NotPaid(id)),
        }
        // The attempt that took the money (an invoice settled without a charge has none).
        let payments = self.store.invoice_payments(tenant, period).await?;
        let Some((payment, intent)) = payments.iter().find_map(|p| {
            (p.status == AttemptStatus::Succeeded).then_some(p).zip(p.stripe_payment_intent_id.as_deref())
        }) else {
            return Err(RefundError::NotPaid(id));
        };
        let notes = self.store.credit_notes(tenant, period).await?;
        let before = invoice.refunded_minor;
        let refundable = payment.amount.minor - before;
        let amount = asked.amount.unwrap_or(refundable);
        if amount <= 0 || amount > refundable {
            return Err(RefundError::Exceeds { requested: amount, refundable });
        }
        let sequence = u32::try_from(notes.len()).unwrap_or(u32::MAX).saturating_add(1);
        let note_id = credit_note_id(tenant, period, sequence);
        let stripe = self.stripe.as_ref().ok_or(RefundError::NotConfigured)?;
        let metadata = HashMap::from([
            ("invoice_id".to_owned(), id.clone()),
            ("credit_note_id".to_owned(), note_id.clone()),
            ("tenant_id".to_owned(), tenant.to_string()),
            ("payment_id".to_owned(), payment.id.clone()),
        ]);
        let made = stripe
            .refund(RefundRequest {
                payment_intent: intent,
                amount,
                metadata,
                idempotency_key: &refund_key(tenant, period, sequence),
            })
            .await?;
        let accrual = match &invoice.partner_id {
            Some(partner) => self.store.accrual_of(partner, &id).await?,
            None => None,
        };
        let number = invoice.number.map_or_else(|| id.clone(), |n| n.to_string());
        let note = CreditNote {
            id: note_id,
            number: format!("{number}-{sequence}"),
            invoice_id: id,
            tenant_id: tenant,
            period,
            sequence,
            amount: Money::new(amount, payment.amount.currency),
            reason: asked.reason.clone(),
            stripe_refund_id: made.id.clone(),
            payment_id: payment.id.clone(),
            commission_reversed: None,
            requested_by: asked.requested_by.clone(),
            created_at: now,
        };
        let record = RefundRecord { note, refunded_before: before, paid: payment.amount.minor };
        match self.store.record_refund(&record, accrual.as_ref(), now).await? {
            Refunded::Recorded(note) => {
                tracing::info!(credit_note = note.id, amount, refund = made.id, "invoice refunded");
                Ok(note)
            }
            // The same refund recorded by an earlier try (Stripe answered it again).
            Refunded::Existed(note) if note.stripe_refund_id == made.id => Ok(note),
            Refunded::Existed(_) | Refunded::InvoiceChanged => Err(RefundError::Raced),
        }
    }
}
