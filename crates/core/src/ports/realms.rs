//! Realms, their settings and their admins: the unit of tenancy, which
//! everything else stored belongs to.

use super::{AuditEntry, Result};

/// A realm's stored configuration, as JSON the server interprets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmRow {
    pub name: String,
    pub settings: String,
}

/// A credential that administers one realm. Its token is only ever
/// stored as a keyed hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmAdmin {
    pub realm: String,
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// Realms, their settings and admins.
pub trait RealmRepository: Send + Sync {
    /// The realm named `name`, if there is one.
    fn realm(&self, name: &str) -> Result<Option<RealmRow>>;

    /// Creates the realm unless it exists; returns whether it was created.
    fn create_realm_if_absent(&self, name: &str, settings: &str, now: i64) -> Result<bool>;

    /// Every realm's name, sorted.
    fn realm_names(&self) -> Result<Vec<String>>;

    /// Creates a realm, recording `audit` in the same commit; false if it
    /// exists. A realm has an identity apart from its name: one created
    /// under a deleted realm's name starts an audit log of its own.
    fn create_realm(&self, name: &str, settings: &str, audit: &AuditEntry) -> Result<bool>;

    /// Replaces the realm's settings JSON, recording `audit`; false if
    /// there is no such realm.
    fn set_realm_settings(&self, realm: &str, settings: &str, audit: &AuditEntry) -> Result<bool>;

    /// Deletes a realm and everything of it (clients, keys, plugins and
    /// the compiled artifacts no other realm uses, tokens, revocations,
    /// admins), recording `audit` first; false if there was no such realm.
    /// Its audit log stays, under the deleted realm's identity: a realm
    /// created later under the same name starts a log of its own.
    fn delete_realm(&self, name: &str, audit: &AuditEntry) -> Result<bool>;

    /// Adds a realm admin, whose token has the keyed hash `token_hash`,
    /// recording `audit`. Fails if the realm does not exist.
    fn create_realm_admin(&self, admin: &RealmAdmin, token_hash: &[u8], audit: &AuditEntry) -> Result<()>;

    /// The realm's admins, oldest first.
    fn realm_admins(&self, realm: &str) -> Result<Vec<RealmAdmin>>;

    /// The realm admin whose token has this keyed hash.
    fn realm_admin_by_token(&self, token_hash: &[u8]) -> Result<Option<RealmAdmin>>;

    /// Removes a realm admin, recording `audit`; false if there was none
    /// with that id.
    fn delete_realm_admin(&self, realm: &str, id: &str, audit: &AuditEntry) -> Result<bool>;
}
