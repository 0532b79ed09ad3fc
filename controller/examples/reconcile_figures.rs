//! Figures for the reconcile loop at scale on the embedded store (standalone mode's store):
//! fills a fresh store with N online exporters (default 10,000), runs the reconcile loop
//! and prints how long passes take when nothing changes and when one lease is created.
//! A measurement, not a test: it asserts nothing about speed.
//!
//! `cargo run --release -p jumpstarter-controller --example reconcile_figures -- [N]`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use jumpstarter_controller::crd::{
    Client, ClientSpec, Device, Exporter, ExporterSpec, ExporterStatusValue, Lease, LeaseSpec,
};
use jumpstarter_controller::keys;
use jumpstarter_controller::reconcile::{self, ReconcileMetrics};
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::Store;
use jumpstarter_controller::store::embedded::EmbeddedStore;
use k8s_openapi::api::core::v1::LocalObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{self as meta, LabelSelector};
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

const NAMESPACE: &str = "default";
/// Objects created at once while filling the store.
const IN_FLIGHT: usize = 64;
/// Upper bound of every wait.
const WAIT: Duration = Duration::from_secs(600);
/// How long idle passes are observed (the loop runs at least every 5 s).
const IDLE_WINDOW: Duration = Duration::from_secs(16);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .context("the argument is the number of exporters")?,
        None => 10_000,
    };
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(&dir.path().join("store.redb"))?;
    let settings = Arc::new(Settings::example(
        NAMESPACE,
        "controller.example.com:8082",
        "router.example.com:8083",
    ));
    let keys = Arc::new(keys::bootstrap(&store, &settings, OffsetDateTime::now_utc()).await?);

    let started = Instant::now();
    fill(&store, count).await?;
    println!(
        "filled {count} exporters in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut registry = Registry::default();
    let metrics = Arc::new(ReconcileMetrics::new(&mut registry));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(reconcile::run(
        store.clone(),
        keys,
        settings,
        Arc::clone(&metrics),
        jumpstarter_controller::replica::ReplicaRegistry::single(
            jumpstarter_controller::replica::ReplicaId::new("figures"),
        ),
        shutdown.clone(),
    ));

    // Settled: every credential and status written, and a pass that wrote nothing.
    let started = Instant::now();
    loop {
        if started.elapsed() > WAIT {
            bail!("the loop did not settle within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = (metrics.writes.get(), metrics.passes.get());
        tokio::time::sleep(Duration::from_secs(6)).await;
        let after = (metrics.writes.get(), metrics.passes.get());
        if after.0 == before.0 && after.1 > before.1 && metrics.writes.get() >= 2 * count as u64 {
            break;
        }
    }
    println!("settled in {:.1} s", started.elapsed().as_secs_f64());

    let before = passes(&registry)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = passes(&registry)?.since(&before);
    println!(
        "idle: {} passes, {:.1} ms per pass",
        idle.count,
        idle.mean_ms()
    );

    for round in 0..3 {
        let before = passes(&registry)?;
        let created = Instant::now();
        let name = format!("lease-{round}");
        let mut lease = Lease::new(
            &name,
            LeaseSpec {
                client_ref: LocalObjectReference {
                    name: "client".into(),
                },
                duration: Some("1h".into()),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([("board".into(), "b7".into())])),
                    match_expressions: None,
                },
                ..LeaseSpec::default()
            },
        );
        lease.metadata.namespace = Some(NAMESPACE.into());
        store.create(&lease).await?;
        loop {
            if created.elapsed() > WAIT {
                bail!("lease {name} was not assigned within {WAIT:?}");
            }
            let stored: Option<Lease> = store.get(NAMESPACE, &name).await?;
            if stored
                .and_then(|l| l.status)
                .is_some_and(|s| s.exporter_ref.is_some())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready = created.elapsed();
        // The pass that assigned it is still writing: count it once it is done.
        let waited = Instant::now();
        while passes(&registry)?.count == before.count && waited.elapsed() < WAIT {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let during = passes(&registry)?.since(&before);
        println!(
            "new lease: Ready after {:.1} ms; {} passes meanwhile, {:.1} ms per pass",
            ready.as_secs_f64() * 1e3,
            during.count,
            during.mean_ms()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    shutdown.cancel();
    task.await??;
    Ok(())
}

/// Creates the client and `count` exporters, each registered and reporting Available with a
/// `lastSeen` an hour ahead (online for the whole run).
async fn fill(store: &EmbeddedStore, count: usize) -> anyhow::Result<()> {
    let mut client = Client::new("client", ClientSpec::default());
    client.metadata.namespace = Some(NAMESPACE.into());
    store.create(&client).await?;
    let seen =
        k8s_openapi::jiff::Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_hours(1);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            async move {
                let mut exporter =
                    Exporter::new(&format!("exporter-{i:05}"), ExporterSpec::default());
                exporter.metadata.namespace = Some(NAMESPACE.into());
                exporter.metadata.labels = Some(BTreeMap::from([
                    ("board".into(), format!("b{}", i % 100)),
                    ("site".into(), format!("s{}", i % 7)),
                ]));
                let mut exporter = store.create(&exporter).await?;
                exporter.status = Some(jumpstarter_controller::crd::ExporterStatus {
                    devices: Some(vec![Device {
                        uuid: Some("dev-1".into()),
                        parent_uuid: None,
                        labels: None,
                    }]),
                    last_seen: Some(meta::Time(seen)),
                    exporter_status: Some(ExporterStatusValue::Available),
                    status_message: Some("Available".into()),
                    ..Default::default()
                });
                store.replace_status(&exporter).await?;
                Ok(())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Count and total seconds of the pass-duration histogram.
#[derive(Debug, Clone, Copy)]
struct Passes {
    count: u64,
    seconds: f64,
}

impl Passes {
    fn since(&self, before: &Passes) -> Passes {
        Passes {
            count: self.count - before.count,
            seconds: self.seconds - before.seconds,
        }
    }

    fn mean_ms(&self) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        self.seconds / self.count as f64 * 1e3
    }
}

fn passes(registry: &Registry) -> anyhow::Result<Passes> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    let value = |name: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .with_context(|| format!("{name} in the metrics"))
    };
    Ok(Passes {
        count: value("jumpstarter_controller_reconcile_pass_duration_seconds_count")? as u64,
        seconds: value("jumpstarter_controller_reconcile_pass_duration_seconds_sum")?,
    })
}
