//! The authorization code grant (RFC 6749 §4.1.3, as OAuth 2.1 profiles
//! it): a client trades the code a user's authorization gave it, with the
//! PKCE verifier (RFC 7636), for the user's tokens.
//!
//! | the token request | answer |
//! |---|---|
//! | the code was issued to another client | `invalid_grant` |
//! | `redirect_uri` sent and not the one the code was issued for | `invalid_grant` |
//! | `redirect_uri` left out, the code's not the client's only one | `invalid_grant` |
//! | `code_verifier` missing or malformed | `invalid_request` |
//! | `code_verifier` does not hash to the code's challenge | `invalid_grant` |
//! | otherwise | the user's token: `sub` the user, the code's scopes, resources and `may_act` |
//!
//! Expiry and single use are the store's (see `ports::authorizations`).

use crate::authorize::is_code_verifier;
use crate::client::{Client, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::grant::require_grant;
use crate::ports::AuthorizationCode;
use crate::scope::Scopes;
use crate::token::{MayAct, TokenRequest};

/// Decides a code redemption. `challenge_of` hashes a verifier the way
/// S256 does (`BASE64URL(SHA-256(verifier))`): the hashing is the
/// caller's, as this crate has no cryptography.
pub fn decide(
    client: &Client,
    code: &AuthorizationCode,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    challenge_of: impl FnOnce(&str) -> String,
) -> Result<TokenRequest, OAuthError> {
    require_grant(client, GrantType::AuthorizationCode)?;
    let invalid = |why: &'static str| OAuthError::new(ErrorCode::InvalidGrant, why);
    if code.client_id != client.client_id {
        return Err(invalid("the code was not issued to this client"));
    }
    match redirect_uri {
        Some(uri) if uri != code.redirect_uri => {
            return Err(invalid("redirect_uri is not the one the code was issued for"));
        }
        None if client.metadata.redirect_uris != [code.redirect_uri.as_str()] => {
            return Err(invalid("redirect_uri is required: the code was issued for one of several"));
        }
        _ => {}
    }
    let Some(verifier) = code_verifier else {
        return Err(OAuthError::invalid_request("code_verifier is required (PKCE)"));
    };
    if !is_code_verifier(verifier) {
        return Err(OAuthError::invalid_request("code_verifier must be 43 to 128 unreserved characters"));
    }
    if challenge_of(verifier) != code.code_challenge {
        return Err(invalid("code_verifier does not match the code's challenge"));
    }
    let may_act = match &code.may_act {
        None => None,
        Some(json) => Some(
            serde_json::from_str::<MayAct>(json)
                .map_err(|_| OAuthError::server_error("a stored authorization code cannot be read"))?,
        ),
    };
    Ok(TokenRequest {
        sub: code.subject.clone(),
        client_id: client.client_id.clone(),
        scopes: Scopes::parse(&code.scope).unwrap_or_default(),
        act: None,
        audience: code.resources.clone(),
        not_after: None,
        may_act,
        cnf: None,
        auth_time: Some(code.auth_time),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{AuthMethod, test_agent};

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn app() -> Client {
        let mut client = test_agent("app", "read write", &[GrantType::AuthorizationCode, GrantType::RefreshToken]);
        client.metadata.redirect_uris = vec!["https://app.example/cb".into(), "https://app.example/other".into()];
        client.metadata.token_endpoint_auth_method = AuthMethod::None;
        client
    }

    fn code() -> AuthorizationCode {
        AuthorizationCode {
            client_id: "app".into(),
            redirect_uri: "https://app.example/cb".into(),
            code_challenge: format!("hashed:{VERIFIER}"),
            subject: "usr_1".into(),
            scope: "read".into(),
            resources: vec!["https://mcp.example/".into()],
            may_act: Some(r#"{"client_id":"app","sub":"(age!app)"}"#.into()),
            dpop_jkt: None,
            auth_time: 1,
            created_at: 1,
            expires_at: 61,
        }
    }

    fn redeem(client: &Client, redirect_uri: Option<&str>, verifier: Option<&str>) -> Result<TokenRequest, OAuthError> {
        decide(client, &code(), redirect_uri, verifier, |v| format!("hashed:{v}"))
    }

    #[test]
    fn the_right_verifier_and_redirect_uri_give_the_users_token() {
        let request = redeem(&app(), Some("https://app.example/cb"), Some(VERIFIER)).unwrap();
        assert_eq!((request.sub.as_str(), request.client_id.as_str()), ("usr_1", "app"));
        assert_eq!(request.audience, ["https://mcp.example/"]);
        assert_eq!(request.may_act, Some(MayAct { client_id: "app".into(), sub: Some("(age!app)".into()) }));
    }

    #[test]
    fn a_wrong_verifier_client_or_redirect_uri_is_invalid_grant() {
        let other_verifier = "x".repeat(43);
        assert_eq!(
            redeem(&app(), Some("https://app.example/cb"), Some(&other_verifier)).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            redeem(&app(), Some("https://app.example/other"), Some(VERIFIER)).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(redeem(&app(), None, Some(VERIFIER)).unwrap_err().code, ErrorCode::InvalidGrant, "one of several");
        let mut thief = app();
        thief.client_id = "thief".into();
        assert_eq!(
            redeem(&thief, Some("https://app.example/cb"), Some(VERIFIER)).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
    }

    #[test]
    fn a_missing_or_malformed_verifier_is_invalid_request() {
        assert_eq!(redeem(&app(), Some("https://app.example/cb"), None).unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(
            redeem(&app(), Some("https://app.example/cb"), Some("short")).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn a_client_with_one_redirect_uri_may_leave_it_out() {
        let mut client = app();
        client.metadata.redirect_uris.truncate(1);
        assert!(redeem(&client, None, Some(VERIFIER)).is_ok());
    }
}
