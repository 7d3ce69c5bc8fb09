//! The refresh token grant (RFC 6749 §6) for the refresh tokens token
//! exchange issues. Refresh tokens rotate: each use replaces the token.

use crate::client::Client;
use crate::error::{ErrorCode, OAuthError};
use crate::grant::narrow_scopes;
use crate::resource::{self, ResourceRules};
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
    /// The audience the grant was given (the resources, or exchange
    /// targets, asked for), kept across refreshes: each refresh may ask
    /// for a token for fewer of them, and the next again for all (RFC 8707
    /// §2.2). Empty for the default audience, the client. Stored as
    /// `aud` is written, one string for one: the form older servers wrote
    /// and read.
    #[serde(default, with = "crate::token::one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    pub expires_at: i64,
    /// The `may_act` of a user's grant (from the authorize hook), kept
    /// for every token refreshed from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<crate::token::MayAct>,
    /// For a public client that used DPoP: the thumbprint of its key, with
    /// which every refresh must be proven (RFC 9449 §5), since nothing else
    /// authenticates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// When the user signed in, for a grant a user gave by signing in
    /// (the code grant); its tokens carry it as `auth_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
}

/// Decides a refresh request. A token issued to another client, or
/// expired, is `invalid_grant` (RFC 6749 §5.2). The scope may narrow but
/// never widen (RFC 6749 §6), and never exceeds what the client's
/// *current* registration allows, nor `subject_ceiling`, what the subject
/// may hold now (its registered scopes when it is a client of the realm):
/// a client or subject that narrowed its scopes (RFC 7592) narrows what is
/// refreshed, even without asking. The new access token expires no
/// later than the family does.
///
/// Its audience is the grant's, or the `resources` asked for, which must
/// be among the grant's (`invalid_target` otherwise: a refresh narrows a
/// token's audience, never widens it; RFC 8707 §2.2). An audience the
/// client may no longer ask for (neither the realm's `rules` nor its
/// `allowedAudiences` allow it now) ends the grant for that audience:
/// `invalid_grant`, unless the client asks for the others only.
///
/// Clients may refresh the tokens exchange gave them without registering
/// the `refresh_token` grant: only token exchange issues refresh tokens,
/// and the seed's agent registers no such grant.
pub fn decide(
    client: &Client,
    grant: &RefreshGrant,
    subject_ceiling: &Scopes,
    requested: Option<Scopes>,
    resources: &[String],
    rules: &ResourceRules,
    now: i64,
) -> Result<TokenRequest, OAuthError> {
    if grant.client_id != client.client_id || now >= grant.expires_at {
        return Err(OAuthError::new(ErrorCode::InvalidGrant, "the refresh token is invalid, expired or revoked"));
    }
    let audience = resource::narrow(resources, &grant.audience)?;
    // An exchange's audience may be a logical name (its `audience`
    // parameter), which only the client's allowedAudiences can allow.
    let still_allowed = |target: &String| {
        client.attributes.allowed_audiences.contains(target)
            || (resource::check_resource(target).is_ok() && rules.allows(target))
    };
    if !audience.iter().all(still_allowed) {
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
        audience,
        not_after: Some(grant.expires_at),
        may_act: grant.may_act.clone(),
        cnf: None,
        auth_time: grant.auth_time,
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
            audience: vec![],
            expires_at: 1000,
            may_act: None,
            jkt: None,
            auth_time: None,
        }
    }

    /// A refresh asking for no resource, in a realm that allows none.
    fn refresh(
        client: &Client,
        grant: &RefreshGrant,
        subject_ceiling: &Scopes,
        requested: Option<Scopes>,
        now: i64,
    ) -> Result<TokenRequest, OAuthError> {
        decide(client, grant, subject_ceiling, requested, &[], &ResourceRules::default(), now)
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn refresh_grants_no_more_than_the_current_registration() {
        let all = Scopes::parse("read write admin").unwrap();
        let narrowed = client("read");
        let out = refresh(&narrowed, &grant("read write"), &all, None, 10).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
        let err =
            refresh(&narrowed, &grant("read write"), &all, Some(Scopes::parse("write").unwrap()), 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
        let err = refresh(&client("admin"), &grant("read write"), &all, None, 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidScope);
    }

    #[test]
    fn refreshed_tokens_end_with_their_family() {
        let all = Scopes::parse("read write").unwrap();
        let out = refresh(&client("read write"), &grant("read"), &all, None, 10).unwrap();
        assert_eq!(out.not_after, Some(1000));
        let err = refresh(&client("read write"), &grant("read"), &all, None, 1000).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidGrant);
    }

    #[test]
    fn refresh_follows_what_the_subject_and_the_client_may_hold_now() {
        // The subject narrowed its own registration to `read`.
        let out =
            refresh(&client("read write"), &grant("read write"), &Scopes::parse("read").unwrap(), None, 10).unwrap();
        assert_eq!(out.scopes.to_string(), "read");
        // The client may no longer ask for the grant's audience.
        let mut targeted = grant("read");
        targeted.audience = strings(&["https://api.example"]);
        let all = Scopes::parse("read").unwrap();
        let err = refresh(&client("read"), &targeted, &all, None, 10).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidGrant);
        let mut allowed = client("read");
        allowed.attributes.allowed_audiences = strings(&["https://api.example"]);
        assert!(refresh(&allowed, &targeted, &all, None, 10).is_ok());
        // Nor when the realm allows it instead.
        let realm = ResourceRules::parse(&["https://api.example"]).unwrap();
        assert!(decide(&client("read"), &targeted, &all, None, &[], &realm, 10).is_ok());
    }

    #[test]
    fn a_refresh_may_narrow_the_grants_resources_but_never_widen_them() {
        let realm =
            ResourceRules::parse(&["https://a.example/*", "https://b.example/api", "https://c.example/api"]).unwrap();
        let all = Scopes::parse("read").unwrap();
        let mut targeted = grant("read");
        targeted.audience = strings(&["https://a.example/mcp", "https://b.example/api"]);
        let asking =
            |resources: &[&str]| decide(&client("read"), &targeted, &all, None, &strings(resources), &realm, 10);
        assert_eq!(asking(&[]).unwrap().audience, targeted.audience, "without resource: the grant's audience");
        assert_eq!(asking(&["https://b.example/api"]).unwrap().audience, strings(&["https://b.example/api"]));
        // The realm allows c.example, but the grant was not given it.
        for wider in [&["https://c.example/api"][..], &["https://a.example/mcp", "https://c.example/api"]] {
            assert_eq!(asking(wider).unwrap_err().code, ErrorCode::InvalidTarget, "{wider:?}");
        }
        assert_eq!(asking(&["/relative"]).unwrap_err().code, ErrorCode::InvalidTarget);
        // A grant of the default audience (the client) names no resource.
        let plain = grant("read");
        let err = decide(&client("read"), &plain, &all, None, &strings(&["https://a.example/mcp"]), &realm, 10);
        assert_eq!(err.unwrap_err().code, ErrorCode::InvalidTarget);
        // A resource no longer allowed may be left out of the request.
        let narrower = ResourceRules::parse(&["https://b.example/api"]).unwrap();
        let asking =
            |resources: &[&str]| decide(&client("read"), &targeted, &all, None, &strings(resources), &narrower, 10);
        assert_eq!(asking(&[]).unwrap_err().code, ErrorCode::InvalidGrant);
        assert_eq!(asking(&["https://b.example/api"]).unwrap().audience, strings(&["https://b.example/api"]));
    }

    #[test]
    fn a_grant_keeps_its_audience_in_the_form_earlier_servers_wrote() {
        let stored = r#"{"client_id":"c1","sub":"c1","scope":"read","audience":"https://api.example","expires_at":9}"#;
        let grant: RefreshGrant = serde_json::from_str(stored).unwrap();
        assert_eq!(grant.audience, strings(&["https://api.example"]));
        assert_eq!(serde_json::to_string(&grant).unwrap(), stored, "one audience is still written as a string");
        let mut many = grant.clone();
        many.audience.push("https://b.example".into());
        let json = serde_json::to_value(&many).unwrap();
        assert_eq!(json["audience"], serde_json::json!(["https://api.example", "https://b.example"]));
        assert_eq!(serde_json::from_value::<RefreshGrant>(json).unwrap(), many);
        let without: RefreshGrant =
            serde_json::from_str(r#"{"client_id":"c1","sub":"c1","scope":"read","expires_at":9}"#).unwrap();
        assert!(without.audience.is_empty());
        assert!(!serde_json::to_string(&without).unwrap().contains("audience"));
    }
}
