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
use agentauth_plugin_host::{HookError, HookKind, ScopeRequest, TokenView};
use agentauth_store::{Lineage, NewToken, Rotation, TokenKind};
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
    let client = client_auth::authenticate(app, realm, "access_token", &parts.headers, &form)?;
    let grant_type = form.require("grant_type")?;
    let scope = form.get("scope").map(Scopes::parse).transpose()?;
    match GrantType::parse(grant_type) {
        Some(GrantType::ClientCredentials) => {
            let request = client_credentials::decide(&client, scope)?;
            let minted = mint(app, realm, &client, request, GrantType::ClientCredentials)?;
            persist(app, realm, &minted.stored(None))?;
            Ok(Reply::json(200, &minted.response(None, false)))
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
    let actor_token = match (form.get("actor_token"), form.get("actor_token_type")) {
        (None, None) => None,
        (Some(token), Some(ACCESS_TOKEN_TYPE)) => Some(token),
        (Some(_), Some(other)) => {
            return Err(OAuthError::invalid_request(format!(
                "actor_token_type {other:?} is not supported; use {ACCESS_TOKEN_TYPE}"
            )));
        }
        (Some(_), None) => return Err(OAuthError::invalid_request("actor_token requires actor_token_type")),
        (None, Some(_)) => return Err(OAuthError::invalid_request("actor_token_type was sent without actor_token")),
    };
    let audience = token_exchange::target(client, form.get("audience"), form.get("resource"))?;
    let subject = subject_claims(app, realm, subject_token)?;
    let actor = match actor_token {
        Some(token) => Some(access_token_claims(app, realm, token)?.ok_or_else(|| {
            OAuthError::invalid_request("actor_token is invalid, expired, or not an access token of this realm")
        })?),
        None => None,
    };
    let ceiling = subject_scope_ceiling(app, realm, &subject.sub, subject.scopes())?;
    let rules = realm.exchange_rules();
    let mut request = token_exchange::decide(client, &subject, &ceiling, actor.as_ref(), scope, &rules)?;
    request.audience = audience;
    // Everything issued from this exchange ends when the subject (or actor)
    // token does: the refresh token too.
    let family_end = request.not_after.unwrap_or(i64::MAX);
    let minted = mint(app, realm, client, request, GrantType::TokenExchange)?;
    let refresh_token = new_secret();
    let refresh_hash = app.hasher.hash(Purpose::RefreshToken, &refresh_token);
    let grant = RefreshGrant {
        client_id: client.client_id.clone(),
        sub: minted.claims.sub.clone(),
        scope: minted.claims.scope.clone(),
        act: minted.claims.act.clone(),
        audience: (minted.claims.aud != client.client_id).then(|| minted.claims.aud.clone()),
        expires_at: minted.claims.iat.saturating_add(realm.settings.refresh_token_lifetime).min(family_end),
    };
    let grant_json = serde_json::to_string(&grant).map_err(internal)?;
    // The refresh token starts a family: everything issued from it. The
    // family is bound to the subject token: revoking that token, its own
    // family or its client revokes this family too.
    let family = new_jti();
    let mut stored = minted.stored(Some(&family));
    stored.push(NewToken {
        hash: &refresh_hash,
        client_id: &client.client_id,
        family: Some(&family),
        kind: TokenKind::Refresh,
        grant: &grant_json,
        expires_at: grant.expires_at,
    });
    let (subject_hash, subject_family) = stored_subject(app, realm, subject_token, &subject)?;
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
    if !app.store.insert_derived_family(&realm.name, &lineage, &stored).map_err(internal)? {
        return Err(OAuthError::invalid_request("subject_token was revoked"));
    }
    Ok(Reply::json(200, &minted.response(Some(&refresh_token), true)))
}

/// The most that may be granted on a subject's behalf, by exchange or by a
/// refresh of what an exchange issued: the subject's registered scopes
/// when the subject is a client of this realm (what it could get for
/// itself, as registered now), else `otherwise` (what its token carried).
fn subject_scope_ceiling(app: &App, realm: &RealmRuntime, sub: &str, otherwise: Scopes) -> Result<Scopes, OAuthError> {
    match app.store.client(&realm.name, sub).map_err(internal)? {
        Some(row) => Ok(row.client.metadata.scopes()),
        None => Ok(otherwise),
    }
}

/// What the store holds of a live subject token: for an opaque token, the
/// keyed hash of its row (the exchange's commit checks the row is still
/// there); and the refresh token family it was issued in, if any.
fn stored_subject(
    app: &App,
    realm: &RealmRuntime,
    token: &str,
    claims: &AccessTokenClaims,
) -> Result<(Option<Vec<u8>>, Option<String>), OAuthError> {
    let opaque = !token.contains('.');
    let hash = if opaque {
        app.hasher.hash(Purpose::AccessToken, token)
    } else {
        app.hasher.hash(Purpose::JwtId, &claims.jti)
    };
    let family = app.store.token_row(&hash, &realm.name, now()).map_err(internal)?.and_then(|row| row.family);
    Ok((opaque.then_some(hash), family))
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
    let row = app.store.token_row(&old_hash, &realm.name, now).map_err(internal)?;
    let Some(row) = row.filter(|r| r.kind == TokenKind::Refresh) else {
        return Err(invalid());
    };
    if row.used {
        // A rotated token came back: it has leaked. End its family.
        tracing::warn!(realm = %realm.name, client_id = %row.client_id, "refresh token reused; revoking its family");
        app.store.revoke_token(&realm.name, &old_hash, row.family.as_deref()).map_err(internal)?;
        return Err(invalid());
    }
    let grant: RefreshGrant = match serde_json::from_str(&row.grant) {
        Ok(grant) => grant,
        Err(e) => {
            tracing::error!(realm = %realm.name, client_id = %row.client_id, "a stored refresh token cannot be read: {e}");
            return Err(invalid());
        }
    };
    // A subject that narrowed its registration narrows what is refreshed.
    let granted = Scopes::parse(&grant.scope).unwrap_or_default();
    let subject_ceiling = subject_scope_ceiling(app, realm, &grant.sub, granted)?;
    let request = refresh_token::decide(client, &grant, &subject_ceiling, scope, now)?;
    let minted = mint(app, realm, client, request, GrantType::RefreshToken)?;

    let successor = new_secret();
    let successor_hash = app.hasher.hash(Purpose::RefreshToken, &successor);
    // The successor keeps the family's expiry: rotation never extends it.
    let successor_grant = RefreshGrant { scope: minted.claims.scope.clone(), ..grant };
    let successor_json = serde_json::to_string(&successor_grant).map_err(internal)?;
    let family = row.family.as_deref();
    let mut stored = minted.stored(family);
    stored.push(NewToken {
        hash: &successor_hash,
        client_id: &client.client_id,
        family,
        kind: TokenKind::Refresh,
        grant: &successor_json,
        expires_at: successor_grant.expires_at,
    });
    match app.store.rotate_token(&realm.name, &old_hash, &stored, now).map_err(internal)? {
        Rotation::Rotated => Ok(Reply::json(200, &minted.response(Some(&successor), false))),
        Rotation::Reused | Rotation::Unknown => Err(invalid()),
    }
}

/// Verifies a subject token of this realm (see [`access_token_claims`]).
/// Anything unusable is `invalid_request`, never another grant.
fn subject_claims(app: &App, realm: &RealmRuntime, token: &str) -> Result<AccessTokenClaims, OAuthError> {
    access_token_claims(app, realm, token)?.ok_or_else(|| {
        OAuthError::invalid_request("subject_token is invalid, expired, or not an access token of this realm")
    })
}

/// The claims of a live access token of this realm: a JWT signed with one
/// of the realm's keys, of type `at+jwt`, issued here, unexpired, not
/// revoked, to a client that still exists; or a live opaque token of the
/// realm. `None` for anything else
/// (the reason is logged at debug level).
pub(super) fn access_token_claims(
    app: &App,
    realm: &RealmRuntime,
    token: &str,
) -> Result<Option<AccessTokenClaims>, OAuthError> {
    let refused = |why: &dyn std::fmt::Display| {
        tracing::debug!(realm = %realm.name, "access token refused: {why}");
        Ok(None)
    };
    if token.len() > agentauth_jose::MAX_TOKEN_LEN {
        return refused(&"too long");
    }
    let now = now();
    let is_jwt = token.contains('.');
    let claims: AccessTokenClaims = if is_jwt {
        let claims = match agentauth_jose::verify(token, &realm.verifying_keys, "at+jwt") {
            Ok(claims) => claims,
            Err(e) => return refused(&e),
        };
        match serde_json::from_value(claims) {
            Ok(claims) => claims,
            Err(e) => return refused(&e),
        }
    } else {
        let hash = app.hasher.hash(Purpose::AccessToken, token);
        match app.store.token(&hash, &realm.name, TokenKind::Access, now).map_err(internal)? {
            Some(stored) => match serde_json::from_str(&stored) {
                Ok(claims) => claims,
                Err(e) => {
                    // Not the caller's fault, but nothing to honour either.
                    tracing::error!(realm = %realm.name, "a stored access token's claims cannot be read: {e}");
                    return Ok(None);
                }
            },
            None => return refused(&"unknown opaque token"),
        }
    };
    if claims.iss != realm.issuer {
        return refused(&"issued by another realm");
    }
    if claims.is_expired(now) {
        return refused(&"expired");
    }
    if is_jwt && app.store.is_jwt_revoked(&realm.name, &claims.jti).map_err(internal)? {
        return refused(&"revoked");
    }
    // A deleted client's tokens die with it (RFC 7592 §2.3).
    if !app.store.client_exists(&realm.name, &claims.client_id).map_err(internal)? {
        return refused(&"its client was deleted");
    }
    Ok(Some(claims))
}

/// An access token ready to be returned, and what must be stored first.
struct Minted {
    access_token: String,
    claims: AccessTokenClaims,
    /// For opaque tokens: the keyed hash and claims to store.
    opaque: Option<(Vec<u8>, String)>,
    /// The keyed hash of the token's `jti`.
    jti_hash: Vec<u8>,
}

impl Minted {
    /// What must be stored for this token: an opaque token's claims; and,
    /// for a JWT issued within a refresh token `family`, its `jti`, so that
    /// revoking the family revokes it.
    fn stored<'a>(&'a self, family: Option<&'a str>) -> Vec<NewToken<'a>> {
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

    /// The token response (RFC 6749 §5.1); an exchange's also says what it
    /// issued (`issued_token_type`, required by RFC 8693 §2.2.1).
    fn response(&self, refresh_token: Option<&str>, exchanged: bool) -> Value {
        let mut body = json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.claims.exp.saturating_sub(self.claims.iat),
            "scope": self.claims.scope,
        });
        if let Some(refresh_token) = refresh_token {
            body["refresh_token"] = json!(refresh_token);
        }
        if exchanged {
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
            let claim = app
                .host
                .run_may_act(plugin, &realm.plugin_limits, &realm.name, client, &view)
                .map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))?;
            match claim {
                None => None,
                // A may_act naming nobody of this realm would let whoever
                // later registers under that id act: fail closed.
                Some(claim)
                    if claim.client_id != client.client_id
                        && !app.store.client_exists(&realm.name, &claim.client_id).map_err(internal)? =>
                {
                    let why = format!(
                        "invalid answer: may_act names {:?}, which is not a client of this realm",
                        claim.client_id
                    );
                    return Err(hook_error(HookError::Failed(why), realm, plugin, ErrorCode::ServerError));
                }
                Some(claim) => Some(MayAct { client_id: claim.client_id, sub: claim.sub }),
            }
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
        let jti_hash = app.hasher.hash(Purpose::JwtId, &claims.jti);
        Ok(Minted { access_token, claims, opaque: None, jti_hash })
    } else {
        let access_token = new_secret();
        let hash = app.hasher.hash(Purpose::AccessToken, &access_token);
        let stored = serde_json::to_string(&claims).map_err(internal)?;
        let jti_hash = app.hasher.hash(Purpose::JwtId, &claims.jti);
        Ok(Minted { access_token, claims, opaque: Some((hash, stored)), jti_hash })
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
    let granted = app
        .host
        .run_scope(plugin, &realm.plugin_limits, &realm.name, client, &request)
        .map_err(|e| hook_error(e, realm, plugin, ErrorCode::InvalidScope))?;
    Ok(Scopes::from_tokens(granted.iter().map(String::as_str)).unwrap_or_default())
}

/// Runs the realm's token policy: the claims it adds, as the host checked
/// them.
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
    app.host
        .run_token(plugin, &realm.plugin_limits, &realm.name, client, grant.as_str(), &claims_json)
        .map_err(|e| hook_error(e, realm, plugin, ErrorCode::AccessDenied))
}
