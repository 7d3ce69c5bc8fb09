//! The audit log of administrative changes: who changed what in a realm,
//! and when.
//!
//! An entry is written by the change it records, in the same commit, so
//! the log never claims a change that did not land nor misses one that
//! did. Entries belong to a realm's identity (its id), not its name: they
//! outlive the realm's deletion, and a realm created later under the same
//! name starts a log of its own.

use rusqlite::{Connection, params};

use crate::engine::{execute, query_all, query_opt, query_row};
use crate::{AuditEntry, AuditRepository, Result, Store};

impl AuditRepository for Store {
    fn audit(&self, realm: &str, after: i64, limit: i64) -> Result<Vec<(i64, AuditEntry)>> {
        query_all(
            &self.db.conn(),
            "SELECT id, at, actor, action, plugin, version, sha256, detail FROM audit
             WHERE realm_id = (SELECT id FROM realms WHERE name = ?1) AND id > ?2 ORDER BY id LIMIT ?3",
            params![realm, after, limit],
            |r| {
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
            },
        )
    }

    fn latest_audit_id(&self, realm: &str) -> Result<i64> {
        query_row(
            &self.db.conn(),
            "SELECT COALESCE(MAX(id), 0) FROM audit WHERE realm_id = (SELECT id FROM realms WHERE name = ?1)",
            [realm],
            |r| r.get(0),
        )
    }

    fn event_cursor(&self, realm: &str, receiver: &str) -> Result<Option<i64>> {
        query_opt(
            &self.db.conn(),
            "SELECT upto FROM event_cursors WHERE realm = ?1 AND receiver = ?2",
            params![realm, receiver],
            |r| r.get(0),
        )
    }

    fn set_event_cursor(&self, realm: &str, receiver: &str, upto: i64) -> Result<()> {
        self.db.write(|tx| {
            execute(
                tx,
                "INSERT INTO event_cursors (realm, receiver, upto) VALUES (?1, ?2, ?3)
                 ON CONFLICT (realm, receiver) DO UPDATE SET upto = MAX(upto, excluded.upto)",
                params![realm, receiver, upto],
            )
            .map(drop)
        })
    }
}

/// Appends an audit entry to the log of the realm now named `realm`: it
/// belongs to that realm's identity, and keeps the name for the record.
pub(crate) fn record(tx: &Connection, realm: &str, e: &AuditEntry) -> Result<()> {
    execute(
        tx,
        "INSERT INTO audit (at, actor, realm, action, plugin, version, sha256, detail, realm_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, (SELECT id FROM realms WHERE name = ?3))",
        params![e.at, e.actor, realm, e.action, e.plugin, e.version, e.sha256, e.detail],
    )?;
    Ok(())
}
