//! Security events pushed to a realm's receivers (RFC 8417 SETs by RFC
//! 8935 push): a receiver on loopback, run by the test, is told when an
//! agent is disabled, enabled and deleted, in order, with SETs signed by
//! the realm's key; one that fails is tried again with the same event.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth_service::events::{ACCOUNT_DISABLED, ACCOUNT_ENABLED, ACCOUNT_PURGED, SESSION_REVOKED, SET_TYPE};
use serde_json::{Value, json};

use crate::authorize::{
    Browser, PASSWORD, VERIFIER, admin, authorize_url, redeem, register_public_client, sign_in_and_allow,
};
use crate::support::Server;

/// One POST the receiver got: its content type and body.
#[derive(Clone, Debug)]
struct Received {
    content_type: String,
    body: String,
}

/// A push receiver on loopback: answers `503` to the first `fail_first`
/// requests and while `accepting` is false, `202` otherwise, and records
/// each.
fn receiver(fail_first: usize, accepting: Arc<AtomicBool>) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the receiver");
    let url = format!("http://{}/events", listener.local_addr().expect("its address"));
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
            let (mut content_type, mut length) = (String::new(), 0usize);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-type:") {
                    content_type = v.trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            log.lock().expect("the log").push(Received { content_type, body: String::from_utf8_lossy(&body).into() });
            let accept = n >= fail_first && accepting.load(Ordering::SeqCst);
            let status = if accept { "202 Accepted" } else { "503 Service Unavailable" };
            let _ = stream
                .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes());
        }
    });
    (url, received)
}

/// The SETs received so far, verified with the realm's keys.
fn events(server: &Server, received: &Mutex<Vec<Received>>) -> Vec<Value> {
    let jwks: Value = server.get("connect/jwk_uri").json;
    let keys: Vec<_> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| agentauth_jose::VerifyingKey::from_jwk(k).expect("a key"))
        .collect();
    let received = received.lock().expect("the log").clone();
    received
        .iter()
        .map(|r| {
            assert_eq!(r.content_type, "application/secevent+jwt");
            agentauth_jose::verify(&r.body, &keys, SET_TYPE).expect("a SET signed by the realm")
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_realms_receiver_is_told_when_an_agent_is_disabled_enabled_and_deleted() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let (url, received) = receiver(1, Arc::new(AtomicBool::new(true)));
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"event_receivers": [url]})));
    assert_eq!(status, 200, "{body}");
    let agent = server.register_agent();
    let path = format!("/alpha/clients/{}", agent.client_id);
    assert_eq!(admin(&server, "POST", &format!("{path}/disable"), None).0, 200);

    // The first try fails; the event comes again, the same event.
    wait_for("the disabling was delivered", || received.lock().expect("log").len() >= 2);
    let sent = events(&server, &received);
    assert_eq!(sent[0]["jti"], sent[1]["jti"], "a retry sends the same event: {sent:?}");
    let event = &sent[1];
    assert_eq!(event["iss"], server.realm_url("").trim_end_matches('/'), "{event}");
    assert_eq!(event["aud"], url.as_str(), "{event}");
    assert_eq!(event["sub_id"], json!({"format": "opaque", "id": agent.client_id}), "{event}");
    assert!(event["events"].get(ACCOUNT_DISABLED).is_some(), "{event}");

    // Enabled, then deleted: told in that order, once each.
    assert_eq!(admin(&server, "POST", &format!("{path}/enable"), None).0, 200);
    assert_eq!(admin(&server, "DELETE", &path, None).0, 204);
    wait_for("the enabling and deletion were delivered", || received.lock().expect("log").len() >= 4);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = events(&server, &received);
    let kinds: Vec<&str> =
        sent[1..].iter().filter_map(|e| e["events"].as_object()?.keys().next().map(String::as_str)).collect();
    assert_eq!(kinds, [ACCOUNT_DISABLED, ACCOUNT_ENABLED, ACCOUNT_PURGED], "{sent:?}");
    let jtis: std::collections::HashSet<&str> = sent[1..].iter().filter_map(|e| e["jti"].as_str()).collect();
    assert_eq!(jtis.len(), 3, "each event once: {sent:?}");
}

#[test]
fn a_refresh_token_used_twice_ends_its_grant_and_the_receiver_is_told_whose() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let (url, received) = receiver(0, Arc::new(AtomicBool::new(true)));
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"event_receivers": [url]})));
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "ada", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    let subject = body["subject"].as_str().expect("ada's subject").to_string();
    let client_id = register_public_client(&server, "read");
    let answer = sign_in_and_allow(&mut Browser::new(), &server, &authorize_url(&server, &client_id, &[]));
    let tokens = redeem(&server, &client_id, &answer["code"], VERIFIER);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let first = tokens.json["refresh_token"].as_str().expect("a refresh token").to_string();
    let refresh = |token: &str| {
        server.post_form(
            "access_token",
            &[("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", &client_id)],
            None,
        )
    };
    let rotated = refresh(&first);
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.json["refresh_token"].as_str().expect("a successor").to_string();

    // The rotated token comes back: the grant ends, successor included.
    refresh(&first).assert_error(400, "invalid_grant");
    refresh(&second).assert_error(400, "invalid_grant");
    wait_for("the revocation was delivered", || !received.lock().expect("log").is_empty());
    // Time for a second event, were there one.
    std::thread::sleep(Duration::from_millis(2500));
    let sent = events(&server, &received);
    assert_eq!(sent.len(), 1, "one event, for the one grant: {sent:?}");
    let event = &sent[0];
    let subject_id = &event["sub_id"];
    assert_eq!(subject_id["format"], "complex", "{event}");
    assert_eq!(subject_id["application"], json!({"format": "opaque", "id": client_id}), "{event}");
    let issuer = server.realm_url("").trim_end_matches('/').to_string();
    assert_eq!(subject_id["user"], json!({"format": "iss_sub", "iss": issuer, "sub": subject}), "{event}");
    assert!(subject_id["session"]["id"].as_str().is_some_and(|id| !id.is_empty()), "{event}");
    let payload = &event["events"][SESSION_REVOKED];
    assert_eq!(payload["initiating_entity"], "policy", "{event}");
    let (_, audit) = admin(&server, "GET", "/alpha/audit", None);
    let entries = audit["entries"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["action"] == "revoke-family" && e["actor"] == "token-endpoint"), "{audit}");
}

#[test]
fn event_receivers_are_https_urls_and_few() {
    let server = Server::start_with_admin();
    for receivers in [
        json!(["http://receiver.example/events"]),
        json!(["not a url"]),
        json!(["https://user:pw@receiver.example/events"]),
        json!(["https://a.example/1", "https://a.example/1"]),
        json!([
            "https://a.example/1",
            "https://a.example/2",
            "https://a.example/3",
            "https://a.example/4",
            "https://a.example/5"
        ]),
    ] {
        let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({ "event_receivers": receivers })));
        assert_eq!(status, 400, "{receivers}: {body}");
        assert!(body["error_description"].as_str().unwrap_or_default().starts_with("event_receivers"), "{body}");
    }
    let ok = json!(["https://receiver.example/events", "http://127.0.0.1:9/dev"]);
    assert_eq!(admin(&server, "PATCH", "/alpha", Some(json!({ "event_receivers": ok }))).0, 200);
}

#[test]
fn an_event_waits_for_its_receiver_across_a_restart() {
    let dir = tempfile::tempdir().expect("a data directory");
    let accepting = Arc::new(AtomicBool::new(false));
    let (url, received) = receiver(0, Arc::clone(&accepting));
    let server = Server::start_with_admin_in_args(dir.path(), &["--dev-loopback-fetch"]);
    assert_eq!(admin(&server, "PATCH", "/alpha", Some(json!({"event_receivers": [url]}))).0, 200);
    let agent = server.register_agent();
    assert_eq!(admin(&server, "POST", &format!("/alpha/clients/{}/disable", agent.client_id), None).0, 200);
    wait_for("the receiver was tried", || !received.lock().expect("log").is_empty());
    server.stop();

    // Back up, with the receiver taking events: the disabling reaches it.
    accepting.store(true, Ordering::SeqCst);
    let server = Server::start_with_admin_in_args(dir.path(), &["--dev-loopback-fetch"]);
    let delivered = |received: &Mutex<Vec<Received>>| received.lock().expect("log").len();
    let tried = delivered(&received);
    wait_for("the event was delivered after the restart", || delivered(&received) > tried);
    let sent = events(&server, &received);
    let last = sent.last().expect("an event");
    assert!(last["events"].get(ACCOUNT_DISABLED).is_some(), "{last}");
    assert_eq!(last["sub_id"]["id"], agent.client_id.as_str(), "{last}");
    assert_eq!(sent.iter().filter_map(|e| e["jti"].as_str()).collect::<std::collections::HashSet<_>>().len(), 1);
}
