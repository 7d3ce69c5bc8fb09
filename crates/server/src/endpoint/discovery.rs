//! Discovery: the realm's authorization server metadata (RFC 8414), at
//! `.well-known/openid-configuration` below the issuer (the OpenID path
//! PingAM serves it on) and at RFC 8414's own location, the issuer's path
//! inserted after `/.well-known/oauth-authorization-server` (what MCP
//! clients ask first). One document: its `issuer` is the realm's issuer,
//! as RFC 8414 §3.3 requires of both.
//!
//! It advertises only what this server does. It issues no ID tokens and
//! has no authorization endpoint, so OpenID Connect's fields for those,
//! and the authorization endpoint's, are left out rather than faked.

use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use agentauth_core::{AuthMethod, GrantType};
use agentauth_jose::Algorithm;
use serde_json::json;

use crate::http::Reply;
use agentauth_service::RealmRuntime;

pub fn metadata(realm: &RealmRuntime) -> Reply {
    // Every endpoint that authenticates clients takes the same methods.
    let auth_methods: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    // RFC 8414 §2: required with private_key_jwt; client assertions may be
    // signed with any algorithm a registered key can have.
    let assertion_algs: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    // TODO(issue 14, authorization code grant): with the authorization
    // endpoint, add `authorization_endpoint`, `code` to
    // `response_types_supported`, `code_challenge_methods_supported:
    // ["S256"]`, `authorization_response_iss_parameter_supported: true`
    // and the `authorization_code` grant (which `grant_types_supported`
    // takes from GrantType::ALL). MCP clients refuse metadata without
    // them; until the grant exists, advertising them would be false.
    let mut doc = json!({
        "issuer": realm.issuer,
        "token_endpoint": realm.endpoint("access_token"),
        "jwks_uri": realm.endpoint("connect/jwk_uri"),
        "introspection_endpoint": realm.endpoint("introspect"),
        "revocation_endpoint": realm.endpoint("token/revoke"),
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        // RFC 8414 §2 requires the member; with no authorization
        // endpoint, no response type is supported.
        "response_types_supported": [],
        "grant_types_supported": GrantType::ALL.map(GrantType::as_str),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "token_types_supported": [ACCESS_TOKEN_TYPE],
        "access_token_signing_alg_values_supported": [realm.signing_key.alg().as_str()],
    });
    if realm.settings.open_registration {
        doc["registration_endpoint"] = json!(realm.endpoint("register"));
        if realm.settings.ai_agents_enabled {
            doc["ai_agent_registration_endpoint"] = json!(realm.endpoint("aiagent/register"));
        }
    }
    Reply::public_json(&doc)
}
