//! The audit of decisions: each token issued or refused and each
//! registration is recorded with who asked, what was issued, which plugin
//! versions decided (and their components' sha256), and the outcome;
//! queryable by client, plugin version, outcome and time, through the
//! admin API and `agentauth realm audit`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Credentials, Server, cli, seed_registration};

/// The realm's decisions matching `query`, once at least `count` are there
/// (decisions are stored in batches, a moment after their requests).
fn decisions(server: &Server, query: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = server.admin("GET", &format!("/alpha/decisions?{query}"), "", vec![]).expect("decisions");
        assert_eq!(reply.status, 200, "{}", reply.body);
        let listed = reply.json["decisions"].as_array().cloned().unwrap_or_default();
        if listed.len() >= count || Instant::now() > deadline {
            return listed;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sha256(bytes: &[u8]) -> String {
    agentauth_plugin_host::sha256_hex(bytes)
}

#[test]
fn every_token_and_registration_is_audited_with_the_plugins_that_decided() {
    let server = Server::start_with_admin();
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let registered = server.register_raw(&seed_registration().to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let agent = Credentials::from_registration(&registered.json);
    let token = server.read_token(&agent);
    let exchanged = server.exchange(&agent, &token, "read write");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let wrong = Credentials { client_id: agent.client_id.clone(), client_secret: "not-the-secret-0123456789".into() };
    server.token(&[("grant_type", "client_credentials")], Some(&wrong)).assert_error(401, "invalid_client");
    let refused = server.register_raw(&json!({"grant_types": ["implicit"]}).to_string());
    assert_eq!(refused.status, 400, "{}", refused.body);

    let of_agent = decisions(&server, &format!("client_id={}", agent.client_id), 4);
    let events: Vec<(&str, &str, Option<&str>)> = of_agent
        .iter()
        .map(|d| (d["event"].as_str().unwrap_or(""), d["outcome"].as_str().unwrap_or(""), d["error"].as_str()))
        .collect();
    assert_eq!(
        events,
        [
            ("register", "allowed", None),
            ("token", "allowed", None),
            ("token", "allowed", None),
            ("token", "refused", Some("invalid_client")),
        ],
        "{of_agent:?}"
    );
    let dcr = json!({"name": "software-agent-dcr", "version": 1,
                     "sha256": sha256(agentauth_seed_policies::SOFTWARE_AGENT_DCR), "outcome": "allowed"});
    let may_act = json!({"name": "software-agent-may-act", "version": 1,
                         "sha256": sha256(agentauth_seed_policies::SOFTWARE_AGENT_MAY_ACT), "outcome": "allowed"});
    assert_eq!(of_agent[0]["plugins"], json!([dcr]));

    let issued = &of_agent[1];
    assert_eq!(issued["grant_type"], "client_credentials");
    assert_eq!(issued["plugins"], json!([may_act]));
    assert_eq!(issued["token_kind"], "jwt");
    let claims = crate::support::jwt_parts(&token).1;
    assert_eq!(issued["subject"], claims["sub"]);
    assert_eq!(issued["scope"], "read");
    assert_eq!(issued["jti"], claims["jti"]);
    assert!(issued["request_id"].as_str().is_some_and(|id| id.len() == 32), "{issued}");

    let exchange = &of_agent[2];
    assert_eq!(exchange["grant_type"], "urn:ietf:params:oauth:grant-type:token-exchange");
    assert_eq!(exchange["scope"], "read write");
    assert_eq!(exchange["actors"], json!([agent.client_id]), "the agent acts for the subject");

    // By plugin version, outcome and time.
    let by_version = decisions(&server, "plugin=software-agent-may-act&version=1", 2);
    assert_eq!(by_version.len(), 2, "{by_version:?}");
    assert!(decisions(&server, "plugin=software-agent-may-act&version=2", 0).is_empty());
    let refusals = decisions(&server, "outcome=refused", 2);
    let codes: Vec<&str> = refusals.iter().filter_map(|d| d["error"].as_str()).collect();
    assert_eq!(codes, ["invalid_client", "invalid_client_metadata"], "{refusals:?}");
    assert!(decisions(&server, &format!("until={started}"), 0).is_empty(), "nothing before the test began");

    // The CLI asks the same.
    let (ok, out, err) = cli(
        &[
            "realm",
            "audit",
            "--server",
            &server.base,
            "--realm",
            "alpha",
            "--client",
            &agent.client_id,
            "--since",
            "1h",
        ],
        ADMIN_TOKEN,
    );
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(listed["decisions"].as_array().map(Vec::len), Some(4), "{out}");

    // No secret is audited.
    let everything = decisions(&server, "", 5);
    assert_eq!(everything.len(), 5, "{everything:?}");
    let text = serde_json::to_string(&everything).expect("JSON");
    let secrets = [
        agent.client_secret.as_str(),
        token.as_str(),
        exchanged.json["access_token"].as_str().unwrap_or("absent"),
        registered.json["registration_access_token"].as_str().unwrap_or("absent"),
        "not-the-secret-0123456789",
    ];
    for secret in secrets {
        assert!(!text.contains(secret), "a secret in the audit");
    }
}

#[test]
fn a_realm_admin_reads_only_its_own_realms_decisions() {
    let server = Server::start_with_admin();
    let (ok, out, err) =
        cli(&["realm", "add-admin", "--server", &server.base, "--realm", "alpha", "--name", "ops"], ADMIN_TOKEN);
    assert!(ok, "{err}");
    let realm_admin = serde_json::from_str::<Value>(&out).expect("JSON")["token"].as_str().expect("token").to_string();
    let created = server.admin("PUT", "/beta", "application/json", b"{}".to_vec()).expect("PUT");
    assert_eq!(created.status, 201, "{}", created.body);
    let (ok, _, err) =
        cli(&["realm", "audit", "--server", &server.base, "--realm", "alpha", "--decisions"], &realm_admin);
    assert!(ok, "{err}");
    let (ok, _, err) =
        cli(&["realm", "audit", "--server", &server.base, "--realm", "beta", "--decisions"], &realm_admin);
    assert!(!ok && err.contains("403"), "{err}");
}
