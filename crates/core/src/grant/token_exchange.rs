//! Token exchange (RFC 8693) where the acting party is the authenticated
//! client itself, as on the seed page: an agent trades its read token for a
//! broader one, which its subject token's `may_act` claim allows; or the
//! subject of an actor token (delegation).

use crate::client::{Client, GrantType, MAX_AUDIENCE};
use crate::error::OAuthError;
use crate::grant::{narrow_scopes, require_grant};
use crate::resource::{self, ResourceRules};
use crate::scope::Scopes;
use crate::token::{AccessTokenClaims, Act, TokenRequest};

/// The only `subject_token_type` accepted so far.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The realm's rules for token exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExchangeRules {
    /// Whether a `may_act` without `sub` lets the client impersonate the
    /// subject (a token with no new `act`). Off, the client is named in
    /// `act` like any other actor.
    pub impersonation: bool,
    /// The most actors an issued token's `act` chain may name.
    pub max_delegation_depth: usize,
}

impl Default for ExchangeRules {
    fn default() -> Self {
        Self { impersonation: false, max_delegation_depth: 8 }
    }
}

/// Decides an exchange for `client` of a subject token, and of an actor
/// token if one was sent, both already verified (signature, issuer, type,
/// expiry, revocation) by the caller.
///
/// The subject token's `may_act.client_id` must be the authenticated
/// client. Then, by what `may_act.sub` and the request hold:
///
/// | `may_act.sub` | actor token | outcome |
/// |---|---|---|
/// | present | sent | delegation: `sub` must be the actor token's `sub`, and the actor token the client's own (not itself delegated); `act` names that actor and the client |
/// | present | none | the client acts as itself, as on the seed page: `sub` must be its acting subject (`(age!<client_id>)` for an AI agent); `act` names it |
/// | absent | none | `act` names the client; only where the realm allows impersonation (RFC 8693 §1.1) does the new token carry no new `act` |
/// | absent | sent | refused: `may_act` names no actor the token could be checked against |
///
/// An `act` already in the subject token nests inside the new one
/// (RFC 8693 §4.1); a chain longer than the realm's
/// `max_delegation_depth` is `invalid_request`.
///
/// Scope: the requested scopes (by default the subject token's) must lie
/// within both `subject_ceiling` — the subject's registered scopes when
/// the subject is a client of the realm, else the subject token's own —
/// and the client's registered scopes. An exchange may so broaden a
/// token up to what its subject could hold anyway (the seed page's agent
/// widening its own `read` to `read write`), but nobody named in `may_act`
/// can raise a subject's privileges beyond that.
///
/// The new token expires no later than the subject token, nor the actor
/// token.
pub fn decide(
    client: &Client,
    subject: &AccessTokenClaims,
    subject_ceiling: &Scopes,
    actor: Option<&AccessTokenClaims>,
    requested: Option<Scopes>,
    rules: &ExchangeRules,
) -> Result<TokenRequest, OAuthError> {
    require_grant(client, GrantType::TokenExchange)?;
    let Some(may_act) = &subject.may_act else {
        return Err(OAuthError::invalid_request("the subject token has no may_act claim, so no one may act on it"));
    };
    if may_act.client_id != client.client_id {
        return Err(OAuthError::invalid_request("the subject token's may_act does not name this client"));
    }
    if let Some(actor) = actor {
        // The actor token names who acts, and it must be the exchanging
        // client's own: otherwise a client named in may_act could present
        // any token of that subject (the subject token itself, say) and
        // vanish from the `act` chain it creates.
        if actor.client_id != client.client_id {
            return Err(OAuthError::invalid_request("the actor token was not issued to this client"));
        }
        if actor.act.is_some() {
            return Err(OAuthError::invalid_request("an actor token that is itself delegated cannot act here"));
        }
    }
    let earlier = subject.act.clone().map(Box::new);
    let as_itself =
        || Act { sub: client.actor_subject(), client_id: Some(client.client_id.clone()), act: earlier.clone() };
    let act = match (&may_act.sub, actor) {
        (Some(sub), Some(actor)) if *sub == actor.sub => {
            Some(Act { sub: actor.sub.clone(), client_id: Some(actor.client_id.clone()), act: earlier })
        }
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "the subject token's may_act does not name the actor token's subject",
            ));
        }
        (Some(sub), None) if *sub == client.actor_subject() => Some(as_itself()),
        (Some(_), None) => {
            return Err(OAuthError::invalid_request("the subject token's may_act does not name this actor"));
        }
        (None, None) if rules.impersonation => subject.act.clone(),
        (None, None) => Some(as_itself()),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_request(
                "the subject token's may_act names no subject, so no actor token can act on it",
            ));
        }
    };
    if let Some(depth) = act.as_ref().map(Act::depth)
        && depth > rules.max_delegation_depth
    {
        return Err(OAuthError::invalid_request(format!(
            "the delegation chain would name {depth} actors; this realm allows at most {}",
            rules.max_delegation_depth
        )));
    }
    let ceiling = subject_ceiling.intersection(&client.metadata.scopes());
    let requested = requested.or_else(|| Some(subject.scopes()));
    let scopes = narrow_scopes(requested, &ceiling, "what both the subject and the client may hold")?;
    let not_after = actor.map_or(subject.exp, |actor| actor.exp.min(subject.exp));
    Ok(TokenRequest {
        sub: subject.sub.clone(),
        client_id: client.client_id.clone(),
        scopes,
        act,
        audience: Vec::new(),
        not_after: Some(not_after),
        may_act: None,
        cnf: None,
        auth_time: None,
    })
}

/// The audience an exchange asks for (RFC 8693 §2.1): its `resource`
/// values (RFC 8707), each an absolute URI allowed as for any grant (see
/// [`resource::resolve`]), then its `audience` values, logical names each
/// allowed by the client's `allowedAudiences` (or, when it is a URI, by
/// a rule of the realm as a resource would be); `invalid_target`
/// otherwise. Both parameters may repeat, and together name at most
/// [`resource::MAX_RESOURCES`] targets. Empty when none is asked for: the
/// token's audience is then the client, as for any grant.
pub fn targets(
    client: &Client,
    rules: &ResourceRules,
    audiences: &[String],
    resources: &[String],
) -> Result<Vec<String>, OAuthError> {
    if audiences.len().saturating_add(resources.len()) > resource::MAX_RESOURCES {
        return Err(resource::invalid_target(format!(
            "an exchange may name at most {} audiences and resources together",
            resource::MAX_RESOURCES
        )));
    }
    let mut wanted = resource::resolve(resources, rules, client)?;
    for audience in audiences {
        let well_formed =
            !audience.is_empty() && audience.len() <= MAX_AUDIENCE && !audience.chars().any(char::is_control);
        if !well_formed {
            return Err(resource::invalid_target(format!(
                "an audience must be 1 to {MAX_AUDIENCE} bytes without control characters"
            )));
        }
        let allowed = client.attributes.allowed_audiences.contains(audience)
            || (resource::check_resource(audience).is_ok() && rules.allows(audience));
        if !allowed {
            let shown: String = audience.chars().take(64).collect();
            return Err(resource::invalid_target(format!("the client may not request tokens for {shown:?}")));
        }
        if !wanted.contains(audience) {
            wanted.push(audience.clone());
        }
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::test_agent;
    use crate::error::ErrorCode;
    use crate::token::MayAct;

    fn agent_with(id: &str, scope: &str) -> Client {
        test_agent(id, scope, &[GrantType::ClientCredentials, GrantType::TokenExchange])
    }

    fn agent(id: &str) -> Client {
        agent_with(id, "read write")
    }

    fn read_token_for(id: &str, may_act: Option<MayAct>) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://as.example/am/oauth2/realms/root/realms/alpha".into(),
            sub: id.into(),
            aud: id.into(),
            more_aud: vec![],
            client_id: id.into(),
            scope: "read".into(),
            iat: 0,
            exp: 3600,
            jti: "j".into(),
            may_act,
            act: None,
            custom: serde_json::Map::new(),
            cnf: None,
            auth_time: None,
        }
    }

    fn seed_may_act(id: &str) -> Option<MayAct> {
        Some(MayAct { client_id: id.into(), sub: Some(format!("(age!{id})")) })
    }

    fn scopes(s: &str) -> Scopes {
        Scopes::parse(s).unwrap()
    }

    /// The seed case: the subject is the agent itself, so its registered
    /// scopes are the subject's ceiling.
    fn exchange(
        client: &Client,
        subject: &AccessTokenClaims,
        actor: Option<&AccessTokenClaims>,
        requested: Option<Scopes>,
    ) -> Result<TokenRequest, OAuthError> {
        decide(client, subject, &client.metadata.scopes(), actor, requested, &ExchangeRules::default())
    }

    #[test]
    fn agent_exchanges_its_read_token_for_read_write() {
        let out = exchange(&agent("a1"), &read_token_for("a1", seed_may_act("a1")), None, Some(scopes("read write")))
            .unwrap();
        assert_eq!(out.scopes.to_string(), "read write");
        assert_eq!(out.sub, "a1");
        let act = out.act.unwrap();
        assert_eq!(act.sub, "(age!a1)");
        assert_eq!(act.act, None);
    }

    #[test]
    fn a_client_named_in_may_act_cannot_raise_the_subjects_privileges() {
        // a1 registered only `read`; a2, named in its token's may_act,
        // registered `read admin`.
        let subject = read_token_for("a1", Some(MayAct { client_id: "a2".into(), sub: Some("(age!a2)".into()) }));
        let (subject_ceiling, exchanger) = (scopes("read"), agent_with("a2", "read admin"));
        let rules = ExchangeRules::default();
        let err = decide(&exchanger, &subject, &subject_ceiling, None, Some(scopes("read admin")), &rules).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        let err = decide(&exchanger, &subject, &subject_ceiling, None, Some(scopes("admin")), &rules).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        let out = decide(&exchanger, &subject, &subject_ceiling, None, Some(scopes("read")), &rules).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
    }

    #[test]
    fn exchange_may_not_exceed_the_clients_registered_scopes_either() {
        // The subject could hold `read write admin`; the client only `read write`.
        let subject = read_token_for("a1", Some(MayAct { client_id: "a2".into(), sub: Some("(age!a2)".into()) }));
        let err = decide(
            &agent("a2"),
            &subject,
            &scopes("read write admin"),
            None,
            Some(scopes("admin")),
            &ExchangeRules::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn exchange_rejects_subject_token_naming_another_client() {
        let err = exchange(&agent("a2"), &read_token_for("a1", seed_may_act("a1")), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn exchange_rejects_may_act_with_another_subject() {
        let may_act = Some(MayAct { client_id: "a1".into(), sub: Some("alice".into()) });
        let err = exchange(&agent("a1"), &read_token_for("a1", may_act), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn exchange_without_may_act_is_refused() {
        let err = exchange(&agent("a1"), &read_token_for("a1", None), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn exchange_may_not_exceed_registered_scopes() {
        let err = exchange(&agent("a1"), &read_token_for("a1", seed_may_act("a1")), None, Some(scopes("read admin")))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn exchange_nests_an_existing_actor() {
        let mut subject = read_token_for("a1", seed_may_act("a1"));
        subject.act = Some(Act { sub: "earlier".into(), client_id: None, act: None });
        let out = exchange(&agent("a1"), &subject, None, None).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
        assert_eq!(out.act.unwrap().act.unwrap().sub, "earlier");
    }

    #[test]
    fn delegation_names_the_actor_token_subject() {
        let may_act = Some(MayAct { client_id: "a1".into(), sub: Some("alice".into()) });
        let mut actor = read_token_for("a1", None);
        actor.sub = "alice".into();
        let out = exchange(&agent("a1"), &read_token_for("a1", may_act.clone()), Some(&actor), None).unwrap();
        let act = out.act.unwrap();
        assert_eq!((act.sub.as_str(), act.client_id.as_deref()), ("alice", Some("a1")));
        actor.sub = "mallory".into();
        let err = exchange(&agent("a1"), &read_token_for("a1", may_act), Some(&actor), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn an_actor_token_must_be_the_exchanging_clients_own_and_undelegated() {
        // a2 is named in a1's may_act with sub "a1": a2 presenting a1's own
        // token as the actor would name a1 as the actor, and a2 nowhere.
        let may_act = Some(MayAct { client_id: "a2".into(), sub: Some("a1".into()) });
        let subject = read_token_for("a1", may_act.clone());
        let err = exchange(&agent("a2"), &subject, Some(&subject), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let mut delegated = read_token_for("a2", None);
        delegated.sub = "a1".into();
        delegated.act = Some(Act { sub: "someone".into(), client_id: None, act: None });
        let err = exchange(&agent("a2"), &subject, Some(&delegated), None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn may_act_without_sub_names_the_client_unless_the_realm_allows_impersonation() {
        let may_act = Some(MayAct { client_id: "a1".into(), sub: None });
        let subject = read_token_for("a1", may_act.clone());
        let client = agent("a1");
        let ceiling = client.metadata.scopes();
        let out = decide(&client, &subject, &ceiling, None, None, &ExchangeRules::default()).unwrap();
        let act = out.act.expect("the exchanging client is named");
        assert_eq!((act.sub.as_str(), act.client_id.as_deref()), ("(age!a1)", Some("a1")));

        let impersonation = ExchangeRules { impersonation: true, ..ExchangeRules::default() };
        let out = decide(&client, &subject, &ceiling, None, None, &impersonation).unwrap();
        assert_eq!(out.act, None, "impersonation adds no actor");

        let actor = read_token_for("a2", None);
        let err = decide(&client, &subject, &ceiling, Some(&actor), None, &impersonation).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_delegation_chain_longer_than_the_realm_allows_is_refused() {
        let mut subject = read_token_for("a1", seed_may_act("a1"));
        for i in 0..8 {
            subject.act =
                Some(Act { sub: format!("actor-{i}"), client_id: None, act: subject.act.take().map(Box::new) });
        }
        // Eight earlier actors plus this one make nine.
        let err = exchange(&agent("a1"), &subject, None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        let client = agent("a1");
        let rules = ExchangeRules { max_delegation_depth: 9, ..ExchangeRules::default() };
        let out = decide(&client, &subject, &client.metadata.scopes(), None, None, &rules).unwrap();
        assert_eq!(out.act.unwrap().depth(), 9);
    }

    #[test]
    fn the_exchanged_token_expires_no_later_than_the_subject_or_actor_token() {
        let out = exchange(&agent("a1"), &read_token_for("a1", seed_may_act("a1")), None, None).unwrap();
        assert_eq!(out.not_after, Some(3600));
        let may_act = Some(MayAct { client_id: "a1".into(), sub: Some("alice".into()) });
        let mut actor = read_token_for("a1", None);
        (actor.sub, actor.exp) = ("alice".into(), 1200);
        let out = exchange(&agent("a1"), &read_token_for("a1", may_act), Some(&actor), None).unwrap();
        assert_eq!(out.not_after, Some(1200));
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn a_target_must_be_in_the_clients_allowlist_or_allowed_by_the_realm() {
        let mut client = agent("a1");
        let none = ResourceRules::default();
        assert_eq!(targets(&client, &none, &[], &[]), Ok(vec![]));
        let api = strings(&["https://api.example"]);
        assert_eq!(targets(&client, &none, &api, &[]).unwrap_err().code, ErrorCode::InvalidTarget);
        assert_eq!(targets(&client, &none, &[], &api).unwrap_err().code, ErrorCode::InvalidTarget);
        client.attributes.allowed_audiences = strings(&["https://api.example", "calendar"]);
        assert_eq!(targets(&client, &none, &[], &api), Ok(api.clone()));
        assert_eq!(targets(&client, &none, &strings(&["calendar"]), &[]), Ok(strings(&["calendar"])));
        let other = strings(&["https://other.example"]);
        assert_eq!(targets(&client, &none, &api, &other).unwrap_err().code, ErrorCode::InvalidTarget);
        // The realm's rules allow resources, and audiences that are URIs.
        let realm = ResourceRules::parse(&["https://other.example"]).unwrap();
        assert_eq!(targets(&client, &realm, &other, &[]), Ok(other.clone()));
        assert_eq!(
            targets(&agent("a2"), &realm, &strings(&["calendar"]), &[]).unwrap_err().code,
            ErrorCode::InvalidTarget
        );
    }

    #[test]
    fn an_exchange_may_name_several_targets_which_all_become_the_audience() {
        let mut client = agent("a1");
        client.attributes.allowed_audiences = strings(&["calendar"]);
        let realm = ResourceRules::parse(&["https://a.example/mcp", "https://b.example/*"]).unwrap();
        let resources = strings(&["https://a.example/mcp", "https://b.example/x"]);
        let audiences = strings(&["calendar", "https://a.example/mcp"]);
        assert_eq!(
            targets(&client, &realm, &audiences, &resources),
            Ok(strings(&["https://a.example/mcp", "https://b.example/x", "calendar"]))
        );
        // A resource must be an absolute URI without a fragment; an
        // audience need not be a URI, but is bounded.
        for bad in ["calendar", "https://a.example/mcp#x"] {
            assert_eq!(targets(&client, &realm, &[], &strings(&[bad])).unwrap_err().code, ErrorCode::InvalidTarget);
        }
        for bad in [String::new(), "a\nb".to_string()] {
            assert_eq!(targets(&client, &realm, &[bad], &[]).unwrap_err().code, ErrorCode::InvalidTarget);
        }
        let many = vec!["calendar".to_string(); resource::MAX_RESOURCES + 1];
        assert_eq!(targets(&client, &realm, &many, &[]).unwrap_err().code, ErrorCode::InvalidTarget);
    }

    #[test]
    fn exchange_needs_the_grant_registered() {
        let mut client = agent("a1");
        client.metadata.grant_types = vec![GrantType::ClientCredentials];
        let err = exchange(&client, &read_token_for("a1", seed_may_act("a1")), None, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnauthorizedClient);
    }
}
