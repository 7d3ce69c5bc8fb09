//! Token exchange (RFC 8693), with the authenticated client as the actor.
//!
//! The exchanged token, and the refresh token issued with it, start a
//! refresh token family bound to the subject token: revoking that token,
//! its own family or its client revokes this family too.

use agentauth_core::grant::refresh_token::RefreshGrant;
use agentauth_core::grant::token_exchange;
use agentauth_core::ports::Lineage;
use agentauth_core::trust::TrustPurpose;
use agentauth_core::{AccessTokenClaims, Client, Confirmation, ErrorCode, GrantType, MayAct, OAuthError, Scopes};
use agentauth_jose::ExternalType;

use super::{Secret, TokenResponse, mint, refresh_row};
use crate::dpop::Dpop;
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_jti, new_secret};
use crate::telemetry::ExchangeOutcome;
use crate::trust::verify::AudienceRule;
use crate::{Service, internal};

/// What kind of subject token an exchange presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubjectTokenType {
    /// One of this realm's access tokens.
    AccessToken,
    /// A JWT (`urn:ietf:params:oauth:token-type:jwt`) or an ID token
    /// (`...:id_token`) from an issuer the realm trusts for subject tokens.
    External,
}

/// An exchange's parameters, checked against RFC 8693 §2.1 by the edge:
/// the actor token is an access token, and the subject token one, or a
/// JWT from outside.
#[derive(Debug)]
pub struct ExchangeRequest {
    pub subject_token: Secret,
    pub subject_token_type: SubjectTokenType,
    pub actor_token: Option<Secret>,
    /// Every `audience` value, in the order sent.
    pub audiences: Vec<String>,
    /// Every `resource` value (RFC 8707), in the order sent.
    pub resources: Vec<String>,
    pub scope: Option<Scopes>,
}

pub(crate) fn issue(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    request: ExchangeRequest,
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, OAuthError> {
    let exchanged = exchange(svc, realm, client, request, dpop);
    realm.metrics.exchange(match &exchanged {
        Ok(_) => ExchangeOutcome::Issued,
        Err((outcome, _)) => *outcome,
    });
    exchanged.map_err(|(_, e)| e)
}

/// How an exchange refused with `e` ended: the server's own failures
/// (5xx) are `Failed` wherever they happened, others `outcome`.
fn ended(outcome: ExchangeOutcome) -> impl Fn(OAuthError) -> (ExchangeOutcome, OAuthError) {
    move |e| (if e.code.http_status() >= 500 { ExchangeOutcome::Failed } else { outcome }, e)
}

/// The exchange, and how it ended if it issued nothing.
fn exchange(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    request: ExchangeRequest,
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, (ExchangeOutcome, OAuthError)> {
    let audience = token_exchange::targets(client, &realm.resource_rules, &request.audiences, &request.resources)
        .map_err(ended(ExchangeOutcome::InvalidTarget))?;
    if request.subject_token_type == SubjectTokenType::External {
        return exchange_external(svc, realm, client, request, audience, dpop);
    }
    let subject_token = request.subject_token.as_str();
    let subject = svc
        .access_token_claims(realm, subject_token)
        .map_err(ended(ExchangeOutcome::InvalidSubject))?
        .ok_or_else(|| {
            OAuthError::invalid_request("subject_token is invalid, expired, or not an access token of this realm")
        })
        .map_err(ended(ExchangeOutcome::InvalidSubject))?;
    let actor = match &request.actor_token {
        Some(token) => Some(
            svc.access_token_claims(realm, token.as_str())
                .map_err(ended(ExchangeOutcome::InvalidActor))?
                .ok_or_else(|| {
                    OAuthError::invalid_request("actor_token is invalid, expired, or not an access token of this realm")
                })
                .map_err(ended(ExchangeOutcome::InvalidActor))?,
        ),
        None => None,
    };
    check_holder(client, &subject, dpop, "subject_token").map_err(|e| (ExchangeOutcome::InvalidSubject, e))?;
    if let Some(actor) = &actor
        && !holds(actor, dpop)
    {
        return Err((ExchangeOutcome::InvalidActor, not_held("actor_token")));
    }
    let failed = ended(ExchangeOutcome::Failed);
    let ceiling = subject_scope_ceiling(svc, realm, &subject.sub, subject.scopes()).map_err(&failed)?;
    let rules = realm.exchange_rules();
    let mut decided = token_exchange::decide(client, &subject, &ceiling, actor.as_ref(), request.scope, &rules)
        .map_err(ended(ExchangeOutcome::Refused))?;
    decided.audience = audience.clone();
    // Everything issued from this exchange ends when the subject (or actor)
    // token does: the refresh token too.
    let family_end = decided.not_after.unwrap_or(i64::MAX);
    // What the realm's policies refuse is a denial; what fails, a failure.
    let minted =
        mint(svc, realm, client, decided, GrantType::TokenExchange, dpop).map_err(ended(ExchangeOutcome::Denied))?;
    let refresh_token = new_secret();
    let refresh_hash = svc.hasher.hash(Purpose::RefreshToken, &refresh_token);
    let grant = RefreshGrant {
        client_id: client.client_id.clone(),
        sub: minted.claims.sub.clone(),
        scope: minted.claims.scope.clone(),
        act: minted.claims.act.clone(),
        // The targets asked for, which refreshes may narrow (none: the
        // default audience, the client).
        audience,
        expires_at: minted.claims.iat.saturating_add(realm.settings.refresh_token_lifetime).min(family_end),
        may_act: None,
        jkt: super::refresh_binding(client, dpop),
        auth_time: None,
    };
    let grant_json = serde_json::to_string(&grant).map_err(internal).map_err(&failed)?;
    let family = new_jti();
    let mut stored = minted.stored(Some(&family));
    stored.push(refresh_row(&refresh_hash, &client.client_id, Some(&family), &grant_json, grant.expires_at));
    let (subject_hash, subject_family) = stored_subject(svc, realm, subject_token, &subject).map_err(&failed)?;
    let lineage = Lineage {
        family: &family,
        parent_jti: &subject.jti,
        parent_hash: subject_hash.as_deref(),
        parent_family: subject_family.as_deref(),
        parent_client: &subject.client_id,
        // Kept while anything of the family may be live: its refresh
        // token, or its access token if that lives longer.
        expires_at: grant.expires_at.max(minted.claims.exp),
    };
    let inserted =
        svc.store.insert_derived_family(&realm.name, &lineage, &stored).map_err(internal).map_err(&failed)?;
    drop(stored);
    if !inserted {
        return Err((ExchangeOutcome::InvalidSubject, OAuthError::invalid_request("subject_token was revoked")));
    }
    minted.count(realm, GrantType::TokenExchange, true);
    Ok(minted.response(Some(refresh_token), true))
}

/// An exchange of a JWT from one of the realm's trusted issuers (trusted
/// for `subject_token`): verified, mapped by the realm's assertion policy
/// (which may name who may act: `may_act`; without a policy, the token's
/// own `may_act` claim does), then held to the same rules as an exchange
/// of the realm's own tokens, the mapped scopes being what the subject may
/// hold. The new token ends when the external one does; no refresh token
/// is issued, as nothing here could revoke the external token's line.
/// Failures of the subject token are `invalid_request` (RFC 8693 §2.2.2).
fn exchange_external(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    request: ExchangeRequest,
    audience: Vec<String>,
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, (ExchangeOutcome, OAuthError)> {
    if request.actor_token.is_some() {
        let refused = OAuthError::invalid_request("an actor token goes with this realm's own subject tokens only");
        return Err((ExchangeOutcome::InvalidActor, refused));
    }
    let verified = svc
        .verify_external(
            realm,
            request.subject_token.as_str(),
            TrustPurpose::SubjectToken,
            ExternalType::Jwt,
            AudienceRule::Includes,
            false,
        )
        .map_err(|refused| {
            let error = if refused.unavailable {
                OAuthError::new(ErrorCode::TemporarilyUnavailable, refused.reason)
            } else {
                OAuthError::invalid_request(format!("subject_token: {}", refused.reason))
            };
            (ExchangeOutcome::InvalidSubject, error)
        })?;
    let invalid_subject = |why: &str| (ExchangeOutcome::InvalidSubject, OAuthError::invalid_request(why.to_string()));
    if verified.claims.contains_key("act") {
        // Its actors are its issuer's to name; this realm would drop them.
        return Err(invalid_subject("subject_token: a delegated token from outside cannot be exchanged here"));
    }
    let carried = match verified.claims.get("scope") {
        None => None,
        Some(serde_json::Value::String(scope)) => {
            Some(Scopes::parse(scope).map_err(|_| invalid_subject("subject_token: its scope is malformed"))?)
        }
        Some(_) => return Err(invalid_subject("subject_token: its scope is not a string")),
    };
    // Never more than the token carries, when it says what it carries.
    let registered = client.metadata.scopes();
    let wanted = request.scope.clone().unwrap_or_else(|| registered.clone());
    let asked = match &carried {
        Some(carried) => wanted.intersection(carried),
        None => wanted,
    };
    let mapped = svc
        .map_external(
            realm,
            &verified,
            TrustPurpose::SubjectToken,
            Some(client),
            &asked.to_vec(),
            &request.resources,
            ErrorCode::InvalidRequest,
        )
        .map_err(ended(ExchangeOutcome::Denied))?;
    // Who may act: the policy's word when there is one; without, the
    // token's own `may_act` claim, if well formed.
    let may_act = match realm.settings.assertion_plugin {
        Some(_) => mapped.may_act,
        None => verified
            .claims
            .get("may_act")
            .cloned()
            .and_then(|m| serde_json::from_value::<MayAct>(m).ok())
            .filter(|m| printable(&m.client_id) && m.sub.as_deref().is_none_or(printable)),
    };
    let ceiling =
        Scopes::from_tokens(mapped.scopes.iter().map(String::as_str)).map_err(ended(ExchangeOutcome::Denied))?;
    let subject = AccessTokenClaims {
        iss: verified.issuer.issuer.clone(),
        sub: mapped.subject,
        aud: String::new(),
        more_aud: Vec::new(),
        client_id: String::new(),
        scope: ceiling.to_string(),
        iat: svc.now(),
        exp: verified.expires_at,
        jti: verified.jti.clone().unwrap_or_default(),
        may_act,
        act: None,
        cnf: external_binding(&verified.claims).map_err(|e| (ExchangeOutcome::InvalidSubject, e))?,
        auth_time: None,
        custom: serde_json::Map::new(),
    };
    check_holder(client, &subject, dpop, "subject_token").map_err(|e| (ExchangeOutcome::InvalidSubject, e))?;
    let rules = realm.exchange_rules();
    if ceiling.is_empty() && !registered.is_empty() {
        let refused = OAuthError::invalid_scope("none of the scopes asked for is in the subject token");
        return Err((ExchangeOutcome::Refused, refused));
    }
    let mut decided = token_exchange::decide(client, &subject, &ceiling, None, Some(ceiling.clone()), &rules)
        .map_err(ended(ExchangeOutcome::Refused))?;
    decided.audience = audience;
    let minted =
        mint(svc, realm, client, decided, GrantType::TokenExchange, dpop).map_err(ended(ExchangeOutcome::Denied))?;
    super::persist(svc, realm, &minted.stored(None)).map_err(ended(ExchangeOutcome::Failed))?;
    minted.count(realm, GrantType::TokenExchange, false);
    Ok(minted.response(None, true))
}

/// Whether the request's DPoP proof holds the key `token` is bound to, if
/// it is bound.
fn holds(token: &AccessTokenClaims, dpop: Option<&Dpop>) -> bool {
    token.cnf.as_ref().is_none_or(|cnf| dpop.is_some_and(|d| d.jkt == cnf.jkt))
}

fn not_held(which: &str) -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidDpopProof,
        format!("{which} is bound to a DPoP key, and this request's proof is not signed with it"),
    )
}

/// A subject token bound to a DPoP key is exchanged only with a proof,
/// so that what comes out is bound too: signed with the token's key, or
/// with a key of the client its `may_act` names (the subject, or the
/// realm's policy, chose that client to act, and it authenticates).
fn check_holder(
    client: &Client,
    subject: &AccessTokenClaims,
    dpop: Option<&Dpop>,
    which: &str,
) -> Result<(), OAuthError> {
    let named = subject.may_act.as_ref().is_some_and(|m| m.client_id == client.client_id);
    match (&subject.cnf, dpop) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            format!("{which} is bound to a DPoP key: exchange it with a DPoP proof"),
        )),
        (Some(cnf), Some(dpop)) if dpop.jkt == cnf.jkt || named => Ok(()),
        (Some(_), Some(_)) => Err(not_held(which)),
    }
}

/// The DPoP key a token from outside is bound to (its `cnf.jkt`), if any;
/// a token bound otherwise (`x5t#S256`, a `jwk`) is refused, as this
/// server cannot check that binding and would turn it into a bearer
/// token.
fn external_binding(claims: &serde_json::Map<String, serde_json::Value>) -> Result<Option<Confirmation>, OAuthError> {
    match claims.get("cnf") {
        None => Ok(None),
        Some(cnf) => match cnf.get("jkt").and_then(serde_json::Value::as_str) {
            Some(jkt) if cnf.as_object().is_some_and(|c| c.len() == 1) => {
                Ok(Some(Confirmation { jkt: jkt.to_string() }))
            }
            _ => Err(OAuthError::invalid_request(
                "subject_token: it is bound to a key in a way this server cannot check (only cnf.jkt is)",
            )),
        },
    }
}

/// The most that may be granted on a subject's behalf, by exchange or by a
/// refresh of what an exchange issued: the subject's registered scopes
/// when the subject is a client of this realm (what it could get for
/// itself, as registered now), else `otherwise` (what its token carried).
pub(crate) fn subject_scope_ceiling(
    svc: &Service,
    realm: &RealmRuntime,
    sub: &str,
    otherwise: Scopes,
) -> Result<Scopes, OAuthError> {
    match svc.store.client(&realm.name, sub).map_err(internal)? {
        Some(row) => Ok(row.client.metadata.scopes()),
        None => Ok(otherwise),
    }
}

/// What the store holds of a live subject token: for an opaque token, the
/// keyed hash of its row (the exchange's commit checks the row is still
/// there); and the refresh token family it was issued in, if any.
fn stored_subject(
    svc: &Service,
    realm: &RealmRuntime,
    token: &str,
    claims: &AccessTokenClaims,
) -> Result<(Option<Vec<u8>>, Option<String>), OAuthError> {
    let opaque = !token.contains('.');
    let hash = if opaque {
        svc.hasher.hash(Purpose::AccessToken, token)
    } else {
        svc.hasher.hash(Purpose::JwtId, &claims.jti)
    };
    let family = svc.store.token_row(&hash, &realm.name, svc.now()).map_err(internal)?.and_then(|row| row.family);
    Ok((opaque.then_some(hash), family))
}

/// A claim value fit to name someone: 1 to 256 characters, none of them
/// control characters.
fn printable(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && !value.chars().any(char::is_control)
}
