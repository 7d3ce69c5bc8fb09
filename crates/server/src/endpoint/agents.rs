//! A user's own agents: `agents` lists them, `agents/{client_id}` shows
//! one, `agents/{client_id}/disable` disables it and `agents/disable-all`
//! every one, for a realm with `owner_self_service` on. The user presents
//! an access token of the realm as a protected resource expects one
//! (RFC 6750 §2.1, or RFC 9449 §7.1 for a DPoP-bound token); the service
//! says whose it is (`agentauth_service::owners`).

use agentauth_core::{ErrorCode, OAuthError};
use agentauth_service::client_admin::client_json;
use agentauth_service::owners::{AGENTS_SCOPE, Owner, Presented, Scheme};
use agentauth_service::{RealmRuntime, Service};
use hyper::header::{self, AUTHORIZATION, HeaderName};
use hyper::http::request::Parts;
use serde_json::{Value, json};

use crate::admin::query;
use crate::http::Reply;
use crate::route::AgentsOp;

/// The challenge's `algs` for DPoP (RFC 9449 §7.1).
fn dpop_algs() -> String {
    agentauth_service::dpop::ALGORITHMS.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(" ")
}

/// Answers `op` on the realm's endpoint `path` (`agents...`, as requested).
pub fn agents(service: &Service, realm: &RealmRuntime, op: AgentsOp, path: &str, parts: &Parts) -> Reply {
    if !realm.settings.owner_self_service {
        return Reply::not_found();
    }
    let owner = match presenting_user(service, realm, path, parts) {
        Ok(Some(owner)) => owner,
        // RFC 6750 §3.1: a request without a token is told how to send
        // one, with no error code.
        Ok(None) => return challenge(realm, None, None),
        Err(refusal) => return refusal,
    };
    match run(service, realm, op, &owner, parts) {
        Ok(reply) => reply,
        Err(e) => {
            realm.metrics.oauth_error(e.code);
            Reply::error(&e)
        }
    }
}

/// The user whose access token a request to the realm's endpoint `path`
/// presents (see `agentauth_service::owners`): none without an
/// `Authorization` header; the answer to give when the token does not
/// hold.
pub(super) fn presenting_user(
    service: &Service,
    realm: &RealmRuntime,
    path: &str,
    parts: &Parts,
) -> Result<Option<Owner>, Reply> {
    let (scheme, token) = match authorization(parts) {
        Ok(Some(presented)) => presented,
        Ok(None) => return Ok(None),
        Err(e) => return Err(refused(service, realm, None, &e)),
    };
    let proofs = crate::http::dpop_proofs(&parts.headers);
    // The URL a proof's htu names: the endpoint as requested, without its
    // query.
    let url = realm.endpoint(path);
    let presented = Presented { scheme, token, proofs: &proofs, method: parts.method.as_str(), url: &url };
    service.owner_of(realm, &presented).map(Some).map_err(|e| refused(service, realm, Some(scheme), &e))
}

fn run(
    service: &Service,
    realm: &RealmRuntime,
    op: AgentsOp,
    owner: &Owner,
    parts: &Parts,
) -> Result<Reply, OAuthError> {
    let now = service.now();
    let shown = |row: Option<agentauth_core::ports::ClientRow>| match row {
        Some(row) => Reply::json(200, &owners_view(&row, now)),
        None => no_such_agent(),
    };
    match op {
        AgentsOp::List => {
            let limit = query(parts, "limit")
                .map(|v| v.parse().map_err(|_| OAuthError::invalid_request(format!("limit must be an integer: {v:?}"))))
                .transpose()?;
            let (clients, next) = service.owned_clients(realm, owner, query(parts, "after").as_deref(), limit)?;
            let clients: Vec<Value> = clients.iter().map(|c| owners_view(c, now)).collect();
            Ok(Reply::json(200, &json!({ "owner": owner.name(), "clients": clients, "next": next })))
        }
        AgentsOp::Show { client_id } => Ok(shown(service.owned_client(realm, owner, &client_id)?)),
        AgentsOp::Disable { client_id } => Ok(shown(service.disable_owned_client(realm, owner, &client_id)?)),
        AgentsOp::DisableAll => {
            let disabled = service.disable_all_owned(realm, owner)?;
            Ok(Reply::json(200, &json!({ "disabled": disabled })))
        }
    }
}

/// The answer to a presented token refused with `e`: counted, with the
/// challenge for the scheme `used`, and the realm's DPoP nonce when the
/// proof lacked it.
fn refused(service: &Service, realm: &RealmRuntime, used: Option<Scheme>, e: &OAuthError) -> Reply {
    realm.metrics.oauth_error(e.code);
    let reply = challenge(realm, used, Some(e));
    match service.dpop_nonce(realm).filter(|_| e.code == ErrorCode::UseDpopNonce) {
        Some(nonce) => reply.with_header(HeaderName::from_static("dpop-nonce"), nonce),
        None => reply,
    }
}

/// A client as its owner sees it: as the admin API shows it, but of the
/// attributes the realm's policy set (the plugins it runs, the audiences
/// it allows) only the owner, which are the realm's business.
fn owners_view(row: &agentauth_core::ports::ClientRow, now: i64) -> Value {
    let mut shown = client_json(row, now);
    shown["attributes"] = json!({ "owner": row.client.attributes.owner });
    shown
}

/// A client that is not the user's, or none: the same answer, so that
/// nobody learns of another's agents.
fn no_such_agent() -> Reply {
    Reply::json(404, &json!({"error": "not_found", "error_description": "you own no client of that id"}))
}

/// The request's access token and the scheme it came with: none without
/// an `Authorization` header; `invalid_request` for one that is not a
/// single `Bearer` or `DPoP` credential (RFC 6750 §3.1).
fn authorization(parts: &Parts) -> Result<Option<(Scheme, &str)>, OAuthError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request("a request carries one Authorization header"));
    }
    let malformed = || OAuthError::invalid_request("the Authorization header must be Bearer or DPoP with a token");
    let (scheme, token) = value.to_str().ok().and_then(|v| v.split_once(' ')).ok_or_else(malformed)?;
    let token = token.trim();
    if token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        return Err(malformed());
    };
    Ok(Some((scheme, token)))
}

/// A refusal of the presented token, or of its absence (`error` `None`),
/// with the challenge RFC 6750 §3 and RFC 9449 §7.1 call for: the
/// scheme the request used, or both when it used none.
fn challenge(realm: &RealmRuntime, used: Option<Scheme>, error: Option<&OAuthError>) -> Reply {
    let status = match error.map(|e| e.code) {
        None | Some(ErrorCode::InvalidDpopProof | ErrorCode::UseDpopNonce) => 401,
        Some(code) => code.http_status(),
    };
    let mut params = format!("realm=\"{}\"", realm.name);
    if let Some(e) = error {
        params.push_str(&format!(", error=\"{}\"", e.code.as_str()));
        if e.code == ErrorCode::InsufficientScope {
            params.push_str(&format!(", scope=\"{AGENTS_SCOPE}\""));
        }
    }
    let mut reply = match error {
        Some(e) => Reply::json(status, &json!({"error": e.code.as_str(), "error_description": e.description})),
        None => {
            Reply::json(status, &json!({"error": "invalid_token", "error_description": "an access token is required"}))
        }
    };
    if used != Some(Scheme::Dpop) {
        reply = reply.with_header(header::WWW_AUTHENTICATE, format!("Bearer {params}"));
    }
    if used != Some(Scheme::Bearer) {
        reply = reply.with_header(header::WWW_AUTHENTICATE, format!("DPoP {params}, algs=\"{}\"", dpop_algs()));
    }
    reply
}
