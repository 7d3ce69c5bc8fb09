//! The seed flow with the same policies written in Python and JavaScript.
//!
//! The components come from `scripts/build-polyglot` (run by `make test`
//! before these tests): they need componentize-py and componentize-js,
//! which plain `cargo test` does not install, hence `#[ignore]`.

use std::path::PathBuf;

use crate::support::{ACCESS_TOKEN_TYPE, ADMIN_TOKEN, Server, cli, jwt_parts};

fn component(name: &str) -> String {
    let dir = std::env::var_os("AGENTAUTH_POLYGLOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/polyglot"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run scripts/build-polyglot (make test does)", path.display());
    path.to_string_lossy().into_owned()
}

/// Replaces the demo realm's two policies with `lang`'s, then runs the
/// seed flow: register, read token with may_act, exchange for read write.
fn seed_flow_with(lang: &str) {
    let server = Server::start_with_admin();
    for (name, hook) in [("software-agent-dcr", "dcr"), ("software-agent-may-act", "may-act")] {
        let file = component(&format!("{lang}-{name}.wasm"));
        let push =
            ["plugin", "push", "--server", &server.base, "--realm", "alpha", "--name", name, "--hook", hook, &file];
        let (ok, out, err) = cli(&push, ADMIN_TOKEN);
        assert!(ok, "pushing {lang} {name}: {err}");
        assert!(out.contains("\"version\": 2"), "{out}");
    }

    let registration = server.register_raw(&crate::support::seed_registration().to_string());
    assert_eq!(registration.status, 201, "{}", registration.body);
    assert_eq!(registration.json["providerOverridesEnabled"], true, "the {lang} DCR policy ran");
    assert_eq!(registration.json["statelessTokensEnabled"], true);
    let agent = crate::support::Credentials::from_registration(&registration.json);

    let token = server.read_token(&agent);
    let (_, claims) = jwt_parts(&token);
    assert_eq!(claims["may_act"]["sub"], format!("(age!{})", agent.client_id), "the {lang} may-act policy ran");

    let exchanged = server.exchange(&agent, &token, "read write");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    assert_eq!(exchanged.json["scope"], "read write");
    assert_eq!(exchanged.json["issued_token_type"], ACCESS_TOKEN_TYPE);
}

#[test]
#[ignore = "needs scripts/build-polyglot; make test runs it"]
fn the_seed_flow_runs_on_python_policies() {
    seed_flow_with("python");
}

#[test]
#[ignore = "needs scripts/build-polyglot; make test runs it"]
fn the_seed_flow_runs_on_javascript_policies() {
    seed_flow_with("js");
}

/// Runs `lang`'s authorize policy through `agentauth plugin test` for an AI
/// agent and for an ordinary client, and checks it decides as the Rust
/// one does: the agent may act for the user, without `admin`, and must ask
/// consent again for `write`.
fn authorize_policy_with(lang: &str) {
    let file = component(&format!("{lang}-agent-for-user.wasm"));
    let dir = tempfile::tempdir().expect("temp dir");
    let decide = |is_ai_agent: bool| {
        let case = serde_json::json!({
            "client": {"client_id": "agent-1", "is_ai_agent": is_ai_agent},
            "user": {"sub": "usr_1", "username": "ada"},
            "authorization_request": {"scopes": ["read", "write", "admin"], "resources": ["https://mcp.example/"]},
        });
        let input = dir.path().join(format!("case-{is_ai_agent}.json"));
        std::fs::write(&input, case.to_string()).expect("writing the case");
        let (ok, out, err) =
            cli(&["plugin", "test", &file, "--hook", "authorize", "--input", &input.to_string_lossy()], ADMIN_TOKEN);
        assert!(ok, "{lang}: {out} {err}");
        let printed: serde_json::Value = serde_json::from_str(&out).expect("plugin test prints JSON");
        assert_eq!(printed["allowed"], true, "{lang}: {out}");
        printed["decision"].clone()
    };
    assert_eq!(
        decide(true),
        serde_json::json!({
            "scopes": ["read", "write"],
            "require_consent": true,
            "may_act": {"client_id": "agent-1", "sub": "(age!agent-1)"},
        }),
        "{lang}"
    );
    assert_eq!(
        decide(false),
        serde_json::json!({"scopes": ["read", "write", "admin"], "require_consent": false, "may_act": null}),
        "{lang}"
    );
}

#[test]
#[ignore = "needs scripts/build-polyglot; make test runs it"]
fn the_authorize_policy_decides_alike_in_python() {
    authorize_policy_with("python");
}

#[test]
#[ignore = "needs scripts/build-polyglot; make test runs it"]
fn the_authorize_policy_decides_alike_in_javascript() {
    authorize_policy_with("js");
}
