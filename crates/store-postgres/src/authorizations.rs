//! Authorization codes, by keyed hash, and the consents users gave
//! clients.
//!
//! A code is redeemed exactly once across processes by one conditional
//! UPDATE (`... AND used_at IS NULL RETURNING`), as a refresh token
//! rotates: a racer waits for the winner's row lock, then finds the code
//! used and reads, in a statement of its own (which sees the winner's
//! commit), what that redemption recorded. A used code is kept, with its
//! issue, until it is swept after its expiry, so a replay in the meantime
//! finds what to revoke.
//!
//! A user authorizes a client rarely next to the token requests clients
//! make, so these writes are one transaction each, not made in the
//! batches of `batch`. Codes and consents go with their realm, their user
//! and their client (by the schema's cascades, migration 4). Resources are
//! stored as a JSON list; one that is not reads as corrupt. No replica
//! caches either, so their changes record no change for followers.

use agentauth_core::ports::{
    AuthorizationCode, AuthorizationRepository, CodeIssue, Consent, Error, ErrorKind, Redemption, Result,
};
use tokio_postgres::Row;

use crate::PgStore;
use crate::db::{conn, execute, get, query, query_opt, transaction};

/// The columns [`code_row`] reads, in order.
const CODE_COLUMNS: &str =
    "client_id, redirect_uri, code_challenge, subject, scope, resources, may_act, auth_time, created_at, expires_at,
     dpop_jkt";

/// The columns [`consent_row`] reads, in order.
const CONSENT_COLUMNS: &str = "subject, client_id, scope, resources, granted_at";

fn code_row(r: &Row) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        client_id: get(r, 0)?,
        redirect_uri: get(r, 1)?,
        code_challenge: get(r, 2)?,
        subject: get(r, 3)?,
        scope: get(r, 4)?,
        resources: resources(r, 5)?,
        may_act: get(r, 6)?,
        auth_time: get(r, 7)?,
        created_at: get(r, 8)?,
        expires_at: get(r, 9)?,
        dpop_jkt: get(r, 10)?,
    })
}

fn consent_row(r: &Row) -> Result<Consent> {
    Ok(Consent {
        subject: get(r, 0)?,
        client_id: get(r, 1)?,
        scope: get(r, 2)?,
        resources: resources(r, 3)?,
        granted_at: get(r, 4)?,
    })
}

/// Column `i`, a stored JSON list of resources: anything else is a value
/// this store did not write, and reads as corrupt.
fn resources(r: &Row, i: usize) -> Result<Vec<String>> {
    let json: &str = get(r, i)?;
    serde_json::from_str(json)
        .map_err(|e| Error::corrupt("stored data is unreadable: resources are not a JSON list", e))
}

/// A list of resources as stored.
fn resources_json(resources: &[String]) -> Result<String> {
    serde_json::to_string(resources)
        .map_err(|e| Error::new(ErrorKind::Other, "encoding a list of resources").with_source(e))
}

impl AuthorizationRepository for PgStore {
    /// Fails (Constraint) if the realm, the client or the user does not
    /// exist, or the realm has a code of that hash.
    fn insert_code(&self, realm: &str, hash: &[u8], code: &AuthorizationCode) -> Result<()> {
        let resources = resources_json(&code.resources)?;
        let (pool, realm, hash, code) = (self.db.pool.clone(), realm.to_owned(), hash.to_vec(), code.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                execute(
                    &tx,
                    "INSERT INTO authorization_codes (realm, hash, client_id, redirect_uri, code_challenge, subject,
                                                      scope, resources, may_act, auth_time, created_at, expires_at,
                                                      dpop_jkt)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    &[
                        &realm,
                        &hash,
                        &code.client_id,
                        &code.redirect_uri,
                        &code.code_challenge,
                        &code.subject,
                        &code.scope,
                        &resources,
                        &code.may_act,
                        &code.auth_time,
                        &code.created_at,
                        &code.expires_at,
                        &code.dpop_jkt,
                    ],
                )
                .await?;
            })
        })
    }

    fn code(&self, realm: &str, hash: &[u8], now: i64) -> Result<Option<AuthorizationCode>> {
        let (pool, realm, hash) = (self.db.pool.clone(), realm.to_owned(), hash.to_vec());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql = format!(
                "SELECT {CODE_COLUMNS} FROM authorization_codes
                 WHERE realm = $1 AND hash = $2 AND expires_at > $3 AND used_at IS NULL"
            );
            query_opt(&c, &sql, &[&realm, &hash, &now]).await?.as_ref().map(code_row).transpose()
        })
    }

    /// The check and the mark are one UPDATE: see the module's doc.
    fn redeem_code(&self, realm: &str, hash: &[u8], issue: &CodeIssue, now: i64) -> Result<Redemption> {
        let (pool, realm, hash, issue) = (self.db.pool.clone(), realm.to_owned(), hash.to_vec(), issue.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let redeemed = query_opt(
                    &tx,
                    "UPDATE authorization_codes SET used_at = $3, family = $4, jti = $5, jti_expires_at = $6,
                            expires_at = $7
                     WHERE realm = $1 AND hash = $2 AND expires_at > $3 AND used_at IS NULL
                     RETURNING 1",
                    &[&realm, &hash, &now, &issue.family, &issue.jti, &issue.jti_expires_at, &issue.family_expires_at],
                )
                .await?;
                if redeemed.is_some() {
                    Redemption::Redeemed
                } else {
                    // Redeemed before (by a racer that just committed, or
                    // long ago and expired since, until it is swept), or no
                    // code of the realm that could be.
                    let used = query_opt(
                        &tx,
                        "SELECT family, jti, jti_expires_at, expires_at FROM authorization_codes
                         WHERE realm = $1 AND hash = $2 AND used_at IS NOT NULL",
                        &[&realm, &hash],
                    )
                    .await?;
                    match used {
                        Some(r) => Redemption::Reused(CodeIssue {
                            family: get(&r, 0)?,
                            jti: get(&r, 1)?,
                            jti_expires_at: get(&r, 2)?,
                            family_expires_at: get(&r, 3)?,
                        }),
                        None => Redemption::Unknown,
                    }
                }
            })
        })
    }

    fn sweep_codes(&self, before: i64) -> Result<usize> {
        let pool = self.db.pool.clone();
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(&tx, "DELETE FROM authorization_codes WHERE expires_at <= $1", &[&before]).await?;
                usize::try_from(n).unwrap_or(usize::MAX)
            })
        })
    }

    fn code_families(&self, realm: &str, subject: &str, client_id: Option<&str>) -> Result<Vec<String>> {
        let (pool, realm, subject, client_id) =
            (self.db.pool.clone(), realm.to_owned(), subject.to_owned(), client_id.map(str::to_owned));
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT family FROM authorization_codes
                 WHERE realm = $1 AND subject = $2 AND ($3::TEXT IS NULL OR client_id = $3) AND used_at IS NOT NULL
                 ORDER BY used_at",
                &[&realm, &subject, &client_id],
            )
            .await?;
            rows.iter().map(|r| get(r, 0)).collect()
        })
    }

    fn consent(&self, realm: &str, subject: &str, client_id: &str) -> Result<Option<Consent>> {
        let (pool, realm, subject, client_id) =
            (self.db.pool.clone(), realm.to_owned(), subject.to_owned(), client_id.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql =
                format!("SELECT {CONSENT_COLUMNS} FROM consents WHERE realm = $1 AND subject = $2 AND client_id = $3");
            query_opt(&c, &sql, &[&realm, &subject, &client_id]).await?.as_ref().map(consent_row).transpose()
        })
    }

    /// Fails (Constraint) if the realm, the client or the user does not
    /// exist.
    fn save_consent(&self, realm: &str, consent: &Consent) -> Result<()> {
        let resources = resources_json(&consent.resources)?;
        let (pool, realm, consent) = (self.db.pool.clone(), realm.to_owned(), consent.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                execute(
                    &tx,
                    "INSERT INTO consents (realm, subject, client_id, scope, resources, granted_at)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (realm, subject, client_id) DO UPDATE
                     SET scope = excluded.scope, resources = excluded.resources, granted_at = excluded.granted_at",
                    &[&realm, &consent.subject, &consent.client_id, &consent.scope, &resources, &consent.granted_at],
                )
                .await?;
            })
        })
    }

    /// Oldest first; consents given at the same second, by client id
    /// (bytewise, as SQLite orders them).
    fn consents(&self, realm: &str, subject: &str) -> Result<Vec<Consent>> {
        let (pool, realm, subject) = (self.db.pool.clone(), realm.to_owned(), subject.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql = format!(
                "SELECT {CONSENT_COLUMNS} FROM consents WHERE realm = $1 AND subject = $2
                 ORDER BY granted_at, client_id COLLATE \"C\""
            );
            query(&c, &sql, &[&realm, &subject]).await?.iter().map(consent_row).collect()
        })
    }

    fn revoke_consent(&self, realm: &str, subject: &str, client_id: &str) -> Result<bool> {
        let (pool, realm, subject, client_id) =
            (self.db.pool.clone(), realm.to_owned(), subject.to_owned(), client_id.to_owned());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(
                    &tx,
                    "DELETE FROM consents WHERE realm = $1 AND subject = $2 AND client_id = $3",
                    &[&realm, &subject, &client_id],
                )
                .await?;
                n == 1
            })
        })
    }
}

#[cfg(all(test, feature = "throwaway"))]
mod tests {
    use agentauth_core::ports::prelude::*;
    use agentauth_store_conformance::fixtures::{audit, authorization_code, client_row, consent, user_row};

    use super::*;
    use crate::throwaway::Cluster;
    use crate::{Options, PgStore};

    #[test]
    fn a_code_or_consent_whose_stored_resources_are_not_a_json_list_is_reported_as_corrupt() {
        let cluster = Cluster::start().unwrap();
        let store = PgStore::connect(&cluster.create_database("corrupt").unwrap(), Options::default()).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        assert!(store.create_user("alpha", &user_row("usr_1", "alice"), &audit("create-user")).unwrap());
        store.insert_code("alpha", b"h", &authorization_code("c1", "usr_1")).unwrap();
        store.save_consent("alpha", &consent("usr_1", "c1", 0)).unwrap();
        // Not JSON; JSON, but not a list.
        cluster
            .query(
                "corrupt",
                "UPDATE authorization_codes SET resources = '['; UPDATE consents SET resources = '\"one\"'",
            )
            .unwrap();
        let e = store.code("alpha", b"h", 0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        for e in [store.consent("alpha", "usr_1", "c1").unwrap_err(), store.consents("alpha", "usr_1").unwrap_err()] {
            assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        }
    }
}
