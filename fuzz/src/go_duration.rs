//! Go durations: the lease scheduler's exact `time.ParseDuration` (CRD fields, `CreateLease`,
//! the controller's flags) and the duration flag parser of the other binaries.

use jumpstarter_lease::scheduler::duration::{self, DurationError};
use jumpstarter_shell::{deprecation, duration_flag};

pub(crate) fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match duration::parse(text) {
        Ok(parsed) => {
            // Go's range: an int64 count of nanoseconds.
            let nanos = parsed.whole_nanoseconds();
            assert!(i128::from(i64::MIN) <= nanos && nanos <= i128::from(i64::MAX));
            let rendered = duration::format(parsed);
            assert_eq!(
                duration::parse(&rendered),
                Ok(parsed),
                "{text:?} rendered as {rendered:?}"
            );
        }
        Err(error) => {
            let input = match &error {
                DurationError::Invalid(input) | DurationError::MissingUnit(input) => input,
                DurationError::UnknownUnit { input, .. } => input,
            };
            assert_eq!(input, text);
        }
    }
    if let Ok(parsed) = duration_flag::parse(text) {
        let rendered = duration_flag::format(parsed);
        assert_eq!(
            duration_flag::parse(&rendered),
            Ok(parsed),
            "{text:?} rendered as {rendered:?}"
        );
    }
    // Integer seconds leave a deprecation notice for the binary to print; forget them.
    deprecation::take();
}
