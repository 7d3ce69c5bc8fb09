//! A realm's local users, with their password hashes.
//!
//! Usernames are unique per realm by the table's `UNIQUE (realm,
//! username)`, compared and sorted bytewise (`COLLATE "C"`): callers hand
//! in usernames already normalised. A creation under a taken username
//! stores nothing and says so (`ON CONFLICT DO NOTHING` waits for a racing
//! insert of the same username to commit or roll back), so racing
//! creations store exactly one user. Users go with their realm (by the
//! schema's cascade); no replica caches them, so their changes record no
//! change for followers.

use agentauth_core::ports::{AuditEntry, Result, UserRepository, UserRow, UserState};
use tokio_postgres::Row;

use crate::PgStore;
use crate::audit::record;
use crate::db::{conn, execute, get, named, query, query_opt, transaction};

/// The columns [`user_row`] reads, in order.
const COLUMNS: &str = "subject, username, display_name, email, password_hash, state, created_at";

fn user_row(r: &Row) -> Result<UserRow> {
    Ok(UserRow {
        subject: get(r, 0)?,
        username: get(r, 1)?,
        display_name: get(r, 2)?,
        email: get(r, 3)?,
        password_hash: get(r, 4)?,
        state: named(r, 5, "user state", UserState::parse)?,
        created_at: get(r, 6)?,
    })
}

impl UserRepository for PgStore {
    fn create_user(&self, realm: &str, user: &UserRow, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, user, audit) = (self.db.pool.clone(), realm.to_owned(), user.clone(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                // Only a taken username is passed over; a taken subject, or
                // a realm that does not exist, fails the write.
                let n = execute(
                    &tx,
                    "INSERT INTO users (realm, subject, username, display_name, email, password_hash, state, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (realm, username) DO NOTHING",
                    &[
                        &realm,
                        &user.subject,
                        &user.username,
                        &user.display_name,
                        &user.email,
                        &user.password_hash,
                        &user.state.as_str(),
                        &user.created_at,
                    ],
                )
                .await?;
                if n == 1 {
                    record(&tx, &realm, &audit).await?;
                }
                n == 1
            })
        })
    }

    fn user(&self, realm: &str, subject: &str) -> Result<Option<UserRow>> {
        let (pool, realm, subject) = (self.db.pool.clone(), realm.to_owned(), subject.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql = format!("SELECT {COLUMNS} FROM users WHERE realm = $1 AND subject = $2");
            query_opt(&c, &sql, &[&realm, &subject]).await?.as_ref().map(user_row).transpose()
        })
    }

    fn user_by_username(&self, realm: &str, username: &str) -> Result<Option<UserRow>> {
        let (pool, realm, username) = (self.db.pool.clone(), realm.to_owned(), username.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql = format!("SELECT {COLUMNS} FROM users WHERE realm = $1 AND username = $2");
            query_opt(&c, &sql, &[&realm, &username]).await?.as_ref().map(user_row).transpose()
        })
    }

    fn users(&self, realm: &str, after: &str, limit: i64) -> Result<Vec<UserRow>> {
        let (pool, realm, after) = (self.db.pool.clone(), realm.to_owned(), after.to_owned());
        self.db.run(async move {
            let c = conn(&pool).await?;
            let sql =
                format!("SELECT {COLUMNS} FROM users WHERE realm = $1 AND username > $2 ORDER BY username LIMIT $3");
            query(&c, &sql, &[&realm, &after, &limit]).await?.iter().map(user_row).collect()
        })
    }

    fn set_user_state(&self, realm: &str, subject: &str, state: UserState, audit: &AuditEntry) -> Result<bool> {
        self.update(realm, subject, "state", state.as_str(), audit)
    }

    fn set_user_password(&self, realm: &str, subject: &str, password_hash: &str, audit: &AuditEntry) -> Result<bool> {
        self.update(realm, subject, "password_hash", password_hash, audit)
    }

    fn delete_user(&self, realm: &str, subject: &str, audit: &AuditEntry) -> Result<bool> {
        let (pool, realm, subject, audit) = (self.db.pool.clone(), realm.to_owned(), subject.to_owned(), audit.clone());
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n =
                    execute(&tx, "DELETE FROM users WHERE realm = $1 AND subject = $2", &[&realm, &subject]).await?;
                if n == 1 {
                    record(&tx, &realm, &audit).await?;
                }
                n == 1
            })
        })
    }
}

impl PgStore {
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
        let (pool, realm, subject, value, audit) =
            (self.db.pool.clone(), realm.to_owned(), subject.to_owned(), value.to_owned(), audit.clone());
        let sql = format!("UPDATE users SET {column} = $3 WHERE realm = $1 AND subject = $2");
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let n = execute(&tx, &sql, &[&realm, &subject, &value]).await?;
                if n == 1 {
                    record(&tx, &realm, &audit).await?;
                }
                n == 1
            })
        })
    }
}
