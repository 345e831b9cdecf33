//! The platform's billing rules, as pure functions: no I/O, no clock, so every figure an
//! invoice shows can be recomputed and tested exactly.
//!
//! - `money`: amounts in integer minor units of one currency; the one rounding rule.
//! - `period`: a calendar month in UTC, its boundaries and its days.
//! - `aggregation`: the billable customer count of a period from usage reports.
//! - `pricing`: per-customer prices (graduated, volume or package tiers, a monthly minimum)
//!   turned into invoice lines.
//! - `commission`: a partner's commission on a paid invoice (once per line) and its
//!   clawback on a refund (the refunded share, telescoping).
//! - `bundles`: the monthly flat add-ons (CRM, Project Management, AI) and their seed prices.
//! - `invoice`: an invoice draft (plan spans, bundles, adjustments) from a period's inputs.
//! - `proration`: a monthly amount for part of a month, so the parts of a month always sum
//!   back to the whole.

pub mod aggregation;
pub mod bundles;
pub mod commission;
pub mod invoice;
pub mod money;
pub mod period;
pub mod pricing;
pub mod proration;

pub use aggregation::{Aggregation, Reading, billable_count};
pub use bundles::{Bundle, seed_bundles};
pub use commission::{
    Accrual, CommissionLine, CommissionRate, CommissionRates, RateError, accrue, clawback, commissionable,
};
pub use invoice::{
    Adjustment, BundleCharge, InvoiceDraft, InvoiceError, InvoiceInputs, InvoiceLine, InvoiceLineKind,
    PlanCharge, Usage, build_invoice, re_rating,
};
pub use money::{Currency, Money, MoneyError, MoneyView, round_to_minor};
pub use period::{Period, PeriodError};
pub use pricing::{Line, LineKind, PerCustomer, Price, PriceError, Tier, TierMode};
pub use proration::{days_covered, prorate};
