//! A monthly amount for part of a month, by whole days: a bundle added on the 10th, a plan
//! changed on the 20th. The part `[from, to)` (day indexes, 0 to the month's length) is
//! `round(A × to / N) − round(A × from / N)`: each boundary is rounded once, so the parts of
//! any split of a month telescope back to exactly the monthly amount — a tenant that adds and
//! removes a bundle every day pays, cent for cent, what a tenant that kept it pays.

use rust_decimal::Decimal;
use time::OffsetDateTime;

use crate::money::{Money, MoneyError, round_to_minor};
use crate::period::Period;

/// The days `[from_day, to_day)` of `period` a span `[from, to)` covers (`to: None`: still
/// running), for `prorate`. A change counts from the start of its UTC day (`Period::day_index`),
/// so a bundle added at 23:59 on the 10th is charged from the 10th and one removed then stops
/// at the 10th: spans that meet tile the month with no day charged twice or left out. A span
/// entirely outside the period covers nothing (`from_day == to_day`).
pub fn days_covered(period: Period, from: OffsetDateTime, to: Option<OffsetDateTime>) -> (u8, u8) {
    let from_day = period.day_index(from);
    let to_day = to.map_or(period.days(), |to| period.day_index(to));
    (from_day, to_day.max(from_day))
}

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

    #[test]
    fn a_span_covers_the_days_from_its_start_to_its_end_within_the_period() {
        use time::macros::datetime;
        let march = Period::parse("2027-03").expect("period");
        assert_eq!(days_covered(march, datetime!(2027-03-11 15:00 UTC), None), (10, 31));
        assert_eq!(days_covered(march, datetime!(2027-01-05 0:00 UTC), None), (0, 31), "started before");
        let ended = Some(datetime!(2027-03-20 0:00 UTC));
        assert_eq!(days_covered(march, datetime!(2027-02-01 0:00 UTC), ended), (0, 19));
        assert_eq!(days_covered(march, datetime!(2027-04-02 0:00 UTC), None), (31, 31), "not yet");
        assert_eq!(
            days_covered(march, datetime!(2027-01-01 0:00 UTC), Some(datetime!(2027-02-01 0:00 UTC))),
            (0, 0)
        );
    }

    proptest! {
        /// Spans that meet end to start (a bundle added and removed again and again) cover
        /// every day of the month once: their prorated parts sum back to the monthly amount.
        #[test]
        fn spans_that_tile_a_month_sum_back_to_the_whole(
            minor in 0i64..10_000_000,
            month in 1u8..=12,
            year in 2026i32..2030,
            mut cuts in prop::collection::vec(0i64..(31 * 24 * 3600), 0..10),
        ) {
            let period = Period::new(year, time::Month::try_from(month).expect("month")).expect("period");
            let monthly = Money::new(minor, Currency::USD);
            // Spans from before the month to after it, cut at arbitrary seconds in between.
            let start = period.start() - time::Duration::days(3);
            let mut bounds: Vec<OffsetDateTime> =
                cuts.iter_mut().map(|c| period.start() + time::Duration::seconds(*c)).collect();
            bounds.push(start);
            bounds.sort_unstable();
            let mut total = 0i64;
            let mut days = 0u32;
            for (i, from) in bounds.iter().enumerate() {
                let to = bounds.get(i + 1).copied();
                let (a, b) = days_covered(period, *from, to);
                days += u32::from(b - a);
                total += prorate(monthly, a, b, period.days()).expect("fits").minor;
            }
            prop_assert_eq!(days, u32::from(period.days()));
            prop_assert_eq!(total, minor);
        }

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
