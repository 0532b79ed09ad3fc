//! Fixtures shared by the tests of the `jumpstarter` binary: a `jumpstarter serve` process
//! with its logs. Fixtures shared with the Kubernetes-mode tests come from `jumpstarter-e2e`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_jumpstarter");

/// A running `jumpstarter serve`, stdout and stderr in log files; killed when dropped.
#[derive(Debug)]
pub(crate) struct ServeProcess {
    pub(crate) child: Child,
    /// stdout; stderr is next to it with the extension `err`.
    pub(crate) log: PathBuf,
}

impl ServeProcess {
    /// Spawns `command` (a `serve` on `data_dir`) with its output in `log`, and waits up to
    /// `wait` until its admin socket answers.
    pub(crate) fn spawn(
        mut command: Command,
        data_dir: &Path,
        log: PathBuf,
        wait: Duration,
    ) -> ServeProcess {
        let child = command
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(log.with_extension("err")).expect("log file"))
            .spawn()
            .expect("spawn jumpstarter serve");
        let mut process = ServeProcess { child, log };
        let deadline = Instant::now() + wait;
        let socket = data_dir.join("admin.sock");
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = process.child.try_wait().expect("try_wait") {
                panic!(
                    "serve exited with {status} before it was ready:\n{}",
                    process.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "serve not ready:\n{}",
                process.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        process
    }

    /// Both logs, for failure messages.
    pub(crate) fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- stdout\n{}--- stderr\n{}",
            read(&self.log),
            read(&self.log.with_extension("err"))
        )
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
