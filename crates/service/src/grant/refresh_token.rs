//! The refresh token grant (RFC 6749 §6), rotating the refresh token on
//! every use: a rotated token that comes back has leaked, and ends its
//! family (everything issued from the same first refresh token).

use agentauth_core::grant::refresh_token::{self, RefreshGrant};
use agentauth_core::ports::{AuditEntry, Rotation, TokenKind};
use agentauth_core::{Client, ErrorCode, GrantType, OAuthError, Scopes};

use super::{TokenResponse, mint, refresh_row, token_exchange::subject_scope_ceiling};
use crate::dpop::Dpop;
use crate::realm::RealmRuntime;
use crate::secrets::{Purpose, new_secret};
use crate::{Service, internal};

pub(crate) fn issue(
    svc: &Service,
    realm: &RealmRuntime,
    client: &Client,
    presented: &str,
    scope: Option<Scopes>,
    resources: &[String],
    dpop: Option<&Dpop>,
) -> Result<TokenResponse, OAuthError> {
    let invalid = || OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is invalid, expired or revoked");
    let old_hash = svc.hasher.hash(Purpose::RefreshToken, presented);
    let now = svc.now();
    let row = svc.store.token_row(&old_hash, &realm.name, now).map_err(internal)?;
    let Some(row) = row.filter(|r| r.kind == TokenKind::Refresh) else {
        return Err(invalid());
    };
    if row.used {
        // A rotated token came back: it has leaked. End its family.
        tracing::warn!(realm = %realm.name, client_id = %row.client_id, "refresh token reused; revoking its family");
        let sub = serde_json::from_str::<RefreshGrant>(&row.grant).ok().map(|g| g.sub);
        let entry = reused(svc, &row.client_id, row.family.as_deref(), sub.as_deref());
        svc.store.revoke_token(&realm.name, &old_hash, row.family.as_deref(), Some(&entry)).map_err(internal)?;
        return Err(invalid());
    }
    let grant: RefreshGrant = match serde_json::from_str(&row.grant) {
        Ok(grant) => grant,
        Err(e) => {
            tracing::error!(realm = %realm.name, client_id = %row.client_id, "a stored refresh token cannot be read: {e}");
            return Err(invalid());
        }
    };
    // A public client's refresh token is its key's alone.
    if let Some(bound) = &grant.jkt
        && dpop.is_none_or(|d| &d.jkt != bound)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "this refresh token is bound to a DPoP key: send a proof signed with it",
        ));
    }
    // A subject that narrowed its registration narrows what is refreshed.
    let granted = Scopes::parse(&grant.scope).unwrap_or_default();
    let subject_ceiling = subject_scope_ceiling(svc, realm, &grant.sub, granted)?;
    let request =
        refresh_token::decide(client, &grant, &subject_ceiling, scope, resources, &realm.resource_rules, now)?;
    let minted = mint(svc, realm, client, request, GrantType::RefreshToken, dpop)?;

    let successor = new_secret();
    let successor_hash = svc.hasher.hash(Purpose::RefreshToken, &successor);
    // The successor keeps the family's expiry: rotation never extends it.
    // It keeps the grant's audience whole too, even when this token was
    // asked for fewer resources: the next refresh may ask for the others
    // (RFC 8707 §2.2).
    // Recorded by the store if the token turns out to have been used by a
    // racing request, which ends the family.
    let reuse = reused(svc, &client.client_id, row.family.as_deref(), Some(&grant.sub));
    let successor_grant = RefreshGrant { scope: minted.claims.scope.clone(), ..grant };
    let successor_json = serde_json::to_string(&successor_grant).map_err(internal)?;
    let family = row.family.as_deref();
    let mut stored = minted.stored(family);
    stored.push(refresh_row(&successor_hash, &client.client_id, family, &successor_json, successor_grant.expires_at));
    let rotation = svc.store.rotate_token(&realm.name, &old_hash, &stored, now, &reuse).map_err(internal)?;
    drop(stored);
    match rotation {
        Rotation::Rotated => {
            minted.count(realm, GrantType::RefreshToken, true);
            Ok(minted.response(Some(successor), false))
        }
        Rotation::Reused | Rotation::Unknown => Err(invalid()),
    }
}

/// The audit of a refresh token family ended because one of its tokens
/// came back after its rotation: the grant's client, family and subject,
/// which the realm's event receivers are told of.
fn reused(svc: &Service, client_id: &str, family: Option<&str>, sub: Option<&str>) -> AuditEntry {
    let detail = serde_json::json!({
        "client_id": client_id,
        "family": family,
        "sub": sub,
        "reason": "refresh-token-reused",
    });
    crate::admin::audit(svc.now(), "token-endpoint", REVOKE_FAMILY, None, Some(detail.to_string()))
}

/// The audit action of a token family revoked because it leaked.
pub(crate) const REVOKE_FAMILY: &str = "revoke-family";
