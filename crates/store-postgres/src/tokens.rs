//! Server-side tokens and what ends them: opaque access tokens, refresh
//! token families and their rotation, the JWTs issued in a family, the
//! lineage of families derived by token exchange, revoked JWT ids, and
//! client assertion ids seen (so each assertion is used once).
//!
//! Tokens are found by keyed hash; the grant each carries is JSON (or a
//! JWT's `jti`) the server interprets. Revoking anything revokes, in the
//! same transaction, every family derived from it.
//!
//! What holds across processes, and how:
//!
//! - A refresh token rotates once: marking it used is one conditional
//!   UPDATE (`... AND used_at IS NULL`); a racer waits for the winner's
//!   row lock, then finds it used, and revokes the family.
//! - A family is derived only from a parent still live at commit: the
//!   derivation holds `FOR KEY SHARE` locks on the parent's token row, one
//!   row of its family and its client, which a revocation's DELETE waits
//!   for (and then finds the new lineage), or which wait for a revocation
//!   (and then find the rows gone). A revoked JWT has no row to lock:
//!   revoking one and deriving from one take the same advisory lock, by
//!   realm and `jti`.

use agentauth_core::ports::{AuditEntry, Lineage, NewToken, Result, Rotation, TokenKind, TokenRepository, TokenRow};
use deadpool_postgres::GenericClient;

use crate::PgStore;
use crate::batch::{Statement, Write};
use crate::db::{conn, execute, get, named, query, query_one, query_opt, transaction};

/// Whether a JWT was revoked, by (realm, jti).
const JWT_REVOKED: &str = "SELECT EXISTS (SELECT 1 FROM revoked_jwts WHERE realm = $1 AND jti = $2)";
/// Deletes one server-side token, by (hash, realm).
const DELETE_TOKEN: &str = "DELETE FROM tokens WHERE hash = $1 AND realm = $2";
/// The class of the advisory locks on a token's `jti` (two-key space):
/// "agnt" in ASCII.
const JTI_LOCK: i32 = 0x6167_6e74;

impl TokenRepository for PgStore {
    /// Made in a batch (see `batch`), in a savepoint of its own.
    fn insert_tokens(&self, realm: &str, tokens: &[NewToken<'_>]) -> Result<()> {
        self.db.write(Write::Tokens { realm: realm.to_owned(), tokens: owned(tokens) })?.tokens()
    }

    fn insert_derived_family(&self, realm: &str, lineage: &Lineage<'_>, tokens: &[NewToken<'_>]) -> Result<bool> {
        let (pool, realm, tokens) = (self.db.pool.clone(), realm.to_owned(), owned(tokens));
        let (family, parent_jti, parent_hash, parent_family, parent_client, expires_at) = (
            lineage.family.to_owned(),
            lineage.parent_jti.to_owned(),
            lineage.parent_hash.map(<[u8]>::to_vec),
            lineage.parent_family.map(str::to_owned),
            lineage.parent_client.to_owned(),
            lineage.expires_at,
        );
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_jti(&tx, &realm, &parent_jti).await?;
                let parent_revoked: bool = get(&query_one(&tx, JWT_REVOKED, &[&realm, &parent_jti]).await?, 0)?;
                let parent_row_live = match &parent_hash {
                    Some(hash) => query_opt(
                        &tx,
                        "SELECT 1 FROM tokens WHERE realm = $1 AND hash = $2 FOR KEY SHARE",
                        &[&realm, hash],
                    )
                    .await?
                    .is_some(),
                    None => true,
                };
                let parent_family_live = match &parent_family {
                    Some(family) => query_opt(
                        &tx,
                        "SELECT 1 FROM tokens WHERE realm = $1 AND family = $2 LIMIT 1 FOR KEY SHARE",
                        &[&realm, family],
                    )
                    .await?
                    .is_some(),
                    None => true,
                };
                let parent_client_live = query_opt(
                    &tx,
                    "SELECT 1 FROM clients WHERE realm = $1 AND client_id = $2 FOR KEY SHARE",
                    &[&realm, &parent_client],
                )
                .await?
                .is_some();
                if parent_revoked || !parent_row_live || !parent_family_live || !parent_client_live {
                    false
                } else {
                    execute(
                        &tx,
                        "INSERT INTO token_lineage (realm, family, parent_jti, parent_family, parent_client, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        &[&realm, &family, &parent_jti, &parent_family, &parent_client, &expires_at],
                    )
                    .await?;
                    for t in &tokens {
                        insert_token(&tx, &realm, t).await?;
                    }
                    true
                }
            })
        })
    }

    fn token(&self, hash: &[u8], realm: &str, kind: TokenKind, now: i64) -> Result<Option<String>> {
        Ok(self.token_row(hash, realm, now)?.filter(|row| row.kind == kind).map(|row| row.grant))
    }

    fn token_row(&self, hash: &[u8], realm: &str, now: i64) -> Result<Option<TokenRow>> {
        let (pool, hash, realm) = (self.db.pool.clone(), hash.to_vec(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(
                &c,
                "SELECT kind, grant_json, client_id, family, used_at, expires_at FROM tokens
                 WHERE hash = $1 AND realm = $2 AND expires_at > $3",
                &[&hash, &realm, &now],
            )
            .await?;
            row.map(|r| {
                Ok(TokenRow {
                    kind: named(&r, 0, "token kind", TokenKind::parse)?,
                    grant: get(&r, 1)?,
                    client_id: get(&r, 2)?,
                    family: get(&r, 3)?,
                    used: get::<Option<i64>>(&r, 4)?.is_some(),
                    expires_at: get(&r, 5)?,
                })
            })
            .transpose()
        })
    }

    fn count_tokens(&self, realm: &str, kind: TokenKind) -> Result<i64> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row =
                query_one(&c, "SELECT COUNT(*) FROM tokens WHERE realm = $1 AND kind = $2", &[&realm, &kind.as_str()])
                    .await?;
            get(&row, 0)
        })
    }

    fn live_token_counts(&self, realm: &str, client_ids: &[String], now: i64) -> Result<Vec<(String, i64)>> {
        let (pool, realm, ids) = (self.db.pool.clone(), realm.to_owned(), client_ids.to_vec());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let rows = query(
                &c,
                "SELECT client_id, COUNT(*) FROM tokens
                 WHERE realm = $1 AND client_id = ANY($2) AND expires_at > $3
                   AND (kind <> 'refresh' OR used_at IS NULL)
                 GROUP BY client_id ORDER BY client_id",
                &[&realm, &ids, &now],
            )
            .await?;
            rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
        })
    }

    /// Made in a batch (see `batch`), in a savepoint of its own.
    fn rotate_token(
        &self,
        realm: &str,
        old_hash: &[u8],
        successors: &[NewToken<'_>],
        now: i64,
        reused: &AuditEntry,
    ) -> Result<Rotation> {
        let write = Write::Rotation {
            realm: realm.to_owned(),
            old_hash: old_hash.to_vec(),
            successors: owned(successors),
            now,
            reused: Box::new(reused.clone()),
        };
        self.db.write(write)?.rotation()
    }

    fn revoke_token(&self, realm: &str, hash: &[u8], family: Option<&str>, audit: Option<&AuditEntry>) -> Result<()> {
        let (pool, realm, hash, family) =
            (self.db.pool.clone(), realm.to_owned(), hash.to_vec(), family.map(str::to_owned));
        let audit = audit.cloned();
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let revoked = match &family {
                    Some(family) => revoke_family(&tx, &realm, family).await?,
                    None => execute(&tx, DELETE_TOKEN, &[&hash, &realm]).await?,
                };
                if let Some(entry) = audit.as_ref().filter(|_| revoked > 0) {
                    crate::audit::record(&tx, &realm, entry).await?;
                }
            })
        })
    }

    fn revoke_opaque(&self, realm: &str, hash: &[u8], jti: &str) -> Result<()> {
        let (pool, realm, hash, jti) = (self.db.pool.clone(), realm.to_owned(), hash.to_vec(), jti.to_owned());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_jti(&tx, &realm, &jti).await?;
                execute(&tx, DELETE_TOKEN, &[&hash, &realm]).await?;
                revoke_derived_from_token(&tx, &realm, &jti).await?;
            })
        })
    }

    fn revoke_jwt(&self, realm: &str, jti: &str, expires_at: i64) -> Result<()> {
        let (pool, realm, jti) = (self.db.pool.clone(), realm.to_owned(), jti.to_owned());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                lock_jti(&tx, &realm, &jti).await?;
                execute(
                    &tx,
                    "INSERT INTO revoked_jwts (realm, jti, expires_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&realm, &jti, &expires_at],
                )
                .await?;
                revoke_derived_from_token(&tx, &realm, &jti).await?;
            })
        })
    }

    fn is_jwt_revoked(&self, realm: &str, jti: &str) -> Result<bool> {
        let (pool, realm, jti) = (self.db.pool.clone(), realm.to_owned(), jti.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            get(&query_one(&c, JWT_REVOKED, &[&realm, &jti]).await?, 0)
        })
    }

    /// One statement, made in a batch (see `batch`): of racing uses of one
    /// assertion, the key lets one insert, and the others find it taken
    /// (in the same batch, or once the batch that took it committed).
    fn use_assertion_jti(&self, realm: &str, client_id: &str, jti: &str, expires_at: i64) -> Result<bool> {
        let write = Write::Assertion {
            realm: realm.to_owned(),
            client_id: client_id.to_owned(),
            jti: jti.to_owned(),
            expires_at,
        };
        self.db.write(write)?.assertion()
    }
}

/// A token to store, owned: the ports lend theirs only for the call.
pub(crate) struct Token {
    hash: Vec<u8>,
    client_id: String,
    family: Option<String>,
    /// The kind, by its stored name.
    kind: &'static str,
    grant: String,
    expires_at: i64,
}

pub(crate) fn owned(tokens: &[NewToken<'_>]) -> Vec<Token> {
    tokens
        .iter()
        .map(|t| Token {
            hash: t.hash.to_vec(),
            client_id: t.client_id.to_owned(),
            family: t.family.map(str::to_owned),
            kind: t.kind.as_str(),
            grant: t.grant.to_owned(),
            expires_at: t.expires_at,
        })
        .collect()
}

const INSERT_TOKEN: &str = "INSERT INTO tokens (hash, realm, kind, grant_json, expires_at, client_id, family)
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

async fn insert_token<C: GenericClient + ?Sized>(tx: &C, realm: &str, t: &Token) -> Result<()> {
    execute(tx, INSERT_TOKEN, &[&t.hash, &realm, &t.kind, &t.grant, &t.expires_at, &t.client_id, &t.family]).await?;
    Ok(())
}

/// The insert of `t`, as a statement of a batch.
pub(crate) fn insert_statement<'a>(realm: &'a String, t: &'a Token) -> Statement<'a> {
    Statement {
        sql: INSERT_TOKEN,
        params: vec![&t.hash, realm, &t.kind, &t.grant, &t.expires_at, &t.client_id, &t.family],
    }
}

/// Uses a client assertion's id: `RETURNING` a row the first time only.
pub(crate) const USE_ASSERTION: &str = "INSERT INTO client_assertions (realm, client_id, jti, expires_at)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT DO NOTHING
     RETURNING 1";

/// Marks the refresh token `old_hash` used and stores its successors, if it
/// was live and unused; revokes its family if it was used before.
pub(crate) async fn rotate<C: GenericClient + ?Sized>(
    tx: &C,
    realm: &str,
    old_hash: &[u8],
    successors: &[Token],
    now: i64,
    reused: &AuditEntry,
) -> Result<Rotation> {
    let rotated = query_opt(
        tx,
        "UPDATE tokens SET used_at = $3
         WHERE hash = $1 AND realm = $2 AND kind = 'refresh' AND expires_at > $3 AND used_at IS NULL
         RETURNING 1",
        &[&old_hash, &realm, &now],
    )
    .await?;
    if rotated.is_some() {
        for t in successors {
            insert_token(tx, realm, t).await?;
        }
        return Ok(Rotation::Rotated);
    }
    // Used before (or by a racer that just committed), or not a live
    // refresh token of the realm at all.
    let found = query_opt(
        tx,
        "SELECT used_at, family FROM tokens
         WHERE hash = $1 AND realm = $2 AND kind = 'refresh' AND expires_at > $3",
        &[&old_hash, &realm, &now],
    )
    .await?;
    let found = match found {
        Some(r) => Some((get::<Option<i64>>(&r, 0)?, get::<Option<String>>(&r, 1)?)),
        None => None,
    };
    match found {
        Some((Some(_), family)) => {
            let revoked = match family {
                Some(family) => revoke_family(tx, realm, &family).await?,
                None => execute(tx, DELETE_TOKEN, &[&old_hash, &realm]).await?,
            };
            if revoked > 0 {
                crate::audit::record(tx, realm, reused).await?;
            }
            Ok(Rotation::Reused)
        }
        // Stored between the two statements: not this request's to rotate.
        Some((None, _)) | None => Ok(Rotation::Unknown),
    }
}

/// Serializes what revokes the token `jti` with what derives a family from
/// it, until commit.
async fn lock_jti<C: GenericClient + ?Sized>(tx: &C, realm: &str, jti: &str) -> Result<()> {
    execute(tx, "SELECT pg_advisory_xact_lock($1, hashtext($2 || '/' || $3))", &[&JTI_LOCK, &realm, &jti]).await?;
    Ok(())
}

/// Ends a token family and, transitively, every family derived from it:
/// their JWTs are recorded as revoked, their server-side tokens deleted.
/// Revokes the family `family` and those derived from it; how many
/// tokens that deleted.
async fn revoke_family<C: GenericClient + ?Sized>(tx: &C, realm: &str, family: &str) -> Result<u64> {
    let mut pending = vec![family.to_string()];
    let mut revoked = 0;
    while let Some(family) = pending.pop() {
        execute(
            tx,
            "INSERT INTO revoked_jwts (realm, jti, expires_at)
             SELECT realm, grant_json, expires_at FROM tokens WHERE realm = $1 AND family = $2 AND kind = 'jwt'
             ON CONFLICT DO NOTHING",
            &[&realm, &family],
        )
        .await?;
        revoked += execute(tx, "DELETE FROM tokens WHERE realm = $1 AND family = $2", &[&realm, &family]).await?;
        pending.extend(
            derived_families(
                tx,
                "SELECT family FROM token_lineage WHERE realm = $1 AND parent_family = $2",
                realm,
                &family,
            )
            .await?,
        );
        execute(tx, "DELETE FROM token_lineage WHERE realm = $1 AND family = $2", &[&realm, &family]).await?;
    }
    Ok(revoked)
}

/// Revokes every family derived from the token `jti`.
async fn revoke_derived_from_token<C: GenericClient + ?Sized>(tx: &C, realm: &str, jti: &str) -> Result<()> {
    let sql = "SELECT family FROM token_lineage WHERE realm = $1 AND parent_jti = $2";
    for family in derived_families(tx, sql, realm, jti).await? {
        revoke_family(tx, realm, &family).await?;
    }
    Ok(())
}

/// Revokes every family derived from a token of the client `client_id`.
pub(crate) async fn revoke_derived_from_client<C: GenericClient + ?Sized>(
    tx: &C,
    realm: &str,
    client_id: &str,
) -> Result<()> {
    let sql = "SELECT family FROM token_lineage WHERE realm = $1 AND parent_client = $2";
    for family in derived_families(tx, sql, realm, client_id).await? {
        revoke_family(tx, realm, &family).await?;
    }
    Ok(())
}

async fn derived_families<C: GenericClient + ?Sized>(
    tx: &C,
    sql: &str,
    realm: &str,
    parent: &str,
) -> Result<Vec<String>> {
    query(tx, sql, &[&realm, &parent]).await?.iter().map(|r| get(r, 0)).collect()
}
