//! Discovery: `.well-known/openid-configuration` (RFC 8414 metadata at
//! the OpenID path PingAM serves it on).
//!
//! This server issues no ID tokens and has no authorization endpoint, so
//! OpenID Connect's fields for those are left out rather than faked.

use agentauth_core::GrantType;
use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use serde_json::json;

use crate::http::Reply;
use crate::realm::RealmRuntime;

pub fn openid_configuration(realm: &RealmRuntime) -> Reply {
    let mut doc = json!({
        "issuer": realm.issuer,
        "token_endpoint": realm.endpoint("access_token"),
        "jwks_uri": realm.endpoint("connect/jwk_uri"),
        "introspection_endpoint": realm.endpoint("introspect"),
        "revocation_endpoint": realm.endpoint("token/revoke"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": [
            GrantType::ClientCredentials.as_str(),
            GrantType::TokenExchange.as_str(),
            GrantType::RefreshToken.as_str(),
        ],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
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
