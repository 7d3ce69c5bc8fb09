//! The JWT bearer grant (RFC 7523 §2.1), and the Identity Assertion JWT
//! Authorization Grant (ID-JAG, draft-ietf-oauth-identity-assertion-authz-grant)
//! that travels in it: a client trades an assertion from an issuer the
//! realm trusts for an access token naming the assertion's subject.
//!
//! The assertion itself (signature, issuer, audience, lifetime, replay)
//! is checked by the server before these rules run, and its subject is
//! mapped to a local one by the realm's policy. Then:
//!
//! | the request | answer |
//! |---|---|
//! | the client did not register the grant | `unauthorized_client` |
//! | an ID-JAG whose `client_id` is not the authenticated client | `invalid_grant` |
//! | `scope` asks for scopes outside the client's registered ones | `invalid_scope` |
//! | no scope left once limited to the assertion's `scope` | `invalid_scope` |
//! | `resource` asks for one outside the assertion's `resource` | `invalid_target` |
//! | a resource the realm and the client do not allow | `invalid_target` |
//! | otherwise | a token: `sub` the mapped subject, `client_id` the client |
//!
//! Scopes are the intersection of what is asked (by default the client's
//! registered scopes) and what the assertion carries, when it carries a
//! `scope` (the MCP enterprise-managed authorization profile). No refresh
//! token is issued: the client presents a new assertion instead.

use crate::client::{Client, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::grant::{narrow_scopes, require_grant};
use crate::resource::{self, ResourceRules};
use crate::scope::Scopes;
use crate::token::{MayAct, TokenRequest};

/// The header `typ` of an ID-JAG.
pub const ID_JAG_TYPE: &str = "oauth-id-jag+jwt";

/// What the server established about a verified assertion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assertion {
    /// The local subject the realm's policy mapped the assertion's to.
    pub subject: String,
    /// For an ID-JAG, its `client_id` claim: the client it was issued to.
    pub id_jag_client_id: Option<String>,
    /// The assertion's `scope` claim, when it has one.
    pub scope: Option<Scopes>,
    /// The assertion's `resource` claim (one or several), when it has one.
    pub resources: Vec<String>,
    /// Who may act for the subject, as the realm's policy decided.
    pub may_act: Option<MayAct>,
}

/// Decides a JWT bearer request by `client` for a verified `assertion`.
pub fn decide(
    client: &Client,
    assertion: Assertion,
    requested: Option<Scopes>,
    resources: &[String],
    rules: &ResourceRules,
) -> Result<TokenRequest, OAuthError> {
    require_grant(client, GrantType::JwtBearer)?;
    if let Some(named) = &assertion.id_jag_client_id
        && *named != client.client_id
    {
        return Err(OAuthError::new(ErrorCode::InvalidGrant, "the ID-JAG was issued to another client"));
    }
    let registered = client.metadata.scopes();
    let asked = narrow_scopes(requested, &registered, "the client's registered scopes")?;
    let scopes = match &assertion.scope {
        Some(carried) => asked.intersection(carried),
        None => asked,
    };
    if scopes.is_empty() && !registered.is_empty() {
        return Err(OAuthError::invalid_scope("none of the scopes asked for is in the assertion"));
    }
    let wanted = if assertion.resources.is_empty() {
        resources.to_vec()
    } else {
        resource::narrow(resources, &assertion.resources)?
    };
    let audience = resource::resolve(&wanted, rules, client)?;
    Ok(TokenRequest {
        sub: assertion.subject,
        client_id: client.client_id.clone(),
        scopes,
        act: None,
        audience,
        not_after: None,
        may_act: assertion.may_act,
        cnf: None,
        auth_time: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_agent;

    fn agent() -> Client {
        test_agent("agent-1", "calendar.read calendar.write", &[GrantType::JwtBearer])
    }

    fn id_jag(scope: Option<&str>, resources: &[&str]) -> Assertion {
        Assertion {
            subject: "alice".into(),
            id_jag_client_id: Some("agent-1".into()),
            scope: scope.map(|s| Scopes::parse(s).unwrap()),
            resources: resources.iter().map(|r| r.to_string()).collect(),
            may_act: None,
        }
    }

    fn rules() -> ResourceRules {
        ResourceRules::parse(&["https://mcp.example/mcp", "https://other.example/mcp"]).unwrap()
    }

    #[test]
    fn the_token_names_the_user_for_the_client_within_the_assertion() {
        let token =
            decide(&agent(), id_jag(Some("calendar.read"), &["https://mcp.example/mcp"]), None, &[], &rules()).unwrap();
        assert_eq!(token.sub, "alice");
        assert_eq!(token.client_id, "agent-1");
        assert_eq!(token.scopes.to_vec(), ["calendar.read"]);
        assert_eq!(token.audience, ["https://mcp.example/mcp"]);
    }

    #[test]
    fn scopes_are_the_intersection_of_the_request_and_the_assertion() {
        let asked = Scopes::parse("calendar.read calendar.write").ok();
        let token = decide(&agent(), id_jag(Some("calendar.write mail.read"), &[]), asked, &[], &rules()).unwrap();
        assert_eq!(token.scopes.to_vec(), ["calendar.write"]);
        let unregistered = Scopes::parse("mail.read").ok();
        let err = decide(&agent(), id_jag(None, &[]), unregistered, &[], &rules()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        let disjoint = decide(&agent(), id_jag(Some("mail.read"), &[]), None, &[], &rules()).unwrap_err();
        assert_eq!(disjoint.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn an_id_jag_for_another_client_or_another_resource_is_refused() {
        let mut stolen = id_jag(None, &[]);
        stolen.id_jag_client_id = Some("agent-2".into());
        assert_eq!(decide(&agent(), stolen, None, &[], &rules()).unwrap_err().code, ErrorCode::InvalidGrant);
        let widened = ["https://other.example/mcp".to_string()];
        let err = decide(&agent(), id_jag(None, &["https://mcp.example/mcp"]), None, &widened, &rules()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTarget);
        let foreign = id_jag(None, &["https://evil.example/mcp"]);
        assert_eq!(decide(&agent(), foreign, None, &[], &rules()).unwrap_err().code, ErrorCode::InvalidTarget);
    }

    #[test]
    fn a_client_not_registered_for_the_grant_is_unauthorized() {
        let other = test_agent("agent-1", "calendar.read", &[GrantType::ClientCredentials]);
        let err = decide(&other, id_jag(None, &[]), None, &[], &rules()).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnauthorizedClient);
    }
}
