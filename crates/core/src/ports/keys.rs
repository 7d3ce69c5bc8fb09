//! A realm's signing keys and their schedule: when each starts signing
//! and when it leaves the JWKS.

use super::{AuditEntry, Result};
use crate::Algorithm;

/// A stored signing key. The private key is PKCS#8, sealed by the caller.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub alg: Algorithm,
    pub pkcs8: Vec<u8>,
    pub created_at: i64,
    /// When the key starts signing: after it has been published long
    /// enough for resource servers to have fetched it.
    pub signs_from: i64,
    /// When the key leaves the JWKS: once every token it signed expired.
    pub retires_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("signs_from", &self.signs_from)
            .field("retires_at", &self.retires_at)
            .finish_non_exhaustive()
    }
}

/// A realm's signing keys.
pub trait KeyRepository: Send + Sync {
    /// The realm's signing keys, newest first.
    fn keys(&self, realm: &str) -> Result<Vec<KeyRow>>;

    /// Adds a rotated-in key, and schedules every key not yet retiring to
    /// leave the JWKS at `old_retire_at`; records `audit`. One commit.
    fn rotate_key(&self, realm: &str, key: &KeyRow, old_retire_at: i64, audit: &AuditEntry) -> Result<()>;

    /// Stores the realm's first signing key, unless another request stored
    /// one first; returns the realm's newest key either way, so concurrent
    /// first uses agree on one key.
    fn insert_first_key(&self, realm: &str, key: &KeyRow) -> Result<KeyRow>;
}
