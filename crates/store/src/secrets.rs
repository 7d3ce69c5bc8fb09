//! Server secrets: values the server makes once and keeps in its database,
//! such as the key that hashes client secrets. They belong to no realm.

use rusqlite::params;

use crate::engine::{execute, exists, query_opt};
use crate::{Result, ServerSecretRepository, Store};

impl Store {
    /// Returns the server secret named `name`, creating it with `make` the
    /// first time. Used for the key that hashes client secrets.
    pub fn server_secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>> {
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
    pub fn has_server_secret(&self, name: &str) -> Result<bool> {
        exists(&self.db.conn(), "SELECT EXISTS (SELECT 1 FROM server_secrets WHERE name = ?1)", [name])
    }
}

impl ServerSecretRepository for Store {
    fn server_secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>> {
        Store::server_secret(self, name, make)
    }

    fn has_server_secret(&self, name: &str) -> Result<bool> {
        Store::has_server_secret(self, name)
    }
}
