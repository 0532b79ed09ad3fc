//! Progress lines on standard error, each with the time since the run started, so that a
//! long run shows where it is; while a scenario repeats, each line says which run it is.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();
/// The run under way and how many there are (`--repeat`); 1 of 1 when not repeated.
static RUN: AtomicUsize = AtomicUsize::new(1);
static RUNS: AtomicUsize = AtomicUsize::new(1);

/// Prints one progress line.
pub(crate) fn step(message: impl std::fmt::Display) {
    let start = START.get_or_init(Instant::now);
    let (run, runs) = (RUN.load(Ordering::Relaxed), RUNS.load(Ordering::Relaxed));
    let seconds = start.elapsed().as_secs_f64();
    if runs > 1 {
        eprintln!("[{seconds:7.1}s] [run {run}/{runs}] {message}");
    } else {
        eprintln!("[{seconds:7.1}s] {message}");
    }
}

/// Says in every following line that run `run` of `runs` is under way.
pub(crate) fn set_run(run: usize, runs: usize) {
    RUN.store(run, Ordering::Relaxed);
    RUNS.store(runs, Ordering::Relaxed);
}
