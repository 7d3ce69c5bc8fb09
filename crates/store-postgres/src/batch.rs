//! Group commit for the writes every request makes: registrations, issued
//! tokens, client assertion ids and refresh token rotations.
//!
//! Each of these would otherwise be a transaction of its own that waits for
//! its own WAL flush; registrations of one realm would queue behind each
//! other's flush on the realm's `client_counts` row. Instead, a write is
//! queued to a *lane* (a task on the store's runtime), and a lane takes
//! every write that arrived while its last transaction ran, up to
//! [`MAX_BATCH`], and makes them all in one transaction:
//!
//! - each write runs in its own savepoint, so a write that fails (a taken
//!   id, a realm that does not exist) is rolled back alone and answered
//!   with its own error, and its neighbours go on;
//! - the writes' statements are sent without waiting for each other's
//!   answers (pipelined), each step framed by its savepoint commands; when
//!   one fails, PostgreSQL ignores what follows until its savepoint is
//!   rolled back, and the writes after it are sent again;
//! - a realm's client count is locked once per batch, first, and the cap
//!   checked per registration against the count as the batch's
//!   registrations so far left it, so racing registrations never pass the
//!   cap (the lock holds off every other batch and process until commit);
//! - every caller is answered only once the COMMIT returned: a write is
//!   acknowledged as durably as before, and a failed COMMIT fails them all;
//! - a serialization failure or deadlock runs the whole batch again (as
//!   `transaction!` does a single transaction), and nobody is answered
//!   until the last attempt.
//!
//! A registration goes to its realm's lane (by the realm's hash), so one
//! realm's count is never locked by two batches of this process at once
//! (the second would only queue on the first's lock, holding its other
//! writes back); any other write goes to the lanes in turn, so one realm's
//! tokens are not held to one commit at a time. There are up to
//! [`MAX_LANES`] lanes, each with a connection of its own while its batch
//! runs; PostgreSQL flushes their concurrent commits together.
//!
//! A batch of one write (when writes come one at a time) takes no
//! savepoints: its failure is the batch's, and it costs what a
//! transaction of its own did.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::task::Poll;
use std::time::Duration;

use agentauth_core::ports::{AuditEntry, Error, ErrorKind, Result, Rotation};
use deadpool_postgres::Transaction;

use crate::db::Pool;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::clients::{ADD_TO_COUNT, LOCK_COUNT, NewClient};
use crate::db::{RETRIES, backoff, conn, get, no_answer};
use crate::error::{self, PgResult};
use crate::tokens::{self, Token};

/// The most writes one transaction makes. Each write is a subtransaction
/// (and so is each realm's count lock): 32 of each stay within the 64
/// subtransactions PostgreSQL keeps in a backend's shared cache, past
/// which every snapshot taken while the batch runs (on standbys too) has
/// to look them up in `pg_subtrans`.
pub(crate) const MAX_BATCH: usize = 32;
/// The most lanes a store runs, each holding a pooled connection while its
/// batch runs: a quarter of the pool, at least one.
pub(crate) const MAX_LANES: usize = 4;

/// A write made in a batch.
pub(crate) enum Write {
    /// A registration, counted against its realm's cap.
    Client(Box<NewClient>),
    /// Server-side tokens issued together.
    Tokens { realm: String, tokens: Vec<Token> },
    /// A client assertion's id, used once.
    Assertion { realm: String, client_id: String, jti: String, expires_at: i64 },
    /// A refresh token rotated, or found reused.
    /// `reused`: the audit recorded if the token was used before.
    Rotation { realm: String, old_hash: Vec<u8>, successors: Vec<Token>, now: i64, reused: Box<AuditEntry> },
}

/// What a write came to.
#[derive(Debug)]
pub(crate) enum Done {
    /// A registration: stored, or refused by the cap.
    Client(bool),
    Tokens,
    /// An assertion id: first use, or seen before.
    Assertion(bool),
    Rotation(Rotation),
}

impl Done {
    pub(crate) fn client(self) -> Result<bool> {
        match self {
            Self::Client(stored) => Ok(stored),
            other => Err(mismatched(&other)),
        }
    }

    pub(crate) fn tokens(self) -> Result<()> {
        match self {
            Self::Tokens => Ok(()),
            other => Err(mismatched(&other)),
        }
    }

    pub(crate) fn assertion(self) -> Result<bool> {
        match self {
            Self::Assertion(first) => Ok(first),
            other => Err(mismatched(&other)),
        }
    }

    pub(crate) fn rotation(self) -> Result<Rotation> {
        match self {
            Self::Rotation(rotation) => Ok(rotation),
            other => Err(mismatched(&other)),
        }
    }
}

fn mismatched(done: &Done) -> Error {
    Error::new(ErrorKind::Other, format!("storage failure: a write was answered as another kind ({done:?})"))
}

/// A write waiting in a lane, and where its caller waits for the answer.
struct Queued {
    write: Write,
    answer: Answer,
}

/// Where a caller waits for its write's answer (a plain channel: callers
/// are threads that block), and whether it still does.
struct Answer {
    to: std_mpsc::SyncSender<Result<Done>>,
    waiting: Arc<AtomicBool>,
}

impl Answer {
    fn new() -> (Self, std_mpsc::Receiver<Result<Done>>, Arc<AtomicBool>) {
        let (to, answered) = std_mpsc::sync_channel(1);
        let waiting = Arc::new(AtomicBool::new(true));
        (Self { to, waiting: Arc::clone(&waiting) }, answered, waiting)
    }

    /// The caller gave up waiting.
    fn gone(&self) -> bool {
        !self.waiting.load(Ordering::Acquire)
    }

    fn send(self, outcome: Result<Done>) {
        // Room for the one answer, so this never blocks; the caller may
        // have given up meanwhile, and then nobody needs it.
        let _ = self.to.try_send(outcome);
    }
}

/// How many batches have committed, and how many writes they made.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
}

/// The lanes of a store: cheap to clone (a clone queues to the same lanes).
#[derive(Clone)]
pub(crate) struct Batcher {
    lanes: Arc<[mpsc::UnboundedSender<Queued>]>,
    /// The lane the next write that is not a registration goes to.
    turn: Arc<AtomicU64>,
    pub(crate) stats: Arc<Stats>,
}

impl Batcher {
    /// Starts `lanes` lanes on `handle`'s runtime, each running its batches
    /// on a connection of `pool`, each attempt cut off at `limit`.
    pub(crate) fn start(handle: &Handle, pool: &Pool, lanes: usize, limit: Duration) -> Self {
        let stats = Arc::new(Stats::default());
        let lanes = (0..lanes.clamp(1, MAX_LANES))
            .map(|_| {
                let (queue, queued) = mpsc::unbounded_channel();
                handle.spawn(lane(pool.clone(), queued, Arc::clone(&stats), limit));
                queue
            })
            .collect();
        Self { lanes, turn: Arc::new(AtomicU64::new(0)), stats }
    }

    /// Queues `write` to a lane: a registration to its realm's, anything
    /// else to the next in turn; then blocks until its batch has committed
    /// (or failed), or `limit` has passed: a caller that gave up before
    /// its batch started leaves its write unmade. Called from any thread,
    /// inside another runtime included: it only sends on channels and
    /// waits on a plain one.
    pub(crate) fn write(&self, write: Write, limit: Duration) -> Result<Done> {
        let key = match &write {
            Write::Client(c) => {
                let mut hasher = DefaultHasher::new();
                c.realm.hash(&mut hasher);
                hasher.finish()
            }
            _ => self.turn.fetch_add(1, Ordering::Relaxed),
        };
        let lane = usize::try_from(key % self.lanes.len() as u64).unwrap_or(0);
        let (answer, answered, waiting) = Answer::new();
        self.lanes.get(lane).ok_or_else(stopped)?.send(Queued { write, answer }).map_err(|_| stopped())?;
        match answered.recv_timeout(limit) {
            Ok(outcome) => outcome,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                waiting.store(false, Ordering::Release);
                Err(no_answer(limit))
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }
}

fn stopped() -> Error {
    Error::new(ErrorKind::Other, "storage failure: the database writer stopped, or dropped the write unanswered")
}

/// A lane: waits for a write, takes it and every write queued behind it (up
/// to [`MAX_BATCH`]), makes them in one transaction, answers, and again.
/// Ends when the store (every sender) is gone.
async fn lane(pool: Pool, mut queue: mpsc::UnboundedReceiver<Queued>, stats: Arc<Stats>, limit: Duration) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // A task of its own: were a batch to panic, its callers would be
        // told (their answers dropped) and the lane would go on.
        let (pool, stats) = (pool.clone(), Arc::clone(&stats));
        let _ = tokio::spawn(async move { run(&pool, batch, &stats, limit).await }).await;
    }
}

/// Makes `batch` in one transaction, tried again on a serialization failure
/// or deadlock, and answers each caller once, after the last attempt.
async fn run(pool: &Pool, mut batch: Vec<Queued>, stats: &Stats, limit: Duration) {
    let mut attempt: u32 = 0;
    let outcome = loop {
        // A caller whose wait timed out was told Unavailable: its write is
        // not made behind its back (by this attempt or the next).
        batch.retain(|q| !q.answer.gone());
        if batch.is_empty() {
            return;
        }
        let writes: Vec<&Write> = batch.iter().map(|q| &q.write).collect();
        let outcome = match tokio::time::timeout(limit, make(pool, &writes)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("database unreachable: a batch of writes got no answer within {} ms", limit.as_millis()),
            )),
        };
        match outcome {
            Err(e) if e.is_busy() && attempt < RETRIES => {
                attempt += 1;
                backoff(attempt).await;
            }
            outcome => break outcome,
        }
    };
    match outcome {
        Ok(outcomes) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (queued, outcome) in batch.into_iter().zip(outcomes) {
                queued.answer.send(outcome);
            }
        }
        Err(e) if batch.len() == 1 => {
            if let Some(queued) = batch.into_iter().next() {
                queued.answer.send(Err(e));
            }
        }
        Err(e) => {
            // Each caller gets an error of its own, of the batch's kind, with
            // the one failure beneath.
            let why = Arc::new(e);
            for queued in batch {
                queued.answer.send(Err(shared(&why, "the batch of writes failed")));
            }
        }
    }
}

/// An error of `why`'s kind for one of the several callers it failed.
fn shared(why: &Arc<Error>, what: &str) -> Error {
    Error::new(why.kind(), format!("{what}: {why}")).with_source(Arc::clone(why))
}

/// One attempt at a batch: each write's outcome, once committed. An error
/// is the batch's: nothing of it was committed.
async fn make(pool: &Pool, writes: &[&Write]) -> Result<Vec<Result<Done>>> {
    let mut conn = conn(pool).await?;
    let tx = conn.transaction().await.pg()?;
    // A write alone needs no savepoint: its failure is the batch's.
    let framed = writes.len() > 1;
    let mut outcomes: Vec<Option<Result<Done>>> = writes.iter().map(|_| None).collect();

    // The count of each realm registering, locked in name order (as every
    // batch does, in every process: no deadlock between them).
    let realms: BTreeSet<&String> =
        writes.iter().filter_map(|w| if let Write::Client(c) = w { Some(&c.realm) } else { None }).collect();
    let counts = lock_counts(&tx, realms.into_iter().collect(), framed).await?;
    let mut added: HashMap<&str, i64> = HashMap::new();

    // The writes of one statement per row, pipelined; a failure sends the
    // writes after it again, planned anew (a registration refused as over
    // the cap may fit once an earlier one failed).
    let mut pending: Vec<usize> = (0..writes.len()).filter(|&i| !matches!(writes[i], Write::Rotation { .. })).collect();
    while !pending.is_empty() {
        let mut plans = Vec::with_capacity(pending.len());
        let mut steps = Vec::new();
        let mut assumed = added.clone();
        for &i in &pending {
            let plan = match &writes[i] {
                Write::Client(c) => match counts.get(c.realm.as_str()) {
                    Some(Ok(n)) => {
                        let taken = assumed.entry(c.realm.as_str()).or_insert(0);
                        if n + *taken < c.max {
                            *taken += 1;
                            steps.push(vec![c.insert()]);
                            Plan::Step
                        } else {
                            Plan::Now(Ok(Done::Client(false)))
                        }
                    }
                    Some(Err(why)) => Plan::Now(Err(shared(why, "counting the realm's clients failed"))),
                    None => {
                        Plan::Now(Err(Error::new(ErrorKind::Other, "storage failure: a realm's count was not locked")))
                    }
                },
                Write::Tokens { tokens, .. } if tokens.is_empty() => Plan::Now(Ok(Done::Tokens)),
                Write::Tokens { realm, tokens } => {
                    steps.push(tokens.iter().map(|t| tokens::insert_statement(realm, t)).collect());
                    Plan::Step
                }
                Write::Assertion { realm, client_id, jti, expires_at } => {
                    steps.push(vec![Statement {
                        sql: tokens::USE_ASSERTION,
                        params: vec![realm as &(dyn ToSql + Sync), client_id, jti, expires_at],
                    }]);
                    Plan::Step
                }
                // Made one at a time, below.
                Write::Rotation { .. } => continue,
            };
            plans.push((i, plan));
        }
        let (ran, mut failed) = pipeline(&tx, &steps, framed).await?;
        let (mut ran, mut next, mut stopped) = (ran.iter(), Vec::new(), false);
        for (i, plan) in plans {
            if stopped {
                // After the write that failed: not made, planned again.
                next.push(i);
                continue;
            }
            outcomes[i] = Some(match plan {
                Plan::Now(outcome) => outcome,
                Plan::Step => match ran.next() {
                    Some(rows) => made(writes[i], rows, &mut added),
                    None => {
                        stopped = true;
                        Err(failed.take().unwrap_or_else(|| {
                            Error::new(ErrorKind::Other, "storage failure: a write of a batch did not run")
                        }))
                    }
                },
            });
        }
        pending = next;
    }

    // Rotations read before they write: one at a time, each in its savepoint.
    for (i, write) in writes.iter().enumerate() {
        let Write::Rotation { realm, old_hash, successors, now, reused } = write else { continue };
        if !framed {
            let rotation = tokens::rotate(&tx, realm, old_hash, successors, *now, reused).await?;
            outcomes[i] = Some(Ok(Done::Rotation(rotation)));
            continue;
        }
        tx.batch_execute("SAVEPOINT w").await.pg()?;
        match tokens::rotate(&tx, realm, old_hash, successors, *now, reused).await {
            Ok(rotation) => {
                tx.batch_execute("RELEASE SAVEPOINT w").await.pg()?;
                outcomes[i] = Some(Ok(Done::Rotation(rotation)));
            }
            Err(e) if e.is_busy() => return Err(e),
            Err(e) => {
                tx.batch_execute(ROLL_BACK_STEP).await.pg()?;
                outcomes[i] = Some(Err(e));
            }
        }
    }

    for (realm, n) in &added {
        if *n > 0 {
            crate::db::execute(&tx, ADD_TO_COUNT, &[realm, n]).await?;
        }
    }
    let committing = std::time::Instant::now();
    tx.commit().await.pg()?;
    pool.committed_writes(committing.elapsed(), writes.len());
    Ok(outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Err(Error::new(ErrorKind::Other, "storage failure: a write of a batch was not made")))
        })
        .collect())
}

/// The outcome of a write whose step ran, returning `rows`; counts a
/// registration in `added`.
fn made<'w>(write: &'w Write, rows: &[Vec<Row>], added: &mut HashMap<&'w str, i64>) -> Result<Done> {
    match write {
        Write::Client(c) => {
            *added.entry(c.realm.as_str()).or_insert(0) += 1;
            Ok(Done::Client(true))
        }
        Write::Tokens { .. } => Ok(Done::Tokens),
        // `RETURNING 1` returned a row: this was the first use.
        Write::Assertion { .. } => Ok(Done::Assertion(rows.iter().any(|r| !r.is_empty()))),
        Write::Rotation { .. } => Err(Error::new(ErrorKind::Other, "storage failure: a rotation was pipelined")),
    }
}

/// How a write is made in a round: by a step of statements, or answered
/// without any (over the cap, its realm's count not locked).
enum Plan {
    Step,
    Now(Result<Done>),
}

/// Locks the count of each realm in `realms` (in that order), each in a
/// savepoint of its own if `framed`: a realm that does not exist fails its
/// own registrations only. The count of each, or why it could not be
/// locked.
async fn lock_counts<'w>(
    tx: &Transaction<'_>,
    mut realms: Vec<&'w String>,
    framed: bool,
) -> Result<HashMap<&'w str, std::result::Result<i64, Arc<Error>>>> {
    let mut counts = HashMap::new();
    while !realms.is_empty() {
        let steps: Vec<Vec<Statement<'_>>> = realms
            .iter()
            .map(|realm| vec![Statement { sql: LOCK_COUNT, params: vec![*realm as &(dyn ToSql + Sync)] }])
            .collect();
        let (ran, failed) = pipeline(tx, &steps, framed).await?;
        for (realm, rows) in realms.iter().zip(&ran) {
            let row = rows.first().and_then(|rows| rows.first()).ok_or_else(|| {
                Error::new(ErrorKind::Other, "storage failure: locking a realm's count returned no row")
            })?;
            counts.insert(realm.as_str(), Ok(get::<i64>(row, 0)?));
        }
        let done = ran.len();
        match failed {
            Some(e) => {
                if let Some(realm) = realms.get(done) {
                    counts.insert(realm.as_str(), Err(Arc::new(e)));
                }
                realms.drain(..(done + 1).min(realms.len()));
            }
            None => realms.clear(),
        }
    }
    Ok(counts)
}

/// One statement of a step, with its parameters.
pub(crate) struct Statement<'a> {
    pub(crate) sql: &'static str,
    pub(crate) params: Vec<&'a (dyn ToSql + Sync)>,
}

/// Rolls back the step that failed, and closes its savepoint.
const ROLL_BACK_STEP: &str = "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w";

/// What a response answers, in the pipeline's order.
enum Part {
    /// The first step's savepoint.
    Open,
    /// A statement of a step; the last of its step?
    Statement { last: bool },
    /// A step's release (and the next one's savepoint).
    Close,
}

/// The rows each statement returned, per step.
type Ran = Vec<Vec<Vec<Row>>>;

/// Sends every statement of `steps` at once, each step between `SAVEPOINT
/// w` and `RELEASE SAVEPOINT w`, and reads the answers. Returns the rows of
/// the steps that ran, in order; if one failed, it is rolled back (its
/// savepoint) and its error returned beside them: it is the step after
/// the last that ran, and the steps after it were not made (PostgreSQL
/// refuses every statement until the rollback). An error of the batch
/// itself (a serialization failure or deadlock, to be tried again; a lost
/// connection) is returned as such. Unless `framed`, the steps go without
/// savepoints, and a failure is the batch's: for a write alone.
async fn pipeline(tx: &Transaction<'_>, steps: &[Vec<Statement<'_>>], framed: bool) -> Result<(Ran, Option<Error>)> {
    if steps.is_empty() {
        return Ok((Vec::new(), None));
    }
    // Prepared first (from the connection's cache after its first batch): a
    // statement still to prepare would send its Parse in turn but its
    // execution out of turn.
    let mut prepared = Vec::with_capacity(steps.len());
    for step in steps {
        let mut statements = Vec::with_capacity(step.len());
        for s in step {
            statements.push(tx.prepare_cached(s.sql).await.pg()?);
        }
        prepared.push(statements);
    }
    // Each request is sent when its future is first polled, and `in_order`
    // first polls them in this order.
    let (mut parts, mut requests): (Vec<Part>, Vec<Request<'_>>) = (Vec::new(), Vec::new());
    if framed {
        parts.push(Part::Open);
        requests.push(Box::pin(simple(tx, "SAVEPOINT w")));
    }
    for (i, (step, statements)) in steps.iter().zip(&prepared).enumerate() {
        for (k, (s, statement)) in step.iter().zip(statements).enumerate() {
            parts.push(Part::Statement { last: k + 1 == step.len() });
            requests.push(Box::pin(tx.query(statement, &s.params)));
        }
        if framed {
            parts.push(Part::Close);
            let close = if i + 1 == steps.len() { "RELEASE SAVEPOINT w" } else { "RELEASE SAVEPOINT w; SAVEPOINT w" };
            requests.push(Box::pin(simple(tx, close)));
        }
    }
    let answers = in_order(requests).await;

    let (mut ran, mut rows) = (Vec::with_capacity(steps.len()), Vec::new());
    for (part, answer) in parts.into_iter().zip(answers) {
        match (part, answer) {
            (Part::Open, Ok(_)) => {}
            (Part::Statement { last }, Ok(returned)) => {
                rows.push(returned);
                if last && !framed {
                    ran.push(std::mem::take(&mut rows));
                }
            }
            (Part::Close, Ok(_)) => ran.push(std::mem::take(&mut rows)),
            (Part::Statement { .. }, Err(e)) => {
                let e = error::pg(e);
                if e.is_busy() || !framed {
                    return Err(e);
                }
                tx.batch_execute(ROLL_BACK_STEP).await.pg()?;
                return Ok((ran, Some(e)));
            }
            (Part::Open | Part::Close, Err(e)) => return Err(error::pg(e)),
        }
    }
    Ok((ran, None))
}

/// A request of a pipeline: the rows it returned.
type Request<'a> = Pin<Box<dyn Future<Output = std::result::Result<Vec<Row>, tokio_postgres::Error>> + Send + 'a>>;

async fn simple(tx: &Transaction<'_>, sql: &str) -> std::result::Result<Vec<Row>, tokio_postgres::Error> {
    tx.batch_execute(sql).await.map(|()| Vec::new())
}

/// Runs every future to completion, polling them in order each time: the
/// first poll of each comes in order, which is when (and so the order in
/// which) the driver sends its request.
async fn in_order<T: Send>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => all = false,
                }
            }
        }
        if all { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(all(test, feature = "throwaway"))]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use agentauth_core::ports::prelude::*;
    use agentauth_core::ports::{NewToken, TokenKind};
    use agentauth_store_conformance::fixtures::client_row;

    use super::*;
    use crate::clients::NewClient;
    use crate::throwaway::Cluster;
    use crate::tokens::owned;
    use crate::{Options, PgStore};

    fn token<'a>(hash: &'a [u8], family: Option<&'a str>, kind: TokenKind) -> NewToken<'a> {
        NewToken { hash, client_id: "c1", family, kind, grant: "{}", expires_at: 100 }
    }

    fn tokens(realm: &str, hashes: &[&[u8]]) -> Write {
        let tokens: Vec<NewToken<'_>> = hashes.iter().map(|h| token(h, None, TokenKind::Access)).collect();
        Write::Tokens { realm: realm.into(), tokens: owned(&tokens) }
    }

    fn client(realm: &str, id: &str, max: u64) -> Write {
        Write::Client(Box::new(NewClient::new(realm, &client_row(id), max).expect("a client's JSON")))
    }

    fn assertion(jti: &str) -> Write {
        Write::Assertion { realm: "alpha".into(), client_id: "c1".into(), jti: jti.into(), expires_at: 100 }
    }

    fn rotation(old: &[u8], next: &[u8]) -> Write {
        let successors = owned(&[token(next, Some("f1"), TokenKind::Refresh)]);
        Write::Rotation { realm: "alpha".into(), old_hash: old.to_vec(), successors, now: 0, reused: Box::default() }
    }

    fn commits(store: &PgStore) -> (u64, u64) {
        let stats = &store.db.batcher.stats;
        (stats.commits.load(Ordering::SeqCst), stats.writes.load(Ordering::SeqCst))
    }

    /// Makes `writes` as one batch, as a lane would: each write's answer.
    fn one_batch(store: &PgStore, writes: Vec<Write>) -> Vec<Result<Done>> {
        let (pool, stats) = (store.db.pool.clone(), Arc::clone(&store.db.batcher.stats));
        store
            .db
            .run(async move {
                let (batch, answered): (Vec<Queued>, Vec<_>) = writes
                    .into_iter()
                    .map(|write| {
                        let (answer, answered, _) = Answer::new();
                        (Queued { write, answer }, answered)
                    })
                    .unzip();
                run(&pool, batch, &stats, Duration::from_secs(10)).await;
                let mut answers = Vec::new();
                for answer in answered {
                    answers.push(answer.try_recv().map_err(|_| stopped())?);
                }
                Ok(answers)
            })
            .expect("every answer")
    }

    #[test]
    fn a_write_that_fails_in_a_batch_fails_alone_and_the_rest_commit_once() {
        let cluster = Cluster::start().unwrap();
        let store = PgStore::connect(&cluster.create_database("batch").unwrap(), Options::default()).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_tokens("alpha", &[token(b"taken", None, TokenKind::Access)]).unwrap();
        store.insert_tokens("alpha", &[token(b"old", Some("f1"), TokenKind::Refresh)]).unwrap();
        let before = commits(&store);

        let answers = one_batch(
            &store,
            vec![
                tokens("alpha", &[b"t1"]),
                tokens("alpha", &[b"taken"]),
                client("alpha", "c1", 3),
                client("alpha", "c1", 3),
                client("alpha", "c2", 3),
                // Fits: the taken id above counted nothing.
                client("alpha", "c3", 3),
                client("alpha", "c4", 3),
                assertion("j1"),
                assertion("j1"),
                client("nowhere", "x1", 3),
                rotation(b"old", b"new"),
                rotation(b"unknown", b"newer"),
                tokens("alpha", &[b"t2", b"t3"]),
            ],
        );
        let kinds: Vec<std::result::Result<String, ErrorKind>> =
            answers.into_iter().map(|a| a.map(|done| format!("{done:?}")).map_err(|e| e.kind())).collect();
        let ok = |s: &str| Ok(s.to_string());
        assert_eq!(
            kinds,
            [
                ok("Tokens"),
                Err(ErrorKind::Constraint),
                ok("Client(true)"),
                Err(ErrorKind::Constraint),
                ok("Client(true)"),
                ok("Client(true)"),
                ok("Client(false)"),
                ok("Assertion(true)"),
                ok("Assertion(false)"),
                Err(ErrorKind::Constraint),
                ok("Rotation(Rotated)"),
                ok("Rotation(Unknown)"),
                ok("Tokens"),
            ]
        );
        let after = commits(&store);
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 13), "one commit for the thirteen writes");

        assert_eq!(store.count_clients("alpha").unwrap(), 3);
        assert_eq!(store.client("alpha", "c4").unwrap(), None);
        for hash in [&b"t1"[..], b"t2", b"t3", b"taken"] {
            assert!(store.token(hash, "alpha", TokenKind::Access, 0).unwrap().is_some());
        }
        assert!(store.token_row(b"old", "alpha", 0).unwrap().unwrap().used);
        assert!(store.token(b"new", "alpha", TokenKind::Refresh, 0).unwrap().is_some());
        assert!(store.token(b"newer", "alpha", TokenKind::Refresh, 0).unwrap().is_none());
        assert!(!store.use_assertion_jti("alpha", "c1", "j1", 100).unwrap());
    }

    #[test]
    fn writes_from_many_threads_share_commits_and_never_pass_the_cap() {
        let cluster = Cluster::start().unwrap();
        let store = PgStore::connect(&cluster.create_database("shared").unwrap(), Options::default()).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_tokens("alpha", &[token(b"taken", None, TokenKind::Access)]).unwrap();
        let before = commits(&store);
        let registered = AtomicUsize::new(0);
        let (threads, each) = (16u8, 25u8);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (store, registered) = (&store, &registered);
                s.spawn(move || {
                    for k in 0..each {
                        if k == 12 {
                            let e = store.insert_tokens("alpha", &[token(b"taken", None, TokenKind::Access)]);
                            assert_eq!(e.unwrap_err().kind(), ErrorKind::Constraint);
                        } else if k % 5 == 0 {
                            if store.insert_client("alpha", &client_row(&format!("c{t}-{k}")), 50).unwrap() {
                                registered.fetch_add(1, Ordering::SeqCst);
                            }
                        } else {
                            store.insert_tokens("alpha", &[token(&[t, k], None, TokenKind::Access)]).unwrap();
                        }
                    }
                });
            }
        });
        let after = commits(&store);
        let (batches, writes) = (after.0 - before.0, after.1 - before.1);
        // Every write but the taken hashes succeeded, whatever batch they
        // shared; a taken hash alone in its batch failed the batch, which
        // is not counted.
        let total = u64::from(threads) * u64::from(each);
        assert!((total - u64::from(threads)..=total).contains(&writes), "{writes} of {total} writes counted");
        assert!(batches < writes, "{batches} commits for {writes} writes");
        eprintln!("{writes} writes in {batches} commits");
        assert_eq!(registered.load(Ordering::SeqCst), 50);
        assert_eq!(store.count_clients("alpha").unwrap(), 50);
        let issued = u64::from(threads) * (u64::from(each) - 1 - 5);
        assert_eq!(store.count_tokens("alpha", TokenKind::Access).unwrap(), i64::try_from(issued).unwrap() + 1);
    }

    #[test]
    fn a_batch_aborted_by_a_serialization_failure_runs_again_whole_and_answers_once() {
        let cluster = Cluster::start().unwrap();
        let store = PgStore::connect(&cluster.create_database("retried").unwrap(), Options::default()).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        // Uses of the assertion id 'flaky' abort their transaction as long as
        // the sequence (which no rollback winds back) is below `fails`.
        cluster
            .query(
                "retried",
                "CREATE TABLE fails (n INT); INSERT INTO fails VALUES (2);
                 CREATE SEQUENCE attempts;
                 CREATE FUNCTION flaky() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                     IF NEW.jti = 'flaky' AND nextval('attempts') <= (SELECT n FROM fails) THEN
                         RAISE EXCEPTION 'aborted' USING ERRCODE = '40001';
                     END IF;
                     RETURN NEW;
                 END $$;
                 CREATE TRIGGER flaky BEFORE INSERT ON client_assertions FOR EACH ROW EXECUTE FUNCTION flaky();",
            )
            .unwrap();
        let before = commits(&store);
        let answers = one_batch(&store, vec![tokens("alpha", &[b"t1"]), assertion("flaky"), client("alpha", "c1", 5)]);
        let answers: Vec<String> = answers.into_iter().map(|a| format!("{:?}", a.unwrap())).collect();
        assert_eq!(answers, ["Tokens", "Assertion(true)", "Client(true)"]);
        assert_eq!(cluster.query("retried", "SELECT last_value FROM attempts").unwrap(), "3", "two aborted, one ran");
        assert_eq!(commits(&store).0 - before.0, 1);
        assert_eq!(store.count_clients("alpha").unwrap(), 1, "counted once");

        // Aborted every time: every write of the batch fails as Busy, and
        // none is made.
        cluster.query("retried", "UPDATE fails SET n = 1000").unwrap();
        let answers = one_batch(&store, vec![tokens("alpha", &[b"t2"]), assertion("flaky"), client("alpha", "c2", 5)]);
        assert!(answers.iter().all(|a| a.as_ref().is_err_and(|e| e.kind() == ErrorKind::Busy)), "{answers:?}");
        assert_eq!(cluster.query("retried", "SELECT last_value FROM attempts").unwrap(), (3 + RETRIES + 1).to_string());
        assert_eq!(store.count_clients("alpha").unwrap(), 1);
        assert!(store.token(b"t2", "alpha", TokenKind::Access, 0).unwrap().is_none());
    }
}
