//! Server secrets: values the server makes once and keeps in its database,
//! such as the key that hashes client secrets. They belong to no realm.

use rusqlite::params;

use crate::engine::{execute, exists, query_opt};
use crate::{Result, ServerSecretRepository, Store};

impl ServerSecretRepository for Store {
    /// The check and the insert are one write, and writes run one at a
    /// time, so racing first calls agree on one value.
    fn server_secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>> {
        self.db.write(|tx| {
            let existing: Option<Vec<u8>> =
                query_opt(tx, "SELECT value FROM server_secrets WHERE name = ?1", [name], |r| r.get(0))?;
            if let Some(value) = existing {
                return Ok(value);
            }
            let value = make();
            execute(tx, "INSERT INTO server_secrets (name, value) VALUES (?1, ?2)", params![name, value])?;
            Ok(value)
        })
    }

    /// True when the server secret `name` has been made.
    fn has_server_secret(&self, name: &str) -> Result<bool> {
        exists(&self.db.conn(), "SELECT EXISTS (SELECT 1 FROM server_secrets WHERE name = ?1)", [name])
    }
}
