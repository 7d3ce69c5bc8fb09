//! Dynamic client registration (RFC 7591) at `register`, and agent
//! registration at `aiagent/register`; client configuration (RFC 7592) at
//! the `registration_client_uri`. The rules are the service's.

use agentauth_core::OAuthError;
use agentauth_service::owners::Owner;
use agentauth_service::registration::invalid_token;
use agentauth_service::telemetry::{RegistrationEndpoint, RegistrationOutcome};
use agentauth_service::{RealmRuntime, Service};
use hyper::http::request::Parts;
use serde_json::Value;

use super::{agents, request_context};
use crate::http::bearer;
use crate::http::{Reply, has_media_type, parse_json};

pub fn register(
    service: &Service,
    realm: &RealmRuntime,
    ai_agent: bool,
    parts: &Parts,
    body: &[u8],
    request_id: &str,
) -> Result<Reply, OAuthError> {
    let endpoint = if ai_agent { RegistrationEndpoint::AiAgentRegister } else { RegistrationEndpoint::Register };
    let source = parts.extensions.get::<crate::Peer>().map(|p| p.0.ip());
    // A token that does not hold is answered as a protected resource
    // answers one (RFC 6750 §3, RFC 9449 §7.1), before the body is read.
    let owner = match registering_user(service, realm, ai_agent, parts) {
        Ok(owner) => owner,
        Err(refusal) => {
            realm.metrics.registration(endpoint, RegistrationOutcome::Refused);
            return Ok(refusal);
        }
    };
    // Refused by the rate limit: counted, not audited (a flood would only
    // fill the audit). A user registering its own agent is admitted where
    // registration is not open.
    if let Err(e) = service.admit_registration(realm, ai_agent, source, owner.is_some()) {
        return counted(realm, endpoint, Err(e));
    }
    counted(realm, endpoint, create(service, realm, ai_agent, parts, body, request_id, owner))
}

/// Counts a registration operation at `endpoint` by how it ended.
fn counted<T>(
    realm: &RealmRuntime,
    endpoint: RegistrationEndpoint,
    result: Result<T, OAuthError>,
) -> Result<T, OAuthError> {
    let outcome = match &result {
        Ok(_) => RegistrationOutcome::Done,
        Err(e) if e.code.http_status() >= 500 => RegistrationOutcome::Failed,
        Err(_) => RegistrationOutcome::Refused,
    };
    realm.metrics.registration(endpoint, outcome);
    result
}

fn create(
    service: &Service,
    realm: &RealmRuntime,
    ai_agent: bool,
    parts: &Parts,
    body: &[u8],
    request_id: &str,
    owner: Option<Owner>,
) -> Result<Reply, OAuthError> {
    service.decision(realm, "register", request_id, || {
        let request = metadata(parts, body)?;
        let registered = service.register(realm, ai_agent, &request, request_context(parts, None), owner.as_ref())?;
        Ok(Reply::json(201, &registered.0))
    })
}

/// The user registering, in a realm with `owner_self_service` on, when
/// the request presents a user's access token (RFC 7591 §3's initial
/// access token): it must then be one that manages the user's agents.
/// Elsewhere the header means nothing, as before.
fn registering_user(
    service: &Service,
    realm: &RealmRuntime,
    ai_agent: bool,
    parts: &Parts,
) -> Result<Option<Owner>, Reply> {
    if !realm.settings.owner_self_service {
        return Ok(None);
    }
    agents::presenting_user(service, realm, if ai_agent { "aiagent/register" } else { "register" }, parts)
}

/// A registration request's metadata: a JSON object.
fn metadata(parts: &Parts, body: &[u8]) -> Result<Value, OAuthError> {
    if !has_media_type(&parts.headers, "application/json") {
        return Err(OAuthError::invalid_client_metadata("the request body must be application/json"));
    }
    parse_json(body).map_err(OAuthError::invalid_client_metadata)
}

/// RFC 7592 client configuration: read (GET), update (PUT, a full
/// replacement that rotates the registration access token) and delete
/// (DELETE, which ends the client's server-side tokens).
pub fn manage(
    service: &Service,
    realm: &RealmRuntime,
    parts: &Parts,
    body: &[u8],
    request_id: &str,
) -> Result<Reply, OAuthError> {
    match parts.method {
        hyper::Method::GET => manage_client(service, realm, parts, body),
        hyper::Method::PUT => counted(
            realm,
            RegistrationEndpoint::Update,
            service.decision(realm, "update", request_id, || manage_client(service, realm, parts, body)),
        ),
        _ => counted(
            realm,
            RegistrationEndpoint::Delete,
            service.decision(realm, "delete", request_id, || manage_client(service, realm, parts, body)),
        ),
    }
}

fn manage_client(service: &Service, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    let client_id = parts
        .uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(n, _)| n == "client_id").map(|(_, v)| v.into_owned()))
        .ok_or_else(invalid_token)?;
    let token = bearer(&parts.headers).ok_or_else(invalid_token)?;
    let managed = service.managed_client(realm, &client_id, token)?;
    match parts.method {
        hyper::Method::GET => Ok(Reply::json(200, &service.read_client(realm, &managed))),
        hyper::Method::PUT => {
            let request = metadata(parts, body)?;
            Ok(Reply::json(200, &service.update_client(realm, managed, &request, request_context(parts, None))?))
        }
        _ => {
            service.delete_client(realm, managed, request_context(parts, None))?;
            Ok(Reply::no_content())
        }
    }
}
