//! The token endpoint (`access_token`): client credentials, token exchange
//! (RFC 8693) and refresh, and the minting of access and refresh tokens.
//!
//! Access tokens are RFC 9068 JWTs (`typ: at+jwt`) for clients whose
//! `statelessTokensEnabled` attribute is set, and otherwise opaque 256-bit
//! tokens kept server-side by hash with their claims. Before any access
//! token is minted, the client's may-act policy (if it has one) decides its
//! `may_act` claim.

use agentauth_core::grant::refresh_token::RefreshGrant;
use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use agentauth_core::grant::{client_credentials, refresh_token, token_exchange};
use agentauth_core::token::TokenRequest;
use agentauth_core::{AccessTokenClaims, Client, ErrorCode, GrantType, MayAct, OAuthError, Scopes};
use agentauth_plugin_host::{HookKind, ScopeRequest, TokenView};
use agentauth_store::{NewToken, TokenKind};
use hyper::http::request::Parts;
use serde_json::{Value, json};

use super::{hook_error, internal};
use crate::client_auth;
use crate::http::{Form, Reply, has_media_type};
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_jti, new_secret};
use crate::{App, now};

pub fn token(app: &App, realm: &RealmRuntime, parts: &Parts, body: &[u8]) -> Result<Reply, OAuthError> {
    if !has_media_type(&parts.headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the request body must be application/x-www-form-urlencoded"));
    }
    let form = Form::parse(body)?;
    let client = client_auth::authenticate(&app.store, &app.hasher, &realm.name, &parts.headers, &form)?;
    let grant_type = form.require("grant_type")?;
    let scope = form.get("scope").map(Scopes::parse).transpose()?;
    match GrantType::parse(grant_type) {
        Some(GrantType::ClientCredentials) => {
            let request = client_credentials::decide(&client, scope)?;
            let minted = mint(app, realm, &client, request, GrantType::ClientCredentials)?;
            persist(app, realm, &minted.stored())?;
            Ok(Reply::json(200, &minted.response(None)))
        }
        Some(GrantType::TokenExchange) => exchange(app, realm, &client, &form, scope),
        Some(GrantType::RefreshToken) => refresh(app, realm, &client, &form, scope),
        None => Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type {grant_type:?} is not supported here"),
        )),
    }
}

/// RFC 8693 token exchange, with the authenticated client as the actor.
fn exchange(
    app: &App,
    realm: &RealmRuntime,
    client: &Client,
    form: &Form,
    scope: Option<Scopes>,
) -> Result<Reply, OAuthError> {
    let subject_token = form.require("subject_token")?;
    let subject_token_type = form.require("subject_token_type")?;
    if subject_token_type != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::invalid_request(format!(
            "subject_token_type {subject_token_type:?} is not supported; use {ACCESS_TOKEN_TYPE}"
        )));
    }
    if let Some(requested) = form.get("requested_token_type").filter(|t| *t != ACCESS_TOKEN_TYPE) {
        return Err(OAuthError::invalid_request(format!("requested_token_type {requested:?} is not supported")));
    }
    if form.get("actor_token").is_some() || form.get("actor_token_type").is_some() {
        return Err(OAuthError::invalid_request("actor tokens are not supported; the client acts as itself"));
    }
    if form.get("audience").is_some() || form.get("resource").is_some() {
        return Err(OAuthError::new(ErrorCode::InvalidTarget, "tokens are issued only for the requesting client"));
    }
    let subject = subject_claims(app, realm, subject_token)?;
    let request = token_exchange::decide(client, &subject, scope)?;
    let minted = mint(app, realm, client, request, GrantType::TokenExchange)?;
    let refresh_token = new_secret();
    let refresh_hash = app.hasher.hash(Purpose::RefreshToken, &refresh_token);
    let grant = RefreshGrant {
        client_id: client.client_id.clone(),
        sub: minted.claims.sub.clone(),
        scope: minted.claims.scope.clone(),
        act: minted.claims.act.clone(),
        expires_at: minted.claims.iat.saturating_add(realm.settings.refresh_token_lifetime),
    };
    let grant_json = serde_json::to_string(&grant).map_err(internal)?;
    let mut stored = minted.stored();
    stored.push(NewToken {
        hash: &refresh_hash,
        client_id: &client.client_id,
        kind: TokenKind::Refresh,
        grant: &grant_json,
        expires_at: grant.expires_at,
    });
    persist(app, realm, &stored)?;
    Ok(Reply::json(200, &minted.response(Some(&refresh_token))))
}

/// The refresh token grant, rotating the refresh token.
fn refresh(
    app: &App,
    realm: &RealmRuntime,
    client: &Client,
    form: &Form,
    scope: Option<Scopes>,
) -> Result<Reply, OAuthError> {
    let presented = form.require("refresh_token")?;
    let invalid = || OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is invalid, expired or revoked");
    let old_hash = app.hasher.hash(Purpose::RefreshToken, presented);
    let now = now();
    let grant_json =
        app.store.token(&old_hash, &realm.name, TokenKind::Refresh, now).map_err(internal)?.ok_or_else(invalid)?;
    let grant: RefreshGrant = serde_json::from_str(&grant_json).map_err(internal)?;
    let request = refresh_token::decide(client, &grant, scope, now)?;
    let minted = mint(app, realm, client, request, GrantType::RefreshToken)?;

    let successor = new_secret();
    let successor_hash = app.hasher.hash(Purpose::RefreshToken, &successor);
    // The successor keeps the family's expiry: rotation never extends it.
    let successor_grant = RefreshGrant { scope: minted.claims.scope.clone(), ..grant };
    let successor_json = serde_json::to_string(&successor_grant).map_err(internal)?;
    let mut stored = minted.stored();
    stored.push(NewToken {
        hash: &successor_hash,
        client_id: &client.client_id,
        kind: TokenKind::Refresh,
        grant: &successor_json,
        expires_at: successor_grant.expires_at,
    });
    if !app.store.rotate_token(&realm.name, TokenKind::Refresh, &old_hash, &stored, now).map_err(internal)? {
        return Err(invalid());
    }
    Ok(Reply::json(200, &minted.response(Some(&successor))))
}

/// Verifies a subject token of this realm: a JWT signed with one of the
/// realm's keys, of type `at+jwt`, issued here and unexpired; or a live
/// opaque token of the realm. Anything else is `invalid_request`.
fn subject_claims(app: &App, realm: &RealmRuntime, token: &str) -> Result<AccessTokenClaims, OAuthError> {
    let invalid = |why: &dyn std::fmt::Display| {
        tracing::debug!(realm = %realm.name, "subject token refused: {why}");
        OAuthError::invalid_request("subject_token is invalid, expired, or not an access token of this realm")
    };
    let now = now();
    let claims: AccessTokenClaims = if token.contains('.') {
        let claims = agentauth_jose::verify(token, &realm.verifying_keys, "at+jwt").map_err(|e| invalid(&e))?;
        serde_json::from_value(claims).map_err(|e| invalid(&e))?
    } else {
        if token.len() > agentauth_jose::MAX_TOKEN_LEN {
            return Err(invalid(&"too long"));
        }
        let hash = app.hasher.hash(Purpose::AccessToken, token);
        let stored = app.store.token(&hash, &realm.name, TokenKind::Access, now).map_err(internal)?;
        let stored = stored.ok_or_else(|| invalid(&"unknown opaque token"))?;
        serde_json::from_str(&stored).map_err(internal)?
    };
    if claims.iss != realm.issuer {
        return Err(invalid(&"issued by another realm"));
    }
    if claims.is_expired(now) {
        return Err(invalid(&"expired"));
    }
    Ok(claims)
}

/// An access token ready to be returned, and what must be stored first.
struct Minted {
    access_token: String,
    claims: AccessTokenClaims,
    /// For opaque tokens: the keyed hash and claims to store.
    opaque: Option<(Vec<u8>, String)>,
    expires_in: i64,
}

impl Minted {
    fn stored(&self) -> Vec<NewToken<'_>> {
        self.opaque
            .iter()
            .map(|(hash, claims)| NewToken {
                hash,
                client_id: &self.claims.client_id,
                kind: TokenKind::Access,
                grant: claims,
                expires_at: self.claims.exp,
            })
            .collect()
    }

    /// The token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
    fn response(&self, refresh_token: Option<&str>) -> Value {
        let mut body = json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": self.claims.scope,
        });
        if let Some(refresh_token) = refresh_token {
            body["refresh_token"] = json!(refresh_token);
        }
        if self.claims.act.is_some() {
            body["issued_token_type"] = json!(ACCESS_TOKEN_TYPE);
        }
        body
    }
}

fn persist(app: &App, realm: &RealmRuntime, tokens: &[NewToken<'_>]) -> Result<(), OAuthError> {
    if tokens.is_empty() {
        return Ok(());
    }
    app.store.insert_tokens(&realm.name, tokens).map_err(internal)
}

/// Runs the client's may-act policy and mints the access token.
fn mint(
    app: &App,
    realm: &RealmRuntime,
    client: &Client,
    mut request: TokenRequest,
    grant: GrantType,
) -> Result<Minted, OAuthError> {
    if let Some(name) = realm.settings.scope_plugin.as_deref() {
        request.scopes = validate_scopes(app, realm, client, name, &request.scopes, grant)?;
    }
    let may_act = match client.attributes.may_act_plugin() {
        None => None,
        Some(name) => {
            let plugin = realm.plugin(name, HookKind::MayAct)?;
            let scopes = request.scopes.to_vec();
            let view = TokenView { grant_type: grant.as_str(), sub: &request.sub, scopes: &scopes };
            let _slot = realm.plugin_slot()?;
            app.host
                .run_may_act(plugin, &realm.plugin_limits, &realm.name, client, &view)
                .map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))?
                .map(|claim| MayAct { client_id: claim.client_id, sub: claim.sub })
        }
    };
    let lifetime = realm.settings.access_token_lifetime;
    let mut claims = request.into_claims(&realm.issuer, now(), lifetime, new_jti(), may_act);
    if let Some(name) = realm.settings.token_plugin.as_deref() {
        claims.custom = custom_claims(app, realm, client, name, &claims, grant)?;
    }
    if client.attributes.stateless_tokens_enabled {
        let payload = serde_json::to_value(&claims).map_err(internal)?;
        let access_token = agentauth_jose::sign(&realm.signing_key, "at+jwt", &payload).map_err(internal)?;
        Ok(Minted { access_token, claims, opaque: None, expires_in: lifetime })
    } else {
        let access_token = new_secret();
        let hash = app.hasher.hash(Purpose::AccessToken, &access_token);
        let stored = serde_json::to_string(&claims).map_err(internal)?;
        Ok(Minted { access_token, claims, opaque: Some((hash, stored)), expires_in: lifetime })
    }
}

/// Runs the realm's scope policy: it may narrow the scopes or refuse the
/// request (`invalid_scope` with its reason), never widen them.
fn validate_scopes(
    app: &App,
    realm: &RealmRuntime,
    client: &Client,
    plugin_name: &str,
    scopes: &Scopes,
    grant: GrantType,
) -> Result<Scopes, OAuthError> {
    let plugin = realm.plugin(plugin_name, HookKind::Scope)?;
    let (requested, registered) = (scopes.to_vec(), client.metadata.scopes().to_vec());
    let request = ScopeRequest { grant_type: grant.as_str(), requested: &requested, registered: &registered };
    let _slot = realm.plugin_slot()?;
    let granted = app
        .host
        .run_scope(plugin, &realm.plugin_limits, &realm.name, client, &request)
        .map_err(|e| hook_error(e, realm, plugin, ErrorCode::InvalidScope))?;
    Ok(Scopes::from_tokens(granted.iter().map(String::as_str)).unwrap_or_default())
}

/// Runs the realm's token policy and checks the claims it adds.
fn custom_claims(
    app: &App,
    realm: &RealmRuntime,
    client: &Client,
    plugin_name: &str,
    claims: &AccessTokenClaims,
    grant: GrantType,
) -> Result<serde_json::Map<String, Value>, OAuthError> {
    let plugin = realm.plugin(plugin_name, HookKind::Token)?;
    let claims_json = serde_json::to_string(claims).map_err(internal)?;
    let _slot = realm.plugin_slot()?;
    let answer = app
        .host
        .run_token(plugin, &realm.plugin_limits, &realm.name, client, grant.as_str(), &claims_json)
        .map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))?;
    agentauth_core::token::custom_claims(&answer).map_err(|why| {
        hook_error(
            agentauth_plugin_host::HookError::Failed(format!("invalid answer: {why}")),
            realm,
            plugin,
            ErrorCode::ServerError,
        )
    })
}
