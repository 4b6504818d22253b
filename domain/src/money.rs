//! Money: integer minor units of an explicit currency, and the one place
//! where time becomes money.
//!
//! The rounding rule, written down once: an amount for a duration is
//! `ms x rate_minor_per_hour x percent / (3,600,000 x 100)`, computed
//! exactly in 128-bit integers and rounded half away from zero to the
//! minor unit, once per line (per member, kind, rate and multiplier), never
//! per day or per span. A share of an amount (a salary for part of a
//! period) is `amount x part / whole`, rounded the same way. No floating
//! point anywhere.

use serde::{Deserialize, Serialize};

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// The largest amount accepted as a rate or a salary, in minor units
/// (10 billion units of a currency with two decimals).
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;

/// A currency: its ISO 4217 code and how many decimals its minor unit has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    /// The ISO 4217 code (`EUR`).
    pub code: String,
    /// Decimals of the minor unit (2 for cents, 0 for yen).
    pub minor_digits: u8,
}

/// The currencies TrackHrs knows, with their minor units.
const CURRENCIES: [(&str, u8); 24] = [
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// Money that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a currency TrackHrs knows.
    #[error("unknown currency {0:?} (an ISO 4217 code such as EUR or USD)")]
    UnknownCurrency(String),
    /// Not a decimal number.
    #[error("{0:?} is not an amount (digits, with an optional decimal point)")]
    NotAnAmount(String),
    /// More decimals than the currency's minor unit has.
    #[error(
        "{code} amounts have at most {digits} decimals: {text:?} has a fraction of a minor unit"
    )]
    FractionOfMinorUnit {
        /// The currency.
        code: String,
        /// Its decimals.
        digits: u8,
        /// The amount as given.
        text: String,
    },
    /// Negative, or larger than [`MAX_AMOUNT_MINOR`].
    #[error("an amount is at least 0 and at most {MAX_AMOUNT_MINOR} minor units")]
    OutOfRange,
}

impl Currency {
    /// The currency with ISO 4217 `code`.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(c, digits)| Self {
                code: (*c).to_owned(),
                minor_digits: *digits,
            })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// Minor units in one major unit.
    fn scale(&self) -> i64 {
        10_i64.pow(u32::from(self.minor_digits))
    }

    /// A non-negative decimal amount (`"25.50"`) in minor units; refused if
    /// it has a fraction of a minor unit (`"25.505"` in EUR).
    pub fn parse_amount(&self, text: &str) -> Result<i64, MoneyError> {
        let not = || MoneyError::NotAnAmount(text.to_owned());
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || whole.len() > 15 {
            return Err(not());
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > usize::from(self.minor_digits) {
            return Err(MoneyError::FractionOfMinorUnit {
                code: self.code.clone(),
                digits: self.minor_digits,
                text: text.to_owned(),
            });
        }
        let whole: i64 = whole.parse().map_err(|_| not())?;
        let padded = format!(
            "{fraction:0<width$}",
            width = usize::from(self.minor_digits)
        );
        let fraction: i64 = if padded.is_empty() {
            0
        } else {
            padded.parse().map_err(|_| not())?
        };
        let minor = whole
            .checked_mul(self.scale())
            .and_then(|m| m.checked_add(fraction))
            .ok_or(MoneyError::OutOfRange)?;
        if minor > MAX_AMOUNT_MINOR {
            return Err(MoneyError::OutOfRange);
        }
        Ok(minor)
    }

    /// `minor` units written as a decimal (`-12.05`), as in the CSV exports.
    pub fn format(&self, minor: i64) -> String {
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        let scale = self.scale().unsigned_abs();
        match self.minor_digits {
            0 => format!("{sign}{abs}"),
            d => format!(
                "{sign}{}.{:0width$}",
                abs / scale,
                abs % scale,
                width = usize::from(d)
            ),
        }
    }
}

/// `numerator / denominator` rounded half away from zero; saturates
/// rather than overflows. `denominator` is positive.
fn divide(numerator: i128, denominator: i128) -> i64 {
    let half = denominator / 2;
    let rounded = if numerator >= 0 {
        (numerator + half) / denominator
    } else {
        -((-numerator + half) / denominator)
    };
    i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
}

/// What `ms` of time is worth at `rate_minor` an hour times `percent` / 100
/// (150 for time and a half), in minor units, rounded as the module says
/// (1 minute at 100.00 an hour is 1.67).
pub fn amount_for(ms: i64, rate_minor: i64, percent: u32) -> i64 {
    let exact = i128::from(ms)
        .checked_mul(i128::from(rate_minor))
        .and_then(|x| x.checked_mul(i128::from(percent)));
    match exact {
        Some(exact) => divide(exact, i128::from(HOUR_MS) * 100),
        None if (ms < 0) != (rate_minor < 0) => i64::MIN,
        None => i64::MAX,
    }
}

/// `part / whole` of `amount` (a salary for 10 of 30 days), rounded as the
/// module says; 0 when `whole` is 0.
pub fn share(amount: i64, part: i64, whole: i64) -> i64 {
    if whole == 0 {
        return 0;
    }
    divide(i128::from(amount) * i128::from(part), i128::from(whole))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn rounding_is_half_away_from_zero_once_per_amount() {
        // 1 minute at 100.00/h = 166.666... -> 167 minor units.
        assert_eq!(amount_for(60_000, 10_000, 100), 167);
        // 18 s at 1.00/h = 0.5 -> 1 (half up); 17.999 s -> 0.
        assert_eq!(amount_for(18_000, 100, 100), 1);
        assert_eq!(amount_for(17_999, 100, 100), 0);
        // Time and a half: 1 h at 25.01/h = 37.515 -> 37.52.
        assert_eq!(amount_for(HOUR_MS, 2_501, 150), 3_752);
        // Double time of 7.5 h at 20.00/h = 300.00 exactly.
        assert_eq!(amount_for(7 * HOUR_MS + HOUR_MS / 2, 2_000, 200), 30_000);
        // Negative (an adjustment) rounds away from zero too.
        assert_eq!(share(-3, 1, 2), -2);
        assert_eq!(share(3, 1, 2), 2);
        // A salary of 3,000.00 for 10 of 31 days = 967.741... -> 967.74.
        assert_eq!(share(300_000, 10, 31), 96_774);
        assert_eq!(share(100, 1, 0), 0);
    }

    #[test]
    fn amounts_parse_to_minor_units_and_refuse_fractions_of_them() {
        let eur = eur();
        assert_eq!(eur.parse_amount("25.5"), Ok(2_550));
        assert_eq!(eur.parse_amount("25.50"), Ok(2_550));
        assert_eq!(eur.parse_amount("25.500"), Ok(2_550));
        assert_eq!(eur.parse_amount("7"), Ok(700));
        assert!(matches!(
            eur.parse_amount("25.505"),
            Err(MoneyError::FractionOfMinorUnit { digits: 2, .. })
        ));
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.parse_amount("1500"), Ok(1_500));
        assert!(jpy.parse_amount("1500.5").is_err());
        for bad in ["", "-1", "1,5", "1.2.3", ".5", "abc", "1e3"] {
            assert!(eur.parse_amount(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            eur.parse_amount("99999999999999"),
            Err(MoneyError::OutOfRange)
        );
        assert!(Currency::parse("EURO").is_err());
        assert_eq!(eur.format(-1_205), "-12.05");
        assert_eq!(eur.format(7), "0.07");
        assert_eq!(jpy.format(1_500), "1500");
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.format(1_005), "1.005");
    }

    proptest! {
        #[test]
        fn format_and_parse_agree(minor in 0i64..MAX_AMOUNT_MINOR) {
            let eur = eur();
            prop_assert_eq!(eur.parse_amount(&eur.format(minor)), Ok(minor));
        }

        #[test]
        fn an_amount_is_within_half_a_minor_unit_of_the_exact_value(
            ms in 0i64..(24 * HOUR_MS),
            rate in 0i64..1_000_000,
            percent in prop::sample::select(vec![100u32, 125, 150, 200]),
        ) {
            let amount = i128::from(amount_for(ms, rate, percent));
            let exact_x = i128::from(ms) * i128::from(rate) * i128::from(percent);
            let unit = i128::from(HOUR_MS) * 100;
            // |amount - exact| <= 1/2, in units of 1/unit.
            prop_assert!((amount * unit - exact_x).abs() * 2 <= unit);
        }

        #[test]
        fn splitting_a_line_changes_its_amount_by_at_most_a_minor_unit(
            a in 0i64..(40 * HOUR_MS),
            b in 0i64..(40 * HOUR_MS),
            rate in 0i64..100_000,
        ) {
            let whole = amount_for(a + b, rate, 100);
            let parts = amount_for(a, rate, 100) + amount_for(b, rate, 100);
            prop_assert!((whole - parts).abs() <= 1);
        }
    }
}
