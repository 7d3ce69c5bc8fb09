//! The admin API over HTTP, under `/admin/v1/realms/{realm}/`: each
//! operation's request read into typed arguments, handed to the service
//! (`agentauth_service::admin`), and its outcome rendered as JSON.
//!
//! Every request carries `Authorization: Bearer <admin token>`, checked
//! (with the caller's right to the operation, and an upload's admission)
//! before its body is read. A user's password comes in a JSON body (on
//! creation, or `PUT users/{subject}/password`) and is never answered.

use agentauth_core::ports::{ClientFilter, ClientState, UserState};
use agentauth_core::{Algorithm, HookKind};
use agentauth_service::admin::{PluginListing, Upload, UploadPermit, realm_hooks};
use agentauth_service::client_admin::client_json;
use agentauth_service::{AdminError, NewUser, Password, Principal, UserPage};
use hyper::HeaderMap;
use hyper::http::request::Parts;
use serde_json::{Value, json};

use crate::App;
use crate::http::Reply;
use crate::route::AdminOp;

/// Largest admin request body: a plugin upload, with room to spare.
pub const MAX_BODY: usize = agentauth_plugin_host::MAX_COMPONENT_BYTES + 1024;

/// Whether `op` concerns the server rather than one realm: the operator's
/// only.
fn server_wide(op: &AdminOp) -> bool {
    matches!(
        op,
        AdminOp::ListRealms
            | AdminOp::CreateRealm
            | AdminOp::DeleteRealm
            | AdminOp::ListAdmins
            | AdminOp::CreateAdmin
            | AdminOp::DeleteAdmin { .. }
    )
}

/// Identifies the caller and checks its right to `op` on `realm`; admits
/// an upload (see `Service::admit_upload`). Blocking: it may read the
/// store.
pub fn admit(
    app: &std::sync::Arc<App>,
    headers: &HeaderMap,
    realm: &str,
    op: &AdminOp,
) -> Result<(Principal, Option<UploadPermit>), Reply> {
    let principal = app.service.admin_principal(crate::http::bearer(headers))?;
    admit_principal(app, principal, realm, op)
}

/// Checks an identified caller's right to `op` on `realm`, and admits an
/// upload. Blocking.
pub fn admit_principal(
    app: &std::sync::Arc<App>,
    principal: Principal,
    realm: &str,
    op: &AdminOp,
) -> Result<(Principal, Option<UploadPermit>), Reply> {
    principal.permit(realm, server_wide(op))?;
    let upload = match op {
        AdminOp::PushPlugin { .. } => Some(app.service.admit_upload(realm)?),
        _ => None,
    };
    Ok((principal, upload))
}

/// The metrics, for the operator only: every realm's are in them. 404
/// while the admin API is disabled, as if there were none; 401 without
/// the operator's token; 403 for a realm admin's. Blocking: a realm
/// admin's token is looked up in the store.
pub fn metrics(app: &App, headers: &HeaderMap) -> Reply {
    match app.service.admin_principal(crate::http::bearer(headers)) {
        Ok(Principal::Operator) => Reply::metrics(app.service.metrics().encode()),
        Ok(Principal::RealmAdmin { .. }) => {
            Reply::from(AdminError::Forbidden("only the operator admin may read the metrics".into()))
        }
        Err(AdminError::Disabled) => Reply::not_found(),
        Err(e) => Reply::from(e),
    }
}

/// Who made a change, as the audit log names it.
fn actor(parts: &Parts) -> String {
    let named = parts.headers.get("agentauth-actor").and_then(|v| v.to_str().ok());
    parts.extensions.get::<Principal>().unwrap_or(&Principal::Operator).actor(named)
}

/// The filter of `GET clients`: `state` (`active`, `disabled`,
/// `expired`), `agents=true`, `unused_since` (a Unix time: not used since).
fn client_filter(parts: &Parts, now: i64) -> Result<ClientFilter, AdminError> {
    let mut filter = ClientFilter::default();
    match query(parts, "state").as_deref() {
        None => {}
        Some("expired") => filter.expired_by = Some(now),
        Some(state) => {
            filter.state = Some(
                ClientState::parse(state)
                    .ok_or_else(|| AdminError::Invalid(format!("state {state:?}: use active, disabled or expired")))?,
            );
        }
    }
    match query(parts, "agents").as_deref() {
        None | Some("false") => {}
        Some("true") => filter.agents_only = true,
        Some(other) => return Err(AdminError::Invalid(format!("agents {other:?}: use true or false"))),
    }
    filter.owner = query(parts, "owner");
    if let Some(since) = query(parts, "unused_since") {
        let since =
            since.parse().map_err(|_| AdminError::Invalid(format!("unused_since must be a Unix time: {since:?}")))?;
        filter.unused_since = Some(since);
    }
    Ok(filter)
}

pub(crate) fn query(parts: &Parts, name: &str) -> Option<String> {
    parts
        .uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v.into_owned()))
}

/// One audited decision as the admin API shows it.
fn decision_json(id: i64, d: &agentauth_core::ports::Decision) -> Value {
    let plugins: Vec<Value> = d
        .plugins
        .iter()
        .map(|p| json!({"name": p.name, "version": p.version, "sha256": p.sha256, "outcome": p.outcome}))
        .collect();
    json!({
        "id": id, "at": d.at, "request_id": d.request_id, "event": d.event, "client_id": d.client_id,
        "grant_type": d.grant, "subject": d.subject, "actors": d.actors, "scope": d.scope,
        "audience": d.audience, "token_kind": d.token_kind, "jti": d.jti, "plugins": plugins,
        "outcome": d.outcome, "error": d.error,
    })
}

fn json_body(body: &[u8]) -> Result<Value, AdminError> {
    crate::http::parse_json(body).map_err(AdminError::Invalid)
}

/// A body that may be empty, meaning `{}`.
fn optional_json_body(body: &[u8]) -> Result<Value, AdminError> {
    if body.is_empty() { Ok(json!({})) } else { json_body(body) }
}

/// Runs one admin operation. Blocking.
pub fn dispatch(app: &App, realm: &str, op: AdminOp, parts: &Parts, body: &[u8]) -> Reply {
    run(app, realm, op, parts, body).unwrap_or_else(Reply::from)
}

fn run(app: &App, realm: &str, op: AdminOp, parts: &Parts, body: &[u8]) -> Result<Reply, AdminError> {
    let service = &app.service;
    match op {
        AdminOp::ListRealms => return Ok(Reply::json(200, &json!({"realms": service.realm_names()?}))),
        AdminOp::CreateRealm => {
            let settings = service.create_realm(realm, optional_json_body(body)?, &actor(parts))?;
            return Ok(Reply::json(201, &json!({"name": realm, "settings": settings})));
        }
        AdminOp::DeleteRealm => {
            service.delete_realm(realm, &actor(parts))?;
            return Ok(Reply::no_content());
        }
        _ => {}
    }
    // Every other operation is on an existing realm.
    service.realm_settings(realm)?;
    let actor = actor(parts);
    match op {
        AdminOp::ListPlugins => Ok(plugins(service.plugin_versions(realm, None)?)),
        AdminOp::PluginVersions { name } => Ok(plugins(service.plugin_versions(realm, Some(&name))?)),
        AdminOp::PushPlugin { name } => {
            let kind = match query(parts, "hook") {
                None => None,
                Some(hook) => Some(HookKind::parse(&hook).ok_or_else(|| {
                    AdminError::Invalid(format!("unknown hook {hook:?}; hooks: {}", hook_names(|_| true)))
                })?),
            };
            let activate = match query(parts, "activate").as_deref() {
                None | Some("true") => true,
                Some("false") => false,
                Some(other) => {
                    return Err(AdminError::Invalid(format!("activate must be true or false, not {other:?}")));
                }
            };
            let pushed = service.push_plugin(realm, Upload { name: &name, kind, component: body, activate, actor })?;
            Ok(Reply::json(201, &to_json(&pushed)?))
        }
        AdminOp::Activate { name } => {
            let version = json_body(body)?
                .get("version")
                .and_then(Value::as_i64)
                .ok_or_else(|| AdminError::Invalid("the body must be {\"version\": N}".into()))?;
            service.activate_plugin(realm, &name, version, &actor)?;
            Ok(activated(&name, version))
        }
        AdminOp::Rollback { name } => {
            let version = service.rollback_plugin(realm, &name, &actor)?;
            Ok(activated(&name, version))
        }
        AdminOp::DeleteVersion { name, version } => {
            deleted(&name, service.delete_plugin(realm, &name, Some(version), &actor)?)
        }
        AdminOp::TestPlugin { name, version } => {
            Ok(Reply::json(200, &service.test_plugin(realm, &name, version, &optional_json_body(body)?)?))
        }
        AdminOp::DeletePlugin { name } => deleted(&name, service.delete_plugin(realm, &name, None, &actor)?),
        AdminOp::Hooks => Ok(Reply::json(200, &Value::Object(realm_hooks(&service.realm_settings(realm)?)))),
        AdminOp::SetHooks => {
            let settings = service.set_hooks(realm, &hook_selection(&json_body(body)?)?, &actor)?;
            Ok(Reply::json(200, &Value::Object(realm_hooks(&settings))))
        }
        AdminOp::Decisions => {
            let number = |name: &str| -> Result<Option<i64>, AdminError> {
                query(parts, name)
                    .map(|v| v.parse().map_err(|_| AdminError::Invalid(format!("{name} must be an integer: {v:?}"))))
                    .transpose()
            };
            let filter = agentauth_core::ports::DecisionQuery {
                client_id: query(parts, "client_id"),
                plugin: query(parts, "plugin"),
                version: number("version")?,
                outcome: query(parts, "outcome"),
                since: number("since")?,
                until: number("until")?,
                after: number("after")?.unwrap_or(0),
                limit: number("limit")?.unwrap_or(100),
            };
            if filter.version.is_some() && filter.plugin.is_none() {
                return Err(AdminError::Invalid("version needs plugin".into()));
            }
            let decisions = service.decisions(realm, &filter)?;
            let next = decisions.last().map(|(id, _)| *id);
            let decisions: Vec<Value> = decisions.into_iter().map(|(id, d)| decision_json(id, &d)).collect();
            Ok(Reply::json(200, &json!({ "decisions": decisions, "next": next })))
        }
        AdminOp::Audit => {
            let after = query(parts, "after").and_then(|a| a.parse().ok()).unwrap_or(0);
            let entries: Vec<Value> = service
                .audit_log(realm, after)?
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
        AdminOp::Keys => Ok(Reply::json(200, &json!({ "keys": to_json(&service.keys(realm)?)? }))),
        AdminOp::RotateKey => {
            let alg = match optional_json_body(body)?.get("alg") {
                None => None,
                Some(alg) => Some(
                    alg.as_str()
                        .and_then(Algorithm::parse)
                        .ok_or_else(|| AdminError::Invalid("alg must be RS256, ES256 or EdDSA".into()))?,
                ),
            };
            Ok(Reply::json(200, &to_json(&service.rotate_key(realm, alg, &actor)?)?))
        }
        AdminOp::ShowRealm => Ok(Reply::json(200, &json!({"name": realm, "settings": service.realm_settings(realm)?}))),
        AdminOp::UpdateRealm => {
            let Value::Object(changes) = json_body(body)? else {
                return Err(AdminError::Invalid("the body must be a JSON object of the settings to change".into()));
            };
            let principal = parts.extensions.get::<Principal>().unwrap_or(&Principal::Operator);
            let settings = service.update_realm(realm, changes, principal, &actor)?;
            Ok(Reply::json(200, &json!({"name": realm, "settings": settings})))
        }
        AdminOp::ListAdmins => {
            let admins: Vec<Value> = service.realm_admins(realm)?.iter().map(admin_json).collect();
            Ok(Reply::json(200, &json!({ "admins": admins })))
        }
        AdminOp::CreateAdmin => {
            let request = json_body(body)?;
            let name = request.get("name").and_then(Value::as_str).unwrap_or_default();
            let created = service.create_realm_admin(realm, name, &actor)?;
            let mut reply = admin_json(&created.admin);
            reply["token"] = json!(created.token);
            Ok(Reply::json(201, &reply))
        }
        AdminOp::DeleteAdmin { id } => {
            service.delete_realm_admin(realm, &id, &actor)?;
            Ok(Reply::no_content())
        }
        AdminOp::ListUsers => {
            if let Some(username) = query(parts, "username") {
                let found: Vec<_> = service.find_user(realm, &username)?.into_iter().collect();
                return Ok(Reply::json(200, &json!({ "users": to_json(&found)?, "next": null })));
            }
            let limit = query(parts, "limit")
                .map(|v| v.parse().map_err(|_| AdminError::Invalid(format!("limit must be an integer: {v:?}"))))
                .transpose()?;
            let (users, next) = service.users(realm, &UserPage { after: query(parts, "after"), limit })?;
            Ok(Reply::json(200, &json!({ "users": to_json(&users)?, "next": next })))
        }
        AdminOp::CreateUser => {
            let user = service.create_user(realm, new_user(&json_body(body)?)?, &actor)?;
            Ok(Reply::json(201, &to_json(&user)?))
        }
        AdminOp::ShowUser { subject } => Ok(Reply::json(200, &to_json(&service.user(realm, &subject)?)?)),
        AdminOp::DeleteUser { subject } => {
            service.delete_user(realm, &subject, &actor)?;
            Ok(Reply::no_content())
        }
        AdminOp::SetUserState { subject, enable } => {
            let state = if enable { UserState::Active } else { UserState::Disabled };
            Ok(Reply::json(200, &to_json(&service.set_user_state(realm, &subject, state, &actor)?)?))
        }
        AdminOp::SetUserPassword { subject } => {
            let request = json_body(body)?;
            let fields = object_of(&request, &["password"])?;
            let password = password_field(fields)?;
            service.set_user_password(realm, &subject, &password, &actor)?;
            Ok(Reply::no_content())
        }
        AdminOp::ListConsents { subject } => {
            let consents: Vec<Value> = service
                .consents(realm, &subject)?
                .into_iter()
                .map(|c| {
                    json!({"client_id": c.client_id, "scope": c.scope, "resources": c.resources,
                           "granted_at": c.granted_at})
                })
                .collect();
            Ok(Reply::json(200, &json!({ "consents": consents })))
        }
        AdminOp::RevokeConsent { subject, client_id } => {
            service.revoke_consent(realm, &subject, &client_id, &actor)?;
            Ok(Reply::no_content())
        }
        AdminOp::ListClients => {
            let limit = query(parts, "limit")
                .map(|v| v.parse().map_err(|_| AdminError::Invalid(format!("limit must be an integer: {v:?}"))))
                .transpose()?;
            let filter = client_filter(parts, service.now())?;
            let (clients, next) = service.list_clients(realm, &filter, query(parts, "after").as_deref(), limit)?;
            let now = service.now();
            let live = service.live_tokens(realm, &clients)?;
            let clients: Vec<Value> = clients
                .iter()
                .map(|c| {
                    let mut shown = client_json(c, now);
                    shown["live_tokens"] = json!(live.get(&c.client.client_id).copied().unwrap_or(0));
                    shown
                })
                .collect();
            Ok(Reply::json(200, &json!({ "clients": clients, "next": next })))
        }
        AdminOp::ShowClient { client_id } => {
            let row = service.admin_client(realm, &client_id)?;
            let mut shown = client_json(&row, service.now());
            let live = service.live_tokens(realm, std::slice::from_ref(&row))?;
            shown["live_tokens"] = json!(live.get(&row.client.client_id).copied().unwrap_or(0));
            Ok(Reply::json(200, &shown))
        }
        AdminOp::DeleteClient { client_id } => {
            service.delete_client_as_admin(realm, &client_id, &actor)?;
            Ok(Reply::no_content())
        }
        AdminOp::SetClientState { client_id, enable } => {
            let state = if enable { ClientState::Active } else { ClientState::Disabled };
            let changed = service.set_client_state(realm, &client_id, state, &actor)?;
            Ok(Reply::json(200, &client_json(&changed, service.now())))
        }
        AdminOp::DisableOwned { owner } => {
            let disabled = service.disable_owned(realm, &owner, &actor)?;
            Ok(Reply::json(200, &json!({ "owner": owner, "disabled": disabled })))
        }
        AdminOp::ListTrustedIssuers => {
            Ok(Reply::json(200, &json!({ "trusted_issuers": to_json(&service.trusted_issuers(realm)?)? })))
        }
        AdminOp::ShowTrustedIssuer { name } => {
            let issuers = service.trusted_issuers(realm)?;
            let found = issuers
                .iter()
                .find(|t| t.name == name)
                .ok_or_else(|| AdminError::NotFound(format!("no trusted issuer {name} in realm {realm}")))?;
            Ok(Reply::json(200, &to_json(found)?))
        }
        AdminOp::PutTrustedIssuer { name } => {
            let created = service.put_trusted_issuer(realm, &name, json_body(body)?, &actor)?;
            let issuers = service.trusted_issuers(realm)?;
            let stored = issuers.iter().find(|t| t.name == name);
            Ok(Reply::json(if created { 201 } else { 200 }, &to_json(&stored)?))
        }
        AdminOp::DeleteTrustedIssuer { name } => {
            service.delete_trusted_issuer(realm, &name, &actor)?;
            Ok(Reply::no_content())
        }
        AdminOp::ListRealms | AdminOp::CreateRealm | AdminOp::DeleteRealm => {
            Err(AdminError::NotFound("no such operation".into()))
        }
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<Value, AdminError> {
    serde_json::to_value(value).map_err(|e| {
        tracing::error!("admin: {e}");
        AdminError::Internal
    })
}

fn plugins(listed: Vec<PluginListing>) -> Reply {
    Reply::json(200, &json!({ "plugins": listed.iter().map(|p| json!(p)).collect::<Vec<_>>() }))
}

fn activated(name: &str, version: i64) -> Reply {
    Reply::json(200, &json!({"name": name, "version": version, "active": true}))
}

fn deleted(name: &str, versions: usize) -> Result<Reply, AdminError> {
    Ok(Reply::json(200, &json!({"name": name, "deleted_versions": versions})))
}

/// The names of the hooks `which` selects, for error messages.
fn hook_names(which: impl Fn(HookKind) -> bool) -> String {
    HookKind::ALL.into_iter().filter(|k| which(*k)).map(HookKind::as_str).collect::<Vec<_>>().join(", ")
}

/// A hook selection: `{"dcr": "name"}`, or `{"dcr": null}` for none;
/// likewise every realm-wide hook.
fn hook_selection(request: &Value) -> Result<Vec<(HookKind, Option<String>)>, AdminError> {
    let Some(fields) = request.as_object() else {
        return Err(AdminError::Invalid("the body must be a JSON object such as {\"dcr\": \"plugin-name\"}".into()));
    };
    fields
        .iter()
        .map(|(hook, value)| {
            let kind = HookKind::parse(hook).filter(|k| k.is_realm_wide()).ok_or_else(|| {
                AdminError::Invalid(format!(
                    "unknown realm hook {hook:?}; realm hooks: {}",
                    hook_names(HookKind::is_realm_wide)
                ))
            })?;
            match value {
                Value::Null => Ok((kind, None)),
                Value::String(name) => Ok((kind, Some(name.clone()))),
                _ => Err(AdminError::Invalid(format!("{hook} must be a plugin name or null"))),
            }
        })
        .collect()
}

/// The fields of a JSON object body, each among `known`: a misspelt
/// field is refused rather than ignored. Field names are named in the
/// refusal; values never are (one may be a password).
fn object_of<'a>(request: &'a Value, known: &[&str]) -> Result<&'a serde_json::Map<String, Value>, AdminError> {
    let Some(fields) = request.as_object() else {
        return Err(AdminError::Invalid(format!("the body must be a JSON object with {}", known.join(", "))));
    };
    if let Some(unknown) = fields.keys().find(|k| !known.contains(&k.as_str())) {
        let shown: String = unknown.chars().filter(|c| !c.is_control()).take(64).collect();
        return Err(AdminError::Invalid(format!("unknown field {shown:?}; fields: {}", known.join(", "))));
    }
    Ok(fields)
}

/// An optional string field (absent or null for none).
fn string_field(fields: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>, AdminError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(AdminError::Invalid(format!("{name} must be a string"))),
    }
}

/// The required `password` field, as a [`Password`] at once.
fn password_field(fields: &serde_json::Map<String, Value>) -> Result<Password, AdminError> {
    string_field(fields, "password")?
        .map(Password::new)
        .ok_or_else(|| AdminError::Invalid("password is required (a string)".into()))
}

/// A user to create: `{"username", "password", "display_name"?, "email"?}`.
fn new_user(request: &Value) -> Result<NewUser, AdminError> {
    let fields = object_of(request, &["username", "password", "display_name", "email"])?;
    Ok(NewUser {
        username: string_field(fields, "username")?
            .ok_or_else(|| AdminError::Invalid("username is required (a string)".into()))?,
        password: password_field(fields)?,
        display_name: string_field(fields, "display_name")?,
        email: string_field(fields, "email")?,
    })
}

fn admin_json(admin: &agentauth_store::RealmAdmin) -> Value {
    json!({"id": admin.id, "name": admin.name, "realm": admin.realm, "created_at": admin.created_at})
}
