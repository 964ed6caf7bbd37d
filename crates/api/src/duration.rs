//! Durations in the Go format Kubernetes users know (`90s`, `30m`, `24h`, `1h30m`).
//!
//! The schema (a regular expression plus a CEL rule) and [`parse_duration`] accept exactly the
//! same strings: one or more `<number><unit>` terms, where the number is decimal digits with an
//! optional fraction and the unit is one of `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`, and the
//! total is greater than zero and fits Go's `time.Duration` (about 292 years). Signs and the
//! forms `.5s` / `5.s` that Go also accepts are refused: nobody writes them on purpose.

use std::{borrow::Cow, fmt, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::validation::{DURATION_MESSAGE, DURATION_RULE, MAX_DURATION_LENGTH};

/// A duration string such as `90s`, `30m`, `24h` or `1h30m`, kept exactly as the user wrote it.
///
/// Deserialising never fails on a malformed value (a bad stored object must not break a watch);
/// call [`DurationString::parse`] where the value is used. The CRD schema refuses malformed
/// values at admission, so a parse error only happens when validation was bypassed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DurationString(String);

impl DurationString {
    /// Wraps a duration string without validating it.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The string as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the string with [`parse_duration`].
    pub fn parse(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }
}

impl From<&str> for DurationString {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl From<String> for DurationString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Display for DurationString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for DurationString {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "DurationString".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_DURATION_LENGTH,
            "x-kubernetes-validations": [
                { "rule": DURATION_RULE, "message": DURATION_MESSAGE }
            ],
        })
    }
}

/// Why a duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is not in the Go duration format.
    #[error("invalid duration {0:?}: {DURATION_MESSAGE}")]
    Invalid(String),
    /// The string is well-formed but adds up to zero.
    #[error("invalid duration {0:?}: {DURATION_MESSAGE}")]
    NotPositive(String),
    /// The string is longer than the schema allows or exceeds Go's maximum duration.
    #[error("invalid duration {0:?}: too large")]
    TooLarge(String),
}

/// Go's `time.Duration` is an int64 of nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits beyond this cannot change the result by a whole nanosecond.
const MAX_FRACTION_DIGITS: u32 = 18;

/// Parses a Go duration string (`90s`, `30m`, `24h`, `1h30m`, `1.5h`, `250ms`).
///
/// Accepts exactly what the CRD schema accepts; see the module documentation.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    if input.chars().count() > MAX_DURATION_LENGTH {
        return Err(DurationError::TooLarge(input.to_owned()));
    }
    if input.is_empty() {
        return Err(invalid());
    }

    let mut rest = input;
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (whole, after_whole) = split_digits(rest);
        if whole.is_empty() {
            return Err(invalid());
        }
        let (fraction, after_number) = match after_whole.strip_prefix('.') {
            Some(after_dot) => {
                let (fraction, after_fraction) = split_digits(after_dot);
                if fraction.is_empty() {
                    return Err(invalid());
                }
                (fraction, after_fraction)
            }
            None => ("", after_whole),
        };
        let (unit_nanos, after_unit) = split_unit(after_number).ok_or_else(invalid)?;

        let too_large = || DurationError::TooLarge(input.to_owned());
        let whole: u128 = whole.parse().map_err(|_| too_large())?;
        let mut term = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
        if !fraction.is_empty() {
            let digits = &fraction[..fraction.len().min(MAX_FRACTION_DIGITS as usize)];
            let numerator: u128 = digits.parse().map_err(|_| invalid())?;
            let scale = 10u128.pow(digits.len() as u32);
            term += numerator * unit_nanos / scale;
        }
        total_nanos = total_nanos.checked_add(term).ok_or_else(too_large)?;
        if total_nanos > MAX_NANOS {
            return Err(too_large());
        }
        rest = after_unit;
    }

    if total_nanos == 0 {
        return Err(DurationError::NotPositive(input.to_owned()));
    }
    let secs = (total_nanos / 1_000_000_000) as u64;
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Longest units first, so `ms` is not read as `m` followed by garbage.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // µ MICRO SIGN
    ("\u{3bc}s", 1_000), // μ GREEK SMALL LETTER MU
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

fn split_unit(s: &str) -> Option<(u128, &str)> {
    UNITS
        .iter()
        .find_map(|(unit, nanos)| s.strip_prefix(unit).map(|rest| (*nanos, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_table() {
        let ok: &[(&str, Duration)] = &[
            ("90s", Duration::from_secs(90)),
            ("30m", Duration::from_secs(30 * 60)),
            ("24h", Duration::from_secs(24 * 3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h30m15s", Duration::from_secs(5415)),
            ("1.5h", Duration::from_secs(5400)),
            ("0.5s", Duration::from_millis(500)),
            ("250ms", Duration::from_millis(250)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("1ns", Duration::from_nanos(1)),
            ("0h1s", Duration::from_secs(1)),
            ("1m1m", Duration::from_secs(120)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (input, expected) in ok {
            assert_eq!(parse_duration(input).as_ref(), Ok(expected), "{input}");
        }

        let invalid = [
            "", "h", "10", "10 s", " 10s", "10s ", "1d", "10S", "-10s", "+10s", ".5s", "5.s",
            "1.h", "1h-5m", "ms", "1e3s", "10sec", "1h 30m",
        ];
        for input in invalid {
            assert_eq!(
                parse_duration(input),
                Err(DurationError::Invalid(input.to_owned())),
                "{input:?}"
            );
        }

        for input in ["0s", "0h0m", "0.0000000001s", "0.1ns"] {
            assert_eq!(
                parse_duration(input),
                Err(DurationError::NotPositive(input.to_owned())),
                "{input}"
            );
        }

        let long = "1s".repeat(40);
        for input in [
            "2562048h",
            "99999999999999999999999999999999999999999h",
            &long,
        ] {
            assert!(
                matches!(parse_duration(input), Err(DurationError::TooLarge(_))),
                "{input}"
            );
        }
    }

    #[test]
    fn duration_string_keeps_what_the_user_wrote() {
        let d: DurationString = serde_json::from_str("\"1h30m\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.as_str(), "1h30m");
        assert_eq!(d.parse(), Ok(Duration::from_secs(5400)));
        assert_eq!(serde_json::to_string(&d).ok().as_deref(), Some("\"1h30m\""));
        // A malformed stored value still deserialises; the error surfaces where it is used.
        let bad: DurationString =
            serde_json::from_str("\"soon\"").unwrap_or_else(|e| panic!("{e}"));
        assert!(bad.parse().is_err());
    }

    #[test]
    fn error_messages_say_what_is_expected() {
        let err = parse_duration("1d").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("invalid duration \"1d\": must be a positive duration such as 90s, 30m or 24h")
        );
    }
}
