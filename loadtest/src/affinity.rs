//! CPU affinity for the `--pin` measurements: a router process on one CPU and the load
//! generator (this process, every thread of it) on another, so that the router does not
//! wait for a core behind the load it serves. Set with `sched_setaffinity` on every thread
//! of a process (threads started later inherit the mask of the thread that starts them),
//! and put back when the [`Pinned`] guard is dropped.

use std::collections::BTreeSet;

use anyhow::{Context, bail};
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The CPU of the load generator.
pub(crate) const GENERATOR_CPU: usize = 0;
/// The CPU of the router under test.
pub(crate) const ROUTER_CPU: usize = 1;
/// Passes over a process's threads at most: a pass that finds no new thread ends it; new
/// threads only come from threads already pinned after the first pass or two.
const PASSES: usize = 10;

/// `--pin`: measure with the router on its own CPU.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct PinArgs {
    /// Also measure the saturated round trips of the latency scenario with the router
    /// process on CPU 1 and the load generator on CPU 0 (rows ending in ", pinned"); the
    /// unpinned rows are measured as well. Needs at least 2 CPUs.
    #[arg(long, env = "JUMPSTARTER_LOADTEST_PIN", global = true)]
    pub(crate) pin: bool,
}

/// Processes pinned for as long as this lives; each gets its former mask back when it is
/// dropped (a process that has exited meanwhile is skipped).
#[derive(Debug)]
pub(crate) struct Pinned {
    restore: Vec<(u32, CpuSet)>,
}

impl Pinned {
    /// Pins every thread of `router` to [`ROUTER_CPU`] and every thread of this process
    /// to [`GENERATOR_CPU`].
    pub(crate) fn router_and_generator(router: u32) -> anyhow::Result<Pinned> {
        let available = cpus_of(std::process::id())?;
        check_cpus(&available)?;
        let mut pinned = Pinned {
            restore: Vec::new(),
        };
        for (pid, cpu) in [(router, ROUTER_CPU), (std::process::id(), GENERATOR_CPU)] {
            let former = sched_getaffinity(pid_of(pid)?)
                .with_context(|| format!("reading the CPU affinity of process {pid}"))?;
            pinned.restore.push((pid, former));
            set_process(pid, &single(cpu)?)
                .with_context(|| format!("pinning process {pid} to CPU {cpu}"))?;
            let now = cpus_of(pid)?;
            if now != BTreeSet::from([cpu]) {
                bail!("process {pid} runs on CPUs {now:?} after pinning it to CPU {cpu}");
            }
        }
        Ok(pinned)
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        for (pid, former) in self.restore.drain(..).rev() {
            // A process that has exited needs nothing back.
            let _ = set_process(pid, &former);
        }
    }
}

/// Both CPUs the pinning uses must be available to this process.
fn check_cpus(available: &BTreeSet<usize>) -> anyhow::Result<()> {
    for cpu in [GENERATOR_CPU, ROUTER_CPU] {
        if !available.contains(&cpu) {
            bail!(
                "--pin needs CPUs {GENERATOR_CPU} and {ROUTER_CPU}; this process may run on \
                 {available:?} only"
            );
        }
    }
    Ok(())
}

fn single(cpu: usize) -> anyhow::Result<CpuSet> {
    let mut set = CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu}"))?;
    Ok(set)
}

fn pid_of(pid: u32) -> anyhow::Result<Pid> {
    Ok(Pid::from_raw(i32::try_from(pid).context("a process id")?))
}

/// Sets `set` on every thread of process `pid`, pass after pass until a pass finds no
/// thread it has not set yet. Returns how many threads it set.
fn set_process(pid: u32, set: &CpuSet) -> anyhow::Result<usize> {
    let mut done = BTreeSet::new();
    for _ in 0..PASSES {
        let threads = threads_of(pid)?;
        let new: Vec<u32> = threads.difference(&done).copied().collect();
        if new.is_empty() {
            return Ok(done.len());
        }
        for tid in new {
            match sched_setaffinity(pid_of(tid)?, set) {
                // A thread that ended meanwhile.
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(e).with_context(|| format!("thread {tid} of {pid}")),
            }
            done.insert(tid);
        }
    }
    bail!("process {pid} kept starting threads while being pinned")
}

/// The thread ids of process `pid`.
fn threads_of(pid: u32) -> anyhow::Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let name = entry?.file_name();
        if let Some(tid) = name.to_str().and_then(|n| n.parse().ok()) {
            threads.insert(tid);
        }
    }
    Ok(threads)
}

/// The CPUs any thread of process `pid` may run on (the union of `Cpus_allowed_list` of
/// its threads).
pub(crate) fn cpus_of(pid: u32) -> anyhow::Result<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    for tid in threads_of(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/status");
        let Ok(status) = std::fs::read_to_string(&path) else {
            continue; // the thread ended
        };
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .with_context(|| format!("no Cpus_allowed_list in {path}"))?;
        cpus.extend(parse_cpu_list(list)?);
    }
    Ok(cpus)
}

/// A kernel CPU list such as `0-3,6,8-9`.
fn parse_cpu_list(list: &str) -> anyhow::Result<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let number = |s: &str| {
            s.trim()
                .parse::<usize>()
                .with_context(|| format!("`{s}` in CPU list `{list}`"))
        };
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (number(first)?, number(last)?);
                if first > last {
                    bail!("a descending range in CPU list `{list}`");
                }
                cpus.extend(first..=last);
            }
            None => {
                cpus.insert(number(part)?);
            }
        }
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_and_singles() {
        assert_eq!(
            parse_cpu_list("0-2,5,7-8\n").expect("list"),
            BTreeSet::from([0, 1, 2, 5, 7, 8])
        );
        assert_eq!(parse_cpu_list("1").expect("list"), BTreeSet::from([1]));
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("a").is_err());
    }

    #[test]
    fn pinning_needs_both_cpus() {
        assert!(check_cpus(&BTreeSet::from([0, 1])).is_ok());
        assert!(check_cpus(&BTreeSet::from([0, 1, 2, 3])).is_ok());
        let error = check_cpus(&BTreeSet::from([0])).expect_err("one CPU");
        assert!(
            error.to_string().contains("--pin needs CPUs 0 and 1"),
            "{error}"
        );
    }

    /// A real child process with threads is pinned to one CPU, thread by thread, and gets
    /// its former CPUs back when the guard is dropped.
    #[test]
    fn a_process_and_its_threads_are_pinned_and_restored() {
        let available = cpus_of(std::process::id()).expect("our CPUs");
        if check_cpus(&available).is_err() {
            panic!("this test needs CPUs 0 and 1; this machine offers {available:?}");
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("start sleep");
        let pid = child.id();
        let before = cpus_of(pid).expect("child CPUs");
        {
            let _pinned = Pinned::router_and_generator(pid).expect("pin");
            assert_eq!(cpus_of(pid).expect("child"), BTreeSet::from([ROUTER_CPU]));
            assert_eq!(
                cpus_of(std::process::id()).expect("self"),
                BTreeSet::from([GENERATOR_CPU])
            );
            // A thread started now inherits the generator's CPU.
            let inherited = std::thread::spawn(|| {
                // Pid 0: the calling thread.
                let own = sched_getaffinity(Pid::from_raw(0)).expect("affinity");
                own.is_set(GENERATOR_CPU).expect("CPU index")
                    && !own.is_set(ROUTER_CPU).expect("CPU index")
            })
            .join()
            .expect("thread");
            assert!(inherited, "a new thread runs on the generator's CPU only");
        }
        assert_eq!(cpus_of(pid).expect("child"), before);
        assert_eq!(cpus_of(std::process::id()).expect("self"), available);
        let _ = child.kill();
        let _ = child.wait();
    }
}
