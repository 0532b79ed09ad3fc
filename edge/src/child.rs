//! The tool run as the edge's child (`-- <command...>`): it inherits stdin, stdout and
//! stderr; when the edge is asked to stop, the child gets SIGTERM first and a grace period.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How long the child may take to stop after SIGTERM (`jmp run` unregisters within 10 s).
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Runs `command` until it exits, or until `stop` (then SIGTERM, then SIGKILL after
/// [`STOP_GRACE`]); its exit status.
pub(crate) async fn run(command: &[String], stop: CancellationToken) -> anyhow::Result<ExitStatus> {
    let (program, args) = command.split_first().context("an empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let pid = child.id();
    tracing::info!(program, pid, "tool started");
    tokio::select! {
        status = child.wait() => return status.with_context(|| format!("wait for {program}")),
        () = stop.cancelled() => {}
    }
    if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
        tracing::info!(pid, "stopping the tool (SIGTERM)");
        // The child is ours and not yet reaped, so the PID still names it. A failure (it has
        // just exited) is covered by the wait below.
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(status) => status.with_context(|| format!("wait for {program}")),
        Err(_) => {
            tracing::warn!("the tool did not stop in time; killing it");
            child.kill().await.context("kill the tool")?;
            child
                .wait()
                .await
                .with_context(|| format!("wait for {program}"))
        }
    }
}

/// The edge's exit code for the child's `status`: its code, or 128 + the signal.
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    u8::try_from(code).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_childs_exit_code_is_kept() {
        let command = ["sh", "-c", "exit 7"].map(String::from);
        let status = run(&command, CancellationToken::new()).await.unwrap();
        assert_eq!(exit_code(status), 7);
    }

    #[tokio::test]
    async fn a_stop_terminates_the_child() {
        let command = ["sleep", "30"].map(String::from);
        let stop = CancellationToken::new();
        stop.cancel();
        let started = std::time::Instant::now();
        let status = run(&command, stop).await.unwrap();
        assert_eq!(exit_code(status), 128 + 15, "SIGTERM");
        assert!(started.elapsed() < STOP_GRACE);
    }
}
