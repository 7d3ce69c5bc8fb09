//! SQLite storage for agentauth: realms, clients, signing keys, plugins,
//! server-side tokens, local users, authorization codes and consents, and
//! the audit log. [`Store`] implements every repository trait of
//! `agentauth_core::ports`, and passes the conformance suite every backend
//! runs (`tests/conformance.rs`).
//!
//! The database runs in WAL mode with `synchronous=FULL`, so a row
//! acknowledged to a client survives a crash or power loss. Every write is
//! one savepoint of a `BEGIN IMMEDIATE` transaction that concurrent writes
//! share: it either lands whole or not at all, and its caller returns only
//! once it is on disk. Schema changes are numbered migrations applied at
//! open.
//!
//! Secrets never reach this crate in the clear: callers hand in keyed
//! hashes of client secrets and tokens.
//!
//! One module per aggregate, each with its SQL and the port trait it
//! implements (the rows are core's, in `agentauth_core::ports`); the engine
//! beneath them all knows nothing of what it stores:
//!
//! - `engine`: writer, group commit, readers, checkpoints
//! - `error`: SQLite's failures as the ports' error kinds
//! - `stored`: enums of the domain read back from their stored names
//! - `realms`: realms, their settings and admins
//! - `keys`: signing keys and their rotation
//! - `plugins`: plugin versions and compiled artifacts
//! - `clients`: registered clients (cached by core's `CachedClients`)
//! - `tokens`: server-side tokens, revocations, lineage, assertion replay
//! - `audit`: the log of administrative changes
//! - `decisions`: the audit of decisions (tokens, registrations)
//! - `users`: a realm's local users, with their password hashes
//! - `authorizations`: authorization codes, redeemed once, and consents
//! - `coordination`: the change feed other processes follow, leases
//! - `secrets`, `sweep`, `backup`: server secrets, housekeeping, copies

mod audit;
mod authorizations;
mod backup;
mod clients;
mod coordination;
mod decisions;
mod engine;
mod error;
mod keys;
mod migrations;
mod plugins;
mod realms;
mod secrets;
mod store;
mod stored;
mod sweep;
mod tokens;
mod users;

pub use migrations::SCHEMA_VERSION;
pub use store::Store;

// The rows, the error and the repository traits are core's storage ports;
// they are re-exported here under the paths callers have always used.
pub use agentauth_core::ports::{
    AuditEntry, AuditRepository, AuthorizationCode, AuthorizationRepository, CHANGES_KEPT_FOR, CachedClients, Change,
    ChangeTopic, ClientFilter, ClientRepository, ClientRow, ClientState, CodeIssue, Consent, Coordination, Decision,
    DecisionQuery, DecisionRepository, Error, ErrorKind, Housekeeping, KeyRepository, KeyRow, Lineage, NewToken,
    PluginPush, PluginQuota, PluginRepository, PluginRow, PluginUse, PluginVersion, PushOutcome, RealmAdmin,
    RealmRepository, RealmRow, Redemption, Result, Rotation, ServerSecretRepository, Storage, TokenKind,
    TokenRepository, TokenRow, UserRepository, UserRow, UserState,
};

/// The repository traits [`Store`] implements, whose methods are all it
/// has beyond opening a database and copying or checking one: `use
/// agentauth_store::prelude::*;` brings them into scope.
pub use agentauth_core::ports::prelude;
