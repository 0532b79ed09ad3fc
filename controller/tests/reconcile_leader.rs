//! Leader election against a real kube-apiserver: one holder at a time, hand-over on
//! release and on expiry, and a leader whose API calls hang stops acting within its renew
//! deadline.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jumpstarter_controller::keys;
use jumpstarter_controller::leader::{self, Election};
use jumpstarter_controller::reconcile::{self, ReconcileMetrics};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::kube::KubeStore;
use jumpstarter_testenv::TestEnv;
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Short timings so hand-overs take seconds, not tens of seconds.
fn fast() -> Election {
    Election {
        lease_name: leader::LEASE_NAME.to_owned(),
        lease_duration: Duration::from_secs(3),
        renew_interval: Duration::from_millis(500),
        renew_deadline: Duration::from_secs(2),
        retry_interval: Duration::from_millis(200),
        owner: None,
    }
}

/// Who is running work right now, and whether two ever ran at once.
#[derive(Default)]
struct Board {
    running: AtomicUsize,
    overlap: AtomicBool,
    current: Mutex<Option<String>>,
    starts: AtomicUsize,
}

fn contender(
    store: KubeStore,
    namespace: String,
    identity: &'static str,
    board: Arc<Board>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    contender_with(store, namespace, identity, fast(), board, shutdown)
}

fn contender_with(
    store: KubeStore,
    namespace: String,
    identity: &'static str,
    election: Election,
    board: Arc<Board>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        leader::run_elected_with(store, &namespace, identity, &election, shutdown, |token| {
            let board = Arc::clone(&board);
            async move {
                if board.running.fetch_add(1, Ordering::SeqCst) > 0 {
                    board.overlap.store(true, Ordering::SeqCst);
                }
                board.starts.fetch_add(1, Ordering::SeqCst);
                *board.current.lock().await = Some(identity.to_owned());
                token.cancelled().await;
                *board.current.lock().await = None;
                board.running.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .await
        .expect("election");
    })
}

async fn wait_for_leader(board: &Board, not: Option<&str>) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(current) = board.current.lock().await.clone()
            && Some(current.as_str()) != not
        {
            return current;
        }
        assert!(Instant::now() < deadline, "no new leader within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn holder(store: &KubeStore, namespace: &str) -> Option<String> {
    let lease: Lease = store
        .get(namespace, leader::LEASE_NAME)
        .await
        .expect("get")
        .expect("lease");
    lease.spec.and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn one_leader_at_a_time_and_hand_over_on_release_and_on_expiry() {
    let env = TestEnv::shared();
    let namespace = env.namespace("leader").await;
    let store = KubeStore::new(env.admin_client().await);
    let board = Arc::new(Board::default());
    let identities = ["replica-a", "replica-b", "replica-c"];
    let tokens: Vec<CancellationToken> = identities
        .iter()
        .map(|_| CancellationToken::new())
        .collect();
    let mut tasks: Vec<Option<JoinHandle<()>>> = identities
        .iter()
        .zip(&tokens)
        .map(|(id, token)| {
            Some(contender(
                store.clone(),
                namespace.clone(),
                id,
                Arc::clone(&board),
                token.clone(),
            ))
        })
        .collect();
    let index = |id: &str| {
        identities
            .iter()
            .position(|i| *i == id)
            .expect("known identity")
    };

    // One wins and keeps it for a while; the others wait.
    let first = wait_for_leader(&board, None).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        board.current.lock().await.as_deref(),
        Some(first.as_str()),
        "the leader keeps renewing"
    );
    assert_eq!(board.starts.load(Ordering::SeqCst), 1);
    assert_eq!(
        holder(&store, &namespace).await.as_deref(),
        Some(first.as_str())
    );

    // A clean stop releases the lease: another replica takes over quickly.
    let stopped_at = Instant::now();
    tokens[index(&first)].cancel();
    let task = tasks[index(&first)].take().expect("task");
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("task");
    let second = wait_for_leader(&board, Some(&first)).await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(3),
        "hand-over after release took {:?}",
        stopped_at.elapsed()
    );

    // A crash (no release) hands over once the lease expires.
    let crashed_at = Instant::now();
    let task = tasks[index(&second)].take().expect("task");
    task.abort();
    let _ = task.await;
    // The aborted work never cleaned up after itself; do it for the board.
    board.running.fetch_sub(1, Ordering::SeqCst);
    *board.current.lock().await = None;
    let third = wait_for_leader(&board, Some(&second)).await;
    assert_ne!(third, first);
    assert!(
        crashed_at.elapsed() >= Duration::from_secs(2),
        "took over a live lease"
    );
    assert_eq!(
        holder(&store, &namespace).await.as_deref(),
        Some(third.as_str())
    );

    assert!(
        !board.overlap.load(Ordering::SeqCst),
        "two replicas ran work at once"
    );
    for token in &tokens {
        token.cancel();
    }
    for task in tasks.into_iter().flatten() {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("task");
    }
    assert_eq!(
        holder(&store, &namespace).await,
        None,
        "released at shutdown"
    );
}

#[tokio::test]
async fn run_elected_with_defaults_runs_work_and_releases_on_shutdown() {
    let env = TestEnv::shared();
    let namespace = env.namespace("leader-default").await;
    let client = env.admin_client().await;
    let store = KubeStore::new(client.clone());
    let shutdown = CancellationToken::new();
    let started = Arc::new(AtomicBool::new(false));
    let task = {
        let (shutdown, started, namespace) =
            (shutdown.clone(), Arc::clone(&started), namespace.clone());
        tokio::spawn(async move {
            leader::run_elected(
                client,
                &namespace,
                "only-replica",
                None,
                shutdown,
                |token| {
                    let started = Arc::clone(&started);
                    async move {
                        started.store(true, Ordering::SeqCst);
                        token.cancelled().await;
                    }
                },
            )
            .await
        })
    };
    let deadline = Instant::now() + WAIT;
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "work never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease: Lease = store
        .get(&namespace, leader::LEASE_NAME)
        .await
        .expect("get")
        .expect("lease");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("only-replica"));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("no error");
    assert_eq!(holder(&store, &namespace).await, None);
}

/// A client of the shared API server that reaches it through `proxy`.
async fn client_through(env: &TestEnv, proxy: &support::SilentProxy) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(&env.admin_kubeconfig).expect("read kubeconfig");
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kube config");
    config.cluster_url = format!("https://127.0.0.1:{}", proxy.port)
        .parse()
        .expect("proxy url");
    kube::Client::try_from(config).expect("kube client")
}

#[tokio::test]
async fn a_leader_whose_api_calls_hang_stops_acting_before_another_takes_over() {
    let env = TestEnv::shared();
    let namespace = env.namespace("leader-hung").await;
    let direct = KubeStore::new(env.admin_client().await);
    let proxy = support::SilentProxy::start(SocketAddr::from(([127, 0, 0, 1], env.api_port))).await;
    let proxied = KubeStore::new(client_through(env, &proxy).await);
    let board = Arc::new(Board::default());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();

    // The replica behind the proxy leads and renews for a while.
    let hung = contender(
        proxied,
        namespace.clone(),
        "replica-behind-proxy",
        Arc::clone(&board),
        shutdown.clone(),
    );
    assert_eq!(wait_for_leader(&board, None).await, "replica-behind-proxy");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        board.current.lock().await.as_deref(),
        Some("replica-behind-proxy")
    );

    // Its API server stops answering: connections stay open, requests hang.
    proxy.go_silent();
    let cut = Instant::now();
    let other = contender(
        direct.clone(),
        namespace.clone(),
        "replica-direct",
        Arc::clone(&board),
        shutdown.clone(),
    );
    let deadline = cut + WAIT;
    while board.current.lock().await.as_deref() == Some("replica-behind-proxy") {
        assert!(
            Instant::now() < deadline,
            "the hung leader never stopped acting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_after = cut.elapsed();
    // It stopped within its renew deadline of its last renewal, so before its lease ran
    // out and anybody could take over.
    assert!(
        stopped_after < fast().lease_duration,
        "the hung leader acted for {stopped_after:?} after its API went silent"
    );
    assert_eq!(
        wait_for_leader(&board, Some("replica-behind-proxy")).await,
        "replica-direct"
    );
    assert!(
        !board.overlap.load(Ordering::SeqCst),
        "two replicas ran work at once"
    );
    assert_eq!(
        holder(&direct, &namespace).await.as_deref(),
        Some("replica-direct")
    );
    shutdown.cancel();
    for task in [hung, other] {
        tokio::time::timeout(WAIT, task)
            .await
            .expect("stops")
            .expect("task");
    }
}

#[tokio::test]
async fn a_reconcile_loop_stuck_on_a_silent_api_stops_when_told() {
    let env = TestEnv::shared();
    let (namespace, direct) = support::kube_namespace("leader-loop").await;
    let settings = Arc::new(Settings::example(&namespace, "ctl:8082", "router:8083"));
    let keys = keys::bootstrap(&direct, &settings, time::OffsetDateTime::now_utc())
        .await
        .expect("keys");
    let proxy = support::SilentProxy::start(SocketAddr::from(([127, 0, 0, 1], env.api_port))).await;
    let proxied = KubeStore::new(client_through(env, &proxy).await);
    // Its API server answers nothing from the start: the first pass hangs reading.
    proxy.go_silent();
    let stop = CancellationToken::new();
    let task = tokio::spawn(reconcile::run(
        proxied,
        Arc::new(keys),
        settings,
        Arc::new(ReconcileMetrics::unregistered()),
        jumpstarter_controller::replica::ReplicaRegistry::single(
            jumpstarter_controller::replica::ReplicaId::new("test"),
        ),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!task.is_finished());
    // Leadership lost: the loop must stop acting now, not when the API call gives up.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop stops while its API call hangs")
        .expect("task")
        .expect("loop result");
}
