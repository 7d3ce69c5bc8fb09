//! [`Store`], the one value callers hold: the SQLite engine and the
//! client cache, opened together.
//!
//! Its methods live beside the SQL of their aggregate (`realms.rs`,
//! `clients.rs`, ...); this file only says what a store is made of and
//! how one is opened.

use std::path::Path;
use std::sync::Mutex;

use crate::Result;
use crate::clients::ClientCache;
use crate::engine::Engine;

/// The database of agentauth: realms, clients, signing keys, plugins,
/// server-side tokens and the audit log, in one SQLite file.
///
/// Every write is durable when its method returns (see the engine's
/// group commit); reads see committed data only.
#[derive(Debug)]
pub struct Store {
    pub(crate) db: Engine,
    /// Clients as last read: every token request authenticates one.
    pub(crate) clients: Mutex<ClientCache>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self::with_engine(Engine::open(path)?))
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Ok(Self::with_engine(Engine::open_in_memory()?))
    }

    fn with_engine(db: Engine) -> Self {
        Self { db, clients: Mutex::new(ClientCache::default()) }
    }
}
