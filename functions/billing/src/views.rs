//! What the billing routes answer, built field by field from the records.

use dotmac_billing::{InvoiceLine, InvoiceLineKind, LineKind};
use dotmac_store::{BillingRun, InvoiceRecord, RunTenant};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

pub use dotmac_billing::MoneyView;

/// One line item.
#[derive(Debug, Serialize, ToSchema)]
pub struct LineView {
    /// `customers`, `tier_fee`, `packages`, `minimum_top_up`, `bundle` or `adjustment`.
    pub kind: String,
    pub description: String,
    pub quantity: u64,
    /// In major units, exact (may be finer than a cent).
    pub unit_price: String,
    /// The part of the period the line covers, in days from 0 (end exclusive).
    pub from_day: u8,
    pub to_day: u8,
    pub amount: MoneyView,
    /// For plan lines: the plan and the price version used.
    pub plan_id: Option<String>,
    pub price_version: Option<u32>,
    /// For bundle lines.
    pub bundle: Option<String>,
    /// For adjustments: the period re-rated.
    pub source_period: Option<String>,
}

impl LineView {
    fn of(line: &InvoiceLine) -> Self {
        let (kind, plan_id, price_version, bundle, source_period) = match &line.kind {
            InvoiceLineKind::Plan { plan_id, price_version, line } => {
                let kind = match line {
                    LineKind::Customers { .. } => "customers",
                    LineKind::TierFee { .. } => "tier_fee",
                    LineKind::Packages => "packages",
                    LineKind::MinimumTopUp => "minimum_top_up",
                };
                (kind, Some(plan_id.clone()), Some(*price_version), None, None)
            }
            InvoiceLineKind::Bundle { code } => ("bundle", None, None, Some(code.clone()), None),
            InvoiceLineKind::Adjustment { source_period } => {
                ("adjustment", None, None, None, Some(source_period.to_string()))
            }
        };
        LineView {
            kind: kind.to_owned(),
            description: line.description.clone(),
            quantity: line.quantity,
            unit_price: line.unit_price.to_string(),
            from_day: line.from_day,
            to_day: line.to_day,
            amount: MoneyView::of(line.amount),
            plan_id,
            price_version,
            bundle,
            source_period,
        }
    }
}

/// A price version an invoice used.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoicePriceVersion {
    pub plan_id: String,
    pub version: u32,
}

/// An invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    /// `<tenant id>_<YYYY-MM>`: one invoice per tenant and period. Absent for an upcoming one.
    pub id: Option<String>,
    /// Given on finalization: sequential per platform, no gaps.
    pub number: Option<u64>,
    #[schema(format = Uuid)]
    pub tenant_id: String,
    #[schema(example = "2027-03")]
    pub period: String,
    #[schema(format = DateTime)]
    pub period_start: String,
    #[schema(format = DateTime)]
    pub period_end: String,
    /// `draft`, `finalized`, or `upcoming` (computed now, not stored).
    pub status: String,
    pub billable_customers: u64,
    pub lines: Vec<LineView>,
    pub total: MoneyView,
    pub price_versions: Vec<InvoicePriceVersion>,
    /// The rounding rule every line follows.
    pub rounding: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(format = DateTime)]
    pub finalized_at: Option<String>,
    /// Where its payment stands once finalized: `open`, `paid`, `failed` or `refunded`
    /// (its attempts: `GET /v1/invoices/{id}/payments`).
    pub payment_status: Option<String>,
    #[schema(format = DateTime)]
    pub paid_at: Option<String>,
}

const ROUNDING: &str =
    "each line rounded once to minor units, half away from zero; parts of a month by whole days";

impl InvoiceView {
    pub fn of(invoice: &InvoiceRecord) -> Self {
        InvoiceView {
            id: Some(invoice.id.clone()),
            number: invoice.number,
            tenant_id: invoice.tenant_id.to_string(),
            period: invoice.period.to_string(),
            period_start: rfc3339(invoice.period.start()),
            period_end: rfc3339(invoice.period.end()),
            status: invoice.status.as_str().to_owned(),
            billable_customers: invoice.content.billable_customers,
            lines: invoice.content.lines.iter().map(LineView::of).collect(),
            total: MoneyView::of(invoice.content.total),
            price_versions: invoice
                .plan_charges
                .iter()
                .map(|p| InvoicePriceVersion { plan_id: p.plan_id.clone(), version: p.price_version })
                .collect(),
            rounding: ROUNDING.to_owned(),
            updated_at: rfc3339(invoice.updated_at),
            finalized_at: invoice.finalized_at.map(rfc3339),
            payment_status: invoice.payment_status.map(|status| status.as_str().to_owned()),
            paid_at: invoice.paid_at.map(rfc3339),
        }
    }

    pub fn upcoming(invoice: &InvoiceRecord) -> Self {
        InvoiceView { id: None, status: "upcoming".into(), ..InvoiceView::of(invoice) }
    }
}

/// A tenant a run could not invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunFailureView {
    #[schema(format = Uuid)]
    pub tenant_id: String,
    pub reason: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// A billing run and its progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingRunView {
    pub id: String,
    #[schema(example = "2027-03")]
    pub period: String,
    pub requested_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Every tenant's job is queued (`tenants_total` is final).
    pub fanned_out: bool,
    pub tenants_total: u64,
    pub invoiced: u64,
    pub failed: u64,
    pub failures: Vec<RunFailureView>,
}

impl BillingRunView {
    pub fn of(run: &BillingRun, failures: &[RunTenant]) -> Self {
        BillingRunView {
            id: run.id.clone(),
            period: run.period.to_string(),
            requested_by: run.requested_by.clone(),
            created_at: rfc3339(run.created_at),
            fanned_out: run.fanned_out,
            tenants_total: run.tenants_total,
            invoiced: run.invoiced,
            failed: run.failed,
            failures: failures
                .iter()
                .map(|f| RunFailureView {
                    tenant_id: f.tenant_id.to_string(),
                    reason: f.reason.clone().unwrap_or_default(),
                    at: rfc3339(f.at),
                })
                .collect(),
        }
    }
}
