//! Process and build metrics, as Prometheus users expect them from any server:
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds` (read from `/proc/self` at each scrape, the names of the
//! official clients' process collectors) and `jumpstarter_build_info{version, commit}`.

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// Labels of `jumpstarter_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

/// Registers the process collector and `jumpstarter_build_info` (1, labelled with
/// `version` and `commit`) in `registry` (its root: the names are not prefixed).
pub fn register(registry: &mut Registry, version: &str, commit: &str) {
    registry.register_collector(Box::new(ProcessCollector));
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels {
        version: version.to_owned(),
        commit: commit.to_owned(),
    })
    .set(1);
    registry.register(
        "jumpstarter_build_info",
        "The running build: its version and the commit it was built from (value 1)",
        info,
    );
}

/// Reads `/proc/self` at each scrape.
#[derive(Debug)]
struct ProcessCollector;

/// The numbers of one scrape; absent ones are not reported.
#[derive(Debug, Default, PartialEq)]
struct Sample {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<f64>,
    virtual_bytes: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    start_time_seconds: Option<f64>,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), Error> {
        let sample = sample();
        if let Some(cpu) = sample.cpu_seconds {
            let metric = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(cpu).encode(metric)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                sample.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                sample.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                sample.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                sample.max_fds,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                sample.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                let metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
                ConstGauge::new(value).encode(metric)?;
            }
        }
        Ok(())
    }
}

/// Clock ticks per second and page size of Linux on the platforms this runs on.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_SIZE: f64 = 4096.0;

fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let mut sample = read("/proc/self/stat")
        .map(|stat| parse_stat(&stat, read("/proc/stat").as_deref()))
        .unwrap_or_default();
    sample.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as f64);
    sample.max_fds = read("/proc/self/limits").and_then(|limits| parse_max_fds(&limits));
    sample
}

/// CPU time, memory and start time from `/proc/self/stat` (and the boot time from
/// `/proc/stat`).
fn parse_stat(stat: &str, system_stat: Option<&str>) -> Sample {
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return Sample::default();
    };
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    let boot_time = system_stat.and_then(|s| {
        s.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    Sample {
        cpu_seconds: field(14)
            .zip(field(15))
            .map(|(user, system)| (user + system) / TICKS_PER_SECOND),
        virtual_bytes: field(23),
        resident_bytes: field(24).map(|pages| pages * PAGE_SIZE),
        start_time_seconds: field(22)
            .zip(boot_time)
            .map(|(ticks, boot)| boot + ticks / TICKS_PER_SECOND),
        ..Sample::default()
    }
}

/// The soft limit of "Max open files" in `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks,
        // starttime 1000 ticks after boot, vsize 1 MiB, rss 10 pages.
        let stat = "42 (my (cmd) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 \
                    1000 1048576 10 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let sample = parse_stat(stat, Some("cpu 1 2 3\nbtime 1700000000\n"));
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.virtual_bytes, Some(1_048_576.0));
        assert_eq!(sample.resident_bytes, Some(40_960.0));
        assert_eq!(sample.start_time_seconds, Some(1_700_000_010.0));
    }

    #[test]
    fn the_open_file_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
    }

    #[test]
    fn a_scrape_of_this_process_reports_every_metric() {
        let mut registry = Registry::default();
        register(&mut registry, "1.2.3", "abc1234");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "jumpstarter_build_info{version=\"1.2.3\",commit=\"abc1234\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }
}
