//! RFC 7592: a client reads, updates and deletes its registration with its
//! registration access token.

use serde_json::{Value, json};

use crate::support::{Credentials, Reply, Server, answered};

struct Registered {
    agent: Credentials,
    token: String,
    uri: String,
    response: Value,
}

fn register(server: &Server) -> Registered {
    let reply = server.register_raw(&crate::support::seed_registration().to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let field = |name: &str| reply.json[name].as_str().unwrap_or_default().to_string();
    Registered {
        agent: Credentials::from_registration(&reply.json),
        token: field("registration_access_token"),
        uri: field("registration_client_uri"),
        response: reply.json,
    }
}

fn send(method: &str, uri: &str, token: &str, body: Option<&Value>) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(body.map(Value::to_string).unwrap_or_default())
        .expect("a request");
    answered(Reply::read(agent.run(request)))
}

/// The registration as a client sends it back on update: what it was
/// given, less what the server manages.
fn update_body(r: &Registered, changes: Value) -> Value {
    let mut body = r.response.clone();
    for field in
        ["registration_access_token", "registration_client_uri", "client_secret_expires_at", "client_id_issued_at"]
    {
        body.as_object_mut().map(|o| o.remove(field));
    }
    for (k, v) in changes.as_object().into_iter().flatten() {
        body[k] = v.clone();
    }
    body
}

#[test]
fn a_client_reads_its_registration_without_its_secrets() {
    let server = Server::start();
    let r = register(&server);
    let reply = send("GET", &r.uri, &r.token, None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["client_id"], r.agent.client_id.as_str());
    assert_eq!(reply.json["scope"], "read write");
    assert_eq!(reply.json["statelessTokensEnabled"], true);
    assert!(reply.json.get("client_secret").is_none() && reply.json.get("registration_access_token").is_none());
}

#[test]
fn a_wrong_missing_or_foreign_token_looks_like_an_unknown_client() {
    let server = Server::start();
    let (a, b) = (register(&server), register(&server));
    let unknown = a.uri.replace(&a.agent.client_id, "no-such-client");
    for (uri, token) in [(&a.uri, "wrong"), (&a.uri, b.token.as_str()), (&unknown, a.token.as_str()), (&a.uri, "")] {
        let reply = send("GET", uri, token, None);
        reply.assert_error(401, "invalid_token");
        assert_eq!(reply.json["error_description"], "the registration access token is invalid");
        assert!(reply.www_authenticate.as_deref().is_some_and(|c| c.starts_with("Bearer")));
    }
}

#[test]
fn an_update_replaces_the_metadata_and_rotates_the_token() {
    let server = Server::start();
    let r = register(&server);
    let reply = send("PUT", &r.uri, &r.token, Some(&update_body(&r, json!({"scope": "read", "scopes": ["read"]}))));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read");
    assert_eq!(reply.json["statelessTokensEnabled"], true, "attributes set on CREATE stay");
    let rotated = reply.json["registration_access_token"].as_str().unwrap_or_default().to_string();
    assert!(!rotated.is_empty() && rotated != r.token);

    send("GET", &r.uri, &r.token, None).assert_error(401, "invalid_token");
    assert_eq!(send("GET", &r.uri, &rotated, None).status, 200);
    // The narrower registration now bounds the client's tokens.
    let form = [("grant_type", "client_credentials"), ("scope", "read write")];
    server.token(&form, Some(&r.agent)).assert_error(400, "invalid_scope");
    assert_eq!(server.token(&[("grant_type", "client_credentials")], Some(&r.agent)).json["scope"], "read");
}

#[test]
fn an_update_may_not_touch_what_the_server_manages() {
    let server = Server::start();
    let r = register(&server);
    for changes in [
        json!({"client_id": "another-id"}),
        json!({"client_secret": "chosen-by-client"}),
        json!({"registration_access_token": r.token}),
        json!({"client_id_issued_at": 0}),
        json!({"redirect_uris": ["http://evil.example/cb"]}),
    ] {
        let reply = send("PUT", &r.uri, &r.token, Some(&update_body(&r, changes.clone())));
        assert!(reply.status == 400, "{changes}: {}", reply.body);
    }
    // The current secret may be echoed back.
    let same = update_body(&r, json!({"client_secret": r.agent.client_secret}));
    assert_eq!(send("PUT", &r.uri, &r.token, Some(&same)).status, 200);
}

#[test]
fn a_deleted_client_can_no_longer_authenticate() {
    let server = Server::start();
    let r = register(&server);
    let token = server.read_token(&r.agent);
    let refresh =
        server.exchange(&r.agent, &token, "read").json["refresh_token"].as_str().unwrap_or_default().to_string();
    let observer = server.register_agent();
    assert_eq!(server.introspect(&observer, &token).json["active"], true);
    let reply = send("DELETE", &r.uri, &r.token, None);
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert_eq!(server.introspect(&observer, &token).json, json!({"active": false}), "its tokens died with it");
    server.token(&[("grant_type", "client_credentials")], Some(&r.agent)).assert_error(401, "invalid_client");
    server
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)], Some(&r.agent))
        .assert_error(401, "invalid_client");
    send("GET", &r.uri, &r.token, None).assert_error(401, "invalid_token");
}

/// Sends `requests` at once (from as many threads, released together) and
/// returns their replies.
fn all_at_once(requests: Vec<(&'static str, String, String, Option<Value>)>) -> Vec<Reply> {
    let start = std::sync::Barrier::new(requests.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = requests
            .iter()
            .map(|(method, uri, token, body)| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    send(method, uri, token, body.as_ref())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a request thread")).collect()
    })
}

const RACERS: usize = 20;

#[test]
fn of_racing_updates_with_one_token_exactly_one_rotates_it() {
    let server = Server::start();
    let r = register(&server);
    let body = update_body(&r, json!({"scope": "read", "scopes": ["read"]}));
    let replies =
        all_at_once((0..RACERS).map(|_| ("PUT", r.uri.clone(), r.token.clone(), Some(body.clone()))).collect());
    let (won, lost): (Vec<&Reply>, Vec<&Reply>) = replies.iter().partition(|reply| reply.status == 200);
    assert_eq!(won.len(), 1, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for reply in lost {
        reply.assert_error(401, "invalid_token");
    }
    // The one token issued is the one that works.
    let rotated = won[0].json["registration_access_token"].as_str().unwrap_or_default();
    assert_eq!(send("GET", &r.uri, rotated, None).status, 200);
    send("GET", &r.uri, &r.token, None).assert_error(401, "invalid_token");
}

#[test]
fn of_racing_deletes_and_updates_with_one_token_exactly_one_succeeds() {
    let server = Server::start();
    let r = register(&server);
    let body = update_body(&r, json!({}));
    let requests = (0..RACERS)
        .map(|i| match i % 2 {
            0 => ("DELETE", r.uri.clone(), r.token.clone(), None),
            _ => ("PUT", r.uri.clone(), r.token.clone(), Some(body.clone())),
        })
        .collect();
    let replies = all_at_once(requests);
    let succeeded = replies.iter().filter(|reply| matches!(reply.status, 200 | 204)).count();
    assert_eq!(succeeded, 1, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for reply in replies.iter().filter(|reply| !matches!(reply.status, 200 | 204)) {
        reply.assert_error(401, "invalid_token");
    }
}
