//! A realm's clients as its operator manages them: listed and shown,
//! disabled (stopping at once everything the client holds, for good),
//! enabled again, and deleted without the client's registration token;
//! through the admin API and `agentauth client ...`.

use std::time::Duration;

use serde_json::Value;

use crate::authorize::admin;
use crate::support::{ADMIN_TOKEN, Server, cli};

/// Whether `token` introspects as active, asked by `caller`.
fn active(server: &Server, caller: &agentauth_testkit::Credentials, token: &str) -> bool {
    server.introspect(caller, token).json["active"] == true
}

#[test]
fn a_disabled_agent_stops_at_once_and_enabling_it_brings_nothing_back() {
    let server = Server::start_with_admin();
    let agent = server.register_agent();
    let watcher = server.register_agent();
    let read = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &read, "read write");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let wider = exchanged.json["access_token"].as_str().expect("an exchanged token").to_string();
    let refresh = exchanged.json["refresh_token"].as_str().expect("a refresh token").to_string();
    for token in [&read, &wider, &refresh] {
        assert!(active(&server, &watcher, token), "live before");
    }

    let path = format!("/alpha/clients/{}", agent.client_id);
    // Its exchanged JWT and refresh token are server-side, so counted; the
    // client credentials JWT is not stored, so not.
    let (_, shown) = admin(&server, "GET", &path, None);
    assert_eq!(shown["live_tokens"], 2, "{shown}");
    let (_, listed) = admin(&server, "GET", "/alpha/clients", None);
    let counts: Vec<(&str, i64)> = listed["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|c| Some((c["client_id"].as_str()?, c["live_tokens"].as_i64()?)))
        .collect();
    assert!(counts.contains(&(agent.client_id.as_str(), 2)) && counts.contains(&(watcher.client_id.as_str(), 0)));

    let (status, shown) = admin(&server, "POST", &format!("{path}/disable"), None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["state"], "disabled", "{shown}");
    assert!(shown.get("client_secret").is_none() && shown.get("secret_hash").is_none(), "{shown}");

    let (_, shown) = admin(&server, "GET", &path, None);
    assert_eq!(shown["live_tokens"], 0, "its server-side tokens are gone: {shown}");
    // Everything it held is dead, as a JWT, a refresh token, a subject.
    for token in [&read, &wider, &refresh] {
        assert!(!active(&server, &watcher, token), "dead after disabling");
    }
    let refreshed = server.token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)], Some(&agent));
    refreshed.assert_error(401, "invalid_client");
    // It cannot authenticate, by its secret or otherwise.
    let asked = server.token(&[("grant_type", "client_credentials"), ("scope", "read")], Some(&agent));
    asked.assert_error(401, "invalid_client");
    // Another client cannot exchange its tokens either.
    let by_other = server.exchange(&watcher, &read, "read");
    assert_eq!(by_other.status, 400, "{}", by_other.body);

    // Enabled again: it works again, and what it held stays dead.
    let (status, shown) = admin(&server, "POST", &format!("{path}/enable"), None);
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["state"], "active");
    assert!(shown["tokens_valid_after"].as_i64().is_some_and(|t| t > 0), "{shown}");
    for token in [&read, &wider, &refresh] {
        assert!(!active(&server, &watcher, token), "not resurrected");
    }
    // Tokens are stamped by the second: one from the second of the
    // disabling would be dead at birth, so the server asks to wait.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = server.read_token(&agent);
    assert!(active(&server, &watcher, &fresh), "a new token lives");

    // Both changes are in the realm's audit log.
    let (status, audit) = admin(&server, "GET", "/alpha/audit", None);
    assert_eq!(status, 200, "{audit}");
    let actions: Vec<&str> =
        audit["entries"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"disable-client") && actions.contains(&"enable-client"), "{audit}");
}

#[test]
fn an_operator_lists_shows_disables_and_deletes_clients_from_the_command_line() {
    let server = Server::start_with_admin();
    let agents: Vec<_> = (0..3).map(|_| server.register_agent()).collect();
    let run = |args: &[&str]| {
        let mut all = vec!["client"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--realm", "alpha", "--server", server.base.as_str()]);
        let (ok, stdout, stderr) = cli(&all, ADMIN_TOKEN);
        assert!(ok, "agentauth {args:?}: {stderr}");
        serde_json::from_str::<Value>(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    // Pages of two, in id order, with the next page's start.
    let first = run(&["list", "--limit", "2"]);
    let listed = |page: &Value| -> Vec<String> {
        page["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["client_id"].as_str().map(String::from))
            .collect()
    };
    let mut ids = listed(&first);
    assert_eq!(ids.len(), 2, "{first}");
    let next = first["next"].as_str().expect("a next page").to_string();
    ids.extend(listed(&run(&["list", "--limit", "2", "--after", &next])));
    let mut expected: Vec<String> = agents.iter().map(|a| a.client_id.clone()).collect();
    expected.sort();
    assert_eq!(ids, expected);

    // Filters: the agents, none of them disabled or unused for a day yet.
    assert_eq!(listed(&run(&["list", "--agents"])).len(), 3);
    assert!(listed(&run(&["list", "--state", "disabled"])).is_empty());
    assert!(listed(&run(&["list", "--unused-days", "1"])).is_empty());

    let id = agents[0].client_id.as_str();
    let shown = run(&["show", id]);
    assert_eq!((shown["client_id"].as_str(), shown["state"].as_str()), (Some(id), Some("active")), "{shown}");
    assert_eq!(shown["is_ai_agent"], true);
    assert_eq!(run(&["disable", id])["state"], "disabled");
    assert_eq!(listed(&run(&["list", "--state", "disabled"])), [id]);
    assert_eq!(run(&["enable", id])["state"], "active");
    assert_eq!(run(&["delete", id])["deleted"], true);

    // Gone: its tokens with it, and a second delete finds nothing.
    let (status, body) = admin(&server, "GET", &format!("/alpha/clients/{id}"), None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = admin(&server, "DELETE", &format!("/alpha/clients/{id}"), None);
    assert_eq!(status, 404, "{body}");
    let secret = [
        ("grant_type", "client_credentials"),
        ("scope", "read"),
        ("client_id", id),
        ("client_secret", agents[0].client_secret.as_str()),
    ];
    server.token(&secret, None).assert_error(401, "invalid_client");
    let (ok, _, stderr) = cli(
        &["client", "disable", "no-such-client", "--realm", "alpha", "--server", server.base.as_str()],
        ADMIN_TOKEN,
    );
    assert!(!ok && (stderr.contains("404") || stderr.contains("no client")), "{stderr}");
    // Another realm's clients are not this one's.
    let (status, body) = admin(&server, "GET", "/nowhere/clients", None);
    assert_eq!(status, 404, "{body}");
}
