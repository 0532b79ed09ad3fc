//! The embedded store's file: it keeps everything across reopen, refuses (and leaves alone)
//! corrupt and newer-schema files, refuses a second opener in this or another process, and
//! loses no acknowledged write when its process is killed with SIGKILL.
//!
//! The tests that need a second process run this test binary again, with
//! [`CHILD_ENV`] telling the copy which part to play.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jumpstarter_controller::crd::{Exporter, ExporterSpec};
use jumpstarter_controller::keys;
use jumpstarter_controller::settings::Settings;
use jumpstarter_controller::store::embedded::{EmbeddedStore, SCHEMA_VERSION};
use jumpstarter_controller::store::{Store, StoreError, list_all};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use redb::{ReadableDatabase, TableDefinition};
use time::OffsetDateTime;

/// Set in a child copy of this binary: `writer` or `probe`.
const CHILD_ENV: &str = "JUMPSTARTER_STORE_TEST_CHILD";
/// The database file a child works on.
const CHILD_PATH_ENV: &str = "JUMPSTARTER_STORE_TEST_PATH";
/// Acknowledged writes the parent waits for before it kills the writer.
const WRITES_BEFORE_KILL: usize = 40;

/// The schema table as the store's file format defines it.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("value".to_owned(), value.to_owned())])),
        ..ConfigMap::default()
    }
}

fn message(result: Result<EmbeddedStore, StoreError>) -> String {
    match result {
        Ok(store) => panic!("open must be refused, got {store:?}"),
        Err(err) => err.to_string(),
    }
}

fn assert_names_file(message: &str, path: &Path) {
    assert!(
        message.contains(&path.display().to_string()),
        "error names the file: {message}"
    );
}

/// A store file with a few objects in it, closed.
fn populated(dir: &Path) -> PathBuf {
    let path = dir.join("store.redb");
    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..50 {
            store
                .create(&config_map(&format!("cm-{i:02}"), &"x".repeat(200)))
                .await
                .expect("create");
        }
    });
    path
}

#[test]
fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let rt = runtime();
    let (exporter, last_rv) = rt.block_on(async {
        let store = EmbeddedStore::open(&path).expect("open");
        let created = store
            .create(&Exporter {
                metadata: ObjectMeta {
                    namespace: Some("lab".into()),
                    name: Some("exp".into()),
                    ..ObjectMeta::default()
                },
                spec: ExporterSpec {
                    username: Some("alice".into()),
                    enabled: Some(false),
                },
                status: None,
            })
            .await
            .expect("create");
        let mut status = created.clone();
        status.status = Some(Default::default());
        status.status.as_mut().expect("status").endpoint = Some("e:1".into());
        let updated = store.replace_status(&status).await.expect("status");
        store
            .create(&config_map("gone", "x"))
            .await
            .expect("create");
        store
            .delete::<ConfigMap>("default", "gone")
            .await
            .expect("delete");
        let last = store
            .create(&config_map("kept", "y"))
            .await
            .expect("create");
        (updated, last.metadata.resource_version.expect("rv"))
    });
    drop(rt);

    let rt = runtime();
    rt.block_on(async {
        let store = EmbeddedStore::open(&path).expect("reopen");
        let again: Exporter = store.get("lab", "exp").await.expect("get").expect("kept");
        assert_eq!(again.metadata.uid, exporter.metadata.uid);
        assert_eq!(
            again.metadata.resource_version,
            exporter.metadata.resource_version
        );
        assert_eq!(again.spec, exporter.spec);
        assert_eq!(again.status, exporter.status);
        let maps: Vec<ConfigMap> = list_all(&store, "default", None).await.expect("list");
        let names: Vec<_> = maps
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        assert_eq!(names, ["kept"]);
        // The resourceVersion counter continues where it was, never repeating a version.
        let next = store
            .create(&config_map("next", "z"))
            .await
            .expect("create");
        let next_rv: u64 = next
            .metadata
            .resource_version
            .expect("rv")
            .parse()
            .expect("counter");
        assert!(next_rv > last_rv.parse::<u64>().expect("counter"));
    });
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.redb");
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, &garbage).expect("write garbage");
    let message = message(EmbeddedStore::open(&path));
    assert_names_file(&message, &path);
    assert!(message.contains("corrupt"), "says why: {message}");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        garbage,
        "file untouched"
    );
}

#[test]
fn a_damaged_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = populated(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    // Keep the file header (the first page); overwrite every page after it.
    for (i, byte) in bytes.iter_mut().enumerate().skip(4096) {
        *byte = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2];
    }
    std::fs::write(&path, &bytes).expect("damage");
    let message = message(EmbeddedStore::open(&path));
    assert_names_file(&message, &path);
    assert!(message.contains("corrupt"), "says why: {message}");
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "file untouched");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = populated(dir.path());
    {
        let db = redb::Database::open(&path).expect("open raw");
        let txn = db.begin_read().expect("read");
        let meta = txn.open_table(META).expect("meta table");
        assert_eq!(
            meta.get("schema_version").expect("get").map(|v| v.value()),
            Some(SCHEMA_VERSION),
            "the schema version is written at creation"
        );
        drop(meta);
        drop(txn);
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", SCHEMA_VERSION + 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let message = message(EmbeddedStore::open(&path));
    assert_names_file(&message, &path);
    assert!(
        message.contains("written by a newer version: schema 2, this build supports 1"),
        "says why: {message}"
    );
    // Refused, not reset: the objects are all still there for the newer build.
    let db = redb::Database::open(&path).expect("open raw");
    let txn = db.begin_read().expect("read");
    let objects: redb::TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
    let table = txn.open_table(objects).expect("objects");
    assert_eq!(redb::ReadableTableMetadata::len(&table).expect("len"), 50);
}

#[test]
fn a_second_open_in_this_process_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let first = EmbeddedStore::open(&path).expect("open");
    let message = message(EmbeddedStore::open(&path));
    assert_names_file(&message, &path);
    assert!(message.contains("locked"), "says why: {message}");
    drop(first);
    EmbeddedStore::open(&path).expect("free again once closed");
}

/// Runs this test binary again as a child playing `role` on `path`. The child's report
/// lines may follow libtest's `test name ... ` on the same line.
fn child(test: &str, role: &str, path: &Path) -> Command {
    // libtest names a test by its path below the crate root: `store_embedded::<test>`.
    let name = match module_path!().split_once("::") {
        Some((_crate, module)) => format!("{module}::{test}"),
        None => test.to_owned(),
    };
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    command
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, role)
        .env(CHILD_PATH_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn child_path() -> PathBuf {
    PathBuf::from(std::env::var_os(CHILD_PATH_ENV).expect("child path"))
}

#[test]
fn a_second_process_is_refused() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("probe") {
        // Child: try to open the file the parent holds and report what happened.
        match EmbeddedStore::open(&child_path()) {
            Ok(_) => println!("RESULT opened"),
            Err(err) => println!("RESULT {err}"),
        }
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let _held = EmbeddedStore::open(&path).expect("open");
    let output = child("a_second_process_is_refused", "probe", &path)
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "child reported nothing: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert_names_file(result, &path);
    assert!(
        result.contains("locked by another process"),
        "says why: {result}"
    );
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).as_deref() == Ok("writer") {
        // Child: write until killed, announcing each write once the store acknowledged it.
        runtime().block_on(async {
            let store = EmbeddedStore::open(&child_path()).expect("child open");
            for i in 0.. {
                let name = format!("obj-{i:06}");
                store
                    .create(&config_map(&name, &"v".repeat(512)))
                    .await
                    .expect("child create");
                println!("ACK {name}");
            }
        });
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let mut writer = child("sigkill_loses_no_acknowledged_write", "writer", &path)
        .spawn()
        .expect("spawn writer");
    let stdout = writer.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acknowledged = Vec::new();
    while acknowledged.len() < WRITES_BEFORE_KILL {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some((_, name)) = line.split_once("ACK ") {
                    acknowledged.push(name.to_owned());
                }
            }
            _ => {
                let mut stderr = String::new();
                if let Some(mut err) = writer.stderr.take() {
                    let _ = err.read_to_string(&mut stderr);
                }
                panic!("writer stopped early after {acknowledged:?}: {stderr}");
            }
        }
    }
    // Child::kill is SIGKILL on Unix: no destructor, no flush, no clean close.
    writer.kill().expect("SIGKILL");
    // Writes acknowledged before the kill landed may still be in the pipe.
    for line in lines.map_while(Result::ok) {
        if let Some((_, name)) = line.split_once("ACK ") {
            acknowledged.push(name.to_owned());
        }
    }
    let status = writer.wait().expect("reap");
    assert!(!status.success(), "the writer was killed, not finished");

    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("reopen after SIGKILL");
        let stored: Vec<ConfigMap> = list_all(&store, "default", None).await.expect("list");
        let names: Vec<String> = stored
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        for name in &acknowledged {
            assert!(names.contains(name), "acknowledged {name} was lost");
        }
        // At most the one write in flight at the kill may be there unannounced.
        assert!(names.len() <= acknowledged.len() + 1);
    });
}

#[test]
fn keys_bootstrap_on_the_embedded_store_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let settings = Settings::example(
        "jumpstarter-lab",
        "controller.example.com:8082",
        "router.example.com:8083",
    );
    let now = OffsetDateTime::now_utc();
    let (ca, key) = runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("open");
        let keys = keys::bootstrap(&store, &settings, now)
            .await
            .expect("first bootstrap");
        let secret: Option<Secret> = store
            .get("jumpstarter-lab", keys::KEYS_SECRET)
            .await
            .expect("get");
        assert!(secret.is_some(), "the keys Secret is created");
        (
            keys.ca.cert_pem().to_owned(),
            keys.tokens.current().issuer.key.to_pkcs8_pem().to_string(),
        )
    });
    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("reopen");
        let keys = keys::bootstrap(&store, &settings, now)
            .await
            .expect("second bootstrap");
        assert_eq!(keys.ca.cert_pem(), ca);
        assert_eq!(
            keys.tokens.current().issuer.key.to_pkcs8_pem().to_string(),
            key
        );
    });
}

#[test]
fn a_watcher_that_falls_behind_relists_and_misses_nothing() {
    use futures::StreamExt;
    use jumpstarter_controller::store::WatchEvent;
    use std::time::Duration;

    // More changes than the change buffer holds, written while the watcher does not read.
    const UPDATES: usize = 1100;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..5 {
            store
                .create(&config_map(&format!("pre-{i}"), "x"))
                .await
                .expect("create");
        }
        let mut watch = store.watch::<ConfigMap>("default", None);
        // name -> data.value, as the watcher's consumer sees it.
        let mut seen = BTreeMap::new();
        let apply = |seen: &mut BTreeMap<String, String>, event: WatchEvent<ConfigMap>| match event
        {
            WatchEvent::Applied(m) => {
                let value = m.data.and_then(|d| d.get("value").cloned());
                seen.insert(
                    m.metadata.name.unwrap_or_default(),
                    value.unwrap_or_default(),
                );
            }
            WatchEvent::Deleted(m) => {
                seen.remove(&m.metadata.name.unwrap_or_default());
            }
            WatchEvent::Relisting | WatchEvent::Listed => {}
        };
        for _ in 0..5 {
            apply(&mut seen, watch.next().await.expect("open").expect("event"));
        }
        assert_eq!(seen.len(), 5);
        for i in 0..5 {
            store
                .delete::<ConfigMap>("default", &format!("pre-{i}"))
                .await
                .expect("delete");
        }
        let mut hot = store.create(&config_map("hot", "0")).await.expect("create");
        for i in 1..=UPDATES {
            hot.data = Some(BTreeMap::from([("value".to_owned(), i.to_string())]));
            hot = store.replace(&hot).await.expect("replace");
        }
        let expected = BTreeMap::from([("hot".to_owned(), UPDATES.to_string())]);
        let mut events = 0;
        while seen != expected {
            let event = tokio::time::timeout(Duration::from_secs(20), watch.next())
                .await
                .expect("event in time")
                .expect("open")
                .expect("event");
            apply(&mut seen, event);
            events += 1;
        }
        // Caught up by re-listing (the deletes reported from the difference), not by
        // replaying every change, which the buffer no longer holds.
        assert!(events < 100, "{events} events");
    });
}

/// Reads reuse objects decoded earlier; no read may return an object older than a write
/// acknowledged before the read began, whether it lists, pages or gets, while writers race.
#[test]
fn reads_never_return_an_object_older_than_an_acknowledged_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const OBJECTS: usize = 20;
    const WRITES: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    runtime().block_on(async {
        let store = EmbeddedStore::open(&path).expect("open");
        // acknowledged[i]: the last value of object i whose write has returned.
        let acknowledged: Arc<Vec<AtomicU64>> =
            Arc::new((0..OBJECTS).map(|_| AtomicU64::new(0)).collect());
        for i in 0..OBJECTS {
            store
                .create(&config_map(&format!("m{i:02}"), "0"))
                .await
                .expect("create");
        }
        let writer = {
            let (store, acknowledged) = (store.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for value in 1..=WRITES {
                    let i = (value as usize * 7) % OBJECTS;
                    let name = format!("m{i:02}");
                    let mut object: ConfigMap = store
                        .get("default", &name)
                        .await
                        .expect("get")
                        .expect("present");
                    object.data = Some(BTreeMap::from([("value".to_owned(), value.to_string())]));
                    store.replace(&object).await.expect("replace");
                    acknowledged[i].fetch_max(value, Ordering::SeqCst);
                }
            })
        };
        let value_of = |m: &ConfigMap| -> u64 {
            m.data
                .as_ref()
                .and_then(|d| d.get("value"))
                .and_then(|v| v.parse().ok())
                .expect("a value")
        };
        let mut reads = 0;
        while !writer.is_finished() || reads < 10 {
            let floor: Vec<u64> = acknowledged
                .iter()
                .map(|a| a.load(Ordering::SeqCst))
                .collect();
            let listed: Vec<ConfigMap> = list_all(&store, "default", None).await.expect("list");
            assert_eq!(listed.len(), OBJECTS);
            for (i, m) in listed.iter().enumerate() {
                assert!(
                    value_of(m) >= floor[i],
                    "list: m{i:02} older than acknowledged"
                );
            }
            let page = store
                .list::<ConfigMap>(
                    "default",
                    &jumpstarter_controller::store::ListParams {
                        limit: Some(5),
                        ..Default::default()
                    },
                )
                .await
                .expect("page");
            assert_eq!(page.items.len(), 5);
            for (i, m) in page.items.iter().enumerate() {
                assert!(
                    value_of(m) >= floor[i],
                    "page: m{i:02} older than acknowledged"
                );
            }
            let i = reads % OBJECTS;
            let got: ConfigMap = store
                .get("default", &format!("m{i:02}"))
                .await
                .expect("get")
                .expect("present");
            assert!(
                value_of(&got) >= floor[i],
                "get: m{i:02} older than acknowledged"
            );
            reads += 1;
            assert!(reads < 100_000, "the writer does not finish");
        }
        writer.await.expect("writer");
        let last: Vec<ConfigMap> = list_all(&store, "default", None).await.expect("list");
        for (i, m) in last.iter().enumerate() {
            assert_eq!(value_of(m), acknowledged[i].load(Ordering::SeqCst));
        }
    });
}
