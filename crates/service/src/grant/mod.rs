//! The token endpoint's work: one module per grant, and the minting of
//! access tokens that every grant shares.
//!
//! A grant decides what may be issued (`core`'s rules over the facts it
//! gathers: the authenticated client, a verified subject token, a stored
//! refresh token); [`mint`] then runs the realm's policies in a fixed
//! order (scope, then the client's may-act, then token claims) and signs
//! or stores the access token. Access tokens are RFC 9068 JWTs
//! (`typ: at+jwt`) for clients whose `statelessTokensEnabled` attribute is
//! set, and otherwise opaque 256-bit tokens kept server-side by hash.
//!
//! A new grant is one module here, one variant of [`TokenRequest`], and
//! one parse arm at the edge.

pub mod authorization_code;
pub mod client_credentials;
pub mod jwt_bearer;
pub mod refresh_token;
pub mod token_exchange;

use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use agentauth_core::ports::{NewToken, TokenKind};
use agentauth_core::token::TokenRequest as Issue;
use agentauth_core::{AccessTokenClaims, Client, ErrorCode, GrantType, MayAct, OAuthError, Scopes};
use agentauth_plugin_host::{HookKind, ScopeRequest, TokenView};
use serde::Serialize;

pub use authorization_code::CodeRequest;
pub use jwt_bearer::AssertionRequest;
pub use token_exchange::{ExchangeRequest, SubjectTokenType};

use crate::dpop::Dpop;
use crate::policy::{audited, hook_error, invalid_answer};
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_jti, new_secret};
use crate::telemetry::IssuedKind;
use crate::{Service, internal};

/// A token request, its parameters parsed and checked for shape by the
/// edge; the client is authenticated separately.
#[derive(Debug)]
pub enum TokenRequest {
    /// RFC 6749 §4.4, with the `resource` values of RFC 8707.
    ClientCredentials { scope: Option<Scopes>, resources: Vec<String> },
    /// RFC 8693.
    TokenExchange(ExchangeRequest),
    /// RFC 6749 §6, with the `resource` values of RFC 8707 §2.2.
    RefreshToken { refresh_token: Secret, scope: Option<Scopes>, resources: Vec<String> },
    /// RFC 6749 §4.1.3, with PKCE (RFC 7636 §4.5).
    AuthorizationCode(CodeRequest),
    /// RFC 7523 §2.1: an assertion from a trusted issuer (ID-JAG among
    /// them), with RFC 8707 resources.
    JwtBearer(AssertionRequest),
}

/// A token as presented by a client: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Secret {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// What an exchange issued (RFC 8693 §2.2.1 requires it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("issued_token_type", &self.issued_token_type)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Issues what `request` asks for to the authenticated `client`, its
    /// access token bound to the key of `dpop`, the request's checked DPoP
    /// proof, if it has one ([`Service::check_dpop`]).
    pub fn issue(
        &self,
        realm: &RealmRuntime,
        client: &Client,
        request: TokenRequest,
        dpop: Option<&Dpop>,
    ) -> Result<TokenResponse, OAuthError> {
        let grant = match &request {
            TokenRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
            TokenRequest::TokenExchange(_) => GrantType::TokenExchange,
            TokenRequest::RefreshToken { .. } => GrantType::RefreshToken,
            TokenRequest::AuthorizationCode(_) => GrantType::AuthorizationCode,
            TokenRequest::JwtBearer(_) => GrantType::JwtBearer,
        };
        crate::decisions::note(|d| d.grant = Some(grant.as_str().to_string()));
        // A client enabled again within the second it was disabled would
        // get tokens dead at birth (their `iat` not after the disabling).
        if self
            .store
            .client(&realm.name, &client.client_id)
            .map_err(internal)?
            .is_some_and(|row| row.tokens_valid_after >= self.now())
        {
            let again =
                OAuthError::new(ErrorCode::TemporarilyUnavailable, "this client was just disabled; retry in 1 s");
            return Err(OAuthError { retry_after: Some(1), ..again });
        }
        if dpop.is_none() && requires_dpop(realm, client) {
            return Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "this client's tokens are bound to its key: send a DPoP proof (RFC 9449)",
            ));
        }
        match request {
            TokenRequest::ClientCredentials { scope, resources } => {
                client_credentials::issue(self, realm, client, scope, &resources, dpop)
            }
            TokenRequest::TokenExchange(request) => token_exchange::issue(self, realm, client, request, dpop),
            TokenRequest::RefreshToken { refresh_token, scope, resources } => {
                refresh_token::issue(self, realm, client, refresh_token.as_str(), scope, &resources, dpop)
            }
            TokenRequest::AuthorizationCode(request) => authorization_code::issue(self, realm, client, &request, dpop),
            TokenRequest::JwtBearer(request) => jwt_bearer::issue(self, realm, client, request, dpop),
        }
    }
}

/// Whether `client` must send a DPoP proof with every token request: it
/// registered `dpop_bound_access_tokens`, or it is an agent of a realm
/// that requires DPoP of agents.
pub fn requires_dpop(realm: &RealmRuntime, client: &Client) -> bool {
    client.metadata.dpop_bound_access_tokens || (client.is_ai_agent && realm.settings.dpop_required_for_agents)
}

/// The key a public client's refresh tokens are bound to: the DPoP key it
/// used, since nothing else authenticates it (RFC 9449 §5). A
/// confidential client's are not bound: it authenticates, and may move
/// to a new key.
pub(crate) fn refresh_binding(client: &Client, dpop: Option<&Dpop>) -> Option<String> {
    let public = client.metadata.token_endpoint_auth_method == agentauth_core::AuthMethod::None;
    dpop.filter(|_| public).map(|d| d.jkt.clone())
}

impl Service {}

/// An access token ready to be returned, and what must be stored first.
pub(crate) struct Minted {
    access_token: String,
    pub claims: AccessTokenClaims,
    /// For opaque tokens: the keyed hash and claims to store.
    opaque: Option<(Vec<u8>, String)>,
    /// The keyed hash of the token's `jti`.
    jti_hash: Vec<u8>,
}

impl Minted {
    /// What must be stored for this token: an opaque token's claims; and,
    /// for a JWT issued within a refresh token `family`, its `jti`, so that
    /// revoking the family revokes it.
    pub fn stored<'a>(&'a self, family: Option<&'a str>) -> Vec<NewToken<'a>> {
        let token = |hash, kind, grant| NewToken {
            hash,
            client_id: &self.claims.client_id,
            family,
            kind,
            grant,
            expires_at: self.claims.exp,
        };
        match (&self.opaque, family) {
            (Some((hash, claims)), _) => vec![token(hash, TokenKind::Access, claims)],
            (None, Some(_)) => vec![token(&self.jti_hash, TokenKind::Jwt, &self.claims.jti)],
            (None, None) => Vec::new(),
        }
    }

    /// Counts this access token, and a refresh token beside it if one was
    /// issued, as issued by `grant`.
    pub fn count(&self, realm: &RealmRuntime, grant: GrantType, with_refresh: bool) {
        let kind = if self.opaque.is_some() { IssuedKind::Opaque } else { IssuedKind::Jwt };
        realm.metrics.token_issued(grant, kind);
        if with_refresh {
            realm.metrics.token_issued(grant, IssuedKind::Refresh);
        }
    }

    /// The token response; an exchange's also says what it issued.
    pub fn response(self, refresh_token: Option<String>, exchanged: bool) -> TokenResponse {
        TokenResponse {
            expires_in: self.claims.exp.saturating_sub(self.claims.iat),
            // RFC 9449 §5: a token bound to a DPoP key is of type DPoP.
            token_type: if self.claims.cnf.is_some() { "DPoP" } else { "Bearer" },
            scope: self.claims.scope,
            access_token: self.access_token,
            refresh_token,
            issued_token_type: exchanged.then_some(ACCESS_TOKEN_TYPE),
        }
    }
}

/// The row of a refresh token: its keyed hash, the grant it carries (as
/// JSON), the family it belongs to and when it expires.
pub(crate) fn refresh_row<'a>(
    hash: &'a [u8],
    client_id: &'a str,
    family: Option<&'a str>,
    grant: &'a str,
    expires_at: i64,
) -> NewToken<'a> {
    NewToken { hash, client_id, family, kind: TokenKind::Refresh, grant, expires_at }
}

/// Stores what a minted token needs kept, if anything.
pub(crate) fn persist(svc: &Service, realm: &RealmRuntime, tokens: &[NewToken<'_>]) -> Result<(), OAuthError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let _writing = tracing::debug_span!("store_write", realm = %realm.name, rows = tokens.len()).entered();
    svc.store.insert_tokens(&realm.name, tokens).map_err(internal)
}

/// Runs the realm's policies over what a grant decided, in order (scope,
/// the client's may-act, token claims), and mints the access token, bound
/// to the key of `dpop` if the request had a proof.
pub(crate) fn mint(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    mut request: Issue,
    grant: GrantType,
    dpop: Option<&Dpop>,
) -> Result<Minted, OAuthError> {
    request.cnf = dpop.map(|d| agentauth_core::Confirmation { jkt: d.jkt.clone() });
    if let Some(name) = realm.settings.scope_plugin.as_deref() {
        request.scopes = validate_scopes(svc, realm, client, name, &request.scopes, grant)?;
    }
    // A user's grant says who may act for them (the authorize hook);
    // otherwise the client's may-act policy does, if it has one.
    let may_act = match (request.may_act.take(), client.attributes.may_act_plugin()) {
        (Some(given), _) => Some(given),
        (None, None) => None,
        (None, Some(name)) => may_act(svc, realm, client, name, &request, grant)?,
    };
    let lifetime = realm.settings.access_token_lifetime;
    let mut claims = request.into_claims(&realm.issuer, svc.now(), lifetime, new_jti(), may_act);
    if let Some(name) = realm.settings.token_plugin.as_deref() {
        claims.custom = custom_claims(svc, realm, client, name, &claims, grant)?;
    }
    let jti_hash = svc.hasher.hash(Purpose::JwtId, &claims.jti);
    crate::decisions::minted(&claims, client.attributes.stateless_tokens_enabled);
    if !claims.more_aud.is_empty() {
        // `minted` notes `aud`, the first audience; a token asked for
        // several resources has them all audited.
        crate::decisions::note(|d| d.audience = claims.audience());
    }
    if client.attributes.stateless_tokens_enabled {
        let payload = serde_json::to_value(&claims).map_err(internal)?;
        let signing = tracing::debug_span!("sign", realm = %realm.name);
        let access_token =
            signing.in_scope(|| agentauth_jose::sign(&realm.signing_key, "at+jwt", &payload)).map_err(internal)?;
        Ok(Minted { access_token, claims, opaque: None, jti_hash })
    } else {
        let access_token = new_secret();
        let hash = svc.hasher.hash(Purpose::AccessToken, &access_token);
        let stored = serde_json::to_string(&claims).map_err(internal)?;
        Ok(Minted { access_token, claims, opaque: Some((hash, stored)), jti_hash })
    }
}

/// Runs the client's may-act policy: the token's `may_act` claim, if any.
fn may_act(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    plugin_name: &str,
    request: &Issue,
    grant: GrantType,
) -> Result<Option<MayAct>, OAuthError> {
    let plugin = realm.plugin(plugin_name, HookKind::MayAct)?;
    let scopes = request.scopes.to_vec();
    let view = TokenView { grant_type: grant.as_str(), sub: &request.sub, scopes: &scopes };
    let claim =
        audited(realm, plugin, || svc.host.run_may_act(plugin, &realm.plugin_limits, &realm.name, client, &view))
            .map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))?;
    match claim {
        None => Ok(None),
        // A may_act naming nobody of this realm would let whoever later
        // registers under that id act: fail closed.
        Some(claim)
            if claim.client_id != client.client_id
                && !svc.store.client_exists(&realm.name, &claim.client_id).map_err(internal)? =>
        {
            let why = format!("may_act names {:?}, which is not a client of this realm", claim.client_id);
            Err(invalid_answer(why, realm, plugin))
        }
        Some(claim) => Ok(Some(MayAct { client_id: claim.client_id, sub: claim.sub })),
    }
}

/// Runs the realm's scope policy: it may narrow the scopes or refuse the
/// request (`invalid_scope` with its reason), never widen them.
fn validate_scopes(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    plugin_name: &str,
    scopes: &Scopes,
    grant: GrantType,
) -> Result<Scopes, OAuthError> {
    let plugin = realm.plugin(plugin_name, HookKind::Scope)?;
    let (requested, registered) = (scopes.to_vec(), client.metadata.scopes().to_vec());
    let request = ScopeRequest { grant_type: grant.as_str(), requested: &requested, registered: &registered };
    let granted =
        audited(realm, plugin, || svc.host.run_scope(plugin, &realm.plugin_limits, &realm.name, client, &request))
            .map_err(|e| hook_error(e, realm, plugin, ErrorCode::InvalidScope))?;
    Ok(Scopes::from_tokens(granted.iter().map(String::as_str)).unwrap_or_default())
}

/// Runs the realm's token policy: the custom claims it adds, checked by
/// the plugin host.
fn custom_claims(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    plugin_name: &str,
    claims: &AccessTokenClaims,
    grant: GrantType,
) -> Result<serde_json::Map<String, serde_json::Value>, OAuthError> {
    let plugin = realm.plugin(plugin_name, HookKind::Token)?;
    let claims_json = serde_json::to_string(claims).map_err(internal)?;
    let call = || svc.host.run_token(plugin, &realm.plugin_limits, &realm.name, client, grant.as_str(), &claims_json);
    audited(realm, plugin, call).map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))
}
