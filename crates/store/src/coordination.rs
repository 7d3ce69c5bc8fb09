//! Coordination with other processes on the same database file: the
//! change feed they follow, and leases.
//!
//! Writes run one at a time on the writer connection, so the changes'
//! numbers are in commit order. SQLite has no notifications: a follower
//! polls, and [`Coordination::wait_for_change`] only waits.

use std::time::Duration;

use rusqlite::{Connection, params};

use crate::engine::{execute, query_all, query_row};
use crate::{Change, ChangeTopic, Coordination, Error, ErrorKind, Result, Store};

/// Records that `realm`'s `topic` changed, in the write's own transaction.
pub(crate) fn record_change(tx: &Connection, realm: &str, topic: ChangeTopic, client_id: Option<&str>) -> Result<()> {
    execute(
        tx,
        "INSERT INTO changes (realm, topic, client_id, at) VALUES (?1, ?2, ?3, unixepoch())",
        params![realm, topic.as_str(), client_id],
    )?;
    Ok(())
}

impl Coordination for Store {
    fn latest_change(&self) -> Result<i64> {
        query_row(&self.db.conn(), "SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))
    }

    fn changes_after(&self, after: i64, limit: i64) -> Result<Vec<Change>> {
        let rows: Vec<(i64, String, String, Option<String>)> = query_all(
            &self.db.conn(),
            "SELECT seq, realm, topic, client_id FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            params![after, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
        let mut changes = Vec::with_capacity(rows.len());
        for (seq, realm, topic, client_id) in rows {
            let topic = ChangeTopic::parse(&topic)
                .ok_or_else(|| Error::new(ErrorKind::Corrupt, format!("change {seq}: unknown topic {topic:?}")))?;
            match (topic, &client_id) {
                (ChangeTopic::Client, Some(client_id)) => self.clients.forget(&realm, client_id),
                // A realm deleted (and perhaps made again) elsewhere took its
                // clients with it.
                (ChangeTopic::Realm, _) => self.clients.forget_realm(&realm),
                _ => {}
            }
            changes.push(Change { seq, realm, topic, client_id });
        }
        Ok(changes)
    }

    fn forget_cached(&self) {
        self.clients.forget_all();
    }

    fn wait_for_change(&self, timeout: Duration) {
        std::thread::sleep(timeout);
    }

    fn hold_lease(&self, name: &str, holder: &str, now: i64, ttl: i64) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(
                tx,
                "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
                 WHERE leases.until <= ?4 OR leases.holder = excluded.holder",
                params![name, holder, now.saturating_add(ttl), now],
            )?;
            Ok(n == 1)
        })
    }

    fn ping(&self) -> Result<()> {
        query_row(&self.db.conn(), "SELECT 1", [], |r| r.get::<_, i64>(0)).map(drop)
    }

    fn observe_commits(&self, observer: std::sync::Arc<dyn agentauth_core::ports::CommitObserver>) {
        self.db.observe_commits(observer);
    }
}
