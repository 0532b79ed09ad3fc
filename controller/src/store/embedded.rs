//! [`Store`] in one local database file, for standalone mode (no Kubernetes).
//!
//! The file is a [redb] database. Objects are stored as JSON, keyed by
//! `<apiVersion>/<kind>\n<namespace>\n<name>`, so that one namespace's objects of one type
//! are a contiguous key range in name order (the order Kubernetes lists in). The API server's
//! rules for system fields, generations, the status subresource and optimistic concurrency
//! are in [`mutation`]; the behaviour suite runs the same checks against this store and a
//! real kube-apiserver.
//!
//! File format (schema version [`SCHEMA_VERSION`]):
//! - table `meta` (`&str` → `u64`): `schema_version`, and `resource_version`, the counter
//!   behind every object's `metadata.resourceVersion`, incremented by each write;
//! - table `objects` (`&str` → JSON bytes).
//!
//! Writes are serialised (one redb write transaction at a time, behind a mutex that also
//! orders the change notifications) and committed with immediate durability before the
//! call returns, so a killed process loses no acknowledged write. Commits are two-phase, so
//! the latest commit is always intact: a file whose latest commit fails its checksums was
//! damaged from outside and is refused rather than silently rolled back. The file is
//! integrity-checked on every open (a full read; the store holds little). All redb work runs on
//! tokio's blocking pool. Watches are fed by a broadcast of committed changes (see
//! [`watch`]).
//!
//! A write that fails with an I/O error (a full disk, above all) is refused with
//! `Unavailable` naming the cause ("no space left"); redb then refuses every later call
//! until the database is reopened, so the next call reopens it (integrity-checked) and reads
//! go on; writes succeed again once space returns. Nothing acknowledged is lost. (A commit
//! whose error came after its data reached the file may be there after all: the decoded
//! cache is reset at reopen, but watchers are not told of it until they re-list.)
//!
//! Objects with `ownerReferences` are not garbage-collected when their owner is deleted:
//! the Kubernetes test environment has no garbage collector either, and the controller
//! deletes what it owns itself.

mod decoded;
mod mutation;
mod watch;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};

use futures::stream::BoxStream;
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, WriteTransaction,
};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

use jumpstarter_lease::selector;

use super::{ListParams, Object, ObjectList, Store, StoreError, WatchEvent};
use decoded::Decoded;
use mutation::{Rejection, TypeInfo, Update};

/// The file format version this build writes and reads. A file with a greater one was
/// written by a newer build and is refused rather than misread.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const OBJECTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("objects");
const SCHEMA_KEY: &str = "schema_version";
const RESOURCE_VERSION_KEY: &str = "resource_version";

/// How many committed changes a slow watcher may fall behind before it re-lists. Large
/// enough that a watcher busy for a moment keeps up, small enough to stay a few megabytes.
const CHANGE_BUFFER: usize = 1024;

/// Continue tokens are `<version>:<last name returned>`; the prefix lets a later build
/// change the format and still recognise (and refuse) old tokens.
const CONTINUE_PREFIX: &str = "v1:";

/// The embedded, file-backed object store. Cheap to clone (a handle).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    /// The open database. After an I/O error redb refuses every later call until the
    /// database is reopened: the failing call sets `broken`, and the next call reopens
    /// (under the write lock, so no transaction is open). `None` while reopening fails.
    db: RwLock<Option<Database>>,
    broken: AtomicBool,
    /// Held from the start of a write transaction until its change is broadcast, so that
    /// watchers receive changes in commit order.
    writer: Mutex<()>,
    changes: broadcast::Sender<Arc<Change>>,
    /// Objects already decoded, reused by reads while unchanged.
    decoded: Decoded,
}

/// One committed change, as broadcast to watchers.
#[derive(Debug)]
struct Change {
    type_key: String,
    namespace: String,
    name: String,
    deleted: bool,
    /// The object after the change (before it, for a delete, with the delete's version);
    /// shared by every watcher, each decoding it by reference.
    object: Arc<Value>,
    resource_version: u64,
}

impl EmbeddedStore {
    /// Opens or creates the database file. Refuses (never resets) a file that is corrupt,
    /// written by a newer schema version, or locked by another process — each with an error
    /// naming the file and cause.
    ///
    /// Blocking: call it before starting work, or from a blocking context.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let db = open_database(path)?;
        let version = initialise(&db, path)?;
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db: RwLock::new(Some(db)),
                broken: AtomicBool::new(false),
                writer: Mutex::new(()),
                changes,
                decoded: Decoded::new(version),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `op` on the blocking pool.
    async fn blocking<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }
}

/// The redb database at `path`, opened with an integrity check so that a damaged file is
/// reported rather than trusted.
fn open_database(path: &Path) -> Result<Database, StoreError> {
    // A damaged file can trip an internal assertion in redb's debug builds; the integrity
    // check on open is meant to prevent that, and the catch turns any that remains into an
    // error instead of a crash.
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Database::builder()
            .set_check_integrity_on_open(true)
            .create(path)
    }));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(err)) => Err(open_error(path, describe_open_error(&err))),
        Err(_) => Err(open_error(
            path,
            "the file is corrupt (the database engine could not read it)".into(),
        )),
    }
}

fn describe_open_error(err: &DatabaseError) -> String {
    match err {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            "it is locked by another process (or already open in this one)".into()
        }
        DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
            format!("the file is corrupt: {detail}")
        }
        DatabaseError::Storage(redb::StorageError::Io(io))
            if io.kind() == std::io::ErrorKind::InvalidData =>
        {
            format!("the file is corrupt or not a store database: {io}")
        }
        DatabaseError::UpgradeRequired(version) => {
            format!("the file uses an old database format ({version}) this build cannot read")
        }
        other => other.to_string(),
    }
}

fn open_error(path: &Path, cause: String) -> StoreError {
    StoreError::Unavailable(format!("cannot open store {}: {cause}", path.display()))
}

/// Writes the schema version into a new file, or checks the one of an existing file.
/// Checks or writes the schema version; returns the resourceVersion of the latest commit.
fn initialise(db: &Database, path: &Path) -> Result<u64, StoreError> {
    let failed = |e: &dyn std::fmt::Display| open_error(path, e.to_string());
    let mut txn = db.begin_write().map_err(|e| failed(&e))?;
    txn.set_two_phase_commit(true);
    let existing = match txn.open_table(META) {
        Ok(meta) => meta
            .get(SCHEMA_KEY)
            .map_err(|e| failed(&e))?
            .map(|v| v.value()),
        Err(e) => return Err(failed(&e)),
    };
    match existing {
        Some(version) if version > SCHEMA_VERSION => {
            return Err(open_error(
                path,
                format!(
                    "written by a newer version: schema {version}, this build supports \
                     {SCHEMA_VERSION}"
                ),
            ));
        }
        Some(_) => {}
        None => {
            let foreign = txn
                .list_tables()
                .map_err(|e| failed(&e))?
                .any(|t| t.name() != META.name() && t.name() != OBJECTS.name());
            let has_objects = match txn.open_table(OBJECTS) {
                Ok(objects) => !objects.is_empty().map_err(|e| failed(&e))?,
                Err(e) => return Err(failed(&e)),
            };
            if foreign || has_objects {
                return Err(open_error(
                    path,
                    "the file is a database without a schema version, not a store".into(),
                ));
            }
            txn.open_table(META)
                .map_err(|e| failed(&e))?
                .insert(SCHEMA_KEY, SCHEMA_VERSION)
                .map_err(|e| failed(&e))?;
        }
    }
    // Create the objects table so that read transactions always find it.
    txn.open_table(OBJECTS).map_err(|e| failed(&e))?;
    let version = Inner::read_version(&txn).map_err(|e| failed(&e))?;
    txn.commit().map_err(|e| failed(&e))?;
    Ok(version)
}

/// Whether an I/O error means the file system is full (or the quota used up).
fn is_out_of_space(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// A read guard over an open database (checked when made).
struct OpenDatabase<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for OpenDatabase<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // Invariant: `Inner::database` makes one only over `Some`, and the read guard keeps
        // it so.
        self.0
            .as_ref()
            .expect("an OpenDatabase holds an open database")
    }
}

fn type_info<K: Object>() -> TypeInfo {
    TypeInfo {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        custom: !K::group(&()).is_empty(),
    }
}

fn object_key(info: &TypeInfo, namespace: &str, name: &str) -> String {
    format!("{}\n{namespace}\n{name}", info.key())
}

fn prefix_key(type_key: &str, namespace: &str) -> String {
    format!("{type_key}\n{namespace}\n")
}

fn names<K: Object>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn to_json<K: Object>(object: &K, namespace: &str, name: &str) -> Result<Value, StoreError> {
    serde_json::to_value(object).map_err(|e| StoreError::Invalid {
        kind: K::kind(&()).into_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message: format!("cannot serialise: {e}"),
    })
}

fn from_json<K: Object>(value: &Value) -> Result<K, StoreError> {
    K::deserialize(value)
        .map_err(|e| StoreError::Other(format!("stored {} does not decode: {e}", K::kind(&()))))
}

/// Decodes stored bytes straight into `K` (no intermediate `Value`).
fn from_bytes<K: Object>(bytes: &[u8]) -> Result<K, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Other(format!("stored {} does not decode: {e}", K::kind(&()))))
}

fn decode(bytes: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Other(format!("stored object is not JSON: {e}")))
}

impl Inner {
    /// A database failure as a store error. An I/O error (the disk full, among others)
    /// leaves the database unusable until reopened: it is marked for the next call.
    fn db_error(&self, err: impl Into<redb::Error>) -> StoreError {
        let err = err.into();
        let path = self.path.display();
        match &err {
            redb::Error::Io(io) if is_out_of_space(io) => {
                self.broken.store(true, Ordering::Release);
                StoreError::Unavailable(format!(
                    "store {path}: no space left on its file system ({io}); writes fail until \
                     space is freed, reads go on"
                ))
            }
            redb::Error::Io(_) | redb::Error::PreviousIo => {
                self.broken.store(true, Ordering::Release);
                StoreError::Unavailable(format!("store {path}: I/O error: {err}"))
            }
            _ => StoreError::Unavailable(format!("store {path}: {err}")),
        }
    }

    /// The open database, reopened first if an I/O error left it unusable. Hold the guard
    /// for as long as a transaction from it lives (declare it first).
    fn database(&self) -> Result<OpenDatabase<'_>, StoreError> {
        if self.broken.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_some() {
            return Ok(OpenDatabase(guard));
        }
        drop(guard);
        self.reopen()?;
        let guard = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_some() {
            Ok(OpenDatabase(guard))
        } else {
            Err(StoreError::Unavailable(format!(
                "store {}: closed after an I/O error and not reopened yet",
                self.path.display()
            )))
        }
    }

    /// Closes the database and opens it again (redb's cure after an I/O error). With the
    /// write lock held no transaction is open, so the file lock is released in between.
    fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if slot.is_some() && !self.broken.load(Ordering::Acquire) {
            // Another call reopened it meanwhile.
            return Ok(());
        }
        self.broken.store(true, Ordering::Release);
        drop(slot.take());
        let db = open_database(&self.path)?;
        let version = {
            let txn = db.begin_read().map_err(|e| self.db_error(e))?;
            self.snapshot_version(&txn)?
        };
        self.decoded.reset(version);
        *slot = Some(db);
        self.broken.store(false, Ordering::Release);
        tracing::warn!(path = %self.path.display(), "store reopened after an I/O error");
        Ok(())
    }

    fn rejection(&self, info: &TypeInfo, namespace: &str, name: &str, r: Rejection) -> StoreError {
        let (kind, namespace, name) = (info.kind.clone(), namespace.to_owned(), name.to_owned());
        match r {
            Rejection::Conflict(message) => StoreError::Conflict {
                kind,
                namespace,
                name,
                message,
            },
            Rejection::Invalid(message) => StoreError::Invalid {
                kind,
                namespace,
                name,
                message,
            },
        }
    }

    fn not_found(info: &TypeInfo, namespace: &str, name: &str) -> StoreError {
        StoreError::NotFound {
            kind: info.kind.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    fn get<K: Object>(
        &self,
        info: &TypeInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Option<K>, StoreError> {
        let db = self.database()?;
        let txn = db.begin_read().map_err(|e| self.db_error(e))?;
        let version = self.snapshot_version(&txn)?;
        let key = object_key(info, namespace, name);
        if let Some(object) = self.decoded.reader(version).get::<K>(&key) {
            return Ok(Some(K::clone(&object)));
        }
        let objects = txn.open_table(OBJECTS).map_err(|e| self.db_error(e))?;
        let Some(bytes) = objects.get(key.as_str()).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        let object = Arc::new(from_bytes::<K>(bytes.value())?);
        self.decoded.remember(version, [(key, Arc::clone(&object))]);
        Ok(Some(K::clone(&object)))
    }

    /// The resourceVersion of the latest commit a read transaction sees.
    fn snapshot_version(&self, txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
        let meta = txn.open_table(META).map_err(|e| self.db_error(e))?;
        Ok(meta
            .get(RESOURCE_VERSION_KEY)
            .map_err(|e| self.db_error(e))?
            .map_or(0, |v| v.value()))
    }

    /// The objects of one type in one namespace (or the one named), and the resourceVersion
    /// of the snapshot they were read from.
    fn snapshot(
        &self,
        type_key: &str,
        namespace: &str,
        name: Option<&str>,
    ) -> Result<(u64, BTreeMap<String, Arc<Value>>), StoreError> {
        let db = self.database()?;
        let txn = db.begin_read().map_err(|e| self.db_error(e))?;
        let version = self.snapshot_version(&txn)?;
        let objects = txn.open_table(OBJECTS).map_err(|e| self.db_error(e))?;
        let prefix = prefix_key(type_key, namespace);
        let mut found = BTreeMap::new();
        if let Some(name) = name {
            let key = format!("{prefix}{name}");
            if let Some(bytes) = objects.get(key.as_str()).map_err(|e| self.db_error(e))? {
                found.insert(name.to_owned(), Arc::new(decode(bytes.value())?));
            }
            return Ok((version, found));
        }
        for entry in objects
            .range(prefix.as_str()..)
            .map_err(|e| self.db_error(e))?
        {
            let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
            let Some(name) = key.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            found.insert(name.to_owned(), Arc::new(decode(bytes.value())?));
        }
        Ok((version, found))
    }

    fn list<K: Object>(
        &self,
        info: &TypeInfo,
        namespace: &str,
        params: &ListParams,
    ) -> Result<(Vec<K>, Option<String>), StoreError> {
        let invalid = |message: String| StoreError::Invalid {
            kind: info.kind.clone(),
            namespace: namespace.to_owned(),
            name: String::new(),
            message,
        };
        let selector = params
            .label_selector
            .as_deref()
            .map(selector::parse)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let after = match params.continue_token.as_deref() {
            None | Some("") => None,
            Some(token) => Some(
                token
                    .strip_prefix(CONTINUE_PREFIX)
                    .filter(|name| !name.is_empty())
                    .ok_or_else(|| invalid(format!("invalid continue token {token:?}")))?
                    .to_owned(),
            ),
        };
        let limit = params.limit.filter(|&l| l > 0).map(|l| l as usize);

        let db = self.database()?;
        let txn = db.begin_read().map_err(|e| self.db_error(e))?;
        let version = self.snapshot_version(&txn)?;
        let objects = txn.open_table(OBJECTS).map_err(|e| self.db_error(e))?;
        let prefix = prefix_key(&info.key(), namespace);
        let start = match &after {
            Some(name) => format!("{prefix}{name}"),
            None => prefix.clone(),
        };
        // Without a selector, one entry past the page says whether another page follows;
        // with one, only decoded objects can be matched, so the scan reads to the end.
        let wanted = match (&selector, limit) {
            (None, Some(limit)) => limit + 1,
            _ => usize::MAX,
        };
        // In key (= name) order: each entry's name, and its decoded object or stored bytes.
        let mut scanned: Vec<(String, Scanned<K>)> = Vec::new();
        {
            let cache = self.decoded.reader(version);
            for entry in objects
                .range(start.as_str()..)
                .map_err(|e| self.db_error(e))?
            {
                if scanned.len() == wanted {
                    break;
                }
                let (key, bytes) = entry.map_err(|e| self.db_error(e))?;
                let Some(name) = key.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                if after.as_deref() == Some(name) {
                    continue;
                }
                let found = match cache.get::<K>(key.value()) {
                    Some(object) => Scanned::Decoded(object),
                    None => Scanned::Stored(bytes.value().to_vec()),
                };
                scanned.push((name.to_owned(), found));
            }
        }
        let mut fresh = Vec::new();
        let mut decoded = Vec::with_capacity(scanned.len());
        for (name, found) in scanned {
            let object = match found {
                Scanned::Decoded(object) => object,
                Scanned::Stored(bytes) => {
                    let object = Arc::new(from_bytes::<K>(&bytes)?);
                    fresh.push((format!("{prefix}{name}"), Arc::clone(&object)));
                    object
                }
            };
            decoded.push((name, object));
        }
        self.decoded.remember(version, fresh);

        let mut items = Vec::new();
        let mut last_name = None;
        for (name, object) in decoded {
            if let Some(selector) = &selector {
                let labels = object.meta().labels.clone().unwrap_or_default();
                if !selector::matches(selector, &labels) {
                    continue;
                }
            }
            if limit.is_some_and(|l| items.len() == l) {
                // A further match exists: the page is full and another follows.
                return Ok((items, last_name.map(|n| format!("{CONTINUE_PREFIX}{n}"))));
            }
            items.push(K::clone(&object));
            last_name = Some(name);
        }
        Ok((items, None))
    }

    /// Runs one write transaction: `op` sees the stored object (if any) and the version the
    /// write will have, and says what to store. Commits durably, then broadcasts the change.
    fn write<T>(
        &self,
        info: &TypeInfo,
        namespace: &str,
        name: &str,
        op: impl FnOnce(Option<Value>, u64) -> Result<(Write, T), StoreError>,
    ) -> Result<T, StoreError> {
        // The guarded value is `()`: a panic elsewhere cannot leave it inconsistent.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let db = self.database()?;
        let mut txn = db.begin_write().map_err(|e| self.db_error(e))?;
        txn.set_two_phase_commit(true);
        let key = object_key(info, namespace, name);
        let current = Self::read_version(&txn).map_err(|e| self.db_error(e))?;
        let stored = {
            let objects = txn.open_table(OBJECTS).map_err(|e| self.db_error(e))?;
            let found = objects.get(key.as_str()).map_err(|e| self.db_error(e))?;
            found.map(|bytes| decode(bytes.value())).transpose()?
        };
        let version = current + 1;
        let (write, result) = op(stored, version)?;
        let change = match write {
            Write::Nothing => {
                txn.abort().map_err(|e| self.db_error(e))?;
                return Ok(result);
            }
            Write::Put(object) => {
                let bytes = serde_json::to_vec(&object)
                    .map_err(|e| StoreError::Other(format!("cannot encode: {e}")))?;
                txn.open_table(OBJECTS)
                    .map_err(|e| self.db_error(e))?
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(|e| self.db_error(e))?;
                (false, object)
            }
            Write::Remove(object) => {
                txn.open_table(OBJECTS)
                    .map_err(|e| self.db_error(e))?
                    .remove(key.as_str())
                    .map_err(|e| self.db_error(e))?;
                (true, object)
            }
        };
        txn.open_table(META)
            .map_err(|e| self.db_error(e))?
            .insert(RESOURCE_VERSION_KEY, version)
            .map_err(|e| self.db_error(e))?;
        // Immediate durability (redb's default): on return the change is on disk.
        txn.commit().map_err(|e| self.db_error(e))?;
        self.decoded.committed(version, &key);
        let (deleted, object) = change;
        // No receivers is not an error: nobody is watching.
        let _ = self.changes.send(Arc::new(Change {
            type_key: info.key(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            deleted,
            object: Arc::new(object),
            resource_version: version,
        }));
        Ok(result)
    }

    fn read_version(txn: &WriteTransaction) -> Result<u64, redb::Error> {
        let meta = txn.open_table(META)?;
        let version = meta.get(RESOURCE_VERSION_KEY)?.map_or(0, |v| v.value());
        Ok(version)
    }

    fn create(
        &self,
        info: &TypeInfo,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Result<Value, StoreError> {
        mutation::validate_names(namespace, name)
            .map_err(|r| self.rejection(info, namespace, name, r))?;
        self.write(info, namespace, name, |stored, version| {
            if stored.is_some() {
                return Err(StoreError::AlreadyExists {
                    kind: info.kind.clone(),
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                });
            }
            let created = mutation::create(
                info,
                object,
                &uuid::Uuid::new_v4().to_string(),
                &now_rfc3339(),
                version,
            );
            Ok((Write::Put(created.clone()), created))
        })
    }

    fn update(
        &self,
        info: &TypeInfo,
        namespace: &str,
        name: &str,
        object: Value,
        status: bool,
    ) -> Result<Value, StoreError> {
        self.write(info, namespace, name, |stored, version| {
            let stored = stored.ok_or_else(|| Self::not_found(info, namespace, name))?;
            let update = if status {
                mutation::replace_status(info, &stored, &object, version)
            } else {
                mutation::replace(info, &stored, object, version)
            }
            .map_err(|r| self.rejection(info, namespace, name, r))?;
            Ok(match update {
                Update::Write(updated) => (Write::Put(updated.clone()), updated),
                Update::Unchanged => (Write::Nothing, stored),
            })
        })
    }

    fn delete(&self, info: &TypeInfo, namespace: &str, name: &str) -> Result<(), StoreError> {
        self.write(info, namespace, name, |stored, version| {
            Ok(match stored {
                Some(object) => (
                    Write::Remove(mutation::with_resource_version(object, version)),
                    (),
                ),
                None => (Write::Nothing, ()),
            })
        })
    }
}

/// An entry a list scanned: already decoded, or its stored bytes.
enum Scanned<K> {
    Decoded(Arc<K>),
    Stored(Vec<u8>),
}

/// What a write transaction stores.
enum Write {
    Nothing,
    Put(Value),
    /// Removes the object; the value is what watchers are told was deleted.
    Remove(Value),
}

/// Now, as Kubernetes writes `creationTimestamp` (whole seconds, UTC).
fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl Store for EmbeddedStore {
    async fn get<K: Object>(&self, namespace: &str, name: &str) -> Result<Option<K>, StoreError> {
        let info = type_info::<K>();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.blocking(move |inner| inner.get::<K>(&info, &namespace, &name))
            .await
    }

    async fn list<K: Object>(
        &self,
        namespace: &str,
        params: &ListParams,
    ) -> Result<ObjectList<K>, StoreError> {
        let info = type_info::<K>();
        let (namespace, params) = (namespace.to_owned(), params.clone());
        let (items, continue_token) = self
            .blocking(move |inner| inner.list::<K>(&info, &namespace, &params))
            .await?;
        Ok(ObjectList {
            items,
            continue_token,
        })
    }

    async fn create<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        let info = type_info::<K>();
        let (namespace, name) = names(object);
        let value = to_json(object, &namespace, &name)?;
        from_json(
            &self
                .blocking(move |inner| inner.create(&info, &namespace, &name, value))
                .await?,
        )
    }

    async fn replace<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        let info = type_info::<K>();
        let (namespace, name) = names(object);
        let value = to_json(object, &namespace, &name)?;
        from_json(
            &self
                .blocking(move |inner| inner.update(&info, &namespace, &name, value, false))
                .await?,
        )
    }

    async fn replace_status<K: Object>(&self, object: &K) -> Result<K, StoreError> {
        let info = type_info::<K>();
        let (namespace, name) = names(object);
        let value = to_json(object, &namespace, &name)?;
        from_json(
            &self
                .blocking(move |inner| inner.update(&info, &namespace, &name, value, true))
                .await?,
        )
    }

    async fn delete<K: Object>(&self, namespace: &str, name: &str) -> Result<(), StoreError> {
        let info = type_info::<K>();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        self.blocking(move |inner| inner.delete(&info, &namespace, &name))
            .await
    }

    fn watch<K: Object>(
        &self,
        namespace: &str,
        name: Option<&str>,
    ) -> BoxStream<'static, Result<WatchEvent<K>, StoreError>> {
        watch::stream(
            Arc::downgrade(&self.inner),
            self.inner.changes.subscribe(),
            watch::Filter {
                type_key: type_info::<K>().key(),
                namespace: namespace.to_owned(),
                name: name.map(str::to_owned),
            },
        )
    }
}
