//! Stopping on SIGTERM or SIGINT: the first signal cancels the process's shutdown token,
//! so everything stops gracefully; a second one (an impatient operator, or a supervisor
//! repeating itself) exits at once, since a drain can take long.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit status of a forced exit: 128 + SIGTERM's number, as a shell reports it.
const FORCED_EXIT: i32 = 128 + 15;

/// Spawns the watcher: the first SIGTERM/SIGINT cancels `shutdown`; any signal after
/// `shutdown` was cancelled (by a signal or otherwise) exits the process at once.
///
/// The handlers are installed before this returns (not when the task first runs), so a
/// signal sent as soon as the process says it is serving is never lost to the default
/// action.
pub fn spawn_watch(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    tokio::spawn(async move {
        let (Ok(term), Ok(int)) = handlers else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        watch(term, int, shutdown).await;
    })
}

async fn watch(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down (a second signal exits at once)"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down (a second signal exits at once)"),
        () = shutdown.cancelled() => {}
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => tracing::warn!("second SIGTERM: exiting now"),
        _ = int.recv() => tracing::warn!("second SIGINT: exiting now"),
    }
    std::process::exit(FORCED_EXIT);
}
