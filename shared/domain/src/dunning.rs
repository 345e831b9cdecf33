//! Dunning: what a failed payment sets in motion, as pure rules (the store and the payments
//! function carry them out).
//!
//! A failed invoice opens a dunning at step 0 and the tenant is `past_due` at once. The
//! schedule is a list of days after the failure (default 3, 5, 7, as Stripe's Smart Retries
//! and Kill Bill's overdue states space theirs): at each one the dunning job makes step
//! `k` (1-based), which queues one more charge attempt and degrades the tenant:
//! - the last step suspends it for `non_payment` (compute stops, data kept);
//! - the step before the last restricts it (premium bundles off in its license);
//! - earlier steps keep it `past_due` (the license says so: the container shows a banner).
//!
//! A payment at any point (a retry that succeeds, or a webhook) clears the dunning: the
//! tenant is `current` again and a suspension for non-payment, and only that one, is lifted.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// A tenant's billing standing: what its license states and how far dunning degraded it.
/// Ordered from good to worst, so a tenant with several unpaid invoices stands at the worst.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BillingStanding {
    #[default]
    Current,
    PastDue,
    Restricted,
    Suspended,
}

impl BillingStanding {
    pub const ALL: [BillingStanding; 4] = [
        BillingStanding::Current,
        BillingStanding::PastDue,
        BillingStanding::Restricted,
        BillingStanding::Suspended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BillingStanding::Current => "current",
            BillingStanding::PastDue => "past_due",
            BillingStanding::Restricted => "restricted",
            BillingStanding::Suspended => "suspended",
        }
    }

    pub fn is_current(&self) -> bool {
        *self == BillingStanding::Current
    }

    /// The `billing_status` claim of the tenant's license: a suspended tenant runs nothing,
    /// and when it runs again (resumed by a payment) it is `current`; until then its license
    /// says `restricted`.
    pub fn license_status(self) -> &'static str {
        match self {
            BillingStanding::Current => "current",
            BillingStanding::PastDue => "past_due",
            BillingStanding::Restricted | BillingStanding::Suspended => "restricted",
        }
    }

    /// Whether the license keeps the tenant's premium bundles.
    pub fn keeps_bundles(self) -> bool {
        self <= BillingStanding::PastDue
    }
}

/// The event of every dunning move, in the tenant's log.
pub const DUNNING_STEP_EVENT: &str = "tenant.dunning_step";
/// The event of a dunning cleared by a payment, in the tenant's log.
pub const DUNNING_CLEARED_EVENT: &str = "tenant.dunning_cleared";

/// The longest schedule accepted: a dunning longer than two months would outlive the next
/// invoice's.
pub const MAX_SCHEDULE_DAY: u32 = 60;

/// The days after the failure at which the dunning steps happen, strictly increasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningSchedule {
    days: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("a dunning schedule needs at least one day")]
    Empty,
    #[error("{0:?} is not a day (whole days after the failure, 1 to {MAX_SCHEDULE_DAY})")]
    NotADay(String),
    #[error("the days must increase strictly (day {0} after day {1})")]
    NotIncreasing(u32, u32),
}

impl Default for DunningSchedule {
    fn default() -> Self {
        DunningSchedule { days: vec![3, 5, 7] }
    }
}

impl std::str::FromStr for DunningSchedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        DunningSchedule::parse(text)
    }
}

impl DunningSchedule {
    /// From a list of days (`3,5,7`).
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let mut days: Vec<u32> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let day: u32 = part
                .parse()
                .ok()
                .filter(|d| (1..=MAX_SCHEDULE_DAY).contains(d))
                .ok_or_else(|| ScheduleError::NotADay(part.to_owned()))?;
            if let Some(&last) = days.last()
                && day <= last
            {
                return Err(ScheduleError::NotIncreasing(day, last));
            }
            days.push(day);
        }
        if days.is_empty() {
            return Err(ScheduleError::Empty);
        }
        Ok(DunningSchedule { days })
    }

    pub fn days(&self) -> &[u32] {
        &self.days
    }

    /// How many steps the schedule makes (the last one suspends).
    pub fn steps(&self) -> u32 {
        u32::try_from(self.days.len()).unwrap_or(u32::MAX)
    }

    /// The standing after step `step` (0: the failure itself).
    pub fn standing_after(&self, step: u32) -> BillingStanding {
        let last = self.steps();
        if step >= last {
            BillingStanding::Suspended
        } else if step > 0 && step + 1 == last {
            BillingStanding::Restricted
        } else {
            BillingStanding::PastDue
        }
    }

    /// When step `step` (1-based) is due, for a dunning started at `started`; `None` past
    /// the last step.
    pub fn due_at(&self, started: OffsetDateTime, step: u32) -> Option<OffsetDateTime> {
        let index = usize::try_from(step.checked_sub(1)?).ok()?;
        self.days.get(index).map(|day| started + Duration::days(i64::from(*day)))
    }

    /// The charge attempt step `step` makes (the first charge was attempt 1).
    pub fn attempt_of(step: u32) -> u32 {
        step.saturating_add(1)
    }

    /// The step a dunning at `step` makes next, if it is due at `now`.
    pub fn next_due(&self, started: OffsetDateTime, step: u32, now: OffsetDateTime) -> Option<u32> {
        let next = step.checked_add(1)?;
        self.due_at(started, next).filter(|at| *at <= now).map(|_| next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_retries_on_days_3_5_7_and_degrades_past_due_restricted_suspended() {
        let schedule = DunningSchedule::default();
        assert_eq!(schedule.days(), [3, 5, 7]);
        assert_eq!(DunningSchedule::parse(" 3, 5 ,7 "), Ok(schedule.clone()));
        let standings: Vec<_> = (0..=3).map(|s| schedule.standing_after(s)).collect();
        assert_eq!(
            standings,
            [
                BillingStanding::PastDue,
                BillingStanding::PastDue,
                BillingStanding::Restricted,
                BillingStanding::Suspended
            ]
        );
        let start = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(schedule.due_at(start, 1), Some(start + Duration::days(3)));
        assert_eq!(schedule.due_at(start, 3), Some(start + Duration::days(7)));
        assert_eq!(schedule.due_at(start, 0), None);
        assert_eq!(schedule.due_at(start, 4), None);
        assert_eq!(schedule.next_due(start, 0, start + Duration::days(2)), None);
        assert_eq!(schedule.next_due(start, 0, start + Duration::days(3)), Some(1));
        assert_eq!(schedule.next_due(start, 3, start + Duration::days(30)), None);
        assert_eq!(DunningSchedule::attempt_of(1), 2);
    }

    #[test]
    fn a_schedule_is_refused_unless_its_days_are_increasing_whole_days() {
        assert_eq!(DunningSchedule::parse(""), Err(ScheduleError::Empty));
        assert_eq!(DunningSchedule::parse("3,3"), Err(ScheduleError::NotIncreasing(3, 3)));
        assert_eq!(DunningSchedule::parse("5,3"), Err(ScheduleError::NotIncreasing(3, 5)));
        assert_eq!(DunningSchedule::parse("0"), Err(ScheduleError::NotADay("0".into())));
        assert_eq!(DunningSchedule::parse("2.5"), Err(ScheduleError::NotADay("2.5".into())));
        assert_eq!(DunningSchedule::parse("61"), Err(ScheduleError::NotADay("61".into())));
        let single = DunningSchedule::parse("10").expect("one day");
        assert_eq!(single.standing_after(0), BillingStanding::PastDue);
        assert_eq!(single.standing_after(1), BillingStanding::Suspended);
    }

    #[test]
    fn the_license_says_what_the_standing_allows() {
        assert_eq!(BillingStanding::Current.license_status(), "current");
        assert_eq!(BillingStanding::PastDue.license_status(), "past_due");
        assert_eq!(BillingStanding::Restricted.license_status(), "restricted");
        assert_eq!(BillingStanding::Suspended.license_status(), "restricted");
        let kept: Vec<_> = BillingStanding::ALL.iter().map(|s| s.keeps_bundles()).collect();
        assert_eq!(kept, [true, true, false, false]);
    }

    fn schedules() -> impl Strategy<Value = DunningSchedule> {
        proptest::collection::btree_set(1..=MAX_SCHEDULE_DAY, 1..6).prop_map(|days| {
            let text: Vec<String> = days.iter().map(u32::to_string).collect();
            DunningSchedule::parse(&text.join(",")).expect("increasing days parse")
        })
    }

    proptest! {
        /// Whatever the schedule: the standing never improves step by step, the failure is
        /// past_due, the last step (and only it) suspends, steps fall due in order, and a
        /// sweep at any time makes at most the next step, so a late sweep catches up one
        /// step per run and never skips the retry of a step.
        #[test]
        fn dunning_only_degrades_and_suspends_at_its_last_step(schedule in schedules(), now_days in 0i64..90) {
            let start = OffsetDateTime::UNIX_EPOCH;
            let last = schedule.steps();
            prop_assert_eq!(schedule.standing_after(0), BillingStanding::PastDue);
            for step in 0..=last {
                prop_assert!(schedule.standing_after(step) <= schedule.standing_after(step + 1));
                prop_assert_eq!(schedule.standing_after(step) == BillingStanding::Suspended, step >= last);
                if step >= 1 && step < last {
                    prop_assert!(schedule.due_at(start, step) < schedule.due_at(start, step + 1));
                }
            }
            let now = start + Duration::days(now_days);
            for step in 0..=last {
                if let Some(next) = schedule.next_due(start, step, now) {
                    prop_assert_eq!(next, step + 1);
                    prop_assert!(schedule.due_at(start, next).is_some_and(|at| at <= now));
                }
            }
        }

        #[test]
        fn a_schedule_reads_back_from_its_days(schedule in schedules()) {
            let text: Vec<String> = schedule.days().iter().map(u32::to_string).collect();
            prop_assert_eq!(DunningSchedule::parse(&text.join(",")), Ok(schedule));
        }
    }
}
