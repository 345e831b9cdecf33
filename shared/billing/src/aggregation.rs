//! The billable customer count of a period, from a tenant's usage reports.
//!
//! A report says "at `observed_at` I served `customer_count` customers"; the count holds until
//! the next report. So the count at the period's start is the last report before it (carried
//! in), and reports at or after the period's end belong to later periods. Reports are ordered
//! by `observed_at`, then `report_id`, and a `report_id` counts once: the same reports in any
//! order, repeated or arriving late, give the same figure.
//! - `max` (the default): the peak of the counts in force during the period.
//! - `latest`: the count in force at the period's end.
//! - `average`: time-weighted over the part of the period some report covers (time before
//!   the first report, when none was carried in, is not billed), rounded to whole customers
//!   half up, once.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

use crate::period::Period;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    #[default]
    Max,
    Latest,
    Average,
}

/// One usage report, as the aggregation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub report_id: String,
    pub observed_at: OffsetDateTime,
    pub customer_count: u64,
}

/// The counts in force during `period`, in order: `(from, count)`, the first from the period's
/// start when a report was carried in.
fn in_force(period: &Period, readings: &[Reading]) -> Vec<(OffsetDateTime, u64)> {
    let (start, end) = (period.start(), period.end());
    // One per report id (the first seen wins: a report id's values never change once accepted),
    // ordered by time then id.
    let mut by_id: BTreeMap<&str, &Reading> = BTreeMap::new();
    for reading in readings {
        by_id.entry(reading.report_id.as_str()).or_insert(reading);
    }
    let mut ordered: Vec<&Reading> = by_id.into_values().collect();
    ordered.sort_by(|a, b| (a.observed_at, &a.report_id).cmp(&(b.observed_at, &b.report_id)));
    let carried = ordered.iter().rev().find(|r| r.observed_at < start).map(|r| (start, r.customer_count));
    carried
        .into_iter()
        .chain(
            ordered
                .iter()
                .filter(|r| r.observed_at >= start && r.observed_at < end)
                .map(|r| (r.observed_at, r.customer_count)),
        )
        .collect()
}

/// The billable customer count of `period` under `aggregation` (0 when nothing was reported).
pub fn billable_count(aggregation: Aggregation, period: &Period, readings: &[Reading]) -> u64 {
    let counts = in_force(period, readings);
    match aggregation {
        Aggregation::Max => counts.iter().map(|(_, count)| *count).max().unwrap_or(0),
        Aggregation::Latest => counts.last().map_or(0, |(_, count)| *count),
        Aggregation::Average => {
            let Some((covered_from, _)) = counts.first() else { return 0 };
            let end = period.end();
            let covered = (end - *covered_from).whole_seconds();
            if covered <= 0 {
                return 0;
            }
            let mut weighted = Decimal::ZERO;
            for (i, (from, count)) in counts.iter().enumerate() {
                let until = counts.get(i + 1).map_or(end, |(next, _)| *next);
                weighted += Decimal::from(*count) * Decimal::from((until - *from).whole_seconds());
            }
            let average = (weighted / Decimal::from(covered))
                .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
            u64::try_from(average).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn reading(id: &str, at: OffsetDateTime, count: u64) -> Reading {
        Reading { report_id: id.into(), observed_at: at, customer_count: count }
    }

    fn march() -> Period {
        Period::parse("2027-03").expect("period")
    }

    #[test]
    fn each_aggregation_reads_the_counts_in_force() {
        let readings = [
            reading("feb", datetime!(2027-02-20 0:00 UTC), 400),
            reading("a", datetime!(2027-03-11 0:00 UTC), 1000),
            reading("b", datetime!(2027-03-21 0:00 UTC), 750),
            reading("april", datetime!(2027-04-01 0:00 UTC), 5000),
        ];
        assert_eq!(billable_count(Aggregation::Max, &march(), &readings), 1000);
        assert_eq!(billable_count(Aggregation::Latest, &march(), &readings), 750);
        // 10 days at 400 (carried in), 10 at 1000, 11 at 750, over 31 days:
        // (4000 + 10000 + 8250) / 31 = 717.74 → 718.
        assert_eq!(billable_count(Aggregation::Average, &march(), &readings), 718);
        assert_eq!(billable_count(Aggregation::Max, &march(), &[]), 0);
        let only_later = [reading("april", datetime!(2027-04-01 0:00 UTC), 5000)];
        assert_eq!(billable_count(Aggregation::Latest, &march(), &only_later), 0);
    }

    #[test]
    fn average_bills_only_the_covered_part_of_the_period() {
        // First report on day 17 of 31: the average is of the 15 covered days only.
        let readings = [
            reading("a", datetime!(2027-03-17 0:00 UTC), 300),
            reading("b", datetime!(2027-03-24 12:00 UTC), 600),
        ];
        // 7.5 days at 300, 7.5 days at 600 → 450.
        assert_eq!(billable_count(Aggregation::Average, &march(), &readings), 450);
    }

    #[test]
    fn a_report_id_counts_once_with_its_first_values() {
        let readings = [
            reading("a", datetime!(2027-03-02 0:00 UTC), 100),
            reading("a", datetime!(2027-03-03 0:00 UTC), 9_999),
        ];
        assert_eq!(billable_count(Aggregation::Max, &march(), &readings), 100);
    }

    fn arbitrary_readings() -> impl Strategy<Value = Vec<Reading>> {
        let start = march().start().unix_timestamp() - 10 * 86_400;
        let span = 45 * 86_400;
        prop::collection::vec((0u16..40, 0i64..span, 0u64..20_000), 0..30).prop_map(move |raw| {
            raw.into_iter()
                .map(|(id, offset, count)| Reading {
                    report_id: format!("r{id}"),
                    observed_at: OffsetDateTime::from_unix_timestamp(start + offset).expect("time"),
                    customer_count: count,
                })
                // A report id has one set of values (a different one is refused at ingestion).
                .fold(Vec::<Reading>::new(), |mut kept, r| {
                    if !kept.iter().any(|k| k.report_id == r.report_id) {
                        kept.push(r);
                    }
                    kept
                })
        })
    }

    proptest! {
        /// Shuffled, duplicated and late-arriving reports give the same billable count.
        #[test]
        fn order_and_duplicates_never_change_the_count(
            readings in arbitrary_readings(),
            seed in any::<u64>(),
            duplicate in any::<prop::sample::Index>(),
        ) {
            let mut shuffled = readings.clone();
            if !shuffled.is_empty() {
                shuffled.push(shuffled[duplicate.index(shuffled.len())].clone());
            }
            // A deterministic shuffle from the seed.
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, usize::try_from(state % (i as u64 + 1)).expect("index"));
            }
            for aggregation in [Aggregation::Max, Aggregation::Latest, Aggregation::Average] {
                prop_assert_eq!(
                    billable_count(aggregation, &march(), &readings),
                    billable_count(aggregation, &march(), &shuffled)
                );
            }
        }

        /// The average lies between the smallest and the largest count in force, and never
        /// above the peak.
        #[test]
        fn the_average_is_bounded_by_the_counts_in_force(readings in arbitrary_readings()) {
            let counts: Vec<u64> = in_force(&march(), &readings).into_iter().map(|(_, c)| c).collect();
            let average = billable_count(Aggregation::Average, &march(), &readings);
            if let (Some(low), Some(high)) = (counts.iter().min(), counts.iter().max()) {
                prop_assert!(*low <= average && average <= *high);
                prop_assert_eq!(billable_count(Aggregation::Max, &march(), &readings), *high);
            } else {
                prop_assert_eq!(average, 0);
            }
        }
    }
}
