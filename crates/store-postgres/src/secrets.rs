//! Server secrets: values the server makes once and keeps in its database,
//! such as the key that hashes client secrets. They belong to no realm.

use agentauth_core::ports::{Result, ServerSecretRepository};

use crate::PgStore;
use crate::db::{conn, execute, get, query_one, query_opt};

impl ServerSecretRepository for PgStore {
    /// Replicas agree through the table's key: each inserts its value
    /// unless one is there (`ON CONFLICT DO NOTHING`), then reads the one
    /// that is. Within this process, racing first calls take turns, so the
    /// secret is made once.
    fn server_secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>> {
        if let Some(value) = self.stored_secret(name)? {
            return Ok(value);
        }
        let _turn = self.secret_making.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(value) = self.stored_secret(name)? {
            return Ok(value);
        }
        let (pool, name, value) = (self.db.pool.clone(), name.to_owned(), make());
        self.db.run(async move {
            let c = conn(&pool).await?;
            execute(
                &c,
                "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &value],
            )
            .await?;
            // A statement of its own, so it sees another process's value
            // committed since the insert began.
            get(&query_one(&c, "SELECT value FROM server_secrets WHERE name = $1", &[&name]).await?, 0)
        })
    }

    fn has_server_secret(&self, name: &str) -> Result<bool> {
        Ok(self.stored_secret(name)?.is_some())
    }
}

impl PgStore {
    fn stored_secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (pool, name) = (self.db.pool.clone(), name.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let row = query_opt(&c, "SELECT value FROM server_secrets WHERE name = $1", &[&name]).await?;
            row.map(|r| get(&r, 0)).transpose()
        })
    }
}
