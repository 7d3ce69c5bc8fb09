//! The audit log of administrative changes.
//!
//! Entries are appended by the changes they record (creating a realm,
//! pushing a plugin, rotating a key, ...), in the same commit, so there is
//! no method to append one alone. They belong to a realm's identity, not
//! its name, and outlive the realm.

use super::Result;

/// One administrative change: who, when, what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub plugin: Option<String>,
    pub version: Option<i64>,
    pub sha256: Option<String>,
    pub detail: Option<String>,
}

/// Reading the audit log.
pub trait AuditRepository: Send + Sync {
    /// The realm's audit log, oldest first, at most `limit` entries after
    /// entry `after`, each with its id: the entries of this realm, not of
    /// an earlier, deleted realm of the same name.
    fn audit(&self, realm: &str, after: i64, limit: i64) -> Result<Vec<(i64, AuditEntry)>>;

    /// The id of the realm's newest audit entry (0 if it has none).
    fn latest_audit_id(&self, realm: &str) -> Result<i64>;

    /// How far the realm's audit has been delivered to event receiver
    /// `receiver` (every entry up to this id), if delivery there started.
    fn event_cursor(&self, realm: &str, receiver: &str) -> Result<Option<i64>>;

    /// Records that the realm's audit is delivered to `receiver` up to
    /// entry `upto`. Kept until the realm is deleted.
    fn set_event_cursor(&self, realm: &str, receiver: &str, upto: i64) -> Result<()>;
}
