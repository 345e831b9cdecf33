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

/// A commission rate: a percentage from 0 to 100, at most four decimals, as text.
pub fn rate_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(RATE_PATTERN))
        .min_length(Some(1))
        .max_length(Some(8))
        .description(Some("A percentage from 0 to 100 with at most 4 decimals, as text (`\"12.5\"`)"))
        .build()
}

/// Per-plan overrides: plan id → a rate (`rate_schema`), at most 50.
pub fn plan_rates_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::Object)
        .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::RefOr(
            utoipa::openapi::RefOr::T(utoipa::openapi::Schema::Object(rate_schema())),
        )))
        .max_properties(Some(50))
        .description(Some("plan id → percentage"))
        .build()
}

/// What `rate_schema` allows: 0–100, at most four decimals.
pub const RATE_PATTERN: &str = r"^(100(\.0{1,4})?|[0-9]{1,2}(\.[0-9]{1,4})?)$";

/// A partner (reseller).
#[derive(Debug, Serialize, ToSchema)]
pub struct PartnerView {
    pub id: String,
    pub name: String,
    pub contact_email: String,
    /// The default commission, a percentage (`"12.5"`).
    pub commission_rate: String,
    /// Per-plan overrides: plan id → percentage.
    pub plan_rates: std::collections::BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
}

impl PartnerView {
    pub fn of(partner: &dotmac_store::PartnerRecord) -> Self {
        PartnerView {
            id: partner.id.to_string(),
            name: partner.name.to_string(),
            contact_email: partner.contact_email.to_string(),
            commission_rate: partner.rates.default.to_string(),
            plan_rates: partner
                .rates
                .per_plan
                .iter()
                .map(|(plan, rate)| (plan.clone(), rate.to_string()))
                .collect(),
            created_at: rfc3339(partner.created_at),
            updated_at: rfc3339(partner.updated_at),
            version: partner.version,
        }
    }
}

/// One invoice line's commission.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionLineView {
    pub line: usize,
    pub description: String,
    pub base: MoneyView,
    pub rate: String,
    pub amount: MoneyView,
}

/// One entry of a partner's ledger.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionEntryView {
    /// `accrual` (the invoice was paid) or `clawback` (it was refunded).
    pub kind: String,
    pub tenant_id: String,
    pub invoice_id: String,
    pub invoice_period: String,
    pub booked_period: String,
    /// Accrual: the commissionable base; clawback: the refund (negative).
    pub base: MoneyView,
    /// Signed.
    pub amount: MoneyView,
    pub lines: Vec<CommissionLineView>,
    pub credit_note_id: Option<String>,
    pub created_at: String,
}

impl CommissionEntryView {
    pub fn of(entry: &dotmac_store::CommissionEntry) -> Self {
        CommissionEntryView {
            kind: entry.kind.as_str().to_owned(),
            tenant_id: entry.tenant_id.to_string(),
            invoice_id: entry.invoice_id.clone(),
            invoice_period: entry.invoice_period.to_string(),
            booked_period: entry.booked_period.to_string(),
            base: MoneyView::of(entry.base),
            amount: MoneyView::of(entry.amount),
            lines: entry
                .lines
                .iter()
                .map(|l| CommissionLineView {
                    line: l.line,
                    description: l.description.clone(),
                    base: MoneyView::of(l.base),
                    rate: l.rate.to_string(),
                    amount: MoneyView::of(l.amount),
                })
                .collect(),
            credit_note_id: entry.credit_note_id.clone(),
            created_at: rfc3339(entry.created_at),
        }
    }
}

/// A month's totals in one currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionTotals {
    pub currency: String,
    /// Minor units, accruals only.
    pub accrued: i64,
    /// Minor units, clawbacks only (zero or negative).
    pub clawed_back: i64,
    /// `accrued + clawed_back`: what the month owes the partner.
    pub net: i64,
}

/// A partner's monthly statement: the month's entries and their totals per currency.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommissionStatementView {
    pub partner_id: String,
    pub period: String,
    pub entries: Vec<CommissionEntryView>,
    pub totals: Vec<CommissionTotals>,
}

impl CommissionStatementView {
    pub fn of(statement: &crate::partners::Statement) -> Self {
        let mut totals: Vec<CommissionTotals> = Vec::new();
        for entry in &statement.entries {
            let currency = entry.amount.currency.to_string();
            let index = match totals.iter().position(|t| t.currency == currency) {
                Some(index) => index,
                None => {
                    totals.push(CommissionTotals { currency, accrued: 0, clawed_back: 0, net: 0 });
                    totals.len() - 1
                }
            };
            let total = &mut totals[index];
            match entry.kind {
                dotmac_store::CommissionKind::Accrual => total.accrued += entry.amount.minor,
                dotmac_store::CommissionKind::Clawback => total.clawed_back += entry.amount.minor,
            }
            total.net += entry.amount.minor;
        }
        CommissionStatementView {
            partner_id: statement.partner.to_string(),
            period: statement.period.to_string(),
            entries: statement.entries.iter().map(CommissionEntryView::of).collect(),
            totals,
        }
    }
}

/// A credit note: a refund of (part of) an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditNoteView {
    pub id: String,
    /// `<invoice number>-<sequence>`.
    pub number: String,
    pub invoice_id: String,
    pub sequence: u32,
    /// What went back to the tenant.
    pub amount: MoneyView,
    pub reason: String,
    pub stripe_refund_id: String,
    pub payment_id: String,
    pub created_at: String,
}

impl CreditNoteView {
    pub fn of(note: &dotmac_store::CreditNote) -> Self {
        CreditNoteView {
            id: note.id.clone(),
            number: note.number.clone(),
            invoice_id: note.invoice_id.clone(),
            sequence: note.sequence,
            amount: MoneyView::of(note.amount),
            reason: note.reason.clone(),
            stripe_refund_id: note.stripe_refund_id.clone(),
            payment_id: note.payment_id.clone(),
            created_at: rfc3339(note.created_at),
        }
    }
}

/// What a refund recorded, for platform staff: the credit note and the commission reversed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub credit_note: CreditNoteView,
    /// `refunded` (nothing left) or `partially_refunded`.
    pub payment_status: String,
    /// What the invoice's partner lost by it (negative), when a partner earned on it.
    pub commission_reversed: Option<MoneyView>,
}

/// An invoice's credit notes.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreditNotesView {
    pub invoice_id: String,
    /// Minor units refunded so far.
    pub refunded: MoneyView,
    pub items: Vec<CreditNoteView>,
}
