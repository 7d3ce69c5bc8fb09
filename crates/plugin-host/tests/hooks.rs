//! The host runs the shipped policies and fails closed on every way a
//! plugin can misbehave.

#![allow(clippy::unwrap_used)] // a test that unwraps fails with a location

use std::time::{Duration, Instant};

use agentauth_core::{ApplicationType, AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType};
use agentauth_plugin_host::{
    ArtifactCache, ArtifactKey, AssertionCase, AssertionMapping, AssertionPurpose, Attribute, Authorization,
    AuthorizationRequest, DcrInput, ExternalToken, Failure, HookError, HookKind, Limits, MayActClaim, Operation,
    PluginHost, RequestContext, ScopeRequest, TokenView, UserView,
};
use agentauth_plugins as plugins;

fn agent(name: &str) -> Client {
    Client {
        client_id: "agent-1".into(),
        metadata: ClientMetadata {
            redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials, GrantType::TokenExchange],
            response_types: vec![],
            client_name: Some(name.into()),
            scope: "read write".into(),
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
            jwks_uri: None,
            application_type: ApplicationType::Web,
            workload: None,
            dpop_bound_access_tokens: false,
        },
        attributes: ClientAttributes::default(),
        is_ai_agent: true,
        issued_at: 0,
    }
}

fn may_act(
    host: &PluginHost,
    component: &[u8],
    client: &Client,
    limits: Limits,
) -> Result<Option<MayActClaim>, HookError> {
    let plugin = host.load(HookKind::MayAct, "p", 1, component).unwrap();
    let scopes = ["read".to_string()];
    let token = TokenView { grant_type: "client_credentials", sub: &client.client_id, scopes: &scopes };
    host.run_may_act(&plugin, &limits, "alpha", client, &token)
}

fn dcr(host: &PluginHost, component: &[u8], client: &Client) -> Result<Vec<Attribute>, HookError> {
    let plugin = host.load(HookKind::Dcr, "p", 1, component).unwrap();
    let request = RequestContext::default();
    let input = DcrInput { operation: Operation::Create, request: &request, client, software_statement: None };
    host.run_dcr(&plugin, &Limits::default(), "alpha", &input)
}

fn failed(result: Result<Option<MayActClaim>, HookError>) -> String {
    failure(result).1
}

/// The kind of a failed call, and its text.
fn failure<T: std::fmt::Debug>(result: Result<T, HookError>) -> (Failure, String) {
    match result {
        Err(HookError::Failed(cause, why)) => (cause, why),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn seed_may_act_policy_names_the_agent_as_itself() {
    let host = PluginHost::new().unwrap();
    let claim = may_act(&host, plugins::SOFTWARE_AGENT_MAY_ACT, &agent("software agent"), Limits::default()).unwrap();
    assert_eq!(claim, Some(MayActClaim { client_id: "agent-1".into(), sub: Some("(age!agent-1)".into()) }));
}

#[test]
fn seed_dcr_policy_sets_the_seed_attributes_for_agents_only() {
    let host = PluginHost::new().unwrap();
    let set = dcr(&host, plugins::SOFTWARE_AGENT_DCR, &agent("software agent")).unwrap();
    let names: Vec<_> = set.iter().map(|a| (a.name.as_str(), a.values[0].as_str())).collect();
    assert_eq!(
        names,
        [
            ("providerOverridesEnabled", "true"),
            ("accessTokenMayActScript", "software-agent-may-act"),
            ("statelessTokensEnabled", "true")
        ]
    );
    let mut person = agent("web app");
    person.is_ai_agent = false;
    assert_eq!(dcr(&host, plugins::SOFTWARE_AGENT_DCR, &person).unwrap(), vec![]);
}

#[test]
fn a_plugin_for_another_hook_is_refused_at_load() {
    let host = PluginHost::new().unwrap();
    let err = host.load(HookKind::Dcr, "p", 1, plugins::SOFTWARE_AGENT_MAY_ACT).unwrap_err();
    assert_eq!(err.to_string(), "plugin p v1 exports agentauth:policy/may-act@0.1.0, not agentauth:policy/dcr@0.1.0");
    let err = host.load(HookKind::MayAct, "p", 1, b"not wasm").unwrap_err();
    assert!(err.to_string().contains("not a valid component"), "{err}");
}

#[test]
fn a_plugin_importing_sockets_is_refused_by_name() {
    let host = PluginHost::new().unwrap();
    let err = host.load(HookKind::MayAct, "nosy", 1, plugins::NOSY_MAY_ACT).unwrap_err().to_string();
    assert!(err.starts_with("plugin nosy v1 imports wasi:sockets/"), "{err}");
    assert!(err.contains("never sockets or HTTP"), "{err}");
}

#[test]
fn files_and_environment_are_not_there_to_read() {
    let host = PluginHost::new().unwrap();
    // The fixture reports what it found as an `other` error: logged.
    let log = logged(|| {
        failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("read-file"), Limits::default()));
        failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("read-env"), Limits::default()));
    });
    assert!(log.contains("no file"), "{log}");
    assert!(log.contains("no environment"), "{log}");
}

#[test]
fn an_endless_loop_times_out() {
    let host = PluginHost::new().unwrap();
    let limits = Limits { timeout: Duration::from_millis(50), ..Limits::default() };
    let started = Instant::now();
    let (cause, why) = failure(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("loop"), limits));
    assert!(why.contains("timed out"), "{why}");
    assert_eq!(cause, Failure::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not enforced");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let host = PluginHost::new().unwrap();
    let limits = Limits { memory: 8 << 20, timeout: Duration::from_secs(5) };
    let (cause, why) = failure(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("alloc"), limits));
    assert!(why.contains("memory limit"), "{why}");
    assert_eq!(cause, Failure::Memory);
}

#[test]
fn traps_and_stack_overflows_fail_closed() {
    let host = PluginHost::new().unwrap();
    let (cause, why) = failure(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("trap"), Limits::default()));
    assert!(why.contains("trapped"), "{why}");
    assert_eq!(cause, Failure::Trap);
    let (cause, why) = failure(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("recurse"), Limits::default()));
    assert!(why.contains("stack"), "{why}");
    assert_eq!(cause, Failure::Trap);
}

#[test]
fn a_string_that_is_not_utf8_is_refused() {
    let host = PluginHost::new().unwrap();
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("bad-utf8"), Limits::default()));
    assert!(why.contains("utf-8") || why.contains("UTF-8"), "{why}");
}

#[test]
fn invalid_claims_are_refused() {
    let host = PluginHost::new().unwrap();
    for mode in ["huge", "control"] {
        let (cause, why) = failure(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent(mode), Limits::default()));
        assert!(why.contains("may_act.client_id"), "{mode}: {why}");
        assert_eq!(cause, Failure::InvalidAnswer, "{mode}");
    }
}

fn token(host: &PluginHost, client: &Client) -> Result<serde_json::Map<String, serde_json::Value>, HookError> {
    let plugin = host.load(HookKind::Token, "p", 1, plugins::DEPARTMENT_TOKEN).unwrap();
    host.run_token(&plugin, &Limits::default(), "alpha", client, "client_credentials", r#"{"sub": "agent-1"}"#)
}

fn scope(host: &PluginHost, client: &Client, requested: &[&str]) -> Result<Vec<String>, HookError> {
    let plugin = host.load(HookKind::Scope, "p", 1, plugins::NARROWING_SCOPE).unwrap();
    let requested: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
    let registered = vec!["read".to_string(), "write".to_string()];
    let request = ScopeRequest { grant_type: "client_credentials", requested: &requested, registered: &registered };
    host.run_scope(&plugin, &Limits::default(), "alpha", client, &request)
}

#[test]
fn the_token_hook_answers_checked_custom_claims() {
    let host = PluginHost::new().unwrap();
    let claims = token(&host, &agent("software agent")).unwrap();
    assert_eq!(serde_json::Value::Object(claims), serde_json::json!({"department": "software-updates", "agent": true}));
    for (mode, why) in [
        ("take-sub", "invalid answer: custom claims may not set the reserved claim \"sub\""),
        ("not-json", "invalid answer: custom claims are not JSON"),
    ] {
        match token(&host, &agent(mode)) {
            Err(HookError::Failed(Failure::InvalidAnswer, text)) => assert!(text.starts_with(why), "{mode}: {text}"),
            other => panic!("{mode}: expected a failure, got {other:?}"),
        }
    }
    assert_eq!(token(&host, &agent("token-deny")), Err(HookError::Denied("no tokens for this agent today".into())));
}

#[test]
fn the_scope_hook_may_narrow_and_never_widen() {
    let host = PluginHost::new().unwrap();
    assert_eq!(scope(&host, &agent("read-only"), &["read", "write"]), Ok(vec!["read".to_string()]));
    assert_eq!(scope(&host, &agent("a"), &["write", "read"]), Ok(vec!["write".to_string(), "read".to_string()]));
    match scope(&host, &agent("widen"), &["read"]) {
        Err(HookError::Failed(Failure::InvalidAnswer, why)) => {
            assert!(why.contains("granted scope \"admin\", which was not requested"), "{why}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn authorize(host: &PluginHost, client: &Client, scopes: &[&str]) -> Result<Authorization, HookError> {
    let plugin = host.load(HookKind::Authorize, "p", 1, plugins::AGENT_FOR_USER).unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let resources = vec!["https://mcp.example/".to_string()];
    let user = UserView { sub: "user-7f3a", username: "ada", name: Some("Ada"), email: None };
    let request = AuthorizationRequest { scopes: &scopes, resources: &resources, consented: true };
    host.run_authorize(&plugin, &Limits::default(), "alpha", &user, client, &request)
}

#[test]
fn the_authorize_hook_lets_an_agent_act_for_the_user_narrowed_and_never_widened() {
    let host = PluginHost::new().unwrap();
    let decided = authorize(&host, &agent("helper"), &["read", "admin", "write"]).unwrap();
    assert_eq!(decided.scopes, ["read", "write"], "admin is dropped for agents");
    assert!(decided.require_consent, "write needs fresh consent");
    assert_eq!(decided.may_act, Some(MayActClaim { client_id: "agent-1".into(), sub: Some("(age!agent-1)".into()) }));
    let mut app = agent("helper");
    app.is_ai_agent = false;
    let decided = authorize(&host, &app, &["read", "admin"]).unwrap();
    assert_eq!(
        (decided.scopes.as_slice(), decided.require_consent, decided.may_act),
        (&["read".to_string(), "admin".to_string()][..], false, None)
    );
    assert_eq!(
        authorize(&host, &agent("refuse"), &["read"]),
        Err(HookError::Denied("this client may not act for users".into()))
    );
    match authorize(&host, &agent("widen"), &["read"]) {
        Err(HookError::Failed(Failure::InvalidAnswer, why)) => {
            assert!(why.contains("granted scope \"admin\", which was not asked for"), "{why}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The issuer of the external tokens in these tests.
const ISSUER: &str = "https://idp.example.com";

/// Runs an assertion plugin on a verified token of [`ISSUER`] whose claims
/// are `claims` (its subject their `sub`), presented by `client` for
/// `purpose`, asking for `scopes`.
fn assertion(
    host: &PluginHost,
    component: &[u8],
    purpose: AssertionPurpose,
    claims: serde_json::Value,
    client: Option<&Client>,
    scopes: &[&str],
) -> Result<AssertionMapping, HookError> {
    let plugin = host.load(HookKind::Assertion, "p", 1, component).unwrap();
    let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
    let audience = vec!["https://as.example/am/oauth2/realms/root/realms/alpha".to_string()];
    let resources = vec!["https://mcp.example/".to_string()];
    let text = claims.to_string();
    let token =
        ExternalToken { issuer: ISSUER, subject: claims["sub"].as_str().unwrap(), audience: &audience, claims: &text };
    let case = AssertionCase { purpose, token, client, scopes: &scopes, resources: &resources };
    host.run_assertion(&plugin, &Limits::default(), "alpha", &case)
}

/// A user of `email`, verified.
fn person(email: &str) -> serde_json::Value {
    serde_json::json!({"iss": ISSUER, "sub": "248289761001", "email": email, "email_verified": true})
}

#[test]
fn the_assertion_example_maps_a_trusted_domains_user_to_their_external_subject() {
    let host = PluginHost::new().unwrap();
    let people =
        [AssertionPurpose::Login, AssertionPurpose::IdJag, AssertionPurpose::JwtBearer, AssertionPurpose::SubjectToken];
    for purpose in people {
        let mapped = assertion(
            &host,
            plugins::TRUSTED_DOMAINS_ASSERTION,
            purpose,
            person("ada@example.com"),
            Some(&agent("helper")),
            &["read", "admin", "write"],
        );
        assert_eq!(
            mapped,
            Ok(AssertionMapping {
                subject: "ext:https://idp.example.com#248289761001".into(),
                scopes: vec!["read".into(), "write".into()],
                may_act: None,
            }),
            "{purpose:?}: admin is dropped for those not in the admins group"
        );
    }
    let mut admin = person("ada@example.com");
    admin["groups"] = serde_json::json!(["staff", "admins"]);
    admin["agent"] = serde_json::json!("agent-9");
    let mapped =
        assertion(&host, plugins::TRUSTED_DOMAINS_ASSERTION, AssertionPurpose::IdJag, admin, None, &["read", "admin"])
            .unwrap();
    assert_eq!(mapped.scopes, ["read", "admin"]);
    assert_eq!(mapped.may_act, Some(MayActClaim { client_id: "agent-9".into(), sub: None }));
}

#[test]
fn the_assertion_example_refuses_other_domains_and_unverified_emails() {
    let host = PluginHost::new().unwrap();
    let mut unverified = person("ada@example.com");
    unverified["email_verified"] = serde_json::json!(false);
    let mut no_email = person("");
    no_email.as_object_mut().unwrap().remove("email");
    let refused = [
        person("ada@example.org"),
        person("ada@evilexample.com"),
        person("ada@mail.example.com"),
        person("example.com"),
        unverified,
        no_email,
    ];
    for claims in refused {
        assert_eq!(
            assertion(
                &host,
                plugins::TRUSTED_DOMAINS_ASSERTION,
                AssertionPurpose::Login,
                claims.clone(),
                None,
                &["read"]
            ),
            Err(HookError::Denied("only verified users of a trusted email domain".into())),
            "{claims}"
        );
    }
}

#[test]
fn the_assertion_example_authenticates_a_service_account_as_the_client_of_its_name() {
    let host = PluginHost::new().unwrap();
    let workload = |sub: &str, client: Option<&Client>| {
        let claims = serde_json::json!({"iss": ISSUER, "sub": sub, "kubernetes.io": {"namespace": "agents"}});
        // Scopes given for client authentication are not sent: it asks for none.
        assertion(
            &host,
            plugins::TRUSTED_DOMAINS_ASSERTION,
            AssertionPurpose::ClientAuthentication,
            claims,
            client,
            &["read"],
        )
    };
    let helper = agent("helper");
    assert_eq!(
        workload("system:serviceaccount:agents:helper", Some(&helper)),
        Ok(AssertionMapping { subject: "agent-1".into(), scopes: vec![], may_act: None })
    );
    let not_it = "this service account is not the client \"agent-1\"";
    assert_eq!(workload("system:serviceaccount:agents:other", Some(&helper)), Err(HookError::Denied(not_it.into())));
    assert_eq!(workload("system:serviceaccount:default:helper", Some(&helper)), Err(HookError::Denied(not_it.into())));
    let not_an_account = HookError::Denied("not a Kubernetes service account".into());
    assert_eq!(workload("helper", Some(&helper)), Err(not_an_account.clone()));
    assert_eq!(workload("system:serviceaccount:agents:helper:x", Some(&helper)), Err(not_an_account));
    assert_eq!(
        workload("system:serviceaccount:agents:helper", None),
        Err(HookError::Denied("no client to authenticate".into()))
    );
}

#[test]
fn every_assertion_answer_is_checked_and_an_invalid_one_fails_closed() {
    let host = PluginHost::new().unwrap();
    let client = agent("helper");
    let answer = |mode: &str, purpose: AssertionPurpose| {
        let claims = serde_json::json!({"iss": ISSUER, "sub": mode});
        assertion(&host, plugins::MISBEHAVING_ASSERTION, purpose, claims, Some(&client), &["read", "write"])
    };
    let login = AssertionPurpose::Login;
    let subject =
        "invalid answer: subject must be 1 to 255 bytes of printable characters, without spaces at either end";
    let invalid = [
        ("subject-empty", login, subject),
        ("subject-long", login, subject),
        ("subject-control", login, subject),
        ("subject-padded", login, subject),
        ("widen", login, "granted scope \"admin\", which was not asked for; an assertion policy may only narrow"),
        (
            "some-scope",
            AssertionPurpose::ClientAuthentication,
            "invalid answer: client authentication grants no scopes, and the mapping has some",
        ),
        ("may-act-empty", login, "may_act.client_id must be 1 to 256 printable characters"),
        ("may-act-long", login, "may_act.client_id must be 1 to 256 printable characters"),
        ("may-act-control", login, "may_act.client_id must be 1 to 256 printable characters"),
        ("may-act-sub-control", login, "may_act.sub must be 1 to 256 printable characters"),
    ];
    for (mode, purpose, why) in invalid {
        assert_eq!(failure(answer(mode, purpose)), (Failure::InvalidAnswer, why.to_string()), "{mode}");
    }

    // What passes every check, unchanged but for repeats.
    let mapped = answer("repeat", AssertionPurpose::JwtBearer).unwrap();
    assert_eq!(
        (mapped.subject.as_str(), mapped.scopes.as_slice()),
        ("repeat", &["read".to_string(), "write".to_string()][..])
    );
    assert_eq!(
        answer("may-act", AssertionPurpose::SubjectToken).unwrap().may_act,
        Some(MayActClaim { client_id: "agent-1".into(), sub: Some("(age!agent-1)".into()) })
    );
    let long_enough = "s".repeat(255);
    assert_eq!(answer(&long_enough, login).unwrap().subject, long_enough);
    assert_eq!(answer("deny", login), Err(HookError::Denied("this issuer's users may not sign in here".into())));
}

#[test]
fn the_dcr_hook_answers_only_attributes_the_host_knows() {
    let host = PluginHost::new().unwrap();
    match dcr(&host, plugins::MISBEHAVING_DCR, &agent("dcr-unknown-attribute")) {
        Err(HookError::Failed(Failure::InvalidAnswer, why)) => {
            assert_eq!(why, "invalid answer: unknown client attribute \"clientId\"")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let set = dcr(&host, plugins::MISBEHAVING_DCR, &agent("admitted")).unwrap();
    let names: Vec<_> = set.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["providerOverridesEnabled", "accessTokenMayActScript", "statelessTokensEnabled", "allowedAudiences"]
    );
}

#[test]
fn refusals_keep_the_policy_words_apart_from_failures() {
    let host = PluginHost::new().unwrap();
    let denied = may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("deny"), Limits::default());
    assert_eq!(denied, Err(HookError::Denied("this agent may not be delegated to".into())));
    // An `other` error's text is the operator's: logged, not answered.
    let mut other = String::new();
    let log =
        logged(|| other = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("other"), Limits::default())));
    assert!(!other.contains("configuration missing"), "{other}");
    assert!(other.contains("reported an error"), "{other}");
    let (cause, _) = failure(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("other"), Limits::default()));
    assert_eq!(cause, Failure::Error);
    assert!(log.contains("configuration missing"), "{log}");
}

#[test]
fn a_trap_does_not_poison_the_next_call() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let scopes: [String; 0] = [];
    let run = |client: &Client| {
        let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
        host.run_may_act(&plugin, &Limits::default(), "alpha", client, &token)
    };
    assert!(run(&agent("trap")).is_err());
    assert_eq!(run(&agent("quiet")), Ok(None));
}

/// Keeps artifacts in memory and counts what it was asked.
#[derive(Default)]
struct MemoryCache {
    artifacts: std::sync::Mutex<std::collections::HashMap<ArtifactKey, Vec<u8>>>,
    hits: std::sync::atomic::AtomicUsize,
}

impl ArtifactCache for MemoryCache {
    fn get(&self, key: &ArtifactKey) -> Option<Vec<u8>> {
        let found = self.artifacts.lock().unwrap().get(key).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }

    fn put(&self, key: &ArtifactKey, artifact: &[u8]) {
        self.artifacts.lock().unwrap().insert(key.clone(), artifact.to_vec());
    }
}

#[test]
fn a_precompiled_artifact_is_reused_and_a_corrupt_one_is_compiled_again() {
    let cache = MemoryCache::default();
    let run = |host: &PluginHost| {
        let plugin = host.load_cached(HookKind::MayAct, "p", 1, plugins::SOFTWARE_AGENT_MAY_ACT, &cache).unwrap();
        let scopes: [String; 0] = [];
        let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
        host.run_may_act(&plugin, &Limits::default(), "alpha", &agent("a"), &token).unwrap()
    };
    let expected = Some(MayActClaim { client_id: "agent-1".into(), sub: Some("(age!agent-1)".into()) });
    assert_eq!(run(&PluginHost::new().unwrap()), expected);
    assert_eq!(cache.artifacts.lock().unwrap().len(), 1, "compiled once and kept");
    // A new host (a restart) uses the artifact.
    assert_eq!(run(&PluginHost::new().unwrap()), expected);
    assert_eq!(cache.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    let key = ArtifactKey {
        component_sha256: agentauth_plugin_host::sha256_hex(plugins::SOFTWARE_AGENT_MAY_ACT),
        engine: cache.artifacts.lock().unwrap().keys().next().unwrap().engine.clone(),
    };
    assert!(cache.artifacts.lock().unwrap().contains_key(&key));
    // Garbage under the key is refused by wasmtime and replaced.
    cache.artifacts.lock().unwrap().insert(key.clone(), b"garbage".to_vec());
    assert_eq!(run(&PluginHost::new().unwrap()), expected);
    assert_ne!(cache.artifacts.lock().unwrap()[&key], b"garbage".to_vec());
}

#[test]
fn an_instance_is_reused_within_its_realm_and_limits_and_dropped_after_a_failure() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let scopes = ["read".to_string()];
    let call = |realm: &str, mode: &str, limits: Limits| {
        let client = agent(mode);
        let token = TokenView { grant_type: "client_credentials", sub: "agent-1", scopes: &scopes };
        host.run_may_act(&plugin, &limits, realm, &client, &token)
    };
    let count = |realm: &str, limits: Limits| call(realm, "count", limits).unwrap().unwrap().client_id;
    let limits = Limits::default();
    // One realm's calls share an instance: its state carries over.
    assert_eq!(count("alpha", limits), "call-1");
    assert_eq!(count("alpha", limits), "call-2");
    // Another realm never gets that instance, nor do other limits.
    assert_eq!(count("beta", limits), "call-1");
    let other_limits = Limits { memory: 32 << 20, ..limits };
    assert_eq!(count("alpha", other_limits), "call-1");
    // A refusal leaves the instance healthy; a trap ends it.
    assert!(matches!(call("alpha", "deny", limits), Err(HookError::Denied(_))));
    assert_eq!(count("alpha", limits), "call-3");
    failed(call("alpha", "trap", limits));
    assert_eq!(count("alpha", limits), "call-1");
}

// ---- plugins that wait, hoard or flood ----

#[test]
fn a_plugin_sleeping_in_a_host_call_is_stopped_at_its_deadline() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let limits = Limits { timeout: Duration::from_millis(100), ..Limits::default() };
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    let started = Instant::now();
    let why = failed(host.run_may_act(&plugin, &limits, "alpha", &agent("sleep"), &token));
    assert!(why.contains("timed out after 100 ms"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(2), "the sleep ran for {:?}", started.elapsed());
    // The store that was cut off is gone: the next call starts afresh.
    let count = host.run_may_act(&plugin, &limits, "alpha", &agent("count"), &token).unwrap();
    assert_eq!(count.unwrap().client_id, "call-1");
}

#[test]
fn a_blocking_read_of_stdin_answers_at_once() {
    let host = PluginHost::new().unwrap();
    let limits = Limits { timeout: Duration::from_millis(200), ..Limits::default() };
    let started = Instant::now();
    let log = logged(|| {
        failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("read-stdin"), limits));
    });
    assert!(log.contains("stdin gave 0 bytes"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(2), "the read blocked for {:?}", started.elapsed());
}

/// The contract's types, declared as exports of the imported `types`
/// instance so that a hand-written hook may use them by name (wasmtime
/// checks component types structurally).
const TYPES: &str = r#"
  (import "agentauth:policy/types@0.1.0" (instance $types
    (type $attribute' (record (field "name" string) (field "values" (list string))))
    (export "attribute" (type $attribute (eq $attribute')))
    (type $client' (record (field "client-id" string) (field "is-ai-agent" bool) (field "metadata" string)
      (field "attributes" (list $attribute))))
    (export "client-view" (type (eq $client')))
    (type $token' (record (field "realm" string) (field "grant-type" string) (field "sub" string)
      (field "scopes" (list string))))
    (export "token-view" (type (eq $token')))
    (type $request' (record (field "realm" string) (field "grant-type" string) (field "requested" (list string))
      (field "registered" (list string))))
    (export "scope-request" (type (eq $request')))
    (type $claim' (record (field "client-id" string) (field "sub" (option string))))
    (export "may-act-claim" (type (eq $claim')))
    (type $error' (variant (case "denied" string) (case "other" string)))
    (export "error" (type (eq $error')))
  ))
  (alias export $types "client-view" (type $client))
  (alias export $types "token-view" (type $token))
  (alias export $types "scope-request" (type $request))
  (alias export $types "may-act-claim" (type $claim))
  (alias export $types "error" (type $error))
"#;

/// A core module serving a hook: `pages` pages of memory, a bump
/// allocator, and a hook function answering what `answer` (data at
/// address 16) encodes; zeroes are `ok(none)` for may-act.
fn main_module(pages: u32, answer: &str) -> String {
    format!(
        r#"(module
          (memory (export "memory") {pages})
          (global $heap (mut i32) (i32.const 4096))
          (func (export "realloc") (param i32 i32 i32 i32) (result i32)
            (local $p i32)
            global.get $heap
            local.get 2
            i32.add
            i32.const 1
            i32.sub
            i32.const 0
            local.get 2
            i32.sub
            i32.and
            local.tee $p
            local.get 3
            i32.add
            global.set $heap
            local.get $p)
          (func (export "hook") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
            i32.const 16)
          (data (i32.const 16) "{answer}"))"#
    )
}

/// A component whose hook is `main`'s, with the core module `extra`
/// instantiated `copies` times beside it: what no guest toolchain makes,
/// and a hostile tenant might.
fn hand_made(kind: HookKind, main: &str, extra: &str, copies: usize) -> Vec<u8> {
    let (interface, signature) = match kind {
        HookKind::MayAct => (
            r#"(instance $api (export "decide" (func $hook))) (export "agentauth:policy/may-act@0.1.0" (instance $api))"#,
            r#"(param "client" $client) (param "token" $token) (result (result (option $claim) (error $error)))"#,
        ),
        HookKind::Scope => (
            r#"(instance $api (export "validate" (func $hook))) (export "agentauth:policy/scope@0.1.0" (instance $api))"#,
            r#"(param "client" $client) (param "request" $request) (result (result (list string) (error $error)))"#,
        ),
        other => panic!("no hand-made {other:?} hook"),
    };
    let copies: String = (0..copies).map(|_| "(core instance (instantiate $extra))\n").collect();
    let wat = format!(
        r#"(component
          {TYPES}
          (core module $main {main_body})
          (core module $extra {extra_body})
          (core instance $m (instantiate $main))
          {copies}
          (type $hook-type (func {signature}))
          (func $hook (type $hook-type)
            (canon lift (core func $m "hook") (memory $m "memory") (realloc (func $m "realloc"))))
          {interface})"#,
        main_body = module_fields(main),
        extra_body = module_fields(extra),
    );
    wat::parse_str(&wat).unwrap()
}

/// The fields of a `(module ...)`, to nest it as a `(core module ...)`.
fn module_fields(module: &str) -> &str {
    module.trim().strip_prefix("(module").and_then(|m| m.strip_suffix(')')).unwrap()
}

#[test]
fn a_hand_made_hook_runs() {
    let host = PluginHost::new().unwrap();
    let component = hand_made(HookKind::MayAct, &main_module(2, ""), "(module)", 1);
    assert_eq!(may_act(&host, &component, &agent("a"), Limits::default()), Ok(None));
}

#[test]
fn the_memory_cap_counts_every_memory_of_an_instance() {
    let host = PluginHost::new().unwrap();
    // Two memories of 40 MiB each: each is under the 64 MiB cap, both
    // together are not.
    let two = hand_made(HookKind::MayAct, &main_module(640, ""), "(module (memory 640))", 1);
    let (cause, why) = failure(may_act(&host, &two, &agent("a"), Limits::default()));
    assert!(why.contains("memory limit of 67108864 bytes"), "{why}");
    assert_eq!(cause, Failure::Memory);
    // Four memories of 46 MiB: refused at upload, for their count.
    let four = hand_made(HookKind::MayAct, &main_module(736, ""), "(module (memory 736))", 3);
    let refused = host.load(HookKind::MayAct, "p", 1, &four).unwrap_err().to_string();
    assert!(refused.contains("4 Wasm linear memories"), "{refused}");
    assert_eq!(host.footprint().live_bytes, 0, "nothing is held after the failures");
}

#[test]
fn growing_a_memory_past_its_own_maximum_fails_without_being_charged() {
    let host = PluginHost::new().unwrap();
    // A memory of at most two pages, asked a hundred times for 1,000 more:
    // each growth fails in the guest (-1), and none may count against the
    // instance's 64 MiB.
    let main =
        main_module(2, "").replace(r#"(memory (export "memory") 2)"#, r#"(memory (export "memory") 2 2)"#).replace(
            "(result i32)\n            i32.const 16)",
            "(result i32) (local $i i32)
            (loop $again
              (drop (memory.grow (i32.const 1000)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br_if $again (i32.lt_u (local.get $i) (i32.const 100))))
            i32.const 16)",
        );
    assert!(main.contains("memory.grow"), "the hook was rewritten");
    let component = hand_made(HookKind::MayAct, &main, "(module)", 1);
    assert_eq!(may_act(&host, &component, &agent("a"), Limits::default()), Ok(None));
    assert!(host.footprint().live_bytes < 1 << 20, "{:?}", host.footprint());
}

#[test]
fn tables_count_against_the_instance_limits() {
    let host = PluginHost::new().unwrap();
    // Ten core instances with a table of 20,000 elements each.
    let tables = hand_made(HookKind::MayAct, &main_module(2, ""), "(module (table 20000 funcref))", 10);
    let why = failed(may_act(&host, &tables, &agent("a"), Limits::default()));
    assert!(why.contains("limit of 40000 table elements"), "{why}");
    // Hundreds of tables: refused at upload, for their count.
    let many = hand_made(HookKind::MayAct, &main_module(2, ""), "(module (table 1 funcref))", 100);
    let refused = host.load(HookKind::MayAct, "p", 1, &many).unwrap_err().to_string();
    assert!(refused.contains("100 tables"), "{refused}");
    assert_eq!(host.footprint().live_bytes, 0);
}

#[test]
fn an_oversized_answer_is_refused_while_it_is_copied() {
    let host = PluginHost::new().unwrap();
    // ok([4,000,000 empty strings]): a list at 64, every element (0, 0).
    let count: u32 = 4_000_000;
    let answer: String = [0u32, 64, count].iter().flat_map(|n| n.to_le_bytes()).map(|b| format!("\\{b:02x}")).collect();
    let component = hand_made(HookKind::Scope, &main_module(512, &answer), "(module)", 1);
    let plugin = host.load(HookKind::Scope, "p", 1, &component).unwrap();
    let (requested, registered) = (vec!["read".to_string()], vec!["read".to_string()]);
    let request = agentauth_plugin_host::ScopeRequest {
        grant_type: "client_credentials",
        requested: &requested,
        registered: &registered,
    };
    let started = Instant::now();
    let answer = host.run_scope(&plugin, &Limits::default(), "alpha", &agent("a"), &request);
    match answer {
        Err(HookError::Failed(Failure::InvalidAnswer, why)) => {
            assert!(why.contains("copied more than 1048576 bytes"), "{why}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[test]
fn idle_instances_are_dropped_after_their_time() {
    let host = PluginHost::new().unwrap();
    host.set_idle_ttl(Duration::from_millis(100));
    assert_eq!(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("quiet"), Limits::default()), Ok(None));
    // `may_act` loaded the plugin for the call only; load one that stays.
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    host.run_may_act(&plugin, &Limits::default(), "alpha", &agent("quiet"), &token).unwrap();
    let kept = host.footprint();
    assert_eq!(kept.idle_instances, 1, "{kept:?}");
    assert!(kept.live_bytes > 0 && kept.live_bytes == kept.idle_bytes, "{kept:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let later = host.footprint();
    assert_eq!((later.idle_instances, later.live_bytes), (0, 0), "{later:?}");
}

#[test]
fn idle_instances_are_bounded_per_plugin_and_realm() {
    let host = PluginHost::new().unwrap();
    let plugins: Vec<_> = (0..8)
        .map(|i| host.load(HookKind::MayAct, &format!("p{i}"), 1, plugins::MISBEHAVING_MAY_ACT).unwrap())
        .collect();
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    // Eight threads per plugin at once, so each keeps several instances.
    std::thread::scope(|s| {
        for plugin in &plugins {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        host.run_may_act(plugin, &Limits::default(), "alpha", &agent("quiet"), &token).unwrap();
                    }
                });
            }
        }
    });
    let kept = host.footprint();
    assert!(kept.idle_instances <= 16, "one realm keeps at most 16 idle instances: {kept:?}");
    assert!(kept.idle_bytes <= 256 << 20, "{kept:?}");
    host.drop_idle();
    assert_eq!(host.footprint().live_bytes, 0);
}

#[test]
fn the_memory_idle_instances_hold_is_bounded_per_realm() {
    let host = PluginHost::new().unwrap();
    // 46 MiB of memory each: eight of them would hold 368 MiB idle.
    let big = hand_made(HookKind::MayAct, &main_module(736, ""), "(module)", 1);
    let plugins: Vec<_> = (0..8).map(|i| host.load(HookKind::MayAct, &format!("p{i}"), 1, &big).unwrap()).collect();
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    for plugin in &plugins {
        assert_eq!(host.run_may_act(plugin, &Limits::default(), "alpha", &agent("a"), &token), Ok(None));
    }
    let kept = host.footprint();
    assert!(kept.idle_bytes <= 256 << 20, "{kept:?}");
    assert!(kept.idle_instances >= 4, "the newest are kept: {kept:?}");
    assert_eq!(kept.live_bytes, kept.idle_bytes, "what is not kept is freed: {kept:?}");
}

#[test]
fn one_realms_idle_heavy_instances_leave_room_for_another_realms_calls() {
    let host = PluginHost::new().unwrap();
    // 250 core instances each, and a hook that spins a few milliseconds so
    // that concurrent calls overlap and each plugin keeps several idle.
    let spin = main_module(2, "").replace(
        "(result i32)\n            i32.const 16)",
        "(result i32) (local $i i32) i32.const 30000000 local.set $i
         (loop $spin local.get $i i32.const 1 i32.sub local.tee $i br_if $spin) i32.const 16)",
    );
    assert!(spin.contains("$spin"));
    let heavy = hand_made(HookKind::MayAct, &spin, "(module)", 250);
    let limits = Limits { timeout: Duration::from_secs(5), ..Limits::default() };
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    let tenant: Vec<_> = (0..8).map(|i| host.load(HookKind::MayAct, &format!("a{i}"), 1, &heavy).unwrap()).collect();
    std::thread::scope(|s| {
        for plugin in &tenant {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..3 {
                        host.run_may_act(plugin, &limits, "a", &agent("x"), &token).unwrap();
                    }
                });
            }
        }
    });
    let other = host.load(HookKind::MayAct, "b", 1, &heavy).unwrap();
    let answers: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..10)
            .map(|_| {
                s.spawn(|| {
                    (0..5).map(|_| host.run_may_act(&other, &limits, "b", &agent("x"), &token)).collect::<Vec<_>>()
                })
            })
            .collect();
        calls.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    assert!(answers.iter().all(|a| *a == Ok(None)), "{:?}", answers.iter().find(|a| **a != Ok(None)));
}

#[test]
fn a_realm_whose_calls_hold_every_turn_answers_busy_and_another_realm_runs() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    let long = Limits { timeout: Duration::from_millis(1500), ..Limits::default() };
    let short = Limits { timeout: Duration::from_millis(200), ..Limits::default() };
    let turns = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
    std::thread::scope(|s| {
        for _ in 0..turns {
            s.spawn(|| failed(host.run_may_act(&plugin, &long, "a", &agent("sleep"), &token)));
        }
        std::thread::sleep(Duration::from_millis(300));
        let waited = host.run_may_act(&plugin, &short, "a", &agent("quiet"), &token);
        assert!(matches!(waited, Err(HookError::Busy(_))), "{waited:?}");
        assert_eq!(host.run_may_act(&plugin, &short, "b", &agent("quiet"), &token), Ok(None));
    });
}

#[test]
fn a_call_that_waited_for_its_turn_still_ends_at_its_deadline() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    let holders = Limits { timeout: Duration::from_millis(600), ..Limits::default() };
    let waiter = Limits { timeout: Duration::from_millis(700), ..Limits::default() };
    let turns = std::thread::available_parallelism().map_or(1, |n| n.get()).min(32);
    std::thread::scope(|s| {
        for _ in 0..turns {
            s.spawn(|| failed(host.run_may_act(&plugin, &holders, "a", &agent("loop"), &token)));
        }
        std::thread::sleep(Duration::from_millis(50));
        // It gets a turn after about 550 ms of its 700, then spins: it must
        // be stopped with its deadline, not 700 ms after its turn came.
        let started = Instant::now();
        let answer = host.run_may_act(&plugin, &waiter, "a", &agent("loop"), &token);
        let took = started.elapsed();
        assert!(matches!(answer, Err(HookError::Failed(..) | HookError::Busy(_))), "{answer:?}");
        assert!(took < Duration::from_millis(1000), "ran {took:?} against a 700 ms deadline");
    });
}

// ---- logs ----

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with the log captured; returns the log.
fn logged(f: impl FnOnce()) -> String {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_plugin_cannot_flood_the_log() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::MISBEHAVING_MAY_ACT).unwrap();
    let scopes: [String; 0] = [];
    let token = TokenView { grant_type: "client_credentials", sub: "s", scopes: &scopes };
    let limits = Limits { timeout: Duration::from_secs(5), ..Limits::default() };
    let one_call = logged(|| {
        host.run_may_act(&plugin, &limits, "alpha", &agent("log-flood"), &token).unwrap();
    });
    let lines = one_call.lines().filter(|l| l.contains("xxxxxxxx")).count();
    assert!(lines <= 8, "one call wrote {lines} lines of 1,000 bytes");
    // Many calls of one realm share the realm's rate.
    let many_calls = logged(|| {
        for _ in 0..40 {
            host.run_may_act(&plugin, &limits, "beta", &agent("log-flood"), &token).unwrap();
        }
    });
    let lines = many_calls.lines().filter(|l| l.contains("xxxxxxxx")).count();
    assert!(lines < 40 * 8, "40 calls wrote {lines} lines of 1,000 bytes");
}

#[test]
fn a_plugin_log_message_stays_one_line() {
    let host = PluginHost::new().unwrap();
    let log = logged(|| {
        may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("log-forge"), Limits::default()).unwrap();
    });
    assert!(!log.lines().any(|l| l.starts_with("INFO agentauth: forged")), "{log}");
    assert!(!log.contains('\r') && !log.contains('\u{1b}'), "{log:?}");
    assert!(log.contains(r"ok\nINFO agentauth: forged line\r\u{1b}[2Kcleared"), "{log}");
}

#[test]
fn a_plugins_error_text_cannot_break_a_log_line() {
    let host = PluginHost::new().unwrap();
    let log = logged(|| {
        let answer = may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("other-forge"), Limits::default());
        assert!(matches!(answer, Err(HookError::Failed(..))), "{answer:?}");
    });
    assert!(!log.lines().any(|l| l.starts_with("ERROR agentauth: forged")), "{log}");
    assert!(log.contains(r"missing\nERROR agentauth: forged line"), "{log}");
}

// ---- what real policies use ----

/// The Python and JavaScript policies of `scripts/build-polyglot`.
fn polyglot(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("AGENTAUTH_POLYGLOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/polyglot"));
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}: run scripts/build-polyglot"))
}

#[test]
#[ignore = "needs scripts/build-polyglot"]
fn python_and_javascript_policies_fit_the_limits_with_margin() {
    let host = PluginHost::new().unwrap();
    let scopes = ["read".to_string()];
    let token = TokenView { grant_type: "client_credentials", sub: "agent-1", scopes: &scopes };
    for name in ["python-software-agent-may-act.wasm", "js-software-agent-may-act.wasm"] {
        let plugin = host.load(HookKind::MayAct, name, 1, &polyglot(name)).unwrap();
        let started = Instant::now();
        let claim = host.run_may_act(&plugin, &Limits::default(), "alpha", &agent("a"), &token).unwrap();
        let first = started.elapsed();
        assert_eq!(claim.unwrap().sub.as_deref(), Some("(age!agent-1)"));
        let held = host.footprint().idle_bytes;
        let started = Instant::now();
        for _ in 0..200 {
            host.run_may_act(&plugin, &Limits::default(), "alpha", &agent("a"), &token).unwrap();
        }
        let warm = started.elapsed() / 200;
        eprintln!("{name}: an instance holds {} KiB; first call {first:?}, warm call {warm:?}", held >> 10);
        assert!(held < Limits::default().memory / 2, "{name} holds {held} bytes");
        host.drop_idle();
    }
}

#[test]
#[ignore = "a measurement, not a check"]
fn what_a_warm_and_a_fresh_call_cost() {
    let host = PluginHost::new().unwrap();
    let plugin = host.load(HookKind::MayAct, "p", 1, plugins::SOFTWARE_AGENT_MAY_ACT).unwrap();
    let scopes = ["read".to_string()];
    let token = TokenView { grant_type: "client_credentials", sub: "agent-1", scopes: &scopes };
    let client = agent("a");
    let mut times = Vec::new();
    for round in 0..2200 {
        let started = Instant::now();
        host.run_may_act(&plugin, &Limits::default(), "alpha", &client, &token).unwrap();
        if round >= 200 {
            times.push(started.elapsed());
        }
    }
    times.sort_unstable();
    let mut fresh = Vec::new();
    for _ in 0..200 {
        host.drop_idle();
        let started = Instant::now();
        host.run_may_act(&plugin, &Limits::default(), "alpha", &client, &token).unwrap();
        fresh.push(started.elapsed());
    }
    fresh.sort_unstable();
    eprintln!("warm p50 {:?} p99 {:?}; fresh p50 {:?}", times[1000], times[1980], fresh[100]);
}
