//! Progress lines on standard error, each with the time since the run started, so that a
//! long run shows where it is.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Prints one progress line.
pub(crate) fn step(message: impl std::fmt::Display) {
    let start = START.get_or_init(Instant::now);
    eprintln!("[{:7.1}s] {message}", start.elapsed().as_secs_f64());
}
