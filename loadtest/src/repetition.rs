//! Repeated runs of one scenario merged into one: rows matched by name, every numeric
//! cell the median of the runs with their minimum, maximum and every sample kept; plot
//! points the median per x. Runs that failed are left out when another completed. Also
//! which run is under way, for progress lines and for names a run must not share with
//! the one before (a Kubernetes namespace may still be terminating).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::report::{Cell, Row, Scenario, Series, number};

/// The run under way (from 1) and how many there are; 1 of 1 when not repeated.
static RUN: AtomicUsize = AtomicUsize::new(1);
static RUNS: AtomicUsize = AtomicUsize::new(1);

/// Says that run `run` of `runs` is under way.
pub(crate) fn set_current(run: usize, runs: usize) {
    RUN.store(run, Ordering::Relaxed);
    RUNS.store(runs, Ordering::Relaxed);
}

/// The run under way and how many there are.
pub(crate) fn current() -> (usize, usize) {
    (RUN.load(Ordering::Relaxed), RUNS.load(Ordering::Relaxed))
}

/// A suffix for names that must differ between runs: empty in the first run, `-run<k>`
/// in run k after it.
pub(crate) fn name_suffix() -> String {
    match current().0 {
        1 => String::new(),
        run => format!("-run{run}"),
    }
}

/// Merges the runs of one scenario (in run order; at least one).
pub(crate) fn merge(mut runs: Vec<Scenario>) -> Scenario {
    let total = runs.len();
    if total <= 1 {
        return runs.pop().unwrap_or_else(|| Scenario::new(0, "", ""));
    }
    let failed: Vec<(usize, String)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.error.clone().map(|e| (i + 1, e)))
        .collect();
    let completed: Vec<Scenario> = if failed.len() == total {
        // Every run failed: keep what each measured before failing.
        runs
    } else {
        runs.into_iter().filter(|s| s.error.is_none()).collect()
    };
    // Invariant: `completed` holds at least one run (total ≥ 2 here).
    let last = completed.last().expect("at least one run").clone();
    let mut merged = Scenario {
        rows: merge_rows(&completed),
        series: merge_series(&completed),
        runs: completed.len(),
        failed_runs: Vec::new(),
        ..last
    };
    if failed.len() < total {
        merged.status = "ok".to_owned();
        merged.error = None;
        merged.failed_runs = failed
            .iter()
            .map(|(i, e)| format!("run {i} of {total}: {e}"))
            .collect();
    }
    merged.note(spread_note(merged.runs, total, &failed));
    merged
}

/// The line every merged scenario gets, saying what its figures are.
fn spread_note(merged: usize, total: usize, failed: &[(usize, String)]) -> String {
    let mut note = format!(
        "Figures: median of {merged} runs (min–max); the notes above are from the last run."
    );
    if !failed.is_empty() && failed.len() < total {
        let which: Vec<String> = failed
            .iter()
            .map(|(i, e)| format!("run {i} failed ({e})"))
            .collect();
        note.push_str(&format!(
            " Of {total} runs, {}; its figures are left out.",
            which.join(", ")
        ));
    }
    note
}

/// Rows in the order they first appear over the runs, each cell merged.
fn merge_rows(runs: &[Scenario]) -> Vec<Row> {
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        for row in &run.rows {
            if !names.contains(&row.name.as_str()) {
                names.push(&row.name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| {
            let rows: Vec<&Row> = runs
                .iter()
                .filter_map(|r| r.rows.iter().find(|row| row.name == name))
                .collect();
            let mut keys: Vec<&str> = Vec::new();
            for row in &rows {
                for cell in &row.values {
                    if !keys.contains(&cell.key.as_str()) {
                        keys.push(&cell.key);
                    }
                }
            }
            let values = keys
                .into_iter()
                .map(|key| {
                    let cells: Vec<&Cell> = rows.iter().filter_map(|r| r.cell(key)).collect();
                    merge_cell(key, &cells)
                })
                .collect();
            Row {
                name: name.to_owned(),
                values,
            }
        })
        .collect()
}

/// Numbers: the median with min, max and the samples; anything else: the last run's.
fn merge_cell(key: &str, cells: &[&Cell]) -> Cell {
    let numbers: Vec<f64> = cells.iter().filter_map(|c| c.value.as_f64()).collect();
    if numbers.len() < cells.len() || numbers.is_empty() {
        let value = cells.last().map_or(Value::Null, |c| c.value.clone());
        return Cell::single(key, value);
    }
    let (lo, hi) = numbers
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    Cell {
        key: key.to_owned(),
        value: number(median(&numbers)),
        min: Some(number(lo)),
        max: Some(number(hi)),
        samples: numbers.iter().map(|&v| number(v)).collect(),
    }
}

/// Lines matched by plot and name; each x the median of the runs' y at that x.
fn merge_series(runs: &[Scenario]) -> Vec<Series> {
    let mut merged: Vec<Series> = Vec::new();
    for run in runs {
        for series in &run.series {
            if !merged
                .iter()
                .any(|m| m.plot == series.plot && m.name == series.name)
            {
                merged.push(Series {
                    plot: series.plot,
                    name: series.name.clone(),
                    points: Vec::new(),
                });
            }
        }
    }
    for line in &mut merged {
        let mut xs: Vec<f64> = Vec::new();
        let same = |s: &&Series| s.plot == line.plot && s.name == line.name;
        for series in runs.iter().flat_map(|r| r.series.iter().filter(same)) {
            for &(x, _) in &series.points {
                if !xs.contains(&x) {
                    xs.push(x);
                }
            }
        }
        line.points = xs
            .into_iter()
            .map(|x| {
                let ys: Vec<f64> = runs
                    .iter()
                    .flat_map(|r| r.series.iter().filter(same))
                    .flat_map(|s| s.points.iter().filter(|p| p.0 == x).map(|p| p.1))
                    .collect();
                (x, median(&ys))
            })
            .collect();
    }
    merged
}

/// The median; of an even count, the mean of the middle two.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if !n.is_multiple_of(2) => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mib: f64, sessions: f64) -> Scenario {
        let mut s = Scenario::new(1, "bulk", "One session");
        let mut row = Row::new("QUIC via router")
            .num("MiB/s", mib)
            .num("sessions", sessions);
        row.values
            .push(Cell::single("congestion", Value::String("bbr".to_owned())));
        s.row(row);
        s.note(format!("moved {mib} MiB/s"));
        s.point("throughput", "QUIC", (1.0, mib));
        s
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn runs_merge_by_row_name_into_median_min_max_and_samples() {
        let merged = merge(vec![run(300.0, 1.0), run(350.0, 1.0), run(320.5, 1.0)]);
        assert_eq!(merged.runs, 3);
        let row = &merged.rows[0];
        let cell = row.cell("MiB/s").expect("MiB/s");
        assert_eq!(cell.value, number(320.5));
        assert_eq!(cell.min, Some(number(300.0)));
        assert_eq!(cell.max, Some(number(350.0)));
        assert_eq!(cell.samples, [300.0, 350.0, 320.5].map(number));
        assert_eq!(cell.display(), "320.5 (300–350)");
        // The same integer in every run prints once, as an integer.
        assert_eq!(row.cell("sessions").expect("sessions").display(), "1");
        assert_eq!(row.cell("congestion").expect("text").display(), "bbr");
        // The last run's notes, and the line that says what the figures are.
        assert_eq!(merged.notes[0], "moved 320.5 MiB/s");
        assert!(merged.notes[1].contains("median of 3 runs (min–max)"));
        assert_eq!(merged.series[0].points, [(1.0, 320.5)]);
        let json = serde_json::to_value(&merged).expect("json");
        assert_eq!(json["rows"][0]["values"][0]["samples"][1], 350);
    }

    #[test]
    fn a_failed_run_is_left_out_and_said() {
        let mut broken = run(1.0, 1.0);
        broken.fail(&anyhow::anyhow!("router gone"));
        let merged = merge(vec![run(300.0, 1.0), broken, run(310.0, 1.0)]);
        assert_eq!(merged.status, "ok");
        assert!(merged.error.is_none());
        assert_eq!(merged.runs, 2);
        assert_eq!(merged.failed_runs, ["run 2 of 3: router gone"]);
        assert_eq!(merged.figure("QUIC via router", "MiB/s"), Some(305.0));
        let last = merged.notes.last().expect("note");
        assert!(last.contains("run 2 failed (router gone)"), "{last}");
    }

    #[test]
    fn every_run_failed_keeps_the_failure() {
        let mut a = run(1.0, 1.0);
        a.fail(&anyhow::anyhow!("first"));
        let mut b = run(3.0, 1.0);
        b.fail(&anyhow::anyhow!("second"));
        let merged = merge(vec![a, b]);
        assert_eq!(merged.status, "failed");
        assert_eq!(merged.error.as_deref(), Some("second"));
        assert_eq!(merged.figure("QUIC via router", "MiB/s"), Some(2.0));
    }

    #[test]
    fn a_row_missing_from_one_run_merges_the_others() {
        let mut short = run(300.0, 1.0);
        short.rows.clear();
        let merged = merge(vec![run(200.0, 1.0), short, run(400.0, 1.0)]);
        let cell = merged.rows[0].cell("MiB/s").expect("cell");
        assert_eq!(cell.samples.len(), 2);
        assert_eq!(cell.value, number(300.0));
    }
}
