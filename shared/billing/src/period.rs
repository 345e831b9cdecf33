//! A billing period: one calendar month in UTC, `[first day 00:00:00, first day of the next
//! month 00:00:00)`. A reading observed exactly at the end belongs to the next period.

use serde::{Deserialize, Serialize};
use std::fmt;
use time::{Date, Month, OffsetDateTime, Time};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Period {
    year: i32,
    month: Month,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a period: write YYYY-MM (2000-01 to 9999-12)")]
pub struct PeriodError(String);

impl Period {
    pub fn new(year: i32, month: Month) -> Result<Period, PeriodError> {
        if (2000..=9999).contains(&year) {
            Ok(Period { year, month })
        } else {
            Err(PeriodError(format!("{year}-{:02}", u8::from(month))))
        }
    }

    /// `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Period, PeriodError> {
        let bad = || PeriodError(text.to_owned());
        let (year, month) = text.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u8 = month.parse().map_err(|_| bad())?;
        Period::new(year, Month::try_from(month).map_err(|_| bad())?).map_err(|_| bad())
    }

    /// The period `at` falls in.
    pub fn containing(at: OffsetDateTime) -> Period {
        let at = at.to_offset(time::UtcOffset::UTC);
        Period { year: at.year(), month: at.month() }
    }

    pub fn start(&self) -> OffsetDateTime {
        first_day(self.year, self.month).with_time(Time::MIDNIGHT).assume_utc()
    }

    /// The start of the next period (exclusive end of this one).
    pub fn end(&self) -> OffsetDateTime {
        self.next().start()
    }

    pub fn next(&self) -> Period {
        match self.month {
            Month::December => Period { year: self.year + 1, month: Month::January },
            month => Period { year: self.year, month: month.next() },
        }
    }

    pub fn previous(&self) -> Period {
        match self.month {
            Month::January => Period { year: self.year - 1, month: Month::December },
            month => Period { year: self.year, month: month.previous() },
        }
    }

    pub fn days(&self) -> u8 {
        self.month.length(self.year)
    }

    /// The whole day (from 0) of the period `at` falls on, clamped to the period: what a
    /// mid-period change is prorated by.
    pub fn day_index(&self, at: OffsetDateTime) -> u8 {
        if at <= self.start() {
            return 0;
        }
        if at >= self.end() {
            return self.days();
        }
        let elapsed = (at - self.start()).whole_days();
        u8::try_from(elapsed).unwrap_or(self.days()).min(self.days())
    }
}

fn first_day(year: i32, month: Month) -> Date {
    // Day 1 exists in every month of every year `Period::new` accepts.
    Date::from_calendar_date(year, month, 1).unwrap_or(Date::MIN)
}

impl TryFrom<String> for Period {
    type Error = PeriodError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Period::parse(&text)
    }
}

impl From<Period> for String {
    fn from(period: Period) -> Self {
        period.to_string()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_period_is_a_utc_calendar_month_with_an_exclusive_end() {
        let feb = Period::parse("2028-02").expect("period");
        assert_eq!(feb.days(), 29, "a leap year");
        assert_eq!(feb.start(), datetime!(2028-02-01 0:00 UTC));
        assert_eq!(feb.end(), datetime!(2028-03-01 0:00 UTC));
        assert_eq!(Period::containing(datetime!(2028-03-01 0:00 UTC)), feb.next());
        assert_eq!(Period::containing(datetime!(2028-03-01 0:30 +01:00)), feb, "UTC decides");
        let dec = Period::parse("2026-12").expect("period");
        assert_eq!(
            (dec.next().to_string(), dec.previous().to_string()),
            ("2027-01".into(), "2026-11".into())
        );
        assert_eq!(feb.day_index(datetime!(2028-02-10 12:00 UTC)), 9);
        assert_eq!(feb.day_index(datetime!(2027-01-01 0:00 UTC)), 0);
        assert_eq!(feb.day_index(datetime!(2029-01-01 0:00 UTC)), 29);
    }

    #[test]
    fn only_yyyy_mm_parses() {
        for bad in
            ["2026-13", "2026-00", "2026-1", "26-01", "2026/01", "1999-12", "+202-01", "2026-01-01", ""]
        {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Period::parse("2026-01").map(|p| p.to_string()), Ok("2026-01".to_owned()));
    }
}
