//! `access_token`: client authentication and the client credentials grant.

use crate::support::{Credentials, Server};

#[test]
fn a_wrong_secret_is_invalid_client_with_a_challenge() {
    let server = Server::start();
    let agent = server.register_agent();
    let wrong = Credentials { client_secret: format!("{}x", agent.client_secret), ..agent.clone() };
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", wrong.client_id.as_str()),
        ("client_secret", wrong.client_secret.as_str()),
    ];
    let reply = server.token(&form, None);
    reply.assert_error(401, "invalid_client");
    let reply = server.token(&[("grant_type", "client_credentials")], Some(&wrong));
    reply.assert_error(401, "invalid_client");
    assert!(reply.www_authenticate.is_some_and(|c| c.starts_with("Basic")));
}

#[test]
fn an_unknown_client_looks_like_a_wrong_secret() {
    let server = Server::start();
    let ghost = Credentials { client_id: "nobody".into(), client_secret: "nothing".into() };
    let reply = server.token(&[("grant_type", "client_credentials")], Some(&ghost));
    reply.assert_error(401, "invalid_client");
    assert_eq!(reply.json["error_description"], "client authentication failed");
}

#[test]
fn basic_authentication_works_too() {
    let server = Server::start();
    let agent = server.register_agent();
    let reply = server.token(&[("grant_type", "client_credentials"), ("scope", "read")], Some(&agent));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read");
}

#[test]
fn two_authentication_methods_at_once_are_refused() {
    let server = Server::start();
    let agent = server.register_agent();
    let form = [("grant_type", "client_credentials"), ("client_secret", agent.client_secret.as_str())];
    server.token(&form, Some(&agent)).assert_error(400, "invalid_request");
}

#[test]
fn a_scope_beyond_registration_is_invalid_scope() {
    let server = Server::start();
    let agent = server.register_agent();
    let reply = server.token(&[("grant_type", "client_credentials"), ("scope", "read admin")], Some(&agent));
    reply.assert_error(400, "invalid_scope");
}

#[test]
fn no_scope_gets_every_registered_scope() {
    let server = Server::start();
    let agent = server.register_agent();
    let reply = server.token(&[("grant_type", "client_credentials")], Some(&agent));
    assert_eq!(reply.json["scope"], "read write", "{}", reply.body);
}

#[test]
fn an_unknown_grant_is_unsupported_grant_type() {
    let server = Server::start();
    let agent = server.register_agent();
    server.token(&[("grant_type", "password")], Some(&agent)).assert_error(400, "unsupported_grant_type");
    server.token(&[("scope", "read")], Some(&agent)).assert_error(400, "invalid_request");
}

#[test]
fn a_repeated_parameter_is_invalid_request() {
    let server = Server::start();
    let agent = server.register_agent();
    let form = [("grant_type", "client_credentials"), ("scope", "read"), ("scope", "write")];
    server.token(&form, Some(&agent)).assert_error(400, "invalid_request");
}
