//! Refunding a paid invoice, fully or in part (platform staff only): the money goes back
//! through Stripe, and one transaction records the credit note, the invoice's payment status
//! (`refunded` or `partially_refunded`), the `invoice.refunded` event and, when a partner
//! earned on the invoice, the clawback of the refunded share of its commission.
//!
//! Each refund has a place: its sequence among the invoice's credit notes (1, 2, ...), and
//! the credit note is created only if its place is free, so two refunds racing for one place
//! cannot both be recorded. The Stripe refund is made under the request's own
//! `Idempotency-Key` when it sent one, else under its place
//! (`dotmac-refund-<invoice id>-<sequence>`): either way a retry after a lost answer or a
//! crash before the record gets Stripe's stored refund, never a second one.
//!
//! Refunds made in Stripe's dashboard are recorded too: a `charge.refunded` webhook lists
//! the charge's refunds from Stripe and gives each one without a credit note its own
//! (`import_refunds`). Ours reach that path as well when their answer was lost, so whichever
//! of the request and the webhook comes first records the refund and the other finds it.

use std::collections::HashMap;

use dotmac_billing::{Money, Period};
use dotmac_domain::TenantId;
use dotmac_store::{
    AttemptStatus, CreditNote, InvoiceRecord, InvoiceStatus, Payment, PaymentStatus, RefundRecord, Refunded,
    StoreError, credit_note_id, invoice_id,
};
use dotmac_stripe::{ChargeRefunded, RefundRequest, StripeCallError};
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
    /// A digest of the request's own idempotency key (caller and key), when it sent one.
    pub request_key: Option<String>,
}

/// The idempotency key of an invoice's refund at Stripe: the request's own key when it sent
/// one (a retry of it gets Stripe's stored refund even once a webhook recorded that refund
/// and its place is taken), else the `sequence`-th place it is made for (a retry while the
/// place is still free gets the stored refund).
pub fn refund_key(tenant: TenantId, period: Period, sequence: u32, request_key: Option<&str>) -> String {
    match request_key {
        Some(request) => format!("dotmac-refund-{}-r{request}", invoice_id(tenant, period)),
        None => format!("dotmac-refund-{}-{sequence}", invoice_id(tenant, period)),
    }
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
        let invoice = self.finalized_invoice(tenant, period).await?;
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
        let sequence = notes.iter().map(|n| n.sequence).max().unwrap_or(0).saturating_add(1);
        let note_id = credit_note_id(tenant, period, sequence);
        let stripe = self.stripe.as_ref().ok_or(RefundError::NotConfigured)?;
        let mut metadata = HashMap::from([
            ("invoice_id".to_owned(), id.clone()),
            ("tenant_id".to_owned(), tenant.to_string()),
            ("payment_id".to_owned(), payment.id.clone()),
            ("requested_by".to_owned(), asked.requested_by.clone()),
        ]);
        // The place is a parameter only under a place key: under the request's own key a
        // retry may come to another place, and Stripe refuses a key reused with other
        // parameters.
        if asked.request_key.is_none() {
            metadata.insert("credit_note_id".to_owned(), note_id);
        }
        let made = stripe
            .refund(RefundRequest {
                payment_intent: intent,
                amount,
                metadata,
                idempotency_key: &refund_key(tenant, period, sequence, asked.request_key.as_deref()),
            })
            .await?;
        let refund = StripeRefund {
            id: made.id,
            amount,
            place: Some(sequence),
            reason: asked.reason.clone(),
            requested_by: asked.requested_by.clone(),
        };
        let (note, _) = self.record_stripe_refund(tenant, period, payment, &refund, now).await?;
        tracing::info!(credit_note = note.id, amount, refund = note.stripe_refund_id, "invoice refunded");
        Ok(note)
    }

    /// A `charge.refunded` webhook: every refund of the charge that has no credit note yet
    /// gets one — one made in Stripe's dashboard, or one of ours whose answer was lost before
    /// its record (its metadata names the place it was made for). Repeats change nothing.
    pub async fn import_refunds(
        &self,
        charge: &ChargeRefunded,
        now: OffsetDateTime,
    ) -> Result<ImportedRefunds, RefundError> {
        let Some((tenant, period, attempt)) =
            charge.metadata.get("payment_id").and_then(|id| dotmac_store::parse_payment_id(id))
        else {
            return Ok(ImportedRefunds::NotOurs);
        };
        let Some(payment) = self.store.get_payment(tenant, period, attempt).await? else {
            return Ok(ImportedRefunds::NotOurs);
        };
        let Some(intent) = payment.stripe_payment_intent_id.clone().filter(|pi| {
            payment.status == AttemptStatus::Succeeded
                && charge.payment_intent.as_deref() == Some(pi.as_str())
        }) else {
            return Ok(ImportedRefunds::NotOurs);
        };
        let recorded = self.store.get_invoice(tenant, period).await?.map_or(0, |i| i.refunded_minor);
        if charge.amount_refunded <= recorded {
            return Ok(ImportedRefunds::Recorded(0));
        }
        let stripe = self.stripe.as_ref().ok_or(RefundError::NotConfigured)?;
        let invoice = invoice_id(tenant, period);
        let ours = format!("{invoice}_CN");
        let mut imported = 0;
        for seen in stripe.refunds_of(&intent).await? {
            // A failed or canceled refund gave nothing back.
            if !matches!(seen.status.as_str(), "succeeded" | "pending") {
                continue;
            }
            let place = seen
                .metadata
                .get("credit_note_id")
                .and_then(|id| id.strip_prefix(ours.as_str()))
                .and_then(|n| n.parse::<u32>().ok());
            let refund = StripeRefund {
                amount: seen.amount,
                place,
                reason: seen.reason.clone().unwrap_or_else(|| "refunded in Stripe".to_owned()),
                // Ours name who asked; one made in the dashboard is Stripe's.
                requested_by: seen
                    .metadata
                    .get("requested_by")
                    .cloned()
                    .unwrap_or_else(|| "stripe".to_owned()),
                id: seen.id,
            };
            let (_, recorded_now) = self.record_stripe_refund(tenant, period, &payment, &refund, now).await?;
            if recorded_now {
                tracing::info!(
                    invoice,
                    refund = refund.id,
                    amount = refund.amount,
                    "refund made in Stripe recorded"
                );
                imported += 1;
            }
        }
        Ok(ImportedRefunds::Recorded(imported))
    }

    /// Records one refund Stripe made as the invoice's credit note, once, whoever gets there
    /// first (the request that made it, or the webhook that reported it): at `place` when
    /// that is free, else at the next free one. Answers the note that holds the refund, and
    /// whether this call recorded it.
    async fn record_stripe_refund(
        &self,
        tenant: TenantId,
        period: Period,
        payment: &Payment,
        refund: &StripeRefund,
        now: OffsetDateTime,
    ) -> Result<(CreditNote, bool), RefundError> {
        let id = invoice_id(tenant, period);
        // The partner's accrual is written once, when the invoice is paid: read once.
        let mut accrual = None;
        for _ in 0..RECORD_ATTEMPTS {
            let notes = self.store.credit_notes(tenant, period).await?;
            if let Some(note) = notes.iter().find(|n| n.stripe_refund_id == refund.id) {
                return Ok((note.clone(), false));
            }
            let invoice = self.finalized_invoice(tenant, period).await?;
            let next = notes.iter().map(|n| n.sequence).max().unwrap_or(0).saturating_add(1);
            let sequence = refund.place.filter(|p| notes.iter().all(|n| n.sequence != *p)).unwrap_or(next);
            if accrual.is_none() {
                accrual = Some(match &invoice.partner_id {
                    Some(partner) => self.store.accrual_of(partner, &id).await?,
                    None => None,
                });
            }
            let accrual = accrual.clone().flatten();
            let number = invoice.number.map_or_else(|| id.clone(), |n| n.to_string());
            let note = CreditNote {
                id: credit_note_id(tenant, period, sequence),
                number: format!("{number}-{sequence}"),
                invoice_id: id.clone(),
                tenant_id: tenant,
                period,
                sequence,
                amount: Money::new(refund.amount, payment.amount.currency),
                reason: refund.reason.clone(),
                stripe_refund_id: refund.id.clone(),
                payment_id: payment.id.clone(),
                commission_reversed: None,
                requested_by: refund.requested_by.clone(),
                created_at: now,
            };
            let record =
                RefundRecord { note, refunded_before: invoice.refunded_minor, paid: payment.amount.minor };
            match self.store.record_refund(&record, accrual.as_ref(), now).await? {
                Refunded::Recorded(note) => return Ok((note, true)),
                Refunded::Existed(note) if note.stripe_refund_id == refund.id => return Ok((note, false)),
                // Another refund took the place or moved the invoice meanwhile: read again.
                Refunded::Existed(_) | Refunded::InvoiceChanged => continue,
            }
        }
        Err(RefundError::Raced)
    }

    /// The tenant's finalized invoice of `period` (only a finalized one is ever refunded).
    async fn finalized_invoice(
        &self,
        tenant: TenantId,
        period: Period,
    ) -> Result<InvoiceRecord, RefundError> {
        self.store
            .get_invoice(tenant, period)
            .await?
            .filter(|i| i.status == InvoiceStatus::Finalized)
            .ok_or_else(|| RefundError::NoInvoice(invoice_id(tenant, period)))
    }
}

/// Tries at recording one Stripe refund while other refunds of the invoice are recorded.
const RECORD_ATTEMPTS: usize = 5;

/// A refund Stripe made, to be recorded as a credit note.
struct StripeRefund {
    id: String,
    amount: i64,
    /// The credit note's place it was made for (ours), if any.
    place: Option<u32>,
    reason: String,
    requested_by: String,
}

/// What a `charge.refunded` webhook came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportedRefunds {
    /// Not a charge of one of our payments.
    NotOurs,
    /// Credit notes recorded for refunds that had none (0: all were recorded already).
    Recorded(usize),
}
