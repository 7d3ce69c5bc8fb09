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
