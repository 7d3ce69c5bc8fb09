//! Client authentication at the token, introspection and revocation
//! endpoints: `client_secret_basic` (RFC 6749 §2.3.1), `client_secret_post`
//! and `private_key_jwt` (RFC 7523).
//!
//! A secret client may use either method, whatever it registered: the
//! seed registers with the default `client_secret_basic` and then posts
//! its secret in the form. Using both at once is refused (RFC 6749 §2.3).
//! Every failure looks the same to the caller: 401 `invalid_client`.

use agentauth_core::{AuthMethod, Client, ErrorCode, OAuthError};
use agentauth_jose::VerifyingKey;
use serde_json::Value;

use crate::realm::RealmRuntime;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use crate::http::Form;
use crate::secrets::Purpose;

fn failed() -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClient, "client authentication failed")
}

/// The client credentials a request presents.
struct Presented {
    client_id: String,
    secret: String,
}

fn presented(headers: &HeaderMap, form: &Form) -> Result<Presented, OAuthError> {
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
            Some(Presented { client_id: decode(id).unwrap_or_default(), secret: decode(secret).unwrap_or_default() })
        }
    };
    match (basic, form.get("client_id"), form.get("client_secret")) {
        (Some(_), _, Some(_)) => Err(OAuthError::invalid_request("use one client authentication method, not two")),
        (Some(b), Some(id), None) if id != b.client_id => {
            Err(OAuthError::invalid_request("client_id does not match the Authorization header"))
        }
        (Some(b), _, None) => Ok(b),
        (None, Some(id), Some(secret)) => Ok(Presented { client_id: id.into(), secret: secret.into() }),
        (None, _, _) => Err(failed()),
    }
}

/// RFC 7523 §2.2: the only client assertion type.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest lifetime a client assertion may claim.
const MAX_ASSERTION_LIFETIME: i64 = 600;

/// Authenticates the request's client in `realm`, at the realm endpoint
/// `endpoint` (such as `access_token`): by secret, or by a client
/// assertion signed with one of its registered keys (`private_key_jwt`).
pub fn authenticate(
    app: &crate::App,
    realm: &RealmRuntime,
    endpoint: &str,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Client, OAuthError> {
    if form.get("client_assertion_type").is_some() || form.get("client_assertion").is_some() {
        return authenticate_assertion(app, realm, endpoint, headers, form);
    }
    let p = presented(headers, form)?;
    let row = app.store.client(&realm.name, &p.client_id).map_err(internal)?;
    // Hash even for an unknown client so both failures take as long.
    let stored = row.as_ref().map_or(&[0u8; 32][..], |r| &r.secret_hash);
    let matches = app.hasher.matches(Purpose::ClientSecret, &p.secret, stored);
    match row {
        Some(row) if matches && row.client.metadata.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt => {
            Ok(row.client)
        }
        _ => Err(failed()),
    }
}

/// `private_key_jwt` (RFC 7523 §3): `iss` and `sub` are the client, `aud`
/// names this realm (its issuer, or the endpoint called), the assertion
/// expires within ten minutes, and its `jti` is used once.
fn authenticate_assertion(
    app: &crate::App,
    realm: &RealmRuntime,
    endpoint: &str,
    headers: &HeaderMap,
    form: &Form,
) -> Result<Client, OAuthError> {
    if headers.contains_key(AUTHORIZATION) || form.get("client_secret").is_some() {
        return Err(OAuthError::invalid_request("use one client authentication method, not two"));
    }
    if form.get("client_assertion_type") != Some(JWT_BEARER) {
        return Err(OAuthError::invalid_request(format!("client_assertion_type must be {JWT_BEARER}")));
    }
    let assertion = form.require("client_assertion")?;
    let refused = |why: &str| {
        tracing::debug!(realm = %realm.name, "client assertion refused: {why}");
        failed()
    };
    let unverified = agentauth_jose::unverified_claims(assertion).map_err(|e| refused(&e.to_string()))?;
    let client_id = unverified.get("sub").and_then(Value::as_str).ok_or_else(|| refused("no sub"))?;
    if form.get("client_id").is_some_and(|id| id != client_id) {
        return Err(refused("client_id does not match the assertion"));
    }
    let row = app.store.client(&realm.name, client_id).map_err(internal)?.ok_or_else(|| refused("unknown client"))?;
    let client = row.client;
    if client.metadata.token_endpoint_auth_method != AuthMethod::PrivateKeyJwt {
        return Err(refused("the client does not use private_key_jwt"));
    }
    let keys: Vec<VerifyingKey> = client
        .metadata
        .jwks
        .iter()
        .flat_map(|j| j["keys"].as_array().into_iter().flatten())
        .filter_map(|jwk| VerifyingKey::from_jwk(jwk).ok())
        .collect();
    let claims = agentauth_jose::verify_client_assertion(assertion, &keys).map_err(|e| refused(&e.to_string()))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(client_id) || text("sub") != Some(client_id) {
        return Err(refused("iss and sub must both be the client_id"));
    }
    let accepted = [realm.issuer.clone(), realm.endpoint(endpoint)];
    let aud_ok = match claims.get("aud") {
        Some(Value::String(aud)) => accepted.contains(aud),
        Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    };
    if !aud_ok {
        return Err(refused("aud does not name this server"));
    }
    let now = crate::now();
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| refused("no exp"))?;
    if exp <= now || exp > now + MAX_ASSERTION_LIFETIME {
        return Err(refused("expired, or valid for too long"));
    }
    if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf > now + 60) {
        return Err(refused("not yet valid"));
    }
    let jti = text("jti").filter(|j| !j.is_empty() && j.len() <= 256).ok_or_else(|| refused("no jti"))?;
    if !app.store.use_assertion_jti(&realm.name, client_id, jti, exp).map_err(internal)? {
        return Err(refused("jti replayed"));
    }
    Ok(client)
}

fn internal(e: impl std::fmt::Display) -> OAuthError {
    tracing::error!("{e}");
    OAuthError::server_error("internal error")
}
