//! The results of a run: scenarios as tables of figures, the targets and whether they are
//! met, the integrity tally; written as `results.json` and `report.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Scenario {
    /// 1 to 8, as the issue numbers them.
    pub(crate) number: u8,
    /// The subcommand name.
    pub(crate) key: String,
    pub(crate) title: String,
    /// `ok`, or `failed` with `error` (figures measured before the failure are kept).
    pub(crate) status: String,
    pub(crate) error: Option<String>,
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

/// One figure (or text) of a row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cell {
    pub(crate) key: String,
    pub(crate) value: Value,
}

/// A line of an SVG plot: `plot` names the file (without `.svg`).
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) plot: &'static str,
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A target of the issue and what the run measured for it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Target {
    pub(crate) target: String,
    pub(crate) measured: Option<f64>,
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
    pub(crate) integrity: Integrity,
    /// Whether the h2 rows were compared with the upstream Go router, or why not.
    pub(crate) reference: String,
    pub(crate) targets: Vec<Target>,
    pub(crate) scenarios: Vec<Scenario>,
}

impl Scenario {
    pub(crate) fn new(number: u8, key: &str, title: &str) -> Scenario {
        Scenario {
            number,
            key: key.to_owned(),
            title: title.to_owned(),
            status: "ok".to_owned(),
            error: None,
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
        self.values.iter().find(|c| c.key == key)?.value.as_f64()
    }

    /// A number, rounded to what a reader needs (4 significant digits at most).
    pub(crate) fn num(mut self, key: &str, value: f64) -> Row {
        self.values.push(Cell {
            key: key.to_owned(),
            value: serde_json::Number::from_f64(round(value)).map_or(Value::Null, Value::Number),
        });
        self
    }
}

fn round(value: f64) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let digits = 4 - value.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits.clamp(0, 9));
    (value * scale).round() / scale
}

impl Report {
    /// Writes `results.json` and `report.md` into `dir`.
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
        let _ = writeln!(
            out,
            "Generated {} by `jumpstarter-loadtest` ({} preset) on {} CPUs in {:.0} s. \
             Figures are from one run on a shared machine; compare ratios within the run.\n",
            self.generated, self.preset, self.cpus, self.seconds
        );
        let _ = writeln!(
            out,
            "Integrity: {} transfers checked end to end, {} failed.\n",
            self.integrity.checked, self.integrity.failed
        );
        let _ = writeln!(out, "Reference: {}\n", self.reference);
        let _ = writeln!(out, "## Targets\n");
        let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
        for t in &self.targets {
            let measured = t
                .measured
                .map_or_else(|| "–".to_owned(), |m| format!("{} {}", round(m), t.unit));
            let _ = writeln!(out, "| {} | {} | {} |", t.target, measured, t.verdict);
        }
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
                        .map(|c| {
                            row.values
                                .iter()
                                .find(|v| v.key == *c)
                                .map_or_else(String::new, |v| match &v.value {
                                    Value::String(text) => text.clone(),
                                    Value::Null => "–".to_owned(),
                                    other => other.to_string(),
                                })
                        })
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
    fn verdicts_follow_the_direction_of_the_limit() {
        assert_eq!(target("t", Some(1.0), "x", 2.0, true).verdict, "met");
        assert_eq!(target("t", Some(3.0), "x", 2.0, true).verdict, "missed");
        assert_eq!(target("t", Some(3.0), "x", 2.0, false).verdict, "met");
        assert_eq!(target("t", None, "x", 2.0, false).verdict, "not measured");
    }
}
