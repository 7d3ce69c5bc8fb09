//! A realm's local users, with their password hashes.
//!
//! Usernames are unique per realm by the table's `UNIQUE (realm,
//! username)`, compared bytewise (SQLite's `BINARY` collation): callers
//! hand in usernames already normalised. A creation under a taken username
//! stores nothing and says so, in its own savepoint, so racing creations
//! of one username store exactly one user. Users go with their realm (by
//! the schema's cascade); no other process caches them, so their changes
//! record no change for followers.

use rusqlite::params;

use crate::audit::record;
use crate::engine::{execute, query_all, query_opt};
use crate::stored::Stored;
use crate::{AuditEntry, Result, Store, UserRepository, UserRow, UserState};

/// The columns [`user_row`] reads, in order.
const COLUMNS: &str = "subject, username, display_name, email, password_hash, state, created_at";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        subject: r.get(0)?,
        username: r.get(1)?,
        display_name: r.get(2)?,
        email: r.get(3)?,
        password_hash: r.get(4)?,
        state: r.get::<_, Stored<UserState>>(5)?.0,
        created_at: r.get(6)?,
    })
}

impl UserRepository for Store {
    fn create_user(&self, realm: &str, user: &UserRow, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            // Only a taken username is passed over; a taken subject, or a
            // realm that does not exist, fails the write.
            let n = execute(
                tx,
                "INSERT INTO users (realm, subject, username, display_name, email, password_hash, state, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (realm, username) DO NOTHING",
                params![
                    realm,
                    user.subject,
                    user.username,
                    user.display_name,
                    user.email,
                    user.password_hash,
                    user.state.as_str(),
                    user.created_at
                ],
            )?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }

    fn user(&self, realm: &str, subject: &str) -> Result<Option<UserRow>> {
        query_opt(
            &self.db.conn(),
            &format!("SELECT {COLUMNS} FROM users WHERE realm = ?1 AND subject = ?2"),
            [realm, subject],
            user_row,
        )
    }

    fn user_by_username(&self, realm: &str, username: &str) -> Result<Option<UserRow>> {
        query_opt(
            &self.db.conn(),
            &format!("SELECT {COLUMNS} FROM users WHERE realm = ?1 AND username = ?2"),
            [realm, username],
            user_row,
        )
    }

    fn users(&self, realm: &str, after: &str, limit: i64) -> Result<Vec<UserRow>> {
        query_all(
            &self.db.conn(),
            &format!("SELECT {COLUMNS} FROM users WHERE realm = ?1 AND username > ?2 ORDER BY username LIMIT ?3"),
            params![realm, after, limit],
            user_row,
        )
    }

    fn set_user_state(&self, realm: &str, subject: &str, state: UserState, audit: &AuditEntry) -> Result<bool> {
        self.update(realm, subject, "state", state.as_str(), audit)
    }

    fn set_user_password(&self, realm: &str, subject: &str, password_hash: &str, audit: &AuditEntry) -> Result<bool> {
        self.update(realm, subject, "password_hash", password_hash, audit)
    }

    fn delete_user(&self, realm: &str, subject: &str, audit: &AuditEntry) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(tx, "DELETE FROM users WHERE realm = ?1 AND subject = ?2", [realm, subject])?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }
}

impl Store {
    /// Sets one column of the user's row (`column` is one of this module's
    /// own names, never a caller's), recording `audit`; whether the user
    /// exists.
    fn update(
        &self,
        realm: &str,
        subject: &str,
        column: &'static str,
        value: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.db.write(|tx| {
            let n = execute(
                tx,
                &format!("UPDATE users SET {column} = ?3 WHERE realm = ?1 AND subject = ?2"),
                [realm, subject, value],
            )?;
            if n == 1 {
                record(tx, realm, audit)?;
            }
            Ok(n == 1)
        })
    }
}
