//! Server-side tokens and what ends them: opaque access tokens, refresh
//! token families and their rotation, the JWTs issued in a family, the
//! lineage of families derived by token exchange, revoked JWT ids, and
//! client assertion ids seen (so each assertion is used once).
//!
//! Tokens are found by keyed hash; the grant each carries is JSON (or a
//! JWT's `jti`) the server interprets. Revoking anything revokes, in the
//! same commit, every family derived from it.

use rusqlite::{Connection, params};

use crate::clients::CLIENT_EXISTS;
use crate::engine::{execute, exists, query_all, query_opt, query_row};
use crate::stored::Stored;
use crate::{AuditEntry, Lineage, NewToken, Result, Rotation, Store, TokenKind, TokenRepository, TokenRow};

/// Whether a JWT was revoked, by (realm, jti).
const JWT_REVOKED: &str = "SELECT EXISTS (SELECT 1 FROM revoked_jwts WHERE realm = ?1 AND jti = ?2)";
/// Deletes one server-side token, by (hash, realm).
const DELETE_TOKEN: &str = "DELETE FROM tokens WHERE hash = ?1 AND realm = ?2";

impl TokenRepository for Store {
    fn insert_tokens(&self, realm: &str, tokens: &[NewToken<'_>]) -> Result<()> {
        self.db.write(|tx| tokens.iter().try_for_each(|t| insert_token(tx, realm, t)))
    }

    fn insert_derived_family(&self, realm: &str, lineage: &Lineage<'_>, tokens: &[NewToken<'_>]) -> Result<bool> {
        self.db.write(|tx| {
            let parent_revoked = exists(tx, JWT_REVOKED, params![realm, lineage.parent_jti])?;
            let parent_row_live = match lineage.parent_hash {
                Some(hash) => exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE realm = ?1 AND hash = ?2)",
                    params![realm, hash],
                )?,
                None => true,
            };
            let parent_family_live = match lineage.parent_family {
                Some(family) => exists(
                    tx,
                    "SELECT EXISTS (SELECT 1 FROM tokens WHERE realm = ?1 AND family = ?2)",
                    params![realm, family],
                )?,
                None => true,
            };
            let parent_client_live = exists(tx, CLIENT_EXISTS, params![realm, lineage.parent_client])?;
            if parent_revoked || !parent_row_live || !parent_family_live || !parent_client_live {
                return Ok(false);
            }
            execute(
                tx,
                "INSERT INTO token_lineage (realm, family, parent_jti, parent_family, parent_client, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    realm,
                    lineage.family,
                    lineage.parent_jti,
                    lineage.parent_family,
                    lineage.parent_client,
                    lineage.expires_at
                ],
            )?;
            tokens.iter().try_for_each(|t| insert_token(tx, realm, t))?;
            Ok(true)
        })
    }

    fn token(&self, hash: &[u8], realm: &str, kind: TokenKind, now: i64) -> Result<Option<String>> {
        Ok(self.token_row(hash, realm, now)?.filter(|row| row.kind == kind).map(|row| row.grant))
    }

    fn token_row(&self, hash: &[u8], realm: &str, now: i64) -> Result<Option<TokenRow>> {
        let row = query_opt(
            &self.db.conn(),
            "SELECT kind, grant_json, client_id, family, used_at, expires_at FROM tokens
             WHERE hash = ?1 AND realm = ?2 AND expires_at > ?3",
            params![hash, realm, now],
            |r| {
                Ok((
                    r.get::<_, Stored<TokenKind>>(0)?.0,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )?;
        let Some((kind, grant, client_id, family, used_at, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(TokenRow { kind, grant, client_id, family, used: used_at.is_some(), expires_at }))
    }

    fn count_tokens(&self, realm: &str, kind: TokenKind) -> Result<i64> {
        query_row(
            &self.db.conn(),
            "SELECT COUNT(*) FROM tokens WHERE realm = ?1 AND kind = ?2",
            params![realm, kind.as_str()],
            |r| r.get(0),
        )
    }

    fn live_token_counts(&self, realm: &str, client_ids: &[String], now: i64) -> Result<Vec<(String, i64)>> {
        // The ids as one JSON array, so the statement is always the same.
        let ids = serde_json::to_string(client_ids).unwrap_or_else(|_| "[]".into());
        query_all(
            &self.db.conn(),
            "SELECT client_id, COUNT(*) FROM tokens
             WHERE realm = ?1 AND client_id IN (SELECT value FROM json_each(?2))
               AND expires_at > ?3 AND (kind <> 'refresh' OR used_at IS NULL)
             GROUP BY client_id ORDER BY client_id",
            params![realm, ids, now],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    fn rotate_token(
        &self,
        realm: &str,
        old_hash: &[u8],
        successors: &[NewToken<'_>],
        now: i64,
        reused: &AuditEntry,
    ) -> Result<Rotation> {
        self.db.write(|tx| {
            let found: Option<(Option<i64>, Option<String>)> = query_opt(
                tx,
                "SELECT used_at, family FROM tokens WHERE hash = ?1 AND realm = ?2 AND kind = 'refresh' AND expires_at > ?3",
                params![old_hash, realm, now],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            match found {
                None => Ok(Rotation::Unknown),
                Some((Some(_), family)) => {
                    let revoked = match family {
                        Some(family) => revoke_family(tx, realm, &family)?,
                        None => execute(tx, DELETE_TOKEN, params![old_hash, realm])?,
                    };
                    if revoked > 0 {
                        crate::audit::record(tx, realm, reused)?;
                    }
                    Ok(Rotation::Reused)
                }
                Some((None, _)) => {
                    execute(
                        tx,
                        "UPDATE tokens SET used_at = ?3 WHERE hash = ?1 AND realm = ?2",
                        params![old_hash, realm, now],
                    )?;
                    successors.iter().try_for_each(|t| insert_token(tx, realm, t))?;
                    Ok(Rotation::Rotated)
                }
            }
        })
    }

    fn revoke_token(&self, realm: &str, hash: &[u8], family: Option<&str>, audit: Option<&AuditEntry>) -> Result<()> {
        self.db.write(|tx| {
            let revoked = match family {
                Some(family) => revoke_family(tx, realm, family)?,
                None => execute(tx, DELETE_TOKEN, params![hash, realm])?,
            };
            if let Some(entry) = audit.filter(|_| revoked > 0) {
                crate::audit::record(tx, realm, entry)?;
            }
            Ok(())
        })
    }

    fn revoke_opaque(&self, realm: &str, hash: &[u8], jti: &str) -> Result<()> {
        self.db.write(|tx| {
            execute(tx, DELETE_TOKEN, params![hash, realm])?;
            revoke_derived_from_token(tx, realm, jti)
        })
    }

    fn revoke_jwt(&self, realm: &str, jti: &str, expires_at: i64) -> Result<()> {
        self.db.write(|tx| {
            execute(
                tx,
                "INSERT OR IGNORE INTO revoked_jwts (realm, jti, expires_at) VALUES (?1, ?2, ?3)",
                params![realm, jti, expires_at],
            )?;
            revoke_derived_from_token(tx, realm, jti)
        })
    }

    fn is_jwt_revoked(&self, realm: &str, jti: &str) -> Result<bool> {
        exists(&self.db.conn(), JWT_REVOKED, params![realm, jti])
    }

    fn use_assertion_jti(&self, realm: &str, client_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(
                tx,
                "INSERT OR IGNORE INTO client_assertions (realm, client_id, jti, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![realm, client_id, jti, expires_at],
            )?;
            Ok(n == 1)
        })
    }
}

fn insert_token(tx: &Connection, realm: &str, t: &NewToken<'_>) -> Result<()> {
    execute(
        tx,
        "INSERT INTO tokens (hash, realm, kind, grant_json, expires_at, client_id, family)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![t.hash, realm, t.kind.as_str(), t.grant, t.expires_at, t.client_id, t.family],
    )?;
    Ok(())
}

/// Ends a token family and, transitively, every family derived from it:
/// their JWTs are recorded as revoked, their server-side tokens deleted.
/// Revokes the family `family` and those derived from it; how many
/// tokens that deleted.
fn revoke_family(tx: &Connection, realm: &str, family: &str) -> Result<usize> {
    let mut pending = vec![family.to_string()];
    let mut revoked = 0;
    while let Some(family) = pending.pop() {
        execute(
            tx,
            "INSERT OR IGNORE INTO revoked_jwts (realm, jti, expires_at)
             SELECT realm, grant_json, expires_at FROM tokens WHERE realm = ?1 AND family = ?2 AND kind = 'jwt'",
            params![realm, family],
        )?;
        revoked += execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND family = ?2", params![realm, family])?;
        pending.extend(derived_families(
            tx,
            "SELECT family FROM token_lineage WHERE realm = ?1 AND parent_family = ?2",
            realm,
            &family,
        )?);
        execute(tx, "DELETE FROM token_lineage WHERE realm = ?1 AND family = ?2", params![realm, family])?;
    }
    Ok(revoked)
}

/// Revokes every family derived from the token `jti`.
fn revoke_derived_from_token(tx: &Connection, realm: &str, jti: &str) -> Result<()> {
    let sql = "SELECT family FROM token_lineage WHERE realm = ?1 AND parent_jti = ?2";
    derived_families(tx, sql, realm, jti)?.iter().try_for_each(|family| revoke_family(tx, realm, family).map(drop))
}

/// Revokes every family derived from a token of the client `client_id`.
pub(crate) fn revoke_derived_from_client(tx: &Connection, realm: &str, client_id: &str) -> Result<()> {
    let sql = "SELECT family FROM token_lineage WHERE realm = ?1 AND parent_client = ?2";
    derived_families(tx, sql, realm, client_id)?
        .iter()
        .try_for_each(|family| revoke_family(tx, realm, family).map(drop))
}

fn derived_families(tx: &Connection, sql: &str, realm: &str, parent: &str) -> Result<Vec<String>> {
    query_all(tx, sql, params![realm, parent], |r| r.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::prelude::*;

    #[test]
    fn a_token_of_unknown_kind_is_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let sql =
            "INSERT INTO tokens (hash, realm, kind, grant_json, expires_at) VALUES (x'01', 'alpha', 'bogus', '{}', 9)";
        assert_eq!(store.db.write(|c| execute(c, sql, [])).unwrap(), 1);
        let e = store.token_row(&[1], "alpha", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
}
