//! The SQLite engine under every aggregate: one writer connection whose
//! writes share commits, a pool of reader connections, a thread that
//! checkpoints the WAL, and the statement helpers every query goes
//! through.
//!
//! It knows nothing of realms, clients or tokens: the aggregate modules
//! hand it SQL. It is where durability is decided, so it is kept apart
//! from what is stored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use agentauth_core::ports::CommitObserver;
use rusqlite::{Connection, OptionalExtension};

use crate::error::{SqlResult, sqlite};
use crate::migrations;
use crate::{Error, ErrorKind, Result};

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
pub(crate) struct Engine {
    pub(crate) writer: Mutex<Writer>,
    /// Writers waiting for the writer connection: while there are any, the
    /// open transaction is left for the last of them to commit.
    waiting: AtomicUsize,
    batches: Mutex<Batches>,
    committed: Condvar,
    /// Where reader connections come from; `None` for an in-memory database.
    path: Option<PathBuf>,
    readers: Mutex<Vec<Connection>>,
    checkpointer: Option<Checkpointer>,
}

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
        let conn = connect(path).sql()?;
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

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// The batch whose transaction is open, if one is.
    open: Option<u64>,
    pub(crate) last_batch: u64,
    /// Writes the open batch carries.
    writes: usize,
    /// Told of each commit: how long it took, and how many writes it
    /// carried.
    observer: Option<Arc<dyn CommitObserver>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("conn", &self.conn)
            .field("open", &self.open)
            .field("last_batch", &self.last_batch)
            .field("writes", &self.writes)
            .finish_non_exhaustive()
    }
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
pub(crate) enum Reader<'a> {
    Pooled(&'a Engine, Option<Connection>),
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
        if let Self::Pooled(engine, conn) = self
            && let Some(conn) = conn.take()
        {
            let mut idle = lock(&engine.readers);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
        }
    }
}

/// Opens another connection to the database at `path`, set up as the
/// writer's is for what it shares: the busy timeout, the statement cache,
/// and foreign keys on (SQLite's default is off, per connection), so a
/// realm's rows cascade from it whichever connection deletes it.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Locks `mutex`. A panic while holding one of the store's locks cannot
/// leave a write half done (savepoints roll back on drop), so the state
/// behind a poisoned lock is usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine {
    /// Opens (creating if needed) the store's database at `path` and
    /// migrates it.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &migrations::STORE)
    }

    /// An in-memory store database, for tests.
    pub(crate) fn open_in_memory() -> Result<Self> {
        Self::open_in_memory_with(&migrations::STORE)
    }

    /// Opens (creating if needed) a database at `path` with the schema
    /// `migrations` describes.
    pub(crate) fn open_with(path: &Path, migrations: &migrations::Schema) -> Result<Self> {
        let conn = Connection::open(path).sql()?;
        let mut engine = Self::init(conn, Some(path.to_path_buf()), migrations)?;
        engine.checkpointer = Some(Checkpointer::start(path)?);
        Ok(engine)
    }

    /// An in-memory database with the schema `migrations` describes.
    pub(crate) fn open_in_memory_with(migrations: &migrations::Schema) -> Result<Self> {
        Self::init(Connection::open_in_memory().sql()?, None, migrations)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>, schema: &migrations::Schema) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5)).sql()?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL").sql()?;
        conn.pragma_update(None, "synchronous", "FULL").sql()?;
        conn.pragma_update(None, "foreign_keys", "ON").sql()?;
        // Checkpoints run beside the writer (see `Checkpointer`); the
        // writer checkpoints by itself only if the WAL grows past this
        // many pages (64 MiB), which bounds it should that thread fall behind.
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES).sql()?;
        migrations::apply(&mut conn, schema)?;
        Ok(Self {
            writer: Mutex::new(Writer { conn, open: None, last_batch: 0, writes: 0, observer: None }),
            waiting: AtomicUsize::new(0),
            batches: Mutex::new(Batches::default()),
            committed: Condvar::new(),
            path,
            readers: Mutex::new(Vec::new()),
            checkpointer: None,
        })
    }

    /// Tells `observer` of every commit from now on.
    pub(crate) fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        lock(&self.writer).observer = Some(observer);
    }

    /// A connection for reading.
    pub(crate) fn conn(&self) -> Reader<'_> {
        let Some(path) = &self.path else {
            return Reader::Shared(lock(&self.writer));
        };
        if let Some(conn) = lock(&self.readers).pop() {
            return Reader::Pooled(self, Some(conn));
        }
        match connect(path) {
            Ok(conn) => Reader::Pooled(self, Some(conn)),
            // Reading through the writer is slower, never wrong.
            Err(_) => Reader::Shared(lock(&self.writer)),
        }
    }

    /// Runs `f` in a savepoint of the writer's open transaction (opening
    /// one with `BEGIN IMMEDIATE` if none is), and returns once that
    /// transaction has committed. `f`'s error rolls back `f`'s writes only.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut writer = lock(&self.writer);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let batch = match writer.open {
            Some(batch) => batch,
            None => {
                writer.conn.execute_batch("BEGIN IMMEDIATE").sql()?;
                writer.last_batch += 1;
                writer.open = Some(writer.last_batch);
                writer.writes = 0;
                writer.last_batch
            }
        };
        writer.writes += 1;
        let outcome = match writer.conn.savepoint() {
            Ok(mut savepoint) => {
                // A panic in `f` must not leave the batch without a committer.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&savepoint)))
                    .unwrap_or_else(|_| Err(Error::new(ErrorKind::Other, "a storage operation panicked")));
                match ran {
                    Ok(value) => savepoint.commit().map(|()| value).sql(),
                    Err(e) => {
                        savepoint.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                        drop(savepoint);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(sqlite(e)),
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
        let started = Instant::now();
        let committed = writer.conn.execute_batch("COMMIT");
        if let Some(observer) = &writer.observer {
            observer.committed(started.elapsed(), writer.writes);
        }
        if committed.is_err() {
            // A failed COMMIT may leave the transaction open: end it, so
            // the next batch starts clean.
            let _ = writer.conn.execute_batch("ROLLBACK");
        }
        let mut batches = lock(&self.batches);
        batches.finished = batch;
        if let Err(e) = committed {
            batches.failed.push_back((batch, Arc::new(sqlite(e))));
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
}

// ---- statement helpers ----
//
// Every statement goes through the connection's statement cache: the hot
// paths run the same few statements thousands of times a second. They
// answer in the store's errors, so the aggregates read as SQL and `?`.

/// Runs a statement; how many rows it changed.
pub(crate) fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<usize> {
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params)).sql()
}

/// The one row a statement answers (an aggregate, say).
pub(crate) fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<T> {
    conn.prepare_cached(sql).and_then(|mut s| s.query_row(params, f)).sql()
}

/// The first row a statement answers, if it answers any.
pub(crate) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    conn.prepare_cached(sql).and_then(|mut s| s.query_row(params, f).optional()).sql()
}

/// Every row a statement answers.
pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql).sql()?;
    let rows = statement.query_map(params, f).sql()?;
    rows.collect::<rusqlite::Result<_>>().sql()
}

/// The answer of a `SELECT EXISTS (...)` statement.
pub(crate) fn exists(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<bool> {
    query_row(conn, sql, params, |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the commits it is told of, and their writes.
    #[derive(Default)]
    struct Observed {
        commits: AtomicUsize,
        writes: AtomicUsize,
    }

    impl CommitObserver for Observed {
        fn committed(&self, _: Duration, writes: usize) {
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.writes.fetch_add(writes, Ordering::SeqCst);
        }
    }

    #[test]
    fn concurrent_writes_share_commits_and_a_failed_one_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let observed = Arc::new(Observed::default());
        engine.observe_commits(Arc::clone(&observed) as Arc<dyn CommitObserver>);
        let (threads, each) = (8, 200);
        let names = |engine: &Engine| {
            query_all(&engine.conn(), "SELECT name FROM realms ORDER BY name", [], |r| r.get::<_, String>(0))
        };
        std::thread::scope(|s| {
            for t in 0..threads {
                let engine = &engine;
                s.spawn(move || {
                    for i in 0..each {
                        let name = format!("r{t}-{i}");
                        let insert = |c: &Connection| {
                            execute(c, "INSERT INTO realms (name, settings, created_at) VALUES (?1, '{}', 0)", [&name])
                        };
                        if i % 10 == 0 {
                            // Writes, then fails: its row must not land.
                            let failed = engine.write(|c| {
                                insert(c)?;
                                Err::<(), _>(Error::new(ErrorKind::Other, "refused"))
                            });
                            assert!(failed.is_err());
                        } else {
                            assert_eq!(engine.write(insert).unwrap(), 1);
                        }
                    }
                });
            }
        });
        let written = names(&engine).unwrap();
        assert_eq!(written.len(), threads * each * 9 / 10);
        assert!(written.iter().all(|n| !n.ends_with("-0") && !n.ends_with("0")));
        // Every write returned after its commit; they shared commits.
        let batches = lock(&engine.writer).last_batch;
        assert!(batches < (threads * each) as u64, "{batches} commits for {} writes", threads * each);
        // Each commit was told, with the writes it carried, failed ones too.
        assert_eq!(observed.commits.load(Ordering::SeqCst), batches as usize);
        assert_eq!(observed.writes.load(Ordering::SeqCst), threads * each);
        // A fresh connection sees them all: they are on disk, not in a cache.
        let reopened = Engine::open(&dir.path().join("db")).unwrap();
        assert_eq!(names(&reopened).unwrap().len(), written.len());
    }

    #[test]
    fn a_database_locked_past_the_busy_timeout_is_reported_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let engine = Engine::open(&path).unwrap();
        lock(&engine.writer).conn.busy_timeout(Duration::from_millis(50)).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let insert =
            |c: &Connection| execute(c, "INSERT INTO realms (name, settings, created_at) VALUES ('r', '{}', 0)", []);
        let error = engine.write(insert).unwrap_err();
        assert!(error.is_busy(), "{error}");
        assert_eq!(error.kind(), ErrorKind::Busy);
        other.execute_batch("COMMIT").unwrap();
        assert_eq!(engine.write(insert).unwrap(), 1);
        assert!(!Error::new(ErrorKind::Other, "some other failure").is_busy());
    }
}
