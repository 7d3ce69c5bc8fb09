//! Housekeeping: deleting what can no longer matter. It spans aggregates
//! (tokens, revocations, keys, compiled plugins, the change feed), so it
//! lives apart from each of them and runs as one transaction.

use agentauth_core::ports::{CHANGES_KEPT_FOR, Housekeeping, Result};

use crate::PgStore;
use crate::db::{execute, transaction};
use crate::plugins::delete_unused_artifacts;

impl Housekeeping for PgStore {
    fn sweep(&self, now: i64) -> Result<usize> {
        let pool = self.db.pool.clone();
        let changes_before = now.saturating_sub(CHANGES_KEPT_FOR);
        self.db.run(async move {
            transaction!(&pool, |tx| {
                let mut n = 0;
                n += execute(&tx, "DELETE FROM tokens WHERE expires_at <= $1", &[&now]).await?;
                n += execute(&tx, "DELETE FROM revoked_jwts WHERE expires_at <= $1", &[&now]).await?;
                n += execute(&tx, "DELETE FROM client_assertions WHERE expires_at <= $1", &[&now]).await?;
                n += execute(&tx, "DELETE FROM token_lineage WHERE expires_at <= $1", &[&now]).await?;
                n +=
                    execute(&tx, "DELETE FROM signing_keys WHERE retires_at IS NOT NULL AND retires_at <= $1", &[&now])
                        .await?;
                n += delete_unused_artifacts(&tx).await?;
                // No follower needs a change this old: one that fell this far
                // behind forgets everything instead.
                n += execute(&tx, "DELETE FROM changes WHERE at <= $1", &[&changes_before]).await?;
                usize::try_from(n).unwrap_or(usize::MAX)
            })
        })
    }
}
