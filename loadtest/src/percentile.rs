//! Which percentiles a row's sample count supports: a quantile q needs at least 10
//! samples beyond it, so p99 needs 1,000 samples and p99.9 needs 10,000; below that the
//! figure says more about chance than about the system, and the report leaves it out
//! (the cell, and the column when no row keeps it). p50 and p90 are always kept.

use crate::report::{Row, Scenario, Series};

/// Columns that hold a row's sample count.
const COUNT_COLUMNS: [&str; 2] = ["count", "samples"];

/// Samples a tail quantile needs beyond it.
const TAIL_SAMPLES: f64 = 10.0;

/// The quantile a column names (`p99 µs` → 0.99, `RTT p99.9 ms` → 0.999, `ours/Go p99`
/// → 0.99), if any.
pub(crate) fn quantile(key: &str) -> Option<f64> {
    key.split(' ').find_map(|word| {
        let digits = word.strip_prefix('p')?;
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        // `p999` is p99.9, as HDR tools write it.
        let percent = if !digits.contains('.') && digits.len() > 2 {
            format!("{}.{}", &digits[..2], &digits[2..])
        } else {
            digits.to_owned()
        };
        let q = percent.parse::<f64>().ok()? / 100.0;
        (q > 0.0 && q < 1.0).then_some(q)
    })
}

/// Samples needed for quantile `q` (p99 and beyond; lower ones need nothing).
pub(crate) fn needed(q: f64) -> u64 {
    if q < 0.99 {
        return 0;
    }
    (TAIL_SAMPLES / (1.0 - q)).round() as u64
}

/// The row's sample count, 0 when it has none.
fn samples(row: &Row) -> u64 {
    COUNT_COLUMNS
        .iter()
        .find_map(|c| row.figure(c))
        .map_or(0, |n| n.max(0.0) as u64)
}

/// Leaves out the cells whose percentile the row's samples do not support, says so in a
/// note, and trims the latency curves to the quantiles their rows support.
pub(crate) fn apply(s: &mut Scenario) {
    let mut dropped: Vec<String> = Vec::new();
    for row in &mut s.rows {
        let n = samples(row);
        row.values.retain(|cell| {
            let keep = quantile(&cell.key).is_none_or(|q| n >= needed(q));
            if !keep && !dropped.contains(&cell.key) {
                dropped.push(cell.key.clone());
            }
            keep
        });
    }
    if !dropped.is_empty() {
        s.note(format!(
            "Left out where a row has too few samples for them: {} (p99 needs 1,000 samples, \
             p99.9 needs 10,000).",
            dropped
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let rows = s.rows.clone();
    for series in &mut s.series {
        trim_curve(series, &rows);
    }
}

/// A latency curve (x = −log10(1 − q)) keeps the quantiles its row's samples support.
fn trim_curve(series: &mut Series, rows: &[Row]) {
    if series.plot != "latency" {
        return;
    }
    let n = rows
        .iter()
        .find(|r| r.name == series.name)
        .map_or(0, samples);
    series.points.retain(|&(x, _)| {
        let q = 1.0 - 10f64.powf(-x);
        n >= needed(q)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_column_names() {
        let close = |key: &str, q: f64| {
            let found = quantile(key).unwrap_or_else(|| panic!("{key}: no quantile"));
            assert!((found - q).abs() < 1e-12, "{key}: {found}");
        };
        close("p50 µs", 0.5);
        close("RTT p99 ms", 0.99);
        close("p99.9 µs", 0.999);
        close("p999 µs", 0.999);
        close("ours/Go p99", 0.99);
        close("Ready p99 ms", 0.99);
        assert_eq!(quantile("MiB/s"), None);
        assert_eq!(quantile("peers"), None);
        assert_eq!(needed(0.99), 1_000);
        assert_eq!(needed(0.999), 10_000);
        assert_eq!(needed(0.9), 0);
    }

    #[test]
    fn p99_only_from_1000_samples_and_p99_9_from_10000() {
        let mut s = Scenario::new(3, "latency", "Round trips");
        for (name, count) in [("few", 999.0), ("enough", 1_000.0), ("many", 20_000.0)] {
            s.row(
                Row::new(name)
                    .num("p50 µs", 1.0)
                    .num("p99 µs", 2.0)
                    .num("p99.9 µs", 3.0)
                    .num("count", count),
            );
        }
        s.row(
            Row::new("no count")
                .num("RTT p50 ms", 50.0)
                .num("RTT p99 ms", 90.0),
        );
        let mut controller = Row::new("1000 exporters")
            .num("Ready p99 ms", 20.0)
            .num("samples", 200.0);
        controller = controller.num("grants/s", 5.0);
        s.row(controller);
        for x in [std::f64::consts::LOG10_2, 1.0, 2.0, 3.0, 4.0] {
            s.point("latency", "enough", (x, 1.0));
            s.point("latency", "many", (x, 1.0));
        }
        apply(&mut s);
        let keys = |name: &str| -> Vec<String> {
            let row = s.rows.iter().find(|r| r.name == name).expect("row");
            row.values.iter().map(|c| c.key.clone()).collect()
        };
        assert_eq!(keys("few"), ["p50 µs", "count"]);
        assert_eq!(keys("enough"), ["p50 µs", "p99 µs", "count"]);
        assert_eq!(keys("many"), ["p50 µs", "p99 µs", "p99.9 µs", "count"]);
        assert_eq!(keys("no count"), ["RTT p50 ms"]);
        assert_eq!(keys("1000 exporters"), ["samples", "grants/s"]);
        assert!(s.notes[0].contains("`p99 µs`"), "{}", s.notes[0]);
        let xs = |name: &str| -> Vec<f64> {
            let line = s.series.iter().find(|l| l.name == name).expect("line");
            line.points.iter().map(|p| p.0).collect()
        };
        assert_eq!(xs("enough"), [std::f64::consts::LOG10_2, 1.0, 2.0]);
        assert_eq!(xs("many"), [std::f64::consts::LOG10_2, 1.0, 2.0, 3.0]);
    }
}
