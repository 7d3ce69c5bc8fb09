//! Realms: the runtime snapshot each request uses.
//!
//! A realm's runtime (settings, keys, compiled plugins) is one `Arc`. It
//! is built on first use: the realm's first signing key is generated then,
//! and its plugins are compiled. Replacing a realm's snapshot never
//! disturbs requests in flight, which keep the `Arc` they started with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use agentauth_core::OAuthError;
use agentauth_core::ports::{KeyRow, Storage};
use agentauth_core::resource::ResourceRules;
use agentauth_jose::{Algorithm, SigningKey, VerifyingKey};
use agentauth_plugin_host::{ArtifactCache, ArtifactKey, CallSlot, CallSlots, HookKind, Limits, Plugin, PluginHost};
use serde_json::Value;

use crate::internal;
use crate::settings::RealmSettings;
use crate::telemetry::{Metrics, PluginMetrics, RealmMetrics};

/// Everything a request needs to know about its realm.
#[derive(Debug)]
pub struct RealmRuntime {
    pub name: String,
    pub settings: RealmSettings,
    /// `{public-url}{base}/oauth2/realms/root/realms/{name}`.
    pub issuer: String,
    pub signing_key: SigningKey,
    pub verifying_keys: Vec<VerifyingKey>,
    pub jwks: Value,
    pub plugin_limits: Limits,
    /// The resources the realm allows, from `settings.allowed_resources`.
    pub resource_rules: ResourceRules,
    /// Shared with the realm's earlier runtimes while the limit is the same,
    /// so a swap does not reset the count of calls in flight.
    pub plugin_slots: Arc<CallSlots>,
    plugins: HashMap<String, Arc<Plugin>>,
    /// When this snapshot goes stale: a rotated key starts signing, or a
    /// retired one leaves the JWKS.
    refresh_at: Option<i64>,
    /// The realm's metric handles, its plugins' among them.
    pub metrics: RealmMetrics,
}

impl RealmRuntime {
    /// Holds one of the realm's plugin call slots, waiting for one at most
    /// the plugin timeout, or answers that the realm is busy.
    pub async fn plugin_slot(&self) -> Result<CallSlot, OAuthError> {
        self.plugin_slots.acquire(self.plugin_limits.timeout).await.ok_or_else(|| {
            tracing::warn!(realm = %self.name, limit = self.plugin_slots.limit(), "all plugin call slots busy");
            OAuthError::new(
                agentauth_core::ErrorCode::TemporarilyUnavailable,
                "the realm's policies are busy; retry shortly",
            )
        })
    }

    /// Whether the realm has plugins, so that its requests may run some.
    pub fn has_plugins(&self) -> bool {
        !self.plugins.is_empty()
    }

    /// The realm's active plugin `name`, if it serves `kind`.
    pub fn plugin(&self, name: &str, kind: HookKind) -> Result<&Plugin, OAuthError> {
        match self.plugins.get(name) {
            Some(plugin) if plugin.kind() == kind => Ok(plugin),
            _ => {
                tracing::error!(realm = %self.name, plugin = name, hook = kind.as_str(), "the realm names a plugin it does not have");
                Err(OAuthError::server_error(format!("the realm's {} policy is not available", kind.as_str())))
            }
        }
    }

    /// The metric handles of `plugin`, one of the realm's.
    pub fn plugin_metrics(&self, plugin: &Plugin) -> Option<&PluginMetrics> {
        self.metrics.plugin(plugin.name())
    }

    /// The realm's rules for token exchange.
    pub fn exchange_rules(&self) -> agentauth_core::grant::token_exchange::ExchangeRules {
        agentauth_core::grant::token_exchange::ExchangeRules {
            impersonation: self.settings.token_exchange_impersonation,
            max_delegation_depth: self.settings.max_delegation_depth,
        }
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.issuer)
    }
}

/// The runtimes of the realms used so far.
#[derive(Debug)]
pub struct Realms {
    loaded: RwLock<HashMap<String, Arc<RealmRuntime>>>,
    /// Serialise each realm's rebuilds, so a rebuild that read older rows
    /// can never publish over one that read newer rows. A realm's lock is
    /// one of a fixed set, chosen by a keyed hash of its name: a rebuild
    /// that compiles a plugin (after an engine upgrade, up to the compile
    /// bound) holds back only the realms that share its lock, never all.
    rebuilding: Box<[Mutex<()>]>,
    stripes: std::collections::hash_map::RandomState,
}

/// How many rebuild locks the realms share.
const REBUILD_LOCKS: usize = 64;

impl Default for Realms {
    fn default() -> Self {
        Self {
            loaded: RwLock::default(),
            rebuilding: (0..REBUILD_LOCKS).map(|_| Mutex::new(())).collect(),
            stripes: std::collections::hash_map::RandomState::new(),
        }
    }
}

/// Where a realm's runtime comes from.
#[derive(Debug)]
pub struct Sources<'a> {
    pub store: &'a dyn Storage,
    pub host: &'a PluginHost,
    pub master_key: &'a agentauth_jose::MasterKey,
    /// `{public-url}{base}`: issuers are this plus the realm's path.
    pub issuer_prefix: &'a str,
    pub now: i64,
    /// Where the realm's metric handles come from.
    pub metrics: &'a Metrics,
}

impl Realms {
    /// The realm's runtime, built on first use. `Ok(None)` for a realm
    /// that does not exist.
    pub fn get(&self, name: &str, from: &Sources<'_>) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        if let Some(runtime) = self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(name)
            && runtime.refresh_at.is_none_or(|at| from.now < at)
        {
            return Ok(Some(Arc::clone(runtime)));
        }
        self.rebuild(name, from, None)
    }

    /// The realm's runtime as last built, if it was, without building or
    /// refreshing it: cheap enough for an async task.
    pub fn loaded(&self, name: &str) -> Option<Arc<RealmRuntime>> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// The names of the realms loaded so far.
    pub fn loaded_names(&self) -> Vec<String> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// The lock that serialises `name`'s rebuilds.
    fn rebuild_lock(&self, name: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let stripe = usize::try_from(self.stripes.hash_one(name)).unwrap_or(0) % self.rebuilding.len();
        self.rebuilding[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a deleted realm's runtime, and its metrics.
    pub fn forget(&self, name: &str, metrics: &Metrics) {
        let _one_at_a_time = self.rebuild_lock(name);
        let last = self.loaded.write().unwrap_or_else(|p| p.into_inner()).remove(name);
        metrics.forget_realm(name, last.as_ref().map(|runtime| &runtime.metrics));
    }

    /// Rebuilds the realm's runtime from the store and publishes it: the
    /// swap that makes a plugin activation or a settings change take
    /// effect. Requests in flight keep the runtime they started with.
    /// Compiled plugins of the previous runtime, and `fresh` (a plugin
    /// just validated), are reused rather than compiled again.
    pub fn rebuild(
        &self,
        name: &str,
        from: &Sources<'_>,
        fresh: Option<Arc<Plugin>>,
    ) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        let _one_at_a_time = self.rebuild_lock(name);
        self.build_and_publish(name, from, fresh)
    }

    /// Rebuilds the realm's runtime if it is loaded: what another process
    /// changed. A build that started before the change, from older rows,
    /// finishes first (builds of a realm run one at a time), so it is
    /// rebuilt after it, never skipped.
    pub fn rebuild_if_loaded(&self, name: &str, from: &Sources<'_>) -> Result<bool, OAuthError> {
        let _one_at_a_time = self.rebuild_lock(name);
        if self.loaded(name).is_none() {
            return Ok(false);
        }
        self.build_and_publish(name, from, None)?;
        Ok(true)
    }

    /// Builds the realm's runtime from the store and publishes it; the
    /// caller holds the realm's rebuild lock.
    fn build_and_publish(
        &self,
        name: &str,
        from: &Sources<'_>,
        fresh: Option<Arc<Plugin>>,
    ) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        let Sources { store, host, master_key, issuer_prefix, now, metrics } = *from;
        let previous = self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        let Some(row) = store.realm(name).map_err(internal)? else {
            // Deleted, perhaps by another replica: its series go with it.
            if let Some(last) = self.loaded.write().unwrap_or_else(|p| p.into_inner()).remove(name) {
                metrics.forget_realm(name, Some(&last.metrics));
            }
            return Ok(None);
        };
        let settings: RealmSettings =
            serde_json::from_str(&row.settings).map_err(|e| internal(format!("realm {name} settings: {e}")))?;
        let alg = Algorithm::parse(&settings.signing_alg)
            .ok_or_else(|| internal(format!("realm {name}: unknown signing algorithm {:?}", settings.signing_alg)))?;

        let mut keys = store.keys(name).map_err(internal)?;
        if keys.is_empty() {
            let pkcs8 = agentauth_jose::generate_pkcs8(alg).map_err(internal)?;
            let pkcs8 = master_key.seal(name.as_bytes(), &pkcs8).map_err(internal)?;
            let row = KeyRow { alg, pkcs8, created_at: now, signs_from: now, retires_at: None };
            let first = store.insert_first_key(name, &row).map_err(internal)?;
            tracing::info!(realm = name, alg = %first.alg, "generated the realm's first signing key");
            keys.push(first);
        }
        let mut verifying_keys = Vec::new();
        let mut signing_key = None;
        let mut signing_key_created = now;
        let mut refresh_at: Option<i64> = None;
        for key in &keys {
            let later = [Some(key.signs_from), key.retires_at].into_iter().flatten().filter(|t| *t > now);
            refresh_at = later.chain(refresh_at).min();
            if key.retires_at.is_some_and(|t| t <= now) {
                continue;
            }
            let key_alg = key.alg;
            let loaded = if agentauth_jose::is_sealed(&key.pkcs8) {
                let pkcs8 = master_key.open(name.as_bytes(), &key.pkcs8).map_err(internal)?;
                SigningKey::from_pkcs8(key_alg, &pkcs8).map_err(internal)?
            } else {
                tracing::warn!(realm = name, "a signing key is stored unsealed; rotate it");
                SigningKey::from_pkcs8(key_alg, &key.pkcs8).map_err(internal)?
            };
            verifying_keys.push(loaded.verifying_key().clone());
            // Keys come newest first: the newest whose time has come signs.
            // A key rotated in is published first and only verifies until
            // then; a key superseded before its time never signs, since a
            // newer one is always ahead of it.
            if key.signs_from <= now && signing_key.is_none() {
                signing_key = Some(loaded);
                signing_key_created = key.created_at;
            }
        }
        let signing_key = signing_key.ok_or_else(|| internal("realm has no signing key"))?;
        let jwks = serde_json::json!({"keys": verifying_keys.iter().map(VerifyingKey::jwk).collect::<Vec<_>>()});

        let mut plugins = HashMap::new();
        for row in store.plugin_versions(name).map_err(internal)?.into_iter().filter(|v| v.active) {
            let known = previous
                .as_ref()
                .and_then(|p| p.plugins.get(&row.name))
                .into_iter()
                .chain(fresh.as_ref())
                .find(|p| p.name() == row.name && p.version() == row.version)
                .cloned();
            let plugin = match known {
                Some(plugin) => plugin,
                None => {
                    let kind = row.hook;
                    let component = store
                        .plugin_component(name, &row.name, row.version)
                        .map_err(internal)?
                        .ok_or_else(|| internal(format!("plugin {} v{} vanished", row.name, row.version)))?;
                    let cache = StoredArtifacts { store, now };
                    Arc::new(host.load_cached(kind, &row.name, row.version, &component, &cache).map_err(internal)?)
                }
            };
            plugins.insert(row.name, plugin);
        }

        let plugin_slots = previous
            .as_ref()
            .map(|p| Arc::clone(&p.plugin_slots))
            .filter(|slots| slots.limit() == CallSlots::new(settings.plugin_concurrency).limit())
            .unwrap_or_else(|| Arc::new(CallSlots::new(settings.plugin_concurrency)));
        let realm_metrics = metrics.realm(name, plugins.values().map(|p| (p.name(), p.version())));
        realm_metrics.signing_key_created(signing_key_created);
        if let Some(previous) = &previous {
            metrics.forget_plugins(&previous.metrics, Some(&realm_metrics));
        }
        // Settings are checked before they are stored; a row edited by
        // hand into rules that do not parse allows no resource.
        let resource_rules = ResourceRules::parse(&settings.allowed_resources).unwrap_or_else(|e| {
            tracing::error!(realm = name, "allowed_resources cannot be read, so none is allowed: {e}");
            ResourceRules::default()
        });
        let runtime = Arc::new(RealmRuntime {
            plugin_slots,
            resource_rules,
            name: name.to_string(),
            issuer: format!("{issuer_prefix}/oauth2/realms/root/realms/{name}"),
            plugin_limits: Limits {
                timeout: Duration::from_millis(settings.plugin_timeout_ms),
                memory: settings.plugin_memory_bytes.min(agentauth_plugin_host::MAX_PLUGIN_MEMORY),
            },
            settings,
            signing_key,
            verifying_keys,
            jwks,
            plugins,
            refresh_at,
            metrics: realm_metrics,
        });
        self.loaded.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), Arc::clone(&runtime));
        Ok(Some(runtime))
    }
}

/// Precompiled plugins kept in the database.
#[derive(Debug)]
pub struct StoredArtifacts<'a> {
    pub store: &'a dyn Storage,
    pub now: i64,
}

impl ArtifactCache for StoredArtifacts<'_> {
    fn get(&self, key: &ArtifactKey) -> Option<Vec<u8>> {
        self.store.plugin_artifact(&key.component_sha256, &key.engine).unwrap_or_else(|e| {
            tracing::warn!("reading a plugin artifact: {e}");
            None
        })
    }

    fn put(&self, key: &ArtifactKey, artifact: &[u8]) {
        if let Err(e) = self.store.put_plugin_artifact(&key.component_sha256, &key.engine, artifact, self.now) {
            tracing::warn!("storing a plugin artifact: {e}");
        }
    }
}
