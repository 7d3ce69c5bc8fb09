//! The seed flow with the same policies written in Python and JavaScript,
//! and the example authorize and assertion policies deciding alike in
//! Rust, Python and JavaScript.
//!
//! The components come from `scripts/build-polyglot` (run by `make test`
//! before these tests): they need componentize-py and componentize-js,
//! which plain `cargo test` does not install, hence `#[ignore]`.

use std::path::PathBuf;

use agentauth_core::{Client, ClientAttributes};
use agentauth_plugin_host::{AssertionCase, AssertionPurpose, ExternalToken, HookError, HookKind, Limits, PluginHost};
use serde_json::{Value, json};

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

/// One case for the assertion policy: a token used for `purpose`, with
/// `claims`, presented for the client `helper` (`agent-1`) or for none,
/// asking for `scopes`; and what `agentauth plugin test` prints for it.
struct AssertionExample {
    what: &'static str,
    purpose: AssertionPurpose,
    claims: Value,
    for_client: bool,
    scopes: &'static [&'static str],
    printed: Value,
}

fn example(
    what: &'static str,
    purpose: AssertionPurpose,
    claims: Value,
    for_client: bool,
    scopes: &'static [&'static str],
    printed: Value,
) -> AssertionExample {
    AssertionExample { what, purpose, claims, for_client, scopes, printed }
}

/// A case per rule of the assertion example (plugins/trusted-domains-assertion).
fn assertion_examples() -> Vec<AssertionExample> {
    let person = |email: &str, extra: Value| {
        let mut claims = json!({"iss": "https://idp.example.com", "sub": "248289761001", "email": email,
                                "email_verified": true});
        claims.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        claims
    };
    let workload = |sub: &str| json!({"iss": "https://kubernetes.default.svc", "sub": sub});
    let mapped = |subject: &str, scopes: &[&str], may_act: Value| json!({"allowed": true, "decision": {"subject": subject, "scopes": scopes, "may_act": may_act}});
    let denied = |why: &str| json!({"allowed": false, "denied": why});
    let external = "ext:https://idp.example.com#248289761001";
    vec![
        example(
            "a user of a trusted domain signs in, without admin",
            AssertionPurpose::Login,
            person("ada@example.com", json!({})),
            true,
            &["read", "write", "admin"],
            mapped(external, &["read", "write"], Value::Null),
        ),
        example(
            "an admin's ID-JAG names an agent",
            AssertionPurpose::IdJag,
            person("ada@example.com", json!({"groups": ["admins"], "agent": "agent-9"})),
            true,
            &["read", "admin"],
            mapped(external, &["read", "admin"], json!({"client_id": "agent-9", "sub": null})),
        ),
        example(
            "another domain",
            AssertionPurpose::JwtBearer,
            person("ada@example.org", json!({})),
            true,
            &["read"],
            denied("only verified users of a trusted email domain"),
        ),
        example(
            "an unverified email",
            AssertionPurpose::SubjectToken,
            person("ada@example.com", json!({"email_verified": false})),
            true,
            &["read"],
            denied("only verified users of a trusted email domain"),
        ),
        example(
            "a service account authenticates the client of its name",
            AssertionPurpose::ClientAuthentication,
            workload("system:serviceaccount:agents:helper"),
            true,
            &[],
            mapped("agent-1", &[], Value::Null),
        ),
        example(
            "a service account of another name",
            AssertionPurpose::ClientAuthentication,
            workload("system:serviceaccount:agents:other"),
            true,
            &[],
            denied("this service account is not the client \"agent-1\""),
        ),
        example(
            "a service account for no client",
            AssertionPurpose::ClientAuthentication,
            workload("system:serviceaccount:agents:helper"),
            false,
            &[],
            denied("no client to authenticate"),
        ),
        example(
            "not a service account",
            AssertionPurpose::ClientAuthentication,
            workload("helper"),
            true,
            &[],
            denied("not a Kubernetes service account"),
        ),
    ]
}

/// The client the examples are presented for, as `plugin test` builds it.
const HELPER: &str = "agent-1";

/// Runs the Rust assertion example through `agentauth plugin test
/// --hook assertion`, one case file per example.
#[test]
fn the_assertion_policy_maps_external_tokens_in_rust_and_plugin_test_shows_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("trusted-domains-assertion.wasm");
    std::fs::write(&file, agentauth_plugins::TRUSTED_DOMAINS_ASSERTION).expect("writing the component");
    let file = file.to_string_lossy().into_owned();
    for (i, example) in assertion_examples().into_iter().enumerate() {
        let client = if example.for_client {
            json!({"client_id": HELPER, "metadata": {"client_name": "helper", "scope": "read write admin"}})
        } else {
            Value::Null
        };
        let case = json!({
            "client": client,
            "assertion": {"purpose": example.purpose.as_str(), "claims": example.claims, "scopes": example.scopes},
        });
        let input = dir.path().join(format!("case-{i}.json"));
        std::fs::write(&input, case.to_string()).expect("writing the case");
        let (ok, out, err) =
            cli(&["plugin", "test", &file, "--hook", "assertion", "--input", &input.to_string_lossy()], ADMIN_TOKEN);
        assert!(ok, "{}: {out} {err}", example.what);
        let printed: Value = serde_json::from_str(&out).expect("plugin test prints JSON");
        assert_eq!(printed, example.printed, "{}", example.what);
    }
}

/// Runs `lang`'s assertion policy on every example through the plugin
/// host, in this process (one compilation of the component, not one per
/// case), and checks it answers as the Rust one does.
fn assertion_policy_with(lang: &str) {
    let host = PluginHost::new().expect("a plugin host");
    let name = format!("{lang}-trusted-domains-assertion.wasm");
    let bytes = std::fs::read(component(&name)).expect("reading the component");
    let plugin = host.load(HookKind::Assertion, &name, 1, &bytes).expect("loading the component");
    let metadata = json!({"client_name": "helper", "grant_types": ["client_credentials"], "scope": "read write admin"});
    let helper = Client {
        client_id: HELPER.into(),
        metadata: agentauth_core::registration::parse_metadata(&metadata).expect("valid metadata"),
        attributes: ClientAttributes::default(),
        is_ai_agent: true,
        issued_at: 0,
    };
    let audience = vec!["https://as.example/am/oauth2/realms/root/realms/test".to_string()];
    for example in assertion_examples() {
        let scopes: Vec<String> = example.scopes.iter().map(|s| s.to_string()).collect();
        let claims = example.claims.to_string();
        let case = AssertionCase {
            purpose: example.purpose,
            token: ExternalToken {
                issuer: example.claims["iss"].as_str().expect("iss"),
                subject: example.claims["sub"].as_str().expect("sub"),
                audience: &audience,
                claims: &claims,
            },
            client: example.for_client.then_some(&helper),
            scopes: &scopes,
            resources: &[],
        };
        let printed = match host.run_assertion(&plugin, &Limits::default(), "test", &case) {
            Ok(mapped) => json!({"allowed": true, "decision": {
                "subject": mapped.subject,
                "scopes": mapped.scopes,
                "may_act": mapped.may_act.map(|c| json!({"client_id": c.client_id, "sub": c.sub})),
            }}),
            Err(HookError::Denied(why)) => json!({"allowed": false, "denied": why}),
            Err(other) => panic!("{lang}, {}: {other}", example.what),
        };
        assert_eq!(printed, example.printed, "{lang}, {}", example.what);
    }
}

#[test]
#[ignore = "needs scripts/build-polyglot; make test runs it"]
fn the_assertion_policy_maps_alike_in_python() {
    assertion_policy_with("python");
}

#[test]
#[ignore = "needs scripts/build-polyglot; make test runs it"]
fn the_assertion_policy_maps_alike_in_javascript() {
    assertion_policy_with("js");
}
