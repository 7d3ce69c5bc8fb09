//! The audit of decisions: tokens issued or refused, registrations, with
//! the plugins that decided. Written in batches by the service, into a
//! database of its own beside the store's (see `migrations::DECISIONS`),
//! so that the busiest write of all never holds the writer tokens and
//! clients wait for.
//!
//! Decisions are filed under the store's realm *id*, not its name: a realm
//! deleted and created again under the same name starts with an empty
//! audit. A realm's decisions go when it is deleted, and by age; those of a
//! realm deleted while the audit was away (a crash between the two files)
//! go at the next sweep.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, params};

use crate::engine::{Engine, execute, lock, query_all, query_opt, query_row};
use crate::migrations;
use crate::{Decision, DecisionQuery, DecisionRepository, Error, PluginUse, Result, Store};

/// Shapes remembered by the writer, at most; past that the memory starts
/// over (a shape not remembered is looked up, never duplicated).
const SHAPES_KEPT: usize = 16_384;

/// Old rows carried over from the store's database per commit.
const CARRIED_PER_COMMIT: i64 = 5_000;

/// The database of decisions, and what its writer remembers of it.
#[derive(Debug)]
pub(crate) struct DecisionLog {
    db: Engine,
    known: Mutex<Known>,
}

/// Ids already in the database, so that a decision like the last one
/// costs one small insert.
#[derive(Debug, Default)]
struct Known {
    /// Realm ids (the store's) by their number here.
    realms: HashMap<String, i64>,
    /// Shape ids by key.
    shapes: HashMap<Vec<u8>, i64>,
}

/// Where the decisions of the store at `store` are kept: beside it,
/// `agentauth.sqlite3` → `agentauth.decisions.sqlite3`.
pub(crate) fn path_beside(store: &Path) -> PathBuf {
    let stem = store.file_stem().map_or_else(|| "agentauth".into(), |s| s.to_string_lossy().into_owned());
    store.with_file_name(format!("{stem}.decisions.sqlite3"))
}

impl DecisionLog {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        Ok(Self { db: Engine::open_with(path, &migrations::DECISIONS)?, known: Mutex::default() })
    }

    pub(crate) fn open_in_memory() -> Result<Self> {
        Ok(Self { db: Engine::open_in_memory_with(&migrations::DECISIONS)?, known: Mutex::default() })
    }

    /// Records `decisions`, each under its realm's id, in one commit.
    fn record(&self, decisions: &[(&str, &Decision)]) -> Result<usize> {
        self.record_and(decisions, |_| Ok(()))
    }

    /// Records `decisions` and runs `also` in the same commit.
    fn record_and(
        &self,
        decisions: &[(&str, &Decision)],
        also: impl FnOnce(&Connection) -> Result<()>,
    ) -> Result<usize> {
        let mut known = lock(&self.known);
        let mut learned = Known::default();
        self.db.write(|tx| {
            for (realm_id, d) in decisions {
                let realm = match known.realms.get(*realm_id).or_else(|| learned.realms.get(*realm_id)) {
                    Some(&rid) => rid,
                    None => {
                        let rid = realm_number(tx, realm_id)?;
                        learned.realms.insert((*realm_id).to_string(), rid);
                        rid
                    }
                };
                let key = shape_key(realm, d);
                let shape = match known.shapes.get(&key).or_else(|| learned.shapes.get(&key)) {
                    Some(&id) => id,
                    None => {
                        let id = insert_shape(tx, realm, &key, d)?;
                        learned.shapes.insert(key, id);
                        id
                    }
                };
                execute(
                    tx,
                    "INSERT INTO decisions (realm, shape, at, request_id, jti) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![realm, shape, d.at, d.request_id, d.jti],
                )?;
            }
            also(tx)
        })?;
        // Only what committed is remembered.
        if known.shapes.len() + learned.shapes.len() > SHAPES_KEPT {
            known.shapes.clear();
        }
        known.realms.extend(learned.realms);
        known.shapes.extend(learned.shapes);
        Ok(decisions.len())
    }

    /// The decisions of the realm with id `realm_id` matching `q`.
    fn list(&self, realm_id: &str, q: &DecisionQuery) -> Result<Vec<(i64, Decision)>> {
        let conn = self.db.conn();
        let Some(realm) = query_opt(&conn, "SELECT rid FROM realms WHERE id = ?1", [realm_id], |r| r.get::<_, i64>(0))?
        else {
            return Ok(Vec::new());
        };
        let rows: Vec<(i64, i64, Decision, String, String)> = query_all(
            &conn,
            "SELECT d.id, d.shape, d.at, d.request_id, s.event, s.client_id, s.grant_type, s.subject, s.actors,
                    s.scope, s.audience, s.token_kind, d.jti, s.outcome, s.error
             FROM decisions d JOIN shapes s ON s.id = d.shape
             WHERE d.realm = ?1 AND d.id > ?2
               AND (?3 IS NULL OR s.client_id = ?3)
               AND (?4 IS NULL OR s.outcome = ?4)
               AND (?5 IS NULL OR d.at >= ?5)
               AND (?6 IS NULL OR d.at < ?6)
               AND (?7 IS NULL OR EXISTS (SELECT 1 FROM shape_plugins p
                    WHERE p.shape = d.shape AND p.plugin = ?7 AND (?8 IS NULL OR p.version = ?8)))
             ORDER BY d.id LIMIT ?9",
            params![realm, q.after, q.client_id, q.outcome, q.since, q.until, q.plugin, q.version, q.limit],
            decision_row,
        )?;
        let mut plugins_of: HashMap<i64, Vec<PluginUse>> = HashMap::new();
        let mut decisions = Vec::with_capacity(rows.len());
        for (id, shape, mut decision, actors, audience) in rows {
            decision.actors = list(id, "actors", &actors)?;
            decision.audience = list(id, "audience", &audience)?;
            decision.plugins = match plugins_of.get(&shape) {
                Some(plugins) => plugins.clone(),
                None => {
                    let plugins = query_all(
                        &conn,
                        "SELECT plugin, version, sha256, outcome FROM shape_plugins WHERE shape = ?1 ORDER BY position",
                        [shape],
                        |r| {
                            Ok(PluginUse { name: r.get(0)?, version: r.get(1)?, sha256: r.get(2)?, outcome: r.get(3)? })
                        },
                    )?;
                    plugins_of.insert(shape, plugins.clone());
                    plugins
                }
            };
            decisions.push((id, decision));
        }
        Ok(decisions)
    }

    /// Deletes the decisions of the realm with id `realm_id` made before
    /// `before` (all of them with `None`), and the shapes no decision has
    /// any more.
    fn sweep(&self, realm_id: &str, before: Option<i64>) -> Result<usize> {
        let mut known = lock(&self.known);
        let swept = self.db.write(|tx| {
            let Some(realm) = query_opt(tx, "SELECT rid FROM realms WHERE id = ?1", [realm_id], |r| r.get::<_, i64>(0))?
            else {
                return Ok(0);
            };
            let swept = match before {
                Some(before) => {
                    execute(tx, "DELETE FROM decisions WHERE realm = ?1 AND at < ?2", params![realm, before])?
                }
                None => execute(tx, "DELETE FROM decisions WHERE realm = ?1", [realm])?,
            };
            execute(
                tx,
                "DELETE FROM shapes WHERE realm = ?1 AND NOT EXISTS (SELECT 1 FROM decisions d WHERE d.shape = shapes.id)",
                [realm],
            )?;
            execute(tx, "DELETE FROM shape_plugins WHERE NOT EXISTS (SELECT 1 FROM shapes s WHERE s.id = shape_plugins.shape)", [])?;
            if before.is_none() {
                execute(tx, "DELETE FROM realms WHERE rid = ?1", [realm])?;
            }
            Ok(swept)
        });
        // Some remembered shapes may be gone: forget them all (they are
        // looked up again as they come).
        known.shapes.clear();
        known.realms.retain(|id, _| before.is_some() || id != realm_id);
        swept
    }

    /// The ids of the realms that have decisions here.
    fn realms(&self) -> Result<Vec<String>> {
        query_all(&self.db.conn(), "SELECT id FROM realms", [], |r| r.get(0))
    }

    /// The highest id of the store's old decisions carried over so far.
    fn carried(&self) -> Result<i64> {
        query_row(&self.db.conn(), "SELECT coalesce(max(done), 0) FROM carried", [], |r| r.get(0))
    }
}

/// The number of the realm with the store's id `realm_id` here, numbered
/// now if it has none yet.
fn realm_number(tx: &Connection, realm_id: &str) -> Result<i64> {
    execute(tx, "INSERT INTO realms (id) VALUES (?1) ON CONFLICT (id) DO NOTHING", [realm_id])?;
    query_row(tx, "SELECT rid FROM realms WHERE id = ?1", [realm_id], |r| r.get(0))
}

/// What identifies a decision's shape: every field but its time, request
/// and token, each with its length, so no two shapes share a key.
fn shape_key(realm: i64, d: &Decision) -> Vec<u8> {
    fn text(key: &mut Vec<u8>, s: &str) {
        key.extend_from_slice(&(s.len() as u32).to_le_bytes());
        key.extend_from_slice(s.as_bytes());
    }
    fn maybe(key: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                key.push(1);
                text(key, s);
            }
            None => key.push(0),
        }
    }
    let mut key = Vec::with_capacity(256);
    key.extend_from_slice(&realm.to_le_bytes());
    text(&mut key, &d.event);
    maybe(&mut key, d.client_id.as_deref());
    maybe(&mut key, d.grant.as_deref());
    maybe(&mut key, d.subject.as_deref());
    for list in [&d.actors, &d.audience] {
        key.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for item in list {
            text(&mut key, item);
        }
    }
    maybe(&mut key, d.scope.as_deref());
    maybe(&mut key, d.token_kind.as_deref());
    text(&mut key, &d.outcome);
    maybe(&mut key, d.error.as_deref());
    key.extend_from_slice(&(d.plugins.len() as u32).to_le_bytes());
    for p in &d.plugins {
        text(&mut key, &p.name);
        key.extend_from_slice(&p.version.to_le_bytes());
        text(&mut key, &p.sha256);
        text(&mut key, &p.outcome);
    }
    key
}

/// Stores the shape of `d` under `key` (or finds it stored); its id.
fn insert_shape(tx: &Connection, realm: i64, key: &[u8], d: &Decision) -> Result<i64> {
    if let Some(id) = query_opt(tx, "SELECT id FROM shapes WHERE key = ?1", [key], |r| r.get(0))? {
        return Ok(id);
    }
    let json = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    execute(
        tx,
        "INSERT INTO shapes (realm, key, event, client_id, grant_type, subject, actors, scope, audience, token_kind,
                             outcome, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            realm,
            key,
            d.event,
            d.client_id,
            d.grant,
            d.subject,
            json(&d.actors),
            d.scope,
            json(&d.audience),
            d.token_kind,
            d.outcome,
            d.error
        ],
    )?;
    let id = tx.last_insert_rowid();
    for (position, p) in d.plugins.iter().enumerate() {
        execute(
            tx,
            "INSERT INTO shape_plugins (shape, position, plugin, version, sha256, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, position as i64, p.name, p.version, p.sha256, p.outcome],
        )?;
    }
    Ok(id)
}

/// A decision as both queries read it: its id, one more column (its shape,
/// or its realm), the decision without its lists and plugins, and its
/// actors and audience as stored (JSON).
fn decision_row<T: rusqlite::types::FromSql>(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, T, Decision, String, String)> {
    let decision = Decision {
        at: r.get(2)?,
        request_id: r.get(3)?,
        event: r.get(4)?,
        client_id: r.get(5)?,
        grant: r.get(6)?,
        subject: r.get(7)?,
        scope: r.get(9)?,
        token_kind: r.get(11)?,
        jti: r.get(12)?,
        outcome: r.get(13)?,
        error: r.get(14)?,
        ..Decision::default()
    };
    Ok((r.get(0)?, r.get(1)?, decision, r.get(8)?, r.get(10)?))
}

/// A stored JSON list of strings.
fn list(id: i64, what: &str, json: &str) -> Result<Vec<String>> {
    serde_json::from_str(json).map_err(|e| Error::corrupt(format!("decision {id}: {what} is not a JSON list"), e))
}

impl Store {
    /// The store's id of realm `name`, if it exists.
    fn realm_id(&self, name: &str) -> Result<Option<String>> {
        let id = query_opt(&self.db.conn(), "SELECT id FROM realms WHERE name = ?1", [name], |r| {
            r.get::<_, Option<String>>(0)
        })?;
        Ok(id.flatten())
    }

    /// Forgets every decision of the realm whose id was `realm_id`: after
    /// the realm is deleted.
    pub(crate) fn forget_decisions(&self, realm_id: &str) -> Result<usize> {
        self.decisions.sweep(realm_id, None)
    }

    /// Carries the decisions an older version kept in the store's database
    /// (schema 15) over to their own, a commit at a time, then drops the
    /// old tables. Each commit notes how far it got, so a crash midway
    /// resumes there.
    pub(crate) fn carry_old_decisions(&self) -> Result<()> {
        let conn = self.db.conn();
        let old = crate::engine::exists(
            &conn,
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'carried_decisions')",
            [],
        )?;
        drop(conn);
        if !old {
            return Ok(());
        }
        loop {
            let from = self.decisions.carried()?;
            let page = old_decisions(&self.db.conn(), from)?;
            let Some(last) = page.last().map(|(id, _, _)| *id) else { break };
            let rows: Vec<(&str, &Decision)> = page.iter().map(|(_, realm, d)| (realm.as_str(), d)).collect();
            self.decisions
                .record_and(&rows, |tx| execute(tx, "INSERT INTO carried (done) VALUES (?1)", [last]).map(drop))?;
        }
        self.db.write(|tx| {
            tx.execute_batch("DROP TABLE carried_decision_plugins; DROP TABLE carried_decisions;")
                .map_err(crate::error::sqlite)
        })
    }
}

/// A page of the old decisions after id `from`: id, realm id, decision.
fn old_decisions(conn: &Connection, from: i64) -> Result<Vec<(i64, String, Decision)>> {
    let rows: Vec<(i64, String, Decision, String, String)> = query_all(
        conn,
        "SELECT d.id, r.id, d.at, d.request_id, d.event, d.client_id, d.grant_type, d.subject, d.actors, d.scope,
                d.audience, d.token_kind, d.jti, d.outcome, d.error
         FROM carried_decisions d JOIN realms r ON r.name = d.realm
         WHERE d.id > ?1 AND r.id IS NOT NULL ORDER BY d.id LIMIT ?2",
        params![from, CARRIED_PER_COMMIT],
        decision_row,
    )?;
    let mut page = Vec::with_capacity(rows.len());
    for (id, realm, mut decision, actors, audience) in rows {
        decision.actors = list(id, "actors", &actors)?;
        decision.audience = list(id, "audience", &audience)?;
        decision.plugins = query_all(
            conn,
            "SELECT plugin, version, sha256, outcome FROM carried_decision_plugins WHERE decision = ?1 ORDER BY position",
            [id],
            |r| Ok(PluginUse { name: r.get(0)?, version: r.get(1)?, sha256: r.get(2)?, outcome: r.get(3)? }),
        )?;
        page.push((id, realm, decision));
    }
    Ok(page)
}

impl DecisionRepository for Store {
    fn record_decisions(&self, decisions: &[(String, Decision)]) -> Result<usize> {
        // Each realm's id, read once per batch: a decision of a realm that
        // is gone is dropped.
        let mut ids: HashMap<&str, Option<String>> = HashMap::new();
        for (realm, _) in decisions {
            if !ids.contains_key(realm.as_str()) {
                ids.insert(realm, self.realm_id(realm)?);
            }
        }
        let rows: Vec<(&str, &Decision)> = decisions
            .iter()
            .filter_map(|(realm, d)| ids.get(realm.as_str()).and_then(|id| id.as_deref()).map(|id| (id, d)))
            .collect();
        self.decisions.record(&rows)
    }

    fn decisions(&self, realm: &str, q: &DecisionQuery) -> Result<Vec<(i64, Decision)>> {
        match self.realm_id(realm)? {
            Some(id) => self.decisions.list(&id, q),
            None => Ok(Vec::new()),
        }
    }

    fn sweep_decisions(&self, realm: &str, before: i64) -> Result<usize> {
        // Realms deleted while their decisions could not be (a crash
        // between the two files) go first.
        for id in self.decisions.realms()? {
            let live =
                crate::engine::exists(&self.db.conn(), "SELECT EXISTS (SELECT 1 FROM realms WHERE id = ?1)", [&id])?;
            if !live {
                self.decisions.sweep(&id, None)?;
            }
        }
        match self.realm_id(realm)? {
            Some(id) => self.decisions.sweep(&id, Some(before)),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;
    use agentauth_store_conformance::fixtures::audit;

    fn decision(at: i64, client: &str) -> Decision {
        Decision {
            at,
            request_id: format!("req-{at}"),
            event: "token".into(),
            client_id: Some(client.into()),
            grant: Some("client_credentials".into()),
            subject: Some(client.into()),
            scope: Some("read".into()),
            audience: vec!["https://rs.example".into()],
            token_kind: Some("jwt".into()),
            jti: Some(format!("jti-{at}")),
            plugins: vec![PluginUse { name: "p".into(), version: 1, sha256: "ab".into(), outcome: "allowed".into() }],
            outcome: "allowed".into(),
            ..Decision::default()
        }
    }

    fn count(log: &DecisionLog, table: &str) -> i64 {
        query_row(&log.db.conn(), &format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn decisions_alike_share_one_shape_and_others_get_their_own() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let batch: Vec<(String, Decision)> =
            (0..10).map(|at| ("alpha".to_string(), decision(at, if at < 8 { "c1" } else { "c2" }))).collect();
        store.record_decisions(&batch[..5]).unwrap();
        store.record_decisions(&batch[5..]).unwrap();
        assert_eq!(count(&store.decisions, "decisions"), 10);
        assert_eq!(count(&store.decisions, "shapes"), 2, "one shape per client here");
        assert_eq!(count(&store.decisions, "shape_plugins"), 2);
    }

    #[test]
    fn decisions_are_kept_in_a_file_beside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentauth.sqlite3");
        let store = Store::open(&path).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.record_decisions(&[("alpha".to_string(), decision(1, "c1"))]).unwrap();
        drop(store);
        assert_eq!(Store::decisions_path(&path), dir.path().join("agentauth.decisions.sqlite3"));
        let beside = Connection::open(Store::decisions_path(&path)).unwrap();
        let n: i64 = beside.query_row("SELECT count(*) FROM decisions", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let reopened = Store::open(&path).unwrap();
        assert_eq!(reopened.decisions("alpha", &DecisionQuery::default()).unwrap().len(), 1);
    }

    #[test]
    fn the_decisions_of_a_realm_deleted_behind_the_audits_back_go_at_the_next_sweep() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.create_realm_if_absent("beta", "{}", 0).unwrap();
        store.record_decisions(&[("alpha".to_string(), decision(1, "c1"))]).unwrap();
        store.record_decisions(&[("beta".to_string(), decision(1, "c1"))]).unwrap();
        // As if the server died between deleting the realm and its decisions.
        store.db.write(|tx| execute(tx, "DELETE FROM realms WHERE name = 'alpha'", [])).unwrap();
        assert_eq!(count(&store.decisions, "decisions"), 2);
        store.sweep_decisions("beta", 0).unwrap();
        assert_eq!(count(&store.decisions, "decisions"), 1, "alpha's went, beta's stayed");
        assert_eq!(count(&store.decisions, "realms"), 1);
        assert_eq!(count(&store.decisions, "shapes"), 1);
    }

    #[test]
    fn decisions_kept_in_the_store_by_schema_15_are_carried_over_and_their_tables_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentauth.sqlite3");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &migrations::MIGRATIONS[..15] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 15).unwrap();
            tx.execute_batch(
                "INSERT INTO realms (name, settings, created_at, id) VALUES ('alpha', '{}', 0, 'a1');
                 INSERT INTO decisions (id, realm, at, request_id, event, client_id, grant_type, subject, actors,
                                        scope, audience, token_kind, jti, outcome, error)
                    VALUES (1, 'alpha', 10, 'r1', 'token', 'c1', 'client_credentials', 'c1', '[]', 'read',
                            '[\"https://rs.example\"]', 'jwt', 'j1', 'allowed', NULL),
                           (2, 'alpha', 20, 'r2', 'token', 'c1', 'client_credentials', NULL, '[\"x\"]', NULL,
                            '[]', NULL, NULL, 'refused', 'invalid_scope');
                 INSERT INTO decision_plugins (decision, position, realm, plugin, version, sha256, outcome)
                    VALUES (1, 0, 'alpha', 'p', 3, 'ab', 'allowed');",
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let read = store.decisions("alpha", &DecisionQuery::default()).unwrap();
        assert_eq!(read.len(), 2);
        let (first, second) = (&read[0].1, &read[1].1);
        assert_eq!(
            (first.at, first.jti.as_deref(), first.audience.as_slice()),
            (10, Some("j1"), &["https://rs.example".to_string()][..])
        );
        assert_eq!(
            first.plugins,
            [PluginUse { name: "p".into(), version: 3, sha256: "ab".into(), outcome: "allowed".into() }]
        );
        assert_eq!(
            (second.outcome.as_str(), second.error.as_deref(), second.actors.as_slice()),
            ("refused", Some("invalid_scope"), &["x".to_string()][..])
        );
        let old = crate::engine::exists(
            &store.db.conn(),
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name LIKE 'carried_%' OR name LIKE 'decision%')",
            [],
        )
        .unwrap();
        assert!(!old, "the old tables are gone");
        drop(store);
        // Opening again carries nothing twice.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.decisions("alpha", &DecisionQuery::default()).unwrap().len(), 2);
        assert!(store.delete_realm("alpha", &audit("delete")).unwrap());
        assert_eq!(count(&store.decisions, "decisions"), 0, "they go with their realm");
    }
}
