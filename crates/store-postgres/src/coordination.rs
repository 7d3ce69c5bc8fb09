//! What replicas sharing the database agree on: the feed of changes each
//! follows, leases, and whether the database answers.
//!
//! Every write that changes what a replica keeps in memory records a
//! change in its own transaction, as its last statements: it takes
//! [`CHANGES_LOCK`], numbers the change from a sequence, and NOTIFYs the
//! listeners (delivered at commit). The lock is held until commit, so
//! changes commit in the order of their numbers: a follower never sees
//! change N+1 before N, and never skips one by reading past it. Only the
//! tails of such writes queue on the lock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use agentauth_core::ports::{Change, ChangeTopic, Coordination, Error, ErrorKind, Result};
use deadpool_postgres::GenericClient;

use crate::PgStore;
use crate::db::{conn, execute, get, named, query, query_one, query_opt};
use crate::listen::CHANNEL;

/// The advisory lock that orders changes (transaction-scoped, one-key
/// space): "agentau" in ASCII, then 2.
pub(crate) const CHANGES_LOCK: i64 = 0x6167_656e_7461_7502;

/// Records a change of `topic` in `realm`, numbered in commit order: to be
/// the last thing a transaction does before it commits.
pub(crate) async fn record_change<C: GenericClient + ?Sized>(
    tx: &C,
    realm: &str,
    topic: ChangeTopic,
    client_id: Option<&str>,
) -> Result<()> {
    // Taken before the number, so numbers are handed out in the order the
    // transactions holding them will commit.
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&CHANGES_LOCK]).await?;
    execute(
        tx,
        "INSERT INTO changes (seq, realm, topic, client_id, at)
         VALUES (nextval('changes_seq'), $1, $2, $3, floor(extract(epoch FROM clock_timestamp()))::BIGINT)",
        &[&realm, &topic.as_str(), &client_id],
    )
    .await?;
    execute(tx, "SELECT pg_notify($1, '')", &[&CHANNEL]).await?;
    Ok(())
}

impl Coordination for PgStore {
    fn latest_change(&self) -> Result<i64> {
        let pool = self.db.pool.clone();
        self.db.run(async move {
            let c = conn(&pool).await?;
            get(&query_one(&c, "SELECT COALESCE(MAX(seq), 0) FROM changes", &[]).await?, 0)
        })
    }

    fn changes_after(&self, after: i64, limit: i64) -> Result<Vec<Change>> {
        // Before reading: a notification from now on is for a change this
        // read may not see, and must end the next wait.
        self.seen.store(self.signal.generation(), Ordering::SeqCst);
        let pool = self.db.pool.clone();
        let changes = self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT seq, realm, topic, client_id FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit.max(0)],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(Change {
                        seq: get(r, 0)?,
                        realm: get(r, 1)?,
                        topic: named(r, 2, "change topic", ChangeTopic::parse)?,
                        client_id: get(r, 3)?,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        for change in &changes {
            match (change.topic, &change.client_id) {
                (ChangeTopic::Client, Some(client_id)) => self.clients.forget(&change.realm, client_id),
                // A realm deleted (and perhaps made again) elsewhere took its
                // clients with it.
                (ChangeTopic::Realm, _) => self.clients.forget_realm(&change.realm),
                _ => {}
            }
        }
        Ok(changes)
    }

    fn forget_cached(&self) {
        self.clients.forget_all();
    }

    fn wait_for_change(&self, timeout: Duration) {
        self.signal.wait_past(self.seen.load(Ordering::SeqCst), timeout);
    }

    /// One statement: a new lease is inserted; a held one is taken over
    /// only if it ran out or is the caller's own. Racing callers queue on
    /// the row, and each sees the winner's lease before deciding.
    fn hold_lease(&self, name: &str, holder: &str, now: i64, ttl: i64) -> Result<bool> {
        let (pool, name, holder) = (self.db.pool.clone(), name.to_owned(), holder.to_owned());
        let until = now.saturating_add(ttl);
        self.db.run(async move {
            let c = conn(&pool).await?;
            let held = query_opt(
                &c,
                "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $4)
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                 WHERE leases.until <= $3 OR leases.holder = EXCLUDED.holder
                 RETURNING holder",
                &[&name, &holder, &now, &until],
            )
            .await?;
            Ok(held.is_some())
        })
    }

    fn ping(&self) -> Result<()> {
        let pool = self.db.pool.clone();
        self.db.run(async move {
            let c = conn(&pool).await?;
            let one: i32 = get(&query_one(&c, "SELECT 1", &[]).await?, 0)?;
            if one == 1 { Ok(()) } else { Err(Error::new(ErrorKind::Other, "storage failure: ping answered wrong")) }
        })
    }

    fn observe_commits(&self, observer: std::sync::Arc<dyn agentauth_core::ports::CommitObserver>) {
        self.db.pool.observe_commits(observer);
    }
}
