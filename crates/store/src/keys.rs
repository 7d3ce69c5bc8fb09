//! A realm's signing keys: the first one, made on first use, and the
//! rotations after it.
//!
//! Private keys arrive sealed with the master key (the `jose` crate does
//! that); the store keeps the bytes and the schedule: when a key starts
//! signing and when it leaves the JWKS.

use agentauth_core::Algorithm;
use rusqlite::params;

use crate::audit::record;
use crate::coordination::record_change;
use crate::engine::{execute, query_all, query_opt};
use crate::stored::Stored;
use crate::{AuditEntry, ChangeTopic, KeyRepository, KeyRow, Result, Store};

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
    Ok(KeyRow {
        alg: r.get::<_, Stored<Algorithm>>(0)?.0,
        pkcs8: r.get(1)?,
        created_at: r.get(2)?,
        signs_from: r.get(3)?,
        retires_at: r.get(4)?,
    })
}

const INSERT_KEY: &str =
    "INSERT INTO signing_keys (realm, alg, pkcs8, created_at, signs_from) VALUES (?1, ?2, ?3, ?4, ?5)";

impl KeyRepository for Store {
    fn keys(&self, realm: &str) -> Result<Vec<KeyRow>> {
        query_all(
            &self.db.conn(),
            "SELECT alg, pkcs8, created_at, COALESCE(signs_from, created_at), retires_at FROM signing_keys
             WHERE realm = ?1 ORDER BY created_at DESC, rowid DESC",
            [realm],
            key_row,
        )
    }

    fn rotate_key(&self, realm: &str, key: &KeyRow, old_retire_at: i64, audit: &AuditEntry) -> Result<()> {
        self.db.write(|tx| {
            execute(
                tx,
                "UPDATE signing_keys SET retires_at = ?2 WHERE realm = ?1 AND retires_at IS NULL",
                params![realm, old_retire_at],
            )?;
            execute(tx, INSERT_KEY, params![realm, key.alg.as_str(), key.pkcs8, key.created_at, key.signs_from])?;
            record_change(tx, realm, ChangeTopic::Keys, None)?;
            record(tx, realm, audit)
        })
    }

    fn insert_first_key(&self, realm: &str, key: &KeyRow) -> Result<KeyRow> {
        self.db.write(|tx| {
            let existing = query_opt(
                tx,
                "SELECT alg, pkcs8, created_at, COALESCE(signs_from, created_at), retires_at FROM signing_keys
                 WHERE realm = ?1 ORDER BY COALESCE(signs_from, created_at) DESC, rowid DESC LIMIT 1",
                [realm],
                key_row,
            )?;
            if let Some(existing) = existing {
                return Ok(existing);
            }
            execute(tx, INSERT_KEY, params![realm, key.alg.as_str(), key.pkcs8, key.created_at, key.signs_from])?;
            record_change(tx, realm, ChangeTopic::Keys, None)?;
            Ok(key.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::prelude::*;

    #[test]
    fn a_key_of_an_unknown_algorithm_is_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let sql = "INSERT INTO signing_keys (realm, alg, pkcs8, created_at, signs_from) VALUES ('alpha', 'HS256', x'00', 0, 0)";
        assert_eq!(store.db.write(|c| execute(c, sql, [])).unwrap(), 1);
        let e = store.keys("alpha").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("unknown signing algorithm \"HS256\""), "{e}");
    }
}
