//! The web console in a real browser: headless Chromium, driven by
//! `tests/browser/console.mjs`, signs a realm admin in, uploads a plugin
//! version (a broken one refused first), activates it, finds the token
//! request it served in the audit, rolls back and disables an agent; it
//! tries another realm through the pages and by forged requests, and
//! changes without the CSRF token or from another site; then the operator
//! creates and deletes a realm. The screenshots are the README's with
//! `AGENTAUTH_SCREENSHOTS_DIR=docs/screenshots`.
//!
//! Chromium and playwright-core come from `scripts/install-browser` (run
//! by `make test`), hence `#[ignore]` for plain `cargo test`.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::authorize::admin;
use crate::support::{ADMIN_TOKEN, Server, node_script};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const PLUGIN: &str = "software-agent-may-act";

fn screenshots() -> PathBuf {
    match std::env::var_os("AGENTAUTH_SCREENSHOTS_DIR") {
        Some(dir) => Path::new(ROOT).join(dir),
        None => Path::new(ROOT).join("target/browser/console"),
    }
}

#[test]
#[ignore = "needs scripts/install-browser; make test runs it"]
fn in_chromium_a_realm_admin_runs_its_realm_from_the_console_and_no_other() {
    let dir = Path::new(ROOT).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "Chromium or playwright-core is missing: run scripts/install-browser (make test does)"
    );
    let server = Server::start_with_admin();
    assert_eq!(admin(&server, "PUT", "/beta", Some(json!({}))).0, 201);
    let (status, created) = admin(&server, "POST", "/alpha/admins", Some(json!({"name": "ops"})));
    assert_eq!(status, 201, "{created}");
    let agent = server.register_agent();
    let files = tempfile::tempdir().expect("a temporary directory");
    let component = files.path().join(format!("{PLUGIN}.wasm"));
    std::fs::write(&component, agentauth_plugins::SOFTWARE_AGENT_MAY_ACT).expect("writing the component");
    let junk = files.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm but not really a component").expect("writing the junk");
    let keys_before = admin(&server, "GET", "/beta/keys", None).1;

    let plan = json!({
        "base": server.base,
        "tokenUrl": server.realm_url("access_token"),
        "realm": "alpha",
        "otherRealm": "beta",
        "realmAdminToken": created["token"],
        "operatorToken": ADMIN_TOKEN,
        "plugin": PLUGIN,
        "component": component,
        "junk": junk,
        "agent": {"client_id": agent.client_id, "client_secret": agent.client_secret},
        "screenshots": screenshots(),
    });
    let answer = node_script("console.mjs", &[plan.to_string()], "the console run failed");

    // What the pages did, seen through the admin API.
    assert_eq!(answer["afterDisable"], 401, "a disabled agent gets no token: {answer}");
    let token = answer["tokenFromNewVersion"].as_str().expect("a token");
    let (_, clients) = admin(&server, "GET", "/alpha/clients?state=disabled", None);
    assert_eq!(clients["clients"][0]["client_id"], agent.client_id.as_str(), "{clients}");
    let (_, decisions) = admin(&server, "GET", &format!("/alpha/decisions?plugin={PLUGIN}&version=2"), None);
    let served = decisions["decisions"].as_array().expect("decisions");
    assert!(served.iter().any(|d| d["client_id"] == agent.client_id.as_str()), "{decisions}");
    let (_, versions) = admin(&server, "GET", &format!("/alpha/plugins/{PLUGIN}"), None);
    let active: Vec<i64> = versions["plugins"]
        .as_array()
        .expect("versions")
        .iter()
        .filter(|v| v["active"] == true)
        .filter_map(|v| v["version"].as_i64())
        .collect();
    assert_eq!(active, [1], "rolled back to version 1: {versions}");
    let (_, audit) = admin(&server, "GET", "/alpha/audit", None);
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| Some((e["action"].as_str()?, e["actor"].as_str()?)))
        .filter(|(_, actor)| actor.starts_with("realm-admin"))
        .collect();
    for action in ["push", "activate", "rollback", "disable-client"] {
        assert!(actions.contains(&(action, "realm-admin:ops")), "{action} by ops: {actions:?}");
    }
    // The token issued before the agent was disabled is dead.
    let caller = server.register_agent();
    let reply = server.introspect(&caller, token);
    assert_eq!(reply.json["active"], false, "{}", reply.body);
    // Nothing reached the other realm, and the operator's realm is gone.
    assert_eq!(admin(&server, "GET", "/beta/keys", None).1, keys_before);
    assert_eq!(admin(&server, "GET", "/gamma", None).0, 404);
}
