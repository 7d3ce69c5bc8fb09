//! Managing realms: who may (the operator, or a realm's admins), and what
//! they may do — realm settings, plugins (push, activate, roll back,
//! delete), hook selection, signing keys, realm admins and the audit log.
//!
//! Every change is validated before it is stored, stored with its audit
//! entry in one commit, and then published by rebuilding the realm's
//! runtime: requests in flight finish on the version they started with,
//! later ones see the new one. Each operation answers a typed outcome or
//! an [`AdminError`]; the edge renders both, the scheduler and the plugin
//! watcher log them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agentauth_core::client::is_plugin_name;
use agentauth_core::ports::{AuditEntry, KeyRow, PluginPush, PluginQuota, PluginVersion, PushOutcome, RealmAdmin};
use agentauth_core::{Algorithm, HookKind, OAuthError};
use agentauth_plugin_host::{ArtifactCache, ArtifactKey};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::rate::RateLimiter;
use crate::realm::StoredArtifacts;
use crate::secrets::{Purpose, new_jti, new_secret};
use crate::settings::{OPERATOR_SETTINGS, RealmSettings};
use crate::telemetry::{RateLimit, Rotation};
use crate::{Service, transient_store};

/// Why an admin operation was refused or failed; each kind has one
/// status and code at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminError {
    /// The request is malformed or asks for something invalid (400).
    Invalid(String),
    /// An uploaded component cannot be a plugin (400 `invalid_plugin`).
    InvalidPlugin(String),
    /// No valid admin credential (401).
    Unauthorized,
    /// The admin API is disabled: no operator token (403).
    Disabled,
    /// The credential may not do this (403).
    Forbidden(String),
    /// No such realm, plugin, version or admin (404).
    NotFound(String),
    /// The change conflicts with the realm's state (409).
    Conflict(String),
    /// The realm's plugin storage quota would be exceeded (409).
    OverQuota(String),
    /// Too many operations of a kind for the realm; retry after (429).
    SlowDown { description: String, retry_after: u64 },
    /// The server cannot take this now; retry after (503).
    Busy { description: String, retry_after: u64 },
    /// A failure of the server's own, logged where it happened (500).
    Internal,
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(why) | Self::InvalidPlugin(why) | Self::Forbidden(why) => f.write_str(why),
            Self::NotFound(why) | Self::Conflict(why) | Self::OverQuota(why) => f.write_str(why),
            Self::SlowDown { description, .. } | Self::Busy { description, .. } => f.write_str(description),
            Self::Unauthorized => f.write_str("a valid admin bearer token is required"),
            Self::Disabled => f.write_str("the admin API is disabled: start the server with AGENTAUTH_ADMIN_TOKEN set"),
            Self::Internal => f.write_str("internal error"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<agentauth_core::ports::Error> for AdminError {
    /// A database busy past its timeout, or unreachable for now, is 503
    /// with `Retry-After`, as on the OAuth endpoints; any other storage
    /// failure is logged, 500.
    fn from(e: agentauth_core::ports::Error) -> Self {
        if let Some(retry_after) = transient_store(&e) {
            tracing::warn!("admin: {e}");
            return Self::Busy { description: "the server is busy; retry shortly".into(), retry_after };
        }
        tracing::error!("admin: {e}");
        Self::Internal
    }
}

impl From<OAuthError> for AdminError {
    /// A realm that could not be rebuilt (already logged).
    fn from(e: OAuthError) -> Self {
        match e.code {
            agentauth_core::ErrorCode::TemporarilyUnavailable => {
                Self::Busy { description: e.description.into_owned(), retry_after: e.retry_after.unwrap_or(1) }
            }
            _ => Self::Internal,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    tracing::error!("admin: {e}");
    AdminError::Internal
}

/// The operator's bearer token for the admin API. `Debug` never prints it.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Accepts tokens of at least 16 characters: a short token would be a
    /// guessable key to every realm.
    pub fn new(token: String) -> Result<Self, crate::StartError> {
        if token.len() < 16 {
            return Err(crate::StartError("the admin token must be at least 16 characters".into()));
        }
        Ok(Self(token))
    }

    /// The token, for hashing under the server key (a console session
    /// names it by that hash).
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }

    fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let (a, b) = (
            ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes()),
            ring::digest::digest(&ring::digest::SHA256, presented.as_bytes()),
        );
        bool::from(a.as_ref().ct_eq(b.as_ref()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

/// Who is calling the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The operator-wide admin (`AGENTAUTH_ADMIN_TOKEN`): every realm.
    Operator,
    /// A realm admin: one realm, and not the settings that protect the
    /// server from the realm (plugin limits, rate limits).
    RealmAdmin { realm: String, name: String },
}

impl Principal {
    /// Whether this principal may act on `realm`; `server_wide` operations
    /// (realms and their admins) are the operator's only.
    pub fn permit(&self, realm: &str, server_wide: bool) -> Result<(), AdminError> {
        let Principal::RealmAdmin { realm: own, .. } = self else {
            return Ok(());
        };
        if server_wide {
            return Err(AdminError::Forbidden("only the operator admin may do this".into()));
        }
        if own != realm {
            return Err(AdminError::Forbidden(format!("this credential administers realm {own} only")));
        }
        Ok(())
    }

    /// The name a change is audited under: a realm admin by its
    /// credential's name, the operator by the name it gives (`named`, the
    /// CLI sends the user's login), if any.
    pub fn actor(&self, named: Option<&str>) -> String {
        if let Principal::RealmAdmin { name, .. } = self {
            return format!("realm-admin:{name}");
        }
        let named = named
            .map(|v| v.chars().filter(|c| c.is_ascii_graphic()).take(64).collect::<String>())
            .filter(|v| !v.is_empty());
        match named {
            Some(name) => format!("admin:{name}"),
            None => "admin".to_string(),
        }
    }
}

/// Uploads the server handles at once, all realms together: one compiles
/// (compilations queue one at a time), the others wait their turn, each
/// holding its component. Past it, 503 with `Retry-After`, so waiting
/// uploads cannot pile up.
const MAX_UPLOADS_IN_FLIGHT: usize = 4;

/// The admin API's own bounds, shared by every realm.
#[derive(Debug, Default)]
pub(crate) struct Limits {
    /// Plugin uploads per realm (`plugin_pushes_per_minute`).
    plugin_pushes: RateLimiter,
    /// Key rotations per realm (`key_rotations_per_minute`).
    key_rotations: RateLimiter,
    /// Plugin uploads being handled, all realms together.
    uploads_in_flight: AtomicUsize,
    /// The realms with an upload in flight: one each, so no realm takes
    /// every place.
    uploading_realms: Mutex<HashSet<String>>,
}

/// An upload's place among the [`MAX_UPLOADS_IN_FLIGHT`], taken before a
/// byte of its body is read and held until it has been handled, so at most
/// that many upload bodies are ever held at once, and at most one of each
/// realm.
#[derive(Debug)]
pub struct UploadPermit {
    service: Arc<Service>,
    /// The realm whose one upload this is, once admitted.
    realm: Option<String>,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        let limits = &self.service.admin;
        limits.uploads_in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(realm) = &self.realm {
            limits.uploading_realms.lock().unwrap_or_else(|p| p.into_inner()).remove(realm);
        }
    }
}

/// A plugin version as the admin API lists it.
#[derive(Debug, Serialize)]
pub struct PluginListing {
    pub name: String,
    pub version: i64,
    pub hook: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: i64,
    pub active: bool,
    /// Who pushed it, if it was pushed (not provisioned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_by: Option<String>,
    /// Its language, if its producers sections say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// For a version the realm runs: its calls as this process counted
    /// them (each replica counts its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::telemetry::PluginStats>,
}

impl From<PluginVersion> for PluginListing {
    fn from(v: PluginVersion) -> Self {
        Self {
            name: v.name,
            version: v.version,
            hook: v.hook.as_str().to_string(),
            sha256: v.sha256,
            size: v.size,
            created_at: v.created_at,
            active: v.active,
            uploaded_by: v.uploaded_by,
            language: v.language,
            stats: None,
        }
    }
}

/// A component to store as a new version of plugin `name`.
#[derive(Debug)]
pub struct Upload<'a> {
    pub name: &'a str,
    /// The hook it must serve; `None` takes the one it exports.
    pub kind: Option<HookKind>,
    pub component: &'a [u8],
    pub activate: bool,
    pub actor: String,
}

/// A stored plugin version.
#[derive(Debug, Serialize)]
pub struct Pushed {
    pub name: String,
    pub version: i64,
    pub hook: &'static str,
    pub sha256: String,
    pub size: usize,
    pub active: bool,
}

/// A signing key as the admin API lists it.
#[derive(Debug, Serialize)]
pub struct KeyListing {
    pub alg: String,
    pub created_at: i64,
    pub signs_from: i64,
    pub retires_at: Option<i64>,
    /// `published` (not signing yet), `signing`, `retiring` or `retired`.
    pub status: &'static str,
}

/// What a key rotation did.
#[derive(Debug, Serialize)]
pub struct Rotated {
    pub alg: &'static str,
    pub signs_from: i64,
    pub previous_keys_retire_at: i64,
}

/// A realm admin just made, with its bearer token: shown once.
pub struct NewAdmin {
    pub admin: RealmAdmin,
    pub token: String,
}

impl std::fmt::Debug for NewAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAdmin").field("admin", &self.admin).field("token", &"[redacted]").finish()
    }
}

/// The realm-wide hooks and the plugin selected for each.
pub fn realm_hooks(settings: &RealmSettings) -> Map<String, Value> {
    HookKind::ALL
        .into_iter()
        .filter(|k| k.is_realm_wide())
        .map(|k| (k.as_str().to_string(), json!(settings.hook_plugin(k))))
        .collect()
}

pub(crate) fn audit(at: i64, actor: &str, action: &str, plugin: Option<&str>, detail: Option<String>) -> AuditEntry {
    AuditEntry {
        at,
        actor: actor.to_string(),
        action: action.into(),
        plugin: plugin.map(str::to_string),
        detail,
        ..Default::default()
    }
}

impl Service {
    /// Identifies the caller by its bearer token: the operator's, or a
    /// realm admin's (found by its keyed hash).
    pub fn admin_principal(&self, bearer: Option<&str>) -> Result<Principal, AdminError> {
        let Some(operator) = &self.config.admin_token else {
            return Err(AdminError::Disabled);
        };
        let Some(token) = bearer.filter(|token| !token.is_empty() && token.len() <= 512) else {
            return Err(AdminError::Unauthorized);
        };
        if operator.matches(token) {
            return Ok(Principal::Operator);
        }
        let hash = self.hasher.hash(Purpose::AdminToken, token);
        match self.store.realm_admin_by_token(&hash)? {
            Some(admin) => Ok(Principal::RealmAdmin { realm: admin.realm, name: admin.name }),
            None => Err(AdminError::Unauthorized),
        }
    }

    /// Admits an upload to `realm` before its body is read: a place among
    /// the uploads in flight, one per realm (503 with `Retry-After` past
    /// either), then a turn in the realm's `plugin_pushes_per_minute` (429
    /// past it). Counted before anything is read or compiled: a refused
    /// upload costs too.
    pub fn admit_upload(self: &Arc<Self>, realm: &str) -> Result<UploadPermit, AdminError> {
        let busy = |why: &str| AdminError::Busy { description: format!("{why}; retry shortly"), retry_after: 10 };
        let before = self.admin.uploads_in_flight.fetch_add(1, Ordering::SeqCst);
        let mut permit = UploadPermit { service: Arc::clone(self), realm: None };
        // Refused before the realm is looked up: counted under no realm.
        if before >= MAX_UPLOADS_IN_FLIGHT {
            self.metrics.rate_limited_without_realm(RateLimit::Admin);
            return Err(busy("the server is compiling other uploads"));
        }
        if !self.admin.uploading_realms.lock().unwrap_or_else(|p| p.into_inner()).insert(realm.to_string()) {
            self.metrics.rate_limited_without_realm(RateLimit::Admin);
            return Err(busy("this realm already has an upload in flight"));
        }
        permit.realm = Some(realm.to_string());
        let per_minute = self.realm_settings(realm)?.plugin_pushes_per_minute;
        self.admin.plugin_pushes.take(realm, None, per_minute, per_minute).map_err(|wait| {
            self.metrics.rate_limited(realm, RateLimit::Admin);
            slow_down("plugin uploads", wait)
        })?;
        Ok(permit)
    }

    /// The names of every realm.
    pub fn realm_names(&self) -> Result<Vec<String>, AdminError> {
        Ok(self.store.realm_names()?)
    }

    /// The realm's settings, as stored.
    pub fn realm_settings(&self, realm: &str) -> Result<RealmSettings, AdminError> {
        let row = self.store.realm(realm)?.ok_or_else(|| AdminError::NotFound(format!("no realm {realm}")))?;
        serde_json::from_str(&row.settings).map_err(internal)
    }

    /// Creates a realm with `settings` (a JSON object; any left out take
    /// their defaults). Unknown settings are refused, so a typo does not go
    /// unnoticed.
    pub fn create_realm(&self, realm: &str, settings: Value, actor: &str) -> Result<RealmSettings, AdminError> {
        let settings: RealmSettings =
            serde_json::from_value(settings).map_err(|e| AdminError::Invalid(format!("realm settings: {e}")))?;
        settings.validate().map_err(AdminError::Invalid)?;
        if HookKind::ALL.iter().any(|k| settings.hook_plugin(*k).is_some()) {
            return Err(AdminError::Invalid(
                "a new realm has no plugins yet: push them, then select them with PUT hooks".into(),
            ));
        }
        let json = serde_json::to_string(&settings).map_err(internal)?;
        let entry = audit(self.now(), actor, "create-realm", None, Some(json.clone()));
        if !self.store.create_realm(realm, &json, &entry)? {
            return Err(AdminError::Conflict(format!("realm {realm} exists")));
        }
        self.start_event_receivers(realm, &settings.event_receivers)?;
        tracing::info!(realm, "realm created");
        Ok(settings)
    }

    /// Changes some of a realm's settings (`changes`, a JSON object of the
    /// ones to change). A realm admin may not change the settings that
    /// bound what the realm takes from the server.
    pub fn update_realm(
        &self,
        realm: &str,
        changes: Map<String, Value>,
        principal: &Principal,
        actor: &str,
    ) -> Result<RealmSettings, AdminError> {
        let current = self.realm_settings(realm)?;
        let mut merged = serde_json::to_value(&current).map_err(internal)?;
        for (name, value) in changes {
            merged[name] = value;
        }
        let settings: RealmSettings =
            serde_json::from_value(merged).map_err(|e| AdminError::Invalid(format!("realm settings: {e}")))?;
        settings.validate().map_err(AdminError::Invalid)?;
        if let Principal::RealmAdmin { .. } = principal {
            let before = serde_json::to_value(&current).map_err(internal)?;
            let after = serde_json::to_value(&settings).map_err(internal)?;
            if let Some(name) = OPERATOR_SETTINGS.iter().find(|n| before[**n] != after[**n]) {
                return Err(AdminError::Forbidden(format!("only the operator admin may change {name}")));
            }
        }
        if settings.signing_alg != current.signing_alg {
            return Err(AdminError::Invalid(
                "signing_alg of an existing realm changes with key rotation: POST keys/rotate {\"alg\": ...}".into(),
            ));
        }
        self.check_hook_plugins(realm, &settings)?;
        self.start_event_receivers(realm, &settings.event_receivers)?;
        let json = serde_json::to_string(&settings).map_err(internal)?;
        self.store.set_realm_settings(
            realm,
            &json,
            &audit(self.now(), actor, "update-realm", None, Some(json.clone())),
        )?;
        self.republish_with(realm, None)?;
        Ok(settings)
    }

    /// Deletes a realm with its clients, keys, plugins and tokens; its
    /// audit log stays.
    pub fn delete_realm(&self, realm: &str, actor: &str) -> Result<(), AdminError> {
        if !self.store.delete_realm(realm, &audit(self.now(), actor, "delete-realm", None, None))? {
            return Err(AdminError::NotFound(format!("no realm {realm}")));
        }
        self.realms.forget(realm, &self.metrics);
        tracing::info!(realm, "realm deleted");
        Ok(())
    }

    /// The realm's plugin versions; of plugin `only` if given (404 if it
    /// has none).
    pub fn plugin_versions(&self, realm: &str, only: Option<&str>) -> Result<Vec<PluginListing>, AdminError> {
        // Only a realm loaded here has counted calls; listing loads none.
        let runtime = self.loaded_realm(realm);
        let listed: Vec<PluginListing> = self
            .store
            .plugin_versions(realm)?
            .into_iter()
            .filter(|v| only.is_none_or(|n| v.name == n))
            .map(|v| {
                let stats = runtime.as_ref().and_then(|r| r.metrics.plugin_stats(&v.name, v.version));
                PluginListing { stats, ..PluginListing::from(v) }
            })
            .collect();
        if let Some(name) = only.filter(|_| listed.is_empty()) {
            return Err(AdminError::NotFound(format!("no plugin {name} in realm {realm}")));
        }
        Ok(listed)
    }

    /// Validates, stores (with its audit entry) and, if asked, activates a
    /// plugin version, within the realm's plugin storage quota (its place
    /// among uploads taken first with [`Service::admit_upload`]).
    pub fn push_plugin(&self, realm: &str, upload: Upload<'_>) -> Result<Pushed, AdminError> {
        let limits = self.realm_settings(realm)?;
        let quota = PluginQuota {
            versions: i64::from(limits.plugin_storage_versions),
            bytes: i64::try_from(limits.plugin_storage_bytes).unwrap_or(i64::MAX),
        };
        self.store_component(realm, upload, quota)
    }

    /// As [`Service::push_plugin`], for the plugin watcher: the operator's
    /// own files, in development, not bound by the realm's quota.
    pub fn push_plugin_unbounded(&self, realm: &str, upload: Upload<'_>) -> Result<Pushed, AdminError> {
        self.store_component(realm, upload, PluginQuota::UNLIMITED)
    }

    fn store_component(&self, realm: &str, upload: Upload<'_>, quota: PluginQuota) -> Result<Pushed, AdminError> {
        let Upload { name, kind, component, activate, actor } = upload;
        if !is_plugin_name(name) {
            return Err(AdminError::Invalid("plugin names are 1 to 64 letters, digits, '-', '_' or '.'".into()));
        }
        // Checked before compiling, so an upload that cannot be stored
        // costs no compilation; checked again, atomically, when stored.
        let (versions, bytes) = self.store.plugin_usage(realm)?;
        let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
        if versions >= quota.versions || bytes.saturating_add(size) > quota.bytes {
            return Err(over_quota(realm, &quota, versions, bytes));
        }
        let now = self.now();
        let cache = PendingArtifact { stored: StoredArtifacts { store: &*self.store, now }, made: None.into() };
        let plugin = self
            .host
            .load_detecting(kind, name, 0, component, &cache)
            .map_err(|e| AdminError::InvalidPlugin(e.to_string()))?;
        let kind = plugin.kind();
        let sha256 = agentauth_plugin_host::sha256_hex(component);
        let made = cache.made.into_inner().filter(|(key, _)| key.component_sha256 == sha256);
        let artifact = made.as_ref().map(|(key, artifact)| (key.engine.as_str(), artifact.as_slice()));
        let language = agentauth_plugin_host::source_language(component);
        let push = PluginPush { name, hook: kind, sha256: &sha256, component, activate, language, artifact, quota };
        let entry = AuditEntry { sha256: Some(sha256.clone()), ..audit(now, &actor, "push", Some(name), None) };
        let version = match self.store.push_plugin(realm, &push, &entry)? {
            PushOutcome::Stored { version } => version,
            PushOutcome::HookMismatch { existing } => {
                return Err(AdminError::Conflict(format!(
                    "plugin {name} serves the {existing} hook; push a {existing} component or use another name"
                )));
            }
            PushOutcome::OverQuota { versions, bytes } => return Err(over_quota(realm, &quota, versions, bytes)),
        };
        if activate {
            self.republish_with(realm, Some(Arc::new(plugin.with_version(version))))?;
        }
        tracing::info!(realm, plugin = name, version, sha256 = %sha256, activate, "plugin pushed");
        Ok(Pushed { name: name.into(), version, hook: kind.as_str(), sha256, size: component.len(), active: activate })
    }

    /// Activates `version` of plugin `name`.
    pub fn activate_plugin(&self, realm: &str, name: &str, version: i64, actor: &str) -> Result<(), AdminError> {
        self.activate_version(realm, name, version, &audit(self.now(), actor, "activate", Some(name), None))
    }

    fn activate_version(&self, realm: &str, name: &str, version: i64, entry: &AuditEntry) -> Result<(), AdminError> {
        if !self.store.activate_plugin(realm, name, version, entry)? {
            return Err(AdminError::NotFound(format!("no version {version} of plugin {name}")));
        }
        self.republish_with(realm, None)?;
        tracing::info!(realm, plugin = name, version, action = %entry.action, "plugin activated");
        Ok(())
    }

    /// Runs version `version` of plugin `name` on a test case (see
    /// `agentauth_plugin_host::case`) under the realm's limits, as `agentauth
    /// plugin test` does on a file: before activating it, say. The
    /// version may be inactive; a precompiled artifact is reused. The
    /// caller holds one of the realm's plugin call slots. Nothing is
    /// stored or audited: the run decides nothing.
    pub fn test_plugin(&self, realm: &str, name: &str, version: i64, case: &Value) -> Result<Value, AdminError> {
        let runtime = self.realm(realm)?.ok_or_else(|| AdminError::NotFound(format!("no realm {realm}")))?;
        let no_version = || AdminError::NotFound(format!("no version {version} of plugin {name}"));
        let row = self
            .store
            .plugin_versions(realm)?
            .into_iter()
            .find(|v| v.name == name && v.version == version)
            .ok_or_else(no_version)?;
        let component = self.store.plugin_component(realm, name, version)?.ok_or_else(no_version)?;
        let cache = crate::realm::StoredArtifacts { store: self.store.as_ref(), now: self.now() };
        let plugin = self.host.load_cached(row.hook, name, version, &component, &cache).map_err(|e| {
            tracing::error!(realm, plugin = name, version, "loading a stored plugin to test it: {e}");
            AdminError::Internal
        })?;
        let outcome = agentauth_plugin_host::run_case(&self.host, &plugin, &runtime.plugin_limits, realm, case)
            .map_err(|why| AdminError::Invalid(format!("the test case: {why}")))?;
        tracing::info!(realm, plugin = name, version, failed = outcome.failed, "plugin version tested");
        Ok(outcome.answer)
    }

    /// Activates the newest version older than the active one; returns it.
    pub fn rollback_plugin(&self, realm: &str, name: &str, actor: &str) -> Result<i64, AdminError> {
        let versions: Vec<_> = self.store.plugin_versions(realm)?.into_iter().filter(|v| v.name == name).collect();
        let active = versions
            .iter()
            .find(|v| v.active)
            .ok_or_else(|| AdminError::Conflict(format!("plugin {name} has no active version")))?;
        let previous =
            versions.iter().filter(|v| v.version < active.version).map(|v| v.version).max().ok_or_else(|| {
                AdminError::Conflict(format!("plugin {name} has no version before {}", active.version))
            })?;
        self.activate_version(realm, name, previous, &audit(self.now(), actor, "rollback", Some(name), None))?;
        Ok(previous)
    }

    /// Deletes one version of plugin `name`, or all of them; returns how
    /// many. An active version, or a plugin a realm-wide hook selects,
    /// stays.
    pub fn delete_plugin(
        &self,
        realm: &str,
        name: &str,
        version: Option<i64>,
        actor: &str,
    ) -> Result<usize, AdminError> {
        let versions: Vec<_> = self.store.plugin_versions(realm)?.into_iter().filter(|v| v.name == name).collect();
        match version {
            Some(v) if versions.iter().any(|x| x.version == v && x.active) => {
                return Err(AdminError::Conflict(format!(
                    "version {v} of {name} is active; activate another version first, or delete the plugin"
                )));
            }
            None => {
                let settings = self.realm_settings(realm)?;
                if let Some(kind) = HookKind::ALL.into_iter().find(|k| settings.hook_plugin(*k) == Some(name)) {
                    return Err(AdminError::Conflict(format!(
                        "plugin {name} serves the realm's {} hook; select another first",
                        kind.as_str()
                    )));
                }
            }
            _ => {}
        }
        let deleted =
            self.store.delete_plugin(realm, name, version, &audit(self.now(), actor, "delete", Some(name), None))?;
        if deleted == 0 {
            return Err(AdminError::NotFound(format!("no such plugin {name}")));
        }
        self.republish_with(realm, None)?;
        Ok(deleted)
    }

    /// Selects the plugin serving realm-wide hooks (`None` for none). Each
    /// must be an active plugin of that hook in the realm. May-act plugins
    /// are chosen per client, by the `accessTokenMayActScript` attribute.
    pub fn set_hooks(
        &self,
        realm: &str,
        selection: &[(HookKind, Option<String>)],
        actor: &str,
    ) -> Result<RealmSettings, AdminError> {
        let mut settings = self.realm_settings(realm)?;
        for (kind, plugin) in selection {
            if !settings.set_hook_plugin(*kind, plugin.clone()) {
                return Err(AdminError::Invalid(format!("{kind} is not a realm-wide hook")));
            }
        }
        self.check_hook_plugins(realm, &settings)?;
        let json = serde_json::to_string(&settings).map_err(internal)?;
        let detail = Value::Object(realm_hooks(&settings)).to_string();
        self.store.set_realm_settings(realm, &json, &audit(self.now(), actor, "set-hooks", None, Some(detail)))?;
        self.republish_with(realm, None)?;
        Ok(settings)
    }

    /// Refuses settings whose realm-wide hooks name a plugin that is not
    /// an active plugin of that hook in the realm.
    fn check_hook_plugins(&self, realm: &str, settings: &RealmSettings) -> Result<(), AdminError> {
        let versions = self.store.plugin_versions(realm)?;
        for kind in HookKind::ALL {
            if let Some(name) = settings.hook_plugin(kind)
                && !versions.iter().any(|v| v.name == name && v.active && v.hook == kind)
            {
                return Err(AdminError::Invalid(format!("no active {kind} plugin {name} in realm {realm}")));
            }
        }
        Ok(())
    }

    /// The realm's signing keys, newest first, with their status now.
    pub fn keys(&self, realm: &str) -> Result<Vec<KeyListing>, AdminError> {
        let now = self.now();
        Ok(self
            .store
            .keys(realm)?
            .into_iter()
            .map(|k| KeyListing {
                status: match (k.signs_from <= now, k.retires_at) {
                    (_, Some(at)) if at <= now => "retired",
                    (_, Some(_)) => "retiring",
                    (false, None) => "published",
                    (true, None) => "signing",
                },
                alg: k.alg.as_str().to_string(),
                created_at: k.created_at,
                signs_from: k.signs_from,
                retires_at: k.retires_at,
            })
            .collect())
    }

    /// Rotates the realm's signing key on request: a new key (of `alg` if
    /// given, which also becomes the realm's setting) is published now and
    /// signs after `key_publish_seconds`; the keys before it leave the JWKS
    /// once the last token they can have signed has expired. Bounded by the
    /// realm's `key_rotations_per_minute` and `max_published_keys`.
    pub fn rotate_key(&self, realm: &str, alg: Option<Algorithm>, actor: &str) -> Result<Rotated, AdminError> {
        let limits = self.realm_settings(realm)?;
        let per_minute = limits.key_rotations_per_minute;
        self.admin.key_rotations.take(realm, None, per_minute, per_minute).map_err(|wait| {
            self.metrics.rate_limited(realm, RateLimit::KeyRotations);
            slow_down("key rotations", wait)
        })?;
        // Each rotation keeps the keys before it published for a token
        // lifetime: bound how many the JWKS (and every rebuild) carries.
        let now = self.now();
        let keys = self.store.keys(realm)?;
        let live: Vec<_> = keys.iter().filter(|k| k.retires_at.is_none_or(|at| at > now)).collect();
        if live.len() >= limits.max_published_keys as usize {
            let next = live.iter().filter_map(|k| k.retires_at).min().map_or(60, |at| at - now);
            self.metrics.rate_limited(realm, RateLimit::KeyRotations);
            return Err(slow_down("published keys", u64::try_from(next).unwrap_or(1).max(1)));
        }
        let rotated = self.rotate_signing_key(realm, alg, actor, now)?;
        self.metrics.key_rotated(realm, Rotation::Requested);
        Ok(rotated)
    }

    /// The work of a key rotation, for the admin API and the schedule.
    pub(crate) fn rotate_signing_key(
        &self,
        realm: &str,
        alg: Option<Algorithm>,
        actor: &str,
        now: i64,
    ) -> Result<Rotated, AdminError> {
        let mut settings = self.realm_settings(realm)?;
        let previous_alg = settings.signing_alg.clone();
        if let Some(alg) = alg {
            settings.signing_alg = alg.as_str().to_string();
        }
        let alg = Algorithm::parse(&settings.signing_alg).ok_or_else(|| internal("bad signing_alg"))?;
        let pkcs8 = agentauth_jose::generate_pkcs8(alg).map_err(internal)?;
        let pkcs8 = self.config.master_key.seal(realm.as_bytes(), &pkcs8).map_err(internal)?;
        // A realm with no key has never signed nor served its JWKS (its
        // first key is made on first use), so no one caches its keys: the
        // new key signs at once. Waiting would leave the realm with no key
        // that signs. Should a first use race this and make a key
        // meanwhile, the rotated key is the newer one and signs; the other
        // retires like any old key.
        let never_signed = self.store.keys(realm)?.is_empty();
        let signs_from = if never_signed { now } else { now + settings.key_publish_seconds };
        // The old keys sign until `signs_from`; their last tokens expire
        // one lifetime later (a minute of leeway for clock skew).
        let old_retire_at = signs_from + settings.access_token_lifetime + 60;
        let key = KeyRow { alg, pkcs8, created_at: now, signs_from, retires_at: None };
        let detail = json!({"alg": alg.as_str(), "signs_from": signs_from}).to_string();
        self.store.rotate_key(realm, &key, old_retire_at, &audit(now, actor, "rotate-key", None, Some(detail)))?;
        if settings.signing_alg != previous_alg {
            let json = serde_json::to_string(&settings).map_err(internal)?;
            self.store.set_realm_settings(
                realm,
                &json,
                &audit(now, actor, "update-realm", None, Some(json.clone())),
            )?;
        }
        self.republish_with(realm, None)?;
        tracing::info!(realm, alg = alg.as_str(), signs_from, old_retire_at, "rotated the signing key");
        Ok(Rotated { alg: alg.as_str(), signs_from, previous_keys_retire_at: old_retire_at })
    }

    /// The realm's audit log after entry `after`, oldest first, at most
    /// 1000 entries.
    pub fn audit_log(&self, realm: &str, after: i64) -> Result<Vec<(i64, AuditEntry)>, AdminError> {
        Ok(self.store.audit(realm, after, 1000)?)
    }

    /// The realm's admins.
    pub fn realm_admins(&self, realm: &str) -> Result<Vec<RealmAdmin>, AdminError> {
        Ok(self.store.realm_admins(realm)?)
    }

    /// Makes a realm admin named `name`. Its token is in the answer and
    /// nowhere else: only its keyed hash is stored.
    pub fn create_realm_admin(&self, realm: &str, name: &str, actor: &str) -> Result<NewAdmin, AdminError> {
        if !is_plugin_name(name) {
            return Err(AdminError::Invalid(
                "the body must be {\"name\": N}, N 1 to 64 letters, digits, '-', '_' or '.'".into(),
            ));
        }
        let token = format!("aat_{}", new_secret());
        let admin = RealmAdmin { realm: realm.into(), id: new_jti(), name: name.into(), created_at: self.now() };
        let detail = json!({"id": admin.id, "name": name}).to_string();
        let entry = audit(self.now(), actor, "create-admin", None, Some(detail));
        self.store.create_realm_admin(&admin, &self.hasher.hash(Purpose::AdminToken, &token), &entry)?;
        tracing::info!(realm, id = %admin.id, name, "realm admin created");
        Ok(NewAdmin { admin, token })
    }

    /// Deletes the realm admin `id`; its token stops working at once.
    pub fn delete_realm_admin(&self, realm: &str, id: &str, actor: &str) -> Result<(), AdminError> {
        let entry = audit(self.now(), actor, "delete-admin", None, Some(json!({"id": id}).to_string()));
        if !self.store.delete_realm_admin(realm, id, &entry)? {
            return Err(AdminError::NotFound(format!("no admin {id} in realm {realm}")));
        }
        tracing::info!(realm, id, "realm admin deleted");
        Ok(())
    }
}

/// 429 with `Retry-After`, as registration answers past its rate.
fn slow_down(what: &str, wait: u64) -> AdminError {
    AdminError::SlowDown {
        description: format!("too many {what} for this realm; retry in {wait} s"),
        retry_after: wait,
    }
}

fn over_quota(realm: &str, quota: &PluginQuota, versions: i64, bytes: i64) -> AdminError {
    AdminError::OverQuota(format!(
        "realm {realm} stores {versions} plugin versions of {bytes} bytes in all; it may store {} versions \
         and {} bytes (plugin_storage_versions, plugin_storage_bytes): delete versions first",
        quota.versions, quota.bytes
    ))
}

/// Reads compiled artifacts from the store, and keeps the one a compile
/// makes in memory, so that it is stored in the same commit as its
/// version: an upload refused after compiling leaves nothing behind.
struct PendingArtifact<'a> {
    stored: StoredArtifacts<'a>,
    made: std::cell::RefCell<Option<(ArtifactKey, Vec<u8>)>>,
}

impl ArtifactCache for PendingArtifact<'_> {
    fn get(&self, key: &ArtifactKey) -> Option<Vec<u8>> {
        self.stored.get(key)
    }

    fn put(&self, key: &ArtifactKey, artifact: &[u8]) {
        *self.made.borrow_mut() = Some((key.clone(), artifact.to_vec()));
    }
}
