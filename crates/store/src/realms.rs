//! Realms, their settings and their admins.
//!
//! A realm is the unit of tenancy: everything else stored (clients, keys,
//! plugins, tokens) belongs to one, and goes with it, by the schema's
//! cascades. Its settings are JSON the server interprets; the store keeps
//! them whole.

use rusqlite::{Connection, params};

use crate::audit::record;
use crate::coordination::record_change;
use crate::engine::{execute, query_all, query_opt};
use crate::plugins::delete_unused_artifacts;
use crate::{AuditEntry, ChangeTopic, RealmAdmin, RealmRepository, RealmRow, Result, Store};

fn admin_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RealmAdmin> {
    Ok(RealmAdmin { realm: row.get(0)?, id: row.get(1)?, name: row.get(2)?, created_at: row.get(3)? })
}

/// Inserts a realm with a fresh identity unless one of that name exists;
/// whether it did.
fn insert_realm(tx: &Connection, name: &str, settings: &str, now: i64) -> Result<bool> {
    let n = execute(
        tx,
        "INSERT INTO realms (name, settings, created_at, id) VALUES (?1, ?2, ?3, lower(hex(randomblob(16))))
         ON CONFLICT (name) DO NOTHING",
        params![name, settings, now],
    )?;
    Ok(n == 1)
}

impl RealmRepository for Store {
    fn realm(&self, name: &str) -> Result<Option<RealmRow>> {
        query_opt(&self.db.conn(), "SELECT name, settings FROM realms WHERE name = ?1", [name], |r| {
            Ok(RealmRow { name: r.get(0)?, settings: r.get(1)? })
        })
    }

    fn create_realm_if_absent(&self, name: &str, settings: &str, now: i64) -> Result<bool> {
        self.db.write(|tx| {
            let created = insert_realm(tx, name, settings, now)?;
            if created {
                record_change(tx, name, ChangeTopic::Realm, None)?;
            }
            Ok(created)
        })
    }

    fn realm_names(&self) -> Result<Vec<String>> {
        query_all(&self.db.conn(), "SELECT name FROM realms ORDER BY name", [], |r| r.get(0))
    }

    fn create_realm(&self, name: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let created = insert_realm(tx, name, settings, audit.at)?;
            if created {
                record(tx, name, audit)?;
                record_change(tx, name, ChangeTopic::Realm, None)?;
            }
            Ok(created)
        })
    }

    fn set_realm_settings(&self, realm: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(tx, "UPDATE realms SET settings = ?2 WHERE name = ?1", params![realm, settings])?;
            if n == 1 {
                record(tx, realm, audit)?;
                record_change(tx, realm, ChangeTopic::Realm, None)?;
            }
            Ok(n == 1)
        })
    }

    /// Every table of a realm's rows declares `ON DELETE CASCADE` from the
    /// realm (migration 13), so deleting the realm's row deletes them all,
    /// a table added later included.
    fn delete_realm(&self, name: &str, audit: &AuditEntry) -> Result<bool> {
        let deleted = self.db.write(|tx| {
            let Some(id) =
                query_opt(tx, "SELECT id FROM realms WHERE name = ?1", [name], |r| r.get::<_, Option<String>>(0))?
            else {
                return Ok(None);
            };
            // Recorded first, while the entry can still name the realm's id.
            record(tx, name, audit)?;
            execute(tx, "DELETE FROM realms WHERE name = ?1", [name])?;
            record_change(tx, name, ChangeTopic::Realm, None)?;
            // Artifacts are shared by hash across realms: those whose last
            // version went with the realm go now.
            delete_unused_artifacts(tx)?;
            Ok(Some(id))
        });
        // Its clients went by cascade, past the cache: forget them there.
        self.clients.forget_realm(name);
        let Some(id) = deleted? else { return Ok(false) };
        // Its decisions are in their own database; should this fail, the
        // next sweep takes them.
        if let Some(id) = id
            && let Err(e) = self.forget_decisions(&id)
        {
            tracing::warn!(realm = name, "deleting the decisions of a deleted realm: {e}");
        }
        Ok(true)
    }

    fn create_realm_admin(&self, admin: &RealmAdmin, token_hash: &[u8], audit: &AuditEntry) -> Result<()> {
        self.db.write(|tx| {
            execute(
                tx,
                "INSERT INTO realm_admins (realm, id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![admin.realm, admin.id, admin.name, token_hash, admin.created_at],
            )?;
            record(tx, &admin.realm, audit)
        })
    }

    fn realm_admins(&self, realm: &str) -> Result<Vec<RealmAdmin>> {
        query_all(
            &self.db.conn(),
            "SELECT realm, id, name, created_at FROM realm_admins WHERE realm = ?1 ORDER BY created_at, id",
            [realm],
            admin_row,
        )
    }

    fn realm_admin_by_token(&self, token_hash: &[u8]) -> Result<Option<RealmAdmin>> {
        query_opt(
            &self.db.conn(),
            "SELECT realm, id, name, created_at FROM realm_admins WHERE token_hash = ?1",
            [token_hash],
            admin_row,
        )
    }

    fn delete_realm_admin(&self, realm: &str, id: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(tx, "DELETE FROM realm_admins WHERE realm = ?1 AND id = ?2", [realm, id])?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use agentauth_core::Algorithm;

    use super::*;
    use crate::engine::{exists, query_row};
    use crate::prelude::*;
    use crate::{KeyRow, Lineage, NewToken, TokenKind};
    use agentauth_store_conformance::fixtures::{audit, authorization_code, client_row, consent, pushed, user_row};

    /// Tables whose rows outlive their realm: its audit log, and the changes
    /// other processes follow (its deletion among them).
    const OUTLIVE_THE_REALM: [&str; 2] = ["audit", "changes"];

    /// The tables that hold rows of a realm: every table with a `realm`
    /// column, as the schema has them now.
    fn realm_tables(conn: &Connection) -> Vec<String> {
        query_all(
            conn,
            "SELECT m.name FROM sqlite_master m
             WHERE m.type = 'table' AND EXISTS (SELECT 1 FROM pragma_table_info(m.name) c WHERE c.name = 'realm')
             ORDER BY m.name",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn rows_of(conn: &Connection, table: &str, realm: &str) -> i64 {
        query_row(conn, &format!("SELECT COUNT(*) FROM {table} WHERE realm = ?1"), [realm], |r| r.get(0)).unwrap()
    }

    /// Something in every table of a realm's rows.
    fn fill(store: &Store, realm: &str) {
        assert!(store.create_realm(realm, "{}", &audit("create-realm")).unwrap());
        store.insert_client(realm, &client_row("c1"), u64::MAX).unwrap();
        let key = KeyRow { alg: Algorithm::EdDsa, pkcs8: vec![1], created_at: 0, signs_from: 0, retires_at: None };
        store.insert_first_key(realm, &key).unwrap();
        let component = format!("component of {realm}");
        store.push_plugin(realm, &pushed("p", realm, component.as_bytes()), &audit("push")).unwrap();
        let hash = |what: &str| format!("{realm}-{what}").into_bytes();
        let (jwt, refresh) = (hash("jwt"), hash("refresh"));
        let token = |hash, family, kind| NewToken { hash, client_id: "c1", family, kind, grant: "j1", expires_at: 9 };
        store.insert_tokens(realm, &[token(&jwt, Some("f1"), TokenKind::Jwt)]).unwrap();
        let lineage = Lineage {
            family: "f2",
            parent_jti: "j1",
            parent_hash: None,
            parent_family: Some("f1"),
            parent_client: "c1",
            expires_at: 9,
        };
        let derived = [token(&refresh, Some("f2"), TokenKind::Refresh)];
        assert!(store.insert_derived_family(realm, &lineage, &derived).unwrap());
        store.revoke_jwt(realm, "another-jti", 9).unwrap();
        assert!(store.use_assertion_jti(realm, "c1", "assertion-jti", 9).unwrap());
        let admin = RealmAdmin { realm: realm.into(), id: "a1".into(), name: "ops".into(), created_at: 0 };
        store.create_realm_admin(&admin, &hash("admin"), &audit("create-admin")).unwrap();
        let plugin = crate::PluginUse { name: "p".into(), version: 1, sha256: "s".into(), outcome: "allowed".into() };
        let decision = crate::Decision { plugins: vec![plugin], outcome: "allowed".into(), ..Default::default() };
        assert_eq!(store.record_decisions(&[(realm.to_string(), decision)]).unwrap(), 1);
        let subject = format!("usr_{realm}");
        assert!(store.create_user(realm, &user_row(&subject, "alice"), &audit("create-user")).unwrap());
        store.insert_code(realm, &hash("code"), &authorization_code("c1", &subject)).unwrap();
        store.save_consent(realm, &consent(&subject, "c1", 0)).unwrap();
        store.set_event_cursor(realm, "https://receiver.example/events", 1).unwrap();
    }

    #[test]
    fn deleting_a_realm_leaves_no_row_of_it_in_any_table() {
        let store = Store::open_in_memory().unwrap();
        fill(&store, "alpha");
        fill(&store, "beta");
        let conn = store.db.conn();
        let tables = realm_tables(&conn);
        for table in &tables {
            assert!(rows_of(&conn, table, "alpha") > 0, "the test stores nothing in {table}");
        }
        drop(conn);

        assert!(store.delete_realm("alpha", &audit("delete-realm")).unwrap());
        assert!(!store.delete_realm("alpha", &audit("delete-realm")).unwrap(), "already gone");

        let conn = store.db.conn();
        assert_eq!(realm_tables(&conn), tables);
        for table in tables.iter().filter(|t| !OUTLIVE_THE_REALM.contains(&t.as_str())) {
            assert_eq!(rows_of(&conn, table, "alpha"), 0, "{table} keeps rows of the deleted realm");
            assert!(rows_of(&conn, table, "beta") > 0, "{table} lost rows of another realm");
        }
        // The log stays, under the deleted realm's id, ending with its deletion.
        let kept = query_row(
            &conn,
            "SELECT COUNT(*), MAX(id) = (SELECT MAX(id) FROM audit WHERE realm = 'alpha' AND action = 'delete-realm')
             FROM audit WHERE realm = 'alpha' AND realm_id IS NOT NULL",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, bool>(1)?)),
        )
        .unwrap();
        assert_eq!(kept, (5, true));
        drop(conn);
        // Compiled code of no stored version goes; what another realm uses stays.
        assert_eq!(store.plugin_artifact_hashes().unwrap(), ["beta"]);
    }

    #[test]
    fn every_table_of_a_realms_rows_cascades_from_the_realm() {
        let store = Store::open_in_memory().unwrap();
        let conn = store.db.conn();
        for table in realm_tables(&conn).iter().filter(|t| !OUTLIVE_THE_REALM.contains(&t.as_str())) {
            let cascades = exists(
                &conn,
                "SELECT EXISTS (SELECT 1 FROM pragma_foreign_key_list(?1)
                 WHERE \"table\" = 'realms' AND \"from\" = 'realm' AND \"to\" = 'name' AND on_delete = 'CASCADE')",
                [table],
            )
            .unwrap();
            assert!(cascades, "{table} has no ON DELETE CASCADE from realms (name)");
        }
    }
}
