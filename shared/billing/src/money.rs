//! Money: an integer count of a currency's minor units (cents), never a float. Prices may be
//! finer than a cent (a per-customer price of 0.125), so a line's exact amount is a decimal
//! that `round_to_minor` turns into minor units — once per line, half away from zero (0.5 ¢
//! becomes 1 ¢, −0.5 ¢ becomes −1 ¢), the rule written on every invoice.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 code of a currency with two decimal places (USD, EUR, GBP, NGN, KES, ZAR, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    /// Three ASCII letters, upper-cased.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let bytes = code.as_bytes();
        match bytes {
            [a, b, c] if bytes.iter().all(u8::is_ascii_alphabetic) => {
                Ok(Currency([a.to_ascii_uppercase(), b.to_ascii_uppercase(), c.to_ascii_uppercase()]))
            }
            _ => Err(MoneyError::BadCurrency(code.to_owned())),
        }
    }

    pub fn code(&self) -> &str {
        // Only ever built from ASCII letters.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Minor units per major unit (every currency this platform bills in has two decimals).
    pub const fn minor_per_major(&self) -> i64 {
        100
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Currency::parse(&code)
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> Self {
        currency.code().to_owned()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("{0:?} is not a three-letter currency code")]
    BadCurrency(String),
    #[error("amounts in {0} and {1} cannot be added")]
    MixedCurrencies(Currency, Currency),
    #[error("the amount does not fit in minor units")]
    Overflow,
}

/// An amount in one currency's minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub const fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::MixedCurrencies(self.currency, other.currency));
        }
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, currency: self.currency })
    }

    /// The sum of `amounts`, all in `currency`.
    pub fn sum(currency: Currency, amounts: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        amounts.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }

    /// The amount in major units, exactly (for display).
    pub fn major(&self) -> Decimal {
        Decimal::new(self.minor, 2)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.major(), self.currency)
    }
}

/// `major` major units of `currency` (exact, possibly finer than a cent) in minor units,
/// rounded half away from zero: the platform's one rounding rule.
pub fn round_to_minor(major: Decimal, currency: Currency) -> Result<Money, MoneyError> {
    let minor = major
        .checked_mul(Decimal::from(currency.minor_per_major()))
        .ok_or(MoneyError::Overflow)?
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    let minor = i64::try_from(minor).map_err(|_| MoneyError::Overflow)?;
    Ok(Money { minor, currency })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).expect("decimal")
    }

    #[test]
    fn half_a_cent_rounds_away_from_zero_and_nothing_else_moves() {
        let usd = Currency::USD;
        assert_eq!(round_to_minor(d("0.005"), usd).map(|m| m.minor), Ok(1));
        assert_eq!(round_to_minor(d("0.0049999"), usd).map(|m| m.minor), Ok(0));
        assert_eq!(round_to_minor(d("-0.005"), usd).map(|m| m.minor), Ok(-1));
        assert_eq!(round_to_minor(d("62.5"), usd).map(|m| m.minor), Ok(6250));
        assert_eq!(round_to_minor(Decimal::MAX, usd), Err(MoneyError::Overflow));
    }

    #[test]
    fn currencies_are_three_letters_and_never_mix() {
        assert_eq!(Currency::parse("ngn").map(|c| c.to_string()), Ok("NGN".to_owned()));
        assert!(Currency::parse("US").is_err() && Currency::parse("U$D").is_err());
        let eur = Currency::parse("EUR").expect("eur");
        let mixed = Money::new(1, Currency::USD).checked_add(Money::new(1, eur));
        assert_eq!(mixed, Err(MoneyError::MixedCurrencies(Currency::USD, eur)));
        assert_eq!(Money::new(1234, eur).to_string(), "12.34 EUR");
    }
}

/// An amount as the API shows it: integer minor units and the currency, and the same in major
/// units as text. One type for every function, so the OpenAPI document has one `MoneyView`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MoneyView {
    /// In minor units (cents).
    pub minor: i64,
    #[schema(example = "USD")]
    pub currency: String,
    /// In major units, exact (`"250.00"`).
    #[schema(example = "250.00")]
    pub amount: String,
}

impl MoneyView {
    pub fn of(money: Money) -> Self {
        MoneyView {
            minor: money.minor,
            currency: money.currency.to_string(),
            amount: money.major().to_string(),
        }
    }
}
