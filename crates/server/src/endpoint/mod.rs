//! The OAuth endpoints, one module each, and the dispatch from a route to
//! them. Each reads its request into a typed one, hands it to the
//! [`Service`](agentauth_service::Service), and renders the outcome.

mod agents;
mod authorize;
mod discovery;
mod introspection;
mod registration;
mod token;

use std::sync::Arc;

use agentauth_core::{AuthMethod, Client, ErrorCode, OAuthError};
use agentauth_plugin_host::RequestContext;
use agentauth_service::client_auth::{Credentials, JWT_BEARER, JWT_SPIFFE, failed};
use agentauth_service::{RealmRuntime, Service};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;

use crate::App;
use crate::http::{Form, Reply, has_media_type};
use crate::route::Route;

/// Runs the endpoint `route` names; answers with the realm's runtime when
/// the realm exists, whose metrics count the request. Blocking: call off
/// the async threads.
pub fn dispatch(app: &App, route: Route, parts: &Parts, body: &[u8]) -> (Reply, Option<Arc<RealmRuntime>>) {
    match &route {
        Route::Admin { realm, op, .. } => {
            return (crate::admin::dispatch(app, realm, op.clone(), parts, body), None);
        }
        Route::Console { file } if file.is_empty() && !parts.uri.path().ends_with('/') => {
            return (Reply::redirect("/console/".into()), None);
        }
        Route::Console { file } => return (crate::console::file(app, file), None),
        Route::ConsoleSession => return (crate::console::session(app, parts, body), None),
        Route::MethodNotAllowed { allow } => return (Reply::method_not_allowed(allow), None),
        _ => {}
    }
    let Some(realm_name) = route.realm() else {
        return (Reply::not_found(), None);
    };
    let realm = match app.service.realm(realm_name) {
        Ok(Some(realm)) => realm,
        Ok(None) => return (Reply::not_found(), None),
        Err(e) => return (Reply::error(&e), None),
    };
    let service = &app.service;
    // Token requests and registrations are decisions: audited with their
    // outcome, under the request's id.
    let request_id = parts.extensions.get::<crate::trace::RequestId>().map_or("", |id| id.0.as_str());
    let token_endpoint = matches!(route, Route::Token { .. });
    let result = match route {
        Route::Register { ai_agent, .. } => registration::register(service, &realm, ai_agent, parts, body, request_id),
        Route::Manage { .. } => registration::manage(service, &realm, parts, body, request_id),
        Route::Token { .. } => {
            service.decision(&realm, "token", request_id, || token::token(service, &realm, parts, body))
        }
        Route::Introspect { .. } => introspection::introspect(service, &realm, parts, body),
        Route::Revoke { .. } => introspection::revoke(service, &realm, parts, body),
        Route::Authorize { .. } => {
            let source = parts.extensions.get::<crate::Peer>().map(|peer| peer.0.ip());
            Ok(authorize::authorize(service, &realm, parts, body, source, request_id))
        }
        Route::Jwks { .. } => Ok(Reply::public_json(&realm.jwks)),
        Route::Discovery { .. } => Ok(discovery::metadata(&realm)),
        Route::Agents { op, path, .. } => Ok(agents::agents(service, &realm, op, &path, parts)),
        Route::Admin { .. }
        | Route::Console { .. }
        | Route::ConsoleSession
        | Route::MethodNotAllowed { .. }
        | Route::Health
        | Route::Ready
        | Route::Version
        | Route::Metrics
        | Route::NotFound => {
            return (Reply::not_found(), None);
        }
    };
    let mut reply = result.unwrap_or_else(|e| {
        realm.metrics.oauth_error(e.code);
        Reply::error(&e)
    });
    // RFC 9449 §8: every token response of a realm that asks for DPoP
    // nonces carries the current one, refused requests' too.
    if token_endpoint && let Some(nonce) = service.dpop_nonce(&realm) {
        reply = reply.with_header(hyper::header::HeaderName::from_static("dpop-nonce"), nonce);
    }
    (reply, Some(realm))
}

/// The form of a request that must be `application/x-www-form-urlencoded`.
fn form(parts: &Parts, body: &[u8]) -> Result<Form, OAuthError> {
    if !has_media_type(&parts.headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the request body must be application/x-www-form-urlencoded"));
    }
    Form::parse(body)
}

/// Authenticates the request's client at realm endpoint `endpoint` (see
/// [`credentials`] and `Service::authenticate`), counting a failure by the
/// method the request tried.
fn authenticate(
    service: &Service,
    realm: &RealmRuntime,
    endpoint: &str,
    parts: &Parts,
    form: &Form,
) -> Result<Client, OAuthError> {
    let authenticated =
        credentials(&parts.headers, form).and_then(|credentials| service.authenticate(realm, endpoint, &credentials));
    if let Err(e) = &authenticated
        && e.code == ErrorCode::InvalidClient
    {
        realm.metrics.client_authentication_failed(tried_method(&parts.headers, form));
    }
    authenticated
}

/// The client authentication method a request tries, if any: what a
/// failure is counted under.
fn tried_method(headers: &HeaderMap, form: &Form) -> Option<AuthMethod> {
    if form.get("client_assertion_type") == Some(JWT_SPIFFE) {
        Some(AuthMethod::SpiffeJwt)
    } else if form.get("client_assertion").is_some() || form.get("client_assertion_type").is_some() {
        Some(AuthMethod::PrivateKeyJwt)
    } else if headers.contains_key(AUTHORIZATION) {
        Some(AuthMethod::ClientSecretBasic)
    } else if form.get("client_secret").is_some() {
        Some(AuthMethod::ClientSecretPost)
    } else if form.get("client_id").is_some() {
        Some(AuthMethod::None)
    } else {
        None
    }
}

/// The client credentials a request presents (RFC 6749 §2.3): a secret in
/// the `Authorization` header (`client_secret_basic`) or the form
/// (`client_secret_post`), or a client assertion (RFC 7523 §2.2). Using
/// two methods at once is refused; no credentials at all, or unreadable
/// ones, fail authentication (401 `invalid_client`).
fn credentials(headers: &HeaderMap, form: &Form) -> Result<Credentials, OAuthError> {
    if form.get("client_assertion_type").is_some() || form.get("client_assertion").is_some() {
        if headers.contains_key(AUTHORIZATION) || form.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request("use one client authentication method, not two"));
        }
        let assertion = form.require("client_assertion")?.to_string();
        let client_id = form.get("client_id").map(str::to_string);
        return match form.get("client_assertion_type") {
            Some(JWT_BEARER) => Ok(Credentials::Assertion { assertion, client_id }),
            Some(JWT_SPIFFE) => Ok(Credentials::Spiffe { assertion, client_id }),
            _ => {
                Err(OAuthError::invalid_request(format!("client_assertion_type must be {JWT_BEARER} or {JWT_SPIFFE}")))
            }
        };
    }
    let basic = match headers.get(AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| failed())?;
            let (scheme, credentials) = value.split_once(' ').ok_or_else(failed)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(failed());
            }
            let decoded = STANDARD.decode(credentials.trim()).map_err(|_| failed())?;
            let decoded = String::from_utf8(decoded).map_err(|_| failed())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(failed)?;
            // RFC 6749 §2.3.1: both halves are form-urlencoded first.
            let decode =
                |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            Some((decode(id).unwrap_or_default(), decode(secret).unwrap_or_default()))
        }
    };
    match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request("use one client authentication method, not two")),
        (Some((client_id, _)), Some(id), None) if id != client_id => {
            Err(OAuthError::invalid_request("client_id does not match the Authorization header"))
        }
        (Some((client_id, secret)), _, None) => Ok(Credentials::Secret { client_id, secret }),
        (None, Some(id), Some(secret)) => Ok(Credentials::Secret { client_id: id.into(), secret: secret.into() }),
        // A public client names itself; the service says where that is
        // enough.
        (None, Some(id), None) => Ok(Credentials::Public { client_id: id.into() }),
        (None, None, _) => Err(failed()),
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
