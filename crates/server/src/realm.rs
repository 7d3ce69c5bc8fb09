//! Realms: their settings, and the runtime snapshot each request uses.
//!
//! A realm's runtime (settings, keys, compiled plugins) is one `Arc`. It
//! is built on first use: the realm's first signing key is generated then,
//! and its plugins are compiled. Replacing a realm's snapshot never
//! disturbs requests in flight, which keep the `Arc` they started with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use agentauth_core::OAuthError;
use agentauth_jose::{Algorithm, SigningKey, VerifyingKey};
use agentauth_plugin_host::{ArtifactCache, ArtifactKey, CallSlot, CallSlots, HookKind, Limits, Plugin, PluginHost};
use agentauth_store::{KeyRow, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A realm's configuration, stored as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealmSettings {
    /// Agents may register at `aiagent/register`.
    pub ai_agents_enabled: bool,
    /// Anyone may register a client, with no initial access token.
    pub open_registration: bool,
    /// The plugin that serves the DCR hook, if any.
    pub dcr_plugin: Option<String>,
    /// The plugin that adds custom claims to access tokens, if any.
    pub token_plugin: Option<String>,
    /// The plugin that narrows or refuses requested scopes, if any.
    pub scope_plugin: Option<String>,
    /// The scopes clients may register; `None` allows any.
    pub allowed_scopes: Option<Vec<String>>,
    /// `RS256`, `ES256` or `EdDSA`.
    pub signing_alg: String,
    /// Access token lifetime, seconds.
    pub access_token_lifetime: i64,
    /// Refresh token lifetime, seconds.
    pub refresh_token_lifetime: i64,
    /// Time one plugin call may take, milliseconds.
    pub plugin_timeout_ms: u64,
    /// Memory one plugin instance may use in all its memories and tables
    /// together, bytes (at most 256 MiB).
    pub plugin_memory_bytes: usize,
    /// Registrations the realm accepts a minute, from all sources.
    pub registrations_per_minute: u32,
    /// Registrations the realm accepts a minute from one source (an IPv4
    /// address, or an IPv6 /64).
    pub registrations_per_minute_per_source: u32,
    /// Clients the realm may hold (10,000 by default; operator only): past
    /// it, registration answers 403 `access_denied` until a client is
    /// deleted, so open registration cannot grow the database without
    /// bound. With each registration's metadata bounded (32 KiB), the
    /// default bounds a realm's clients to about 320 MiB.
    pub max_clients: u32,
    /// Seconds a rotated-in key is published in the JWKS before it signs,
    /// so resource servers that cache the JWKS know it first.
    pub key_publish_seconds: i64,
    /// Days a signing key signs before a new one is rotated in
    /// automatically; 0 turns the schedule off.
    pub key_rotation_days: u32,
    /// Requests of this realm that may run its plugins at once (at most
    /// [`agentauth_plugin_host::MAX_REALM_CALLS`]); the others wait for a
    /// turn without holding a thread, and one that cannot start within the
    /// plugin timeout is answered 503.
    pub plugin_concurrency: usize,
    /// Whether token exchange may impersonate: a subject token whose
    /// `may_act` names no `sub` then yields a token without a new `act`.
    /// Off, the exchanging client is always named in `act`.
    pub token_exchange_impersonation: bool,
    /// The most actors a token's nested `act` chain may name; an exchange
    /// that would name more is `invalid_request`.
    pub max_delegation_depth: usize,
    /// Plugin versions the realm may store, of all its plugins, active or
    /// not; a push past it is refused (409) until versions are deleted.
    pub plugin_storage_versions: u32,
    /// Bytes of plugin components the realm may store, all versions
    /// together (the Python and JavaScript policies weigh 18 and 12 MB).
    pub plugin_storage_bytes: u64,
    /// Plugin uploads the realm accepts a minute, refused ones included
    /// (each may cost a compilation); past it, 429 with `Retry-After`.
    pub plugin_pushes_per_minute: u32,
    /// Signing key rotations the realm accepts a minute through the admin
    /// API (each makes a key, and keys stay published for a token
    /// lifetime); past it, 429 with `Retry-After`.
    pub key_rotations_per_minute: u32,
    /// Keys the realm may publish at once: each rotation keeps the keys
    /// before it in the JWKS for a token lifetime, so past this many a
    /// rotation through the admin API waits (429 with `Retry-After`) until
    /// the oldest retires. Rotations on schedule are not held back.
    pub max_published_keys: u32,
}

impl RealmSettings {
    /// Checks every setting's range, so a typo cannot make a realm that
    /// fails at its first request.
    pub fn validate(&self) -> Result<(), String> {
        if Algorithm::parse(&self.signing_alg).is_none() {
            return Err(format!("signing_alg {:?}: use RS256, ES256 or EdDSA", self.signing_alg));
        }
        let within = |name: &str, value: i64, low: i64, high: i64| {
            if (low..=high).contains(&value) { Ok(()) } else { Err(format!("{name} must be between {low} and {high}")) }
        };
        within("access_token_lifetime", self.access_token_lifetime, 60, 86_400)?;
        within("refresh_token_lifetime", self.refresh_token_lifetime, 60, 90 * 86_400)?;
        within("plugin_timeout_ms", self.plugin_timeout_ms as i64, 1, 10_000)?;
        within(
            "plugin_memory_bytes",
            self.plugin_memory_bytes as i64,
            1 << 20,
            agentauth_plugin_host::MAX_PLUGIN_MEMORY as i64,
        )?;
        within("plugin_concurrency", self.plugin_concurrency as i64, 1, agentauth_plugin_host::MAX_REALM_CALLS as i64)?;
        within("max_delegation_depth", self.max_delegation_depth as i64, 1, 32)?;
        within("key_publish_seconds", self.key_publish_seconds, 0, 86_400)?;
        within("key_rotation_days", i64::from(self.key_rotation_days), 0, 3650)?;
        within("registrations_per_minute", i64::from(self.registrations_per_minute), 1, 1_000_000)?;
        within(
            "registrations_per_minute_per_source",
            i64::from(self.registrations_per_minute_per_source),
            1,
            1_000_000,
        )?;
        within("max_clients", i64::from(self.max_clients), 1, 100_000_000)?;
        within("plugin_storage_versions", i64::from(self.plugin_storage_versions), 1, 10_000)?;
        within("plugin_storage_bytes", i64::try_from(self.plugin_storage_bytes).unwrap_or(i64::MAX), 1 << 20, 1 << 40)?;
        within("plugin_pushes_per_minute", i64::from(self.plugin_pushes_per_minute), 1, 10_000)?;
        within("key_rotations_per_minute", i64::from(self.key_rotations_per_minute), 1, 10_000)?;
        within("max_published_keys", i64::from(self.max_published_keys), 2, 1000)?;
        if let Some(scopes) = &self.allowed_scopes {
            agentauth_core::Scopes::from_tokens(scopes.iter().map(String::as_str))
                .map_err(|e| format!("allowed_scopes: {}", e.description))?;
        }
        Ok(())
    }

    /// The plugin selected for a realm-wide hook.
    pub fn hook_plugin(&self, kind: HookKind) -> Option<&str> {
        match kind {
            HookKind::Dcr => self.dcr_plugin.as_deref(),
            HookKind::Token => self.token_plugin.as_deref(),
            HookKind::Scope => self.scope_plugin.as_deref(),
            // May-act plugins are chosen per client, by its attributes.
            HookKind::MayAct => None,
        }
    }

    /// Selects the plugin for a realm-wide hook; false for a per-client
    /// hook, which cannot be selected here.
    pub fn set_hook_plugin(&mut self, kind: HookKind, plugin: Option<String>) -> bool {
        match kind {
            HookKind::Dcr => self.dcr_plugin = plugin,
            HookKind::Token => self.token_plugin = plugin,
            HookKind::Scope => self.scope_plugin = plugin,
            HookKind::MayAct => return false,
        }
        true
    }
}

impl Default for RealmSettings {
    fn default() -> Self {
        Self {
            ai_agents_enabled: false,
            open_registration: false,
            dcr_plugin: None,
            token_plugin: None,
            scope_plugin: None,
            allowed_scopes: None,
            // ring signs ES256 about thirty times faster than RS256, and
            // the tokens are smaller; RS256 stays a setting away.
            signing_alg: "ES256".into(),
            access_token_lifetime: 3600,
            refresh_token_lifetime: 7 * 24 * 3600,
            plugin_timeout_ms: 100,
            plugin_memory_bytes: 64 << 20,
            plugin_concurrency: 16,
            key_publish_seconds: 300,
            key_rotation_days: 90,
            registrations_per_minute: 6000,
            registrations_per_minute_per_source: 600,
            token_exchange_impersonation: false,
            max_delegation_depth: 8,
            max_clients: 10_000,
            plugin_storage_versions: 32,
            // Room for several versions of an interpreter-carrying policy;
            // each stored version may also be compiled and held in memory.
            plugin_storage_bytes: 128 << 20,
            plugin_pushes_per_minute: 10,
            key_rotations_per_minute: 2,
            max_published_keys: 10,
        }
    }
}

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
    /// Shared with the realm's earlier runtimes while the limit is the same,
    /// so a swap does not reset the count of calls in flight.
    pub plugin_slots: Arc<CallSlots>,
    plugins: HashMap<String, Arc<Plugin>>,
    /// When this snapshot goes stale: a rotated key starts signing, or a
    /// retired one leaves the JWKS.
    refresh_at: Option<i64>,
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
    pub store: &'a Store,
    pub host: &'a PluginHost,
    pub master_key: &'a agentauth_jose::MasterKey,
    /// `{public-url}{base}`: issuers are this plus the realm's path.
    pub issuer_prefix: &'a str,
    pub now: i64,
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

    /// Rebuilds the realm's runtime from the store and publishes it: the
    /// swap that makes a plugin activation or a settings change take
    /// effect. Requests in flight keep the runtime they started with.
    /// Compiled plugins of the previous runtime, and `fresh` (a plugin
    /// just validated), are reused rather than compiled again.
    /// The lock that serialises `name`'s rebuilds.
    fn rebuild_lock(&self, name: &str) -> std::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let stripe = usize::try_from(self.stripes.hash_one(name)).unwrap_or(0) % self.rebuilding.len();
        self.rebuilding[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a deleted realm's runtime.
    pub fn forget(&self, name: &str) {
        let _one_at_a_time = self.rebuild_lock(name);
        self.loaded.write().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    pub fn rebuild(
        &self,
        name: &str,
        from: &Sources<'_>,
        fresh: Option<Arc<Plugin>>,
    ) -> Result<Option<Arc<RealmRuntime>>, OAuthError> {
        let Sources { store, host, master_key, issuer_prefix, now } = *from;
        let _one_at_a_time = self.rebuild_lock(name);
        let previous = self.loaded.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
        let Some(row) = store.realm(name).map_err(internal)? else {
            self.loaded.write().unwrap_or_else(|p| p.into_inner()).remove(name);
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
        let runtime = Arc::new(RealmRuntime {
            plugin_slots,
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
        });
        self.loaded.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), Arc::clone(&runtime));
        Ok(Some(runtime))
    }
}

/// Precompiled plugins kept in the database.
#[derive(Debug)]
pub struct StoredArtifacts<'a> {
    pub store: &'a Store,
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

fn internal(e: impl std::fmt::Display) -> OAuthError {
    tracing::error!("{e}");
    OAuthError::server_error("internal error")
}
