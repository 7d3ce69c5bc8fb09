//! RFC 7662 introspection and RFC 7009 revocation.

use serde_json::json;

use crate::support::{Server, jwt_parts};

#[test]
fn a_live_token_introspects_with_its_claims() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let exchanged =
        server.exchange(&agent, &token, "read write").json["access_token"].as_str().unwrap_or_default().to_string();
    let reply = server.introspect(&agent, &exchanged);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let r = &reply.json;
    assert_eq!((r["active"].as_bool(), r["scope"].as_str()), (Some(true), Some("read write")));
    assert_eq!(r["client_id"], agent.client_id.as_str());
    assert_eq!(r["sub"], agent.client_id.as_str());
    assert_eq!(r["token_type"], "Bearer");
    assert_eq!(r["act"]["sub"], format!("(age!{})", agent.client_id));
    assert_eq!(r["may_act"]["client_id"], agent.client_id.as_str());
    let (_, claims) = jwt_parts(&exchanged);
    for claim in ["iss", "aud", "exp", "iat", "jti"] {
        assert_eq!(r[claim], claims[claim], "{claim}");
    }
}

#[test]
fn anything_not_live_here_is_just_inactive() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let (_, mut claims) = jwt_parts(&token);
    claims["scope"] = json!("admin");
    for bad in ["", "garbage", "a.b.c", &crate::support::with_claims(&token, &claims)] {
        let reply = server.introspect(&agent, bad);
        if bad.is_empty() {
            reply.assert_error(400, "invalid_request");
            continue;
        }
        assert_eq!((reply.status, &reply.json), (200, &json!({"active": false})), "{bad}");
    }
}

#[test]
fn introspection_needs_client_authentication() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    server.post_form("introspect", &[("token", &token)], None).assert_error(401, "invalid_client");
}

#[test]
fn a_revoked_jwt_is_inactive_and_no_longer_exchangeable() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let reply = server.revoke(&agent, &token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(server.introspect(&agent, &token).json, json!({"active": false}));
    server.exchange(&agent, &token, "read write").assert_error(400, "invalid_request");
}

#[test]
fn revoking_an_unknown_token_is_fine_but_another_clients_is_not() {
    let server = Server::start();
    let (owner, other) = (server.register_agent(), server.register_agent());
    assert_eq!(server.revoke(&owner, "never-issued").status, 200);
    let token = server.read_token(&owner);
    server.revoke(&other, &token).assert_error(400, "invalid_request");
    assert_eq!(server.introspect(&other, &token).json["active"], true, "still live");
}

#[test]
fn revoking_a_refresh_token_revokes_what_was_issued_from_it() {
    let server = Server::start();
    let agent = server.register_agent();
    let read = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &read, "read write");
    let access = exchanged.json["access_token"].as_str().unwrap_or_default().to_string();
    let refresh = exchanged.json["refresh_token"].as_str().unwrap_or_default().to_string();
    assert_eq!(server.introspect(&agent, &refresh).json["token_type"], "refresh_token");

    assert_eq!(server.revoke(&agent, &refresh).status, 200);
    assert_eq!(server.introspect(&agent, &refresh).json, json!({"active": false}));
    assert_eq!(server.introspect(&agent, &access).json, json!({"active": false}), "issued from it");
    assert_eq!(server.introspect(&agent, &read).json["active"], true, "issued before it");
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    server.token(&form, Some(&agent)).assert_error(400, "invalid_grant");
}

#[test]
fn reusing_a_rotated_refresh_token_revokes_the_whole_family() {
    let server = Server::start();
    let agent = server.register_agent();
    let exchanged = server.exchange(&agent, &server.read_token(&agent), "read write");
    let first = exchanged.json["refresh_token"].as_str().unwrap_or_default().to_string();
    let rotated = server.token(&[("grant_type", "refresh_token"), ("refresh_token", &first)], Some(&agent));
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.json["refresh_token"].as_str().unwrap_or_default().to_string();
    let access = rotated.json["access_token"].as_str().unwrap_or_default().to_string();

    // The first token comes back (a leak): the family ends.
    server
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &first)], Some(&agent))
        .assert_error(400, "invalid_grant");
    server
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &second)], Some(&agent))
        .assert_error(400, "invalid_grant");
    assert_eq!(server.introspect(&agent, &access).json, json!({"active": false}));
}

#[test]
fn opaque_tokens_introspect_and_revoke_too() {
    let server = Server::start();
    let reply = server.post_json(&server.realm_url("register"), &crate::support::seed_registration().to_string());
    let client = crate::support::Credentials::from_registration(&reply.json);
    let token = server.read_token(&client);
    assert!(!token.contains('.'));
    let live = server.introspect(&client, &token);
    assert_eq!((live.json["active"].as_bool(), live.json["scope"].as_str()), (Some(true), Some("read")));
    assert_eq!(server.revoke(&client, &token).status, 200);
    assert_eq!(server.introspect(&client, &token).json, json!({"active": false}));
}
