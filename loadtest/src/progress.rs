//! Progress lines on standard error, each with the time since the run started, so that a
//! long run shows where it is; while a scenario repeats, each line says which run it is.

use std::sync::OnceLock;
use std::time::Instant;

use crate::repetition;

static START: OnceLock<Instant> = OnceLock::new();

/// Prints one progress line.
pub(crate) fn step(message: impl std::fmt::Display) {
    let start = START.get_or_init(Instant::now);
    let seconds = start.elapsed().as_secs_f64();
    match repetition::current() {
        (run, runs) if runs > 1 => eprintln!("[{seconds:7.1}s] [run {run}/{runs}] {message}"),
        _ => eprintln!("[{seconds:7.1}s] {message}"),
    }
}
