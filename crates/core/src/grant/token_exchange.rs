//! Token exchange (RFC 8693) where the acting party is the authenticated
//! client itself, as on the seed page: an agent trades its read token for a
//! broader one, which its subject token's `may_act` claim allows.

use crate::client::{Client, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::grant::{narrow_scopes, require_grant};
use crate::scope::Scopes;
use crate::token::{AccessTokenClaims, Act, TokenRequest};

/// The only `subject_token_type` accepted so far.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Decides an exchange for `client` of a subject token, and of an actor
/// token if one was sent, both already verified (signature, issuer, type,
/// expiry, revocation) by the caller.
///
/// The subject token's `may_act.client_id` must be the authenticated
/// client. Then, by what `may_act.sub` and the request hold:
///
/// | `may_act.sub` | actor token | outcome |
/// |---|---|---|
/// | present | sent | delegation: `sub` must be the actor token's `sub`; `act` names that actor |
/// | present | none | the client acts as itself, as on the seed page: `sub` must be its acting subject (`(age!<client_id>)` for an AI agent); `act` names it |
/// | absent | none | impersonation (RFC 8693 §1.1): the new token carries no new `act` |
/// | absent | sent | refused: `may_act` names no actor the token could be checked against |
///
/// An `act` already in the subject token nests inside the new one
/// (RFC 8693 §4.1). The scopes requested (by default the subject token's)
/// must be within the client's registered scopes: an exchange may broaden
/// the subject token's scope, which is its purpose on the seed page, but
/// never beyond what the client registered.
pub fn decide(
    client: &Client,
    subject: &AccessTokenClaims,
    actor: Option<&AccessTokenClaims>,
    requested: Option<Scopes>,
) -> Result<TokenRequest, OAuthError> {
    require_grant(client, GrantType::TokenExchange)?;
    let Some(may_act) = &subject.may_act else {
        return Err(OAuthError::invalid_request("the subject token has no may_act claim, so no one may act on it"));
    };
    if may_act.client_id != client.client_id {
        return Err(OAuthError::invalid_request("the subject token's may_act does not name this client"));
    }
    let earlier = subject.act.clone().map(Box::new);
    let act = match (&may_act.sub, actor) {
        (Some(sub), Some(actor)) if *sub == actor.sub => {
            Some(Act { sub: actor.sub.clone(), client_id: Some(actor.client_id.clone()), act: earlier })
        }
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "the subject token's may_act does not name the actor token's subject",
            ));
        }
        (Some(sub), None) if *sub == client.actor_subject() => {
            Some(Act { sub: sub.clone(), client_id: Some(client.client_id.clone()), act: earlier })
        }
        (Some(_), None) => {
            return Err(OAuthError::invalid_request("the subject token's may_act does not name this actor"));
        }
        (None, None) => subject.act.clone(),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "the subject token's may_act names no subject, so no actor token can act on it",
            ));
        }
    };
    let requested = requested.or_else(|| Some(subject.scopes()));
    let scopes = narrow_scopes(requested, &client.metadata.scopes(), "the client's registered scopes")?;
    Ok(TokenRequest { sub: subject.sub.clone(), client_id: client.client_id.clone(), scopes, act, audience: None })
}

/// The audience an exchange asks for with `audience` or `resource`
/// (RFC 8693 §2.1, RFC 8707), allowed only when the client's
/// `allowedAudiences` attribute lists it; `invalid_target` otherwise. One
/// target per request: both parameters may be sent only when they agree.
pub fn target(client: &Client, audience: Option<&str>, resource: Option<&str>) -> Result<Option<String>, OAuthError> {
    let wanted = match (audience, resource) {
        (None, None) => return Ok(None),
        (Some(a), Some(r)) if a != r => {
            return Err(OAuthError::new(ErrorCode::InvalidTarget, "audience and resource name different targets"));
        }
        (Some(t), _) | (None, Some(t)) => t,
    };
    if client.attributes.allowed_audiences.iter().any(|a| a == wanted) {
        Ok(Some(wanted.to_string()))
    } else {
        Err(OAuthError::new(ErrorCode::InvalidTarget, format!("the client may not request tokens for {wanted:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{AuthMethod, ClientAttributes, ClientMetadata};
    use crate::token::MayAct;

    fn agent(id: &str) -> Client {
        Client {
            client_id: id.into(),
            metadata: ClientMetadata {
                redirect_uris: vec![],
                grant_types: vec![GrantType::ClientCredentials, GrantType::TokenExchange],
                response_types: vec![],
                client_name: None,
                scope: "read write".into(),
                token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                jwks: None,
            },
            attributes: ClientAttributes::default(),
            is_ai_agent: true,
            issued_at: 0,
        }
    }

    fn read_token_for(id: &str, may_act: Option<MayAct>) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://as.example/am/oauth2/realms/root/realms/alpha".into(),
            sub: id.into(),
            aud: id.into(),
            client_id: id.into(),
            scope: "read".into(),
            iat: 0,
            exp: 3600,
            jti: "j".into(),
            may_act,
            act: None,
            custom: serde_json::Map::new(),
        }
    }

    fn seed_may_act(id: &str) -> Option<MayAct> {
        Some(MayAct { client_id: id.into(), sub: Some(format!("(age!{id})")) })
    }

    #[test]
    fn agent_exchanges_its_read_token_for_read_write() {
        let out = decide(
            &agent("a1"),
            &read_token_for("a1", seed_may_act("a1")),
            None,
            Some(Scopes::parse("read write").unwrap()),
        )
        .unwrap();
        assert_eq!(out.scopes.to_string(), "read write");
        assert_eq!(out.sub, "a1");
        let act = out.act.unwrap();
        assert_eq!(act.sub, "(age!a1)");
        assert_eq!(act.act, None);
    }

    #[test]
    fn exchange_rejects_subject_token_naming_another_client() {
        let err = decide(&agent("a2"), &read_token_for("a1", seed_may_act("a1")), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn exchange_rejects_may_act_with_another_subject() {
        let may_act = Some(MayAct { client_id: "a1".into(), sub: Some("alice".into()) });
        let err = decide(&agent("a1"), &read_token_for("a1", may_act), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn exchange_without_may_act_is_refused() {
        let err = decide(&agent("a1"), &read_token_for("a1", None), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn exchange_may_not_exceed_registered_scopes() {
        let err = decide(
            &agent("a1"),
            &read_token_for("a1", seed_may_act("a1")),
            None,
            Some(Scopes::parse("read admin").unwrap()),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn exchange_nests_an_existing_actor() {
        let mut subject = read_token_for("a1", seed_may_act("a1"));
        subject.act = Some(Act { sub: "earlier".into(), client_id: None, act: None });
        let out = decide(&agent("a1"), &subject, None, None).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
        assert_eq!(out.act.unwrap().act.unwrap().sub, "earlier");
    }

    #[test]
    fn delegation_names_the_actor_token_subject() {
        let may_act = Some(MayAct { client_id: "a1".into(), sub: Some("alice".into()) });
        let mut actor = read_token_for("alice-agent", None);
        actor.sub = "alice".into();
        let out = decide(&agent("a1"), &read_token_for("a1", may_act.clone()), Some(&actor), None).unwrap();
        let act = out.act.unwrap();
        assert_eq!((act.sub.as_str(), act.client_id.as_deref()), ("alice", Some("alice-agent")));
        actor.sub = "mallory".into();
        let err = decide(&agent("a1"), &read_token_for("a1", may_act), Some(&actor), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn may_act_without_sub_allows_impersonation_but_no_actor_token() {
        let may_act = Some(MayAct { client_id: "a1".into(), sub: None });
        let out = decide(&agent("a1"), &read_token_for("a1", may_act.clone()), None, None).unwrap();
        assert_eq!(out.act, None, "impersonation adds no actor");
        let actor = read_token_for("a2", None);
        let err = decide(&agent("a1"), &read_token_for("a1", may_act), Some(&actor), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_target_must_be_in_the_clients_allowlist() {
        let mut client = agent("a1");
        assert_eq!(target(&client, None, None), Ok(None));
        assert_eq!(target(&client, Some("https://api.example"), None).unwrap_err().code, ErrorCode::InvalidTarget);
        client.attributes.allowed_audiences = vec!["https://api.example".into()];
        assert_eq!(target(&client, None, Some("https://api.example")), Ok(Some("https://api.example".into())));
        assert_eq!(
            target(&client, Some("https://api.example"), Some("https://other.example")).unwrap_err().code,
            ErrorCode::InvalidTarget
        );
    }

    #[test]
    fn exchange_needs_the_grant_registered() {
        let mut client = agent("a1");
        client.metadata.grant_types = vec![GrantType::ClientCredentials];
        let err = decide(&client, &read_token_for("a1", seed_may_act("a1")), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnauthorizedClient);
    }
}
