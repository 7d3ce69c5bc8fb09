//! The admin API: plugins (upload, list, activate, roll back, delete),
//! hook selection and the audit log, per realm, under
//! `/admin/v1/realms/{realm}/`.
//!
//! Every request carries `Authorization: Bearer <admin token>`, checked
//! before its body is read. Every change is validated before it is stored,
//! stored with its audit entry in one commit, and then published by
//! rebuilding the realm's runtime: requests in flight finish on the
//! version they started with, later ones see the new one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use agentauth_core::client::is_plugin_name;
use agentauth_plugin_host::{ArtifactCache, ArtifactKey, HookKind};
use agentauth_store::{AuditEntry, PluginPush, PluginQuota, PushOutcome};
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::http::request::Parts;
use serde_json::{Value, json};

use crate::http::Reply;
use crate::realm::RealmSettings;
use crate::route::AdminOp;
use crate::secrets::{Purpose, new_secret};
use crate::{App, now};

/// Largest admin request body: a plugin upload, with room to spare.
pub const MAX_BODY: usize = agentauth_plugin_host::MAX_COMPONENT_BYTES + 1024;

fn error(status: u16, code: &str, description: impl Into<String>) -> Reply {
    Reply::json(status, &json!({"error": code, "error_description": description.into()}))
}

fn bad_request(description: impl Into<String>) -> Reply {
    error(400, "invalid_request", description)
}

fn not_found(description: impl Into<String>) -> Reply {
    error(404, "not_found", description)
}

fn conflict(description: impl Into<String>) -> Reply {
    error(409, "conflict", description)
}

/// 429 with `Retry-After`, as registration answers past its rate.
fn slow_down(what: &str, wait: u64) -> Reply {
    error(429, "slow_down", format!("too many {what} for this realm; retry in {wait} s"))
        .with_header(hyper::header::RETRY_AFTER, wait.to_string())
}

/// A failure of the server's own: logged, and answered 500; except a
/// database kept busy past its timeout, which is 503 with `Retry-After`,
/// as on the OAuth endpoints.
fn internal<E: std::fmt::Display + 'static>(e: E) -> Reply {
    if crate::endpoint::is_busy_store(&e) {
        tracing::warn!("admin: {e}");
        return error(503, "temporarily_unavailable", "the server is busy; retry shortly")
            .with_header(hyper::header::RETRY_AFTER, "1".into());
    }
    tracing::error!("admin: {e}");
    error(500, "server_error", "internal error")
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

/// The settings only the operator may change: they bound what one realm
/// may take from the server and its other realms.
const OPERATOR_SETTINGS: [&str; 11] = [
    "plugin_timeout_ms",
    "plugin_memory_bytes",
    "plugin_concurrency",
    "registrations_per_minute",
    "registrations_per_minute_per_source",
    "max_clients",
    "plugin_storage_versions",
    "plugin_storage_bytes",
    "plugin_pushes_per_minute",
    "key_rotations_per_minute",
    "max_published_keys",
];

/// Identifies the caller by its bearer token: the operator's, or a realm
/// admin's (found by its keyed hash). Blocking: it may read the store.
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Principal, Reply> {
    let Some(operator) = &app.config.admin_token else {
        return Err(error(
            403,
            "access_denied",
            "the admin API is disabled: start the server with AGENTAUTH_ADMIN_TOKEN set",
        ));
    };
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty() && token.len() <= 512);
    let unauthorized = || {
        error(401, "invalid_token", "a valid admin bearer token is required")
            .with_header(WWW_AUTHENTICATE, "Bearer realm=\"agentauth-admin\"".into())
    };
    let Some(token) = presented else {
        return Err(unauthorized());
    };
    if operator.matches(token) {
        return Ok(Principal::Operator);
    }
    let hash = app.hasher.hash(Purpose::AdminToken, token);
    match app.store.realm_admin_by_token(&hash).map_err(internal)? {
        Some(admin) => Ok(Principal::RealmAdmin { realm: admin.realm, name: admin.name }),
        None => Err(unauthorized()),
    }
}

/// Whether `principal` may run `op` on `realm`.
pub fn permit(principal: &Principal, realm: &str, op: &AdminOp) -> Result<(), Reply> {
    let Principal::RealmAdmin { realm: own, .. } = principal else {
        return Ok(());
    };
    let operator_only = matches!(
        op,
        AdminOp::ListRealms
            | AdminOp::CreateRealm
            | AdminOp::DeleteRealm
            | AdminOp::ListAdmins
            | AdminOp::CreateAdmin
            | AdminOp::DeleteAdmin { .. }
    );
    if operator_only {
        return Err(error(403, "access_denied", "only the operator admin may do this"));
    }
    if own != realm {
        return Err(error(403, "access_denied", format!("this credential administers realm {own} only")));
    }
    Ok(())
}

/// Who made a change. A realm admin is named by its credential; the
/// operator by the name the caller gives in the `agentauth-actor` header
/// (the CLI sends the user's login).
fn actor(parts: &Parts) -> String {
    if let Some(Principal::RealmAdmin { name, .. }) = parts.extensions.get::<Principal>() {
        return format!("realm-admin:{name}");
    }
    let named = parts
        .headers
        .get("agentauth-actor")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().filter(|c| c.is_ascii_graphic()).take(64).collect::<String>())
        .filter(|v| !v.is_empty());
    match named {
        Some(name) => format!("admin:{name}"),
        None => "admin".to_string(),
    }
}

fn audit(parts: &Parts, action: &str, plugin: &str) -> AuditEntry {
    AuditEntry {
        at: now(),
        actor: actor(parts),
        action: action.into(),
        plugin: Some(plugin.into()),
        ..Default::default()
    }
}

fn query(parts: &Parts, name: &str) -> Option<String> {
    parts
        .uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned()))
}

fn json_body(body: &[u8]) -> Result<Value, Reply> {
    crate::http::parse_json(body).map_err(bad_request)
}

/// Runs one admin operation. Blocking.
pub fn dispatch(app: &App, realm: &str, op: AdminOp, parts: &Parts, body: &[u8]) -> Reply {
    let realm_op = match op {
        AdminOp::ListRealms => {
            Some(app.store.realm_names().map_err(internal).map(|names| Reply::json(200, &json!({"realms": names}))))
        }
        AdminOp::CreateRealm => Some(create_realm(app, realm, parts, body)),
        AdminOp::DeleteRealm => Some(delete_realm(app, realm, parts)),
        _ => None,
    };
    if let Some(outcome) = realm_op {
        return outcome.unwrap_or_else(|reply| reply);
    }
    match app.store.realm(realm) {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(format!("no realm {realm}")),
        Err(e) => return internal(e),
    }
    let outcome = match op {
        AdminOp::ListPlugins => list(app, realm, None),
        AdminOp::PluginVersions { name } => list(app, realm, Some(&name)),
        AdminOp::PushPlugin { name } => push(app, realm, &name, parts, body),
        AdminOp::Activate { name } => activate(app, realm, &name, parts, body),
        AdminOp::Rollback { name } => rollback(app, realm, &name, parts),
        AdminOp::DeleteVersion { name, version } => delete(app, realm, &name, Some(version), parts),
        AdminOp::DeletePlugin { name } => delete(app, realm, &name, None, parts),
        AdminOp::Hooks => settings(app, realm).map(|s| Reply::json(200, &hooks_json(&s))),
        AdminOp::SetHooks => set_hooks(app, realm, parts, body),
        AdminOp::Audit => audit_log(app, realm, parts),
        AdminOp::Keys => list_keys(app, realm),
        AdminOp::RotateKey => rotate_key(app, realm, parts, body),
        AdminOp::ShowRealm => settings(app, realm).map(|s| Reply::json(200, &json!({"name": realm, "settings": s}))),
        AdminOp::UpdateRealm => update_realm(app, realm, parts, body),
        AdminOp::ListAdmins => list_admins(app, realm),
        AdminOp::CreateAdmin => create_admin(app, realm, parts, body),
        AdminOp::DeleteAdmin { id } => delete_admin(app, realm, &id, parts),
        AdminOp::ListRealms | AdminOp::CreateRealm | AdminOp::DeleteRealm => Err(not_found("no such operation")),
    };
    outcome.unwrap_or_else(|reply| reply)
}

fn list(app: &App, realm: &str, only: Option<&str>) -> Result<Reply, Reply> {
    let versions = app.store.plugin_versions(realm).map_err(internal)?;
    let listed: Vec<Value> = versions
        .iter()
        .filter(|v| only.is_none_or(|n| v.name == n))
        .map(|v| {
            json!({
                "name": v.name, "version": v.version, "hook": v.hook.as_str(), "sha256": v.sha256,
                "size": v.size, "created_at": v.created_at, "active": v.active,
            })
        })
        .collect();
    if let Some(name) = only.filter(|_| listed.is_empty()) {
        return Err(not_found(format!("no plugin {name} in realm {realm}")));
    }
    Ok(Reply::json(200, &json!({ "plugins": listed })))
}

/// Uploads a component (`?hook=dcr|may-act`, or none to take the hook
/// the component exports; `&activate=false` to store it without
/// activating). It is compiled and checked before it is stored.
fn push(app: &App, realm: &str, name: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let kind = match query(parts, "hook") {
        None => None,
        Some(hook) => Some(
            HookKind::parse(&hook)
                .ok_or_else(|| bad_request(format!("unknown hook {hook:?}; hooks: dcr, may-act, token, scope")))?,
        ),
    };
    let activate = match query(parts, "activate").as_deref() {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(bad_request(format!("activate must be true or false, not {other:?}"))),
    };
    // Its place among the uploads in flight, and its turn in the realm's
    // rate, were taken before its body was read (`admit_upload`).
    let limits = settings(app, realm)?;
    let quota = PluginQuota {
        versions: i64::from(limits.plugin_storage_versions),
        bytes: i64::try_from(limits.plugin_storage_bytes).unwrap_or(i64::MAX),
    };
    let pushed = store_component(app, realm, name, kind, body, activate, actor(parts), quota)?;
    Ok(Reply::json(201, &pushed))
}

/// Uploads the server handles at once, all realms together: one compiles
/// (compilations queue one at a time), the others wait their turn, each
/// holding its component. Past it, 503 with `Retry-After`, so waiting
/// uploads cannot pile up.
const MAX_UPLOADS_IN_FLIGHT: usize = 4;

/// An upload's place among the [`MAX_UPLOADS_IN_FLIGHT`], taken before a
/// byte of its body is read and held until it has been handled, so at most
/// that many upload bodies are ever held at once, and at most one of each
/// realm.
pub(crate) struct UploadPermit {
    app: std::sync::Arc<App>,
    /// The realm whose one upload this is, once admitted.
    realm: Option<String>,
}

impl Drop for UploadPermit {
    fn drop(&mut self) {
        self.app.uploads_in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(realm) = &self.realm {
            self.app.uploading_realms.lock().unwrap_or_else(|p| p.into_inner()).remove(realm);
        }
    }
}

/// Admits an upload to `realm` before its body is read: a place among the
/// uploads in flight, one per realm (503 with `Retry-After` past either),
/// then a turn in the realm's `plugin_pushes_per_minute` (429 past it).
/// Counted before anything is read or compiled: a refused upload costs too.
pub(crate) fn admit_upload(app: &std::sync::Arc<App>, realm: &str) -> Result<UploadPermit, Reply> {
    let busy = |why: &str| {
        error(503, "temporarily_unavailable", format!("{why}; retry shortly"))
            .with_header(hyper::header::RETRY_AFTER, "10".into())
    };
    let before = app.uploads_in_flight.fetch_add(1, Ordering::SeqCst);
    let mut permit = UploadPermit { app: std::sync::Arc::clone(app), realm: None };
    if before >= MAX_UPLOADS_IN_FLIGHT {
        return Err(busy("the server is compiling other uploads"));
    }
    if !app.uploading_realms.lock().unwrap_or_else(|p| p.into_inner()).insert(realm.to_string()) {
        return Err(busy("this realm already has an upload in flight"));
    }
    permit.realm = Some(realm.to_string());
    let per_minute = settings(app, realm)?.plugin_pushes_per_minute;
    app.plugin_pushes.take(realm, None, per_minute, per_minute).map_err(|wait| slow_down("plugin uploads", wait))?;
    Ok(permit)
}

/// Validates, stores (with its audit entry) and, if asked, activates a
/// plugin version: the admin API's upload and the plugin watcher's work.
/// The plugin watcher's pushes are the operator's own files, in
/// development: not bound by the realm's plugin quota.
pub(crate) fn push_component(
    app: &App,
    realm: &str,
    name: &str,
    kind: Option<HookKind>,
    component: &[u8],
    activate: bool,
    actor: String,
) -> Result<Value, Reply> {
    store_component(app, realm, name, kind, component, activate, actor, PluginQuota::UNLIMITED)
}

/// As [`push_component`], refused past `quota`.
#[allow(clippy::too_many_arguments)]
fn store_component(
    app: &App,
    realm: &str,
    name: &str,
    kind: Option<HookKind>,
    component: &[u8],
    activate: bool,
    actor: String,
    quota: PluginQuota,
) -> Result<Value, Reply> {
    if !is_plugin_name(name) {
        return Err(bad_request("plugin names are 1 to 64 letters, digits, '-', '_' or '.'"));
    }
    // Checked before compiling, so an upload that cannot be stored costs
    // no compilation; checked again, atomically, when it is stored.
    let (versions, bytes) = app.store.plugin_usage(realm).map_err(internal)?;
    let size = i64::try_from(component.len()).unwrap_or(i64::MAX);
    if versions >= quota.versions || bytes.saturating_add(size) > quota.bytes {
        return Err(over_quota(realm, &quota, versions, bytes));
    }
    let cache =
        PendingArtifact { stored: crate::realm::StoredArtifacts { store: &app.store, now: now() }, made: None.into() };
    let plugin = app
        .host
        .load_detecting(kind, name, 0, component, &cache)
        .map_err(|e| error(400, "invalid_plugin", e.to_string()))?;
    let kind = plugin.kind();
    let sha256 = agentauth_plugin_host::sha256_hex(component);
    let made = cache.made.into_inner().filter(|(key, _)| key.component_sha256 == sha256);
    let artifact = made.as_ref().map(|(key, artifact)| (key.engine.as_str(), artifact.as_slice()));
    let push = PluginPush { name, hook: kind, sha256: &sha256, component, activate, artifact, quota };
    let entry = AuditEntry {
        at: now(),
        actor,
        action: "push".into(),
        plugin: Some(name.into()),
        sha256: Some(sha256.clone()),
        ..Default::default()
    };
    let version = match app.store.push_plugin(realm, &push, &entry).map_err(internal)? {
        PushOutcome::Stored { version } => version,
        PushOutcome::HookMismatch { existing } => {
            return Err(conflict(format!(
                "plugin {name} serves the {existing} hook; push a {existing} component or use another name"
            )));
        }
        PushOutcome::OverQuota { versions, bytes } => return Err(over_quota(realm, &quota, versions, bytes)),
    };
    if activate {
        app.republish(realm, Some(Arc::new(plugin.with_version(version)))).map_err(|e| internal(e.description))?;
    }
    tracing::info!(realm, plugin = name, version, sha256 = %sha256, activate, "plugin pushed");
    Ok(json!({
        "name": name, "version": version, "hook": kind.as_str(), "sha256": sha256,
        "size": component.len(), "active": activate,
    }))
}

fn over_quota(realm: &str, quota: &PluginQuota, versions: i64, bytes: i64) -> Reply {
    error(
        409,
        "quota_exceeded",
        format!(
            "realm {realm} stores {versions} plugin versions of {bytes} bytes in all; it may store {} versions \
             and {} bytes (plugin_storage_versions, plugin_storage_bytes): delete versions first",
            quota.versions, quota.bytes
        ),
    )
}

/// Reads compiled artifacts from the store, and keeps the one a compile
/// makes in memory, so that it is stored in the same commit as its
/// version: an upload refused after compiling leaves nothing behind.
struct PendingArtifact<'a> {
    stored: crate::realm::StoredArtifacts<'a>,
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

fn activate(app: &App, realm: &str, name: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let version = json_body(body)?
        .get("version")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad_request("the body must be {\"version\": N}"))?;
    activate_version(app, realm, name, version, audit(parts, "activate", name))
}

fn activate_version(app: &App, realm: &str, name: &str, version: i64, entry: AuditEntry) -> Result<Reply, Reply> {
    if !app.store.activate_plugin(realm, name, version, &entry).map_err(internal)? {
        return Err(not_found(format!("no version {version} of plugin {name}")));
    }
    app.republish(realm, None).map_err(|e| internal(e.description))?;
    tracing::info!(realm, plugin = name, version, action = %entry.action, "plugin activated");
    Ok(Reply::json(200, &json!({"name": name, "version": version, "active": true})))
}

/// Activates the newest version older than the active one.
fn rollback(app: &App, realm: &str, name: &str, parts: &Parts) -> Result<Reply, Reply> {
    let versions: Vec<_> =
        app.store.plugin_versions(realm).map_err(internal)?.into_iter().filter(|v| v.name == name).collect();
    let active =
        versions.iter().find(|v| v.active).ok_or_else(|| conflict(format!("plugin {name} has no active version")))?;
    let previous = versions
        .iter()
        .filter(|v| v.version < active.version)
        .map(|v| v.version)
        .max()
        .ok_or_else(|| conflict(format!("plugin {name} has no version before {}", active.version)))?;
    activate_version(app, realm, name, previous, audit(parts, "rollback", name))
}

fn delete(app: &App, realm: &str, name: &str, version: Option<i64>, parts: &Parts) -> Result<Reply, Reply> {
    let versions: Vec<_> =
        app.store.plugin_versions(realm).map_err(internal)?.into_iter().filter(|v| v.name == name).collect();
    match version {
        Some(v) if versions.iter().any(|x| x.version == v && x.active) => {
            return Err(conflict(format!(
                "version {v} of {name} is active; activate another version first, or delete the plugin"
            )));
        }
        None => {
            let settings = settings(app, realm)?;
            if let Some(kind) = REALM_HOOKS.into_iter().find(|k| settings.hook_plugin(*k) == Some(name)) {
                return Err(conflict(format!(
                    "plugin {name} serves the realm's {} hook; select another first",
                    kind.as_str()
                )));
            }
        }
        _ => {}
    }
    let deleted = app.store.delete_plugin(realm, name, version, &audit(parts, "delete", name)).map_err(internal)?;
    if deleted == 0 {
        return Err(not_found(format!("no such plugin {name}")));
    }
    app.republish(realm, None).map_err(|e| internal(e.description))?;
    Ok(Reply::json(200, &json!({"name": name, "deleted_versions": deleted})))
}

fn settings(app: &App, realm: &str) -> Result<RealmSettings, Reply> {
    let row = app.store.realm(realm).map_err(internal)?.ok_or_else(|| not_found(format!("no realm {realm}")))?;
    serde_json::from_str(&row.settings).map_err(internal)
}

/// The realm-wide hooks, in the order they are shown.
const REALM_HOOKS: [HookKind; 3] = [HookKind::Dcr, HookKind::Scope, HookKind::Token];

fn hooks_json(settings: &RealmSettings) -> Value {
    let hooks: serde_json::Map<String, Value> =
        REALM_HOOKS.iter().map(|k| (k.as_str().to_string(), json!(settings.hook_plugin(*k)))).collect();
    Value::Object(hooks)
}

/// Selects the plugin serving realm-wide hooks: `{"dcr": "name"}`, or
/// `{"dcr": null}` for none; likewise `scope` and `token`. The plugin must
/// exist, be active and serve that hook. May-act plugins are chosen per
/// client, by the `accessTokenMayActScript` attribute.
fn set_hooks(app: &App, realm: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let request = json_body(body)?;
    let Some(fields) = request.as_object() else {
        return Err(bad_request("the body must be a JSON object such as {\"dcr\": \"plugin-name\"}"));
    };
    let mut settings = settings(app, realm)?;
    for (hook, value) in fields {
        let kind = HookKind::parse(hook)
            .filter(|k| REALM_HOOKS.contains(k))
            .ok_or_else(|| bad_request(format!("unknown realm hook {hook:?}; realm hooks: dcr, scope, token")))?;
        let plugin = match value {
            Value::Null => None,
            Value::String(name) => Some(name.clone()),
            _ => return Err(bad_request(format!("{hook} must be a plugin name or null"))),
        };
        settings.set_hook_plugin(kind, plugin);
    }
    check_hook_plugins(app, realm, &settings)?;
    let json = serde_json::to_string(&settings).map_err(internal)?;
    let entry = realm_entry(parts, "set-hooks", Some(hooks_json(&settings).to_string()));
    app.store.set_realm_settings(realm, &json, &entry).map_err(internal)?;
    app.republish(realm, None).map_err(|e| internal(e.description))?;
    Ok(Reply::json(200, &hooks_json(&settings)))
}

/// Refuses settings whose realm-wide hooks name a plugin that is not an
/// active plugin of that hook in the realm.
fn check_hook_plugins(app: &App, realm: &str, settings: &RealmSettings) -> Result<(), Reply> {
    let versions = app.store.plugin_versions(realm).map_err(internal)?;
    for kind in REALM_HOOKS {
        if let Some(name) = settings.hook_plugin(kind)
            && !versions.iter().any(|v| v.name == name && v.active && v.hook == kind)
        {
            return Err(bad_request(format!("no active {} plugin {name} in realm {realm}", kind.as_str())));
        }
    }
    Ok(())
}

fn list_keys(app: &App, realm: &str) -> Result<Reply, Reply> {
    let now = now();
    let keys: Vec<Value> = app
        .store
        .keys(realm)
        .map_err(internal)?
        .into_iter()
        .map(|k| {
            let status = match (k.signs_from <= now, k.retires_at) {
                (_, Some(at)) if at <= now => "retired",
                (_, Some(_)) => "retiring",
                (false, None) => "published",
                (true, None) => "signing",
            };
            json!({"alg": k.alg.as_str(), "created_at": k.created_at, "signs_from": k.signs_from, "retires_at": k.retires_at, "status": status})
        })
        .collect();
    Ok(Reply::json(200, &json!({ "keys": keys })))
}

/// Rotates the realm's signing key: a new key (of `{"alg": ...}` if
/// given, which also becomes the realm's setting) is published now and
/// signs after `key_publish_seconds`; the keys before it leave the JWKS
/// once the last token they can have signed has expired.
fn rotate_key(app: &App, realm: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let request = if body.is_empty() { json!({}) } else { json_body(body)? };
    let alg = match request.get("alg") {
        None => None,
        Some(alg) => Some(
            alg.as_str()
                .and_then(agentauth_jose::Algorithm::parse)
                .ok_or_else(|| bad_request("alg must be RS256, ES256 or EdDSA"))?,
        ),
    };
    let limits = settings(app, realm)?;
    let per_minute = limits.key_rotations_per_minute;
    app.key_rotations.take(realm, None, per_minute, per_minute).map_err(|wait| slow_down("key rotations", wait))?;
    // Each rotation keeps the keys before it published for a token
    // lifetime: bound how many the JWKS (and every rebuild) carries.
    let now = now();
    let keys = app.store.keys(realm).map_err(internal)?;
    let live: Vec<_> = keys.iter().filter(|k| k.retires_at.is_none_or(|at| at > now)).collect();
    if live.len() >= limits.max_published_keys as usize {
        let next = live.iter().filter_map(|k| k.retires_at).min().map_or(60, |at| at - now);
        return Err(slow_down("published keys", u64::try_from(next).unwrap_or(1).max(1)));
    }
    let rotated = rotate_signing_key(app, realm, alg, &actor(parts), now)?;
    Ok(Reply::json(200, &rotated))
}

/// The work of a key rotation, for the admin API and the schedule.
pub(crate) fn rotate_signing_key(
    app: &App,
    realm: &str,
    alg: Option<agentauth_jose::Algorithm>,
    actor: &str,
    now: i64,
) -> Result<Value, Reply> {
    let mut settings = settings(app, realm)?;
    let previous_alg = settings.signing_alg.clone();
    if let Some(alg) = alg {
        settings.signing_alg = alg.as_str().to_string();
    }
    let alg = agentauth_jose::Algorithm::parse(&settings.signing_alg).ok_or_else(|| internal("bad signing_alg"))?;
    let pkcs8 = agentauth_jose::generate_pkcs8(alg).map_err(internal)?;
    let pkcs8 = app.config.master_key.seal(realm.as_bytes(), &pkcs8).map_err(internal)?;
    // A realm with no key has never signed nor served its JWKS (its first
    // key is made on first use), so no one caches its keys: the new key
    // signs at once. Waiting would leave the realm with no key that signs.
    // Should a first use race this and make a key meanwhile, the rotated
    // key is the newer one and signs; the other retires like any old key.
    let never_signed = app.store.keys(realm).map_err(internal)?.is_empty();
    let signs_from = if never_signed { now } else { now + settings.key_publish_seconds };
    // The old keys sign until `signs_from`; their last tokens expire one
    // lifetime later (a minute of leeway for clock skew).
    let old_retire_at = signs_from + settings.access_token_lifetime + 60;
    let key = agentauth_store::KeyRow { alg, pkcs8, created_at: now, signs_from, retires_at: None };
    let entry = |action: &str, detail: String| AuditEntry {
        at: now,
        actor: actor.to_string(),
        action: action.into(),
        detail: Some(detail),
        ..Default::default()
    };
    let detail = json!({"alg": alg.as_str(), "signs_from": signs_from}).to_string();
    app.store.rotate_key(realm, &key, old_retire_at, &entry("rotate-key", detail)).map_err(internal)?;
    if settings.signing_alg != previous_alg {
        let json = serde_json::to_string(&settings).map_err(internal)?;
        app.store.set_realm_settings(realm, &json, &entry("update-realm", json.clone())).map_err(internal)?;
    }
    app.republish(realm, None).map_err(|e| internal(e.description))?;
    tracing::info!(realm, alg = alg.as_str(), signs_from, old_retire_at, "rotated the signing key");
    Ok(json!({"alg": alg.as_str(), "signs_from": signs_from, "previous_keys_retire_at": old_retire_at}))
}

/// Rotates the signing key of every realm whose newest key is older than
/// its `key_rotation_days`. Returns the realms rotated.
pub(crate) fn rotate_due_keys(app: &App, now: i64) -> Result<Vec<String>, String> {
    let mut rotated = Vec::new();
    for realm in app.store.realm_names().map_err(|e| e.to_string())? {
        // One realm that cannot be rotated (unreadable settings, a busy
        // database) must not hold back the realms after it.
        match rotate_if_due(app, &realm, now) {
            Ok(true) => rotated.push(realm),
            Ok(false) => {}
            Err(why) => tracing::warn!(realm, "scheduled key rotation: {why}"),
        }
    }
    Ok(rotated)
}

/// Rotates `realm`'s signing key if its newest is `key_rotation_days` old.
fn rotate_if_due(app: &App, realm: &str, now: i64) -> Result<bool, String> {
    let describe = |reply: Reply| reply.body_text();
    let settings = settings(app, realm).map_err(describe)?;
    if settings.key_rotation_days == 0 {
        return Ok(false);
    }
    let keys = app.store.keys(realm).map_err(|e| e.to_string())?;
    // A realm that has not signed yet makes its first key on first use.
    let Some(newest) = keys.iter().map(|k| k.created_at).max() else {
        return Ok(false);
    };
    if newest + i64::from(settings.key_rotation_days) * 86_400 > now {
        return Ok(false);
    }
    rotate_signing_key(app, realm, None, "scheduler", now).map_err(describe)?;
    Ok(true)
}

fn realm_entry(parts: &Parts, action: &str, detail: Option<String>) -> AuditEntry {
    AuditEntry { at: now(), actor: actor(parts), action: action.into(), detail, ..Default::default() }
}

/// Creates a realm: `PUT /admin/v1/realms/{realm}` with its settings (any
/// left out take their defaults; `{}` is fine). Unknown settings are
/// refused, so a typo does not go unnoticed.
fn create_realm(app: &App, realm: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let request = if body.is_empty() { json!({}) } else { json_body(body)? };
    let settings: RealmSettings =
        serde_json::from_value(request).map_err(|e| bad_request(format!("realm settings: {e}")))?;
    settings.validate().map_err(bad_request)?;
    if REALM_HOOKS.iter().any(|k| settings.hook_plugin(*k).is_some()) {
        return Err(bad_request("a new realm has no plugins yet: push them, then select them with PUT hooks"));
    }
    let json = serde_json::to_string(&settings).map_err(internal)?;
    if !app
        .store
        .create_realm(realm, &json, &realm_entry(parts, "create-realm", Some(json.clone())))
        .map_err(internal)?
    {
        return Err(conflict(format!("realm {realm} exists")));
    }
    tracing::info!(realm, "realm created");
    Ok(Reply::json(201, &json!({"name": realm, "settings": settings})))
}

/// Changes some of a realm's settings: `PATCH` with the ones to change.
fn update_realm(app: &App, realm: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let current = settings(app, realm)?;
    let Value::Object(changes) = json_body(body)? else {
        return Err(bad_request("the body must be a JSON object of the settings to change"));
    };
    let mut merged = serde_json::to_value(&current).map_err(internal)?;
    for (name, value) in changes {
        merged[name] = value;
    }
    let settings: RealmSettings =
        serde_json::from_value(merged).map_err(|e| bad_request(format!("realm settings: {e}")))?;
    settings.validate().map_err(bad_request)?;
    if let Some(Principal::RealmAdmin { .. }) = parts.extensions.get::<Principal>() {
        let before = serde_json::to_value(&current).map_err(internal)?;
        let after = serde_json::to_value(&settings).map_err(internal)?;
        if let Some(name) = OPERATOR_SETTINGS.iter().find(|n| before[**n] != after[**n]) {
            return Err(error(403, "access_denied", format!("only the operator admin may change {name}")));
        }
    }
    if settings.signing_alg != current.signing_alg {
        return Err(bad_request(
            "signing_alg of an existing realm changes with key rotation: POST keys/rotate {\"alg\": ...}",
        ));
    }
    check_hook_plugins(app, realm, &settings)?;
    let json = serde_json::to_string(&settings).map_err(internal)?;
    app.store
        .set_realm_settings(realm, &json, &realm_entry(parts, "update-realm", Some(json.clone())))
        .map_err(internal)?;
    app.republish(realm, None).map_err(|e| internal(e.description))?;
    Ok(Reply::json(200, &json!({"name": realm, "settings": settings})))
}

/// Deletes a realm with its clients, keys, plugins and tokens; its audit
/// log stays.
fn delete_realm(app: &App, realm: &str, parts: &Parts) -> Result<Reply, Reply> {
    if !app.store.delete_realm(realm, &realm_entry(parts, "delete-realm", None)).map_err(internal)? {
        return Err(not_found(format!("no realm {realm}")));
    }
    app.realms.forget(realm);
    tracing::info!(realm, "realm deleted");
    Ok(Reply::no_content())
}

fn audit_log(app: &App, realm: &str, parts: &Parts) -> Result<Reply, Reply> {
    let after = query(parts, "after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let entries = app.store.audit(realm, after, 1000).map_err(internal)?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(id, e)| {
            json!({
                "id": id, "at": e.at, "actor": e.actor, "realm": realm, "action": e.action,
                "plugin": e.plugin, "version": e.version, "sha256": e.sha256, "detail": e.detail,
            })
        })
        .collect();
    Ok(Reply::json(200, &json!({ "entries": entries })))
}

fn admin_json(admin: &agentauth_store::RealmAdmin) -> Value {
    json!({"id": admin.id, "name": admin.name, "realm": admin.realm, "created_at": admin.created_at})
}

fn list_admins(app: &App, realm: &str) -> Result<Reply, Reply> {
    let admins = app.store.realm_admins(realm).map_err(internal)?;
    Ok(Reply::json(200, &json!({"admins": admins.iter().map(admin_json).collect::<Vec<_>>()})))
}

/// Makes a realm admin: `POST admins {"name": "..."}`. The token is in the
/// response and nowhere else: only its keyed hash is stored.
fn create_admin(app: &App, realm: &str, parts: &Parts, body: &[u8]) -> Result<Reply, Reply> {
    let request = json_body(body)?;
    let name = request
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| is_plugin_name(n))
        .ok_or_else(|| bad_request("the body must be {\"name\": N}, N 1 to 64 letters, digits, '-', '_' or '.'"))?;
    let token = format!("aat_{}", new_secret());
    let admin = agentauth_store::RealmAdmin {
        realm: realm.into(),
        id: crate::secrets::new_jti(),
        name: name.into(),
        created_at: now(),
    };
    let entry = realm_entry(parts, "create-admin", Some(json!({"id": admin.id, "name": name}).to_string()));
    app.store.create_realm_admin(&admin, &app.hasher.hash(Purpose::AdminToken, &token), &entry).map_err(internal)?;
    tracing::info!(realm, id = %admin.id, name, "realm admin created");
    let mut reply = admin_json(&admin);
    reply["token"] = json!(token);
    Ok(Reply::json(201, &reply))
}

fn delete_admin(app: &App, realm: &str, id: &str, parts: &Parts) -> Result<Reply, Reply> {
    let entry = realm_entry(parts, "delete-admin", Some(json!({"id": id}).to_string()));
    if !app.store.delete_realm_admin(realm, id, &entry).map_err(internal)? {
        return Err(not_found(format!("no admin {id} in realm {realm}")));
    }
    tracing::info!(realm, id, "realm admin deleted");
    Ok(Reply::no_content())
}
