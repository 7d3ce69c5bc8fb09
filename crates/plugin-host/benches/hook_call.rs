//! The cost of one may-act hook call, for the same policy in Rust, Python
//! and JavaScript: a fresh instance per call (what the server does), and,
//! for reference, the first load (compile) of each component.
//!
//!     scripts/build-polyglot            # Python and JavaScript components
//!     cargo bench -p agentauth-plugin-host --bench hook_call [-- ITERATIONS]
//!
//! Components missing from target/polyglot are skipped, and said so.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentauth_core::{AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType};
use agentauth_plugin_host::{HookKind, Limits, PluginHost, TokenView};

fn agent() -> Client {
    Client {
        client_id: "agent-1".into(),
        metadata: ClientMetadata {
            redirect_uris: vec![],
            grant_types: vec![GrantType::ClientCredentials],
            response_types: vec![],
            client_name: Some("software agent".into()),
            scope: "read write".into(),
            token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
            jwks: None,
        },
        attributes: ClientAttributes::default(),
        is_ai_agent: true,
        issued_at: 0,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let iterations: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let polyglot = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/polyglot");
    let mut cases: Vec<(&str, Vec<u8>)> = vec![("rust", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT.to_vec())];
    for (lang, file) in
        [("python", "python-software-agent-may-act.wasm"), ("javascript", "js-software-agent-may-act.wasm")]
    {
        match std::fs::read(polyglot.join(file)) {
            Ok(bytes) => cases.push((lang, bytes)),
            Err(_) => println!("{lang}: {file} missing (run scripts/build-polyglot); skipped"),
        }
    }

    let host = PluginHost::new().expect("plugin host");
    let client = agent();
    let scopes = ["read".to_string()];
    let token = TokenView { grant_type: "client_credentials", sub: "agent-1", scopes: &scopes };
    let limits = Limits { timeout: Duration::from_secs(1), ..Limits::default() };
    println!("{iterations} calls each, fresh instance per call, one thread");
    println!("{:<12} {:>10} {:>10} {:>10} {:>12}", "language", "size MB", "p50 µs", "p99 µs", "compile ms");
    for (lang, bytes) in cases {
        let started = Instant::now();
        let plugin = host.load(HookKind::MayAct, lang, 1, &bytes).expect("loading");
        let compile = started.elapsed();
        for _ in 0..20 {
            host.run_may_act(&plugin, &limits, "bench", &client, &token).expect("warm-up call");
        }
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            let claim = host.run_may_act(&plugin, &limits, "bench", &client, &token).expect("call");
            times.push(started.elapsed());
            assert!(claim.is_some());
        }
        times.sort();
        println!(
            "{:<12} {:>10.1} {:>10.1} {:>10.1} {:>12.0}",
            lang,
            bytes.len() as f64 / 1e6,
            percentile(&times, 0.5).as_secs_f64() * 1e6,
            percentile(&times, 0.99).as_secs_f64() * 1e6,
            compile.as_secs_f64() * 1e3
        );
    }
}
