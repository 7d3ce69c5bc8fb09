//! The client credentials grant (RFC 6749 §4.4): a client gets a token for
//! itself, within the scopes it registered, for the resources it may name.

use crate::client::{Client, GrantType};
use crate::error::OAuthError;
use crate::grant::{narrow_scopes, require_grant};
use crate::resource::{self, ResourceRules};
use crate::scope::Scopes;
use crate::token::TokenRequest;

/// Decides a client credentials request. Without `scope` the client gets
/// every scope it registered. The token's audience is the `resources`
/// asked for (RFC 8707), each allowed by the realm's `rules` or the
/// client's `allowedAudiences` (see [`resource::resolve`]); without any,
/// the client itself. No refresh token is issued (RFC 6749 §4.4.3).
pub fn decide(
    client: &Client,
    requested: Option<Scopes>,
    resources: &[String],
    rules: &ResourceRules,
) -> Result<TokenRequest, OAuthError> {
    require_grant(client, GrantType::ClientCredentials)?;
    let scopes = narrow_scopes(requested, &client.metadata.scopes(), "the client's registered scopes")?;
    let audience = resource::resolve(resources, rules, client)?;
    Ok(TokenRequest {
        sub: client.client_id.clone(),
        client_id: client.client_id.clone(),
        scopes,
        act: None,
        audience,
        not_after: None,
        may_act: None,
        cnf: None,
        auth_time: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_agent;
    use crate::error::ErrorCode;

    fn agent() -> Client {
        test_agent("a1", "read write", &[GrantType::ClientCredentials])
    }

    #[test]
    fn the_token_is_for_the_resources_asked_for_or_else_the_client() {
        let rules = ResourceRules::parse(&["https://mcp.example/mcp", "https://api.example/*"]).unwrap();
        let none = decide(&agent(), None, &[], &rules).unwrap();
        assert_eq!(none.audience, Vec::<String>::new());
        let asked = vec!["https://mcp.example/mcp".to_string(), "https://api.example/calendar".to_string()];
        assert_eq!(decide(&agent(), None, &asked, &rules).unwrap().audience, asked);
    }

    #[test]
    fn a_resource_the_realm_does_not_allow_is_invalid_target() {
        let rules = ResourceRules::parse(&["https://mcp.example/mcp"]).unwrap();
        for foreign in ["https://evil.example/mcp", "mcp", "https://mcp.example/mcp#x"] {
            let err = decide(&agent(), None, &[foreign.to_string()], &rules).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidTarget, "{foreign}");
        }
    }
}
