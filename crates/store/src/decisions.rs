//! The audit of decisions: tokens issued or refused, registrations, with
//! the plugins that decided. Written in batches by the service; a realm's
//! decisions go with it (by cascade) and by age.

use rusqlite::{Connection, params};

use crate::engine::{execute, query_all};
use crate::{Decision, DecisionQuery, DecisionRepository, Error, PluginUse, Result, Store};

impl DecisionRepository for Store {
    fn record_decisions(&self, decisions: &[(String, Decision)]) -> Result<usize> {
        self.db.write(|tx| {
            let mut recorded = 0;
            for (realm, d) in decisions {
                recorded += insert(tx, realm, d)?;
            }
            Ok(recorded)
        })
    }

    fn decisions(&self, realm: &str, q: &DecisionQuery) -> Result<Vec<(i64, Decision)>> {
        let conn = self.db.conn();
        let rows: Vec<(i64, Decision, String, String)> = query_all(
            &conn,
            "SELECT id, at, request_id, event, client_id, grant_type, subject, actors, scope, audience, token_kind,
                    jti, outcome, error
             FROM decisions d
             WHERE realm = ?1 AND id > ?2
               AND (?3 IS NULL OR client_id = ?3)
               AND (?4 IS NULL OR outcome = ?4)
               AND (?5 IS NULL OR at >= ?5)
               AND (?6 IS NULL OR at < ?6)
               AND (?7 IS NULL OR EXISTS (SELECT 1 FROM decision_plugins p
                    WHERE p.decision = d.id AND p.plugin = ?7 AND (?8 IS NULL OR p.version = ?8)))
             ORDER BY id LIMIT ?9",
            params![realm, q.after, q.client_id, q.outcome, q.since, q.until, q.plugin, q.version, q.limit],
            |r| {
                let decision = Decision {
                    at: r.get(1)?,
                    request_id: r.get(2)?,
                    event: r.get(3)?,
                    client_id: r.get(4)?,
                    grant: r.get(5)?,
                    subject: r.get(6)?,
                    scope: r.get(8)?,
                    token_kind: r.get(10)?,
                    jti: r.get(11)?,
                    outcome: r.get(12)?,
                    error: r.get(13)?,
                    ..Decision::default()
                };
                Ok((r.get(0)?, decision, r.get(7)?, r.get(9)?))
            },
        )?;
        let mut decisions = Vec::with_capacity(rows.len());
        for (id, mut decision, actors, audience) in rows {
            decision.actors = list(id, "actors", &actors)?;
            decision.audience = list(id, "audience", &audience)?;
            decision.plugins = query_all(
                &conn,
                "SELECT plugin, version, sha256, outcome FROM decision_plugins WHERE decision = ?1 ORDER BY position",
                [id],
                |r| Ok(PluginUse { name: r.get(0)?, version: r.get(1)?, sha256: r.get(2)?, outcome: r.get(3)? }),
            )?;
            decisions.push((id, decision));
        }
        Ok(decisions)
    }

    fn sweep_decisions(&self, realm: &str, before: i64) -> Result<usize> {
        self.db.write(|tx| execute(tx, "DELETE FROM decisions WHERE realm = ?1 AND at < ?2", params![realm, before]))
    }
}

/// Records one decision, unless its realm is gone; 1 if it was recorded.
fn insert(tx: &Connection, realm: &str, d: &Decision) -> Result<usize> {
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let n = execute(
        tx,
        "INSERT INTO decisions (realm, at, request_id, event, client_id, grant_type, subject, actors, scope, audience,
                                token_kind, jti, outcome, error)
         SELECT name, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 FROM realms WHERE name = ?1",
        params![
            realm,
            d.at,
            d.request_id,
            d.event,
            d.client_id,
            d.grant,
            d.subject,
            json(&d.actors),
            d.scope,
            json(&d.audience),
            d.token_kind,
            d.jti,
            d.outcome,
            d.error
        ],
    )?;
    if n == 0 {
        return Ok(0);
    }
    let id = tx.last_insert_rowid();
    for (position, p) in d.plugins.iter().enumerate() {
        execute(
            tx,
            "INSERT INTO decision_plugins (decision, position, realm, plugin, version, sha256, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, position as i64, realm, p.name, p.version, p.sha256, p.outcome],
        )?;
    }
    Ok(1)
}

/// A stored JSON list of strings.
fn list(id: i64, what: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| Error::corrupt(format!("decision {id}: {what} is not a JSON list"), e))
}
