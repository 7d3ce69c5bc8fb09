//! Authorization codes, by keyed hash, and the consents users gave
//! clients.
//!
//! A code is redeemed in one write: the UPDATE that marks it used, and
//! records what it issued, matches only while it is unused, and writes run
//! one at a time on the writer connection (each seeing the writes before
//! it in the same batch), so of racing redemptions exactly one marks it;
//! the others read what that one recorded. A used code is kept, with its
//! issue, until it is swept after its expiry, so a replay in the meantime
//! finds what to revoke.
//!
//! Codes and consents go with their realm, their user and their client
//! (by the schema's cascades, migration 18). Resources are stored as a
//! JSON list; one that is not reads as corrupt. No other process caches
//! either, so their changes record no change for followers.

use rusqlite::params;
use rusqlite::types::Type;

use crate::engine::{execute, query_all, query_opt};
use crate::{
    AuthorizationCode, AuthorizationRepository, CodeIssue, Consent, Error, ErrorKind, Redemption, Result, Store,
};

/// The columns [`code_row`] reads, in order.
const CODE_COLUMNS: &str =
    "client_id, redirect_uri, code_challenge, subject, scope, resources, may_act, auth_time, created_at, expires_at,
     dpop_jkt";

/// The columns [`consent_row`] reads, in order.
const CONSENT_COLUMNS: &str = "subject, client_id, scope, resources, granted_at";

fn code_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        client_id: r.get(0)?,
        redirect_uri: r.get(1)?,
        code_challenge: r.get(2)?,
        subject: r.get(3)?,
        scope: r.get(4)?,
        resources: resources(r, 5)?,
        may_act: r.get(6)?,
        auth_time: r.get(7)?,
        created_at: r.get(8)?,
        expires_at: r.get(9)?,
        dpop_jkt: r.get(10)?,
    })
}

fn consent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Consent> {
    Ok(Consent {
        subject: r.get(0)?,
        client_id: r.get(1)?,
        scope: r.get(2)?,
        resources: resources(r, 3)?,
        granted_at: r.get(4)?,
    })
}

/// Column `i`, a stored JSON list of resources: anything else is a value
/// this store did not write, and reads as corrupt (see `error.rs`).
fn resources(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Vec<String>> {
    let json: String = r.get(i)?;
    serde_json::from_str(&json).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

/// A list of resources as stored.
fn resources_json(resources: &[String]) -> Result<String> {
    serde_json::to_string(resources)
        .map_err(|e| Error::new(ErrorKind::Other, "encoding a list of resources").with_source(e))
}

impl AuthorizationRepository for Store {
    /// Fails (Constraint) if the realm, the client or the user does not
    /// exist, or the realm has a code of that hash.
    fn insert_code(&self, realm: &str, hash: &[u8], code: &AuthorizationCode) -> Result<()> {
        let resources = resources_json(&code.resources)?;
        self.db.write(|tx| {
            execute(
                tx,
                "INSERT INTO authorization_codes (realm, hash, client_id, redirect_uri, code_challenge, subject, scope,
                                                  resources, may_act, auth_time, created_at, expires_at, dpop_jkt)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    realm,
                    hash,
                    code.client_id,
                    code.redirect_uri,
                    code.code_challenge,
                    code.subject,
                    code.scope,
                    resources,
                    code.may_act,
                    code.auth_time,
                    code.created_at,
                    code.expires_at,
                    code.dpop_jkt
                ],
            )?;
            Ok(())
        })
    }

    fn code(&self, realm: &str, hash: &[u8], now: i64) -> Result<Option<AuthorizationCode>> {
        query_opt(
            &self.db.conn(),
            &format!(
                "SELECT {CODE_COLUMNS} FROM authorization_codes
                 WHERE realm = ?1 AND hash = ?2 AND expires_at > ?3 AND used_at IS NULL"
            ),
            params![realm, hash, now],
            code_row,
        )
    }

    /// The check and the mark are one UPDATE, in one write: see the
    /// module's doc.
    fn redeem_code(&self, realm: &str, hash: &[u8], issue: &CodeIssue, now: i64) -> Result<Redemption> {
        self.db.write(|tx| {
            let n = execute(
                tx,
                "UPDATE authorization_codes SET used_at = ?3, family = ?4, jti = ?5, jti_expires_at = ?6,
                        expires_at = ?7
                 WHERE realm = ?1 AND hash = ?2 AND expires_at > ?3 AND used_at IS NULL",
                params![realm, hash, now, issue.family, issue.jti, issue.jti_expires_at, issue.family_expires_at],
            )?;
            if n == 1 {
                return Ok(Redemption::Redeemed);
            }
            // Redeemed before (expired since or not, until it is swept), or
            // no code of the realm that could be.
            let used = query_opt(
                tx,
                "SELECT family, jti, jti_expires_at, expires_at FROM authorization_codes
                 WHERE realm = ?1 AND hash = ?2 AND used_at IS NOT NULL",
                params![realm, hash],
                |r| {
                    Ok(CodeIssue {
                        family: r.get(0)?,
                        jti: r.get(1)?,
                        jti_expires_at: r.get(2)?,
                        family_expires_at: r.get(3)?,
                    })
                },
            )?;
            Ok(used.map_or(Redemption::Unknown, Redemption::Reused))
        })
    }

    fn sweep_codes(&self, before: i64) -> Result<usize> {
        self.db.write(|tx| execute(tx, "DELETE FROM authorization_codes WHERE expires_at <= ?1", [before]))
    }

    fn code_families(&self, realm: &str, subject: &str, client_id: Option<&str>) -> Result<Vec<String>> {
        query_all(
            &self.db.conn(),
            "SELECT family FROM authorization_codes
             WHERE realm = ?1 AND subject = ?2 AND (?3 IS NULL OR client_id = ?3) AND used_at IS NOT NULL
             ORDER BY used_at",
            params![realm, subject, client_id],
            |r| r.get(0),
        )
    }

    fn consent(&self, realm: &str, subject: &str, client_id: &str) -> Result<Option<Consent>> {
        query_opt(
            &self.db.conn(),
            &format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE realm = ?1 AND subject = ?2 AND client_id = ?3"),
            [realm, subject, client_id],
            consent_row,
        )
    }

    /// Fails (Constraint) if the realm, the client or the user does not
    /// exist.
    fn save_consent(&self, realm: &str, consent: &Consent) -> Result<()> {
        let resources = resources_json(&consent.resources)?;
        self.db.write(|tx| {
            execute(
                tx,
                "INSERT INTO consents (realm, subject, client_id, scope, resources, granted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (realm, subject, client_id) DO UPDATE
                 SET scope = excluded.scope, resources = excluded.resources, granted_at = excluded.granted_at",
                params![realm, consent.subject, consent.client_id, consent.scope, resources, consent.granted_at],
            )?;
            Ok(())
        })
    }

    /// Oldest first; consents given at the same second, by client id.
    fn consents(&self, realm: &str, subject: &str) -> Result<Vec<Consent>> {
        query_all(
            &self.db.conn(),
            &format!(
                "SELECT {CONSENT_COLUMNS} FROM consents WHERE realm = ?1 AND subject = ?2
                 ORDER BY granted_at, client_id"
            ),
            [realm, subject],
            consent_row,
        )
    }

    fn revoke_consent(&self, realm: &str, subject: &str, client_id: &str) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(
                tx,
                "DELETE FROM consents WHERE realm = ?1 AND subject = ?2 AND client_id = ?3",
                [realm, subject, client_id],
            )?;
            Ok(n == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use agentauth_store_conformance::fixtures::{audit, authorization_code, client_row, consent, user_row};

    use super::*;
    use crate::prelude::*;

    #[test]
    fn a_code_or_consent_whose_stored_resources_are_not_a_json_list_is_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        assert!(store.create_user("alpha", &user_row("usr_1", "alice"), &audit("create-user")).unwrap());
        store.insert_code("alpha", b"h", &authorization_code("c1", "usr_1")).unwrap();
        store.save_consent("alpha", &consent("usr_1", "c1", 0)).unwrap();
        // Not JSON; JSON, but not a list.
        for (table, broken) in [("authorization_codes", "'['"), ("consents", "'\"one\"'")] {
            let sql = format!("UPDATE {table} SET resources = {broken}");
            assert_eq!(store.db.write(|c| execute(c, &sql, [])).unwrap(), 1);
        }
        let e = store.code("alpha", b"h", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        for e in [store.consent("alpha", "usr_1", "c1").unwrap_err(), store.consents("alpha", "usr_1").unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
    }
}
