//! The host runs the shipped policies and fails closed on every way a
//! plugin can misbehave.

#![allow(clippy::unwrap_used)] // a test that unwraps fails with a location

use std::time::{Duration, Instant};

use agentauth_core::{AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType};
use agentauth_plugin_host::{
    ArtifactCache, ArtifactKey, Attribute, DcrInput, HookError, HookKind, Limits, MayActClaim, Operation, PluginHost,
    RequestContext, TokenView,
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
    match result {
        Err(HookError::Failed(why)) => why,
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
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("read-file"), Limits::default()));
    assert!(why.contains("no file"), "{why}");
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("read-env"), Limits::default()));
    assert!(why.contains("no environment"), "{why}");
}

#[test]
fn an_endless_loop_times_out() {
    let host = PluginHost::new().unwrap();
    let limits = Limits { timeout: Duration::from_millis(50), ..Limits::default() };
    let started = Instant::now();
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("loop"), limits));
    assert!(why.contains("timed out"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline was not enforced");
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    let host = PluginHost::new().unwrap();
    let limits = Limits { memory: 8 << 20, timeout: Duration::from_secs(5) };
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("alloc"), limits));
    assert!(why.contains("memory limit"), "{why}");
}

#[test]
fn traps_and_stack_overflows_fail_closed() {
    let host = PluginHost::new().unwrap();
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("trap"), Limits::default()));
    assert!(why.contains("trapped"), "{why}");
    let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("recurse"), Limits::default()));
    assert!(why.contains("stack"), "{why}");
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
        let why = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent(mode), Limits::default()));
        assert!(why.contains("may_act.client_id"), "{mode}: {why}");
    }
}

#[test]
fn refusals_keep_the_policy_words_apart_from_failures() {
    let host = PluginHost::new().unwrap();
    let denied = may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("deny"), Limits::default());
    assert_eq!(denied, Err(HookError::Denied("this agent may not be delegated to".into())));
    let other = failed(may_act(&host, plugins::MISBEHAVING_MAY_ACT, &agent("other"), Limits::default()));
    assert!(other.contains("configuration missing"), "{other}");
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
