//! [`PgStore`], the one value callers hold: the pool, the runtime it runs
//! on, the client cache over the clients table, and the listener that
//! wakes followers; how one connects, migrates and shuts down.
//!
//! Its methods are the port traits', each implemented beside the SQL of its
//! aggregate (`realms.rs`, `clients.rs`, ...).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentauth_core::ports::{CachedClients, Error, ErrorKind, Result};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::runtime::Handle;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Config, NoTls};

use crate::clients::PgClients;
use crate::db::{Db, run_on};
use crate::error::PgResult;
use crate::listen::{Signal, listen};
use crate::migrations;

/// How a [`PgStore`] uses its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Connections in the pool, at most (16). A quarter of them (at least
    /// one, at most four) are the lanes that commit grouped writes.
    pub pool_size: usize,
    /// How long connecting may take (5 s), unless the URL says
    /// (`connect_timeout`).
    pub connect_timeout: Duration,
    /// How long one statement may run on the server (10 s), waiting for
    /// locks included.
    pub statement_timeout: Duration,
    /// How long a call waits for a pooled connection (5 s) when every one
    /// is in use.
    pub wait_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            wait_timeout: Duration::from_secs(5),
        }
    }
}

/// How long connecting and migrating may take in all, on top of the
/// connect timeout: a migration waits for another replica's to finish.
const MIGRATION_TIME: Duration = Duration::from_secs(600);

/// The database of agentauth on PostgreSQL: realms, clients, signing keys,
/// plugins, server-side tokens, the audit log and the feed of changes that
/// replicas sharing the database follow. It implements every repository
/// trait of `agentauth_core::ports`.
///
/// Every write is acknowledged once PostgreSQL has committed it; the
/// writes of the hot paths (registrations, tokens, assertion ids,
/// rotations) that arrive together share one commit (see the crate's
/// documentation). Reads see committed data, except clients, which come from
/// a cache that this store's own changes, and the changes of other
/// replicas it follows ([`changes_after`]), keep current.
///
/// [`changes_after`]: agentauth_core::ports::Coordination::changes_after
pub struct PgStore {
    pub(crate) db: Db,
    /// The clients table behind a cache: every token request authenticates
    /// a client.
    pub(crate) clients: CachedClients<PgClients>,
    /// Woken by the listener when another process may have committed a
    /// change.
    pub(crate) signal: Arc<Signal>,
    /// The signal's generation when changes were last read: a wait returns
    /// at once if a notification came since.
    pub(crate) seen: AtomicU64,
    /// Racing first calls of `server_secret` in this process make the
    /// secret once (other processes agree through the table's key).
    pub(crate) secret_making: Mutex<()>,
    /// What the store is connected to, for Debug: never the password.
    target: String,
    pool_size: usize,
    /// Held for its drop, which shuts the runtime down: declared last, so
    /// the pool goes first.
    _runtime: OwnedRuntime,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname?...`,
    /// or libpq's `key=value` form), runs pending migrations under an
    /// advisory lock (several replicas starting at once migrate once), and
    /// starts listening for other processes' changes.
    ///
    /// TLS is not supported yet: `sslmode=disable` or `prefer` (which then
    /// connects in plain text), never `require` or `verify-*`, which are
    /// refused rather than silently downgraded.
    pub fn connect(url: &str, options: Options) -> Result<Self> {
        let config = config(url, &options)?;
        let runtime = OwnedRuntime::new(2)?;
        let handle = runtime.handle()?;

        let migrating = config.clone();
        run_on(&handle, options.connect_timeout + MIGRATION_TIME, async move { migrate_with(&migrating).await })?;

        let mut pooled = config.clone();
        let statement_timeout = format!("-c statement_timeout={}", options.statement_timeout.as_millis().max(1));
        let pool_options = match pooled.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {statement_timeout}"),
            _ => statement_timeout,
        };
        pooled.options(pool_options);
        let manager = Manager::from_config(pooled, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let connect_timeout = config.get_connect_timeout().copied().unwrap_or(options.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Other, "storage failure: building the connection pool").with_source(e)
            })?;

        let signal = Arc::new(Signal::default());
        handle.spawn(listen(config.clone(), Arc::clone(&signal)));

        let lanes = options.pool_size.max(1).div_ceil(4);
        let pool = crate::db::Pool::new(pool);
        let db = Db::new(handle, pool, options.wait_timeout + options.statement_timeout, lanes);
        Ok(Self {
            clients: CachedClients::new(PgClients { db: db.clone() }),
            db,
            signal,
            seen: AtomicU64::new(0),
            secret_making: Mutex::new(()),
            target: describe(&config),
            pool_size: options.pool_size.max(1),
            _runtime: runtime,
        })
    }

    /// Runs the pending migrations of the database at `url`, and nothing
    /// else; returns the schema version before and after. Refuses a
    /// database of a newer schema than this build knows.
    pub fn migrate(url: &str) -> Result<(i64, i64)> {
        let options = Options::default();
        let config = config(url, &options)?;
        let runtime = OwnedRuntime::new(1)?;
        let handle = runtime.handle()?;
        run_on(&handle, options.connect_timeout + MIGRATION_TIME, async move { migrate_with(&config).await })
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.target)
            .field("pool_size", &self.pool_size)
            .field("grouped_writes", &self.db.batcher.stats)
            .finish_non_exhaustive()
    }
}

/// Connects once, outside any pool, and migrates.
async fn migrate_with(config: &Config) -> Result<(i64, i64)> {
    // The driver bounds the TCP connect alone: a server that accepts and
    // then says nothing is bounded here.
    let limit = config.get_connect_timeout().copied().unwrap_or(Options::default().connect_timeout);
    let (mut client, connection) = match tokio::time::timeout(limit, config.connect(NoTls)).await {
        Ok(connected) => connected.pg()?,
        Err(_) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("database unreachable: no answer to connecting within {} ms", limit.as_millis()),
            ));
        }
    };
    // Ends when the client is dropped.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    migrations::apply(&mut client).await
}

/// The driver's configuration for `url`, with this store's defaults.
fn config(url: &str, options: &Options) -> Result<Config> {
    // The driver cannot parse these at all; say why rather than that the
    // URL is invalid.
    if url.contains("sslmode=verify-") {
        return Err(no_tls());
    }
    let mut config: Config = url.parse().map_err(|e| {
        // The URL may hold a password: its text stays out of the message.
        Error::new(ErrorKind::Other, "storage failure: the database URL is not valid").with_source(e)
    })?;
    if config.get_ssl_mode() == SslMode::Require {
        return Err(no_tls());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("agentauth");
    }
    // Notice a peer gone silent (the listener's connection idles for long)
    // within a minute or so, not the system's two hours.
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
    }
    Ok(config)
}

fn no_tls() -> Error {
    Error::new(
        ErrorKind::Other,
        "storage failure: this build of agentauth cannot connect to PostgreSQL over TLS yet: \
         use sslmode=disable (or prefer), over a network you trust",
    )
}

/// `user@host:port/dbname`, without the password.
fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or(config.get_user().unwrap_or(""))
    )
}

/// The store's own tokio runtime, shut down without waiting when dropped:
/// dropping a store from inside another runtime's task must neither panic
/// nor hang on a connection's task.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl OwnedRuntime {
    fn new(workers: usize) -> Result<Self> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("agentauth-pg")
            .enable_all()
            .build()
            .map(|runtime| Self(Some(runtime)))
            .map_err(|e| Error::new(ErrorKind::Other, "storage failure: starting the database runtime").with_source(e))
    }

    fn handle(&self) -> Result<Handle> {
        self.0
            .as_ref()
            .map(|runtime| runtime.handle().clone())
            .ok_or_else(|| Error::new(ErrorKind::Other, "storage failure: the database runtime is shut down"))
    }
}

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_modes_this_build_cannot_honour_are_refused_not_downgraded() {
        for url in [
            "postgres://u:secret@db.example/agentauth?sslmode=require",
            "host=db.example user=u password=secret sslmode=require",
            "postgres://u:secret@db.example/agentauth?sslmode=verify-full",
        ] {
            let e = config(url, &Options::default()).unwrap_err();
            assert!(e.to_string().contains("TLS"), "{e}");
            assert!(!e.to_string().contains("secret"), "{e}");
        }
        for url in ["postgres://u@db.example/agentauth?sslmode=disable", "postgres://u@db.example/agentauth"] {
            config(url, &Options::default()).unwrap();
        }
    }

    #[test]
    fn an_invalid_url_is_refused_without_quoting_it() {
        let e = config("postgres://u:secret@db.example:notaport/x", &Options::default()).unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn the_target_is_described_without_its_password() {
        let config = config("postgres://agent:secret@db.example:6543/auth", &Options::default()).unwrap();
        assert_eq!(describe(&config), "agent@db.example:6543/auth");
    }
}
