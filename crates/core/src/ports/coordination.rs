//! What processes sharing one storage agree on: which changes each must
//! act on, which of them runs the cluster's schedule, and whether the
//! database answers at all.
//!
//! A replica keeps things in memory (realm runtimes with their settings,
//! keys and compiled plugins; clients). Every write that changes one of
//! them also records a [`Change`] in the same commit, numbered in commit
//! order, so each process can follow what every other one committed and
//! forget or rebuild what it holds. A backend with notifications wakes the
//! followers at once; every follower also polls, so a lost notification
//! costs at most one poll interval.

use std::time::Duration;

use super::Result;

/// What a change touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeTopic {
    /// The realm was created, deleted, or its settings replaced.
    Realm,
    /// A signing key was added or scheduled out.
    Keys,
    /// A plugin version was stored, activated or deleted.
    Plugins,
    /// One client was updated or deleted (`Change::client_id` names it).
    Client,
}

impl ChangeTopic {
    /// The topic's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Realm => "realm",
            Self::Keys => "keys",
            Self::Plugins => "plugins",
            Self::Client => "client",
        }
    }

    /// The topic named `name`, as [`ChangeTopic::as_str`] spells it.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "realm" => Some(Self::Realm),
            "keys" => Some(Self::Keys),
            "plugins" => Some(Self::Plugins),
            "client" => Some(Self::Client),
            _ => None,
        }
    }
}

/// One committed change, as followers read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its number: changes commit in this order, without one ever
    /// becoming visible before an earlier number.
    pub seq: i64,
    pub realm: String,
    pub topic: ChangeTopic,
    /// For [`ChangeTopic::Client`], the client.
    pub client_id: Option<String>,
}

/// How long changes are kept for followers to read: a process that could
/// not follow for longer forgets everything it holds instead.
pub const CHANGES_KEPT_FOR: i64 = 3600;

/// Following changes, leading the schedule, and checking the database.
pub trait Coordination: Send + Sync {
    /// The newest change's number (0 when there is none): where a process
    /// starting now begins to follow.
    fn latest_change(&self) -> Result<i64>;

    /// The changes committed after number `after`, oldest first, at most
    /// `limit` of them. Clients they name are forgotten from whatever this
    /// store caches before they are returned, so a caller acting on them
    /// reads current rows.
    fn changes_after(&self, after: i64, limit: i64) -> Result<Vec<Change>>;

    /// Forgets everything this store caches (its clients): for a follower
    /// that fell too far behind to read every change it missed.
    fn forget_cached(&self);

    /// Blocks until another process may have committed a change, or
    /// `timeout` passes. A backend without notifications just waits.
    fn wait_for_change(&self, timeout: Duration);

    /// Takes or renews the lease `name` for `holder` until `now + ttl`;
    /// true if `holder` holds it. Another holder's lease is taken only
    /// once it has run out, so of racing processes exactly one holds it.
    fn hold_lease(&self, name: &str, holder: &str, now: i64, ttl: i64) -> Result<bool>;

    /// One cheap round trip to the database: Ok when it answers.
    fn ping(&self) -> Result<()>;

    /// Tells `observer` of every commit of a write from now on, replacing
    /// any observer before it: for metrics. A backend with nothing to tell
    /// ignores it.
    fn observe_commits(&self, observer: std::sync::Arc<dyn CommitObserver>) {
        let _ = observer;
    }
}

/// What is told of each commit a store makes: how long the commit took
/// (for SQLite, the `COMMIT` and its fsync; for PostgreSQL, the round trip
/// that commits) and how many writes it carried (SQLite's group commit
/// carries every write that arrived while the one before committed; a
/// PostgreSQL transaction is one write). Called on the committing thread,
/// with writers waiting: it must be quick, and it never sees what was
/// written.
pub trait CommitObserver: Send + Sync {
    fn committed(&self, elapsed: Duration, writes: usize);
}
