//! The JWT bearer grant (RFC 7523 §2.1) and ID-JAG: an assertion from one
//! of the realm's trusted issuers, verified, spent once, mapped by the
//! realm's assertion policy, then held to `core`'s rules.
//!
//! An assertion whose header `typ` is `oauth-id-jag+jwt` is an ID-JAG:
//! its issuer must be trusted for `id_jag`, its `aud` must be this realm's
//! issuer alone, and its `client_id` the authenticated client. Any other
//! assertion is a plain JWT bearer grant, its issuer trusted for
//! `jwt_bearer`. Every assertion needs a `jti`, used once. Every failure
//! of the assertion is `invalid_grant` (RFC 7523 §3.1), except an issuer
//! whose keys cannot be fetched right now: `temporarily_unavailable`.

use agentauth_core::grant::jwt_bearer::{self, Assertion, ID_JAG_TYPE};
use agentauth_core::trust::TrustPurpose;
use agentauth_core::{Client, ErrorCode, GrantType, OAuthError, Scopes};
use agentauth_jose::ExternalType;
use serde_json::Value;

use super::{Secret, TokenResponse, mint, persist};
use crate::Service;
use crate::dpop::Dpop;
use crate::realm::RealmRuntime;
use crate::trust::verify::{AudienceRule, Refused};

/// The parameters of a JWT bearer request.
#[derive(Debug)]
pub struct AssertionRequest {
    pub assertion: Secret,
    pub scope: Option<Scopes>,
    pub resources: Vec<String>,
}

/// The answer to an assertion refused before it was mapped.
pub(crate) fn refusal(refused: Refused) -> OAuthError {
    if refused.unavailable {
        OAuthError::new(ErrorCode::TemporarilyUnavailable, refused.reason)
    } else {
        OAuthError::new(ErrorCode::InvalidGrant, refused.reason)
    }
}

/// Whether the JWT's header says it is an ID-JAG. The header is read
/// again, strictly, when the JWT is verified.
fn is_id_jag(token: &str) -> bool {
    use base64::Engine as _;
    let Some(header) = token.split('.').next() else { return false };
    if header.len() > 2048 {
        return false;
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else { return false };
    // RFC 8725 §3.11: with or without the `application/` prefix.
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|h| {
            h.get("typ").and_then(Value::as_str).map(|t| {
                let t = t.strip_prefix("application/").unwrap_or(t);
                t.eq_ignore_ascii_case(ID_JAG_TYPE)
            })
        })
        .unwrap_or(false)
}

pub(crate) fn issue(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    request: AssertionRequest,
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, OAuthError> {
    agentauth_core::grant::require_grant(client, GrantType::JwtBearer)?;
    let token = request.assertion.as_str();
    let id_jag = is_id_jag(token);
    let (purpose, typ, audience) = if id_jag {
        (TrustPurpose::IdJag, ExternalType::Exactly(ID_JAG_TYPE), AudienceRule::RealmIssuer)
    } else {
        (TrustPurpose::JwtBearer, ExternalType::Jwt, AudienceRule::Includes)
    };
    let verified = svc.verify_external(realm, token, purpose, typ, audience, false).map_err(|refused| {
        tracing::debug!(realm = %realm.name, client_id = %client.client_id, "assertion refused: {refused}");
        refusal(refused)
    })?;
    let id_jag_client_id = if id_jag {
        match verified.text("client_id") {
            // Checked before anything is spent: another client cannot
            // burn someone's ID-JAG by presenting it.
            Some(named) if named != client.client_id => {
                return Err(OAuthError::new(ErrorCode::InvalidGrant, "the ID-JAG was issued to another client"));
            }
            Some(_) if !verified.claims.get("iat").is_some_and(Value::is_i64) => {
                return Err(OAuthError::new(ErrorCode::InvalidGrant, "the ID-JAG has no iat"));
            }
            Some(named) => Some(named.to_string()),
            None => return Err(OAuthError::new(ErrorCode::InvalidGrant, "the ID-JAG has no client_id")),
        }
    } else {
        None
    };
    let carried_scope = match verified.claims.get("scope") {
        None => None,
        Some(Value::String(scope)) => Some(
            Scopes::parse(scope)
                .map_err(|_| OAuthError::new(ErrorCode::InvalidGrant, "the assertion's scope is malformed"))?,
        ),
        Some(_) => return Err(OAuthError::new(ErrorCode::InvalidGrant, "the assertion's scope is not a string")),
    };
    let carried_resources: Vec<String> = match verified.claims.get("resource") {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) if many.iter().all(Value::is_string) => {
            many.iter().filter_map(Value::as_str).map(str::to_string).collect()
        }
        Some(_) => return Err(OAuthError::new(ErrorCode::InvalidGrant, "the assertion's resource is malformed")),
    };
    // What the client asks for, within what it registered and what the
    // assertion carries: the policy sees the request it would grant.
    let registered = client.metadata.scopes();
    let asked =
        agentauth_core::grant::narrow_scopes(request.scope.clone(), &registered, "the client's registered scopes")?;
    let asked = match &carried_scope {
        Some(carried) => asked.intersection(carried),
        None => asked,
    };
    let resources_asked =
        if request.resources.is_empty() { carried_resources.clone() } else { request.resources.clone() };
    // Spent before the policy runs: a replayed assertion never reaches it.
    match svc.spend_external_jti(realm, &verified) {
        Ok(true) => {}
        Ok(false) => return Err(OAuthError::new(ErrorCode::InvalidGrant, "the assertion was already used")),
        Err(refused) => return Err(refusal(refused)),
    }
    let mapped = svc.map_external(
        realm,
        &verified,
        purpose,
        Some(client),
        &asked.to_vec(),
        &resources_asked,
        ErrorCode::InvalidGrant,
    )?;
    let granted = Scopes::from_tokens(mapped.scopes.iter().map(String::as_str))?;
    let decided = jwt_bearer::decide(
        client,
        Assertion {
            subject: mapped.subject,
            id_jag_client_id,
            scope: Some(granted),
            resources: carried_resources,
            may_act: mapped.may_act,
        },
        request.scope,
        &request.resources,
        &realm.resource_rules,
    )?;
    let minted = mint(svc, realm, client, decided, GrantType::JwtBearer, dpop)?;
    persist(svc, realm, &minted.stored(None))?;
    // No refresh token: the assertion's issuer decides again each time.
    minted.count(realm, GrantType::JwtBearer, false);
    Ok(minted.response(None, false))
}
