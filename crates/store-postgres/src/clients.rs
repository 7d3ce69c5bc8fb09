//! Registered clients, with the keyed hashes of their credentials.
//!
//! Registration counts against a realm's cap in the same transaction as
//! the insert, through the realm's row of `client_counts`: registrations
//! are made in batches (see `batch`), each of which locks the row once,
//! which makes racing batches (of any process) queue, and checks the cap
//! per registration against the count it holds. RFC 7592 updates and deletions are
//! compare-and-swaps on the registration token's hash, in one statement.
//! Every token request authenticates a client, so [`PgStore`] reads them
//! through core's `CachedClients` layered over [`PgClients`], which has
//! the SQL; an update or deletion is a change other replicas follow, to
//! forget the client they cache.

use agentauth_core::ports::{
    AuditEntry, ChangeTopic, ClientFilter, ClientRepository, ClientRow, ClientState, Error, ErrorKind, Result,
};
use agentauth_core::{Client, ClientAttributes, ClientMetadata};
use deadpool_postgres::GenericClient;

use crate::PgStore;
use crate::audit::record;
use crate::batch::{Statement, Write};
use crate::coordination::record_change;
use crate::db::{Db, conn, execute, get, query, query_one, query_opt, transaction};
use crate::tokens::revoke_derived_from_client;

/// Whether the realm has the client, by (realm, client_id).
pub(crate) const CLIENT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM clients WHERE realm = $1 AND client_id = $2)";

/// Locks a realm's count of clients until commit (making its row if it has
/// none yet), and returns it: registrations of the realm in other batches,
/// other processes included, wait for this one's commit.
pub(crate) const LOCK_COUNT: &str = "INSERT INTO client_counts (realm, n) VALUES ($1, 0)
     ON CONFLICT (realm) DO UPDATE SET n = client_counts.n
     RETURNING n";
/// Adds a batch's registrations to the realm's count it locked.
pub(crate) const ADD_TO_COUNT: &str = "UPDATE client_counts SET n = n + $2 WHERE realm = $1";

/// A registration to make: the row, its JSON, and the realm's cap.
pub(crate) struct NewClient {
    pub(crate) realm: String,
    row: ClientRow,
    metadata: String,
    attributes: String,
    pub(crate) max: i64,
}

impl NewClient {
    pub(crate) fn new(realm: &str, row: &ClientRow, max_clients: u64) -> Result<Self> {
        let (metadata, attributes) = client_json(&row.client)?;
        let max = i64::try_from(max_clients).unwrap_or(i64::MAX);
        Ok(Self { realm: realm.to_owned(), row: row.clone(), metadata, attributes, max })
    }

    /// The insert of the row, once the count let it in.
    pub(crate) fn insert(&self) -> Statement<'_> {
        let c = &self.row.client;
        Statement {
            sql: "INSERT INTO clients (realm, client_id, metadata, attributes, is_ai_agent, secret_hash,
                                       registration_token_hash, issued_at, expires_at, last_used_at, owner)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8, $10)",
            params: vec![
                &self.realm,
                &c.client_id,
                &self.metadata,
                &self.attributes,
                &c.is_ai_agent,
                &self.row.secret_hash,
                &self.row.registration_token_hash,
                &c.issued_at,
                &self.row.expires_at,
                &c.attributes.owner,
            ],
        }
    }
}

/// The clients table, uncached: what the cache in [`PgStore`] reads through.
pub(crate) struct PgClients {
    pub(crate) db: Db,
}

impl std::fmt::Debug for PgClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgClients").finish_non_exhaustive()
    }
}

impl ClientRepository for PgClients {
    /// Made in a batch (see `batch`): the realm's count is locked once per
    /// batch, and each registration of the batch checked against it as
    /// the registrations before it left it; a failed insert (a taken id)
    /// rolls back alone and counts nothing.
    fn insert_client(&self, realm: &str, row: &ClientRow, max_clients: u64) -> Result<bool> {
        if max_clients == 0 {
            return Ok(false);
        }
        let client = NewClient::new(realm, row, max_clients)?;
        self.db.write(Write::Client(Box::new(client)))?.client()
    }

    /// The check and the replacement are one statement: of racing updates
    /// presenting one token, the first takes the row's lock and rotates the
    /// hash; the others, let in after its commit, find the new hash and
    /// change nothing.
    fn update_client(&self, realm: &str, row: &ClientRow, token_hash: &[u8]) -> Result<bool> {
        let (metadata, attributes) = client_json(&row.client)?;
        let (pool, realm, row, token_hash) = (self.db.pool.clone(), realm.to_owned(), row.clone(), token_hash.to_vec());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let c = &row.client;
                let n = execute(
                    &tx,
                    "UPDATE clients SET metadata = $3, attributes = $4, registration_token_hash = $5, owner = $7
                     WHERE realm = $1 AND client_id = $2 AND registration_token_hash = $6",
                    &[
                        &realm,
                        &c.client_id,
                        &metadata,
                        &attributes,
                        &row.registration_token_hash,
                        &token_hash,
                        &c.attributes.owner,
                    ],
                )
                .await?;
                if n == 1 {
                    record_change(&tx, &realm, ChangeTopic::Client, Some(&c.client_id)).await?;
                }
                n == 1
            })
        })
    }

    fn delete_client(&self, realm: &str, client_id: &str, token_hash: &[u8]) -> Result<bool> {
        let (pool, realm, client_id, token_hash) =
            (self.db.pool.clone(), realm.to_owned(), client_id.to_owned(), token_hash.to_vec());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(
                    &tx,
                    "DELETE FROM clients WHERE realm = $1 AND client_id = $2 AND registration_token_hash = $3",
                    &[&realm, &client_id, &token_hash],
                )
                .await?;
                if n == 1 {
                    execute(&tx, "UPDATE client_counts SET n = n - 1 WHERE realm = $1", &[&realm]).await?;
                    execute(&tx, "DELETE FROM tokens WHERE realm = $1 AND client_id = $2", &[&realm, &client_id])
                        .await?;
                    revoke_derived_from_client(&tx, &realm, &client_id).await?;
                    record_change(&tx, &realm, ChangeTopic::Client, Some(&client_id)).await?;
                }
                n == 1
            })
        })
    }

    fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let (pool, realm, client_id) = (self.db.pool.clone(), realm.to_owned(), client_id.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE realm = $1 AND client_id = $2");
            let row = query_opt(&c, &sql, &[&realm, &client_id]).await?;
            row.map(|r| client_row(&realm, &r)).transpose()
        })
    }

    fn clients(&self, realm: &str, filter: &ClientFilter, after: &str, limit: i64) -> Result<Vec<ClientRow>> {
        let (pool, realm, after, filter) = (self.db.pool.clone(), realm.to_owned(), after.to_owned(), filter.clone());
        self.db.run(async move {
            let c = conn(&pool).await?;
            // Each condition is always there, and true when its filter is
            // not set: one statement, its parameters typed alike.
            let sql = format!(
                "SELECT {CLIENT_COLUMNS} FROM clients WHERE realm = $1 AND client_id > $2
                   AND ($3::TEXT IS NULL OR state = $3)
                   AND (NOT $4 OR is_ai_agent)
                   AND ($5::BIGINT IS NULL OR last_used_at < $5)
                   AND ($6::BIGINT IS NULL OR (state = 'disabled' AND tokens_valid_after < $6))
                   AND ($7::BIGINT IS NULL OR expires_at <= $7)
                   AND ($9::TEXT IS NULL OR client_id = $9)
                   AND ($10::TEXT IS NULL OR owner = $10)
                 ORDER BY client_id LIMIT $8"
            );
            let state = filter.state.map(ClientState::as_str);
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] = [
                &realm,
                &after,
                &state,
                &filter.agents_only,
                &filter.unused_since,
                &filter.disabled_before,
                &filter.expired_by,
                &limit,
                &filter.client_id,
                &filter.owner,
            ];
            let rows = query(&c, &sql, &params).await?;
            rows.iter().map(|r| client_row(&realm, r)).collect()
        })
    }

    fn touch_clients(&self, realm: &str, used: &[(String, i64)]) -> Result<()> {
        if used.is_empty() {
            return Ok(());
        }
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        let (ids, ats): (Vec<String>, Vec<i64>) = used.iter().cloned().unzip();
        self.db.run(async move {
            let c = conn(&pool).await?;
            execute(
                &c,
                "UPDATE clients SET last_used_at = GREATEST(clients.last_used_at, used.at)
                 FROM UNNEST($2::TEXT[], $3::BIGINT[]) AS used (client_id, at)
                 WHERE clients.realm = $1 AND clients.client_id = used.client_id",
                &[&realm, &ids, &ats],
            )
            .await?;
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
        let (pool, realm, client_id, audit) =
            (self.db.pool.clone(), realm.to_owned(), client_id.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = match state {
                    ClientState::Active => {
                        execute(
                            &tx,
                            "UPDATE clients SET state = 'active' WHERE realm = $1 AND client_id = $2",
                            &[&realm, &client_id],
                        )
                        .await?
                    }
                    ClientState::Disabled => execute(
                        &tx,
                        "UPDATE clients SET state = 'disabled', tokens_valid_after = GREATEST(tokens_valid_after, $3)
                             WHERE realm = $1 AND client_id = $2",
                        &[&realm, &client_id, &at],
                    )
                    .await?,
                };
                if n == 1 {
                    if state == ClientState::Disabled {
                        execute(&tx, "DELETE FROM tokens WHERE realm = $1 AND client_id = $2", &[&realm, &client_id])
                            .await?;
                        revoke_derived_from_client(&tx, &realm, &client_id).await?;
                    }
                    record(&tx, &realm, &audit).await?;
                    record_change(&tx, &realm, ChangeTopic::Client, Some(&client_id)).await?;
                }
                n == 1
            })
        })
    }

    fn remove_client(&self, realm: &str, client_id: &str, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, client_id, audit) =
            (self.db.pool.clone(), realm.to_owned(), client_id.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(&tx, "DELETE FROM clients WHERE realm = $1 AND client_id = $2", &[&realm, &client_id])
                    .await?;
                if n == 1 {
                    execute(&tx, "UPDATE client_counts SET n = n - 1 WHERE realm = $1", &[&realm]).await?;
                    execute(&tx, "DELETE FROM tokens WHERE realm = $1 AND client_id = $2", &[&realm, &client_id])
                        .await?;
                    revoke_derived_from_client(&tx, &realm, &client_id).await?;
                    record(&tx, &realm, &audit).await?;
                    record_change(&tx, &realm, ChangeTopic::Client, Some(&client_id)).await?;
                }
                n == 1
            })
        })
    }

    fn client_exists(&self, realm: &str, client_id: &str) -> Result<bool> {
        let (pool, realm, client_id) = (self.db.pool.clone(), realm.to_owned(), client_id.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            get(&query_one(&c, CLIENT_EXISTS, &[&realm, &client_id]).await?, 0)
        })
    }

    fn count_clients(&self, realm: &str) -> Result<u64> {
        let (pool, realm) = (self.db.pool.clone(), realm.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            count_clients(&c, &realm).await
        })
    }
}

/// Every method goes through the cache, which forgets what a change
/// changed; only [`ClientRepository::client`] reads from it.
impl ClientRepository for PgStore {
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

/// The columns [`client_row`] reads, in its order.
const CLIENT_COLUMNS: &str = "client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, \
                              issued_at, state, tokens_valid_after, expires_at, last_used_at";

/// A client as read from [`CLIENT_COLUMNS`], its JSON parsed.
fn client_row(realm: &str, r: &tokio_postgres::Row) -> Result<ClientRow> {
    let client_id: String = get(r, 0)?;
    let metadata: &str = get(r, 1)?;
    let attributes: &str = get(r, 2)?;
    let metadata: ClientMetadata = serde_json::from_str(metadata)
        .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its metadata is not valid"), e))?;
    let attributes: ClientAttributes = serde_json::from_str(attributes)
        .map_err(|e| Error::corrupt(format!("client {realm}/{client_id}: its attributes are not valid"), e))?;
    let state: &str = get(r, 7)?;
    let state = ClientState::parse(state).ok_or_else(|| {
        Error::new(ErrorKind::Corrupt, format!("client {realm}/{client_id}: unknown state {state:?}"))
    })?;
    Ok(ClientRow {
        client: Client { client_id, metadata, attributes, is_ai_agent: get(r, 3)?, issued_at: get(r, 6)? },
        secret_hash: get(r, 4)?,
        registration_token_hash: get(r, 5)?,
        state,
        tokens_valid_after: get(r, 8)?,
        expires_at: get(r, 9)?,
        last_used_at: get(r, 10)?,
    })
}

/// A client's metadata and attributes as the JSON stored for them.
fn client_json(c: &Client) -> Result<(String, String)> {
    let encode = |e| Error::new(ErrorKind::Other, format!("encoding client {}", c.client_id)).with_source(e);
    Ok((serde_json::to_string(&c.metadata).map_err(encode)?, serde_json::to_string(&c.attributes).map_err(encode)?))
}

/// How many clients the realm has, from the count kept beside them: one
/// row read, however many clients there are.
async fn count_clients<C: GenericClient + ?Sized>(c: &C, realm: &str) -> Result<u64> {
    let row = query_one(c, "SELECT COALESCE(MAX(n), 0) FROM client_counts WHERE realm = $1", &[&realm]).await?;
    let n: i64 = get(&row, 0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}
