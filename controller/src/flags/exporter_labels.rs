//! The flag group of the labels exporters may set on themselves at Register (see the
//! controller's `service::reported_labels`).

use clap::Args;

use crate::service::reported_labels::is_reserved;

/// Which labels an exporter may set on itself.
#[derive(Debug, Clone, Default, Args)]
pub struct ExporterLabelArgs {
    /// A label key prefix under which exporters may set labels on themselves at Register,
    /// e.g. `lab.example.com/` (repeatable; comma-separated in the environment). Keys under
    /// jumpstarter.dev/, kubernetes.io/ and k8s.io/, keys that access policies or routers
    /// read, and keys an administrator set are refused whatever the prefix
    /// [default: none; exporters set no labels, as 0.9.0 exporters report none].
    #[arg(
        long = "exporter-label-prefix",
        env = "JUMPSTARTER_EXPORTER_LABEL_PREFIXES",
        value_delimiter = ',',
        value_parser = parse_prefix
    )]
    pub exporter_label_prefixes: Vec<String>,
}

/// A non-empty prefix outside the reserved domains.
fn parse_prefix(text: &str) -> Result<String, String> {
    let prefix = text.trim();
    if prefix.is_empty() {
        return Err("an exporter label prefix may not be empty (it would allow every key)".into());
    }
    if is_reserved(prefix) || is_reserved(&format!("{prefix}/")) {
        return Err(format!(
            "exporter label prefix {prefix:?} is under a reserved domain \
             (jumpstarter.dev, kubernetes.io, k8s.io)"
        ));
    }
    Ok(prefix.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        labels: ExporterLabelArgs,
    }

    #[test]
    fn none_by_default_and_reserved_domains_are_refused() {
        let flags = Flags::try_parse_from(["t"]).expect("parse");
        assert!(flags.labels.exporter_label_prefixes.is_empty());
        let flags = Flags::try_parse_from(["t", "--exporter-label-prefix", "lab.example.com/,fw-"])
            .expect("parse");
        assert_eq!(
            flags.labels.exporter_label_prefixes,
            ["lab.example.com/", "fw-"]
        );
        for bad in [
            "",
            "jumpstarter.dev/",
            "x.jumpstarter.dev",
            "kubernetes.io/a",
        ] {
            assert!(
                Flags::try_parse_from(["t", "--exporter-label-prefix", bad]).is_err(),
                "{bad:?}"
            );
        }
    }
}
