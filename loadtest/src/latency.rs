//! Latency samples and their summary: percentiles in microseconds, from an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Recorded durations, in nanoseconds.
#[derive(Debug)]
pub(crate) struct Samples {
    histogram: Histogram<u64>,
}

/// What a report says about a set of samples.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) mean_us: f64,
    /// (quantile, µs) points of the distribution, for plots.
    #[serde(skip)]
    pub(crate) curve: Vec<(f64, f64)>,
}

impl Samples {
    pub(crate) fn new() -> Samples {
        // Three significant digits from 1 ns to 1 hour: 0.1 % resolution at every scale.
        // Invariant: these constant bounds are valid (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
        let histogram =
            Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds");
        Samples { histogram }
    }

    pub(crate) fn record(&mut self, elapsed: std::time::Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.histogram.saturating_record(nanos);
    }

    pub(crate) fn summary(&self) -> Summary {
        let us = |nanos: u64| nanos as f64 / 1000.0;
        let h = &self.histogram;
        let curve = [
            0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
        ]
        .iter()
        .map(|&q| (q, us(h.value_at_quantile(q))))
        .collect();
        Summary {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
            curve,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let mut samples = Samples::new();
        for i in 1..=1000u64 {
            samples.record(Duration::from_micros(i));
        }
        let summary = samples.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_us - 500.0).abs() < 1.0, "{}", summary.p50_us);
        assert!((summary.p99_us - 990.0).abs() < 2.0, "{}", summary.p99_us);
        assert!(summary.max_us >= 999.0);
    }
}
