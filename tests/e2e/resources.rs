//! Resource indicators (RFC 8707) on every grant: `resource` names the
//! protected resources a token is for and becomes its `aud`; a resource
//! the realm does not allow, or that is not an absolute URI without a
//! fragment, is `invalid_target`; a refresh may narrow the resources of
//! its grant, never widen them. Also the realm's metadata at RFC 8414's
//! location, and the `application_type` registration keeps.

use serde_json::{Value, json};

use crate::support::{ACCESS_TOKEN_TYPE, Credentials, Reply, Server, TOKEN_EXCHANGE, jwt_parts, seed_registration};

const MCP: &str = "https://mcp.example.com/mcp";
const CALENDAR: &str = "https://api.example.com/tenants/acme/calendar";
const CONTACTS: &str = "https://api.example.com/tenants/acme/contacts";

/// A server whose demo realm allows [`MCP`] exactly and everything below
/// `https://api.example.com/tenants/`.
fn server() -> Server {
    let server = Server::start_with_admin();
    let allowed = json!({"allowed_resources": [MCP, "https://api.example.com/tenants/*"]});
    let reply = server.admin("PATCH", "/alpha", "application/json", allowed.to_string().into_bytes()).expect("PATCH");
    assert_eq!(reply.status, 200, "{}", reply.body);
    server
}

/// A client credentials request by `client` naming `resources`.
fn client_credentials(server: &Server, client: &Credentials, resources: &[&str]) -> Reply {
    let mut form = vec![("grant_type", "client_credentials"), ("scope", "read")];
    form.extend(resources.iter().map(|r| ("resource", *r)));
    server.token(&form, Some(client))
}

/// The claims of the JWT access token in a 200 reply.
fn claims(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    jwt_parts(reply.json["access_token"].as_str().unwrap_or_default()).1
}

/// `client` exchanges its own `subject_token` for `read write`, with
/// `targets` (`resource` or `audience` pairs).
fn exchange(server: &Server, client: &Credentials, subject_token: &str, targets: &[(&str, &str)]) -> Reply {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("scope", "read write"),
    ];
    form.extend_from_slice(targets);
    server.token(&form, Some(client))
}

/// A refresh of `refresh_token` by `client` naming `resources`.
fn refresh(server: &Server, client: &Credentials, refresh_token: &str, resources: &[&str]) -> Reply {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    form.extend(resources.iter().map(|r| ("resource", *r)));
    server.token(&form, Some(client))
}

#[test]
fn a_client_credentials_token_is_for_the_resources_asked_for() {
    let server = server();
    let agent = server.register_agent();
    assert_eq!(claims(&client_credentials(&server, &agent, &[MCP]))["aud"], MCP, "one resource: a string");
    assert_eq!(
        claims(&client_credentials(&server, &agent, &[CALENDAR, MCP, CALENDAR]))["aud"],
        json!([CALENDAR, MCP]),
        "several: an array, in the order asked, without repeats"
    );
    assert_eq!(
        claims(&client_credentials(&server, &agent, &[]))["aud"],
        agent.client_id.as_str(),
        "none: the client, as before"
    );
}

#[test]
fn a_resource_the_realm_does_not_allow_is_invalid_target() {
    let server = server();
    let agent = server.register_agent();
    for foreign in [
        &["https://evil.example/mcp"][..],
        &[MCP, "https://evil.example/mcp"],
        // Below the prefix's host, but not its path; its host spelled
        // longer; its path walked out of.
        &["https://api.example.com/admin"],
        &["https://api.example.com.evil.example/tenants/acme"],
        &["https://api.example.com/tenants/../admin"],
        &["https://api.example.com/tenants/acme%2F..%2F..%2Fadmin"],
    ] {
        client_credentials(&server, &agent, foreign).assert_error(400, "invalid_target");
    }
    // A realm that lists no resources allows none.
    let plain = Server::start();
    let agent = plain.register_agent();
    client_credentials(&plain, &agent, &[MCP]).assert_error(400, "invalid_target");
}

#[test]
fn a_resource_that_is_no_absolute_uri_or_has_a_fragment_is_invalid_target() {
    let server = server();
    let agent = server.register_agent();
    for bad in ["/mcp", "mcp.example.com/mcp", "https://mcp.example.com/mcp#tools", "https:///mcp", "https://a b/"] {
        let reply = client_credentials(&server, &agent, &[bad]);
        reply.assert_error(400, "invalid_target");
        assert!(reply.json["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}", reply.body);
    }
}

#[test]
fn the_audit_records_every_audience_a_token_was_issued_for() {
    let server = server();
    let agent = server.register_agent();
    assert_eq!(client_credentials(&server, &agent, &[MCP, CALENDAR]).status, 200);
    // Decisions are stored in batches, a moment after their requests.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let audience = loop {
        let query = format!("/alpha/decisions?client_id={}&outcome=allowed", agent.client_id);
        let reply = server.admin("GET", &query, "", vec![]).expect("decisions");
        let tokens: Vec<Value> = reply.json["decisions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["event"] == "token")
            .cloned()
            .collect();
        if let Some(token) = tokens.first() {
            break token["audience"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "no token decision: {}", reply.body);
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(audience, json!([MCP, CALENDAR]));
}

#[test]
fn introspection_reports_the_aud_as_issued() {
    let server = server();
    // An ordinary client gets opaque tokens, kept server-side.
    let registered = server.post_json(&server.realm_url("register"), &seed_registration().to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let client = Credentials::from_registration(&registered.json);
    let agent = server.register_agent();
    for (holder, resources, aud) in [
        (&client, &[MCP, CALENDAR][..], json!([MCP, CALENDAR])),
        (&client, &[MCP], json!(MCP)),
        (&agent, &[CALENDAR, CONTACTS], json!([CALENDAR, CONTACTS])),
    ] {
        let issued = client_credentials(&server, holder, resources);
        assert_eq!(issued.status, 200, "{}", issued.body);
        let token = issued.json["access_token"].as_str().unwrap_or_default();
        let introspected = server.introspect(&agent, token);
        assert_eq!((introspected.json["active"].clone(), introspected.json["aud"].clone()), (json!(true), aud));
    }
}

#[test]
fn an_exchange_honours_resource_and_audience_like_any_grant() {
    let server = server();
    let agent = server.register_agent();
    let subject = server.read_token(&agent);
    let exchanged = exchange(&server, &agent, &subject, &[("resource", MCP)]);
    assert_eq!(claims(&exchanged)["aud"], MCP);
    let both = exchange(&server, &agent, &subject, &[("resource", CALENDAR), ("resource", MCP), ("audience", MCP)]);
    assert_eq!(claims(&both)["aud"], json!([CALENDAR, MCP]), "repeatable, one audience for both parameters");
    for refused in [
        &[("resource", "https://evil.example/mcp")][..],
        &[("audience", "https://evil.example/mcp")],
        &[("resource", MCP), ("resource", "https://evil.example/mcp")],
        &[("resource", "https://mcp.example.com/mcp#x")],
        &[("resource", "mcp")],
    ] {
        exchange(&server, &agent, &subject, refused).assert_error(400, "invalid_target");
    }
    let plain = exchange(&server, &agent, &subject, &[]);
    assert_eq!(claims(&plain)["aud"], agent.client_id.as_str(), "none: the client, as before");
}

#[test]
fn a_refresh_may_narrow_the_resources_of_its_grant_but_never_widen_them() {
    let server = server();
    let agent = server.register_agent();
    let subject = server.read_token(&agent);
    let exchanged = exchange(&server, &agent, &subject, &[("resource", MCP), ("resource", CALENDAR)]);
    assert_eq!(claims(&exchanged)["aud"], json!([MCP, CALENDAR]));
    let refresh_token = exchanged.json["refresh_token"].as_str().unwrap_or_default().to_string();

    // CONTACTS is allowed in the realm, but not part of this grant: a
    // refused refresh does not spend the token.
    refresh(&server, &agent, &refresh_token, &[CONTACTS]).assert_error(400, "invalid_target");
    refresh(&server, &agent, &refresh_token, &[MCP, CONTACTS]).assert_error(400, "invalid_target");
    refresh(&server, &agent, &refresh_token, &["https://evil.example/mcp"]).assert_error(400, "invalid_target");

    let narrowed = refresh(&server, &agent, &refresh_token, &[CALENDAR]);
    assert_eq!(claims(&narrowed)["aud"], CALENDAR, "a narrower resource downscopes the token");
    let next = narrowed.json["refresh_token"].as_str().unwrap_or_default().to_string();
    let whole = refresh(&server, &agent, &next, &[]);
    assert_eq!(claims(&whole)["aud"], json!([MCP, CALENDAR]), "the grant itself keeps every resource");

    // A grant of the client's default audience names no resource to ask for.
    let plain = exchange(&server, &agent, &subject, &[]);
    let plain_refresh = plain.json["refresh_token"].as_str().unwrap_or_default().to_string();
    refresh(&server, &agent, &plain_refresh, &[MCP]).assert_error(400, "invalid_target");
}

#[test]
fn metadata_is_served_at_the_rfc8414_location_with_the_realms_issuer() {
    let server = Server::start();
    let issuer = format!("{}/am/oauth2/realms/root/realms/alpha", server.base);
    let inserted = server
        .get_url(&format!("{}/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/alpha", server.base));
    assert_eq!(inserted.status, 200, "{}", inserted.body);
    assert_eq!(inserted.json["issuer"], issuer.as_str());
    assert_eq!(inserted.json, server.get(".well-known/openid-configuration").json, "one document at both locations");
    assert_eq!(inserted.json["token_endpoint"], format!("{issuer}/access_token"));
    // What MCP clients require of it: the authorization endpoint, code
    // with PKCE S256 only, and `iss` in authorization responses.
    assert_eq!(inserted.json["authorization_endpoint"], format!("{issuer}/authorize"));
    assert_eq!(inserted.json["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(inserted.json["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(inserted.json["authorization_response_iss_parameter_supported"], true);
    let elsewhere =
        format!("{}/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/nowhere", server.base);
    assert_eq!(server.get_url(&elsewhere).status, 404);

    // The base path is the configured one.
    let rebased = Server::start_with_args(&["--base-path", "/auth"]);
    let reply = rebased.get_url(&format!(
        "{}/.well-known/oauth-authorization-server/auth/oauth2/realms/root/realms/alpha",
        rebased.base
    ));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["issuer"], format!("{}/auth/oauth2/realms/root/realms/alpha", rebased.base));
    let old_base =
        format!("{}/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/alpha", rebased.base);
    assert_eq!(rebased.get_url(&old_base).status, 404);
}

#[test]
fn registration_keeps_application_type_and_refuses_unknown_ones() {
    let server = Server::start();
    let mut native = seed_registration();
    native["application_type"] = json!("native");
    let registered = server.register_raw(&native.to_string());
    assert_eq!((registered.status, registered.json["application_type"].clone()), (201, json!("native")));
    let default = server.register_raw(&seed_registration().to_string());
    assert_eq!((default.status, default.json["application_type"].clone()), (201, json!("web")));

    // Read back through RFC 7592 as registered.
    let read = ureq::http::Request::builder()
        .method("GET")
        .uri(registered.json["registration_client_uri"].as_str().unwrap_or_default())
        .header(
            "Authorization",
            format!("Bearer {}", registered.json["registration_access_token"].as_str().unwrap_or_default()),
        )
        .body(Vec::new())
        .expect("a request");
    let read = crate::support::answered(server.send(read));
    assert_eq!((read.status, read.json["application_type"].clone()), (200, json!("native")), "{}", read.body);

    native["application_type"] = json!("browser");
    server.register_raw(&native.to_string()).assert_error(400, "invalid_client_metadata");
}
