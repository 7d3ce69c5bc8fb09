//! PostgreSQL storage for agentauth, for replicas sharing one database:
//! realms, clients, signing keys, plugins, server-side tokens, local
//! users, authorization codes and consents, the audit log, and the feed
//! of changes replicas follow.
//! [`PgStore`] implements every repository trait of
//! `agentauth_core::ports`, and passes the conformance suite every backend
//! runs (`tests/conformance.rs`), with the same semantics as the SQLite
//! store.
//!
//! # What is stored where
//!
//! One table per kind of row, as the SQLite store has them (`realms`,
//! `realm_admins`, `clients` and `client_counts`, `signing_keys`,
//! `plugins` and `plugin_artifacts`, `tokens`, `token_lineage`,
//! `revoked_jwts`, `client_assertions`, `users`, `authorization_codes`,
//! `consents`, `audit`, `server_secrets`), plus
//! `changes` and `leases` for coordination, and `schema_migrations`, the
//! schema's version. Every table of a realm's rows cascades from the realm;
//! the audit log outlives it. Secrets never reach this crate in the clear:
//! callers hand in keyed hashes of client secrets and tokens.
//!
//! # Durability and concurrency
//!
//! Every write is made in a transaction, and its method returns once
//! PostgreSQL has committed it: as durable as the server's
//! `synchronous_commit` makes a commit (on by default: flushed to its WAL;
//! with synchronous standbys configured, on them too). What must happen
//! exactly once holds across processes, through the database's own locks,
//! never an in-process mutex: a refresh token rotates, and an
//! authorization code is redeemed, in a conditional UPDATE; registrations
//! count under the realm's cap on its locked count row; registration
//! tokens are compare-and-swapped; first keys, plugin versions and quotas
//! lock the realm's row; first values of server secrets, assertion ids and
//! leases are inserts on a key. A transaction
//! PostgreSQL aborts for a serialization failure or a deadlock is run
//! again, a few times, before the call fails as Busy.
//!
//! # Grouped commits
//!
//! The writes every request makes (registrations, issued tokens, client
//! assertion ids, refresh token rotations) share their commits, as the
//! SQLite store's do: each would otherwise wait for a WAL flush of its own,
//! and a realm's registrations would queue one flush at a time on its
//! count row. A write goes to a lane (up to four, a quarter of the pool,
//! each a task on the store's runtime with a connection while it
//! commits): a registration to its realm's, anything else to the next in
//! turn. A lane takes every write that arrived while its last transaction
//! ran, up to 32 (a subtransaction each, within what PostgreSQL caches per
//! backend), and makes them in one transaction:
//!
//! - each write in a savepoint of its own, so a write that fails (a taken
//!   id, an unknown realm) is rolled back and answered alone, and its
//!   neighbours commit;
//! - the statements sent without waiting for each other's answers, and
//!   after a failure the writes behind it sent again;
//! - each realm's count of clients locked once, first (in name order, in
//!   every process), and each registration checked against the cap as the
//!   batch's registrations before it left the count: racing registrations,
//!   in one batch, several, or several processes, never pass the cap;
//! - every caller answered once the COMMIT returned, and not before: a
//!   failed COMMIT fails every write of the batch, each with its own error
//!   of that kind. A serialization failure or deadlock runs the whole
//!   batch again; a caller that gave up (its time limit passed, and it was
//!   told Unavailable) before an attempt leaves its write out of it.
//!
//! Other writes (administration, revocations, token exchange, authorization
//! codes and consents) are one transaction each.
//!
//! # Connections
//!
//! The ports block; the driver is async. A store owns a small tokio
//! runtime (two threads named `agentauth-pg`) on which a pool of
//! connections ([`Options::pool_size`]) lives; each method runs its
//! statements there and waits for the answer on a plain channel, so it may
//! be called from any thread, inside another runtime included. No call
//! waits longer than [`Options::wait_timeout`] (for a pooled connection)
//! plus [`Options::statement_timeout`] (set on each connection as
//! PostgreSQL's `statement_timeout`): a database that is down or silent
//! fails the call as Unavailable, and the pool connects again once it is
//! back. Dropping the store shuts its runtime down without waiting.
//!
//! # The change feed
//!
//! Each write that changes what a replica holds in memory (a realm, its
//! keys or plugins, a client) records a row in `changes` in its own
//! transaction, numbered in commit order (an advisory lock held from
//! numbering to commit), and NOTIFYs `agentauth_changes`. A connection
//! outside the pool LISTENs, reconnecting when lost, to wake
//! `wait_for_change`; followers read `changes_after`, which first forgets
//! the clients it names from this store's cache. Changes older than
//! [`CHANGES_KEPT_FOR`] are swept.
//!
//! # Limits
//!
//! - No TLS yet: `sslmode=disable` or `prefer` (which connects in plain
//!   text); `require` and `verify-*` are refused at connect rather than
//!   silently downgraded. Run it over a network you trust (a Unix socket,
//!   a private link).
//! - The statement timeout is sent as a startup option (`-c
//!   statement_timeout=...`), which a pooler in front of PostgreSQL must
//!   pass on: PgBouncer refuses it, or drops it when told to ignore it
//!   (and its transaction mode would break LISTEN anyway). Connect to
//!   PostgreSQL directly.
//! - Migrations run at connect, under an advisory lock, and a database of
//!   a newer schema than this build knows is refused (NewerSchema).
//! - A store's followers share one notion of what it has read: with
//!   several threads following one store, a notification may end only
//!   one thread's wait early, and the others poll.
//!
//! The feature `throwaway` adds `throwaway::Cluster`, a PostgreSQL cluster
//! in a temporary directory (`initdb`, a free port of 127.0.0.1, a
//! database per test), for this crate's tests and the server's.
//!
//! One module per aggregate, each with its SQL and the port trait it
//! implements; the engine beneath them knows nothing of what it stores:
//!
//! - `db`: the runtime bridge, transactions and their retries, statements
//! - `batch`: the lanes that group the hot paths' writes into one commit
//! - `error`: PostgreSQL's failures as the ports' error kinds
//! - `migrations`: the schema
//! - `listen`: the LISTEN connection and the waiters it wakes
//! - `realms`, `keys`, `plugins`, `clients`, `tokens`, `users`,
//!   `authorizations`, `audit`, `secrets`, `sweep`, `coordination`
//!
//! [`CHANGES_KEPT_FOR`]: agentauth_core::ports::CHANGES_KEPT_FOR

mod audit;
mod authorizations;
mod batch;
mod clients;
mod coordination;
mod db;
mod decisions;
mod error;
mod keys;
mod listen;
mod migrations;
mod plugins;
mod realms;
mod secrets;
mod store;
mod sweep;
mod tokens;
mod users;

#[cfg(feature = "throwaway")]
pub mod throwaway;

pub use migrations::SCHEMA_VERSION;
pub use store::{Options, PgStore};

/// The repository traits [`PgStore`] implements: `use
/// agentauth_store_postgres::prelude::*;` brings them into scope.
pub use agentauth_core::ports::prelude;
