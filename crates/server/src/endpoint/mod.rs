//! The endpoints, one module each, and the dispatch from a route to them.

mod discovery;
mod introspection;
mod registration;
mod token;

use agentauth_core::OAuthError;
use agentauth_plugin_host::{HookError, Plugin, RequestContext};
use hyper::http::request::Parts;

use crate::App;
use crate::http::Reply;
use crate::realm::RealmRuntime;
use crate::route::Route;

/// Runs the endpoint `route` names. Blocking: call off the async threads.
pub fn dispatch(app: &App, route: Route, parts: &Parts, body: &[u8]) -> Reply {
    let realm_name = match &route {
        Route::Register { realm, .. }
        | Route::Manage { realm }
        | Route::Token { realm }
        | Route::Introspect { realm }
        | Route::Revoke { realm }
        | Route::Jwks { realm }
        | Route::Discovery { realm } => realm,
        Route::Admin { realm, op } => return crate::admin::dispatch(app, realm, op.clone(), parts, body),
        Route::MethodNotAllowed { allow } => return Reply::method_not_allowed(allow),
        Route::Health | Route::NotFound => return Reply::not_found(),
    };
    let realm = match app.realm(realm_name) {
        Ok(Some(realm)) => realm,
        Ok(None) => return Reply::not_found(),
        Err(e) => return Reply::error(&e),
    };
    let result = match route {
        Route::Register { ai_agent, .. } => registration::register(app, &realm, ai_agent, parts, body),
        Route::Manage { .. } => registration::manage(app, &realm, parts, body),
        Route::Token { .. } => token::token(app, &realm, parts, body),
        Route::Introspect { .. } => introspection::introspect(app, &realm, parts, body),
        Route::Revoke { .. } => introspection::revoke(app, &realm, parts, body),
        Route::Jwks { .. } => Ok(Reply::public_json(&realm.jwks)),
        Route::Discovery { .. } => Ok(discovery::openid_configuration(&realm)),
        Route::Admin { .. } | Route::MethodNotAllowed { .. } | Route::Health | Route::NotFound => {
            return Reply::not_found();
        }
    };
    result.unwrap_or_else(|e| Reply::error(&e))
}

/// Turns a hook's failure into the error the caller sees. A refusal
/// carries the policy's words with `denied_code`; a failing plugin is
/// logged in full and answered with `server_error`, naming only what kind
/// of failure it was (fail closed); a call that found no room to run is
/// `temporarily_unavailable` (503).
fn hook_error(
    error: HookError,
    realm: &RealmRuntime,
    plugin: &Plugin,
    denied_code: agentauth_core::ErrorCode,
) -> OAuthError {
    match error {
        HookError::Denied(why) => OAuthError::new(denied_code, why),
        HookError::Failed(why) => {
            tracing::error!(realm = %realm.name, plugin = plugin.name(), version = plugin.version(), "policy failed: {why}");
            OAuthError::server_error(format!("the realm's {} policy failed: {why}", plugin.kind().as_str()))
        }
        HookError::Busy(why) => {
            tracing::warn!(realm = %realm.name, plugin = plugin.name(), "policy busy: {why}");
            OAuthError::new(
                agentauth_core::ErrorCode::TemporarilyUnavailable,
                "the realm's policies are busy; retry shortly",
            )
        }
    }
}

/// The request as a policy may see it: credentials removed.
fn request_context(parts: &Parts, body: Option<&[u8]>) -> RequestContext {
    const HIDDEN: &[&str] = &["authorization", "cookie", "proxy-authorization"];
    RequestContext {
        method: parts.method.as_str().to_string(),
        uri: parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.as_str().to_string()),
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| !HIDDEN.contains(&name.as_str()))
            .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
            .collect(),
        parameters: parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(n, v)| (n.into_owned(), v.into_owned())).collect())
            .unwrap_or_default(),
        body: body.and_then(|b| std::str::from_utf8(b).ok()).map(str::to_string),
    }
}

/// A failure of the server's own: logged, and answered `server_error`;
/// except a database kept busy by another process (a backup, say) past
/// the busy timeout, which is `temporarily_unavailable` (503, retry).
fn internal<E: std::fmt::Display + 'static>(e: E) -> OAuthError {
    if is_busy_store(&e) {
        tracing::warn!("{e}");
        return OAuthError::new(agentauth_core::ErrorCode::TemporarilyUnavailable, "the server is busy; retry shortly");
    }
    tracing::error!("{e}");
    OAuthError::server_error("internal error")
}

/// Whether `e` is the store's error for a database kept busy (by another
/// process) past its timeout: a condition to retry, not a server fault.
pub(crate) fn is_busy_store<E: 'static>(e: &E) -> bool {
    (e as &dyn std::any::Any).downcast_ref::<agentauth_store::Error>().is_some_and(agentauth_store::Error::is_busy)
}
