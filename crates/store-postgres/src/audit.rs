//! The audit log of administrative changes: who changed what in a realm,
//! and when.
//!
//! An entry is written by the change it records, in the same transaction,
//! so the log never claims a change that did not land nor misses one that
//! did. Entries belong to a realm's identity (its id), not its name: they
//! outlive the realm's deletion, and a realm created later under the same
//! name starts a log of its own.

use agentauth_core::ports::{AuditEntry, AuditRepository, Result};
use deadpool_postgres::GenericClient;

use crate::PgStore;
use crate::db::{conn, execute, get, query, query_one, query_opt};

impl AuditRepository for PgStore {
    fn audit(&self, realm: &str, after: i64, limit: i64) -> Result<Vec<(i64, AuditEntry)>> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT id, at, actor, action, plugin, version, sha256, detail FROM audit
                 WHERE realm_id = (SELECT id FROM realms WHERE name = $1) AND id > $2 ORDER BY id LIMIT $3",
                &[&realm, &after, &limit.max(0)],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        get(r, 0)?,
                        AuditEntry {
                            at: get(r, 1)?,
                            actor: get(r, 2)?,
                            action: get(r, 3)?,
                            plugin: get(r, 4)?,
                            version: get(r, 5)?,
                            sha256: get(r, 6)?,
                            detail: get(r, 7)?,
                        },
                    ))
                })
                .collect()
        })
    }

    fn latest_audit_id(&self, realm: &str) -> Result<i64> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_one(
                &c,
                "SELECT COALESCE(MAX(id), 0)::BIGINT FROM audit WHERE realm_id = (SELECT id FROM realms WHERE name = $1)",
                &[&realm],
            )
            .await?;
            get(&row, 0)
        })
    }

    fn event_cursor(&self, realm: &str, receiver: &str) -> Result<Option<i64>> {
        let (pool, realm, receiver) = (self.db.pool.clone(), realm.to_owned(), receiver.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(
                &c,
                "SELECT upto FROM event_cursors WHERE realm = $1 AND receiver = $2",
                &[&realm, &receiver],
            )
            .await?;
            row.map(|r| get(&r, 0)).transpose()
        })
    }

    fn set_event_cursor(&self, realm: &str, receiver: &str, upto: i64) -> Result<()> {
        let (pool, realm, receiver) = (self.db.pool.clone(), realm.to_owned(), receiver.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            execute(
                &c,
                "INSERT INTO event_cursors (realm, receiver, upto) VALUES ($1, $2, $3)
                 ON CONFLICT (realm, receiver) DO UPDATE SET upto = GREATEST(event_cursors.upto, excluded.upto)",
                &[&realm, &receiver, &upto],
            )
            .await
            .map(drop)
        })
    }
}

/// Appends an audit entry to the log of the realm now named `realm`: it
/// belongs to that realm's identity, and keeps the name for the record.
pub(crate) async fn record<C: GenericClient + ?Sized>(tx: &C, realm: &str, e: &AuditEntry) -> Result<()> {
    execute(
        tx,
        "INSERT INTO audit (at, actor, realm, action, plugin, version, sha256, detail, realm_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, (SELECT id FROM realms WHERE name = $3))",
        &[&e.at, &e.actor, &realm, &e.action, &e.plugin, &e.version, &e.sha256, &e.detail],
    )
    .await?;
    Ok(())
}
