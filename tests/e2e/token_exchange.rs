//! RFC 8693 token exchange: what may and may not be exchanged.

use serde_json::json;

use crate::support::{ACCESS_TOKEN_TYPE, Server, TOKEN_EXCHANGE, jwt_parts, unsigned_with_header, with_claims};

#[test]
fn a_second_agent_cannot_exchange_the_first_agents_token() {
    let server = Server::start();
    let first = server.register_agent();
    let second = server.register_agent();
    let token = server.read_token(&first);
    server.exchange(&second, &token, "read write").assert_error(400, "invalid_request");
}

#[test]
fn a_tampered_subject_token_is_refused() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let (_, mut claims) = jwt_parts(&token);
    claims["scope"] = json!("read write admin");
    server.exchange(&agent, &with_claims(&token, &claims), "read write").assert_error(400, "invalid_request");
}

#[test]
fn an_alg_none_subject_token_is_refused() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let (header, _) = jwt_parts(&token);
    let none = unsigned_with_header(&token, &json!({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}));
    server.exchange(&agent, &none, "read write").assert_error(400, "invalid_request");
}

#[test]
fn garbage_and_oversized_subject_tokens_are_refused() {
    let server = Server::start();
    let agent = server.register_agent();
    for token in ["", "a.b.c", "opaque-but-unknown", &"a".repeat(20 * 1024)] {
        server.exchange(&agent, token, "read").assert_error(400, "invalid_request");
    }
}

#[test]
fn a_token_without_may_act_cannot_be_exchanged() {
    let server = Server::start();
    // An ordinary client: the realm's DCR policy sets nothing for it, so it
    // gets opaque tokens and no may-act policy runs for them.
    let reply = server.post_json(&server.realm_url("register"), &crate::support::seed_registration().to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(reply.json["statelessTokensEnabled"], false);
    let client = crate::support::Credentials::from_registration(&reply.json);
    let token = server.read_token(&client);
    assert!(!token.contains('.'), "an opaque token, not a JWT: {token}");
    server.exchange(&client, &token, "read").assert_error(400, "invalid_request");
}

#[test]
fn an_exchanged_token_can_be_exchanged_again_and_nests_act() {
    let server = Server::start();
    let agent = server.register_agent();
    let first = server.exchange(&agent, &server.read_token(&agent), "read write");
    let first = first.json["access_token"].as_str().unwrap_or_default().to_string();
    let second = server.exchange(&agent, &first, "read");
    assert_eq!(second.status, 200, "{}", second.body);
    let (_, claims) = jwt_parts(second.json["access_token"].as_str().unwrap_or_default());
    let actor = format!("(age!{})", agent.client_id);
    assert_eq!(
        (claims["act"]["sub"].as_str(), claims["act"]["act"]["sub"].as_str()),
        (Some(actor.as_str()), Some(actor.as_str()))
    );
}

#[test]
fn exchange_beyond_registered_scopes_is_invalid_scope() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    server.exchange(&agent, &token, "read write admin").assert_error(400, "invalid_scope");
}

#[test]
fn unsupported_token_types_and_targets_are_refused() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let base = |extra: (&'static str, &'static str)| {
        vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", token.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            extra,
        ]
    };
    let jwt_type = ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt");
    let form = vec![("grant_type", TOKEN_EXCHANGE), ("subject_token", token.as_str()), jwt_type];
    server.token(&form, Some(&agent)).assert_error(400, "invalid_request");
    server
        .token(&base(("requested_token_type", "urn:ietf:params:oauth:token-type:id_token")), Some(&agent))
        .assert_error(400, "invalid_request");
    server.token(&base(("audience", "https://elsewhere.example")), Some(&agent)).assert_error(400, "invalid_target");
    server
        .token(&[("grant_type", TOKEN_EXCHANGE), ("subject_token_type", ACCESS_TOKEN_TYPE)], Some(&agent))
        .assert_error(400, "invalid_request");
}

#[test]
fn the_refresh_token_from_an_exchange_rotates() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &token, "read write");
    let refresh = exchanged.json["refresh_token"].as_str().unwrap_or_default().to_string();

    let reply =
        server.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("scope", "read")], Some(&agent));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read");
    let (_, claims) = jwt_parts(reply.json["access_token"].as_str().unwrap_or_default());
    assert_eq!(claims["act"]["sub"], format!("(age!{})", agent.client_id));
    let successor = reply.json["refresh_token"].as_str().unwrap_or_default().to_string();
    assert_ne!(successor, refresh);

    // Another client cannot use the successor; its owner can, once. (A
    // used token presented again ends the family: see introspection.rs.)
    let other = server.register_agent();
    server
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &successor)], Some(&other))
        .assert_error(400, "invalid_grant");
    let reply = server.token(&[("grant_type", "refresh_token"), ("refresh_token", &successor)], Some(&agent));
    assert_eq!(reply.status, 200, "{}", reply.body);
    server
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)], Some(&agent))
        .assert_error(400, "invalid_grant");
}

#[test]
fn a_refresh_may_not_widen_the_scope() {
    let server = Server::start();
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &token, "read");
    let refresh = exchanged.json["refresh_token"].as_str().unwrap_or_default().to_string();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("scope", "read write")];
    server.token(&form, Some(&agent)).assert_error(400, "invalid_scope");
    // A refused refresh does not spend the token.
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
    assert_eq!(server.token(&form, Some(&agent)).status, 200);
}

#[test]
fn an_actor_token_must_come_typed_and_be_the_actor_may_act_names() {
    let server = Server::start();
    let agent = server.register_agent();
    let subject = server.read_token(&agent);
    let actor = server.read_token(&agent);
    let exchange = |extra: &[(&str, &str)]| {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject.as_str()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ];
        form.extend_from_slice(extra);
        server.token(&form, Some(&agent))
    };
    exchange(&[("actor_token", &actor)]).assert_error(400, "invalid_request");
    exchange(&[("actor_token_type", ACCESS_TOKEN_TYPE)]).assert_error(400, "invalid_request");
    exchange(&[("actor_token", "garbage"), ("actor_token_type", ACCESS_TOKEN_TYPE)])
        .assert_error(400, "invalid_request");
    // may_act names (age!<client_id>); the actor token's subject is the
    // client_id itself, so delegation to it is refused.
    let reply = exchange(&[("actor_token", &actor), ("actor_token_type", ACCESS_TOKEN_TYPE)]);
    reply.assert_error(400, "invalid_request");
    assert!(reply.json["error_description"].as_str().is_some_and(|d| d.contains("actor token")), "{}", reply.body);
}
