//! Operators create, configure and delete realms from the command line;
//! each realm is its own issuer with its own keys and policies.

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, Server, cli};

fn run(server: &Server, args: &[&str]) -> Result<Value, String> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", server.base.as_str()]);
    let (ok, out, err) = cli(&all, ADMIN_TOKEN);
    if ok { serde_json::from_str(&out).map_err(|e| format!("{e}: {out}")) } else { Err(err) }
}

#[test]
fn an_operator_sets_up_a_second_realm_for_agents() {
    let server = Server::start_with_admin();
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = r#"{"ai_agents_enabled": true, "open_registration": true, "allowed_scopes": ["read", "write"]}"#;
    let created = run(&server, &["realm", "create", "--realm", "beta", "--settings", settings]).expect("created");
    assert_eq!(created["settings"]["signing_alg"], "ES256", "new realms sign with ES256");
    assert!(run(&server, &["realm", "create", "--realm", "beta"]).unwrap_err().contains("409"));
    assert!(
        run(&server, &["realm", "set", "--realm", "beta", "--settings", r#"{"access_token_lifetim": 60}"#])
            .unwrap_err()
            .contains("unknown field")
    );
    assert!(
        run(&server, &["realm", "set", "--realm", "beta", "--settings", r#"{"plugin_timeout_ms": 0}"#])
            .unwrap_err()
            .contains("plugin_timeout_ms")
    );

    for (name, hook, bytes) in [
        ("software-agent-dcr", "dcr", agentauth_plugins::SOFTWARE_AGENT_DCR),
        ("software-agent-may-act", "may-act", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT),
    ] {
        let file = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&file, bytes).expect("writing a plugin");
        let file = file.to_string_lossy().into_owned();
        run(&server, &["plugin", "push", "--realm", "beta", "--name", name, "--hook", hook, &file]).expect("pushed");
    }
    run(&server, &["realm", "set-hook", "--realm", "beta", "--hook", "dcr", "--plugin", "software-agent-dcr"])
        .expect("hook set");
    let realms = run(&server, &["realm", "list"]).expect("listed");
    assert_eq!(realms["realms"], serde_json::json!(["alpha", "beta"]));

    // Agents register in beta, which publishes its own ES256 key.
    let url = |endpoint: &str| format!("{}/am/oauth2/realms/root/realms/beta/{endpoint}", server.base);
    let jwks = server.get_url(&url("connect/jwk_uri")).json;
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
    assert_ne!(jwks["keys"][0]["kid"], server.get("connect/jwk_uri").json["keys"][0]["kid"]);
    let registered = server.post_json(&url("aiagent/register"), &crate::support::seed_registration().to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert_eq!(registered.json["providerOverridesEnabled"], true);
    let agent = crate::support::Credentials::from_registration(&registered.json);
    // The same agent is unknown to alpha.
    server.token(&[("grant_type", "client_credentials")], Some(&agent)).assert_error(401, "invalid_client");

    run(&server, &["realm", "delete", "--realm", "beta"]).expect("deleted");
    assert_eq!(server.post_json(&url("aiagent/register"), "{}").status, 404);
    assert!(run(&server, &["realm", "show", "--realm", "beta"]).unwrap_err().contains("404"));
}

#[test]
fn a_realm_created_under_a_deleted_realms_name_does_not_inherit_its_audit_log() {
    let server = Server::start_with_admin();
    let actions = |realm: &str| -> Vec<String> {
        let log = run(&server, &["realm", "audit", "--realm", realm]).expect("the audit log");
        log["entries"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str().map(String::from)).collect()
    };
    run(&server, &["realm", "create", "--realm", "beta"]).expect("created");
    run(&server, &["realm", "set", "--realm", "beta", "--settings", r#"{"open_registration": true}"#]).expect("set");
    run(&server, &["keys", "rotate", "--realm", "beta"]).expect("rotated");
    run(&server, &["realm", "delete", "--realm", "beta"]).expect("deleted");

    run(&server, &["realm", "create", "--realm", "beta"]).expect("created again");
    assert_eq!(actions("beta"), ["create-realm"], "only the new realm's own history");
    assert!(actions("alpha").iter().all(|a| a != "delete-realm"), "other realms' logs are their own");
}
