//! The rules of each grant the token endpoint serves. Each function takes
//! facts the server has established (an authenticated client, a verified
//! token) and returns what may be issued, or the OAuth error to answer.

pub mod authorization_code;
pub mod client_credentials;
pub mod jwt_bearer;
pub mod refresh_token;
pub mod token_exchange;

use crate::client::{Client, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::scope::Scopes;

/// RFC 6749 §5.2 `unauthorized_client` unless the client registered `grant`.
pub fn require_grant(client: &Client, grant: GrantType) -> Result<(), OAuthError> {
    if client.metadata.allows_grant(grant) {
        Ok(())
    } else {
        Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("the client is not registered for the {} grant", grant.as_str()),
        ))
    }
}

/// The scopes to issue: those requested, which must lie within `ceiling`,
/// or all of `ceiling` when none are requested.
pub fn narrow_scopes(requested: Option<Scopes>, ceiling: &Scopes, what: &str) -> Result<Scopes, OAuthError> {
    match requested {
        None => Ok(ceiling.clone()),
        Some(asked) if asked.is_subset_of(ceiling) => Ok(asked),
        Some(asked) => Err(OAuthError::invalid_scope(format!(
            "scope {} is not within {what}",
            asked.missing_from(ceiling).join(" ")
        ))),
    }
}
