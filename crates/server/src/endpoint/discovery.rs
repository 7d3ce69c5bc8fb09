//! Discovery: `.well-known/openid-configuration` (RFC 8414 metadata at
//! the OpenID path PingAM serves it on).
//!
//! This server issues no ID tokens and has no authorization endpoint, so
//! OpenID Connect's fields for those are left out rather than faked.

use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use agentauth_core::{AuthMethod, GrantType};
use agentauth_jose::Algorithm;
use serde_json::json;

use crate::http::Reply;
use agentauth_service::RealmRuntime;

pub fn openid_configuration(realm: &RealmRuntime) -> Reply {
    // Every endpoint that authenticates clients takes the same methods.
    let auth_methods: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    // RFC 8414 §2: required with private_key_jwt; client assertions may be
    // signed with any algorithm a registered key can have.
    let assertion_algs: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    let mut doc = json!({
        "issuer": realm.issuer,
        "token_endpoint": realm.endpoint("access_token"),
        "jwks_uri": realm.endpoint("connect/jwk_uri"),
        "introspection_endpoint": realm.endpoint("introspect"),
        "revocation_endpoint": realm.endpoint("token/revoke"),
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
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
