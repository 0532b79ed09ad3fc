//! `crdgen`: writes (or checks) the CRD manifests of the `jumpstarter.dev` resources.
//!
//! ```text
//! cargo run -p jumpstarter-controller --bin crdgen -- --out-dir helm/crds
//! cargo run -p jumpstarter-controller --bin crdgen -- --out-dir helm/crds --check
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use jumpstarter_controller::crd;
use jumpstarter_shell::deprecation;
use jumpstarter_shell::env_alias::{self, EnvAlias};

/// The environment names of earlier releases, deprecated.
const ENV_ALIASES: &[EnvAlias] = &[
    EnvAlias::new("CRDGEN_OUT_DIR", "JUMPSTARTER_CRDGEN_OUT_DIR"),
    EnvAlias::new("CRDGEN_CHECK", "JUMPSTARTER_CRDGEN_CHECK"),
];

/// Generate the jumpstarter.dev CustomResourceDefinition manifests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory that receives `jumpstarter.dev_<plural>.yaml`.
    #[arg(long, env = "JUMPSTARTER_CRDGEN_OUT_DIR", default_value = "helm/crds")]
    out_dir: PathBuf,
    /// Write nothing; exit with status 1 and list the files that are missing or differ.
    #[arg(long, env = "JUMPSTARTER_CRDGEN_CHECK")]
    check: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args: Args = env_alias::parse(ENV_ALIASES);
    deprecation::print_pending();
    let rendered = crd::render_all();

    if args.check {
        let mut stale = Vec::new();
        for (file, text) in &rendered {
            let path = args.out_dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(current) if current == *text => {}
                Ok(_) => stale.push(format!("{} (differs)", path.display())),
                Err(err) => stale.push(format!("{} ({err})", path.display())),
            }
        }
        if stale.is_empty() {
            println!(
                "{} CRD files are up to date in {}",
                rendered.len(),
                args.out_dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("stale CRD files:");
        for line in &stale {
            eprintln!("  {line}");
        }
        eprintln!("regenerate with: {}", crd::REGENERATE_COMMAND);
        return Ok(ExitCode::FAILURE);
    }

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    for (file, text) in &rendered {
        let path = args.out_dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
