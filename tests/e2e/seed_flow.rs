//! The seed page, "AI agent acting autonomously", step by step.

use crate::support::{ACCESS_TOKEN_TYPE, Server, jwt_parts};

#[test]
fn an_agent_registers_gets_a_read_token_and_exchanges_it_for_read_write() {
    let server = Server::start();

    // Register the AI agent: the DCR policy enables overrides, the may-act
    // script and stateless tokens.
    let reply = server.register_raw(&crate::support::seed_registration().to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let r = &reply.json;
    assert_eq!(reply.cache_control.as_deref(), Some("no-store"));
    for field in ["client_id", "client_secret", "registration_access_token", "registration_client_uri"] {
        assert!(r[field].as_str().is_some_and(|v| !v.is_empty()), "{field} missing: {r}");
    }
    assert_eq!(r["client_secret_expires_at"], 0);
    assert_eq!(
        r["grant_types"],
        serde_json::json!(["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"])
    );
    assert_eq!(r["redirect_uris"], serde_json::json!(["https://www.example.com:443/callback"]));
    assert_eq!(r["response_types"], serde_json::json!(["token"]));
    assert_eq!(r["client_name"], "software agent");
    assert_eq!(r["scope"], "read write");
    assert_eq!(r["scopes"], serde_json::json!(["read", "write"]));
    assert_eq!(r["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(r["providerOverridesEnabled"], true);
    assert_eq!(r["statelessTokensEnabled"], true);
    assert_eq!(r["accessTokenMayActScript"], "software-agent-may-act");
    let agent = crate::support::Credentials::from_registration(r);
    assert!(
        r["registration_client_uri"]
            .as_str()
            .unwrap_or_default()
            .ends_with(&format!("/am/oauth2/realms/root/realms/alpha/aiagent/register?client_id={}", agent.client_id))
    );

    // Client credentials, scope=read: a read token naming the agent in may_act.
    let reply = server.token(
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &agent.client_id),
            ("client_secret", &agent.client_secret),
            ("scope", "read"),
        ],
        None,
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read");
    assert_eq!(reply.json["token_type"], "Bearer");
    assert!(reply.json["expires_in"].as_i64().is_some_and(|s| s > 3500));
    assert!(reply.json.get("refresh_token").is_none(), "client_credentials issues no refresh token");
    let read_token = reply.json["access_token"].as_str().unwrap_or_default().to_string();
    let (header, claims) = jwt_parts(&read_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["sub"], agent.client_id.as_str());
    assert_eq!(claims["client_id"], agent.client_id.as_str());
    assert_eq!(claims["iss"], format!("{}/am/oauth2/realms/root/realms/alpha", server.base));
    assert_eq!(claims["may_act"]["client_id"], agent.client_id.as_str());
    assert_eq!(claims["may_act"]["sub"], format!("(age!{})", agent.client_id));
    for claim in ["aud", "iat", "exp", "jti"] {
        assert!(!claims[claim].is_null(), "{claim} missing");
    }

    // The JWKS publishes the key that signed it.
    let jwks = server.get("connect/jwk_uri").json;
    assert!(
        jwks["keys"].as_array().is_some_and(|keys| keys.iter().any(|k| k["kid"] == header["kid"] && k["kty"] == "RSA"))
    );

    // Token exchange to read write: allowed by may_act; refresh token included.
    let reply = server.exchange(&agent, &read_token, "read write");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read write");
    assert_eq!(reply.json["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(reply.json["token_type"], "Bearer");
    assert!(reply.json["refresh_token"].as_str().is_some_and(|t| t.len() >= 43));
    let (_, exchanged) = jwt_parts(reply.json["access_token"].as_str().unwrap_or_default());
    assert_eq!(exchanged["sub"], agent.client_id.as_str());
    assert_eq!(exchanged["act"]["sub"], format!("(age!{})", agent.client_id));
    assert_eq!(exchanged["scope"], "read write");
}

#[test]
fn discovery_names_the_realm_endpoints() {
    let server = Server::start();
    let reply = server.get(".well-known/openid-configuration");
    let issuer = format!("{}/am/oauth2/realms/root/realms/alpha", server.base);
    assert_eq!(reply.json["issuer"], issuer.as_str());
    assert_eq!(reply.json["token_endpoint"], format!("{issuer}/access_token"));
    assert_eq!(reply.json["jwks_uri"], format!("{issuer}/connect/jwk_uri"));
    assert_eq!(reply.json["registration_endpoint"], format!("{issuer}/register"));
    assert!(
        reply.json["grant_types_supported"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g == crate::support::TOKEN_EXCHANGE))
    );
    // Every client authentication method the endpoints accept (public
    // clients at the token and revocation endpoints only), and the
    // algorithms RFC 8414 requires beside private_key_jwt.
    for (endpoint, public) in [("token", true), ("introspection", false), ("revocation", true)] {
        let methods = &reply.json[format!("{endpoint}_endpoint_auth_methods_supported")];
        let mut expected = vec!["client_secret_basic", "client_secret_post", "private_key_jwt"];
        if public {
            expected.push("none");
        }
        expected.extend(["federated_jwt", "spiffe_jwt"]);
        assert_eq!(methods, &serde_json::json!(expected), "{endpoint}");
        let algs = &reply.json[format!("{endpoint}_endpoint_auth_signing_alg_values_supported")];
        assert_eq!(algs, &serde_json::json!(["RS256", "ES256", "EdDSA"]));
    }
}
