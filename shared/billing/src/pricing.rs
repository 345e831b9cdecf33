//! A plan's price: what a month costs for a billable customer count.
//!
//! - `graduated` tiers: each tier's price applies to the customers within it (the first 500 at
//!   one price, the next 1,500 at another, ...), one line per tier reached.
//! - `volume` tiers: the tier the whole count falls in prices every customer, one line.
//!   `up_to` is inclusive: 500 customers with a tier `up_to: 500` are in that tier.
//! - `package`: a price per started package of `size` customers.
//!
//! A tier may add a flat fee, charged once when the count reaches it. Each line's exact amount
//! (quantity × unit price, a decimal) is rounded to minor units once (`round_to_minor`); then,
//! if the lines come to less than the monthly minimum, a top-up line brings them up to it.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::aggregation::Aggregation;
use crate::money::{Currency, Money, MoneyError, round_to_minor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierMode {
    Graduated,
    Volume,
}

/// One tier: customers up to `up_to` (inclusive; `None` for the last, unbounded tier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub up_to: Option<u64>,
    /// Per customer, in major units (may be finer than a cent).
    pub unit_price: Decimal,
    /// Charged once when the count reaches the tier, in major units.
    #[serde(default)]
    pub flat_fee: Decimal,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum PerCustomer {
    Tiered { mode: TierMode, tiers: Vec<Tier> },
    Package { size: u64, package_price: Decimal },
}

/// A plan's price, in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub currency: Currency,
    pub per_customer: PerCustomer,
    /// The least a month costs, in major units.
    #[serde(default)]
    pub monthly_minimum: Decimal,
    #[serde(default)]
    pub aggregation: Aggregation,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("a tiered price needs 1 to 20 tiers")]
    TierCount,
    #[error("tier bounds must rise strictly, and only the last tier is unbounded")]
    TierBounds,
    #[error("prices, fees and the minimum cannot be negative")]
    Negative,
    #[error("a package holds at least one customer")]
    PackageSize,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// What a line charges for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LineKind {
    /// Customers in tier `tier` (from 0).
    Customers {
        tier: usize,
    },
    /// The flat fee of tier `tier`.
    TierFee {
        tier: usize,
    },
    Packages,
    /// Up to the monthly minimum.
    MinimumTopUp,
}

/// An invoice line: `quantity` × `unit_price`, rounded once into `amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub kind: LineKind,
    pub quantity: u64,
    pub unit_price: Decimal,
    pub amount: Money,
}

impl Price {
    pub fn validate(&self) -> Result<(), PriceError> {
        if self.monthly_minimum.is_sign_negative() {
            return Err(PriceError::Negative);
        }
        match &self.per_customer {
            PerCustomer::Package { size, package_price } => {
                if *size == 0 {
                    return Err(PriceError::PackageSize);
                }
                if package_price.is_sign_negative() {
                    return Err(PriceError::Negative);
                }
            }
            PerCustomer::Tiered { tiers, .. } => {
                if tiers.is_empty() || tiers.len() > 20 {
                    return Err(PriceError::TierCount);
                }
                if tiers.iter().any(|t| t.unit_price.is_sign_negative() || t.flat_fee.is_sign_negative()) {
                    return Err(PriceError::Negative);
                }
                let (last, bounded) = tiers.split_last().ok_or(PriceError::TierCount)?;
                let bounds: Option<Vec<u64>> = bounded.iter().map(|t| t.up_to).collect();
                let rising =
                    bounds.is_some_and(|b| b.windows(2).all(|w| w[0] < w[1]) && b.first() != Some(&0));
                if last.up_to.is_some() || !rising {
                    return Err(PriceError::TierBounds);
                }
            }
        }
        Ok(())
    }

    /// The lines of a month with `customers` billable customers.
    pub fn lines(&self, customers: u64) -> Result<Vec<Line>, PriceError> {
        self.validate()?;
        let currency = self.currency;
        let line = |kind, quantity: u64, unit_price: Decimal| -> Result<Line, PriceError> {
            let amount = round_to_minor(Decimal::from(quantity) * unit_price, currency)?;
            Ok(Line { kind, quantity, unit_price, amount })
        };
        let mut lines = Vec::new();
        match &self.per_customer {
            PerCustomer::Package { size, package_price } => {
                let packages = customers.div_ceil(*size);
                if packages > 0 {
                    lines.push(line(LineKind::Packages, packages, *package_price)?);
                }
            }
            PerCustomer::Tiered { mode: TierMode::Graduated, tiers } => {
                let mut below = 0u64;
                for (tier, t) in tiers.iter().enumerate() {
                    if customers <= below {
                        break;
                    }
                    let within = t.up_to.map_or(customers, |up_to| customers.min(up_to)) - below;
                    lines.push(line(LineKind::Customers { tier }, within, t.unit_price)?);
                    if !t.flat_fee.is_zero() {
                        lines.push(line(LineKind::TierFee { tier }, 1, t.flat_fee)?);
                    }
                    below = t.up_to.unwrap_or(u64::MAX);
                }
            }
            PerCustomer::Tiered { mode: TierMode::Volume, tiers } => {
                let tier = tiers.iter().position(|t| t.up_to.is_none_or(|up_to| customers <= up_to));
                if let (Some(tier), true) = (tier, customers > 0) {
                    let t = &tiers[tier];
                    lines.push(line(LineKind::Customers { tier }, customers, t.unit_price)?);
                    if !t.flat_fee.is_zero() {
                        lines.push(line(LineKind::TierFee { tier }, 1, t.flat_fee)?);
                    }
                }
            }
        }
        let charged = Money::sum(currency, lines.iter().map(|l| l.amount))?;
        let minimum = round_to_minor(self.monthly_minimum, currency)?;
        if charged.minor < minimum.minor {
            let top_up = Money::new(minimum.minor - charged.minor, currency);
            lines.push(Line {
                kind: LineKind::MinimumTopUp,
                quantity: 1,
                unit_price: top_up.major(),
                amount: top_up,
            });
        }
        Ok(lines)
    }

    /// The month's total for `customers`.
    pub fn total(&self, customers: u64) -> Result<Money, PriceError> {
        Ok(Money::sum(self.currency, self.lines(customers)?.iter().map(|l| l.amount))?)
    }
}

/// The prices the platform's three plans are seeded with (USD, documented in the README).
/// - `usage`: graduated, the first 500 customers at 0.50, the next 1,500 at 0.40, then 0.30;
///   at least 99.00 a month.
/// - `scaled`: volume, up to 1,000 customers at 0.45 each, up to 5,000 at 0.35, beyond at
///   0.25; at least 299.00.
/// - `enterprise`: graduated, the first 2,000 at 0.35, then 0.25; at least 999.00.
pub fn seed_prices() -> [(&'static str, Price); 3] {
    let tier = |up_to: Option<u64>, cents: i64| Tier {
        up_to,
        unit_price: Decimal::new(cents, 2),
        flat_fee: Decimal::ZERO,
    };
    let price = |mode, tiers, minimum: i64| Price {
        currency: Currency::USD,
        per_customer: PerCustomer::Tiered { mode, tiers },
        monthly_minimum: Decimal::from(minimum),
        aggregation: Aggregation::Max,
    };
    [
        (
            "usage",
            price(TierMode::Graduated, vec![tier(Some(500), 50), tier(Some(2_000), 40), tier(None, 30)], 99),
        ),
        (
            "scaled",
            price(TierMode::Volume, vec![tier(Some(1_000), 45), tier(Some(5_000), 35), tier(None, 25)], 299),
        ),
        ("enterprise", price(TierMode::Graduated, vec![tier(Some(2_000), 35), tier(None, 25)], 999)),
    ]
}

#[cfg(test)]
// Amounts in cents are written dollars_cents (250_00 is 250.00), so they read as invoices do.
#[allow(clippy::inconsistent_digit_grouping)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seeded(plan: &str) -> Price {
        seed_prices().into_iter().find(|(id, _)| *id == plan).map(|(_, p)| p).expect("seeded plan")
    }

    fn cents(price: &Price, customers: u64) -> i64 {
        price.total(customers).expect("total").minor
    }

    /// The seed's example tenants: 500, 1,200 and 3,000 customers.
    #[test]
    fn the_seed_tenants_cost_exactly_this() {
        let usage = seeded("usage");
        assert_eq!(cents(&usage, 500), 250_00, "500 × 0.50");
        let lines = usage.lines(1_200).expect("lines");
        let amounts: Vec<(LineKind, u64, i64)> =
            lines.iter().map(|l| (l.kind, l.quantity, l.amount.minor)).collect();
        assert_eq!(
            amounts,
            [(LineKind::Customers { tier: 0 }, 500, 250_00), (LineKind::Customers { tier: 1 }, 700, 280_00)]
        );
        assert_eq!(cents(&seeded("scaled"), 1_200), 420_00, "all 1,200 at the second tier's 0.35");
        let enterprise = seeded("enterprise").lines(3_000).expect("lines");
        let amounts: Vec<(LineKind, i64)> = enterprise.iter().map(|l| (l.kind, l.amount.minor)).collect();
        assert_eq!(
            amounts,
            [
                (LineKind::Customers { tier: 0 }, 700_00),
                (LineKind::Customers { tier: 1 }, 250_00),
                (LineKind::MinimumTopUp, 49_00),
            ],
            "2,000 × 0.35 + 1,000 × 0.25 = 950.00, topped up to the 999.00 minimum"
        );
        assert_eq!(cents(&usage, 0), 99_00, "no customers still costs the minimum");
    }

    #[test]
    fn a_volume_tier_includes_its_bound_and_the_next_customer_moves_every_one() {
        let scaled = seeded("scaled");
        assert_eq!(cents(&scaled, 1_000), 450_00);
        assert_eq!(cents(&scaled, 1_001), 350_35);
        assert_eq!(cents(&scaled, 5_000), 1_750_00);
        assert_eq!(cents(&scaled, 5_001), 1_250_25);
    }

    #[test]
    fn packages_and_fees_and_sub_cent_prices_round_once_per_line() {
        let package = Price {
            currency: Currency::USD,
            per_customer: PerCustomer::Package { size: 100, package_price: Decimal::new(2_500, 2) },
            monthly_minimum: Decimal::ZERO,
            aggregation: Aggregation::Max,
        };
        assert_eq!(cents(&package, 0), 0);
        assert_eq!(cents(&package, 1), 25_00);
        assert_eq!(cents(&package, 201), 75_00, "three started packages");
        let fine = Price {
            per_customer: PerCustomer::Tiered {
                mode: TierMode::Graduated,
                tiers: vec![
                    Tier { up_to: Some(3), unit_price: Decimal::new(1_005, 4), flat_fee: Decimal::ZERO },
                    Tier { up_to: None, unit_price: Decimal::new(1_005, 4), flat_fee: Decimal::new(10, 0) },
                ],
            },
            ..package
        };
        // 3 × 0.1005 = 0.3015 → 0.30; 2 × 0.1005 = 0.201 → 0.20; the fee 10.00.
        assert_eq!(cents(&fine, 5), 30 + 20 + 10_00);
    }

    #[test]
    fn malformed_prices_are_refused() {
        let tiers = |bounds: &[Option<u64>]| PerCustomer::Tiered {
            mode: TierMode::Volume,
            tiers: bounds
                .iter()
                .map(|b| Tier { up_to: *b, unit_price: Decimal::ONE, flat_fee: Decimal::ZERO })
                .collect(),
        };
        let with = |per_customer| Price { per_customer, ..seeded("usage") };
        assert_eq!(with(tiers(&[])).validate(), Err(PriceError::TierCount));
        assert_eq!(with(tiers(&[Some(10)])).validate(), Err(PriceError::TierBounds), "last must be open");
        assert_eq!(with(tiers(&[Some(10), Some(10), None])).validate(), Err(PriceError::TierBounds));
        assert_eq!(with(tiers(&[None, None])).validate(), Err(PriceError::TierBounds));
        assert_eq!(with(tiers(&[Some(0), None])).validate(), Err(PriceError::TierBounds));
        assert_eq!(with(tiers(&[Some(10), None])).validate(), Ok(()));
        let package = PerCustomer::Package { size: 0, package_price: Decimal::ONE };
        assert_eq!(with(package).validate(), Err(PriceError::PackageSize));
        let negative = Price { monthly_minimum: Decimal::NEGATIVE_ONE, ..seeded("usage") };
        assert_eq!(negative.validate(), Err(PriceError::Negative));
    }

    fn arbitrary_tiers() -> impl Strategy<Value = Vec<Tier>> {
        (
            prop::collection::btree_set(1u64..5_000, 0..6),
            prop::collection::vec((0i64..200_000, 0i64..5_000), 7),
        )
            .prop_map(|(bounds, prices)| {
                let bounds: Vec<Option<u64>> = bounds.into_iter().map(Some).chain([None]).collect();
                bounds
                    .into_iter()
                    .zip(prices)
                    .map(|(up_to, (unit, fee))| Tier {
                        up_to,
                        unit_price: Decimal::new(unit, 4),
                        flat_fee: Decimal::new(fee, 2),
                    })
                    .collect()
            })
    }

    fn tiered(mode: TierMode, tiers: Vec<Tier>, minimum: i64) -> Price {
        Price {
            currency: Currency::USD,
            per_customer: PerCustomer::Tiered { mode, tiers },
            monthly_minimum: Decimal::new(minimum, 2),
            aggregation: Aggregation::Max,
        }
    }

    proptest! {
        /// Graduated: the lines' customers add up to the count, and the total never falls as
        /// the count rises — at and around every tier boundary especially.
        #[test]
        fn graduated_lines_cover_every_customer_once_and_never_fall(tiers in arbitrary_tiers(), minimum in 0i64..100_000) {
            let price = tiered(TierMode::Graduated, tiers.clone(), minimum);
            let mut counts: Vec<u64> = vec![0, 1, 7_777];
            for bound in tiers.iter().filter_map(|t| t.up_to) {
                counts.extend([bound - 1, bound, bound + 1]);
            }
            counts.sort_unstable();
            let mut previous = 0i64;
            for count in counts {
                let lines = price.lines(count).expect("lines");
                let customers: u64 = lines
                    .iter()
                    .filter(|l| matches!(l.kind, LineKind::Customers { .. }))
                    .map(|l| l.quantity)
                    .sum();
                prop_assert_eq!(customers, count);
                let total = price.total(count).expect("total").minor;
                prop_assert!(total >= previous, "{} customers cost less than fewer", count);
                prop_assert!(total >= minimum);
                previous = total;
            }
        }

        /// Volume: at and around every bound, every customer is priced by the one tier the
        /// count falls in (bounds inclusive), rounded once.
        #[test]
        fn volume_prices_every_customer_by_the_tier_the_count_falls_in(tiers in arbitrary_tiers()) {
            let price = tiered(TierMode::Volume, tiers.clone(), 0);
            for bound in tiers.iter().filter_map(|t| t.up_to) {
                for count in [bound - 1, bound, bound + 1] {
                    let tier = tiers.iter().position(|t| t.up_to.is_none_or(|u| count <= u)).expect("a tier");
                    let t = &tiers[tier];
                    let expected = if count == 0 {
                        0
                    } else {
                        round_to_minor(Decimal::from(count) * t.unit_price, Currency::USD).expect("fits").minor
                            + round_to_minor(t.flat_fee, Currency::USD).expect("fits").minor
                    };
                    prop_assert_eq!(price.total(count).expect("total").minor, expected, "{} customers", count);
                }
            }
        }

        /// With one tier there is nothing to graduate: both modes agree.
        #[test]
        fn one_tier_prices_alike_in_both_modes(unit in 0i64..100_000, count in 0u64..1_000_000) {
            let tier = vec![Tier { up_to: None, unit_price: Decimal::new(unit, 4), flat_fee: Decimal::ZERO }];
            let graduated = tiered(TierMode::Graduated, tier.clone(), 0).total(count).expect("total");
            let volume = tiered(TierMode::Volume, tier, 0).total(count).expect("total");
            prop_assert_eq!(graduated, volume);
        }
    }
}
