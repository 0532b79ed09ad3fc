//! The results of a run: scenarios as tables of figures, the targets and whether they are
//! met, the integrity tally, the environment; written as `results.json` and `report.md`.
//!
//! Numbers are stored rounded to 4 significant digits (integers as integers) and printed
//! the same way; a figure merged over repetitions prints as `median (min–max)`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::environment::Environment;

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scenario {
    /// 1 to 9, as the issues number them.
    pub(crate) number: u8,
    /// The subcommand name.
    pub(crate) key: String,
    pub(crate) title: String,
    /// `ok`, or `failed` with `error` (figures measured before the failure are kept).
    pub(crate) status: String,
    pub(crate) error: Option<String>,
    /// How many runs the figures are merged from (1 when not repeated).
    pub(crate) runs: usize,
    /// Errors of the repetitions that failed while others completed (their figures are
    /// left out of the merge).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) failed_runs: Vec<String>,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
    /// Lines for the plots; not in the JSON (the rows carry the figures).
    #[serde(skip)]
    pub(crate) series: Vec<Series>,
}

/// One line of a scenario's table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) values: Vec<Cell>,
}

/// One figure (or text) of a row. Merged over repetitions, `value` is the median and
/// `min`, `max` and `samples` (one per run, in run order) say how far the runs spread.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    pub(crate) key: String,
    pub(crate) value: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) min: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max: Option<Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) samples: Vec<Value>,
}

/// A line of an SVG plot: `plot` names the file (without `.svg`).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) plot: &'static str,
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A target of the issue and what the run measured for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Target {
    pub(crate) target: String,
    /// The figure from the merged (median) rows.
    pub(crate) measured: Option<f64>,
    /// The lowest and highest of the same figure over the repetitions, when repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max: Option<f64>,
    pub(crate) unit: String,
    /// `met`, `missed`, or `not measured`.
    pub(crate) verdict: String,
}

/// Transfers checked end to end in the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Integrity {
    pub(crate) checked: u64,
    pub(crate) failed: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) generated: String,
    pub(crate) preset: String,
    pub(crate) cpus: usize,
    pub(crate) seconds: f64,
    /// Runs of every scenario asked for (`--repeat`).
    pub(crate) repeat: usize,
    pub(crate) environment: Environment,
    pub(crate) integrity: Integrity,
    /// Whether the h2 rows were compared with the upstream Go router, or why not.
    pub(crate) reference: String,
    pub(crate) targets: Vec<Target>,
    pub(crate) scenarios: Vec<Scenario>,
}

/// Why the Go baseline is the version it is: a fact about the upstream repositories, so
/// fixed text (see `tools/reference-router.sh`).
pub(crate) const GO_BASELINE: &str = "The Go baseline is the router of \
    github.com/jumpstarter-dev/jumpstarter-controller v0.7.1 (`cmd/router`), the newest \
    version the Go module proxy serves under that module path. From 0.8 on the controller \
    and router live in the monorepo github.com/jumpstarter-dev/jumpstarter under \
    `controller/`, whose go.mod (at tag v0.9.0 too) still declares the module path \
    github.com/jumpstarter-dev/jumpstarter-controller, which does not match that location \
    (it would be github.com/jumpstarter-dev/jumpstarter/controller, tagged \
    controller/v0.9.0), so the proxy cannot serve 0.9.0's router under either path. \
    The forwarding code (`internal/service/router_support.go`) is the same in v0.7.1 and \
    0.9.0; 0.9.0's router differs in status codes of refused tokens and in logging.";

/// The file of hand-written analysis beside the report, which a run never writes.
pub(crate) const ANALYSIS: &str = "analysis.md";

impl Scenario {
    pub(crate) fn new(number: u8, key: &str, title: &str) -> Scenario {
        Scenario {
            number,
            key: key.to_owned(),
            title: title.to_owned(),
            status: "ok".to_owned(),
            error: None,
            runs: 1,
            failed_runs: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            series: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, row: Row) {
        self.rows.push(row);
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub(crate) fn fail(&mut self, error: &anyhow::Error) {
        self.status = "failed".to_owned();
        self.error = Some(format!("{error:#}"));
    }

    /// The number in column `key` of row `row`.
    pub(crate) fn figure(&self, row: &str, key: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.name == row)?.figure(key)
    }

    pub(crate) fn point(&mut self, plot: &'static str, name: &str, point: (f64, f64)) {
        match self
            .series
            .iter_mut()
            .find(|s| s.plot == plot && s.name == name)
        {
            Some(series) => series.points.push(point),
            None => self.series.push(Series {
                plot,
                name: name.to_owned(),
                points: vec![point],
            }),
        }
    }
}

impl Row {
    pub(crate) fn new(name: impl Into<String>) -> Row {
        Row {
            name: name.into(),
            values: Vec::new(),
        }
    }

    /// The number in column `key`.
    pub(crate) fn figure(&self, key: &str) -> Option<f64> {
        self.cell(key)?.value.as_f64()
    }

    pub(crate) fn cell(&self, key: &str) -> Option<&Cell> {
        self.values.iter().find(|c| c.key == key)
    }

    /// A number, rounded to what a reader needs (4 significant digits at most, integers
    /// as integers). Percentiles in `key` are named p50/p90/p99/p99.9.
    pub(crate) fn num(mut self, key: &str, value: f64) -> Row {
        self.values
            .push(Cell::single(&percentile_names(key), number(value)));
        self
    }
}

impl Cell {
    pub(crate) fn single(key: &str, value: Value) -> Cell {
        Cell {
            key: key.to_owned(),
            value,
            min: None,
            max: None,
            samples: Vec::new(),
        }
    }

    /// The cell as a table shows it: text as is, a number rounded, and the spread of a
    /// merged figure as `median (min–max)` when the runs differ.
    pub(crate) fn display(&self) -> String {
        let shown = |v: &Value| match v {
            Value::String(text) => text.clone(),
            Value::Null => "–".to_owned(),
            Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), format_number),
            other => other.to_string(),
        };
        let value = shown(&self.value);
        match (&self.min, &self.max) {
            (Some(min), Some(max)) if min != max => {
                format!("{value} ({}–{})", shown(min), shown(max))
            }
            _ => value,
        }
    }
}

/// `value` rounded to 4 significant digits as a JSON number: an integer when it is one.
pub(crate) fn number(value: f64) -> Value {
    let rounded = round(value);
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        // In range: |rounded| < 1e15 < i64::MAX, and it has no fraction.
        return Value::from(rounded as i64);
    }
    serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

/// A figure as text: integers as integers (thousands grouped from 10,000 on), anything
/// else to 4 significant digits.
pub(crate) fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let rounded = round(value);
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        let digits = (rounded.abs() as i64).to_string();
        let grouped = if digits.len() > 4 {
            let mut out = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    out.push(',');
                }
                out.push(c);
            }
            out
        } else {
            digits
        };
        return if rounded < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    format!("{rounded}")
}

/// `key` with percentiles named the one way the report uses: `p999` becomes `p99.9`.
fn percentile_names(key: &str) -> String {
    key.split(' ')
        .map(|word| if word == "p999" { "p99.9" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn round(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let digits = 4 - value.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits.clamp(0, 9));
    (value * scale).round() / scale
}

impl Report {
    /// Writes `results.json` and `report.md` into `dir` (never the analysis beside them).
    pub(crate) fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        Ok(())
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Load test report\n");
        let repeated = if self.repeat > 1 {
            format!(
                "Every scenario ran {} times; each figure is the median of the runs, with the \
                 lowest and highest in parentheses: `median (min–max)`.",
                self.repeat
            )
        } else {
            "Every scenario ran once.".to_owned()
        };
        let _ = writeln!(
            out,
            "Generated {} by `jumpstarter-loadtest` ({} preset) on {} CPUs in {} s. {repeated} \
             Compare ratios within the run: they share the machine and its moment.\n",
            self.generated,
            self.preset,
            self.cpus,
            format_number(self.seconds.round())
        );
        let _ = writeln!(
            out,
            "What the figures mean, and what bounds the missed targets: [{ANALYSIS}]({ANALYSIS}) \
             (written by hand; a run does not change it).\n"
        );
        let _ = writeln!(
            out,
            "Integrity: {} transfers checked end to end, {} failed.\n",
            self.integrity.checked, self.integrity.failed
        );
        let _ = writeln!(out, "Reference: {}\n", self.reference);
        let _ = writeln!(out, "{GO_BASELINE}\n");
        let _ = writeln!(out, "## Environment\n");
        out.push_str(&self.environment.markdown());
        let _ = writeln!(out, "\n## Targets\n");
        out.push_str(&targets_table(&self.targets));
        for s in &self.scenarios {
            let _ = writeln!(out, "\n## {}. {}\n", s.number, s.title);
            if let Some(error) = &s.error {
                let _ = writeln!(out, "**Failed:** {error}\n");
            }
            let mut columns: Vec<&str> = Vec::new();
            for row in &s.rows {
                for cell in &row.values {
                    if !columns.contains(&cell.key.as_str()) {
                        columns.push(&cell.key);
                    }
                }
            }
            if !s.rows.is_empty() {
                let _ = writeln!(out, "| | {} |", columns.join(" | "));
                let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
                for row in &s.rows {
                    let cells: Vec<String> = columns
                        .iter()
                        .map(|c| row.cell(c).map_or_else(String::new, Cell::display))
                        .collect();
                    let _ = writeln!(out, "| {} | {} |", row.name, cells.join(" | "));
                }
            }
            for note in &s.notes {
                let _ = writeln!(out, "\n- {note}");
            }
            let mut plots: Vec<&str> = s.series.iter().map(|x| x.plot).collect();
            plots.dedup();
            for plot in plots {
                let _ = writeln!(out, "\n![{plot}]({plot}.svg)");
            }
        }
        out
    }
}

/// The targets as a Markdown table (the report's, and the README's).
pub(crate) fn targets_table(targets: &[Target]) -> String {
    let mut out = String::from("| target | measured | verdict |\n|---|---|---|\n");
    for t in targets {
        let measured = t.measured.map_or_else(
            || "–".to_owned(),
            |m| {
                let spread = match (t.min, t.max) {
                    (Some(lo), Some(hi)) if round(lo) != round(hi) => {
                        format!(" ({}–{})", format_number(lo), format_number(hi))
                    }
                    _ => String::new(),
                };
                format!("{}{spread} {}", format_number(m), t.unit)
            },
        );
        let _ = writeln!(out, "| {} | {} | {} |", t.target, measured, t.verdict);
    }
    out
}

/// A target check: `measured` against `limit`, met when `at_most` and measured ≤ limit,
/// or when not `at_most` and measured ≥ limit.
pub(crate) fn target(
    text: &str,
    measured: Option<f64>,
    unit: &str,
    limit: f64,
    at_most: bool,
) -> Target {
    let verdict = match measured {
        None => "not measured",
        Some(m) if (at_most && m <= limit) || (!at_most && m >= limit) => "met",
        Some(_) => "missed",
    };
    Target {
        target: text.to_owned(),
        measured,
        min: None,
        max: None,
        unit: unit.to_owned(),
        verdict: verdict.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(round(123.456_78), 123.5);
        assert_eq!(round(0.012_345_6), 0.01235);
        assert_eq!(round(98_765.4), 98_765.0);
    }

    #[test]
    fn integers_print_as_integers() {
        assert_eq!(format_number(1.0), "1");
        assert_eq!(format_number(20_000.0), "20,000");
        assert_eq!(format_number(1461.0), "1461");
        assert_eq!(format_number(11_338.4), "11,338");
        assert_eq!(format_number(-1_234_567.0), "-1,234,567");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(18.4512), "18.45");
        assert_eq!(format_number(0.484_43), "0.4844");
        assert_eq!(format_number(1.5), "1.5");
        // Stored as JSON integers too, so results.json says 20000, not 20000.0.
        assert_eq!(number(20_000.0).to_string(), "20000");
        assert_eq!(number(2.5).to_string(), "2.5");
        let row = Row::new("r").num("count", 20_000.0).num("MiB/s", 1.0);
        let cells: Vec<String> = row.values.iter().map(Cell::display).collect();
        assert_eq!(cells, ["20,000", "1"]);
    }

    #[test]
    fn percentiles_are_named_p99_9() {
        let row = Row::new("r").num("p999 µs", 3.0).num("RTT p99 ms", 1.0);
        assert_eq!(row.values[0].key, "p99.9 µs");
        assert_eq!(row.values[1].key, "RTT p99 ms");
    }

    #[test]
    fn merged_cells_show_their_spread() {
        let mut cell = Cell::single("MiB/s", number(349.0));
        cell.min = Some(number(340.25));
        cell.max = Some(number(360.0));
        assert_eq!(cell.display(), "349 (340.3–360)");
        cell.min = Some(number(349.0));
        cell.max = Some(number(349.0));
        assert_eq!(cell.display(), "349");
    }

    #[test]
    fn verdicts_follow_the_direction_of_the_limit() {
        assert_eq!(target("t", Some(1.0), "x", 2.0, true).verdict, "met");
        assert_eq!(target("t", Some(3.0), "x", 2.0, true).verdict, "missed");
        assert_eq!(target("t", Some(3.0), "x", 2.0, false).verdict, "met");
        assert_eq!(target("t", None, "x", 2.0, false).verdict, "not measured");
    }
}
