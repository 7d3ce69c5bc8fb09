//! [`Store`], the one value callers hold: the SQLite engine, and the
//! client cache layered over its clients table, opened together.
//!
//! Its methods are the port traits', each implemented beside the SQL of
//! its aggregate (`realms.rs`, `clients.rs`, ...); this file only says
//! what a store is made of and how one is opened.

use std::path::Path;
use std::sync::Arc;

use crate::clients::SqliteClients;
use crate::decisions::{DecisionLog, path_beside};
use crate::engine::Engine;
use crate::{CachedClients, Result};

/// The database of agentauth: realms, clients, signing keys, plugins,
/// server-side tokens and the audit log, in one SQLite file, and the audit
/// of decisions in a second one beside it. It implements
/// every repository trait of `agentauth_core::ports`.
///
/// Every write is durable when its method returns (see the engine's
/// group commit); reads see committed data only, except clients, which
/// come from a cache that every change made through this store keeps
/// current.
#[derive(Debug)]
pub struct Store {
    pub(crate) db: Arc<Engine>,
    /// The clients table behind a cache: every token request authenticates
    /// a client.
    pub(crate) clients: CachedClients<SqliteClients>,
    /// The audit of decisions, in a database of its own beside this one.
    pub(crate) decisions: DecisionLog,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, and the audit
    /// of decisions beside it (see [`Store::decisions_path`]), and
    /// migrates both.
    pub fn open(path: &Path) -> Result<Self> {
        let store = Self::with(Engine::open(path)?, DecisionLog::open(&path_beside(path))?);
        store.carry_old_decisions()?;
        Ok(store)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let store = Self::with(Engine::open_in_memory()?, DecisionLog::open_in_memory()?);
        store.carry_old_decisions()?;
        Ok(store)
    }

    /// Where the audit of decisions of the database at `path` is kept:
    /// `agentauth.sqlite3` → `agentauth.decisions.sqlite3`.
    pub fn decisions_path(path: &Path) -> std::path::PathBuf {
        path_beside(path)
    }

    fn with(db: Engine, decisions: DecisionLog) -> Self {
        let db = Arc::new(db);
        Self { clients: CachedClients::new(SqliteClients { db: Arc::clone(&db) }), db, decisions }
    }
}
