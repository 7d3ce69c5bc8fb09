//! The storage ports: what the application needs from storage, one
//! repository trait per aggregate, with the rows they exchange and the one
//! error they fail with.
//!
//! A backend (the SQLite store, a PostgreSQL one) implements every trait;
//! [`Storage`] names them all at once. Methods take `&self` and block: a
//! backend shares its connections between threads, and an async caller
//! runs them where blocking is allowed. Secrets never cross these traits
//! in the clear, only their keyed hashes. Every write is durable when its
//! method returns, and happens whole or not at all.
//!
//! Every backend runs the one conformance suite
//! (`agentauth-store-conformance`), which states each contract as tests.

mod audit;
mod authorizations;
mod cache;
mod clients;
mod coordination;
mod decisions;
mod error;
mod keys;
mod plugins;
mod realms;
mod secrets;
mod tokens;
mod users;

pub use audit::{AuditEntry, AuditRepository};
pub use authorizations::{AuthorizationCode, AuthorizationRepository, CodeIssue, Consent, Redemption};
pub use cache::CachedClients;
pub use clients::{ClientFilter, ClientRepository, ClientRow, ClientState};
pub use coordination::{CHANGES_KEPT_FOR, Change, ChangeTopic, CommitObserver, Coordination};
pub use decisions::{Decision, DecisionQuery, DecisionRepository, PluginUse};
pub use error::{Error, ErrorKind, Result};
pub use keys::{KeyRepository, KeyRow};
pub use plugins::{PluginPush, PluginQuota, PluginRepository, PluginRow, PluginVersion, PushOutcome};
pub use realms::{RealmAdmin, RealmRepository, RealmRow};
pub use secrets::{Housekeeping, ServerSecretRepository};
pub use tokens::{Lineage, NewToken, Rotation, TokenKind, TokenRepository, TokenRow};
pub use users::{UserRepository, UserRow, UserState};

/// The repository traits alone, to bring their methods into scope where a
/// backend is held by its own type: `use agentauth_core::ports::prelude::*;`
/// (or `agentauth_store::prelude::*`). Code generic over [`Storage`] needs
/// none of it.
pub mod prelude {
    pub use super::{
        AuditRepository, AuthorizationRepository, ClientRepository, Coordination, DecisionRepository, Housekeeping,
        KeyRepository, PluginRepository, RealmRepository, ServerSecretRepository, TokenRepository, UserRepository,
    };
}

/// Every storage port at once: what a complete backend implements.
pub trait Storage:
    std::fmt::Debug
    + RealmRepository
    + KeyRepository
    + PluginRepository
    + ClientRepository
    + TokenRepository
    + AuditRepository
    + ServerSecretRepository
    + Housekeeping
    + Coordination
    + DecisionRepository
    + UserRepository
    + AuthorizationRepository
{
}

impl<T> Storage for T where
    T: std::fmt::Debug
        + RealmRepository
        + KeyRepository
        + PluginRepository
        + ClientRepository
        + TokenRepository
        + AuditRepository
        + ServerSecretRepository
        + Housekeeping
        + Coordination
        + DecisionRepository
        + UserRepository
        + AuthorizationRepository
        + ?Sized
{
}
