//! The audit of decisions: each token issued or refused, each
//! registration, update and deletion, with who asked, what for, which
//! plugins decided (name, version, component sha256) and the outcome.
//!
//! Decisions are many (one per token), so they are written in batches, not
//! in the commit of what they record; a decision of a realm deleted
//! meanwhile is dropped. They go with their realm, and each realm keeps
//! them for its own retention.

use super::Result;

/// One decision, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub at: i64,
    /// The request's id (its `X-Request-Id`), to find its log lines.
    pub request_id: String,
    /// What was decided: `token`, `register`, `update` or `delete`.
    pub event: String,
    /// The client that asked (as claimed, when it failed to authenticate).
    pub client_id: Option<String>,
    /// For a token: its grant type.
    pub grant: Option<String>,
    /// For a token: its subject.
    pub subject: Option<String>,
    /// For a delegated token: the actor chain, the current actor first.
    pub actors: Vec<String>,
    /// For a token: the scopes granted.
    pub scope: Option<String>,
    /// For a token: its audiences.
    pub audience: Vec<String>,
    /// For a token: `jwt` or `opaque`, and its `jti`.
    pub token_kind: Option<String>,
    pub jti: Option<String>,
    /// The plugins that ran, in order.
    pub plugins: Vec<PluginUse>,
    /// `allowed` or `refused`.
    pub outcome: String,
    /// For a refusal: the OAuth error code answered.
    pub error: Option<String>,
}

/// A plugin that took part in a decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginUse {
    pub name: String,
    pub version: i64,
    pub sha256: String,
    /// `allowed` (it answered), `denied`, `failed` or `busy`.
    pub outcome: String,
}

/// Which decisions to list: all those matching every criterion given, by
/// id from `after`, at most `limit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionQuery {
    pub client_id: Option<String>,
    /// Decisions this plugin took part in (any version, or `version`).
    pub plugin: Option<String>,
    pub version: Option<i64>,
    pub outcome: Option<String>,
    /// From this time on (inclusive), before `until` (exclusive).
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Decisions with an id above this.
    pub after: i64,
    pub limit: i64,
}

impl Default for DecisionQuery {
    fn default() -> Self {
        Self {
            client_id: None,
            plugin: None,
            version: None,
            outcome: None,
            since: None,
            until: None,
            after: 0,
            limit: 100,
        }
    }
}

/// Recording, reading and forgetting decisions.
pub trait DecisionRepository: Send + Sync {
    /// Records decisions, each of its realm, in one commit; those of a realm
    /// that does not exist are dropped. Returns how many were recorded.
    fn record_decisions(&self, decisions: &[(String, Decision)]) -> Result<usize>;

    /// The realm's decisions matching `query`, oldest first, each with its
    /// id.
    fn decisions(&self, realm: &str, query: &DecisionQuery) -> Result<Vec<(i64, Decision)>>;

    /// Deletes the realm's decisions made before `before`; how many went.
    fn sweep_decisions(&self, realm: &str, before: i64) -> Result<usize>;
}
