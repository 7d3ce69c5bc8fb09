//! Following what other processes sharing the store changed.
//!
//! A replica holds realm runtimes (settings, keys, compiled plugins) and,
//! in the store, clients. Every write that changes one of them records a
//! change in the same commit ([`Coordination`]); a follower reads them in
//! commit order and rebuilds the runtimes they touch, so what one replica
//! changed, every other acts on as soon as it follows. A rebuild publishes
//! a whole new runtime: no request sees a mix of versions.
//!
//! [`Coordination`]: agentauth_core::ports::Coordination

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use agentauth_core::ports::{CHANGES_KEPT_FOR, ChangeTopic};

use crate::Service;

/// How many changes one round reads at a time.
const PAGE: i64 = 500;

/// A follower that has not read the changes for this long may have missed
/// some that were swept meanwhile: it forgets everything instead.
const FORGET_AFTER: Duration = Duration::from_secs(CHANGES_KEPT_FOR.unsigned_abs() / 2);

/// Where a follower stands: the last change it acted on.
#[derive(Debug)]
pub struct Follower {
    after: i64,
    caught_up: Instant,
}

impl Follower {
    /// The number of the last change acted on.
    pub fn position(&self) -> i64 {
        self.after
    }
}

/// Why a round of following failed; it is retried from where it stood.
#[derive(Debug)]
pub struct FollowError(pub String);

impl std::fmt::Display for FollowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FollowError {}

impl Service {
    /// A follower starting at the newest change. Start it before loading
    /// any realm, so nothing loaded can predate where it starts.
    pub fn start_following(&self) -> Result<Follower, FollowError> {
        let after = self.store.latest_change().map_err(|e| FollowError(format!("reading the change feed: {e}")))?;
        Ok(Follower { after, caught_up: Instant::now() })
    }

    /// Acts on every change committed since `follower` last followed:
    /// rebuilds the loaded realms whose settings, keys or plugins changed
    /// (forgetting deleted ones); changed clients the store forgot as it
    /// read them. Returns how many changes it read. On failure nothing is
    /// skipped: the next round starts where this one did.
    pub fn follow(&self, follower: &mut Follower) -> Result<usize, FollowError> {
        let failed = |e: &dyn std::fmt::Display| FollowError(format!("following changes: {e}"));
        if follower.caught_up.elapsed() > FORGET_AFTER {
            // Changes may have been swept unread: start again from now,
            // with nothing cached that could predate it.
            let latest = self.store.latest_change().map_err(|e| failed(&e))?;
            self.store.forget_cached();
            for realm in self.realms.loaded_names() {
                self.realms.rebuild_if_loaded(&realm, &self.sources()).map_err(|e| failed(&e.description))?;
            }
            tracing::warn!("fell behind the change feed: forgot cached clients and rebuilt every realm");
            *follower = Follower { after: latest, caught_up: Instant::now() };
            return Ok(0);
        }
        let mut read = 0;
        loop {
            let changes = self.store.changes_after(follower.after, PAGE).map_err(|e| failed(&e))?;
            let Some(last) = changes.last().map(|c| c.seq) else {
                follower.caught_up = Instant::now();
                return Ok(read);
            };
            let realms: BTreeSet<&str> = changes
                .iter()
                .filter(|c| matches!(c.topic, ChangeTopic::Realm | ChangeTopic::Keys | ChangeTopic::Plugins))
                .map(|c| c.realm.as_str())
                .collect();
            for realm in realms {
                let rebuilt = self
                    .realms
                    .rebuild_if_loaded(realm, &self.sources())
                    .map_err(|e| failed(&format!("rebuilding realm {realm}: {}", e.description)))?;
                if rebuilt {
                    tracing::debug!(realm, "rebuilt the realm after a change");
                }
            }
            read += changes.len();
            follower.after = last;
        }
    }
}
