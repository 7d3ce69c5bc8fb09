//! The token endpoint (`access_token`, RFC 6749 §3.2): the form read into
//! a typed [`TokenRequest`], one parse arm per grant; the work is the
//! service's.

use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use agentauth_core::{ErrorCode, GrantType, OAuthError, Scopes};
use agentauth_service::grant::{
    AssertionRequest, CodeRequest, ExchangeRequest, Secret, SubjectTokenType, TokenRequest,
};

/// RFC 8693 §3: a JWT, and an OpenID Connect ID token, as subject tokens
/// from a trusted issuer.
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
use agentauth_service::{RealmRuntime, Service};
use hyper::http::request::Parts;

use super::{authenticate, form};
use crate::http::{Form, Reply};

pub fn token(service: &Service, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    let form = form(parts, body)?;
    let client = authenticate(service, realm, "access_token", parts, &form)?;
    let request = parse(&form)?;
    // RFC 9449: a proof, if sent, is for this endpoint, POSTed; its key
    // binds what is issued.
    let proofs = crate::http::dpop_proofs(&parts.headers);
    let dpop = service.check_dpop(realm, &proofs, "POST", &realm.endpoint("access_token"), None)?;
    let issued = service.issue(realm, &client, request, dpop.as_ref())?;
    Ok(Reply::json(200, &serde_json::to_value(&issued).map_err(|_| OAuthError::server_error("internal error"))?))
}

/// The grant a token request asks for, with its parameters.
fn parse(form: &Form) -> Result<TokenRequest, OAuthError> {
    let grant_type = form.require("grant_type")?;
    let scope = form.get("scope").map(Scopes::parse).transpose()?;
    // RFC 8707: any grant may name the resources its token is for.
    let resources = form.get_all("resource");
    match GrantType::parse(grant_type) {
        Some(GrantType::ClientCredentials) => Ok(TokenRequest::ClientCredentials { scope, resources }),
        Some(GrantType::TokenExchange) => Ok(TokenRequest::TokenExchange(parse_exchange(form, scope, resources)?)),
        Some(GrantType::RefreshToken) => {
            let refresh_token = Secret(form.require("refresh_token")?.to_string());
            Ok(TokenRequest::RefreshToken { refresh_token, scope, resources })
        }
        Some(GrantType::AuthorizationCode) => Ok(TokenRequest::AuthorizationCode(CodeRequest {
            code: Secret(form.require("code")?.to_string()),
            redirect_uri: form.get("redirect_uri").map(str::to_string),
            code_verifier: form.get("code_verifier").map(|v| Secret(v.to_string())),
        })),
        Some(GrantType::JwtBearer) => Ok(TokenRequest::JwtBearer(AssertionRequest {
            assertion: Secret(form.require("assertion")?.to_string()),
            scope,
            resources,
        })),
        None => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {grant_type:?} is not supported here"),
        )),
    }
}

/// RFC 8693 §2.1's parameter rules, as this server supports them: the
/// subject token (and an actor token, with its type) must be access tokens,
/// and an access token is the only type it issues.
fn parse_exchange(form: &Form, scope: Option<Scopes>, resources: Vec<String>) -> Result<ExchangeRequest, OAuthError> {
    let subject_token = Secret(form.require("subject_token")?.to_string());
    let subject_token_type = match form.require("subject_token_type")? {
        ACCESS_TOKEN_TYPE => SubjectTokenType::AccessToken,
        JWT_TOKEN_TYPE | ID_TOKEN_TYPE => SubjectTokenType::External,
        other => {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type {other:?} is not supported; use {ACCESS_TOKEN_TYPE}, or {JWT_TOKEN_TYPE} or \
                 {ID_TOKEN_TYPE} for a token of a trusted issuer"
            )));
        }
    };
    if let Some(requested) = form.get("requested_token_type").filter(|t| *t != ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(format!("requested_token_type {requested:?} is not supported")));
    }
    let actor_token = match (form.get("actor_token"), form.get("actor_token_type")) {
        (None, None) => None,
        (Some(token), Some(ACCESS_TOKEN_TYPE)) => Some(Secret(token.to_string())),
        (Some(_), Some(other)) => {
            return Err(OAuthError::invalid_request(format!(
                "actor_token_type {other:?} is not supported; use {ACCESS_TOKEN_TYPE}"
            )));
        }
        (Some(_), None) => return Err(OAuthError::invalid_request("actor_token requires actor_token_type")),
        (None, Some(_)) => return Err(OAuthError::invalid_request("actor_token_type was sent without actor_token")),
    };
    Ok(ExchangeRequest {
        subject_token,
        subject_token_type,
        actor_token,
        audiences: form.get_all("audience"),
        resources,
        scope,
    })
}
