//! The authorization code grant (RFC 6749 §4.1.3 with PKCE): the code a
//! user's authorization gave the client, traded once for the user's
//! access token and a refresh token that rotates on every use.
//!
//! The code is checked (client, redirect URI, verifier) before it is
//! spent, so a wrong guess spends nothing; then one commit marks it used
//! and records what it issued. A code presented again finds that record,
//! and what it issued is revoked (RFC 6749 §4.1.2): whoever holds a copy
//! of a code gets nothing, and makes the first holder's tokens stop too.

use agentauth_core::grant::authorization_code;
use agentauth_core::grant::refresh_token::RefreshGrant;
use agentauth_core::ports::{CodeIssue, Redemption};
use agentauth_core::{Client, ErrorCode, GrantType, OAuthError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{TokenResponse, mint, refresh_row};
use crate::dpop::Dpop;
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_jti, new_secret};
use crate::{Service, internal};

/// The parameters of a code redemption.
#[derive(Debug)]
pub struct CodeRequest {
    pub code: super::Secret,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<super::Secret>,
}

/// PKCE's S256: `BASE64URL(SHA-256(verifier))`, unpadded.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

pub(crate) fn issue(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    request: &CodeRequest,
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, OAuthError> {
    let invalid = || OAuthError::new(ErrorCode::InvalidGrant, "the code is invalid, expired or already used");
    let hash = svc.hasher.hash(Purpose::AuthorizationCode, request.code.as_str());
    let now = svc.now();
    let Some(code) = svc.store.code(&realm.name, &hash, now).map_err(internal)? else {
        // Spent, expired or never issued: if it was spent, what it issued
        // is revoked now.
        let nothing = CodeIssue { family: String::new(), jti: String::new(), jti_expires_at: 0, family_expires_at: 0 };
        if let Redemption::Reused(issued) =
            svc.store.redeem_code(&realm.name, &hash, &nothing, now).map_err(internal)?
        {
            revoke(svc, realm, &issued)?;
        }
        return Err(invalid());
    };
    let decided = authorization_code::decide(
        client,
        &code,
        request.redirect_uri.as_deref(),
        request.code_verifier.as_ref().map(super::Secret::as_str),
        s256,
    )?;
    // RFC 9449 §10: a code bound to a key goes only with a proof of it,
    // checked after the client and verifier, before anything is spent.
    if let Some(bound) = &code.dpop_jkt
        && dpop.is_none_or(|d| &d.jkt != bound)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "the code is bound to a DPoP key (dpop_jkt): send a proof signed with it",
        ));
    }
    let minted = mint(svc, realm, client, decided, GrantType::AuthorizationCode, dpop)?;

    let family = new_jti();
    let refresh_token = new_secret();
    let refresh_hash = svc.hasher.hash(Purpose::RefreshToken, &refresh_token);
    let grant = RefreshGrant {
        client_id: client.client_id.clone(),
        sub: minted.claims.sub.clone(),
        scope: minted.claims.scope.clone(),
        act: None,
        audience: code.resources.clone(),
        expires_at: minted.claims.iat.saturating_add(realm.settings.refresh_token_lifetime),
        may_act: minted.claims.may_act.clone(),
        jkt: super::refresh_binding(client, dpop),
        auth_time: minted.claims.auth_time,
    };
    let grant_json = serde_json::to_string(&grant).map_err(internal)?;
    let issued = CodeIssue {
        family: family.clone(),
        jti: minted.claims.jti.clone(),
        jti_expires_at: minted.claims.exp,
        family_expires_at: grant.expires_at,
    };
    match svc.store.redeem_code(&realm.name, &hash, &issued, now).map_err(internal)? {
        Redemption::Redeemed => {}
        Redemption::Reused(first) => {
            // Another redemption of the same code won the race: the code
            // has two holders, so neither keeps anything.
            tracing::warn!(realm = %realm.name, client_id = %client.client_id, "authorization code reused; revoking what it issued");
            revoke(svc, realm, &first)?;
            return Err(invalid());
        }
        Redemption::Unknown => return Err(invalid()),
    }
    let mut stored = minted.stored(Some(&family));
    stored.push(refresh_row(&refresh_hash, &client.client_id, Some(&family), &grant_json, grant.expires_at));
    super::persist(svc, realm, &stored)?;
    drop(stored);
    minted.count(realm, GrantType::AuthorizationCode, true);
    Ok(minted.response(Some(refresh_token), false))
}

/// Revokes what a code's redemption issued: its refresh family (with
/// every token exchanged from it) and its access token.
fn revoke(svc: &Service, realm: &RealmRuntime, issued: &CodeIssue) -> Result<(), OAuthError> {
    if issued.family.is_empty() {
        return Ok(());
    }
    tracing::warn!(realm = %realm.name, "an authorization code came back; revoking what it issued");
    svc.store.revoke_token(&realm.name, &[], Some(&issued.family), None).map_err(internal)?;
    svc.store.revoke_jwt(&realm.name, &issued.jti, issued.jti_expires_at).map_err(internal)
}
