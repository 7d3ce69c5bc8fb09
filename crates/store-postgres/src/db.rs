//! The engine under every aggregate: the pool of connections, the runtime
//! their futures run on, the bridge from the ports' blocking methods to it,
//! transactions retried when PostgreSQL gives up on one, and the statement
//! helpers every query goes through.
//!
//! It knows nothing of realms, clients or tokens: the aggregate modules
//! hand it SQL.

use std::future::Future;
use std::sync::{Arc, RwLock, mpsc};
use std::time::Duration;

use agentauth_core::ports::{CommitObserver, Error, ErrorKind, Result};
use deadpool_postgres::{GenericClient, Object};
use tokio::runtime::Handle;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql};

use crate::batch::{Batcher, Done, Write};
use crate::error::{self, PgResult};

/// How many times a transaction that failed on a serialization failure or
/// a deadlock is tried again before the caller is told the database is busy.
pub(crate) const RETRIES: u32 = 5;

/// The connection pool, and who is told of each commit made through it:
/// cheap to clone (a clone shares both).
#[derive(Clone)]
pub(crate) struct Pool {
    connections: deadpool_postgres::Pool,
    observer: Arc<RwLock<Option<Arc<dyn CommitObserver>>>>,
}

impl Pool {
    pub(crate) fn new(connections: deadpool_postgres::Pool) -> Self {
        Self { connections, observer: Arc::default() }
    }

    /// Tells `observer` of every commit from now on.
    pub(crate) fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        *self.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// A transaction's commit took `elapsed`: one write.
    pub(crate) fn committed(&self, elapsed: Duration) {
        self.committed_writes(elapsed, 1);
    }

    /// A commit that carried `writes` writes (a batch) took `elapsed`.
    pub(crate) fn committed_writes(&self, elapsed: Duration, writes: usize) {
        if let Some(observer) = &*self.observer.read().unwrap_or_else(|p| p.into_inner()) {
            observer.committed(elapsed, writes);
        }
    }
}

impl std::ops::Deref for Pool {
    type Target = deadpool_postgres::Pool;

    fn deref(&self) -> &deadpool_postgres::Pool {
        &self.connections
    }
}

/// The pool and the runtime its connections live on, and the lanes that
/// group the hot paths' writes: what every method needs, cheap to clone (a
/// clone shares them all).
#[derive(Clone)]
pub(crate) struct Db {
    handle: Handle,
    pub(crate) pool: Pool,
    /// The longest any method may take: waiting for a connection, then a
    /// statement's own timeout.
    limit: Duration,
    pub(crate) batcher: Batcher,
}

impl Db {
    /// Starts `lanes` lanes of grouped writes on the runtime of `handle`.
    pub(crate) fn new(handle: Handle, pool: Pool, limit: Duration, lanes: usize) -> Self {
        let batcher = Batcher::start(&handle, &pool, lanes, limit);
        Self { handle, pool, limit, batcher }
    }

    /// Runs `work` on the store's runtime and blocks the calling thread
    /// until it is done, or [`Db::limit`] has passed.
    pub(crate) fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        run_on(&self.handle, self.limit, work)
    }

    /// Makes `write` in a batch with the writes queued beside it (see
    /// `batch`), and blocks until that batch has committed (or failed), or
    /// the limit has passed.
    pub(crate) fn write(&self, write: Write) -> Result<Done> {
        self.batcher.write(write, self.limit)
    }
}

/// Runs `work` on the runtime behind `handle`, and waits for its answer on
/// a channel: never `Handle::block_on` nor a tokio channel's blocking
/// receive, which panic on a thread already inside a runtime (a caller's
/// async task or blocking thread). `work` is cut off at `limit`, so a
/// database that stopped answering fails the call as Unavailable.
pub(crate) fn run_on<T, F>(handle: &Handle, limit: Duration, work: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let (answer, answered) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let outcome = match tokio::time::timeout(limit, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(no_answer(limit)),
        };
        // The caller may have given up: then nobody needs the answer.
        let _ = answer.send(outcome);
    });
    // The task cuts itself off at `limit`; this is only the backstop for a
    // runtime too busy to run it at all.
    match answered.recv_timeout(limit + Duration::from_secs(1)) {
        Ok(outcome) => outcome,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(no_answer(limit)),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(Error::new(ErrorKind::Other, "storage failure: the database task ended without an answer"))
        }
    }
}

pub(crate) fn no_answer(limit: Duration) -> Error {
    Error::new(ErrorKind::Unavailable, format!("database unreachable: no answer within {} ms", limit.as_millis()))
}

/// A connection from the pool.
pub(crate) async fn conn(pool: &Pool) -> Result<Object> {
    pool.get().await.map_err(error::pool)
}

/// The pause before trying a transaction again: a few milliseconds, longer
/// each time, shifted by the clock's nanoseconds so that racers that
/// failed together do not retry together.
pub(crate) async fn backoff(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos() % 5_000_000));
    let base = 5_000_000u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_nanos(base + jitter)).await;
}

/// Runs `$body` in a transaction of a pooled connection, bound to the name
/// `$tx`, and commits it (telling the pool's observer how long that took); evaluates to `Result<T>` where `$body` is a
/// block of type `T` that may use `?` and `.await`. When PostgreSQL aborts
/// it for a serialization failure or a deadlock (both Busy), the whole
/// transaction is run again, up to [`RETRIES`] times. Anything else rolls
/// it back (dropping the transaction does) and is returned.
macro_rules! transaction {
    ($pool:expr, |$tx:ident| $body:block) => {{
        let mut attempt: u32 = 0;
        loop {
            let outcome = $crate::db::typed(async {
                let mut conn = $crate::db::conn($pool).await?;
                let $tx = $crate::error::PgResult::pg(conn.transaction().await)?;
                let value = $body;
                let committing = std::time::Instant::now();
                $crate::error::PgResult::pg($tx.commit().await)?;
                $pool.committed(committing.elapsed());
                Ok(value)
            })
            .await;
            match outcome {
                Err(e) if e.is_busy() && attempt < $crate::db::RETRIES => {
                    attempt += 1;
                    $crate::db::backoff(attempt).await;
                }
                outcome => break outcome,
            }
        }
    }};
}
pub(crate) use transaction;

/// Fixes the error type of an async block whose errors all come through `?`.
pub(crate) async fn typed<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    work.await
}

/// A statement's parameters.
pub(crate) type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Runs a statement; how many rows it changed.
pub(crate) async fn execute<C: GenericClient + ?Sized>(c: &C, sql: &str, params: &Params<'_>) -> Result<u64> {
    let statement = c.prepare_cached(sql).await.pg()?;
    c.execute(&statement, params).await.pg()
}

/// Every row a query returns.
pub(crate) async fn query<C: GenericClient + ?Sized>(c: &C, sql: &str, params: &Params<'_>) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.pg()?;
    c.query(&statement, params).await.pg()
}

/// The one row a query returns, if any (more than one is an error).
pub(crate) async fn query_opt<C: GenericClient + ?Sized>(c: &C, sql: &str, params: &Params<'_>) -> Result<Option<Row>> {
    let statement = c.prepare_cached(sql).await.pg()?;
    c.query_opt(&statement, params).await.pg()
}

/// The one row a query always returns (an aggregate, say).
pub(crate) async fn query_one<C: GenericClient + ?Sized>(c: &C, sql: &str, params: &Params<'_>) -> Result<Row> {
    let statement = c.prepare_cached(sql).await.pg()?;
    c.query_one(&statement, params).await.pg()
}

/// Column `i` of `row`: a value of another type or out of range is a
/// stored value this store cannot read, named by its column, not quoted.
pub(crate) fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(|e| {
        let column = row.columns().get(i).map_or("?", |c| c.name());
        Error::corrupt(format!("stored data is unreadable: column {column}"), e)
    })
}

/// Column `i` of `row`, an enum of the domain stored by name (a hook kind,
/// an algorithm, a token kind): a name no variant has means the row was not
/// written by this store, and reads as Corrupt, never as a guess.
pub(crate) fn named<T>(row: &Row, i: usize, what: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T> {
    let name: &str = get(row, i)?;
    parse(name)
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("stored data is unreadable: unknown {what} {name:?}")))
}

#[cfg(all(test, feature = "throwaway"))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::throwaway::Cluster;
    use crate::{Options, PgStore};

    /// A transaction whose first `failures` attempts PostgreSQL aborts with
    /// `sqlstate`; how it ended, and after how many attempts.
    fn failing(store: &PgStore, sqlstate: &'static str, failures: u32) -> (Result<()>, u32) {
        let attempts = Arc::new(AtomicU32::new(0));
        let (pool, counted) = (store.db.pool.clone(), Arc::clone(&attempts));
        let outcome = store.db.run(async move {
            transaction!(&pool, |tx| {
                execute(&tx, "CREATE TEMPORARY TABLE IF NOT EXISTS scratch (n INT)", &[]).await?;
                execute(&tx, "INSERT INTO scratch VALUES (1)", &[]).await?;
                if counted.fetch_add(1, Ordering::SeqCst) < failures {
                    let raise = format!("DO $$ BEGIN RAISE EXCEPTION 'aborted' USING ERRCODE = '{sqlstate}'; END $$");
                    tx.batch_execute(&raise).await.pg()?;
                }
            })
        });
        (outcome, attempts.load(Ordering::SeqCst))
    }

    #[test]
    fn a_transaction_aborted_by_a_serialization_failure_or_deadlock_runs_again_then_fails_busy() {
        let cluster = Cluster::start().unwrap();
        let store = PgStore::connect(&cluster.create_database("retries").unwrap(), Options::default()).unwrap();
        for sqlstate in ["40001", "40P01"] {
            let (outcome, attempts) = failing(&store, sqlstate, 2);
            outcome.unwrap();
            assert_eq!(attempts, 3, "{sqlstate}: two aborted, the third committed");
            let (outcome, attempts) = failing(&store, sqlstate, u32::MAX);
            assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Busy, "{sqlstate}");
            assert_eq!(attempts, RETRIES + 1, "{sqlstate}");
        }
        // Anything else is not tried again.
        let (outcome, attempts) = failing(&store, "23505", u32::MAX);
        assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Constraint);
        assert_eq!(attempts, 1);
    }
}
