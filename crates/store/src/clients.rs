//! Registered clients, with the keyed hashes of their credentials.
//!
//! Registration counts against a realm's cap in the same transaction as
//! the insert, and RFC 7592 updates and deletions are compare-and-swaps on
//! the registration token's hash. Every token request authenticates a
//! client, so [`Store`] reads them through core's `CachedClients` layered
//! over [`SqliteClients`], which has the SQL.

use std::sync::Arc;

use agentauth_core::ports::ClientRepository;
use agentauth_core::{Client, ClientAttributes, ClientMetadata};
use rusqlite::{Connection, params};

use crate::audit::record;
use crate::coordination::record_change;
use crate::engine::{Engine, execute, exists, query_all, query_opt, query_row};
use crate::tokens::revoke_derived_from_client;
use crate::{AuditEntry, ChangeTopic, ClientFilter, ClientRow, ClientState, Error, ErrorKind, Result, Store};

/// Whether the realm has the client, by (realm, client_id).
pub(crate) const CLIENT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM clients WHERE realm = ?1 AND client_id = ?2)";

/// The clients table, uncached: what the cache in [`Store`] reads through.
#[derive(Debug)]
pub(crate) struct SqliteClients {
    pub(crate) db: Arc<Engine>,
}

impl ClientRepository for SqliteClients {
    /// The count is read in the same transaction as the insert (and writes
    /// run one at a time on the writer connection), so racing
    /// registrations never pass the cap.
    fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool> {
        let c = &row.client;
        let (metadata, attributes) = client_json(c)?;
        self.db.write(|tx| {
            if count_clients(tx, realm)? >= max_clients {
                return Ok(false);
            }
            execute(
                tx,
                "INSERT INTO clients (realm, client_id, metadata, attributes, is_ai_agent, secret_hash,
                                      registration_token_hash, issued_at, expires_at, last_used_at, owner)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?8, ?10)",
                params![
                    realm,
                    c.client_id,
                    metadata,
                    attributes,
                    c.is_ai_agent,
                    row.secret_hash,
                    row.registration_token_hash,
                    c.issued_at,
                    row.expires_at,
                    c.attributes.owner
                ],
            )?;
            Ok(true)
        })
    }

    /// The check and the replacement are one statement (a compare-and-swap
    /// on the token's hash). Writes run one at a time on the writer
    /// connection, each seeing the writes before it in the same batch, so
    /// of racing updates presenting one token exactly one matches; the
    /// others find the rotated hash and change nothing.
    fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool> {
        let c = &row.client;
        let (metadata, attributes) = client_json(c)?;
        self.db.write(|tx| {
            let n = execute(
                tx,
                "UPDATE clients SET metadata = ?3, attributes = ?4, registration_token_hash = ?5, owner = ?7
                 WHERE realm = ?1 AND client_id = ?2 AND registration_token_hash = ?6",
                params![
                    realm,
                    c.client_id,
                    metadata,
                    attributes,
                    row.registration_token_hash,
                    token_hash,
                    c.attributes.owner
                ],
            )?;
            if n == 1 {
                record_change(tx, realm, ChangeTopic::Client, Some(&c.client_id))?;
            }
            Ok(n == 1)
        })
    }

    fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(
                tx,
                "DELETE FROM clients WHERE realm = ?1 AND client_id = ?2 AND registration_token_hash = ?3",
                params![realm, client_id, token_hash],
            )?;
            if n == 1 {
                execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND client_id = ?2", params![realm, client_id])?;
                revoke_derived_from_client(tx, realm, client_id)?;
                record_change(tx, realm, ChangeTopic::Client, Some(client_id))?;
            }
            Ok(n == 1)
        })
    }

    fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let row = query_opt(
            &self.db.conn(),
            &format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE realm = ?1 AND client_id = ?2"),
            params![realm, client_id],
            Stored::read,
        )?;
        row.map(|stored| stored.into_row(realm)).transpose()
    }

    fn clients(&self, realm: &str, filter: &ClientFilter, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
        use rusqlite::types::Value;
        let mut sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE realm = ?1 AND client_id > ?2");
        let mut values: Vec<Value> = vec![realm.to_owned().into(), after.to_owned().into()];
        let mut condition = |clause: &str, value: Value| {
            values.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", values.len()));
        };
        if let Some(client_id) = &filter.client_id {
            condition("client_id =", client_id.clone().into());
        }
        if let Some(state) = filter.state {
            condition("state =", state.as_str().to_owned().into());
        }
        if let Some(owner) = &filter.owner {
            condition("owner =", owner.clone().into());
        }
        if filter.agents_only {
            condition("is_ai_agent =", true.into());
        }
        if let Some(since) = filter.unused_since {
            condition("last_used_at <", since.into());
        }
        if let Some(before) = filter.disabled_before {
            condition("state = 'disabled' AND tokens_valid_after <", before.into());
        }
        if let Some(by) = filter.expired_by {
            condition("expires_at <=", by.into());
        }
        values.push(limit.into());
        sql.push_str(&format!(" ORDER BY client_id LIMIT ?{}", values.len()));
        let rows = query_all(&self.db.conn(), &sql, rusqlite::params_from_iter(values), Stored::read)?;
        rows.into_iter().map(|stored| stored.into_row(realm)).collect()
    }

    fn touch_clients(&self, realm: &str, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        self.db.write(|tx| {
            for (client_id, at) in used {
                execute(
                    tx,
                    "UPDATE clients SET last_used_at = MAX(last_used_at, ?3) WHERE realm = ?1 AND client_id = ?2",
                    params![realm, client_id, at],
                )?;
            }
            Ok(())
        })
    }

    fn set_client_state(
        &self,
        realm: &str,
        client_id: &str,
        state: ClientState,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.db.write(|tx| {
            let n = match state {
                ClientState::Active => execute(
                    tx,
                    "UPDATE clients SET state = 'active' WHERE realm = ?1 AND client_id = ?2",
                    params![realm, client_id],
                )?,
                ClientState::Disabled => execute(
                    tx,
                    "UPDATE clients SET state = 'disabled', tokens_valid_after = MAX(tokens_valid_after, ?3)
                     WHERE realm = ?1 AND client_id = ?2",
                    params![realm, client_id, at],
                )?,
            };
            if n == 1 {
                if state == ClientState::Disabled {
                    execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND client_id = ?2", params![realm, client_id])?;
                    revoke_derived_from_client(tx, realm, client_id)?;
                }
                record(tx, realm, audit)?;
                record_change(tx, realm, ChangeTopic::Client, Some(client_id))?;
            }
            Ok(n == 1)
        })
    }

    fn remove_client(&self, realm: &str, client_id: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(tx, "DELETE FROM clients WHERE realm = ?1 AND client_id = ?2", params![realm, client_id])?;
            if n == 1 {
                execute(tx, "DELETE FROM tokens WHERE realm = ?1 AND client_id = ?2", params![realm, client_id])?;
                revoke_derived_from_client(tx, realm, client_id)?;
                record(tx, realm, audit)?;
                record_change(tx, realm, ChangeTopic::Client, Some(client_id))?;
            }
            Ok(n == 1)
        })
    }

    fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool> {
        exists(&self.db.conn(), CLIENT_EXISTS, params![realm, client_id])
    }

    fn count_clients(&self, realm: &str) -> Result<u64> {
        count_clients(&self.db.conn(), realm)
    }
}

/// Every method goes through the cache, which forgets what a change
/// changed; only [`ClientRepository::client`] reads from it.
impl ClientRepository for Store {
    fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool> {
        self.clients.insert_client(realm, row, max_clients)
    }

    fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool> {
        self.clients.update_client(realm, row, token_hash)
    }

    fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool> {
        self.clients.delete_client(realm, client_id, token_hash)
    }

    fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        self.clients.client(realm, client_id)
    }

    fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool> {
        self.clients.client_exists(realm, client_id)
    }

    fn count_clients(&self, realm: &str) -> Result<u64> {
        self.clients.count_clients(realm)
    }

    fn clients(&self, realm: &str, filter: &ClientFilter, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
        self.clients.clients(realm, filter, after, limit)
    }

    fn touch_clients(&self, realm: &str, used: &[(String, i64)]) -> Result<()> {
        self.clients.touch_clients(realm, used)
    }

    fn set_client_state(
        &self,
        realm: &str,
        client_id: &str,
        state: ClientState,
        at: i64,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.clients.set_client_state(realm, client_id, state, at, audit)
    }

    fn remove_client(&self, realm: &str, client_id: &str, audit: &AuditEntry) -> Result<bool> {
        self.clients.remove_client(realm, client_id, audit)
    }
}

/// The columns a [`ClientRow`] is read from, in [`Stored::read`]'s order.
const CLIENT_COLUMNS: &str = "client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, \
                              issued_at, state, tokens_valid_after, expires_at, last_used_at";

/// A client's row as read, before its JSON is parsed.
struct Stored {
    client_id: String,
    metadata: String,
    attributes: String,
    is_ai_agent: bool,
    secret_hash: Vec<u8>,
    registration_token_hash: Vec<u8>,
    issued_at: i64,
    state: String,
    tokens_valid_after: i64,
    expires_at: Option<i64>,
    last_used_at: i64,
}

impl Stored {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            client_id: r.get(0)?,
            metadata: r.get(1)?,
            attributes: r.get(2)?,
            is_ai_agent: r.get(3)?,
            secret_hash: r.get(4)?,
            registration_token_hash: r.get(5)?,
            issued_at: r.get(6)?,
            state: r.get(7)?,
            tokens_valid_after: r.get(8)?,
            expires_at: r.get(9)?,
            last_used_at: r.get(10)?,
        })
    }

    fn into_row(self, realm: &str) -> Result<ClientRow> {
        let client_id = self.client_id;
        let metadata: ClientMetadata = serde_json::from_str(&self.metadata)
            .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its metadata is not valid"), e))?;
        let attributes: ClientAttributes = serde_json::from_str(&self.attributes)
            .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its attributes are not valid"), e))?;
        let state = ClientState::parse(&self.state).ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, format!("client {realm}/{client_id}: unknown state {:?}", self.state))
        })?;
        Ok(ClientRow {
            client: Client {
                client_id,
                metadata,
                attributes,
                is_ai_agent: self.is_ai_agent,
                issued_at: self.issued_at,
            },
            secret_hash: self.secret_hash,
            registration_token_hash: self.registration_token_hash,
            state,
            tokens_valid_after: self.tokens_valid_after,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
        })
    }
}

/// A client's metadata and attributes as the JSON stored for them.
fn client_json(c: &Client) -> Result<(String, String)> {
    let encode = |e| Error::new(ErrorKind::Other, format!("encoding client {}", c.client_id)).with_source(e);
    Ok((serde_json::to_string(&c.metadata).map_err(encode)?, serde_json::to_string(&c.attributes).map_err(encode)?))
}

/// How many clients the realm has, from the count the triggers of
/// migrations 10 and 13 keep: one row read, however many clients there are.
fn count_clients(conn: &Connection, realm: &str) -> Result<u64> {
    let n: i64 =
        query_row(conn, "SELECT COALESCE(MAX(n), 0) FROM client_counts WHERE realm = ?1", [realm], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use agentauth_store_conformance::fixtures::{audit, client_row};

    use super::*;
    use crate::engine::query_all;
    use crate::prelude::*;

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
    fn a_taken_id_or_an_unknown_realm_is_a_constraint_violation() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1"), u64::MAX).unwrap();
        for (realm, id) in [("alpha", "c1"), ("nowhere", "c2")] {
            let e = store.insert_client(realm, &client_row(id), u64::MAX).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Constraint, "{e}");
        }
    }

    #[test]
    fn the_client_count_the_triggers_keep_is_the_number_of_rows() {
        let store = Store::open_in_memory().unwrap();
        for realm in ["alpha", "beta"] {
            store.create_realm_if_absent(realm, "{}", 0).unwrap();
        }
        for id in ["c1", "c2", "c3"] {
            store.insert_client("alpha", &client_row(id), u64::MAX).unwrap();
        }
        store.insert_client("beta", &client_row("c1"), u64::MAX).unwrap();
        assert!(store.insert_client("alpha", &client_row("c1"), u64::MAX).is_err());
        assert!(store.delete_client("alpha", "c2", &[2; 32]).unwrap());
        store.delete_realm("beta", &audit("delete-realm")).unwrap();
        let counted = "SELECT c.realm, c.n, (SELECT COUNT(*) FROM clients WHERE realm = c.realm) FROM client_counts c";
        let counts = query_all(&store.db.conn(), counted, [], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)));
        assert_eq!(counts.unwrap(), [("alpha".to_string(), 2_i64, 2_i64)]);
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
}
