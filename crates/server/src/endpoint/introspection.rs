//! Token introspection (RFC 7662) at `introspect`, and revocation
//! (RFC 7009) at `token/revoke`. Both take the caller's client
//! authentication like the token endpoint.

use agentauth_core::OAuthError;
use agentauth_service::{RealmRuntime, Service};
use hyper::http::request::Parts;
use serde_json::{Map, Value};

use super::{authenticate, form};
use crate::http::Reply;

pub fn introspect(service: &Service, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    let form = form(parts, body)?;
    let caller = authenticate(service, realm, "introspect", parts, &form)?;
    let token = form.require("token")?;
    Ok(Reply::json(200, &service.introspect(realm, &caller, token)?))
}

pub fn revoke(service: &Service, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    let form = form(parts, body)?;
    let caller = authenticate(service, realm, "token/revoke", parts, &form)?;
    let token = form.require("token")?;
    service.revoke(realm, &caller, token)?;
    Ok(Reply::json(200, &Value::Object(Map::new())))
}
