//! Deprecated forms met while the flags were parsed (old environment names, integer
//! seconds). Flags are parsed before logging starts, so the notices wait here until
//! [`crate::logging::init`] logs them as warnings.

use std::sync::Mutex;

static PENDING: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records one deprecation notice (once per distinct text).
pub fn note(notice: String) {
    let mut pending = PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if !pending.contains(&notice) {
        pending.push(notice);
    }
}

/// The notices recorded so far; they are forgotten.
pub fn take() -> Vec<String> {
    std::mem::take(
        &mut *PENDING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

/// Logs every pending notice as a warning ([`crate::logging::init`] calls it).
pub fn warn_pending() {
    for notice in take() {
        tracing::warn!("deprecated: {notice}");
    }
}

/// Prints every pending notice to standard error, for binaries without a log subscriber.
pub fn print_pending() {
    for notice in take() {
        eprintln!("warning: deprecated: {notice}");
    }
}

/// Whether a pending notice satisfies `predicate` (without taking it).
#[cfg(test)]
pub(crate) fn pending_any(predicate: impl Fn(&str) -> bool) -> bool {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .any(|notice| predicate(notice))
}
