//! A realm's signing keys: the first one, made on first use, and the
//! rotations after it.
//!
//! Private keys arrive sealed with the master key (the `jose` crate does
//! that); the store keeps the bytes and the schedule: when a key starts
//! signing and when it leaves the JWKS. Writes to a realm's keys lock the
//! realm's row first, so racing first uses (of any process) agree on one
//! key, and a rotation never interleaves with them. Each key stored is a
//! change replicas follow.

use agentauth_core::Algorithm;
use agentauth_core::ports::{AuditEntry, ChangeTopic, KeyRepository, KeyRow, Result};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::PgStore;
use crate::audit::record;
use crate::coordination::record_change;
use crate::db::{conn, execute, get, named, query, query_opt, transaction};

fn key_row(r: &Row) -> Result<KeyRow> {
    Ok(KeyRow {
        alg: named(r, 0, "signing algorithm", Algorithm::parse)?,
        pkcs8: get(r, 1)?,
        created_at: get(r, 2)?,
        signs_from: get(r, 3)?,
        retires_at: get(r, 4)?,
    })
}

const INSERT_KEY: &str =
    "INSERT INTO signing_keys (realm, alg, pkcs8, created_at, signs_from) VALUES ($1, $2, $3, $4, $5)";

/// Locks the realm's row against other writers of its keys (and plugins),
/// leaving readers and inserts of its other rows free.
pub(crate) async fn lock_realm<C: GenericClient + ?Sized>(tx: &C, realm: &str) -> Result<()> {
    query_opt(tx, "SELECT 1 FROM realms WHERE name = $1 FOR NO KEY UPDATE", &[&realm]).await?;
    Ok(())
}

async fn insert_key<C: GenericClient + ?Sized>(tx: &C, realm: &str, key: &KeyRow) -> Result<()> {
    execute(tx, INSERT_KEY, &[&realm, &key.alg.as_str(), &key.pkcs8, &key.created_at, &key.signs_from]).await?;
    Ok(())
}

impl KeyRepository for PgStore {
    fn keys(&self, realm: &str) -> Result<Vec<KeyRow>> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT alg, pkcs8, created_at, signs_from, retires_at FROM signing_keys
                 WHERE realm = $1 ORDER BY created_at DESC, id DESC",
                &[&realm],
            )
            .await?;
            rows.iter().map(key_row).collect()
        })
    }

    fn rotate_key(&self, realm: &str, key: &KeyRow, old_retire_at: i64, audit: &AuditEntry) -> Result<()> {
        let (pool, realm, key, audit) = (self.db.pool.clone(), realm.to_owned(), key.clone(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_realm(&tx, &realm).await?;
                execute(
                    &tx,
                    "UPDATE signing_keys SET retires_at = $2 WHERE realm = $1 AND retires_at IS NULL",
                    &[&realm, &old_retire_at],
                )
                .await?;
                insert_key(&tx, &realm, &key).await?;
                record(&tx, &realm, &audit).await?;
                record_change(&tx, &realm, ChangeTopic::Keys, None).await?;
            })
        })
    }

    fn insert_first_key(&self, realm: &str, key: &KeyRow) -> Result<KeyRow> {
        let (pool, realm, key) = (self.db.pool.clone(), realm.to_owned(), key.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_realm(&tx, &realm).await?;
                let existing = query_opt(
                    &tx,
                    "SELECT alg, pkcs8, created_at, signs_from, retires_at FROM signing_keys
                     WHERE realm = $1 ORDER BY signs_from DESC, id DESC LIMIT 1",
                    &[&realm],
                )
                .await?;
                match existing {
                    Some(existing) => key_row(&existing)?,
                    None => {
                        insert_key(&tx, &realm, &key).await?;
                        record_change(&tx, &realm, ChangeTopic::Keys, None).await?;
                        key.clone()
                    }
                }
            })
        })
    }
}
