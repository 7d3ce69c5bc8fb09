//! SQLite storage for agentauth: realms, clients, signing keys, plugins and
//! server-side tokens.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a row
//! acknowledged to a client survives a crash or power loss. Every write is
//! one `BEGIN IMMEDIATE` transaction: it either lands whole or not at all.
//! Schema changes are numbered migrations applied at open.
//!
//! Secrets never reach this crate in the clear: callers hand in keyed
//! hashes of client secrets and tokens.

mod error;
mod migrations;

pub use error::{Error, ErrorKind, Result};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use agentauth_core::{Client, ClientAttributes, ClientMetadata};
use rusqlite::{Connection, OptionalExtension, params};

/// A realm's stored configuration, as JSON the server interprets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmRow {
    pub name: String,
    pub settings: String,
}

/// A stored signing key. The private key is PKCS#8.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub alg: String,
    pub pkcs8: Vec<u8>,
    pub created_at: i64,
    /// When the key starts signing: after it has been published long
    /// enough for resource servers to have fetched it.
    pub signs_from: i64,
    /// When the key leaves the JWKS: once every token it signed expired.
    pub retires_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("signs_from", &self.signs_from)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

/// One stored version of a realm's plugin.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginRow {
    pub name: String,
    pub version: i64,
    pub hook: String,
    pub sha256: String,
    pub component: Vec<u8>,
}

impl std::fmt::Debug for PluginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("hook", &self.hook)
            .field("sha256", &self.sha256)
            .field("size", &self.component.len())
            .finish()
    }
}

/// A client with the keyed hashes of its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client: Client,
    pub secret_hash: Vec<u8>,
    pub registration_token_hash: Vec<u8>,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow").field("client", &self.client).finish_non_exhaustive()
    }
}

/// A credential that administers one realm. Its token is only ever
/// stored as a keyed hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmAdmin {
    pub realm: String,
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

impl RealmAdmin {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { realm: row.get(0)?, id: row.get(1)?, name: row.get(2)?, created_at: row.get(3)? })
    }
}

/// What a server-side token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An opaque access token; its grant is the token's claims.
    Access,
    /// A refresh token; its grant says what it may be refreshed into.
    Refresh,
    /// A JWT access token issued within a family, kept so that revoking
    /// the family can revoke it; its grant is the token's `jti`.
    Jwt,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
            Self::Jwt => "jwt",
        }
    }

    fn parse(kind: &str) -> Option<Self> {
        match kind {
            "access" => Some(Self::Access),
            "refresh" => Some(Self::Refresh),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }
}

/// A live server-side token, as found by its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    pub kind: TokenKind,
    pub grant: String,
    pub client_id: String,
    pub family: Option<String>,
    /// For a refresh token: already rotated.
    pub used: bool,
    pub expires_at: i64,
}

/// What presenting a refresh token for rotation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live and unused: it is now used, its successors stored.
    Rotated,
    /// The token had already been used: its whole family is now revoked
    /// (RFC 9700 §4.14.2), and nothing was stored.
    Reused,
    /// No live token of that kind in the realm.
    Unknown,
}

/// The database: one writer connection and a pool of readers.
///
/// Writes are grouped: a write runs in a savepoint of the transaction open
/// on the writer connection, and whoever finishes a write while no other
/// writer is waiting commits the transaction for everyone in it. Each
/// caller returns only once the commit that holds its write has reached
/// the disk, so what is acknowledged is durable, while one fsync serves as
/// many writes as arrived during the previous one. A write that fails
/// rolls back its own savepoint and nothing else.
///
/// Reads use their own connections and so see only committed data, and
/// never wait for a commit. (An in-memory database, for tests, has one
/// connection for both.)
#[derive(Debug)]
pub struct Store {
    writer: Mutex<Writer>,
    /// Writers waiting for the writer connection: while there are any, the
    /// open transaction is left for the last of them to commit.
    waiting: AtomicUsize,
    batches: Mutex<Batches>,
    committed: Condvar,
    /// Where reader connections come from; `None` for an in-memory database.
    path: Option<PathBuf>,
    readers: Mutex<Vec<Connection>>,
    checkpointer: Option<Checkpointer>,
    /// Clients as last read: every token request authenticates one.
    clients: Mutex<ClientCache>,
}

/// Recently read clients. Every change to a client forgets it and bumps
/// the generation, so a read that raced with the change is not cached.
#[derive(Debug, Default)]
struct ClientCache {
    rows: std::collections::HashMap<(String, String), ClientRow>,
    generation: u64,
}

/// Clients kept in memory; past it, the cache starts again empty.
const CLIENT_CACHE: usize = 50_000;

/// A thread that checkpoints the WAL every [`CHECKPOINT_EVERY`] from its
/// own connection: a checkpoint in the writer's commit would hold every
/// write waiting behind a copy of the WAL and an fsync of the database.
#[derive(Debug)]
struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("agentauth-checkpoint".into())
            .spawn(move || {
                let (flag, wake) = &*stopping;
                let mut stopped = lock(flag);
                while !*stopped {
                    // PASSIVE never waits for readers or the writer; what it
                    // cannot copy now, the next round will.
                    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    stopped = wake.wait_timeout(stopped, CHECKPOINT_EVERY).map_or_else(|e| e.into_inner().0, |r| r.0);
                }
            })
            .map_err(|e| Error::new(ErrorKind::Other, "starting the checkpoint thread").with_source(e))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *lock(flag) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    /// The batch whose transaction is open, if one is.
    open: Option<u64>,
    last_batch: u64,
}

/// The outcome of each finished batch.
#[derive(Debug, Default)]
struct Batches {
    /// Every batch up to this one has committed or failed.
    finished: u64,
    /// Recent batches whose commit failed, with why.
    failed: std::collections::VecDeque<(u64, Arc<Error>)>,
}

/// WAL pages past which the writer checkpoints in its own commit.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// How often the WAL is copied back into the database, off the writer's
/// path.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Prepared statements each connection keeps: more than the store has.
const STATEMENT_CACHE: usize = 128;

/// Reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 16;

/// A connection to read with: a pooled reader, or the writer's.
enum Reader<'a> {
    Pooled(&'a Store, Option<Connection>),
    Shared(MutexGuard<'a, Writer>),
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Self::Pooled(_, Some(conn)) => conn,
            Self::Pooled(_, None) => unreachable!("a pooled reader holds its connection until dropped"),
            Self::Shared(writer) => &writer.conn,
        }
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Self::Pooled(store, conn) = self
            && let Some(conn) = conn.take()
        {
            let mut idle = lock(&store.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
    }
}

/// Locks `mutex`. A panic while holding one of the store's locks cannot
/// leave a write half done (savepoints roll back on drop), so the state
/// behind a poisoned lock is usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        let mut store = Self::init(conn, Some(path.to_path_buf()))?;
        store.checkpointer = Some(Checkpointer::start(path)?);
        Ok(store)
    }

    /// Writes a consistent copy of the database at `db` to `to` (which must
    /// not exist) while a server may be using it: `VACUUM INTO` reads one
    /// snapshot, so writes that land meanwhile are either wholly in the copy
    /// or not at all. The copy is made readable by its owner only, synced to
    /// disk, and checked with `PRAGMA integrity_check`. Returns its size.
    pub fn backup(db: &Path, to: &Path) -> Result<u64> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if !db.exists() {
            return Err(Error::new(ErrorKind::Io, format!("no database at {}", db.display())));
        }
        // An empty file is a valid target; making it first sets its mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|e| Error::io(format!("creating {}", to.display()), e))?;
        let written = (|| {
            let conn = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            conn.busy_timeout(Duration::from_secs(30))?;
            let target =
                to.to_str().ok_or_else(|| Error::new(ErrorKind::Other, format!("{} is not UTF-8", to.display())))?;
            conn.execute("VACUUM INTO ?1", [target])?;
            drop(conn);
            std::fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(format!("syncing {}", to.display()), e))?;
            Self::integrity_check(to)
        })();
        if let Err(e) = written {
            // Never leave a partial copy that looks like a backup.
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
        std::fs::metadata(to)
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("reading the size of {}", to.display()), e))
    }

    /// Runs `PRAGMA integrity_check` on the database at `path`; an error
    /// names what is wrong.
    pub fn integrity_check(path: &Path) -> Result<()> {
        // Read-write without create: a WAL database read by a second process
        // needs its shared-memory file, which a read-only open cannot make.
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let result: String = query_row(&conn, "PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Corrupt, format!("integrity check of {}: {result}", path.display())))
        }
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Checkpoints run beside the writer (see `checkpoint_periodically`);
        // the writer checkpoints by itself only if the WAL grows past this
        // many pages (64 MiB), which bounds it should that thread fall behind.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            writer: Mutex::new(Writer { conn, open: None, last_batch: 0 }),
            waiting: AtomicUsize::new(0),
            batches: Mutex::new(Batches::default()),
            committed: Condvar::new(),
            path,
            readers: Mutex::new(Vec::new()),
            checkpointer: None,
            clients: Mutex::new(ClientCache::default()),
        })
    }

    /// A connection for reading.
    fn conn(&self) -> Reader<'_> {
        let Some(path) = &self.path else {
            return Reader::Shared(lock(&self.writer));
        };
        if let Some(conn) = lock(&self.readers).pop() {
            return Reader::Pooled(self, Some(conn));
        }
        let opened = Connection::open(path).and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            conn.pragma_update(None, "foreign_keys", "ON")?;
            Ok(conn)
        });
        match opened {
            Ok(conn) => Reader::Pooled(self, Some(conn)),
            // Reading through the writer is slower, never wrong.
            Err(_) => Reader::Shared(lock(&self.writer)),
        }
    }

    /// Runs `f` in a savepoint of the writer's open transaction (opening
    /// one with `BEGIN IMMEDIATE` if none is), and returns once that
    /// transaction has committed. `f`'s error rolls back `f`'s writes only.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut writer = lock(&self.writer);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let batch = match writer.open {
            Some(batch) => batch,
            None => {
                writer.conn.execute_batch("BEGIN IMMEDIATE")?;
                writer.last_batch += 1;
                writer.open = Some(writer.last_batch);
                writer.last_batch
            }
        };
        let outcome = match writer.conn.savepoint() {
            Ok(mut savepoint) => {
                // A panic in `f` must not leave the batch without a committer.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&savepoint)))
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::Other, "a storage operation panicked")));
                match ran {
                    Ok(value) => savepoint.commit().map(|()| value).map_err(Error::from),
                    Err(e) => {
                        savepoint.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                        drop(savepoint);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(e.into()),
        };
        if self.waiting.load(Ordering::SeqCst) == 0 {
            self.commit(&mut writer);
        }
        drop(writer);
        self.wait_for(batch)?;
        outcome
    }

    /// Commits the open batch and wakes everyone waiting for it.
    fn commit(&self, writer: &mut Writer) {
        let Some(batch) = writer.open.take() else { return };
        let committed = writer.conn.execute_batch("COMMIT");
        if committed.is_err() {
            // A failed COMMIT may leave the transaction open: end it, so
            // the next batch starts clean.
            let _ = writer.conn.execute_batch("ROLLBACK");
        }
        let mut batches = lock(&self.batches);
        batches.finished = batch;
        if let Err(e) = committed {
            batches.failed.push_back((batch, Arc::new(Error::from(e))));
            while batches.failed.len() > 64 {
                batches.failed.pop_front();
            }
        }
        drop(batches);
        self.committed.notify_all();
    }

    /// Waits until `batch` has committed; its error if it failed.
    fn wait_for(&self, batch: u64) -> Result<()> {
        let mut batches = lock(&self.batches);
        while batches.finished < batch {
            batches = self.committed.wait(batches).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        match batches.failed.iter().find(|(b, _)| *b == batch) {
            // Each writer of the batch gets its own error, of the commit's
            // kind, with the one failure beneath.
            Some((_, why)) => Err(Error::new(why.kind(), format!("commit failed: {why}")).with_source(Arc::clone(why))),
            None => Ok(()),
        }
    }

    /// Returns the server secret named `name`, creating it with `make` the
    /// first time. Used for the key that hashes client secrets.
    pub fn server_secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        self.write(|tx| {
            let existing: Option<Vec<u8>> =
                query_row(tx, "SELECT value FROM server_secrets WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            if let Some(value) = existing {
                return Ok(value);
            }
            let value = make();
            execute(tx, "INSERT INTO server_secrets (name, value) VALUES (?1, ?2)", params![name, value])?;
            Ok(value)
        })
    }

    /// True when the server secret `name` has been made.
    pub fn has_server_secret(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM server_secrets WHERE name = ?1)", [name], |r| r.get(0))?)
    }

    /// Deletes what can no longer matter: expired server-side tokens,
    /// revoked JWT ids and client assertion ids past their expiry, keys
    /// retired from the JWKS, and compiled artifacts of components no
    /// stored version has (one compiled for a version deleted meanwhile).
    /// Returns how many rows went.
    pub fn sweep(&self, now: i64) -> Result<usize> {
        let removed = self.write(|tx| {
            let mut n = 0;
            n += execute(tx, "DELETE FROM tokens WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM revoked_jwts WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM client_assertions WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM token_lineage WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM signing_keys WHERE retires_at IS NOT NULL AND retires_at <= ?1", [now])?;
            n += delete_unused_artifacts(tx)?;
            Ok(n)
        })?;
        Ok(removed)
    }

    // ---- realms ----

    pub fn realm(&self, name: &str) -> Result<Option<RealmRow>> {
        let conn = self.conn();
        let row = query_row(&conn, "SELECT name, settings FROM realms WHERE name = ?1", [name], |r| {
            Ok(RealmRow { name: r.get(0)?, settings: r.get(1)? })
        })
        .optional()?;
        Ok(row)
    }

    /// Creates the realm unless it exists; returns whether it was created.
    pub fn create_realm_if_absent(&self, name: &str, settings: &str, now: i64) -> Result<bool> {
        self.write(|tx| {
            let n = execute(
                tx,
                "INSERT INTO realms (name, settings, created_at, id) VALUES (?1, ?2, ?3, lower(hex(randomblob(16))))
                 ON CONFLICT (name) DO NOTHING",
                params![name, settings, now],
            )?;
            Ok(n == 1)
        })
    }

    /// Every realm's name, sorted.
    pub fn realm_names(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name FROM realms ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Creates a realm, recording `audit`; false if it exists.
    pub fn create_realm(&self, name: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        self.write(|tx| {
            let n = execute(
                tx,
                "INSERT INTO realms (name, settings, created_at, id) VALUES (?1, ?2, ?3, lower(hex(randomblob(16))))
                 ON CONFLICT (name) DO NOTHING",
                params![name, settings, audit.at],
            )?;
            if n == 1 {
                record(tx, name, audit)?;
            }
            Ok(n == 1)
        })
    }

    /// Adds a realm admin, whose token has the keyed hash `token_hash`.
    pub fn create_realm_admin(&self, admin: &RealmAdmin, token_hash: &[u8], audit: &AuditEntry) -> Result<()> {
        self.write(|tx| {
            execute(
                tx,
                "INSERT INTO realm_admins (realm, id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![admin.realm, admin.id, admin.name, token_hash, admin.created_at],
            )?;
            record(tx, &admin.realm, audit)
        })
    }

    /// The realm's admins, oldest first.
    pub fn realm_admins(&self, realm: &str) -> Result<Vec<RealmAdmin>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT realm, id, name, created_at FROM realm_admins WHERE realm = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([realm], RealmAdmin::from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The realm admin whose token has this keyed hash.
    pub fn realm_admin_by_token(&self, token_hash: &[u8]) -> Result<Option<RealmAdmin>> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT realm, id, name, created_at FROM realm_admins WHERE token_hash = ?1")?;
        Ok(stmt.query_row([token_hash], RealmAdmin::from_row).optional()?)
    }

    /// Removes a realm admin; false if there was none with that id.
    pub fn delete_realm_admin(&self, realm: &str, id: &str, audit: &AuditEntry) -> Result<bool> {
        self.write(|tx| {
            let n = execute(tx, "DELETE FROM realm_admins WHERE realm = ?1 AND id = ?2", [realm, id])?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }

    /// Deletes a realm and everything in it (clients, keys, plugins and
    /// the compiled artifacts no other realm uses, tokens); false if there
    /// was no such realm. Its audit log stays, under the deleted realm's
    /// identity: a realm created later under the same name starts a log of
    /// its own.
    pub fn delete_realm(&self, name: &str, audit: &AuditEntry) -> Result<bool> {
        let deleted = self.write(|tx| {
            let exists: bool =
                query_row(tx, "SELECT EXISTS (SELECT 1 FROM realms WHERE name = ?1)", [name], |r| r.get(0))?;
            if !exists {
                return Ok(false);
            }
            // Recorded first, while the entry can still name the realm's id.
            record(tx, name, audit)?;
            for table in
                ["tokens", "clients", "signing_keys", "plugins", "revoked_jwts", "client_assertions", "realm_admins"]
            {
                execute(tx, &format!("DELETE FROM {table} WHERE realm = ?1"), [name])?;
            }
            delete_unused_artifacts(tx)?;
            execute(tx, "DELETE FROM realms WHERE name = ?1", [name])?;
            Ok(true)
        });
        self.forget_clients(name, None);
        deleted
    }

    // ---- keys ----

    /// The realm's signing keys, newest first.
    pub fn keys(&self, realm: &str) -> Result<Vec<KeyRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT alg, pkcs8, created_at, COALESCE(signs_from, created_at), retires_at FROM signing_keys
             WHERE realm = ?1 ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows = stmt.query_map([realm], key_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Adds a rotated-in key, and schedules every key not yet retiring to
    /// leave the JWKS at `old_retire_at`; records `audit`. One commit.
    pub fn rotate_key(&self, realm: &str, key: &KeyRow, old_retire_at: i64, audit: &AuditEntry) -> Result<()> {
        self.write(|tx| {
            execute(
                tx,
                "UPDATE signing_keys SET retires_at = ?2 WHERE realm = ?1 AND retires_at IS NULL",
                params![realm, old_retire_at],
            )?;
            execute(
                tx,
                "INSERT INTO signing_keys (realm, alg, pkcs8, created_at, signs_from) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![realm, key.alg, key.pkcs8, key.created_at, key.signs_from],
            )?;
            record(tx, realm, audit)
        })
    }

    /// Stores the realm's first signing key, unless another request stored
    /// one first; returns the realm's newest key either way, so concurrent
    /// first uses agree on one key.
    pub fn insert_first_key(&self, realm: &str, key: &KeyRow) -> Result<KeyRow> {
        self.write(|tx| {
            let existing: Option<KeyRow> = query_row(
                tx,
                "SELECT alg, pkcs8, created_at, COALESCE(signs_from, created_at), retires_at FROM signing_keys
                     WHERE realm = ?1 ORDER BY COALESCE(signs_from, created_at) DESC, rowid DESC LIMIT 1",
                [realm],
                key_row,
            )
            .optional()?;
            if let Some(existing) = existing {
                return Ok(existing);
            }
            execute(
                tx,
                "INSERT INTO signing_keys (realm, alg, pkcs8, created_at, signs_from) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![realm, key.alg, key.pkcs8, key.created_at, key.signs_from],
            )?;
            Ok(key.clone())
        })
    }

    // ---- plugins ----

    /// Stores a new version of a plugin and makes it the active one;
    /// returns the version number.
    pub fn add_plugin_version(
        &self,
        realm: &str,
        name: &str,
        hook: &str,
        sha256: &str,
        component: &[u8],
        now: i64,
    ) -> Result<i64> {
        self.write(|tx| {
            let version: i64 = query_row(
                tx,
                "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE realm = ?1 AND name = ?2",
                params![realm, name],
                |r| r.get(0),
            )?;
            execute(tx, "UPDATE plugins SET active = 0 WHERE realm = ?1 AND name = ?2", params![realm, name])?;
            execute(
                tx,
                "INSERT INTO plugins (realm, name, version, hook, sha256, component, created_at, active)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
                params![realm, name, version, hook, sha256, component, now],
            )?;
            Ok(version)
        })
    }

    /// The active version of each of the realm's plugins.
    pub fn active_plugins(&self, realm: &str) -> Result<Vec<PluginRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, hook, sha256, component FROM plugins WHERE realm = ?1 AND active = 1 ORDER BY name",
        )?;
        let rows = stmt.query_map([realm], |r| {
            Ok(PluginRow {
                name: r.get(0)?,
                version: r.get(1)?,
                hook: r.get(2)?,
                sha256: r.get(3)?,
                component: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every version of every plugin of the realm, without the component
    /// bytes, by name and version.
    pub fn plugin_versions(&self, realm: &str) -> Result<Vec<PluginVersion>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, hook, sha256, length(component), created_at, active
             FROM plugins WHERE realm = ?1 ORDER BY name, version",
        )?;
        let rows = stmt.query_map([realm], |r| {
            Ok(PluginVersion {
                name: r.get(0)?,
                version: r.get(1)?,
                hook: r.get(2)?,
                sha256: r.get(3)?,
                size: r.get(4)?,
                created_at: r.get(5)?,
                active: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The component bytes of one plugin version.
    pub fn plugin_component(&self, realm: &str, name: &str, version: i64) -> Result<Option<Vec<u8>>> {
        let conn = self.conn();
        Ok(query_row(
            &conn,
            "SELECT component FROM plugins WHERE realm = ?1 AND name = ?2 AND version = ?3",
            params![realm, name, version],
            |r| r.get(0),
        )
        .optional()?)
    }

    /// Stores a new plugin version, activating it if `activate`, and
    /// records `audit` in the same commit. A name keeps one hook kind.
    pub fn push_plugin(&self, realm: &str, push: &PluginPush<'_>, audit: &AuditEntry) -> Result<PushOutcome> {
        self.write(|tx| {
            let existing: Option<String> = query_row(
                tx,
                "SELECT hook FROM plugins WHERE realm = ?1 AND name = ?2 LIMIT 1",
                params![realm, push.name],
                |r| r.get(0),
            )
            .optional()?;
            if let Some(hook) = existing.filter(|h| h != push.hook) {
                return Ok(PushOutcome::HookMismatch { existing: hook });
            }
            let (versions, bytes) = plugin_usage(tx, realm)?;
            let size = i64::try_from(push.component.len()).unwrap_or(i64::MAX);
            if versions >= push.quota.versions || bytes.saturating_add(size) > push.quota.bytes {
                return Ok(PushOutcome::OverQuota { versions, bytes });
            }
            let version: i64 = query_row(
                tx,
                "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE realm = ?1 AND name = ?2",
                params![realm, push.name],
                |r| r.get(0),
            )?;
            if push.activate {
                execute(tx, "UPDATE plugins SET active = 0 WHERE realm = ?1 AND name = ?2", params![realm, push.name])?;
            }
            execute(
                tx,
                "INSERT INTO plugins (realm, name, version, hook, sha256, component, created_at, active)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![realm, push.name, version, push.hook, push.sha256, push.component, audit.at, push.activate],
            )?;
            if let Some((engine, artifact)) = push.artifact {
                put_artifact(tx, push.sha256, engine, artifact, audit.at)?;
            }
            record(tx, realm, &AuditEntry { version: Some(version), ..audit.clone() })?;
            Ok(PushOutcome::Stored { version })
        })
    }

    /// Makes `version` of plugin `name` the active one; returns false if
    /// there is no such version. Records `audit`, with the version and its
    /// sha256, in the same commit.
    pub fn activate_plugin(&self, realm: &str, name: &str, version: i64, audit: &AuditEntry) -> Result<bool> {
        self.write(|tx| {
            let Some(sha256) = version_sha256(tx, realm, name, version)? else {
                return Ok(false);
            };
            execute(
                tx,
                "UPDATE plugins SET active = (version = ?3) WHERE realm = ?1 AND name = ?2",
                params![realm, name, version],
            )?;
            record(tx, realm, &AuditEntry { version: Some(version), sha256: Some(sha256), ..audit.clone() })?;
            Ok(true)
        })
    }

    /// Deletes one version of a plugin, or all of them (`version: None`);
    /// returns how many rows went. The compiled artifacts of their
    /// components go too, unless a version still stored (in any realm)
    /// has the same bytes. Records `audit` in the same commit.
    pub fn delete_plugin(&self, realm: &str, name: &str, version: Option<i64>, audit: &AuditEntry) -> Result<usize> {
        self.write(|tx| {
            let sha256 = match version {
                Some(v) => version_sha256(tx, realm, name, v)?,
                None => None,
            };
            let deleted = execute(
                tx,
                "DELETE FROM plugins WHERE realm = ?1 AND name = ?2 AND (?3 IS NULL OR version = ?3)",
                params![realm, name, version],
            )?;
            if deleted > 0 {
                delete_unused_artifacts(tx)?;
                record(tx, realm, &AuditEntry { version, sha256, ..audit.clone() })?;
            }
            Ok(deleted)
        })
    }

    /// Replaces the realm's settings JSON, recording `audit`.
    pub fn set_realm_settings(&self, realm: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        self.write(|tx| {
            let n = execute(tx, "UPDATE realms SET settings = ?2 WHERE name = ?1", params![realm, settings])?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }

    /// The realm's audit log, oldest first, at most `limit` entries after
    /// entry `after`: the entries of this realm, not of an earlier, deleted
    /// realm of the same name.
    pub fn audit(&self, realm: &str, after: i64, limit: i64) -> Result<Vec<(i64, AuditEntry)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, at, actor, action, plugin, version, sha256, detail FROM audit
             WHERE realm_id = (SELECT id FROM realms WHERE name = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![realm, after, limit], |r| {
            Ok((
                r.get(0)?,
                AuditEntry {
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    plugin: r.get(4)?,
                    version: r.get(5)?,
                    sha256: r.get(6)?,
                    detail: r.get(7)?,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A precompiled plugin artifact, if one is stored.
    pub fn plugin_artifact(&self, component_sha256: &str, engine: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT artifact FROM plugin_artifacts WHERE component_sha256 = ?1 AND engine = ?2",
                params![component_sha256, engine],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Keeps a precompiled plugin artifact; artifacts of engines other than
    /// `engine` for the same component are dropped, as no build of this
    /// server can use them again.
    /// Deletes every stored compiled artifact, so the next load compiles
    /// again (benchmarks of a first start). Returns how many there were.
    pub fn delete_plugin_artifacts(&self) -> Result<usize> {
        self.write(|tx| Ok(execute(tx, "DELETE FROM plugin_artifacts", [])?))
    }

    pub fn put_plugin_artifact(&self, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()> {
        self.write(|tx| put_artifact(tx, component_sha256, engine, artifact, now))
    }

    /// The components that have a compiled artifact stored, by sha256.
    pub fn plugin_artifact_hashes(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT component_sha256 FROM plugin_artifacts ORDER BY 1")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How many plugin versions the realm stores, and their components'
    /// bytes in all.
    pub fn plugin_usage(&self, realm: &str) -> Result<(i64, i64)> {
        plugin_usage(&self.conn(), realm)
    }

    // ---- clients ----

    /// Stores a newly registered client, unless the realm already holds
    /// `max_clients`: then it stores nothing and returns false. The count
    /// is read in the same transaction as the insert (and writes run one at
    /// a time on the writer connection), so racing registrations never
    /// pass the cap. Fails if the id is taken.
    pub fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool> {
        let c = &row.client;
        let (metadata, attributes) = client_json(c)?;
        self.write(|tx| {
            if count_clients(tx, realm)? >= max_clients {
                return Ok(false);
            }
            execute(
                tx,
                "INSERT INTO clients (realm, client_id, metadata, attributes, is_ai_agent, secret_hash,
                                      registration_token_hash, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    realm,
                    c.client_id,
                    metadata,
                    attributes,
                    c.is_ai_agent,
                    row.secret_hash,
                    row.registration_token_hash,
                    c.issued_at
                ],
            )?;
            Ok(true)
        })
    }

    /// Replaces a client's metadata, attributes and registration access
    /// token (RFC 7592 update), provided its registration access token still
    /// has the keyed hash `token_hash`; false if no client of the realm has
    /// that id and token.
    ///
    /// The check and the replacement are one statement (a compare-and-swap
    /// on the token's hash). Writes run one at a time on the writer
    /// connection, each seeing the writes before it in the same batch, so
    /// of racing updates presenting one token exactly one matches; the
    /// others find the rotated hash and change nothing.
    pub fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool> {
        let c = &row.client;
        let (metadata, attributes) = client_json(c)?;
        let updated = self.write(|tx| {
            let n = execute(
                tx,
                "UPDATE clients SET metadata = ?3, attributes = ?4, registration_token_hash = ?5
                 WHERE realm = ?1 AND client_id = ?2 AND registration_token_hash = ?6",
                params![realm, c.client_id, metadata, attributes, row.registration_token_hash, token_hash],
            )?;
            Ok(n == 1)
        });
        self.forget_clients(realm, Some(&c.client_id));
        updated
    }

    /// Deletes a client and every server-side token issued to it, in one
    /// commit, provided its registration access token still has the keyed
    /// hash `token_hash` (checked in the same statement, as for
    /// [`Store::update_client`]); false if no client has that id and token.
    pub fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool> {
        let deleted = self.write(|tx| {
            let n = execute(
                tx,
                "DELETE FROM clients WHERE realm = ?1 AND client_id = ?2 AND registration_token_hash = ?3",
                params![realm, client_id, token_hash],
            )?;
            if n == 1 {
                execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND client_id = ?2", params![realm, client_id])?;
                revoke_derived_from_client(tx, realm, client_id)?;
            }
            Ok(n == 1)
        });
        self.forget_clients(realm, Some(client_id));
        deleted
    }

    pub fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let key = (realm.to_string(), client_id.to_string());
        let generation = {
            let cache = lock(&self.clients);
            if let Some(row) = cache.rows.get(&key) {
                return Ok(Some(row.clone()));
            }
            cache.generation
        };
        let row = self.client_from_db(realm, client_id)?;
        if let Some(row) = &row {
            let mut cache = lock(&self.clients);
            // A change since the read above may have made it stale.
            if cache.generation == generation {
                if cache.rows.len() >= CLIENT_CACHE {
                    cache.rows.clear();
                }
                cache.rows.insert(key, row.clone());
            }
        }
        Ok(row)
    }

    /// Forgets cached clients after a change: one client, or a whole realm's.
    fn forget_clients(&self, realm: &str, client_id: Option<&str>) {
        let mut cache = lock(&self.clients);
        cache.generation += 1;
        match client_id {
            Some(id) => {
                cache.rows.remove(&(realm.to_string(), id.to_string()));
            }
            None => cache.rows.retain(|(r, _), _| r != realm),
        }
    }

    fn client_from_db(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let conn = self.conn();
        let row = query_row(
            &conn,
            "SELECT client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, issued_at
                 FROM clients WHERE realm = ?1 AND client_id = ?2",
            params![realm, client_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
        let Some((client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, issued_at)) = row
        else {
            return Ok(None);
        };
        let metadata: ClientMetadata = serde_json::from_str(&metadata)
            .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its metadata is not valid"), e))?;
        let attributes: ClientAttributes = serde_json::from_str(&attributes)
            .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its attributes are not valid"), e))?;
        Ok(Some(ClientRow {
            client: Client { client_id, metadata, attributes, is_ai_agent, issued_at },
            secret_hash,
            registration_token_hash,
        }))
    }

    /// True when the realm has the client.
    pub fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool> {
        Ok(exists(&self.conn(), CLIENT_EXISTS, params![realm, client_id])?)
    }

    /// How many clients the realm has (as of the last commit).
    pub fn count_clients(&self, realm: &str) -> Result<u64> {
        count_clients(&self.conn(), realm)
    }

    /// How many server-side tokens of `kind` the realm holds.
    pub fn count_tokens(&self, realm: &str, kind: TokenKind) -> Result<i64> {
        Ok(query_row(
            &self.conn(),
            "SELECT COUNT(*) FROM tokens WHERE realm = ?1 AND kind = ?2",
            params![realm, kind.as_str()],
            |r| r.get(0),
        )?)
    }

    // ---- server-side tokens ----

    /// Stores tokens by their keyed hashes, all in one commit.
    pub fn insert_tokens(&self, realm: &str, tokens: &[NewToken<'_>]) -> Result<()> {
        self.write(|tx| tokens.iter().try_for_each(|t| insert_token(tx, realm, t)))
    }

    /// Starts a token family derived from another token (an exchange):
    /// records where it came from and stores its first tokens, in one
    /// commit. Unless the parent is still live at that commit — a
    /// revocation may have raced the exchange — nothing is stored and the
    /// answer is false.
    pub fn insert_derived_family(&self, realm: &str, lineage: &Lineage<'_>, tokens: &[NewToken<'_>]) -> Result<bool> {
        self.write(|tx| {
            let parent_revoked = exists(tx, JWT_REVOKED, params![realm, lineage.parent_jti])?;
            let parent_row_live = match lineage.parent_hash {
                Some(hash) => exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE realm = ?1 AND hash = ?2)",
                    params![realm, hash],
                )?,
                None => true,
            };
            let parent_family_live = match lineage.parent_family {
                Some(family) => exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE realm = ?1 AND family = ?2)",
                    params![realm, family],
                )?,
                None => true,
            };
            let parent_client_live = exists(tx, CLIENT_EXISTS, params![realm, lineage.parent_client])?;
            if parent_revoked || !parent_row_live || !parent_family_live || !parent_client_live {
                return Ok(false);
            }
            execute(
                tx,
                "INSERT INTO token_lineage (realm, family, parent_jti, parent_family, parent_client, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    realm,
                    lineage.family,
                    lineage.parent_jti,
                    lineage.parent_family,
                    lineage.parent_client,
                    lineage.expires_at
                ],
            )?;
            tokens.iter().try_for_each(|t| insert_token(tx, realm, t))?;
            Ok(true)
        })
    }

    /// The grant of a live token of `kind` in `realm`: a token of another
    /// realm, or expired, is not found.
    pub fn token(&self, hash: &[u8], realm: &str, kind: TokenKind, now: i64) -> Result<Option<String>> {
        Ok(self.token_row(hash, realm, now)?.filter(|row| row.kind == kind).map(|row| row.grant))
    }

    /// Rotates a refresh token in one commit: a live, unused token is
    /// marked used and its successors stored; a token used before revokes
    /// its whole family, since the token has leaked (RFC 9700 §4.14.2). So
    /// a refresh token works once, even for racing requests.
    pub fn rotate_token(
        &self,
        realm: &str,
        old_hash: &[u8],
        successors: &[NewToken<'_>],
        now: i64,
    ) -> Result<Rotation> {
        self.write(|tx| {
            let found: Option<(Option<i64>, Option<String>)> = query_row(
                tx,
                    "SELECT used_at, family FROM tokens WHERE hash = ?1 AND realm = ?2 AND kind = 'refresh' AND expires_at > ?3",
                    params![old_hash, realm, now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match found {
                None => Ok(Rotation::Unknown),
                Some((Some(_), family)) => {
                    match family {
                        Some(family) => revoke_family(tx, realm, &family)?,
                        None => {
                            execute(tx, "DELETE FROM tokens WHERE hash = ?1 AND realm = ?2", params![old_hash, realm])?;
                        }
                    }
                    Ok(Rotation::Reused)
                }
                Some((None, _)) => {
                    execute(tx, "UPDATE tokens SET used_at = ?3 WHERE hash = ?1 AND realm = ?2", params![old_hash, realm, now])?;
                    successors.iter().try_for_each(|t| insert_token(tx, realm, t))?;
                    Ok(Rotation::Rotated)
                }
            }
        })
    }

    /// Any live server-side token of the realm, by hash.
    pub fn token_row(&self, hash: &[u8], realm: &str, now: i64) -> Result<Option<TokenRow>> {
        let conn = self.conn();
        let row = query_row(
            &conn,
            "SELECT kind, grant_json, client_id, family, used_at, expires_at FROM tokens
                 WHERE hash = ?1 AND realm = ?2 AND expires_at > ?3",
            params![hash, realm, now],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
        let Some((kind, grant, client_id, family, used_at, expires_at)) = row else {
            return Ok(None);
        };
        let Some(kind) = TokenKind::parse(&kind) else {
            return Err(Error::new(ErrorKind::Corrupt, format!("a token of realm {realm} has unknown kind {kind:?}")));
        };
        Ok(Some(TokenRow { kind, grant, client_id, family, used: used_at.is_some(), expires_at }))
    }

    /// Revokes one server-side token; with a family, every token of it.
    /// Either way, every family derived from what is revoked goes too.
    pub fn revoke_token(&self, realm: &str, hash: &[u8], family: Option<&str>) -> Result<()> {
        self.write(|tx| {
            match family {
                Some(family) => revoke_family(tx, realm, family)?,
                None => {
                    execute(tx, "DELETE FROM tokens WHERE hash = ?1 AND realm = ?2", params![hash, realm])?;
                }
            }
            Ok(())
        })
    }

    /// Revokes one opaque access token, outside any family, and every
    /// family derived from it (its `jti`).
    pub fn revoke_opaque(&self, realm: &str, hash: &[u8], jti: &str) -> Result<()> {
        self.write(|tx| {
            execute(tx, "DELETE FROM tokens WHERE hash = ?1 AND realm = ?2", params![hash, realm])?;
            revoke_derived_from_token(tx, realm, jti)
        })
    }

    /// Records a JWT access token as revoked until it expires, and revokes
    /// every family derived from it.
    pub fn revoke_jwt(&self, realm: &str, jti: &str, expires_at: i64) -> Result<()> {
        self.write(|tx| {
            execute(
                tx,
                "INSERT OR IGNORE INTO revoked_jwts (realm, jti, expires_at) VALUES (?1, ?2, ?3)",
                params![realm, jti, expires_at],
            )?;
            revoke_derived_from_token(tx, realm, jti)
        })
    }

    /// Records a client assertion's `jti`; false if it was seen before (a
    /// replay, RFC 7523 §3).
    pub fn use_assertion_jti(&self, realm: &str, client_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
        self.write(|tx| {
            let n = execute(
                tx,
                "INSERT OR IGNORE INTO client_assertions (realm, client_id, jti, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![realm, client_id, jti, expires_at],
            )?;
            Ok(n == 1)
        })
    }

    /// True when the JWT with `jti` was revoked.
    pub fn is_jwt_revoked(&self, realm: &str, jti: &str) -> Result<bool> {
        Ok(exists(&self.conn(), JWT_REVOKED, params![realm, jti])?)
    }
}

/// One version of a plugin, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginVersion {
    pub name: String,
    pub version: i64,
    pub hook: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: i64,
    pub active: bool,
}

/// A plugin version to store.
#[derive(Debug)]
pub struct PluginPush<'a> {
    pub name: &'a str,
    pub hook: &'a str,
    pub sha256: &'a str,
    pub component: &'a [u8],
    pub activate: bool,
    /// The component compiled, and the engine it was compiled for: stored
    /// in the same commit as the version, so a refused push stores neither.
    pub artifact: Option<(&'a str, &'a [u8])>,
    /// What the realm may store in all; the push is refused past it.
    pub quota: PluginQuota,
}

/// What one realm may keep of plugins: versions (of all its plugins,
/// active or not) and their components' bytes in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PluginQuota {
    pub versions: i64,
    pub bytes: i64,
}

impl PluginQuota {
    /// No bound, for callers that are not a realm's admins (the demo
    /// realm's provisioning).
    pub const UNLIMITED: Self = Self { versions: i64::MAX, bytes: i64::MAX };
}

/// What storing a plugin version did.
#[derive(Debug, PartialEq, Eq)]
pub enum PushOutcome {
    Stored {
        version: i64,
    },
    /// The name already serves another hook.
    HookMismatch {
        existing: String,
    },
    /// The realm's plugins already use this much of its quota: with this
    /// push they would exceed it.
    OverQuota {
        versions: i64,
        bytes: i64,
    },
}

/// One administrative change: who, when, what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub plugin: Option<String>,
    pub version: Option<i64>,
    pub sha256: Option<String>,
    pub detail: Option<String>,
}

/// A client's metadata and attributes as the JSON stored for them.
fn client_json(c: &Client) -> Result<(String, String)> {
    let encode = |e| Error::new(ErrorKind::Other, format!("encoding client {}", c.client_id)).with_source(e);
    Ok((serde_json::to_string(&c.metadata).map_err(encode)?, serde_json::to_string(&c.attributes).map_err(encode)?))
}

fn put_artifact(tx: &Connection, component_sha256: &str, engine: &str, artifact: &[u8], now: i64) -> Result<()> {
    execute(
        tx,
        "DELETE FROM plugin_artifacts WHERE component_sha256 = ?1 AND engine <> ?2",
        params![component_sha256, engine],
    )?;
    execute(
        tx,
        "INSERT OR REPLACE INTO plugin_artifacts (component_sha256, engine, artifact, created_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![component_sha256, engine, artifact, now],
    )?;
    Ok(())
}

fn plugin_usage(conn: &Connection, realm: &str) -> Result<(i64, i64)> {
    Ok(query_row(
        conn,
        "SELECT COUNT(*), COALESCE(SUM(length(component)), 0) FROM plugins WHERE realm = ?1",
        [realm],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?)
}

/// Deletes the compiled artifacts whose component no stored version has.
fn delete_unused_artifacts(tx: &Connection) -> Result<usize> {
    Ok(execute(
        tx,
        "DELETE FROM plugin_artifacts
         WHERE NOT EXISTS (SELECT 1 FROM plugins p WHERE p.sha256 = plugin_artifacts.component_sha256)",
        [],
    )?)
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow { alg: r.get(0)?, pkcs8: r.get(1)?, created_at: r.get(2)?, signs_from: r.get(3)?, retires_at: r.get(4)? })
}

fn version_sha256(tx: &Connection, realm: &str, name: &str, version: i64) -> Result<Option<String>> {
    Ok(query_row(
        tx,
        "SELECT sha256 FROM plugins WHERE realm = ?1 AND name = ?2 AND version = ?3",
        params![realm, name, version],
        |r| r.get(0),
    )
    .optional()?)
}

/// Appends an audit entry to the log of the realm now named `realm`: it
/// belongs to that realm's identity, and keeps the name for the record.
fn record(tx: &Connection, realm: &str, e: &AuditEntry) -> Result<()> {
    execute(
        tx,
        "INSERT INTO audit (at, actor, realm, action, plugin, version, sha256, detail, realm_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT id FROM realms WHERE name = ?3))",
        params![e.at, e.actor, realm, e.action, e.plugin, e.version, e.sha256, e.detail],
    )?;
    Ok(())
}

/// Runs a statement through the connection's statement cache: the hot
/// paths run the same few statements thousands of times a second.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Whether the realm has the client, by (realm, client_id).
const CLIENT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM clients WHERE realm = ?1 AND client_id = ?2)";
/// Whether a JWT was revoked, by (realm, jti).
const JWT_REVOKED: &str = "SELECT EXISTS (SELECT 1 FROM revoked_jwts WHERE realm = ?1 AND jti = ?2)";

/// The answer of a cached `SELECT EXISTS (...)` statement.
fn exists(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<bool> {
    query_row(conn, sql, params, |r| r.get(0))
}

/// One row of a cached statement's result.
fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// A server-side token to store: its keyed hash, what it is, its grant
/// as JSON, and when it expires.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub hash: &'a [u8],
    /// The client the token was issued to.
    pub client_id: &'a str,
    /// The refresh token family it belongs to, if any.
    pub family: Option<&'a str>,
    pub kind: TokenKind,
    pub grant: &'a str,
    pub expires_at: i64,
}

fn insert_token(tx: &Connection, realm: &str, t: &NewToken<'_>) -> Result<()> {
    execute(
        tx,
        "INSERT INTO tokens (hash, realm, kind, grant_json, expires_at, client_id, family)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![t.hash, realm, t.kind.as_str(), t.grant, t.expires_at, t.client_id, t.family],
    )?;
    Ok(())
}

/// How many clients the realm has, from the count the triggers of
/// migration 9 keep: one row read, however many clients there are.
fn count_clients(conn: &Connection, realm: &str) -> Result<u64> {
    let n: i64 =
        query_row(conn, "SELECT COALESCE(MAX(n), 0) FROM client_counts WHERE realm = ?1", [realm], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Where a token family came from: the token it was derived from (by
/// token exchange), that token's own family if it had one, and the client
/// it was issued to.
#[derive(Debug)]
pub struct Lineage<'a> {
    pub family: &'a str,
    pub parent_jti: &'a str,
    /// The keyed hash of the parent when it is a server-side (opaque)
    /// token, whose row must still be there.
    pub parent_hash: Option<&'a [u8]>,
    pub parent_family: Option<&'a str>,
    pub parent_client: &'a str,
    /// When nothing of the family can be live any more.
    pub expires_at: i64,
}

/// Ends a token family and, transitively, every family derived from it:
/// their JWTs are recorded as revoked, their server-side tokens deleted.
fn revoke_family(tx: &Connection, realm: &str, family: &str) -> Result<()> {
    let mut pending = vec![family.to_string()];
    while let Some(family) = pending.pop() {
        execute(
            tx,
            "INSERT OR IGNORE INTO revoked_jwts (realm, jti, expires_at)
             SELECT realm, grant_json, expires_at FROM tokens WHERE realm = ?1 AND family = ?2 AND kind = 'jwt'",
            params![realm, family],
        )?;
        execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND family = ?2", params![realm, family])?;
        pending.extend(derived_families(
            tx,
            "SELECT family FROM token_lineage WHERE realm = ?1 AND parent_family = ?2",
            realm,
            &family,
        )?);
        execute(tx, "DELETE FROM token_lineage WHERE realm = ?1 AND family = ?2", params![realm, family])?;
    }
    Ok(())
}

/// Revokes every family derived from the token `jti`.
fn revoke_derived_from_token(tx: &Connection, realm: &str, jti: &str) -> Result<()> {
    let sql = "SELECT family FROM token_lineage WHERE realm = ?1 AND parent_jti = ?2";
    derived_families(tx, sql, realm, jti)?.iter().try_for_each(|family| revoke_family(tx, realm, family))
}

/// Revokes every family derived from a token of the client `client_id`.
fn revoke_derived_from_client(tx: &Connection, realm: &str, client_id: &str) -> Result<()> {
    let sql = "SELECT family FROM token_lineage WHERE realm = ?1 AND parent_client = ?2";
    derived_families(tx, sql, realm, client_id)?.iter().try_for_each(|family| revoke_family(tx, realm, family))
}

fn derived_families(tx: &Connection, sql: &str, realm: &str, parent: &str) -> Result<Vec<String>> {
    let mut statement = tx.prepare_cached(sql)?;
    let families = statement.query_map(params![realm, parent], |r| r.get(0))?;
    Ok(families.collect::<rusqlite::Result<Vec<String>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentauth_core::{AuthMethod, GrantType};

    #[test]
    fn concurrent_writes_share_commits_and_a_failed_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let (threads, each) = (8, 200);
        std::thread::scope(|s| {
            for t in 0..threads {
                let store = &store;
                s.spawn(move || {
                    for i in 0..each {
                        let name = format!("r{t}-{i}");
                        if i % 10 == 0 {
                            // Writes, then fails: its row must not land.
                            let failed = store.write(|c| {
                                c.execute(
                                    "INSERT INTO realms (name, settings, created_at) VALUES (?1, '{}', 0)",
                                    [&name],
                                )?;
                                Err::<(), _>(Error::new(ErrorKind::Other, "refused"))
                            });
                            assert!(failed.is_err());
                        } else {
                            assert!(store.create_realm_if_absent(&name, "{}", 0).unwrap());
                        }
                    }
                });
            }
        });
        let written = store.realm_names().unwrap();
        assert_eq!(written.len(), threads * each * 9 / 10);
        assert!(written.iter().all(|n| !n.ends_with("-0") && !n.ends_with("0")));
        // Every write returned after its commit; they shared commits.
        let batches = lock(&store.writer).last_batch;
        assert!(batches < (threads * each) as u64, "{batches} commits for {} writes", threads * each);
        // A fresh connection sees them all: they are on disk, not in a cache.
        let reopened = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(reopened.realm_names().unwrap().len(), written.len());
    }

    #[test]
    fn a_database_locked_past_the_busy_timeout_is_reported_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        lock(&store.writer).conn.busy_timeout(Duration::from_millis(50)).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let error = store.create_realm_if_absent("r", "{}", 0).unwrap_err();
        assert!(error.is_busy(), "{error}");
        assert_eq!(error.kind(), ErrorKind::Busy);
        other.execute_batch("COMMIT").unwrap();
        assert!(store.create_realm_if_absent("r", "{}", 0).unwrap());
        assert!(!Error::new(ErrorKind::Other, "some other failure").is_busy());
    }

    #[test]
    fn unreadable_rows_are_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        let broken = store.write(|c| {
            c.execute("UPDATE clients SET metadata = '{' WHERE client_id = 'c1'", [])?;
            c.execute(
                "INSERT INTO tokens (hash, realm, kind, grant_json, expires_at) VALUES (x'01', 'alpha', 'bogus', '{}', 9)",
                [],
            )?;
            Ok(())
        });
        broken.unwrap();
        let e = store.client("alpha", "c1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        let e = store.token_row(&[1], "alpha", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }

    fn client_row(id: &str) -> ClientRow {
        ClientRow {
            client: Client {
                client_id: id.into(),
                metadata: ClientMetadata {
                    redirect_uris: vec!["https://a.example/cb".into()],
                    grant_types: vec![GrantType::ClientCredentials],
                    response_types: vec!["token".into()],
                    client_name: Some("agent".into()),
                    scope: "read write".into(),
                    token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                    jwks: None,
                },
                attributes: ClientAttributes { stateless_tokens_enabled: true, ..Default::default() },
                is_ai_agent: true,
                issued_at: 42,
            },
            secret_hash: vec![1; 32],
            registration_token_hash: vec![2; 32],
        }
    }

    #[test]
    fn a_cached_client_never_outlives_its_update_or_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
        let mut changed = client_row("c1");
        changed.registration_token_hash = vec![9; 32];
        changed.client.metadata.scope = "read".into();
        assert!(store.update_client("alpha", &changed, &[2; 32]).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(changed), "read after update");
        assert!(store.delete_client("alpha", "c1", &[9; 32]).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), None, "read after delete");
        store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
        assert!(store.client("alpha", "c2").unwrap().is_some());
        assert!(store.delete_realm("alpha", &AuditEntry::default()).unwrap());
        assert_eq!(store.client("alpha", "c2").unwrap(), None, "read after the realm went");
    }

    #[test]
    fn clients_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.create_realm_if_absent("alpha", "{}", 0).unwrap();
            store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
        assert_eq!(store.client("beta", "c1").unwrap(), None);
    }

    #[test]
    fn deleting_a_client_deletes_its_tokens_only() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
        let token = |hash, client_id| NewToken {
            hash,
            client_id,
            family: None,
            kind: TokenKind::Access,
            grant: "{}",
            expires_at: 100,
        };
        store.insert_tokens("alpha", &[token(b"t1", "c1"), token(b"t2", "c2")]).unwrap();
        assert!(store.delete_client("alpha", "c1", &[2; 32]).unwrap());
        assert!(!store.delete_client("alpha", "c1", &[2; 32]).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), None);
        assert_eq!(store.token(b"t1", "alpha", TokenKind::Access, 0).unwrap(), None);
        assert!(store.token(b"t2", "alpha", TokenKind::Access, 0).unwrap().is_some());
    }

    #[test]
    fn updating_a_client_keeps_its_secret() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        let mut row = client_row("c1");
        row.client.metadata.scope = "read".into();
        row.registration_token_hash = vec![9; 32];
        row.secret_hash = vec![7; 32];
        assert!(store.update_client("alpha", &row, &[2; 32]).unwrap());
        let stored = store.client("alpha", "c1").unwrap().unwrap();
        assert_eq!(stored.client.metadata.scope, "read");
        assert_eq!(stored.registration_token_hash, vec![9; 32]);
        assert_eq!(stored.secret_hash, vec![1; 32], "the secret is not changed by an update");
    }

    #[test]
    fn racing_inserts_never_pass_the_realms_client_cap_and_the_count_follows_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.create_realm_if_absent("beta", "{}", 0).unwrap();
        store.insert_client("beta", &client_row("b1"), u64::MAX).unwrap();
        let stored = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..16 {
                let (store, stored) = (&store, &stored);
                s.spawn(move || {
                    if store.insert_client("alpha", &client_row(&format!("c{t}")), 5).unwrap() {
                        stored.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(stored.load(Ordering::SeqCst), 5);
        assert_eq!((store.count_clients("alpha").unwrap(), store.count_clients("beta").unwrap()), (5, 1));
        let c = lock(&store.writer)
            .conn
            .query_row("SELECT COUNT(*) FROM clients WHERE realm = 'alpha'", [], |r| r.get::<_, i64>(0));
        assert_eq!(c.unwrap(), 5, "the count is the rows'");
        // A failed insert (a taken id) counts nothing; a deletion frees a place.
        let id = (0..16).map(|t| format!("c{t}")).find(|id| store.client("alpha", id).unwrap().is_some()).unwrap();
        assert!(store.insert_client("alpha", &client_row(&id), u64::MAX).is_err());
        assert_eq!(store.count_clients("alpha").unwrap(), 5);
        assert!(store.delete_client("alpha", &id, &[2; 32]).unwrap());
        assert_eq!(store.count_clients("alpha").unwrap(), 4);
        assert!(store.insert_client("alpha", &client_row("new"), 5).unwrap());
        assert!(!store.insert_client("alpha", &client_row("newer"), 5).unwrap());
        assert!(store.delete_realm("alpha", &AuditEntry::default()).unwrap());
        assert_eq!(store.count_clients("alpha").unwrap(), 0);
        assert_eq!(store.count_clients("nowhere").unwrap(), 0);
    }

    #[test]
    fn a_spent_registration_token_neither_updates_nor_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        // Racing updates that all present the current token (hash [2; 32]),
        // each rotating it to a hash of its own: one wins, in whatever
        // batches the writes are grouped.
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..16u8 {
                let (store, wins) = (&store, &wins);
                s.spawn(move || {
                    let mut row = client_row("c1");
                    row.registration_token_hash = vec![100 + t; 32];
                    if store.update_client("alpha", &row, &[2; 32]).unwrap() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1);
        let current = store.client("alpha", "c1").unwrap().unwrap().registration_token_hash;
        assert_ne!(current, vec![2; 32]);
        // The spent token deletes nothing; the current one does.
        assert!(!store.delete_client("alpha", "c1", &[2; 32]).unwrap());
        assert!(store.client("alpha", "c1").unwrap().is_some());
        assert!(store.delete_client("alpha", "c1", &current).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), None);
    }

    #[test]
    fn a_sweep_removes_only_what_has_expired() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let token = |hash, expires_at| NewToken {
            hash,
            client_id: "c",
            family: None,
            kind: TokenKind::Access,
            grant: "{}",
            expires_at,
        };
        store.insert_tokens("alpha", &[token(b"old", 10), token(b"live", 100)]).unwrap();
        store.revoke_jwt("alpha", "j-old", 10).unwrap();
        store.revoke_jwt("alpha", "j-live", 100).unwrap();
        assert_eq!(store.sweep(50).unwrap(), 2);
        assert!(store.token(b"live", "alpha", TokenKind::Access, 50).unwrap().is_some());
        assert!(store.is_jwt_revoked("alpha", "j-live").unwrap());
        assert!(!store.is_jwt_revoked("alpha", "j-old").unwrap());
    }

    #[test]
    fn duplicate_client_id_is_refused() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        let e = store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Constraint, "{e}");
    }

    #[test]
    fn client_of_unknown_realm_is_refused() {
        let store = Store::open_in_memory().unwrap();
        let e = store.insert_client("nowhere", &client_row("c1"), u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Constraint, "{e}");
    }

    #[test]
    fn first_key_is_shared_by_racing_callers() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let a = KeyRow { alg: "ES256".into(), pkcs8: vec![1], created_at: 1, signs_from: 1, retires_at: None };
        let b = KeyRow { alg: "ES256".into(), pkcs8: vec![2], created_at: 1, signs_from: 1, retires_at: None };
        assert_eq!(store.insert_first_key("alpha", &a).unwrap(), a);
        assert_eq!(store.insert_first_key("alpha", &b).unwrap(), a);
        assert_eq!(store.keys("alpha").unwrap(), vec![a.clone()]);
        // Rotation: the new key comes first; the old one is scheduled out.
        let c = KeyRow { alg: "EdDSA".into(), pkcs8: vec![3], created_at: 5, signs_from: 10, retires_at: None };
        store.rotate_key("alpha", &c, 100, &AuditEntry::default()).unwrap();
        let keys = store.keys("alpha").unwrap();
        assert_eq!(keys, vec![c, KeyRow { retires_at: Some(100), ..a }]);
    }

    #[test]
    fn a_refresh_token_rotates_once() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.create_realm_if_absent("beta", "{}", 0).unwrap();
        let token =
            |hash, kind, grant| NewToken { hash, client_id: "c1", family: Some("f1"), kind, grant, expires_at: 100 };
        let refresh = |hash, grant| token(hash, TokenKind::Refresh, grant);
        store.insert_tokens("alpha", &[refresh(b"old", "{\"g\":1}"), token(b"j1", TokenKind::Jwt, "jti-1")]).unwrap();
        assert_eq!(store.token(b"old", "beta", TokenKind::Refresh, 0).unwrap(), None, "other realm");
        assert_eq!(store.token(b"old", "alpha", TokenKind::Access, 0).unwrap(), None, "other kind");
        assert_eq!(store.rotate_token("beta", b"old", &[refresh(b"new", "{}")], 0).unwrap(), Rotation::Unknown);
        let next = [refresh(b"new", "{\"g\":2}"), token(b"j2", TokenKind::Jwt, "jti-2")];
        assert_eq!(store.rotate_token("alpha", b"old", &next, 0).unwrap(), Rotation::Rotated);
        assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 100).unwrap(), None, "expired");
        assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 99).unwrap().as_deref(), Some("{\"g\":2}"));
        // Presenting the used token again ends the family: tokens and JWTs.
        assert_eq!(store.rotate_token("alpha", b"old", &[refresh(b"x", "{}")], 0).unwrap(), Rotation::Reused);
        assert_eq!(store.token(b"x", "alpha", TokenKind::Refresh, 0).unwrap(), None);
        assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 0).unwrap(), None);
        assert!(store.is_jwt_revoked("alpha", "jti-1").unwrap() && store.is_jwt_revoked("alpha", "jti-2").unwrap());
        assert!(!store.is_jwt_revoked("beta", "jti-1").unwrap());
    }

    fn audit(action: &str) -> AuditEntry {
        AuditEntry { at: 1, actor: "admin".into(), action: action.into(), ..Default::default() }
    }

    #[test]
    fn pushes_activations_and_deletions_are_audited_in_the_same_commit() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let push = |c: &'static [u8], activate| PluginPush {
            name: "p",
            hook: "may-act",
            sha256: "aa",
            component: c,
            activate,
            artifact: None,
            quota: PluginQuota::UNLIMITED,
        };
        assert_eq!(
            store.push_plugin("alpha", &push(b"v1", true), &audit("push")).unwrap(),
            PushOutcome::Stored { version: 1 }
        );
        assert_eq!(
            store.push_plugin("alpha", &push(b"v2", false), &audit("push")).unwrap(),
            PushOutcome::Stored { version: 2 }
        );
        let dcr = PluginPush { hook: "dcr", ..push(b"v3", true) };
        assert_eq!(
            store.push_plugin("alpha", &dcr, &audit("push")).unwrap(),
            PushOutcome::HookMismatch { existing: "may-act".into() }
        );
        let active = |s: &Store| {
            s.plugin_versions("alpha").unwrap().iter().filter(|v| v.active).map(|v| v.version).collect::<Vec<_>>()
        };
        assert_eq!(active(&store), vec![1], "an inactive push leaves the active version");
        assert!(store.activate_plugin("alpha", "p", 2, &audit("activate")).unwrap());
        assert_eq!(active(&store), vec![2]);
        assert!(!store.activate_plugin("alpha", "p", 9, &audit("activate")).unwrap());
        assert_eq!(store.plugin_component("alpha", "p", 2).unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap(), 1);
        let log: Vec<_> =
            store.audit("alpha", 0, 100).unwrap().into_iter().map(|(_, e)| (e.action, e.version)).collect();
        assert_eq!(
            log,
            [
                ("push".into(), Some(1)),
                ("push".into(), Some(2)),
                ("activate".into(), Some(2)),
                ("delete".into(), Some(1))
            ]
        );
    }

    fn pushed<'a>(name: &'a str, sha256: &'a str, component: &'a [u8]) -> PluginPush<'a> {
        PluginPush {
            name,
            hook: "may-act",
            sha256,
            component,
            activate: true,
            artifact: Some(("engine", b"compiled")),
            quota: PluginQuota::UNLIMITED,
        }
    }

    fn artifacts(store: &Store) -> Vec<String> {
        ["aa", "bb"]
            .into_iter()
            .filter(|h| store.plugin_artifact(h, "engine").unwrap().is_some())
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_new_realm_of_a_deleted_realms_name_starts_its_own_audit_log() {
        let store = Store::open_in_memory().unwrap();
        assert!(store.create_realm("beta", "{}", &audit("create-realm")).unwrap());
        store.push_plugin("beta", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
        assert!(store.delete_realm("beta", &audit("delete-realm")).unwrap());
        assert!(store.audit("beta", 0, 100).unwrap().is_empty(), "no realm, no log to show");
        assert!(store.create_realm("beta", "{}", &audit("create-realm")).unwrap());
        let log: Vec<String> = store.audit("beta", 0, 100).unwrap().into_iter().map(|(_, e)| e.action).collect();
        assert_eq!(log, ["create-realm"], "the earlier realm's push and deletion are not this realm's");
    }

    #[test]
    fn a_deleted_version_takes_its_artifact_unless_stored_bytes_still_use_it() {
        let store = Store::open_in_memory().unwrap();
        for realm in ["alpha", "beta"] {
            store.create_realm_if_absent(realm, "{}", 0).unwrap();
        }
        store.push_plugin("alpha", &pushed("p", "aa", b"v1"), &audit("push")).unwrap();
        store.push_plugin("alpha", &pushed("p", "bb", b"v2"), &audit("push")).unwrap();
        store.push_plugin("beta", &pushed("q", "bb", b"v2"), &audit("push")).unwrap();
        assert_eq!(artifacts(&store), ["aa", "bb"]);

        store.delete_plugin("alpha", "p", Some(1), &audit("delete")).unwrap();
        assert_eq!(artifacts(&store), ["bb"], "version 1's artifact went with it");
        store.delete_plugin("alpha", "p", None, &audit("delete")).unwrap();
        assert_eq!(artifacts(&store), ["bb"], "realm beta still stores the same bytes");
        store.delete_realm("beta", &audit("delete-realm")).unwrap();
        assert!(artifacts(&store).is_empty(), "the last version gone, so is its artifact");
    }

    #[test]
    fn a_refused_push_stores_neither_the_version_nor_its_artifact() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let quota = PluginQuota { versions: 2, bytes: 5 };
        let within = PluginPush { quota, ..pushed("p", "aa", b"abc") };
        assert_eq!(store.push_plugin("alpha", &within, &audit("push")).unwrap(), PushOutcome::Stored { version: 1 });
        let too_big = PluginPush { quota, ..pushed("p", "bb", b"abc") };
        assert_eq!(
            store.push_plugin("alpha", &too_big, &audit("push")).unwrap(),
            PushOutcome::OverQuota { versions: 1, bytes: 3 }
        );
        let mismatch = PluginPush { hook: "dcr", ..pushed("p", "bb", b"a") };
        assert!(matches!(
            store.push_plugin("alpha", &mismatch, &audit("push")).unwrap(),
            PushOutcome::HookMismatch { .. }
        ));
        assert_eq!(store.plugin_usage("alpha").unwrap(), (1, 3));
        assert_eq!(artifacts(&store), ["aa"]);
        let small = PluginPush { quota, ..pushed("p", "bb", b"ab") };
        assert_eq!(store.push_plugin("alpha", &small, &audit("push")).unwrap(), PushOutcome::Stored { version: 2 });
        let third = PluginPush { quota, ..pushed("p", "cc", b"") };
        assert!(matches!(store.push_plugin("alpha", &third, &audit("push")).unwrap(), PushOutcome::OverQuota { .. }));
    }

    #[test]
    fn plugin_versions_count_up_and_the_newest_is_active() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        assert_eq!(store.add_plugin_version("alpha", "p", "may-act", "aa", b"v1", 0).unwrap(), 1);
        assert_eq!(store.add_plugin_version("alpha", "p", "may-act", "bb", b"v2", 0).unwrap(), 2);
        let active = store.active_plugins("alpha").unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].version, active[0].component.as_slice()), (2, &b"v2"[..]));
    }
}
