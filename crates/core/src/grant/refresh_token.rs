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
/// never widen (RFC 6749 §6), and never exceeds what the client's
/// *current* registration allows, nor `subject_ceiling`, what the subject
/// may hold now (its registered scopes when it is a client of the realm):
/// a client or subject that narrowed its scopes (RFC 7592) narrows what is
/// refreshed, even without asking. An audience the client may no longer
/// ask for (its `allowedAudiences`) ends the grant. The new access token
/// expires no later than the family does.
///
/// Clients may refresh the tokens exchange gave them without registering
/// the `refresh_token` grant: only token exchange issues refresh tokens,
/// and the seed's agent registers no such grant.
pub fn decide(
    client: &Client,
    grant: &RefreshGrant,
    subject_ceiling: &Scopes,
    requested: Option<Scopes>,
    now: i64,
) -> Result<TokenRequest, OAuthError> {
    if grant.client_id != client.client_id || now >= grant.expires_at {
        return Err(OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is invalid, expired or revoked"));
    }
    if let Some(audience) = &grant.audience
        && !client.attributes.allowed_audiences.iter().any(|a| a == audience)
    {
        return Err(OAuthError::new(
            ErrorCode::InvalidGrant,
            "the client may no longer request tokens for this grant's audience",
        ));
    }
    let original = Scopes::parse(&grant.scope).unwrap_or_default();
    let ceiling = original.intersection(&client.metadata.scopes()).intersection(subject_ceiling);
    let scopes = narrow_scopes(requested, &ceiling, "the scope originally granted and still registered")?;
    if scopes.is_empty() && !original.is_empty() {
        return Err(OAuthError::invalid_scope("the client no longer registers any scope this grant carried"));
    }
    Ok(TokenRequest {
        sub: grant.sub.clone(),
        client_id: client.client_id.clone(),
        scopes,
        act: grant.act.clone(),
        audience: grant.audience.clone(),
        not_after: Some(grant.expires_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{GrantType, test_agent};

    fn client(scope: &str) -> Client {
        test_agent("c1", scope, &[GrantType::TokenExchange])
    }

    fn grant(scope: &str) -> RefreshGrant {
        RefreshGrant {
            client_id: "c1".into(),
            sub: "c1".into(),
            scope: scope.into(),
            act: None,
            audience: None,
            expires_at: 1000,
        }
    }

    #[test]
    fn refresh_grants_no_more_than_the_current_registration() {
        let all = Scopes::parse("read write admin").unwrap();
        let narrowed = client("read");
        let out = decide(&narrowed, &grant("read write"), &all, None, 10).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
        let err = decide(&narrowed, &grant("read write"), &all, Some(Scopes::parse("write").unwrap()), 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        let err = decide(&client("admin"), &grant("read write"), &all, None, 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn refreshed_tokens_end_with_their_family() {
        let all = Scopes::parse("read write").unwrap();
        let out = decide(&client("read write"), &grant("read"), &all, None, 10).unwrap();
        assert_eq!(out.not_after, Some(1000));
        let err = decide(&client("read write"), &grant("read"), &all, None, 1000).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidGrant);
    }

    #[test]
    fn refresh_follows_what_the_subject_and_the_client_may_hold_now() {
        // The subject narrowed its own registration to `read`.
        let out =
            decide(&client("read write"), &grant("read write"), &Scopes::parse("read").unwrap(), None, 10).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
        // The client may no longer ask for the grant's audience.
        let mut targeted = grant("read");
        targeted.audience = Some("https://api.example".into());
        let all = Scopes::parse("read").unwrap();
        let err = decide(&client("read"), &targeted, &all, None, 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidGrant);
        let mut allowed = client("read");
        allowed.attributes.allowed_audiences = vec!["https://api.example".into()];
        assert!(decide(&allowed, &targeted, &all, None, 10).is_ok());
    }
}
