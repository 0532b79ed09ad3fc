//! Watches of the Kubernetes store back off after errors, and the reconcile loop counts
//! their errors: against an "API server" that accepts every connection and closes it at
//! once (a crash-looping or overloaded apiserver behind a load balancer), the watches
//! reconnect a handful of times, not as fast as the loop can spin.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use jumpstarter_controller::crd::Exporter;
use jumpstarter_controller::keys;
use jumpstarter_controller::reconcile::{self, ReconcileMetrics};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::embedded::EmbeddedStore;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_controller::store::{Store, WatchEvent};

/// How long each test watches the failing server.
const OBSERVE: Duration = Duration::from_secs(3);
/// Connections a backed-off watch may make in [`OBSERVE`]: kube-rs' default backoff
/// starts at 800 ms and doubles, so about 3; without backoff it is hundreds.
const MAX_RECONNECTS: usize = 10;

/// A listener that accepts and closes every connection, counting them; stops when the
/// returned token is dropped.
async fn closing_server() -> (u16, Arc<AtomicUsize>, tokio_util::sync::DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let (count, token) = (Arc::clone(&accepted), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                conn = listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        count.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                }
            }
        }
    });
    (port, accepted, stop.drop_guard())
}

fn store_at(port: u16) -> KubeStore {
    let url = format!("http://127.0.0.1:{port}").parse().expect("url");
    KubeStore::new(kube::Client::try_from(kube::Config::new(url)).expect("client"))
}

#[tokio::test]
async fn a_failing_watch_reconnects_with_backoff() {
    let (port, accepted, _server) = closing_server().await;
    let store = store_at(port);
    let mut watch = store.watch::<Exporter>("default", None);
    let mut errors = 0usize;
    let _ = tokio::time::timeout(OBSERVE, async {
        while let Some(event) = watch.next().await {
            match event {
                Err(_) => errors += 1,
                // Each (re)start announces a listing, which then fails.
                Ok(WatchEvent::Relisting) => {}
                Ok(other) => panic!("the server answers nothing, yet: {other:?}"),
            }
        }
    })
    .await;
    let connections = accepted.load(Ordering::SeqCst);
    assert!(errors >= 1, "the watch reports its errors");
    assert!(
        connections <= MAX_RECONNECTS,
        "{connections} connections ({errors} errors) in {OBSERVE:?}: the watch does not back off"
    );
}

#[tokio::test]
async fn the_reconcile_loop_counts_watch_errors_and_keeps_running() {
    let (port, accepted, _server) = closing_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let local = EmbeddedStore::open(&dir.path().join("keys.redb")).expect("store");
    let settings = Arc::new(Settings::example("default", "ctl:8082", "router:8083"));
    let keys = keys::bootstrap(&local, &settings, OffsetDateTime::now_utc())
        .await
        .expect("keys");
    let mut registry = Registry::default();
    let metrics = Arc::new(ReconcileMetrics::new(&mut registry));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(reconcile::run(
        store_at(port),
        Arc::new(keys),
        settings,
        Arc::clone(&metrics),
        jumpstarter_controller::replica::ReplicaRegistry::single(
            jumpstarter_controller::replica::ReplicaId::new("test"),
        ),
        shutdown.clone(),
    ));
    tokio::time::sleep(OBSERVE).await;
    assert!(!task.is_finished(), "the loop keeps running");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("task")
        .expect("no error");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for kind in [
        "Client",
        "Exporter",
        "Lease",
        "ExporterAccessPolicy",
        "Secret",
    ] {
        let line =
            format!("jumpstarter_controller_reconcile_watch_errors_total{{kind=\"{kind}\"}}");
        assert!(
            text.contains(&line),
            "no watch errors counted for {kind}:\n{text}"
        );
    }
    // Five watches and the passes' own reads (which back off too).
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        connections <= 6 * MAX_RECONNECTS,
        "{connections} connections in {OBSERVE:?}"
    );
}
