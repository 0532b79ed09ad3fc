//! Duration flag values. Every duration flag takes a Go duration (`10s`, `1h30m`, `250ms`);
//! integer seconds (`30`), which the router's flags took before, still work as a
//! deprecated form. The controller parses with its exact Go-duration parser
//! (fractions such as `1.5h`) through [`legacy_seconds`]; the router, which must not depend
//! on the controller, parses with [`parse`].

use std::time::Duration;

/// Integer seconds: `Some` (with a deprecation notice) when `text` is only digits. `"0"`
/// is a Go duration too, so it passes without a notice.
pub fn legacy_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = text.parse::<u64>().ok()?;
    if seconds != 0 {
        crate::deprecation::note(format!(
            "duration {text:?} in integer seconds: write {text}s"
        ));
    }
    Some(seconds)
}

/// A duration flag value: a Go-style duration of whole units (`30s`, `1h30m`, `500ms`),
/// or (deprecated) integer seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    if let Some(seconds) = legacy_seconds(text) {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// A duration flag's value: clap parses it through its `FromStr` (no `value_parser` needed);
/// its `Display` is what [`parse`] reads back, so constants can be `default_value_t`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationArg(pub Duration);

impl DurationArg {
    /// The flag's value parser.
    pub fn parse(text: &str) -> Result<DurationArg, String> {
        parse(text).map(DurationArg)
    }
}

impl std::str::FromStr for DurationArg {
    type Err = String;

    fn from_str(text: &str) -> Result<DurationArg, String> {
        DurationArg::parse(text)
    }
}

impl std::fmt::Display for DurationArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format(self.0))
    }
}

/// `duration` as a flag value that [`parse`] reads back, for defaults in `--help`.
pub fn format(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse("soon").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn integer_seconds_still_parse_with_a_notice() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert!(crate::deprecation::pending_any(
            |n| n.contains("\"30\" in integer seconds")
        ));
    }

    #[test]
    fn formatted_defaults_read_back() {
        for duration in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_secs(5400),
        ] {
            assert_eq!(parse(&format(duration)), Ok(duration));
        }
        assert_eq!(format(Duration::from_secs(30)), "30s");
    }
}
