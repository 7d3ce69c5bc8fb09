//! SQLite storage for agentauth: realms, clients, signing keys, plugins and
//! server-side tokens.
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a row
//! acknowledged to a client survives a crash or power loss. Every write is
//! one `BEGIN IMMEDIATE` transaction: it either lands whole or not at all.
//! Schema changes are numbered migrations applied at open.
//!
//! Secrets never reach this crate in the clear: callers hand in keyed
//! hashes of client secrets and tokens.

mod migrations;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use agentauth_core::{Client, ClientAttributes, ClientMetadata};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

/// A storage failure. Callers answer `server_error`; the text is logged.
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage: {}", self.0)
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self(format!("stored JSON is invalid: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A realm's stored configuration, as JSON the server interprets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmRow {
    pub name: String,
    pub settings: String,
}

/// A stored signing key. The private key is PKCS#8.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub alg: String,
    pub pkcs8: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow").field("alg", &self.alg).field("created_at", &self.created_at).finish_non_exhaustive()
    }
}

/// One stored version of a realm's plugin.
#[derive(Clone, PartialEq, Eq)]
pub struct PluginRow {
    pub name: String,
    pub version: i64,
    pub hook: String,
    pub sha256: String,
    pub component: Vec<u8>,
}

impl std::fmt::Debug for PluginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("hook", &self.hook)
            .field("sha256", &self.sha256)
            .field("size", &self.component.len())
            .finish()
    }
}

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

/// What a server-side token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An opaque access token; its grant is the token's claims.
    Access,
    /// A refresh token; its grant says what it may be refreshed into.
    Refresh,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Refresh => "refresh",
        }
    }
}

/// The database. One connection, serialised by a mutex: SQLite allows one
/// writer at a time anyway, and every statement here is short.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&mut conn)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction half
        // done (rusqlite rolls back on drop), so the connection is usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed if `f`
    /// returns `Ok`.
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Returns the server secret named `name`, creating it with `make` the
    /// first time. Used for the key that hashes client secrets.
    pub fn server_secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
        self.write(|tx| {
            let existing: Option<Vec<u8>> =
                tx.query_row("SELECT value FROM server_secrets WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            if let Some(value) = existing {
                return Ok(value);
            }
            let value = make();
            tx.execute("INSERT INTO server_secrets (name, value) VALUES (?1, ?2)", params![name, value])?;
            Ok(value)
        })
    }

    // ---- realms ----

    pub fn realm(&self, name: &str) -> Result<Option<RealmRow>> {
        let conn = self.conn();
        let row = conn
            .query_row("SELECT name, settings FROM realms WHERE name = ?1", [name], |r| {
                Ok(RealmRow { name: r.get(0)?, settings: r.get(1)? })
            })
            .optional()?;
        Ok(row)
    }

    /// Creates the realm unless it exists; returns whether it was created.
    pub fn create_realm_if_absent(&self, name: &str, settings: &str, now: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO realms (name, settings, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
                params![name, settings, now],
            )?;
            Ok(n == 1)
        })
    }

    // ---- keys ----

    /// The realm's signing keys, newest first.
    pub fn keys(&self, realm: &str) -> Result<Vec<KeyRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT alg, pkcs8, created_at FROM signing_keys WHERE realm = ?1 ORDER BY created_at DESC, rowid DESC",
        )?;
        let rows =
            stmt.query_map([realm], |r| Ok(KeyRow { alg: r.get(0)?, pkcs8: r.get(1)?, created_at: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Stores the realm's first signing key, unless another request stored
    /// one first; returns the realm's newest key either way, so concurrent
    /// first uses agree on one key.
    pub fn insert_first_key(&self, realm: &str, key: &KeyRow) -> Result<KeyRow> {
        self.write(|tx| {
            let existing: Option<KeyRow> = tx
                .query_row(
                    "SELECT alg, pkcs8, created_at FROM signing_keys WHERE realm = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1",
                    [realm],
                    |r| Ok(KeyRow { alg: r.get(0)?, pkcs8: r.get(1)?, created_at: r.get(2)? }),
                )
                .optional()?;
            if let Some(existing) = existing {
                return Ok(existing);
            }
            tx.execute(
                "INSERT INTO signing_keys (realm, alg, pkcs8, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![realm, key.alg, key.pkcs8, key.created_at],
            )?;
            Ok(key.clone())
        })
    }

    // ---- plugins ----

    /// Stores a new version of a plugin and makes it the active one;
    /// returns the version number.
    pub fn add_plugin_version(
        &self,
        realm: &str,
        name: &str,
        hook: &str,
        sha256: &str,
        component: &[u8],
        now: i64,
    ) -> Result<i64> {
        self.write(|tx| {
            let version: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM plugins WHERE realm = ?1 AND name = ?2",
                params![realm, name],
                |r| r.get(0),
            )?;
            tx.execute("UPDATE plugins SET active = 0 WHERE realm = ?1 AND name = ?2", params![realm, name])?;
            tx.execute(
                "INSERT INTO plugins (realm, name, version, hook, sha256, component, created_at, active)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1)",
                params![realm, name, version, hook, sha256, component, now],
            )?;
            Ok(version)
        })
    }

    /// The active version of each of the realm's plugins.
    pub fn active_plugins(&self, realm: &str) -> Result<Vec<PluginRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT name, version, hook, sha256, component FROM plugins WHERE realm = ?1 AND active = 1 ORDER BY name",
        )?;
        let rows = stmt.query_map([realm], |r| {
            Ok(PluginRow {
                name: r.get(0)?,
                version: r.get(1)?,
                hook: r.get(2)?,
                sha256: r.get(3)?,
                component: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    // ---- clients ----

    /// Stores a newly registered client. Fails if the id is taken.
    pub fn insert_client(&self, realm: &str, row: &ClientRow) -> Result<()> {
        let c = &row.client;
        let metadata = serde_json::to_string(&c.metadata)?;
        let attributes = serde_json::to_string(&c.attributes)?;
        self.write(|tx| {
            tx.execute(
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
            Ok(())
        })
    }

    pub fn client(&self, realm: &str, client_id: &str) -> Result<Option<ClientRow>> {
        let conn = self.conn();
        let row = conn
            .query_row(
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
            )
            .optional()?;
        let Some((client_id, metadata, attributes, is_ai_agent, secret_hash, registration_token_hash, issued_at)) = row
        else {
            return Ok(None);
        };
        let metadata: ClientMetadata = serde_json::from_str(&metadata)?;
        let attributes: ClientAttributes = serde_json::from_str(&attributes)?;
        Ok(Some(ClientRow {
            client: Client { client_id, metadata, attributes, is_ai_agent, issued_at },
            secret_hash,
            registration_token_hash,
        }))
    }

    /// How many clients the realm has.
    pub fn count_clients(&self, realm: &str) -> Result<i64> {
        Ok(self.conn().query_row("SELECT COUNT(*) FROM clients WHERE realm = ?1", [realm], |r| r.get(0))?)
    }

    /// How many server-side tokens of `kind` the realm holds.
    pub fn count_tokens(&self, realm: &str, kind: TokenKind) -> Result<i64> {
        Ok(self.conn().query_row(
            "SELECT COUNT(*) FROM tokens WHERE realm = ?1 AND kind = ?2",
            params![realm, kind.as_str()],
            |r| r.get(0),
        )?)
    }

    // ---- server-side tokens ----

    /// Stores tokens by their keyed hashes, all in one commit.
    pub fn insert_tokens(&self, realm: &str, tokens: &[NewToken<'_>]) -> Result<()> {
        self.write(|tx| tokens.iter().try_for_each(|t| insert_token(tx, realm, t)))
    }

    /// The grant of a live token of `kind` in `realm`: a token of another
    /// realm, or expired, is not found.
    pub fn token(&self, hash: &[u8], realm: &str, kind: TokenKind, now: i64) -> Result<Option<String>> {
        let conn = self.conn();
        let grant = conn
            .query_row(
                "SELECT grant_json FROM tokens WHERE hash = ?1 AND realm = ?2 AND kind = ?3 AND expires_at > ?4",
                params![hash, realm, kind.as_str(), now],
                |r| r.get(0),
            )
            .optional()?;
        Ok(grant)
    }

    /// Replaces a live token of `kind` with its successors in one commit;
    /// returns false, changing nothing, if the old token was already used,
    /// so a refresh token can be used once even by racing requests.
    pub fn rotate_token(
        &self,
        realm: &str,
        kind: TokenKind,
        old_hash: &[u8],
        successors: &[NewToken<'_>],
        now: i64,
    ) -> Result<bool> {
        self.write(|tx| {
            let removed = tx.execute(
                "DELETE FROM tokens WHERE hash = ?1 AND realm = ?2 AND kind = ?3 AND expires_at > ?4",
                params![old_hash, realm, kind.as_str(), now],
            )?;
            if removed == 1 {
                successors.iter().try_for_each(|t| insert_token(tx, realm, t))?;
            }
            Ok(removed == 1)
        })
    }
}

/// A server-side token to store: its keyed hash, what it is, its grant
/// as JSON, and when it expires.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub hash: &'a [u8],
    pub kind: TokenKind,
    pub grant: &'a str,
    pub expires_at: i64,
}

fn insert_token(tx: &rusqlite::Transaction<'_>, realm: &str, t: &NewToken<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO tokens (hash, realm, kind, grant_json, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![t.hash, realm, t.kind.as_str(), t.grant, t.expires_at],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentauth_core::{AuthMethod, GrantType};

    fn client_row(id: &str) -> ClientRow {
        ClientRow {
            client: Client {
                client_id: id.into(),
                metadata: ClientMetadata {
                    redirect_uris: vec!["https://a.example/cb".into()],
                    grant_types: vec![GrantType::ClientCredentials],
                    response_types: vec!["token".into()],
                    client_name: Some("agent".into()),
                    scope: "read write".into(),
                    token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                },
                attributes: ClientAttributes { stateless_tokens_enabled: true, ..Default::default() },
                is_ai_agent: true,
                issued_at: 42,
            },
            secret_hash: vec![1; 32],
            registration_token_hash: vec![2; 32],
        }
    }

    #[test]
    fn clients_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let store = Store::open(&path).unwrap();
            store.create_realm_if_absent("alpha", "{}", 0).unwrap();
            store.insert_client("alpha", &client_row("c1")).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.client("alpha", "c1").unwrap(), Some(client_row("c1")));
        assert_eq!(store.client("beta", "c1").unwrap(), None);
    }

    #[test]
    fn duplicate_client_id_is_refused() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.insert_client("alpha", &client_row("c1")).unwrap();
        assert!(store.insert_client("alpha", &client_row("c1")).is_err());
    }

    #[test]
    fn client_of_unknown_realm_is_refused() {
        let store = Store::open_in_memory().unwrap();
        assert!(store.insert_client("nowhere", &client_row("c1")).is_err());
    }

    #[test]
    fn first_key_is_shared_by_racing_callers() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        let a = KeyRow { alg: "ES256".into(), pkcs8: vec![1], created_at: 1 };
        let b = KeyRow { alg: "ES256".into(), pkcs8: vec![2], created_at: 1 };
        assert_eq!(store.insert_first_key("alpha", &a).unwrap(), a);
        assert_eq!(store.insert_first_key("alpha", &b).unwrap(), a);
        assert_eq!(store.keys("alpha").unwrap(), vec![a]);
    }

    #[test]
    fn a_refresh_token_rotates_once() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        store.create_realm_if_absent("beta", "{}", 0).unwrap();
        let token = |hash, grant| NewToken { hash, kind: TokenKind::Refresh, grant, expires_at: 100 };
        store.insert_tokens("alpha", &[token(b"old", "{\"g\":1}")]).unwrap();
        assert_eq!(store.token(b"old", "beta", TokenKind::Refresh, 0).unwrap(), None, "other realm");
        assert_eq!(store.token(b"old", "alpha", TokenKind::Access, 0).unwrap(), None, "other kind");
        let refresh = TokenKind::Refresh;
        assert!(!store.rotate_token("beta", refresh, b"old", &[token(b"new", "{}")], 0).unwrap());
        assert!(store.rotate_token("alpha", refresh, b"old", &[token(b"new", "{\"g\":2}")], 0).unwrap());
        assert!(!store.rotate_token("alpha", refresh, b"old", &[token(b"x", "{}")], 0).unwrap(), "used twice");
        assert_eq!(store.token(b"x", "alpha", TokenKind::Refresh, 0).unwrap(), None);
        assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 100).unwrap(), None, "expired");
        assert_eq!(store.token(b"new", "alpha", TokenKind::Refresh, 99).unwrap().as_deref(), Some("{\"g\":2}"));
    }

    #[test]
    fn plugin_versions_count_up_and_the_newest_is_active() {
        let store = Store::open_in_memory().unwrap();
        store.create_realm_if_absent("alpha", "{}", 0).unwrap();
        assert_eq!(store.add_plugin_version("alpha", "p", "may-act", "aa", b"v1", 0).unwrap(), 1);
        assert_eq!(store.add_plugin_version("alpha", "p", "may-act", "bb", b"v2", 0).unwrap(), 2);
        let active = store.active_plugins("alpha").unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!((active[0].version, active[0].component.as_slice()), (2, &b"v2"[..]));
    }
}
