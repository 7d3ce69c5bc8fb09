//! Discovery: the realm's authorization server metadata (RFC 8414), at
//! `.well-known/openid-configuration` below the issuer (the OpenID path
//! PingAM serves it on) and at RFC 8414's own location, the issuer's path
//! inserted after `/.well-known/oauth-authorization-server` (what MCP
//! clients ask first). One document: its `issuer` is the realm's issuer,
//! as RFC 8414 §3.3 requires of both.
//!
//! It advertises only what this server does: the authorization code grant
//! with PKCE S256 only, `iss` in every authorization response (RFC 9207),
//! public clients at the token and revocation endpoints. It issues no ID
//! tokens, so OpenID Connect's fields for those are left out rather than
//! faked.

use agentauth_core::grant::token_exchange::ACCESS_TOKEN_TYPE;
use agentauth_core::{AuthMethod, GrantType};
use agentauth_jose::Algorithm;
use serde_json::json;

use crate::http::Reply;
use agentauth_service::RealmRuntime;

pub fn metadata(realm: &RealmRuntime) -> Reply {
    // Confidential clients authenticate the same way everywhere; public
    // clients (`none`) at the token and revocation endpoints only.
    let auth_methods: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    let confidential: Vec<&str> = auth_methods.iter().copied().filter(|m| *m != AuthMethod::None.as_str()).collect();
    // RFC 8414 §2: required with private_key_jwt; client assertions may be
    // signed with any algorithm a registered key can have.
    let assertion_algs: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
    let mut doc = json!({
        "issuer": realm.issuer,
        "authorization_endpoint": realm.endpoint("authorize"),
        "token_endpoint": realm.endpoint("access_token"),
        "jwks_uri": realm.endpoint("connect/jwk_uri"),
        "introspection_endpoint": realm.endpoint("introspect"),
        "revocation_endpoint": realm.endpoint("token/revoke"),
        "introspection_endpoint_auth_methods_supported": confidential,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        // RFC 9207: every authorization response carries `iss`.
        "authorization_response_iss_parameter_supported": true,
        "grant_types_supported": GrantType::ALL.map(GrantType::as_str),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "token_types_supported": [ACCESS_TOKEN_TYPE],
        "access_token_signing_alg_values_supported": [realm.signing_key.alg().as_str()],
        // RFC 9449 §5.1: the token endpoint takes DPoP proofs of these.
        "dpop_signing_alg_values_supported": agentauth_service::dpop::ALGORITHMS.map(|a| a.as_str()),
    });
    // draft-ietf-oauth-client-id-metadata-document §5: a server that
    // publishes metadata says whether it takes client ID URLs.
    doc["client_id_metadata_document_supported"] = json!(realm.settings.client_metadata_documents);
    if realm.settings.trusted_issuers.iter().any(|t| t.serves(agentauth_core::trust::TrustPurpose::IdJag)) {
        // draft-ietf-oauth-identity-assertion-authz-grant §7.2; the
        // issuers themselves are not listed.
        doc["authorization_grant_profiles_supported"] = json!(["urn:ietf:params:oauth:grant-profile:id-jag"]);
    }
    if realm.settings.open_registration {
        doc["registration_endpoint"] = json!(realm.endpoint("register"));
        if realm.settings.ai_agents_enabled {
            doc["ai_agent_registration_endpoint"] = json!(realm.endpoint("aiagent/register"));
        }
    }
    Reply::public_json(&doc)
}
