//! The result of `jumpstarter admin check`: named checks, each ok or failed with the
//! reason, rendered as text for people or as JSON for programs.

use serde::Serialize;

/// One verified property.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Check {
    /// Stable name, e.g. `crd/clients.jumpstarter.dev` or `router/r0/udp`.
    pub(crate) name: String,
    pub(crate) ok: bool,
    /// What was seen: the evidence when ok, the precise reason when not.
    pub(crate) detail: String,
}

impl Check {
    pub(crate) fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }

    pub(crate) fn fail(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Every check of one run, in the order they were made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Report {
    /// Whether every check passed.
    pub(crate) ok: bool,
    pub(crate) checks: Vec<Check>,
}

impl Report {
    pub(crate) fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// Names of the failed checks.
    pub(crate) fn failed(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// One line per check (`ok` or `FAIL`, name, detail), then a summary line.
    pub(crate) fn text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for check in &self.checks {
            let mark = if check.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "{mark}  {:width$}  {}\n",
                check.name,
                check.detail,
                width = width
            ));
        }
        let failed = self.failed().len();
        if failed == 0 {
            out.push_str(&format!("all {} checks passed\n", self.checks.len()));
        } else {
            out.push_str(&format!(
                "{failed} of {} checks failed\n",
                self.checks.len()
            ));
        }
        out
    }

    /// `{"ok": bool, "checks": [{"name", "ok", "detail"}, ...]}`, pretty-printed.
    pub(crate) fn json(&self) -> String {
        // Strings and booleans only: serialization cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_fails_when_any_check_fails_and_renders_both_ways() {
        let report = Report::new(vec![
            Check::pass(
                "crd/clients.jumpstarter.dev",
                "Established, serves v1alpha1",
            ),
            Check::fail("router/r0/tcp", "connect 127.0.0.1:1: connection refused"),
        ]);
        assert!(!report.ok);
        assert_eq!(report.failed(), ["router/r0/tcp"]);
        let text = report.text();
        assert!(text.contains("ok    crd/clients.jumpstarter.dev  Established"));
        assert!(text.contains("FAIL  router/r0/tcp                connect"));
        assert!(text.ends_with("1 of 2 checks failed\n"));
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["name"], "router/r0/tcp");
        assert_eq!(json["checks"][1]["ok"], false);
        assert_eq!(json["checks"][0]["detail"], "Established, serves v1alpha1");
        assert!(Report::new(vec![Check::pass("a", "b")]).ok);
        assert!(
            Report::new(vec![Check::pass("a", "b")])
                .text()
                .ends_with("all 1 checks passed\n")
        );
    }
}
