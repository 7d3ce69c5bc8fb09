//! Realms, their settings and their admins.
//!
//! A realm is the unit of tenancy: everything else stored (clients, keys,
//! plugins, tokens) belongs to one, and goes with it. Its settings are
//! JSON the server interprets; the store keeps them whole.

use rusqlite::{Connection, params};

use crate::audit::{AuditEntry, record};
use crate::engine::{execute, exists, query_all, query_opt};
use crate::plugins::delete_unused_artifacts;
use crate::{Result, Store};

/// A realm's stored configuration, as JSON the server interprets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmRow {
    pub name: String,
    pub settings: String,
}

/// A credential that administers one realm. Its token is only ever
/// stored as a keyed hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmAdmin {
    pub realm: String,
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

impl RealmAdmin {
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self { realm: row.get(0)?, id: row.get(1)?, name: row.get(2)?, created_at: row.get(3)? })
    }
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

impl Store {
    pub fn realm(&self, name: &str) -> Result<Option<RealmRow>> {
        query_opt(&self.db.conn(), "SELECT name, settings FROM realms WHERE name = ?1", [name], |r| {
            Ok(RealmRow { name: r.get(0)?, settings: r.get(1)? })
        })
    }

    /// Creates the realm unless it exists; returns whether it was created.
    pub fn create_realm_if_absent(&self, name: &str, settings: &str, now: i64) -> Result<bool> {
        self.db.write(|tx| insert_realm(tx, name, settings, now))
    }

    /// Every realm's name, sorted.
    pub fn realm_names(&self) -> Result<Vec<String>> {
        query_all(&self.db.conn(), "SELECT name FROM realms ORDER BY name", [], |r| r.get(0))
    }

    /// Creates a realm, recording `audit`; false if it exists.
    pub fn create_realm(&self, name: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let created = insert_realm(tx, name, settings, audit.at)?;
            if created {
                record(tx, name, audit)?;
            }
            Ok(created)
        })
    }

    /// Replaces the realm's settings JSON, recording `audit`.
    pub fn set_realm_settings(&self, realm: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(tx, "UPDATE realms SET settings = ?2 WHERE name = ?1", params![realm, settings])?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }

    /// Deletes a realm and everything in it (clients, keys, plugins and
    /// the compiled artifacts no other realm uses, tokens); false if there
    /// was no such realm. Its audit log stays, under the deleted realm's
    /// identity: a realm created later under the same name starts a log of
    /// its own.
    pub fn delete_realm(&self, name: &str, audit: &AuditEntry) -> Result<bool> {
        let deleted = self.db.write(|tx| {
            if !exists(tx, "SELECT EXISTS (SELECT 1 FROM realms WHERE name = ?1)", [name])? {
                return Ok(false);
            }
            // Recorded first, while the entry can still name the realm's id.
            record(tx, name, audit)?;
            for table in
                ["tokens", "clients", "signing_keys", "plugins", "revoked_jwts", "client_assertions", "realm_admins"]
            {
                execute(tx, &format!("DELETE FROM {table} WHERE realm = ?1"), [name])?;
            }
            delete_unused_artifacts(tx)?;
            execute(tx, "DELETE FROM realms WHERE name = ?1", [name])?;
            Ok(true)
        });
        self.forget_clients(name, None);
        deleted
    }

    /// Adds a realm admin, whose token has the keyed hash `token_hash`.
    pub fn create_realm_admin(&self, admin: &RealmAdmin, token_hash: &[u8], audit: &AuditEntry) -> Result<()> {
        self.db.write(|tx| {
            execute(
                tx,
                "INSERT INTO realm_admins (realm, id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![admin.realm, admin.id, admin.name, token_hash, admin.created_at],
            )?;
            record(tx, &admin.realm, audit)
        })
    }

    /// The realm's admins, oldest first.
    pub fn realm_admins(&self, realm: &str) -> Result<Vec<RealmAdmin>> {
        query_all(
            &self.db.conn(),
            "SELECT realm, id, name, created_at FROM realm_admins WHERE realm = ?1 ORDER BY created_at, id",
            [realm],
            RealmAdmin::from_row,
        )
    }

    /// The realm admin whose token has this keyed hash.
    pub fn realm_admin_by_token(&self, token_hash: &[u8]) -> Result<Option<RealmAdmin>> {
        query_opt(
            &self.db.conn(),
            "SELECT realm, id, name, created_at FROM realm_admins WHERE token_hash = ?1",
            [token_hash],
            RealmAdmin::from_row,
        )
    }

    /// Removes a realm admin; false if there was none with that id.
    pub fn delete_realm_admin(&self, realm: &str, id: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(tx, "DELETE FROM realm_admins WHERE realm = ?1 AND id = ?2", [realm, id])?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }
}
