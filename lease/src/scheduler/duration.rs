//! Go `time.Duration` text (`"1h0m0s"`, `"30s"`, `"1m30.5s"`, `"250ms"`): the form the CRDs
//! store `spec.duration` and `maximumDuration` in (`metav1.Duration`).

use time::Duration;

/// Why a Go duration string was rejected. Messages follow Go's `time.ParseDuration`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or outside Go's ±292-year range.
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit.
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit other than `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    #[error("time: unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
}

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000_000;
const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Go's limit: a `time.Duration` is an `int64` count of nanoseconds.
const MAX_MAGNITUDE: u64 = 1 << 63;

/// Parses a Go duration string, as Go's `time.ParseDuration` does.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let mut rest = input.as_bytes();
    let mut negative = false;
    if let Some((&sign, tail)) = rest.split_first()
        && (sign == b'-' || sign == b'+')
    {
        negative = sign == b'-';
        rest = tail;
    }
    if rest == b"0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        if !(rest[0] == b'.' || rest[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Integer part.
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut whole: u64 = 0;
        for &digit in &rest[..digits] {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u64::from(digit - b'0')))
                .filter(|w| *w <= MAX_MAGNITUDE)
                .ok_or_else(invalid)?;
        }
        let had_whole = digits > 0;
        rest = &rest[digits..];
        // Fraction part: digits beyond u64 precision are consumed but ignored, as in Go.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut had_fraction = false;
        if rest.first() == Some(&b'.') {
            rest = &rest[1..];
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let mut overflowed = false;
            for &digit in &rest[..digits] {
                if overflowed {
                    continue;
                }
                match fraction
                    .checked_mul(10)
                    .and_then(|f| f.checked_add(u64::from(digit - b'0')))
                    .filter(|f| *f <= MAX_MAGNITUDE)
                {
                    Some(next) => {
                        fraction = next;
                        scale *= 10.0;
                    }
                    None => overflowed = true,
                }
            }
            had_fraction = digits > 0;
            rest = &rest[digits..];
        }
        if !had_whole && !had_fraction {
            return Err(invalid());
        }
        // Unit: everything up to the next digit or '.'.
        let unit_len = rest
            .iter()
            .take_while(|b| !(**b == b'.' || b.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let unit_bytes = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = unit_nanos(unit_bytes).ok_or_else(|| DurationError::UnknownUnit {
            unit: String::from_utf8_lossy(unit_bytes).into_owned(),
            input: input.to_owned(),
        })?;
        if whole > MAX_MAGNITUDE / unit {
            return Err(invalid());
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // Go computes the fractional part in float64; do the same for identical results.
            // The cast saturates, and the bound check below catches any overflow.
            value = value.saturating_add((fraction as f64 * (unit as f64 / scale)) as u64);
            if value > MAX_MAGNITUDE {
                return Err(invalid());
            }
        }
        total = total
            .checked_add(value)
            .filter(|t| *t <= MAX_MAGNITUDE)
            .ok_or_else(invalid)?;
    }
    if !negative && total > MAX_MAGNITUDE - 1 {
        return Err(invalid());
    }
    let nanos = i128::from(total);
    let nanos = if negative { -nanos } else { nanos };
    Ok(Duration::nanoseconds_i128(nanos))
}

/// Formats a duration as Go's `Duration.String()` does: `"0s"`, `"1.5ms"`, `"1h0m0s"`,
/// `"1m30.5s"`. Sub-second values use `ns`, `µs` or `ms`.
pub fn format(duration: Duration) -> String {
    let nanos = duration.whole_nanoseconds();
    let negative = nanos < 0;
    let magnitude = nanos.unsigned_abs();
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    let second = u128::from(NANOS_PER_SECOND);
    if magnitude == 0 {
        out.push_str("0s");
    } else if magnitude < u128::from(NANOS_PER_MICRO) {
        out.push_str(&format!("{magnitude}ns"));
    } else if magnitude < u128::from(NANOS_PER_MILLI) {
        out.push_str(&with_fraction(magnitude, 3));
        out.push_str("µs");
    } else if magnitude < second {
        out.push_str(&with_fraction(magnitude, 6));
        out.push_str("ms");
    } else {
        let whole_seconds = magnitude / second;
        let hours = whole_seconds / 3600;
        let minutes = (whole_seconds / 60) % 60;
        if hours > 0 {
            out.push_str(&format!("{hours}h{minutes}m"));
        } else if minutes > 0 {
            out.push_str(&format!("{minutes}m"));
        }
        let seconds_and_fraction = magnitude % (60 * second);
        out.push_str(&with_fraction(seconds_and_fraction, 9));
        out.push('s');
    }
    out
}

/// `value / 10^digits`, with the fraction's trailing zeros (and a bare point) dropped.
fn with_fraction(value: u128, digits: u32) -> String {
    let divisor = 10u128.pow(digits);
    let whole = value / divisor;
    let fraction = value % divisor;
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0width$}", width = digits as usize);
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        b"us" => NANOS_PER_MICRO,
        // U+00B5 (micro sign) and U+03BC (Greek small letter mu), both followed by 's'.
        [0xc2, 0xb5, b's'] | [0xce, 0xbc, b's'] => NANOS_PER_MICRO,
        b"ms" => NANOS_PER_MILLI,
        b"s" => NANOS_PER_SECOND,
        b"m" => 60 * NANOS_PER_SECOND,
        b"h" => 3600 * NANOS_PER_SECOND,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::nanoseconds(1), "1ns"),
            (Duration::nanoseconds(1_100), "1.1µs"),
            (Duration::microseconds(2_200), "2.2ms"),
            (Duration::milliseconds(1_500), "1.5s"),
            (Duration::seconds(30), "30s"),
            (Duration::milliseconds(90_500), "1m30.5s"),
            (Duration::hours(1), "1h0m0s"),
            (Duration::seconds(3_723), "1h2m3s"),
            (Duration::hours(48), "48h0m0s"),
            (Duration::seconds(-5), "-5s"),
            (Duration::nanoseconds(i64::MAX), "2562047h47m16.854775807s"),
            (Duration::nanoseconds(i64::MIN), "-2562047h47m16.854775808s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format(duration), text);
        }
    }

    #[test]
    fn parses_like_go() {
        let cases = [
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("5s", Duration::seconds(5)),
            ("+5s", Duration::seconds(5)),
            ("-1.5h", Duration::minutes(-90)),
            ("1h30m", Duration::minutes(90)),
            ("1m30.5s", Duration::milliseconds(90_500)),
            (".5s", Duration::milliseconds(500)),
            ("1.s", Duration::seconds(1)),
            ("100ms", Duration::milliseconds(100)),
            ("3us", Duration::microseconds(3)),
            ("3µs", Duration::microseconds(3)),
            ("3μs", Duration::microseconds(3)),
            ("7ns", Duration::nanoseconds(7)),
            ("1h0m0s", Duration::hours(1)),
            ("43800h", Duration::hours(43_800)),
            ("9223372036854775807ns", Duration::nanoseconds(i64::MAX)),
            ("-9223372036854775808ns", Duration::nanoseconds(i64::MIN)),
            ("1.0000000001s", Duration::seconds(1)),
        ];
        for (text, duration) in cases {
            assert_eq!(parse(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn rejects_like_go() {
        for text in [
            "",
            "+",
            "-",
            "s",
            ".s",
            "1",
            "1.5",
            "1x",
            "1 s",
            "3000000h",
            "9223372036854775808ns",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert_eq!(
            parse("10").expect_err("must fail").to_string(),
            "time: missing unit in duration \"10\""
        );
        assert_eq!(
            parse("10d").expect_err("must fail").to_string(),
            "time: unknown unit \"d\" in duration \"10d\""
        );
        assert_eq!(
            parse("x").expect_err("must fail").to_string(),
            "time: invalid duration \"x\""
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in any::<i64>()) {
            let duration = Duration::nanoseconds(nanos);
            prop_assert_eq!(parse(&format(duration)), Ok(duration));
        }

        #[test]
        fn parse_never_panics(text in "[-+0-9.a-zµ]{0,16}") {
            let _ = parse(&text);
        }
    }
}
