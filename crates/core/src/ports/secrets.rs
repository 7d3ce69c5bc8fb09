//! Server secrets, which belong to no realm, and housekeeping, which spans
//! every realm.

use super::Result;

/// Values the server makes once and keeps, such as the key that hashes
/// client secrets.
pub trait ServerSecretRepository: Send + Sync {
    /// Returns the server secret named `name`, creating it with `make` the
    /// first time; racing first calls agree on one value.
    fn server_secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>>;

    /// True when the server secret `name` has been made.
    fn has_server_secret(&self, name: &str) -> Result<bool>;
}

/// Deleting what can no longer matter.
pub trait Housekeeping: Send + Sync {
    /// Deletes, as of `now`, expired server-side tokens, revoked JWT ids and
    /// client assertion ids past their expiry, lineage of expired families,
    /// keys retired from the JWKS, and compiled artifacts no stored plugin
    /// version uses (one compiled for a version deleted meanwhile). Returns
    /// how many rows went.
    fn sweep(&self, now: i64) -> Result<usize>;
}
