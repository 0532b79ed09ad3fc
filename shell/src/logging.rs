//! Logging: `--log-format` and the `tracing` subscriber. Lines go to standard error; the
//! level comes from `RUST_LOG`, else the binary's default.

use clap::{Args, ValueEnum};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    #[default]
    Text,
}

/// The log-format flag every server flattens.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log output format (the level comes from RUST_LOG, default info).
    #[arg(long, env = "JUMPSTARTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Starts the subscriber (`RUST_LOG`, else `default_level`), then logs the deprecated
/// forms met while the flags were parsed.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    crate::deprecation::warn_pending();
}
