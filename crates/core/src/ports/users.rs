//! A realm's local users: people who sign in with a username and a
//! password, each known to tokens by a subject of their own.
//!
//! A user's subject is generated once (see [`crate::user`]) and never
//! changes, whatever becomes of the username; it is never a client's id
//! nor an agent's `(age!<client_id>)`. Usernames are unique within a
//! realm as stored: callers normalise them first, and the store compares
//! them byte for byte. Only the password's hash crosses this trait, as a
//! PHC string the store keeps whole without reading it.
//!
//! There is no count of failed logins here: login attempts are throttled
//! in memory, by user and by source, so a guesser is slowed without
//! anyone being able to lock a user out by failing on purpose.

use super::{AuditEntry, Result};

crate::vocabulary::vocabulary! {
    /// Whether a user may sign in; stored by its name.
    pub enum UserState {
        /// Signs in.
        Active = "active",
        /// Kept, with its subject and password, but refused at every login
        /// until enabled again.
        Disabled = "disabled",
    }
}

/// A user as stored, with its password's hash.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The user's subject (`sub`) in tokens: stable, opaque, unique.
    pub subject: String,
    /// The name the user signs in with, normalised (unique in its realm).
    pub username: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The password's hash, a PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
    pub state: UserState,
    pub created_at: i64,
}

impl std::fmt::Debug for UserRow {
    /// Everything but the password's hash, which is no one's business in a
    /// log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("subject", &self.subject)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("email", &self.email)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A realm's local users.
pub trait UserRepository: Send + Sync {
    /// Stores a new user, recording `audit` in the same commit; false, and
    /// nothing stored, when the realm already has a user of that username
    /// (racing creations of one username: exactly one is stored). Fails if
    /// the subject is taken, or the realm does not exist.
    fn create_user(&self, realm: &str, user: &UserRow, audit: &AuditEntry) -> Result<bool>;

    /// The realm's user of subject `subject`.
    fn user(&self, realm: &str, subject: &str) -> Result<Option<UserRow>>;

    /// The realm's user of username `username` (normalised, compared
    /// exactly).
    fn user_by_username(&self, realm: &str, username: &str) -> Result<Option<UserRow>>;

    /// The realm's users in order of username (bytewise), at most `limit`
    /// of them whose username comes after `after` ("" for the first page).
    fn users(&self, realm: &str, after: &str, limit: i64) -> Result<Vec<UserRow>>;

    /// Sets the user's state, recording `audit`; false if the realm has no
    /// user of that subject.
    fn set_user_state(&self, realm: &str, subject: &str, state: UserState, audit: &AuditEntry) -> Result<bool>;

    /// Replaces the user's password hash, recording `audit`; false if the
    /// realm has no user of that subject.
    fn set_user_password(&self, realm: &str, subject: &str, password_hash: &str, audit: &AuditEntry) -> Result<bool>;

    /// Deletes the user, recording `audit`; false if the realm had no user
    /// of that subject.
    fn delete_user(&self, realm: &str, subject: &str, audit: &AuditEntry) -> Result<bool>;
}
