//! Registered clients, with the keyed hashes of their credentials, and
//! the cache in front of them.
//!
//! Every token request authenticates a client, so reads are cached; every
//! change forgets what it changed. Registration counts against a realm's
//! cap in the same transaction as the insert, and RFC 7592 updates and
//! deletions are compare-and-swaps on the registration token's hash.

use std::collections::HashMap;

use agentauth_core::{Client, ClientAttributes, ClientMetadata};
use rusqlite::{Connection, params};

use crate::engine::{execute, exists, lock, query_opt, query_row};
use crate::tokens::revoke_derived_from_client;
use crate::{Error, ErrorKind, Result, Store};

/// A client with the keyed hashes of its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub client: Client,
    pub secret_hash: Vec<u8>,
    pub registration_token_hash: Vec<u8>,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow").field("client", &self.client).finish_non_exhaustive()
    }
}

/// Recently read clients. Every change to a client forgets it and bumps
/// the generation, so a read that raced with the change is not cached.
#[derive(Debug, Default)]
pub(crate) struct ClientCache {
    rows: HashMap<(String, String), ClientRow>,
    generation: u64,
}

/// Clients kept in memory; past it, the cache starts again empty.
const CLIENT_CACHE: usize = 50_000;

/// Whether the realm has the client, by (realm, client_id).
pub(crate) const CLIENT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM clients WHERE realm = ?1 AND client_id = ?2)";

impl Store {
    /// Stores a newly registered client, unless the realm already holds
    /// `max_clients`: then it stores nothing and returns false. The count
    /// is read in the same transaction as the insert (and writes run one at
    /// a time on the writer connection), so racing registrations never
    /// pass the cap. Fails if the id is taken.
    pub fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool> {
        let c = &row.client;
        let (metadata, attributes) = client_json(c)?;
        self.db.write(|tx| {
            if count_clients(tx, realm)? >= max_clients {
                return Ok(false);
            }
            execute(
                tx,
                "INSERT INTO clients (realm, client_id, metadata, attributes, is_ai_agent, secret_hash,
                                      registration_token_hash, issued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    realm,
                    c.client_id,
                    metadata,
                    attributes,
                    c.is_ai_agent,
                    row.secret_hash,
                    row.registration_token_hash,
                    c.issued_at
                ],
            )?;
            Ok(true)
        })
    }

    /// Replaces a client's metadata, attributes and registration access
    /// token (RFC 7592 update), provided its registration access token still
    /// has the keyed hash `token_hash`; false if no client of the realm has
    /// that id and token.
    ///
    /// The check and the replacement are one statement (a compare-and-swap
    /// on the token's hash). Writes run one at a time on the writer
    /// connection, each seeing the writes before it in the same batch, so
    /// of racing updates presenting one token exactly one matches; the
    /// others find the rotated hash and change nothing.
    pub fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool> {
        let c = &row.client;
        let (metadata, attributes) = client_json(c)?;
        let updated = self.db.write(|tx| {
            let n = execute(
                tx,
                "UPDATE clients SET metadata = ?3, attributes = ?4, registration_token_hash = ?5
                 WHERE realm = ?1 AND client_id = ?2 AND registration_token_hash = ?6",
                params![realm, c.client_id, metadata, attributes, row.registration_token_hash, token_hash],
            )?;
            Ok(n == 1)
        });
        self.forget_clients(realm, Some(&c.client_id));
        updated
    }

    /// Deletes a client and every server-side token issued to it, in one
    /// commit, provided its registration access token still has the keyed
    /// hash `token_hash` (checked in the same statement, as for
    /// [`Store::update_client`]); false if no client has that id and token.
    pub fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool> {
        let deleted = self.db.write(|tx| {
            let n = execute(
                tx,
                "DELETE FROM clients WHERE realm = ?1 AND client_id = ?2 AND registration_token_hash = ?3",
                params![realm, client_id, token_hash],
            )?;
            if n == 1 {
                execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND client_id = ?2", params![realm, client_id])?;
                revoke_derived_from_client(tx, realm, client_id)?;
            }
            Ok(n == 1)
        });
        self.forget_clients(realm, Some(client_id));
        deleted
    }

    /// The realm's client `client_id`, from the cache when it is there.
    pub fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let key = (realm.to_string(), client_id.to_string());
        let generation = {
            let cache = lock(&self.clients);
            if let Some(row) = cache.rows.get(&key) {
                return Ok(Some(row.clone()));
            }
            cache.generation
        };
        let row = self.client_from_db(realm, client_id)?;
        if let Some(row) = &row {
            let mut cache = lock(&self.clients);
            // A change since the read above may have made it stale.
            if cache.generation == generation {
                if cache.rows.len() >= CLIENT_CACHE {
                    cache.rows.clear();
                }
                cache.rows.insert(key, row.clone());
            }
        }
        Ok(row)
    }

    /// Forgets cached clients after a change: one client, or a whole realm's.
    pub(crate) fn forget_clients(&self, realm: &str, client_id: Option<&str>) {
        let mut cache = lock(&self.clients);
        cache.generation += 1;
        match client_id {
            Some(id) => {
                cache.rows.remove(&(realm.to_string(), id.to_string()));
            }
            None => cache.rows.retain(|(r, _), _| r != realm),
        }
    }

    fn client_from_db(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let row = query_opt(
            &self.db.conn(),
            "SELECT client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, issued_at
             FROM clients WHERE realm = ?1 AND client_id = ?2",
            params![realm, client_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )?;
        let Some((client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, issued_at)) = row
        else {
            return Ok(None);
        };
        let metadata: ClientMetadata = serde_json::from_str(&metadata)
            .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its metadata is not valid"), e))?;
        let attributes: ClientAttributes = serde_json::from_str(&attributes)
            .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its attributes are not valid"), e))?;
        Ok(Some(ClientRow {
            client: Client { client_id, metadata, attributes, is_ai_agent, issued_at },
            secret_hash,
            registration_token_hash,
        }))
    }

    /// True when the realm has the client.
    pub fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool> {
        exists(&self.db.conn(), CLIENT_EXISTS, params![realm, client_id])
    }

    /// How many clients the realm has (as of the last commit).
    pub fn count_clients(&self, realm: &str) -> Result<u64> {
        count_clients(&self.db.conn(), realm)
    }
}

/// A client's metadata and attributes as the JSON stored for them.
fn client_json(c: &Client) -> Result<(String, String)> {
    let encode = |e| Error::new(ErrorKind::Other, format!("encoding client {}", c.client_id)).with_source(e);
    Ok((serde_json::to_string(&c.metadata).map_err(encode)?, serde_json::to_string(&c.attributes).map_err(encode)?))
}

/// How many clients the realm has, from the count the triggers of
/// migration 10 keep: one row read, however many clients there are.
fn count_clients(conn: &Connection, realm: &str) -> Result<u64> {
    let n: i64 =
        query_row(conn, "SELECT COALESCE(MAX(n), 0) FROM client_counts WHERE realm = ?1", [realm], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::AuditEntry;
    use crate::fixtures::client_row;
    use crate::{NewToken, TokenKind};

    #[test]
    fn a_client_whose_stored_json_is_invalid_is_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        let broken = store.db.write(|c| execute(c, "UPDATE clients SET metadata = '{' WHERE client_id = 'c1'", []));
        assert_eq!(broken.unwrap(), 1);
        let e = store.client("alpha", "c1").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }

    #[test]
    fn a_cached_client_never_outlives_its_update_or_deletion() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
        let mut changed = client_row("c1");
        changed.registration_token_hash = vec![9; 32];
        changed.client.metadata.scope = "read".into();
        assert!(store.update_client("alpha", &changed, &[2; 32]).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(changed), "read after update");
        assert!(store.delete_client("alpha", "c1", &[9; 32]).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), None, "read after delete");
        store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
        assert!(store.client("alpha", "c2").unwrap().is_some());
        assert!(store.delete_realm("alpha", &AuditEntry::default()).unwrap());
        assert_eq!(store.client("alpha", "c2").unwrap(), None, "read after the realm went");
    }

    #[test]
    fn clients_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.create_realm_if_absent("alpha", "{}", 0).unwrap();
            store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
        assert_eq!(store.client("beta", "c1").unwrap(), None);
    }

    #[test]
    fn deleting_a_client_deletes_its_tokens_only() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        store.insert_client("alpha", &client_row("c2"), u64::MAX).unwrap();
        let token = |hash, client_id| NewToken {
            hash,
            client_id,
            family: None,
            kind: TokenKind::Access,
            grant: "{}",
            expires_at: 100,
        };
        store.insert_tokens("alpha", &[token(b"t1", "c1"), token(b"t2", "c2")]).unwrap();
        assert!(store.delete_client("alpha", "c1", &[2; 32]).unwrap());
        assert!(!store.delete_client("alpha", "c1", &[2; 32]).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), None);
        assert_eq!(store.token(b"t1", "alpha", TokenKind::Access, 0).unwrap(), None);
        assert!(store.token(b"t2", "alpha", TokenKind::Access, 0).unwrap().is_some());
    }

    #[test]
    fn updating_a_client_keeps_its_secret() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        let mut row = client_row("c1");
        row.client.metadata.scope = "read".into();
        row.registration_token_hash = vec![9; 32];
        row.secret_hash = vec![7; 32];
        assert!(store.update_client("alpha", &row, &[2; 32]).unwrap());
        let stored = store.client("alpha", "c1").unwrap().unwrap();
        assert_eq!(stored.client.metadata.scope, "read");
        assert_eq!(stored.registration_token_hash, vec![9; 32]);
        assert_eq!(stored.secret_hash, vec![1; 32], "the secret is not changed by an update");
    }

    #[test]
    fn racing_inserts_never_pass_the_realms_client_cap_and_the_count_follows_deletions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.create_realm_if_absent("beta", "{}", 0).unwrap();
        store.insert_client("beta", &client_row("b1"), u64::MAX).unwrap();
        let stored = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..16 {
                let (store, stored) = (&store, &stored);
                s.spawn(move || {
                    if store.insert_client("alpha", &client_row(&format!("c{t}")), 5).unwrap() {
                        stored.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(stored.load(Ordering::SeqCst), 5);
        assert_eq!((store.count_clients("alpha").unwrap(), store.count_clients("beta").unwrap()), (5, 1));
        let c = lock(&store.db.writer)
            .conn
            .query_row("SELECT COUNT(*) FROM clients WHERE realm = 'alpha'", [], |r| r.get::<_, i64>(0));
        assert_eq!(c.unwrap(), 5, "the count is the rows'");
        // A failed insert (a taken id) counts nothing; a deletion frees a place.
        let id = (0..16).map(|t| format!("c{t}")).find(|id| store.client("alpha", id).unwrap().is_some()).unwrap();
        assert!(store.insert_client("alpha", &client_row(&id), u64::MAX).is_err());
        assert_eq!(store.count_clients("alpha").unwrap(), 5);
        assert!(store.delete_client("alpha", &id, &[2; 32]).unwrap());
        assert_eq!(store.count_clients("alpha").unwrap(), 4);
        assert!(store.insert_client("alpha", &client_row("new"), 5).unwrap());
        assert!(!store.insert_client("alpha", &client_row("newer"), 5).unwrap());
        assert!(store.delete_realm("alpha", &AuditEntry::default()).unwrap());
        assert_eq!(store.count_clients("alpha").unwrap(), 0);
        assert_eq!(store.count_clients("nowhere").unwrap(), 0);
    }

    #[test]
    fn a_spent_registration_token_neither_updates_nor_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        // Racing updates that all present the current token (hash [2; 32]),
        // each rotating it to a hash of its own: one wins, in whatever
        // batches the writes are grouped.
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..16u8 {
                let (store, wins) = (&store, &wins);
                s.spawn(move || {
                    let mut row = client_row("c1");
                    row.registration_token_hash = vec![100 + t; 32];
                    if store.update_client("alpha", &row, &[2; 32]).unwrap() {
                        wins.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(wins.load(Ordering::SeqCst), 1);
        let current = store.client("alpha", "c1").unwrap().unwrap().registration_token_hash;
        assert_ne!(current, vec![2; 32]);
        // The spent token deletes nothing; the current one does.
        assert!(!store.delete_client("alpha", "c1", &[2; 32]).unwrap());
        assert!(store.client("alpha", "c1").unwrap().is_some());
        assert!(store.delete_client("alpha", "c1", &current).unwrap());
        assert_eq!(store.client("alpha", "c1").unwrap(), None);
    }

    #[test]
    fn duplicate_client_id_is_refused() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        let e = store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Constraint, "{e}");
    }

    #[test]
    fn client_of_unknown_realm_is_refused() {
        let store = Store::open_in_memory().unwrap();
        let e = store.insert_client("nowhere", &client_row("c1"), u64::MAX).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Constraint, "{e}");
    }
}
