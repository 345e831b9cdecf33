//! A monthly amount for part of a month, by whole days: a bundle added on the 10th, a plan
//! changed on the 20th. The part `[from, to)` (day indexes, 0 to the month's length) is
//! `round(A × to / N) − round(A × from / N)`: each boundary is rounded once, so the parts of
//! any split of a month telescope back to exactly the monthly amount — a tenant that adds and
//! removes a bundle every day pays, cent for cent, what a tenant that kept it pays.

use rust_decimal::Decimal;

use crate::money::{Money, MoneyError, round_to_minor};

/// `monthly` for the days `[from_day, to_day)` of a month of `days` days.
pub fn prorate(monthly: Money, from_day: u8, to_day: u8, days: u8) -> Result<Money, MoneyError> {
    let days = days.max(1);
    let (from_day, to_day) = (from_day.min(days), to_day.min(days));
    if to_day <= from_day {
        return Ok(Money::zero(monthly.currency));
    }
    let at = |day: u8| {
        let share = Decimal::new(monthly.minor, 2) * Decimal::from(day) / Decimal::from(days);
        round_to_minor(share, monthly.currency)
    };
    let (end, start) = (at(to_day)?, at(from_day)?);
    Ok(Money::new(end.minor - start.minor, monthly.currency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use proptest::prelude::*;

    #[test]
    fn a_whole_month_is_the_monthly_amount_and_a_part_is_its_share() {
        let crm = Money::new(4_900, Currency::USD);
        assert_eq!(prorate(crm, 0, 30, 30).map(|m| m.minor), Ok(4_900));
        // Added on the 11th of a 30-day month: 20 of 30 days, 32.666.. → 32.67.
        assert_eq!(prorate(crm, 10, 30, 30).map(|m| m.minor), Ok(3_267));
        assert_eq!(prorate(crm, 0, 10, 30).map(|m| m.minor), Ok(1_633), "the rest is the other part");
        assert_eq!(prorate(crm, 12, 12, 30).map(|m| m.minor), Ok(0));
        assert_eq!(prorate(crm, 20, 10, 30).map(|m| m.minor), Ok(0));
    }

    proptest! {
        /// Any split of a month into consecutive parts sums back to the monthly amount.
        #[test]
        fn the_parts_of_a_month_sum_to_the_whole(
            minor in 0i64..10_000_000,
            days in 28u8..=31,
            mut cuts in prop::collection::vec(0u8..=31, 0..12),
        ) {
            let monthly = Money::new(minor, Currency::USD);
            cuts.push(0);
            cuts.push(days);
            cuts.iter_mut().for_each(|c| *c = (*c).min(days));
            cuts.sort_unstable();
            let total: i64 = cuts
                .windows(2)
                .map(|w| prorate(monthly, w[0], w[1], days).map(|m| m.minor).expect("fits"))
                .sum();
            prop_assert_eq!(total, minor);
        }

        /// A year of monthly amounts, each month split anywhere, has no rounding drift.
        #[test]
        fn a_year_of_prorated_months_has_no_drift(minor in 0i64..1_000_000, cut in 0u8..=31) {
            let monthly = Money::new(minor, Currency::USD);
            let mut year = 0i64;
            for days in [31u8, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
                let cut = cut.min(days);
                year += prorate(monthly, 0, cut, days).expect("fits").minor;
                year += prorate(monthly, cut, days, days).expect("fits").minor;
            }
            prop_assert_eq!(year, 12 * minor);
        }
    }
}
