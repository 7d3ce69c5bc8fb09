//! Housekeeping: deleting what can no longer matter. It spans aggregates
//! (tokens, revocations, keys, compiled plugins), so it lives apart from
//! each of them and runs as one write.

use crate::engine::execute;
use crate::plugins::delete_unused_artifacts;
use crate::{CHANGES_KEPT_FOR, Housekeeping, Result, Store};

impl Housekeeping for Store {
    fn sweep(&self, now: i64) -> Result<usize> {
        self.db.write(|tx| {
            let mut n = 0;
            n += execute(tx, "DELETE FROM tokens WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM revoked_jwts WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM client_assertions WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM token_lineage WHERE expires_at <= ?1", [now])?;
            n += execute(tx, "DELETE FROM signing_keys WHERE retires_at IS NOT NULL AND retires_at <= ?1", [now])?;
            n += delete_unused_artifacts(tx)?;
            n += execute(tx, "DELETE FROM changes WHERE at <= ?1", [now.saturating_sub(CHANGES_KEPT_FOR)])?;
            Ok(n)
        })
    }
}
