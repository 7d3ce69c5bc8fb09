//! `aiagent/register`: RFC 7591 registration of AI agents.

use serde_json::json;

use crate::support::{Server, seed_registration};

#[test]
fn malformed_json_is_invalid_client_metadata() {
    let server = Server::start();
    for body in ["{", "not json", "[1, 2]", "\"string\""] {
        server.register_raw(body).assert_error(400, "invalid_client_metadata");
    }
}

#[test]
fn metadata_of_the_wrong_shape_is_invalid_client_metadata() {
    let server = Server::start();
    for bad in [
        json!({"grant_types": "client_credentials"}),
        json!({"grant_types": ["password"]}),
        json!({"scopes": "read"}),
        json!({"token_endpoint_auth_method": "none"}),
    ] {
        server.register_raw(&bad.to_string()).assert_error(400, "invalid_client_metadata");
    }
}

#[test]
fn a_bad_redirect_uri_is_invalid_redirect_uri() {
    let server = Server::start();
    for uri in [
        "not-a-uri",
        "https://a.example/cb#fragment",
        "http://a.example/cb",
        r"http://evil.example\@localhost/cb",
        "http://[::1].evil.example/cb",
        "https://a.example:65536/cb",
    ] {
        let mut body = seed_registration();
        body["redirect_uris"] = json!([uri]);
        server.register_raw(&body.to_string()).assert_error(400, "invalid_redirect_uri");
    }
}

#[test]
fn a_client_cannot_choose_its_client_id() {
    let server = Server::start();
    let mut body = seed_registration();
    body["client_id"] = json!("my-own-id");
    body["client_secret"] = json!("my-own-secret");
    let reply = server.register_raw(&body.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_ne!(reply.json["client_id"], "my-own-id");
    assert_ne!(reply.json["client_secret"], "my-own-secret");
}

#[test]
fn each_registration_gets_fresh_credentials() {
    let server = Server::start();
    let (a, b) = (server.register_agent(), server.register_agent());
    assert_ne!(a.client_id, b.client_id);
    assert_ne!(a.client_secret, b.client_secret);
}

#[test]
fn an_unknown_realm_is_not_found() {
    let server = Server::start();
    let url = format!("{}/am/oauth2/realms/root/realms/nowhere/aiagent/register", server.base);
    let reply = server.post_json(&url, &seed_registration().to_string());
    assert_eq!(reply.status, 404, "{}", reply.body);
}

#[test]
fn a_body_over_the_limit_is_refused() {
    let server = Server::start();
    let mut body = seed_registration();
    body["client_name"] = json!("x".repeat(100 * 1024));
    let reply = server.register_raw(&body.to_string());
    assert_eq!(reply.status, 413, "{}", reply.body);
}

#[test]
fn registration_is_rate_limited_per_source_with_a_retry_after() {
    let server = Server::start_with_admin();
    let settings = r#"{"registrations_per_minute_per_source": 3}"#;
    let set = ["realm", "set", "--server", &server.base, "--realm", "alpha", "--settings", settings];
    let (ok, _, err) = crate::support::cli(&set, crate::support::ADMIN_TOKEN);
    assert!(ok, "{err}");
    for _ in 0..3 {
        assert_eq!(server.register_raw(&seed_registration().to_string()).status, 201);
    }
    let refused = server.register_raw(&seed_registration().to_string());
    assert_eq!((refused.status, refused.json["error"].as_str()), (429, Some("slow_down")), "{}", refused.body);
    let wait: u64 = refused.retry_after.as_deref().and_then(|w| w.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&wait), "Retry-After: {:?}", refused.retry_after);
}

/// Sets the realm `alpha`'s settings as the operator.
fn set_realm(server: &Server, settings: &str) {
    let set = ["realm", "set", "--server", &server.base, "--realm", "alpha", "--settings", settings];
    let (ok, _, err) = crate::support::cli(&set, crate::support::ADMIN_TOKEN);
    assert!(ok, "{err}");
}

#[test]
fn registration_stops_at_the_realms_client_cap_with_access_denied() {
    let server = Server::start_with_admin();
    set_realm(&server, r#"{"max_clients": 3}"#);
    let registered: Vec<_> = (0..3).map(|_| server.register_raw(&seed_registration().to_string())).collect();
    assert!(registered.iter().all(|r| r.status == 201));
    let refused = server.register_raw(&seed_registration().to_string());
    refused.assert_error(403, "access_denied");
    assert!(refused.json["error_description"].as_str().is_some_and(|d| d.contains("3 clients")), "{}", refused.body);
    // Deleting a client makes room for one more.
    let first = &registered[0].json;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let token = first["registration_access_token"].as_str().unwrap_or_default();
    let deleted = agent
        .delete(first["registration_client_uri"].as_str().unwrap_or_default())
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .map(|r| r.status().as_u16());
    assert_eq!(deleted.ok(), Some(204));
    assert_eq!(server.register_raw(&seed_registration().to_string()).status, 201);
    server.register_raw(&seed_registration().to_string()).assert_error(403, "access_denied");
}

#[test]
fn racing_registrations_never_pass_the_client_cap() {
    let server = Server::start_with_admin();
    set_realm(&server, r#"{"max_clients": 5}"#);
    let start = std::sync::Barrier::new(20);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|_| {
                let (server, start) = (&server, &start);
                s.spawn(move || {
                    start.wait();
                    server.register_raw(&seed_registration().to_string()).status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a registration thread")).collect()
    });
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), 15, "{statuses:?}");
}

#[test]
fn metadata_over_a_bound_is_invalid_client_metadata_naming_the_field() {
    let server = Server::start();
    let long_uri = format!("https://a.example/{}", "a".repeat(1900));
    for (field, value) in [
        ("contacts", json!(vec!["ops@agent.example"; 100])),
        ("logo_uri", json!(format!("https://a.example/{}", "l".repeat(5000)))),
        ("software_statement", json!("s".repeat(20_000))),
        ("redirect_uris", json!(vec![long_uri; 30])),
    ] {
        let mut body = seed_registration();
        body[field] = value;
        let reply = server.register_raw(&body.to_string());
        reply.assert_error(400, "invalid_client_metadata");
        assert!(reply.json["error_description"].as_str().is_some_and(|d| d.contains(field)), "{}", reply.body);
    }
}

#[test]
fn a_body_far_over_the_limit_is_still_answered_413() {
    let server = Server::start();
    // More than the kernel buffers between client and server: the client
    // is still sending when the 413 is written.
    let mut body = seed_registration();
    body["client_name"] = json!("x".repeat(4 << 20));
    for _ in 0..3 {
        let reply = server.register_raw(&body.to_string());
        assert_eq!(reply.status, 413, "{}", reply.body);
    }
}
