//! A partner's commission on the invoices of the tenants it brought, as pure arithmetic.
//!
//! - **Rate.** A percentage in `[0, 100]` with at most four decimals (`CommissionRate`), one
//!   default per partner and optionally one per plan (`CommissionRates`).
//! - **Base.** Only what the tenant pays for the service: plan lines and bundle lines with a
//!   positive amount, and positive adjustments (a late re-rating of an earlier period charged
//!   now). Negative lines — credits — never earn and never reduce a commission, and no tax
//!   line exists; a line kind added later must be placed here explicitly (the match is
//!   exhaustive), so a tax line can never slip into the base.
//! - **Accrual rounding: once per line.** Each commissionable line's commission is
//!   `amount × rate / 100` rounded to minor units, half away from zero (`round_to_minor`);
//!   the entry is the sum of those integers, never rounded again.
//! - **Clawback rounding: once per entry, on the cumulative share.** A refund of `r` out of a
//!   paid `p` claws back `round(accrued × (refunded so far) / p) − round(accrued × (refunded
//!   before) / p)`: partial refunds telescope, so however a refund is split, the clawbacks sum
//!   to the share of everything refunded, and a full refund reverses the accrual exactly.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::invoice::{InvoiceDraft, InvoiceLineKind};
use crate::money::{Money, MoneyError, round_to_minor};

/// A commission percentage: 0 to 100, at most four decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct CommissionRate(Decimal);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("a commission rate is a percentage from 0 to 100 with at most 4 decimals, not {0}")]
    OutOfRange(String),
}

impl CommissionRate {
    pub const MAX_SCALE: u32 = 4;

    pub fn new(percent: Decimal) -> Result<Self, RateError> {
        let ok = percent >= Decimal::ZERO
            && percent <= Decimal::ONE_HUNDRED
            && percent.normalize().scale() <= Self::MAX_SCALE;
        if ok { Ok(Self(percent.normalize())) } else { Err(RateError::OutOfRange(percent.to_string())) }
    }

    /// From text such as `"12.5"`.
    pub fn parse(raw: &str) -> Result<Self, RateError> {
        let percent: Decimal = raw.trim().parse().map_err(|_| RateError::OutOfRange(raw.to_owned()))?;
        Self::new(percent)
    }

    pub fn percent(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for CommissionRate {
    type Error = RateError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<CommissionRate> for Decimal {
    fn from(rate: CommissionRate) -> Self {
        rate.0
    }
}

impl std::fmt::Display for CommissionRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A partner's rates: its default, and overrides for some plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionRates {
    pub default: CommissionRate,
    #[serde(default)]
    pub per_plan: BTreeMap<String, CommissionRate>,
}

impl CommissionRates {
    /// The rate a line earns at: its plan's override, else the default (bundles and
    /// adjustments have no plan).
    pub fn for_line(&self, kind: &InvoiceLineKind) -> CommissionRate {
        match kind {
            InvoiceLineKind::Plan { plan_id, .. } => {
                self.per_plan.get(plan_id).copied().unwrap_or(self.default)
            }
            InvoiceLineKind::Bundle { .. } | InvoiceLineKind::Adjustment { .. } => self.default,
        }
    }
}

/// One invoice line's commission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionLine {
    /// The invoice line's position (from 0).
    pub line: usize,
    pub description: String,
    /// The line's amount (the base it earns on).
    pub base: Money,
    pub rate: CommissionRate,
    /// `base × rate / 100`, rounded once.
    pub amount: Money,
}

/// An invoice's commission: its lines, the base and the amount (both sums of integers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    pub lines: Vec<CommissionLine>,
    pub base: Money,
    pub amount: Money,
}

/// Whether a line is in the commission base (see the module's rules).
pub fn commissionable(kind: &InvoiceLineKind, amount: Money) -> bool {
    let positive = amount.minor > 0;
    match kind {
        InvoiceLineKind::Plan { .. } | InvoiceLineKind::Bundle { .. } => positive,
        // A positive adjustment charges an earlier period's usage now; a negative one is a
        // credit, which never earns.
        InvoiceLineKind::Adjustment { .. } => positive,
    }
}

/// The commission `rates` earn on `invoice` (rounded once per line).
pub fn accrue(invoice: &InvoiceDraft, rates: &CommissionRates) -> Result<Accrual, MoneyError> {
    let currency = invoice.currency;
    let mut lines = Vec::new();
    for (index, line) in invoice.lines.iter().enumerate() {
        if !commissionable(&line.kind, line.amount) {
            continue;
        }
        let rate = rates.for_line(&line.kind);
        let exact = line.amount.major() * rate.percent() / Decimal::ONE_HUNDRED;
        lines.push(CommissionLine {
            line: index,
            description: line.description.clone(),
            base: line.amount,
            rate,
            amount: round_to_minor(exact, currency)?,
        });
    }
    let base = Money::sum(currency, lines.iter().map(|l| l.base))?;
    let amount = Money::sum(currency, lines.iter().map(|l| l.amount))?;
    Ok(Accrual { lines, base, amount })
}

/// `value × numerator / denominator` in integers, rounded half away from zero.
fn share(value: i64, numerator: i64, denominator: i64) -> Option<i64> {
    if denominator <= 0 {
        return None;
    }
    let product = i128::from(value) * i128::from(numerator);
    let denominator = i128::from(denominator);
    let (quotient, remainder) = (product / denominator, product % denominator);
    let rounded = if remainder.abs() * 2 >= denominator { quotient + product.signum() } else { quotient };
    i64::try_from(rounded).ok()
}

/// The (negative, or zero) commission a refund claws back: the accrual's share of what is
/// refunded once this refund is counted, less the share of what was refunded before it.
/// `paid` is what the invoice was paid; `refunded_before + refund` must not exceed it.
pub fn clawback(accrued: Money, paid: i64, refunded_before: i64, refund: i64) -> Result<Money, MoneyError> {
    let after = refunded_before.checked_add(refund).ok_or(MoneyError::Overflow)?;
    if paid <= 0 || refunded_before < 0 || refund < 0 || after > paid {
        return Err(MoneyError::Overflow);
    }
    let to_date = share(accrued.minor, after, paid).ok_or(MoneyError::Overflow)?;
    let before = share(accrued.minor, refunded_before, paid).ok_or(MoneyError::Overflow)?;
    Ok(Money::new(before - to_date, accrued.currency))
}

#[cfg(test)]
// Amounts in cents are written `major_minor` (250_00 is 250.00).
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;
    use crate::invoice::InvoiceLine;
    use crate::money::Currency;
    use crate::period::Period;
    use crate::pricing::LineKind;
    use proptest::prelude::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD)
    }

    fn line(kind: InvoiceLineKind, minor: i64) -> InvoiceLine {
        InvoiceLine {
            kind,
            description: "line".into(),
            quantity: 1,
            unit_price: Decimal::ZERO,
            from_day: 0,
            to_day: 30,
            amount: usd(minor),
        }
    }

    fn plan(id: &str) -> InvoiceLineKind {
        InvoiceLineKind::Plan { plan_id: id.into(), price_version: 1, line: LineKind::Customers { tier: 0 } }
    }

    fn adjustment() -> InvoiceLineKind {
        InvoiceLineKind::Adjustment { source_period: Period::parse("2026-10").expect("period") }
    }

    fn invoice(lines: Vec<InvoiceLine>) -> InvoiceDraft {
        let total = Money::sum(Currency::USD, lines.iter().map(|l| l.amount)).expect("sum");
        InvoiceDraft {
            period: Period::parse("2026-11").expect("period"),
            currency: Currency::USD,
            billable_customers: 0,
            lines,
            total,
        }
    }

    fn rate(raw: &str) -> CommissionRate {
        CommissionRate::parse(raw).expect("rate")
    }

    #[test]
    fn a_rate_is_a_percentage_from_0_to_100_with_four_decimals_at_most() {
        assert_eq!(rate("12.5").percent(), Decimal::new(125, 1));
        assert_eq!(rate("100").percent(), Decimal::ONE_HUNDRED);
        assert_eq!(rate("0").percent(), Decimal::ZERO);
        assert_eq!(rate("7.1250").percent(), Decimal::new(7125, 3), "trailing zeros are not decimals");
        for bad in ["-1", "100.0001", "101", "1.23456", "ten", ""] {
            assert!(CommissionRate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_base_is_plan_and_bundle_lines_and_never_a_credit() {
        let draft = invoice(vec![
            line(plan("usage"), 250_00),
            line(InvoiceLineKind::Bundle { code: "crm".into() }, 49_00),
            line(adjustment(), -30_00),
            line(adjustment(), 10_00),
        ]);
        let rates = CommissionRates { default: rate("10"), per_plan: BTreeMap::new() };
        let accrual = accrue(&draft, &rates).expect("accrual");
        assert_eq!(accrual.lines.iter().map(|l| l.line).collect::<Vec<_>>(), vec![0, 1, 3]);
        assert_eq!(accrual.base, usd(309_00), "the credit is not in the base");
        assert_eq!(accrual.amount, usd(30_90));
    }

    #[test]
    fn a_plan_override_applies_to_its_plan_lines_only() {
        let draft = invoice(vec![
            line(plan("usage"), 100_00),
            line(plan("scaled"), 100_00),
            line(InvoiceLineKind::Bundle { code: "ai".into() }, 100_00),
        ]);
        let rates = CommissionRates {
            default: rate("10"),
            per_plan: BTreeMap::from([("scaled".into(), rate("20"))]),
        };
        let accrual = accrue(&draft, &rates).expect("accrual");
        assert_eq!(
            accrual.lines.iter().map(|l| l.amount.minor).collect::<Vec<_>>(),
            vec![10_00, 20_00, 10_00]
        );
    }

    #[test]
    fn each_line_is_rounded_once_half_away_from_zero() {
        // 0.05 at 10% is 0.005: half a cent, rounded up to 1 cent, per line.
        let draft = invoice(vec![line(plan("usage"), 5), line(plan("usage"), 5), line(plan("usage"), 5)]);
        let rates = CommissionRates { default: rate("10"), per_plan: BTreeMap::new() };
        let accrual = accrue(&draft, &rates).expect("accrual");
        assert_eq!(accrual.amount, usd(3), "three lines of 0.5 cent round to 1 cent each");
        // 3.33% of 1.00 is 3.33 cents: 3.
        let draft = invoice(vec![line(plan("usage"), 1_00)]);
        let rates = CommissionRates { default: rate("3.33"), per_plan: BTreeMap::new() };
        assert_eq!(accrue(&draft, &rates).expect("accrual").amount, usd(3));
    }

    #[test]
    fn a_refund_claws_back_its_share_and_a_full_refund_all_of_it() {
        let accrued = usd(25_00);
        assert_eq!(clawback(accrued, 250_00, 0, 250_00).expect("full"), usd(-25_00));
        assert_eq!(clawback(accrued, 250_00, 0, 100_00).expect("part"), usd(-10_00));
        assert_eq!(clawback(accrued, 250_00, 100_00, 150_00).expect("rest"), usd(-15_00));
        // 1/3 of 1 cent each time: 0, 1, 0 — and the three sum to the whole cent.
        let one = usd(1);
        let parts = [clawback(one, 3, 0, 1), clawback(one, 3, 1, 1), clawback(one, 3, 2, 1)];
        assert_eq!(parts.iter().map(|p| p.as_ref().expect("part").minor).sum::<i64>(), -1);
        assert!(clawback(accrued, 250_00, 200_00, 50_01).is_err(), "more than paid");
        assert!(clawback(accrued, 0, 0, 0).is_err(), "nothing was paid");
    }

    fn arbitrary_line() -> impl Strategy<Value = InvoiceLine> {
        let kind = prop_oneof![
            Just(plan("usage")),
            Just(plan("scaled")),
            Just(InvoiceLineKind::Bundle { code: "crm".into() }),
            Just(adjustment()),
        ];
        (kind, -1_000_000i64..10_000_000).prop_map(|(kind, minor)| line(kind, minor))
    }

    fn arbitrary_rate() -> impl Strategy<Value = CommissionRate> {
        (0i64..=1_000_000).prop_map(|n| CommissionRate::new(Decimal::new(n, 4)).expect("in range"))
    }

    proptest! {
        #[test]
        fn an_accrual_is_the_sum_of_its_lines_each_within_half_a_cent_of_exact(
            lines in proptest::collection::vec(arbitrary_line(), 0..12),
            default in arbitrary_rate(),
            scaled in arbitrary_rate(),
        ) {
            let draft = invoice(lines);
            let rates = CommissionRates { default, per_plan: BTreeMap::from([("scaled".into(), scaled)]) };
            let accrual = accrue(&draft, &rates).expect("accrual");
            prop_assert_eq!(accrual.amount.minor, accrual.lines.iter().map(|l| l.amount.minor).sum::<i64>());
            prop_assert!(accrual.amount.minor >= 0, "credits never make a commission negative");
            for l in &accrual.lines {
                let source = &draft.lines[l.line];
                prop_assert!(source.amount.minor > 0, "only positive lines earn");
                let exact = Decimal::from(source.amount.minor) * l.rate.percent() / Decimal::ONE_HUNDRED;
                prop_assert!((Decimal::from(l.amount.minor) - exact).abs() <= Decimal::new(5, 1));
                prop_assert!(l.amount.minor <= source.amount.minor, "never more than the line");
            }
            let positive: i64 = draft.lines.iter().map(|l| l.amount.minor).filter(|m| *m > 0).sum();
            prop_assert_eq!(accrual.base.minor, positive);
        }

        #[test]
        fn clawbacks_of_any_split_sum_to_the_refunded_share_and_a_full_refund_to_the_accrual(
            accrued in 0i64..10_000_000,
            paid in 1i64..100_000_000,
            cuts in proptest::collection::vec(0u32..=1000, 1..8),
        ) {
            // Split `paid` into refunds in the proportions `cuts`, the last one taking the rest.
            let weight: i64 = cuts.iter().map(|c| i64::from(*c)).sum::<i64>().max(1);
            let mut refunds: Vec<i64> = cuts.iter().map(|c| paid * i64::from(*c) / weight).collect();
            let given: i64 = refunds.iter().sum();
            if let Some(last) = refunds.last_mut() { *last += paid - given; }
            let mut before = 0;
            let mut clawed = 0;
            for refund in refunds {
                let back = clawback(usd(accrued), paid, before, refund).expect("within paid");
                prop_assert!(back.minor <= 0);
                before += refund;
                clawed += back.minor;
                prop_assert!(-clawed <= accrued, "never more than accrued");
                prop_assert_eq!(-clawed, share(accrued, before, paid).expect("share"));
            }
            prop_assert_eq!(-clawed, accrued, "a full refund reverses the accrual exactly");
        }
    }
}
