//! agentauth's application layer: every OAuth process, in order, with no
//! HTTP in it.
//!
//! The HTTP edge (`agentauth-server`) reads and bounds a request, turns it
//! into a typed request, and renders what comes back; this crate does the
//! work in between. Issuing tokens per grant (`grant`), verifying tokens
//! (`tokens`), authenticating clients (`client_auth`), registering
//! clients with the realm's DCR policy (`registration`), realm runtimes
//! (`realm`), plugin and key lifecycles and the admin API's operations
//! (`admin`), a realm's local users and their login (`users`, with
//! Argon2id password hashing in `password`), the housekeeping schedule
//! (`housekeeping`), and the metrics registry (`telemetry`).
//!
//! It depends on `core` for the OAuth rules, `jose` for keys and JWTs,
//! `plugin-host` for policies and `store` for state; never on hyper. Time
//! comes from an injected [`Clock`], so tests can move it. Operations are
//! blocking (SQLite, RSA signing, plugin calls): run them off the threads
//! that drive connections.

pub mod admin;
pub mod authorize;
pub mod client_admin;
pub mod client_auth;
pub mod client_metadata;
mod clock;
pub mod console;
mod decisions;
pub mod dpop;
pub mod events;
mod follow;
pub mod grant;
mod housekeeping;
mod lifecycle;
pub mod owners;
pub mod password;
mod policy;
mod rate;
pub mod realm;
pub mod registration;
mod secrets;
mod settings;
pub mod telemetry;
pub mod tokens;
pub mod trust;
pub mod users;

use std::sync::Arc;

use agentauth_core::OAuthError;
use agentauth_core::ports::Storage;
use agentauth_jose::MasterKey;
use agentauth_plugin_host::{CallSlot, HookKind, PluginHost};

pub use admin::{AdminError, AdminToken, Principal};
pub use clock::{Clock, ManualClock, SystemClock};
pub use follow::{FollowError, Follower};
pub use password::Password;
pub use rate::Source;
pub use realm::RealmRuntime;
pub use secrets::{Hasher, Purpose};
pub use settings::RealmSettings;
pub use telemetry::Metrics;
pub use users::{LoginError, NewUser, User, UserPage};

use crate::realm::Realms;

/// What the service needs to know that no request tells it.
#[derive(Clone, Debug)]
pub struct Config {
    /// Seals the realms' private keys at rest.
    pub master_key: Arc<MasterKey>,
    /// The bearer token of the admin API; `None` disables the admin API.
    pub admin_token: Option<AdminToken>,
    /// `{public-url}{base-path}`: every realm's issuer starts with it.
    pub issuer_prefix: String,
    /// How documents from outside (trusted issuers' keys, client metadata
    /// documents) are fetched: HTTPS to public addresses only, unless
    /// development allows loopback.
    pub fetch: agentauth_fetch::FetchPolicy,
}

/// Why the service could not start.
#[derive(Debug)]
pub struct StartError(pub String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// The application: the state every operation shares.
#[derive(Debug)]
pub struct Service {
    config: Config,
    store: Arc<dyn Storage>,
    host: PluginHost,
    realms: Realms,
    hasher: Hasher,
    clock: Arc<dyn Clock>,
    registrations: rate::RateLimiter,
    /// Login attempts, per username and per source.
    logins: rate::RateLimiter,
    /// Hashes and checks local users' passwords.
    passwords: password::Passwords,
    admin: admin::Limits,
    /// This process among the replicas sharing the store: who holds the
    /// housekeeping lease.
    replica: String,
    /// Stores audited decisions in batches.
    decisions: decisions::Writer,
    metrics: Arc<Metrics>,
    /// Trusted issuers' keys, fetched and cached.
    trust: trust::IssuerKeys,
    /// Fetches client metadata documents: a fetcher of its own, so URLs
    /// anyone may choose cannot push issuers' keys out of their cache or
    /// take their fetches' places.
    client_fetcher: agentauth_fetch::Fetcher,
    /// When each client metadata document in use was fetched.
    client_documents: client_metadata::Applied,
    /// The clients used since the last housekeeping round.
    client_uses: lifecycle::Uses,
    /// Where the delivery of security events stands.
    deliveries: events::Deliveries,
}

impl Service {
    /// The name of the server secret that proves which master key sealed
    /// this database's keys.
    pub const MASTER_KEY_CHECK: &'static str = "master-key-check";

    /// The service over `store`, running plugins in `host`, telling time by
    /// `clock`. Refuses a master key that did not seal this database. The
    /// store's commits and the host's compilations are counted in the
    /// service's metrics from now on.
    pub fn new(
        config: Config,
        store: Arc<dyn Storage>,
        mut host: PluginHost,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        // A wrong master key must stop the server, never lead it to make
        // new keys: check it against what the database was sealed with.
        let master = &config.master_key;
        let check = store
            .server_secret(Self::MASTER_KEY_CHECK, &mut || {
                master.seal(b"master-key-check", b"agentauth").unwrap_or_default()
            })
            .map_err(|e| StartError(format!("reading the master key check: {e}")))?;
        if master.open(b"master-key-check", &check).is_err() {
            return Err(StartError(
                "the master key does not open this database's keys: start with the master key it was created with \
                 (AGENTAUTH_MASTER_KEY or --master-key-file)"
                    .into(),
            ));
        }
        let hasher = Hasher::load(&*store).map_err(|e| StartError(format!("loading the secret-hashing key: {e}")))?;
        let metrics = Arc::new(Metrics::new());
        store.observe_commits(Arc::clone(&metrics) as Arc<dyn agentauth_core::ports::CommitObserver>);
        host.observe_compiles(Arc::clone(&metrics) as Arc<dyn agentauth_plugin_host::CompileObserver>);
        let decisions = decisions::Writer::start(Arc::clone(&store));
        let fetch_policy = config.fetch.clone();
        let trust = trust::IssuerKeys::new(agentauth_fetch::Fetcher::new(fetch_policy.clone()));
        Ok(Self {
            config,
            store,
            host,
            realms: Realms::default(),
            hasher,
            clock,
            registrations: rate::RateLimiter::default(),
            logins: rate::RateLimiter::default(),
            passwords: password::Passwords::default(),
            admin: admin::Limits::default(),
            replica: secrets::new_jti(),
            decisions,
            metrics,
            trust,
            // Client metadata documents: a failure is remembered only
            // briefly (the draft asks none be cached; a few seconds keep a
            // dead URL from being fetched on every request).
            client_fetcher: agentauth_fetch::Fetcher::new(agentauth_fetch::FetchPolicy {
                negative_ttl: std::time::Duration::from_secs(5),
                ..fetch_policy
            }),
            client_documents: client_metadata::Applied::default(),
            client_uses: lifecycle::Uses::default(),
            deliveries: events::Deliveries::default(),
        })
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Seconds since the Unix epoch, by the service's clock.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// The storage, for what the service does not wrap (tools, tests).
    pub fn store(&self) -> &dyn Storage {
        &*self.store
    }

    /// The secret hasher, for tests that look rows up by hash.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Creates realm `name` with `settings` unless it exists, storing
    /// `plugins` (name, hook, component) as their first versions. Each
    /// plugin is validated first, so a realm never starts with one that
    /// cannot run. Returns whether the realm was created.
    pub fn provision_realm(
        &self,
        name: &str,
        settings: &RealmSettings,
        plugins: &[(&str, HookKind, &[u8])],
    ) -> Result<bool, StartError> {
        let failed = |e: &dyn std::fmt::Display| StartError(e.to_string());
        if self.store.realm(name).map_err(|e| failed(&e))?.is_some() {
            return Ok(false);
        }
        let now = self.now();
        let cache = realm::StoredArtifacts { store: &*self.store, now };
        for (plugin, kind, component) in plugins {
            self.host.load_cached(*kind, plugin, 1, component, &cache).map_err(|e| failed(&e))?;
        }
        let settings = serde_json::to_string(settings).map_err(|e| failed(&e))?;
        let created = self.store.create_realm_if_absent(name, &settings, now).map_err(|e| failed(&e))?;
        if created {
            for (plugin, kind, component) in plugins {
                let sha256 = agentauth_plugin_host::sha256_hex(component);
                self.store.add_plugin_version(name, plugin, *kind, &sha256, component, now).map_err(|e| failed(&e))?;
            }
        }
        Ok(created)
    }

    fn sources(&self) -> realm::Sources<'_> {
        realm::Sources {
            store: &*self.store,
            host: &self.host,
            master_key: &self.config.master_key,
            issuer_prefix: &self.config.issuer_prefix,
            now: self.now(),
            metrics: &self.metrics,
        }
    }

    /// The realm's current runtime, built on first use (blocking); `None`
    /// if there is no such realm.
    pub fn realm(&self, name: &str) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        self.realms.get(name, &self.sources())
    }

    /// The realm's runtime as last built, without building or refreshing
    /// it: cheap enough for an async task.
    pub fn loaded_realm(&self, name: &str) -> Option<Arc<RealmRuntime>> {
        self.realms.loaded(name)
    }

    /// Rebuilds and publishes the realm's runtime after a change made
    /// behind the service's back (tests, tools).
    pub fn republish(&self, name: &str) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        self.realms.rebuild(name, &self.sources(), None)
    }

    fn republish_with(
        &self,
        name: &str,
        fresh: Option<Arc<agentauth_plugin_host::Plugin>>,
    ) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        self.realms.rebuild(name, &self.sources(), fresh)
    }

    /// Loads realm `name` (its keys, generated on first use, and its
    /// plugins, compiled) so the first request does not pay for it.
    pub fn warm_up(&self, name: &str) -> Result<(), StartError> {
        match self.realm(name) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(StartError(format!("realm {name} does not exist"))),
            Err(e) => Err(StartError(format!("loading realm {name}: {}", e.description))),
        }
    }

    /// One of the realm's plugin call slots, waiting for one at most the
    /// realm's plugin timeout without holding a thread; `None` when the
    /// realm runs no plugins. The realm must be loaded.
    pub async fn plugin_slot(runtime: &RealmRuntime) -> Result<Option<CallSlot>, OAuthError> {
        Self::plugin_slot_for(runtime, false).await
    }

    /// As [`Service::plugin_slot`]; with `always`, a slot even when the
    /// realm runs no plugins (a test of a version not yet active runs one).
    pub async fn plugin_slot_for(runtime: &RealmRuntime, always: bool) -> Result<Option<CallSlot>, OAuthError> {
        if !always && !runtime.has_plugins() {
            return Ok(None);
        }
        runtime.plugin_slot().await.map(Some)
    }
}

/// A failure of the server's own, converted once: logged, and answered
/// `server_error`; except a database that is busy (kept locked by another
/// process past the busy timeout) or cannot be reached for now, which is
/// `temporarily_unavailable` (503) with a `Retry-After`.
pub(crate) fn internal<E: std::fmt::Display + 'static>(e: E) -> OAuthError {
    if let Some(retry_after) = transient_store(&e) {
        tracing::warn!("{e}");
        let mut error =
            OAuthError::new(agentauth_core::ErrorCode::TemporarilyUnavailable, "the server is busy; retry shortly");
        error.retry_after = Some(retry_after);
        return error;
    }
    tracing::error!("{e}");
    OAuthError::server_error("internal error")
}

/// When `e` is the store's error for a condition worth retrying (a busy
/// database, an unreachable one), the seconds to wait before retrying.
pub(crate) fn transient_store<E: 'static>(e: &E) -> Option<u64> {
    use agentauth_core::ports::ErrorKind;
    let e = (e as &dyn std::any::Any).downcast_ref::<agentauth_core::ports::Error>()?;
    match e.kind() {
        ErrorKind::Busy => Some(1),
        ErrorKind::Unavailable => Some(UNAVAILABLE_RETRY_AFTER),
        _ => None,
    }
}

/// Seconds a client is asked to wait while the database cannot be reached.
const UNAVAILABLE_RETRY_AFTER: u64 = 2;
