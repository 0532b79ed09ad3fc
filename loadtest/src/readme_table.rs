//! The README's load-test table, made from a written report (`results.json`): the
//! targets with what the run measured, between two marker comments so that a script
//! (`tools/readme-table.sh`) can replace the block in the README.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::report::{Target, targets_table};

/// The comment line before the table in the README.
pub(crate) const BEGIN: &str = "<!-- loadtest:table -->";
/// The comment line after it.
pub(crate) const END: &str = "<!-- loadtest:end -->";

/// `readme-table`'s options.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub(crate) struct ReadmeTableArgs {
    /// The report to read.
    #[arg(
        long,
        env = "JUMPSTARTER_LOADTEST_RESULTS",
        default_value = "loadtest/report/results.json"
    )]
    pub(crate) from: PathBuf,
}

/// What the table needs of `results.json`.
#[derive(Debug, Deserialize)]
struct Results {
    targets: Vec<Target>,
}

/// The block for the README from the report at `path`.
pub(crate) fn from_file(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    block(&text).with_context(|| format!("{} is not a load-test report", path.display()))
}

/// The block (markers included, ending with a newline) from the text of `results.json`.
pub(crate) fn block(results_json: &str) -> anyhow::Result<String> {
    let results: Results = serde_json::from_str(results_json)?;
    anyhow::ensure!(!results.targets.is_empty(), "it has no targets");
    Ok(format!(
        "{BEGIN}\n{}{END}\n",
        targets_table(&results.targets)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_is_the_targets_table_between_the_markers() {
        let json = r#"{
            "generated": "2026-12-03T00:00:00Z",
            "targets": [
                {"target": "QUIC direct ≥ 0.9× TLS/TCP direct at 1 % loss", "measured": 0.95,
                 "min": 0.9123, "max": 1.0, "unit": "×", "verdict": "met"},
                {"target": "≥ 100 grants/s with 1,000 exporters", "measured": 282.0,
                 "unit": "grants/s", "verdict": "met"},
                {"target": "h2 via router ≥ 2× the Go router", "measured": null,
                 "unit": "×", "verdict": "not measured"}
            ],
            "scenarios": []
        }"#;
        assert_eq!(
            block(json).expect("block"),
            "<!-- loadtest:table -->\n\
             | target | measured | verdict |\n\
             |---|---|---|\n\
             | QUIC direct ≥ 0.9× TLS/TCP direct at 1 % loss | 0.95 (0.9123–1) × | met |\n\
             | ≥ 100 grants/s with 1,000 exporters | 282 grants/s | met |\n\
             | h2 via router ≥ 2× the Go router | – | not measured |\n\
             <!-- loadtest:end -->\n"
        );
    }

    #[test]
    fn a_file_without_targets_is_refused() {
        assert!(block("{}").is_err());
        assert!(block(r#"{"targets": []}"#).is_err());
        assert!(block("not json").is_err());
    }
}
