//! The refresh token grant (RFC 6749 §6) for the refresh tokens token
//! exchange issues. Refresh tokens rotate: each use replaces the token.

use crate::client::Client;
use crate::error::{ErrorCode, OAuthError};
use crate::grant::narrow_scopes;
use crate::scope::Scopes;
use crate::token::{Act, TokenRequest};
use serde::{Deserialize, Serialize};

/// What the server remembers about a refresh token (stored by hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshGrant {
    pub client_id: String,
    pub sub: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Act>,
    /// The audience the exchange granted, kept across refreshes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    pub expires_at: i64,
}

/// Decides a refresh request. A token issued to another client, or
/// expired, is `invalid_grant` (RFC 6749 §5.2). The scope may narrow but
/// never widen (RFC 6749 §6).
///
/// Clients may refresh the tokens exchange gave them without registering
/// the `refresh_token` grant: only token exchange issues refresh tokens,
/// and the seed's agent registers no such grant.
pub fn decide(
    client: &Client,
    grant: &RefreshGrant,
    requested: Option<Scopes>,
    now: i64,
) -> Result<TokenRequest, OAuthError> {
    if grant.client_id != client.client_id || now >= grant.expires_at {
        return Err(OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is invalid, expired or revoked"));
    }
    let original = Scopes::parse(&grant.scope).unwrap_or_default();
    let scopes = narrow_scopes(requested, &original, "the scope originally granted")?;
    Ok(TokenRequest {
        sub: grant.sub.clone(),
        client_id: client.client_id.clone(),
        scopes,
        act: grant.act.clone(),
        audience: grant.audience.clone(),
    })
}
