//! An invoice draft from everything a period bills: the plan(s) the tenant was on and for which
//! part of the period, its usage, its bundles, and adjustments carried in from earlier periods.
//! Pure: the worker gathers the inputs, this turns them into lines and totals.
//!
//! - **Plan lines.** The period's billable count (under each plan's own aggregation) priced by
//!   that plan's tiers (`Price::lines`: customers × tier, tier fees, the minimum top-up), one
//!   set of lines per plan span. A span covering the whole period is billed as priced; a span
//!   covering part of it is billed its share by whole days (`proration::prorate`), so spans
//!   tiling the period sum back to exactly what the whole period would cost.
//! - **Bundle lines.** Each bundle's monthly amount, prorated by day for its `[from, to)`.
//! - **Adjustments.** One line each, signed, as given (a late report re-rating a finalized
//!   period lands here, never as an edit of that period's invoice).
//! - **Rounding.** A line's monthly amount is rounded to minor units once (`round_to_minor`,
//!   half away from zero); a part of a month is that rounded amount's share by the telescoping
//!   rule of `prorate`. Totals are sums of integer minor units: nothing is rounded twice.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::aggregation::{Reading, billable_count};
use crate::money::{Currency, Money, MoneyError};
use crate::period::Period;
use crate::pricing::{LineKind, Price, PriceError};
use crate::proration::prorate;

/// The part of the period a tenant was on one plan, at one price version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCharge {
    pub plan_id: String,
    /// The version of the plan's price in force for the period (recorded on the invoice).
    pub price_version: u32,
    pub price: Price,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// `None`: still on the plan at the period's end.
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
}

/// A bundle (CRM, Project Management, AI) held for `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCharge {
    pub code: String,
    pub name: String,
    pub monthly: Money,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
}

/// A signed amount carried onto this invoice from an earlier period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub description: String,
    pub amount: Money,
    pub source_period: Period,
}

/// The period's usage: the readings (carried-in report included), or an already computed
/// billable count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    Readings(Vec<Reading>),
    Billable(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceInputs {
    pub period: Period,
    pub plans: Vec<PlanCharge>,
    pub usage: Usage,
    pub bundles: Vec<BundleCharge>,
    pub adjustments: Vec<Adjustment>,
}

/// What a line charges for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InvoiceLineKind {
    /// A plan's line (`line`: customers in a tier, a tier fee, packages, the minimum top-up).
    Plan {
        plan_id: String,
        price_version: u32,
        line: LineKind,
    },
    Bundle {
        code: String,
    },
    Adjustment {
        source_period: Period,
    },
}

/// One line of an invoice. `amount` is in minor units; `from_day..to_day` (0-based, end
/// exclusive) is the part of the period it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    #[serde(flatten)]
    pub kind: InvoiceLineKind,
    pub description: String,
    pub quantity: u64,
    /// In major units, exact (may be finer than a cent).
    pub unit_price: Decimal,
    pub from_day: u8,
    pub to_day: u8,
    pub amount: Money,
}

/// An invoice's computed content: lines, the billable count, the total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceDraft {
    pub period: Period,
    pub currency: Currency,
    /// The billable customer count under the first plan's aggregation (what the invoice shows).
    pub billable_customers: u64,
    pub lines: Vec<InvoiceLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("an invoice needs at least one plan span")]
    NoPlan,
    #[error("the invoice's charges are in more than one currency ({0} and {1})")]
    MixedCurrencies(Currency, Currency),
    #[error(transparent)]
    Price(#[from] PriceError),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The whole days `[from, to)` of `period` a span covers (clamped to the period).
fn days_of(period: &Period, from: OffsetDateTime, to: Option<OffsetDateTime>) -> (u8, u8) {
    let from_day = period.day_index(from);
    let to_day = to.map_or(period.days(), |to| period.day_index(to));
    (from_day, to_day.max(from_day))
}

fn describe(kind: LineKind, plan: &str, price: &Price) -> String {
    use crate::pricing::PerCustomer;
    let tier_bounds = |tier: usize| match &price.per_customer {
        PerCustomer::Tiered { tiers, .. } => {
            let lower = match tier.checked_sub(1).and_then(|below| tiers.get(below)) {
                Some(below) => below.up_to.map_or(0, |u| u + 1),
                None => 1,
            };
            match tiers.get(tier).and_then(|t| t.up_to) {
                Some(upper) => format!("{lower}–{upper}"),
                None => format!("{lower}+"),
            }
        }
        PerCustomer::Package { .. } => String::new(),
    };
    match kind {
        LineKind::Customers { tier } => {
            format!("{plan}: customers, tier {} ({})", tier + 1, tier_bounds(tier))
        }
        LineKind::TierFee { tier } => format!("{plan}: tier {} flat fee", tier + 1),
        LineKind::Packages => format!("{plan}: customer packages"),
        LineKind::MinimumTopUp => format!("{plan}: monthly minimum top-up"),
    }
}

/// The invoice draft for `inputs`.
pub fn build_invoice(inputs: &InvoiceInputs) -> Result<InvoiceDraft, InvoiceError> {
    let period = inputs.period;
    let first = inputs.plans.first().ok_or(InvoiceError::NoPlan)?;
    let currency = first.price.currency;
    let same_currency = |other: Currency| {
        if other == currency { Ok(()) } else { Err(InvoiceError::MixedCurrencies(currency, other)) }
    };
    let billable = |charge: &PlanCharge| match &inputs.usage {
        Usage::Readings(readings) => billable_count(charge.price.aggregation, &period, readings),
        Usage::Billable(count) => *count,
    };
    let days = period.days();
    let mut lines = Vec::new();
    for charge in &inputs.plans {
        same_currency(charge.price.currency)?;
        let (from_day, to_day) = days_of(&period, charge.from, charge.to);
        if to_day <= from_day {
            continue;
        }
        for line in charge.price.lines(billable(charge))? {
            let amount = prorate(line.amount, from_day, to_day, days)?;
            lines.push(InvoiceLine {
                kind: InvoiceLineKind::Plan {
                    plan_id: charge.plan_id.clone(),
                    price_version: charge.price_version,
                    line: line.kind,
                },
                description: describe(line.kind, &charge.plan_id, &charge.price),
                quantity: line.quantity,
                unit_price: line.unit_price,
                from_day,
                to_day,
                amount,
            });
        }
    }
    for bundle in &inputs.bundles {
        same_currency(bundle.monthly.currency)?;
        let (from_day, to_day) = days_of(&period, bundle.from, bundle.to);
        if to_day <= from_day {
            continue;
        }
        lines.push(InvoiceLine {
            kind: InvoiceLineKind::Bundle { code: bundle.code.clone() },
            description: bundle.name.clone(),
            quantity: 1,
            unit_price: bundle.monthly.major(),
            from_day,
            to_day,
            amount: prorate(bundle.monthly, from_day, to_day, days)?,
        });
    }
    for adjustment in &inputs.adjustments {
        same_currency(adjustment.amount.currency)?;
        lines.push(InvoiceLine {
            kind: InvoiceLineKind::Adjustment { source_period: adjustment.source_period },
            description: adjustment.description.clone(),
            quantity: 1,
            unit_price: adjustment.amount.major(),
            from_day: 0,
            to_day: days,
            amount: adjustment.amount,
        });
    }
    let total = Money::sum(currency, lines.iter().map(|l| l.amount))?;
    Ok(InvoiceDraft { period, currency, billable_customers: billable(first), lines, total })
}

impl InvoiceDraft {
    /// The sum of the plan lines alone (what a re-rating of the period compares).
    pub fn plan_total(&self) -> Result<Money, MoneyError> {
        let plan = self.lines.iter().filter(|l| matches!(l.kind, InvoiceLineKind::Plan { .. }));
        Money::sum(self.currency, plan.map(|l| l.amount))
    }
}

/// What re-rating a finalized period with its corrected usage changes: the plan lines'
/// total with `corrected` billable customers less what was billed (`billed`), as an
/// adjustment for the next invoice; `None` when nothing changes.
pub fn re_rating(
    period: Period,
    plans: &[PlanCharge],
    billed_customers: u64,
    billed: Money,
    corrected: &Usage,
) -> Result<Option<Adjustment>, InvoiceError> {
    let again = build_invoice(&InvoiceInputs {
        period,
        plans: plans.to_vec(),
        usage: corrected.clone(),
        bundles: Vec::new(),
        adjustments: Vec::new(),
    })?;
    let now = again.plan_total()?;
    if now.currency != billed.currency {
        return Err(InvoiceError::MixedCurrencies(billed.currency, now.currency));
    }
    let difference = now.minor - billed.minor;
    if difference == 0 {
        return Ok(None);
    }
    Ok(Some(Adjustment {
        description: format!(
            "{period}: usage reported after finalization ({billed_customers} → {} billable customers)",
            again.billable_customers
        ),
        amount: Money::new(difference, billed.currency),
        source_period: period,
    }))
}

#[cfg(test)]
// Amounts in cents are written dollars_cents (250_00 is 250.00), so they read as invoices do.
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;
    use crate::pricing::seed_prices;
    use proptest::prelude::*;
    use time::Duration;
    use time::macros::datetime;

    fn seeded(plan: &str) -> Price {
        seed_prices().into_iter().find(|(id, _)| *id == plan).map(|(_, p)| p).expect("seeded plan")
    }

    fn whole(period: Period, plan: &str) -> PlanCharge {
        PlanCharge {
            plan_id: plan.into(),
            price_version: 1,
            price: seeded(plan),
            from: period.start(),
            to: None,
        }
    }

    fn inputs(period: Period, plans: Vec<PlanCharge>, customers: u64) -> InvoiceInputs {
        InvoiceInputs {
            period,
            plans,
            usage: Usage::Billable(customers),
            bundles: Vec::new(),
            adjustments: Vec::new(),
        }
    }

    fn at_day(period: Period, day: u8) -> OffsetDateTime {
        period.start() + Duration::days(i64::from(day))
    }

    fn crm(from: OffsetDateTime, to: Option<OffsetDateTime>) -> BundleCharge {
        BundleCharge {
            code: "crm".into(),
            name: "CRM".into(),
            monthly: Money::new(49_00, Currency::USD),
            from,
            to,
        }
    }

    /// The seed's example tenants, whole month, exactly.
    #[test]
    fn the_seed_tenants_invoices_are_exactly_this() {
        let april = Period::parse("2027-04").expect("period");
        let total = |plan, customers| {
            build_invoice(&inputs(april, vec![whole(april, plan)], customers)).expect("invoice").total.minor
        };
        assert_eq!(total("usage", 500), 250_00, "500 × 0.50");
        assert_eq!(total("scaled", 1_200), 420_00, "1,200 × 0.35 (volume)");
        assert_eq!(total("enterprise", 3_000), 999_00, "950.00 topped up to the 999.00 minimum");
        let invoice = build_invoice(&inputs(april, vec![whole(april, "usage")], 1_200)).expect("invoice");
        let amounts: Vec<(String, i64)> =
            invoice.lines.iter().map(|l| (l.description.clone(), l.amount.minor)).collect();
        assert_eq!(
            amounts,
            [
                ("usage: customers, tier 1 (1–500)".to_owned(), 250_00),
                ("usage: customers, tier 2 (501–2000)".to_owned(), 280_00)
            ]
        );
        // With CRM added on the 11th of April (30 days): 20 of 30 days of 49.00 = 32.67.
        let mut with_crm = inputs(april, vec![whole(april, "usage")], 500);
        with_crm.bundles.push(crm(at_day(april, 10), None));
        let invoice = build_invoice(&with_crm).expect("invoice");
        assert_eq!(invoice.total.minor, 250_00 + 32_67);
        assert_eq!(invoice.lines.last().map(|l| (l.from_day, l.to_day)), Some((10, 30)));
    }

    #[test]
    fn a_plan_change_mid_period_bills_each_plan_for_its_days() {
        let april = Period::parse("2027-04").expect("period");
        let change = at_day(april, 15) + Duration::hours(9);
        let plans = vec![
            PlanCharge { to: Some(change), ..whole(april, "usage") },
            PlanCharge { from: change, ..whole(april, "scaled") },
        ];
        let invoice = build_invoice(&inputs(april, plans, 1_200)).expect("invoice");
        // usage 530.00 for days 0..15 of 30 = 265.00; scaled 420.00 for 15..30 = 210.00.
        assert_eq!(invoice.total.minor, 265_00 + 210_00);
        assert!(
            invoice.lines.iter().all(|l| matches!(l.kind, InvoiceLineKind::Plan { price_version: 1, .. }))
        );
    }

    #[test]
    fn adjustments_are_lines_of_their_own_and_currencies_never_mix() {
        let april = Period::parse("2027-04").expect("period");
        let mut with = inputs(april, vec![whole(april, "usage")], 500);
        let march = april.previous();
        with.adjustments.push(Adjustment {
            description: "late".into(),
            amount: Money::new(-12_34, Currency::USD),
            source_period: march,
        });
        let invoice = build_invoice(&with).expect("invoice");
        assert_eq!(invoice.total.minor, 250_00 - 12_34);
        let eur = Currency::parse("EUR").expect("eur");
        with.adjustments[0].amount = Money::new(1, eur);
        assert_eq!(build_invoice(&with), Err(InvoiceError::MixedCurrencies(Currency::USD, eur)));
        assert_eq!(build_invoice(&inputs(april, vec![], 1)), Err(InvoiceError::NoPlan));
    }

    #[test]
    fn re_rating_a_period_gives_the_difference_or_nothing() {
        let march = Period::parse("2027-03").expect("period");
        let plans = vec![whole(march, "usage")];
        let billed = build_invoice(&inputs(march, plans.clone(), 500)).expect("invoice");
        let billed_total = billed.plan_total().expect("total");
        let more = re_rating(march, &plans, 500, billed_total, &Usage::Billable(600)).expect("re-rated");
        assert_eq!(more.map(|a| a.amount.minor), Some(40_00), "100 more in tier 2 at 0.40");
        let fewer = re_rating(march, &plans, 500, billed_total, &Usage::Billable(100)).expect("re-rated");
        assert_eq!(fewer.map(|a| a.amount.minor), Some(99_00 - 250_00), "down to the minimum");
        assert_eq!(re_rating(march, &plans, 500, billed_total, &Usage::Billable(500)), Ok(None));
    }

    fn reading(id: &str, at: OffsetDateTime, count: u64) -> Reading {
        Reading { report_id: id.into(), observed_at: at, customer_count: count }
    }

    fn arbitrary_plan() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["usage", "scaled", "enterprise"])
    }

    proptest! {
        /// Spans of one plan tiling a month, cut anywhere (at any hour), sum to exactly the
        /// whole month; so do a bundle's.
        #[test]
        fn spans_tiling_a_month_sum_to_the_whole_month(
            plan in arbitrary_plan(),
            customers in 0u64..20_000,
            month in 1u8..=12,
            mut cuts in prop::collection::vec(0i64..31 * 24, 0..8),
        ) {
            let period = Period::new(2027, time::Month::try_from(month).expect("month")).expect("period");
            let hours = i64::from(period.days()) * 24;
            cuts.iter_mut().for_each(|c| *c = (*c).min(hours));
            cuts.sort_unstable();
            cuts.dedup();
            let mut bounds: Vec<OffsetDateTime> = vec![period.start()];
            bounds.extend(cuts.iter().map(|h| period.start() + Duration::hours(*h)));
            let spans: Vec<PlanCharge> = bounds
                .iter()
                .enumerate()
                .map(|(i, from)| PlanCharge { from: *from, to: bounds.get(i + 1).copied(), ..whole(period, plan) })
                .collect();
            let mut split = inputs(period, spans, customers);
            split.bundles = bounds.iter().enumerate().map(|(i, from)| crm(*from, bounds.get(i + 1).copied())).collect();
            let mut one = inputs(period, vec![whole(period, plan)], customers);
            one.bundles = vec![crm(period.start(), None)];
            prop_assert_eq!(
                build_invoice(&split).expect("split").total,
                build_invoice(&one).expect("whole").total
            );
        }

        /// Twelve monthly invoices, each month's plan and bundle split anywhere, cost exactly
        /// twelve unsplit months: no rounding drift over a year.
        #[test]
        fn a_year_of_monthly_invoices_has_no_rounding_drift(
            plan in arbitrary_plan(),
            customers in 0u64..20_000,
            cut_day in 0u8..=31,
        ) {
            let mut period = Period::parse("2027-01").expect("period");
            let (mut split_year, mut whole_year) = (0i64, 0i64);
            for _ in 0..12 {
                let cut = at_day(period, cut_day.min(period.days()));
                let mut split = inputs(
                    period,
                    vec![PlanCharge { to: Some(cut), ..whole(period, plan) }, PlanCharge { from: cut, ..whole(period, plan) }],
                    customers,
                );
                split.bundles = vec![crm(period.start(), Some(cut)), crm(cut, None)];
                split_year += build_invoice(&split).expect("split").total.minor;
                whole_year += seeded(plan).total(customers).expect("total").minor + 49_00;
                period = period.next();
            }
            prop_assert_eq!(split_year, whole_year);
        }

        /// The readings in any order, some repeated, give the same invoice.
        #[test]
        fn shuffled_and_duplicated_readings_give_the_same_total(
            plan in arbitrary_plan(),
            raw in prop::collection::vec((0i64..40 * 24, 0u64..10_000), 1..25),
            duplicate in any::<prop::sample::Index>(),
            rotate in any::<prop::sample::Index>(),
        ) {
            let period = Period::parse("2027-03").expect("period");
            let start = period.start() - Duration::days(5);
            let readings: Vec<Reading> = raw
                .iter()
                .enumerate()
                .map(|(i, (h, count))| reading(&format!("r{i}"), start + Duration::hours(*h), *count))
                .collect();
            let mut shuffled = readings.clone();
            shuffled.push(readings[duplicate.index(readings.len())].clone());
            shuffled.reverse();
            let by = rotate.index(shuffled.len());
            shuffled.rotate_left(by);
            let with = |readings: Vec<Reading>| InvoiceInputs {
                usage: Usage::Readings(readings),
                ..inputs(period, vec![whole(period, plan)], 0)
            };
            prop_assert_eq!(
                build_invoice(&with(readings)).expect("in order"),
                build_invoice(&with(shuffled)).expect("shuffled")
            );
        }
    }

    #[test]
    fn a_late_reading_for_the_period_raises_the_peak() {
        let march = Period::parse("2027-03").expect("period");
        let early = vec![reading("a", datetime!(2027-03-02 0:00 UTC), 500)];
        let mut late = early.clone();
        late.push(reading("b", datetime!(2027-03-30 0:00 UTC), 700));
        let total = |readings| {
            build_invoice(&InvoiceInputs {
                usage: Usage::Readings(readings),
                ..inputs(march, vec![whole(march, "usage")], 0)
            })
            .expect("invoice")
            .total
            .minor
        };
        assert_eq!(total(early), 250_00);
        assert_eq!(total(late), 250_00 + 80_00);
    }
}
