//! Realms, their settings and their admins.
//!
//! A realm is the unit of tenancy: everything else stored (clients, keys,
//! plugins, tokens) belongs to one, and goes with it, by the schema's
//! cascades. Its settings are JSON the server interprets; the store keeps
//! them whole. Creating, deleting a realm or replacing its settings is a
//! change replicas follow.

use agentauth_core::ports::{AuditEntry, ChangeTopic, RealmAdmin, RealmRepository, RealmRow, Result};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStore;
use crate::audit::record;
use crate::coordination::record_change;
use crate::db::{conn, execute, get, query, query_opt, transaction};
use crate::plugins::delete_unused_artifacts;

fn admin_row(r: &Row) -> Result<RealmAdmin> {
    Ok(RealmAdmin { realm: get(r, 0)?, id: get(r, 1)?, name: get(r, 2)?, created_at: get(r, 3)? })
}

/// Inserts a realm with a fresh identity unless one of that name exists;
/// whether it did (and then records the change).
async fn insert_realm<C: GenericClient + ?Sized>(tx: &C, name: &str, settings: &str, now: i64) -> Result<bool> {
    let n = execute(
        tx,
        "INSERT INTO realms (name, settings, created_at, id)
         VALUES ($1, $2, $3, replace(gen_random_uuid()::TEXT, '-', ''))
         ON CONFLICT (name) DO NOTHING",
        &[&name, &settings, &now],
    )
    .await?;
    Ok(n == 1)
}

impl RealmRepository for PgStore {
    fn realm(&self, name: &str) -> Result<Option<RealmRow>> {
        let (pool, name) = (self.db.pool.clone(), name.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(&c, "SELECT name, settings FROM realms WHERE name = $1", &[&name]).await?;
            row.map(|r| Ok(RealmRow { name: get(&r, 0)?, settings: get(&r, 1)? })).transpose()
        })
    }

    fn create_realm_if_absent(&self, name: &str, settings: &str, now: i64) -> Result<bool> {
        let (pool, name, settings) = (self.db.pool.clone(), name.to_owned(), settings.to_owned());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let created = insert_realm(&tx, &name, &settings, now).await?;
                if created {
                    record_change(&tx, &name, ChangeTopic::Realm, None).await?;
                }
                created
            })
        })
    }

    fn realm_names(&self) -> Result<Vec<String>> {
        let pool = self.db.pool.clone();
        self.db.run(async move {
            let c = conn(&pool).await?;
            query(&c, "SELECT name FROM realms ORDER BY name", &[]).await?.iter().map(|r| get(r, 0)).collect()
        })
    }

    fn create_realm(&self, name: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        let (pool, name, settings, audit) = (self.db.pool.clone(), name.to_owned(), settings.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let created = insert_realm(&tx, &name, &settings, audit.at).await?;
                if created {
                    record(&tx, &name, &audit).await?;
                    record_change(&tx, &name, ChangeTopic::Realm, None).await?;
                }
                created
            })
        })
    }

    fn set_realm_settings(&self, realm: &str, settings: &str, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, settings, audit) =
            (self.db.pool.clone(), realm.to_owned(), settings.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(&tx, "UPDATE realms SET settings = $2 WHERE name = $1", &[&realm, &settings]).await?;
                if n == 1 {
                    record(&tx, &realm, &audit).await?;
                    record_change(&tx, &realm, ChangeTopic::Realm, None).await?;
                }
                n == 1
            })
        })
    }

    /// Every table of a realm's rows declares `ON DELETE CASCADE` from the
    /// realm, so deleting the realm's row deletes them all, a table added
    /// later included.
    fn delete_realm(&self, name: &str, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, audit) = (self.db.pool.clone(), name.to_owned(), audit.clone());
        let deleted = self.db.run(async move {
            transaction!(&pool, |tx| {
                // Locked, so that the entry recorded first (while it can
                // still name the realm's id) is for the realm deleted.
                let exists = query_opt(&tx, "SELECT 1 FROM realms WHERE name = $1 FOR UPDATE", &[&realm]).await?;
                if exists.is_some() {
                    record(&tx, &realm, &audit).await?;
                    execute(&tx, "DELETE FROM realms WHERE name = $1", &[&realm]).await?;
                    // Artifacts are shared by hash across realms: those whose
                    // last version went with the realm go now.
                    delete_unused_artifacts(&tx).await?;
                    record_change(&tx, &realm, ChangeTopic::Realm, None).await?;
                }
                exists.is_some()
            })
        });
        // Its clients went by cascade, past the cache: forget them there.
        self.clients.forget_realm(name);
        deleted
    }

    fn create_realm_admin(&self, admin: &RealmAdmin, token_hash: &[u8], audit: &AuditEntry) -> Result<()> {
        let (pool, admin, token_hash, audit) =
            (self.db.pool.clone(), admin.clone(), token_hash.to_vec(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                execute(
                    &tx,
                    "INSERT INTO realm_admins (realm, id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
                    &[&admin.realm, &admin.id, &admin.name, &token_hash, &admin.created_at],
                )
                .await?;
                record(&tx, &admin.realm, &audit).await?;
            })
        })
    }

    fn realm_admins(&self, realm: &str) -> Result<Vec<RealmAdmin>> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT realm, id, name, created_at FROM realm_admins WHERE realm = $1 ORDER BY created_at, id",
                &[&realm],
            )
            .await?;
            rows.iter().map(admin_row).collect()
        })
    }

    fn realm_admin_by_token(&self, token_hash: &[u8]) -> Result<Option<RealmAdmin>> {
        let (pool, token_hash) = (self.db.pool.clone(), token_hash.to_vec());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(
                &c,
                "SELECT realm, id, name, created_at FROM realm_admins WHERE token_hash = $1",
                &[&token_hash],
            )
            .await?;
            row.as_ref().map(admin_row).transpose()
        })
    }

    fn delete_realm_admin(&self, realm: &str, id: &str, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, id, audit) = (self.db.pool.clone(), realm.to_owned(), id.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(&tx, "DELETE FROM realm_admins WHERE realm = $1 AND id = $2", &[&realm, &id]).await?;
                if n == 1 {
                    record(&tx, &realm, &audit).await?;
                }
                n == 1
            })
        })
    }
}
