//! SQLite storage for agentauth: realms, clients, signing keys, plugins,
//! server-side tokens and the audit log.
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
//! One module per aggregate, each with its rows and its SQL; the engine
//! beneath them all knows nothing of what it stores:
//!
//! - `engine`: writer, group commit, readers, checkpoints
//! - `realms`: realms, their settings and admins
//! - `keys`: signing keys and their rotation
//! - `plugins`: plugin versions and compiled artifacts
//! - `clients`: registered clients and their cache
//! - `tokens`: server-side tokens, revocations, lineage, assertion replay
//! - `audit`: the log of administrative changes
//! - `secrets`, `sweep`, `backup`: server secrets, housekeeping, copies

mod audit;
mod backup;
mod clients;
mod engine;
mod error;
#[cfg(test)]
mod fixtures;
mod keys;
mod migrations;
mod plugins;
mod realms;
mod secrets;
mod store;
mod stored;
mod sweep;
mod tokens;

pub use audit::AuditEntry;
pub use clients::ClientRow;
pub use error::{Error, ErrorKind, Result};
pub use keys::KeyRow;
pub use plugins::{PluginPush, PluginQuota, PluginRow, PluginVersion, PushOutcome};
pub use realms::{RealmAdmin, RealmRow};
pub use store::Store;
pub use tokens::{Lineage, NewToken, Rotation, TokenKind, TokenRow};
