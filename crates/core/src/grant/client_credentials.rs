//! The client credentials grant (RFC 6749 §4.4): a client gets a token for
//! itself, within the scopes it registered.

use crate::client::{Client, GrantType};
use crate::error::OAuthError;
use crate::grant::{narrow_scopes, require_grant};
use crate::scope::Scopes;
use crate::token::TokenRequest;

/// Decides a client credentials request. Without `scope` the client gets
/// every scope it registered. No refresh token is issued (RFC 6749 §4.4.3).
pub fn decide(client: &Client, requested: Option<Scopes>) -> Result<TokenRequest, OAuthError> {
    require_grant(client, GrantType::ClientCredentials)?;
    let scopes = narrow_scopes(requested, &client.metadata.scopes(), "the client's registered scopes")?;
    Ok(TokenRequest {
        sub: client.client_id.clone(),
        client_id: client.client_id.clone(),
        scopes,
        act: None,
        audience: None,
        not_after: None,
    })
}
