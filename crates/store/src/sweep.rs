//! Housekeeping: deleting what can no longer matter. It spans aggregates
//! (tokens, revocations, keys, compiled plugins), so it lives apart from
//! each of them and runs as one write.

use crate::engine::execute;
use crate::plugins::delete_unused_artifacts;
use crate::{Result, Store};

impl Store {
    /// Deletes what can no longer matter: expired server-side tokens,
    /// revoked JWT ids and client assertion ids past their expiry, keys
    /// retired from the JWKS, and compiled artifacts of components no
    /// stored version has (one compiled for a version deleted meanwhile).
    /// Returns how many rows went.
    pub fn sweep(&self, now: i64) -> Result<usize> {
        self.db.write(|tx| {
            let mut n = 0;
            n += execute(tx, "DELETE FROM tokens WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM revoked_jwts WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM client_assertions WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM token_lineage WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM signing_keys WHERE retires_at IS NOT NULL AND retires_at <= ?1", [now])?;
            n += delete_unused_artifacts(tx)?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewToken, TokenKind};

    #[test]
    fn a_sweep_removes_only_what_has_expired() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let token = |hash, expires_at| NewToken {
            hash,
            client_id: "c",
            family: None,
            kind: TokenKind::Access,
            grant: "{}",
            expires_at,
        };
        store.insert_tokens("alpha", &[token(b"old", 10), token(b"live", 100)]).unwrap();
        store.revoke_jwt("alpha", "j-old", 10).unwrap();
        store.revoke_jwt("alpha", "j-live", 100).unwrap();
        assert_eq!(store.sweep(50).unwrap(), 2);
        assert!(store.token(b"live", "alpha", TokenKind::Access, 50).unwrap().is_some());
        assert!(store.is_jwt_revoked("alpha", "j-live").unwrap());
        assert!(!store.is_jwt_revoked("alpha", "j-old").unwrap());
    }
}
