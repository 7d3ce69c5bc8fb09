//! A realm's signing keys: the first one, made on first use, and the
//! rotations after it.
//!
//! Private keys arrive sealed with the master key (the `jose` crate does
//! that); the store keeps the bytes and the schedule: when a key starts
//! signing and when it leaves the JWKS.

use agentauth_core::Algorithm;
use rusqlite::params;

use crate::audit::{AuditEntry, record};
use crate::engine::{execute, query_all, query_opt};
use crate::stored::Stored;
use crate::{Result, Store};

/// A stored signing key. The private key is PKCS#8.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub alg: Algorithm,
    pub pkcs8: Vec<u8>,
    pub created_at: i64,
    /// When the key starts signing: after it has been published long
    /// enough for resource servers to have fetched it.
    pub signs_from: i64,
    /// When the key leaves the JWKS: once every token it signed expired.
    pub retires_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("signs_from", &self.signs_from)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

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

impl Store {
    /// The realm's signing keys, newest first.
    pub fn keys(&self, realm: &str) -> Result<Vec<KeyRow>> {
        query_all(
            &self.db.conn(),
            "SELECT alg, pkcs8, created_at, COALESCE(signs_from, created_at), retires_at FROM signing_keys
             WHERE realm = ?1 ORDER BY created_at DESC, rowid DESC",
            [realm],
            key_row,
        )
    }

    /// Adds a rotated-in key, and schedules every key not yet retiring to
    /// leave the JWKS at `old_retire_at`; records `audit`. One commit.
    pub fn rotate_key(&self, realm: &str, key: &KeyRow, old_retire_at: i64, audit: &AuditEntry) -> Result<()> {
        self.db.write(|tx| {
            execute(
                tx,
                "UPDATE signing_keys SET retires_at = ?2 WHERE realm = ?1 AND retires_at IS NULL",
                params![realm, old_retire_at],
            )?;
            execute(tx, INSERT_KEY, params![realm, key.alg.as_str(), key.pkcs8, key.created_at, key.signs_from])?;
            record(tx, realm, audit)
        })
    }

    /// Stores the realm's first signing key, unless another request stored
    /// one first; returns the realm's newest key either way, so concurrent
    /// first uses agree on one key.
    pub fn insert_first_key(&self, realm: &str, key: &KeyRow) -> Result<KeyRow> {
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
            Ok(key.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

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

    #[test]
    fn first_key_is_shared_by_racing_callers() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let a = KeyRow { alg: Algorithm::Es256, pkcs8: vec![1], created_at: 1, signs_from: 1, retires_at: None };
        let b = KeyRow { alg: Algorithm::Es256, pkcs8: vec![2], created_at: 1, signs_from: 1, retires_at: None };
        assert_eq!(store.insert_first_key("alpha", &a).unwrap(), a);
        assert_eq!(store.insert_first_key("alpha", &b).unwrap(), a);
        assert_eq!(store.keys("alpha").unwrap(), vec![a.clone()]);
        // Rotation: the new key comes first; the old one is scheduled out.
        let c = KeyRow { alg: Algorithm::EdDsa, pkcs8: vec![3], created_at: 5, signs_from: 10, retires_at: None };
        store.rotate_key("alpha", &c, 100, &AuditEntry::default()).unwrap();
        let keys = store.keys("alpha").unwrap();
        assert_eq!(keys, vec![c, KeyRow { retires_at: Some(100), ..a }]);
    }
}
