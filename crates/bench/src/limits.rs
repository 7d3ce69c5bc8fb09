//! The physical limits each figure is compared with, measured in the same
//! run: ring's signing rate per algorithm on the server's cores, SQLite's
//! rate of durable single-row commits on the data directory's disk, and
//! the cost of one hook call per plugin language.

use std::path::Path;
use std::time::{Duration, Instant};

use agentauth_core::{ApplicationType, AuthMethod, Client, ClientAttributes, ClientMetadata, GrantType};
use agentauth_jose::SigningKey;
use agentauth_plugin_host::{HookKind, Limits, PluginHost, TokenView};
use agentauth_store::prelude::*;
use anyhow::Context;

/// The signing key the server uses for `realm`: read from its database
/// and unsealed with its master key, both in `data_dir`.
pub fn realm_key(data_dir: &Path, realm: &str) -> anyhow::Result<SigningKey> {
    let store = agentauth_store::Store::open(&data_dir.join("agentauth.sqlite3"))?;
    let master = std::fs::read_to_string(data_dir.join("master.key")).context("reading the master key")?;
    let master = agentauth_jose::MasterKey::parse(&master)?;
    let newest = store.keys(realm)?.into_iter().next().with_context(|| format!("realm {realm} has no key yet"))?;
    let alg = newest.alg;
    let pkcs8 = master.open(realm.as_bytes(), &newest.pkcs8)?;
    Ok(SigningKey::from_pkcs8(alg, &pkcs8)?)
}

/// Signatures per second ring makes with `key` on `threads` threads,
/// signing a message the size of an access token's header and claims,
/// for `time`.
pub fn signing_rate(key: &SigningKey, threads: usize, time: Duration) -> anyhow::Result<f64> {
    let message = vec![b'x'; 420];
    let total: anyhow::Result<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let started = Instant::now();
                    let mut n = 0u64;
                    while started.elapsed() < time {
                        key.sign_bytes(&message)?;
                        n += 1;
                    }
                    anyhow::Ok(n)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().map_err(|_| anyhow::anyhow!("a signer panicked"))?).sum()
    });
    Ok(total? as f64 / time.as_secs_f64())
}

/// Durable single-row commits per second (WAL, `synchronous=FULL`, as the
/// store runs) in a scratch database in `dir`, one writer, for `time`.
pub fn commit_rate(dir: &Path, time: Duration) -> anyhow::Result<f64> {
    let path = dir.join("commit-rate.sqlite3");
    let conn = rusqlite::Connection::open(&path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")?;
    let row = vec![7u8; 600];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < time {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute("INSERT INTO t (v) VALUES (?1)", [&row])?;
        conn.execute_batch("COMMIT")?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(rate)
}

/// One language's hook cost.
#[derive(Debug)]
pub struct HookCost {
    pub language: &'static str,
    pub size_mb: f64,
    pub compile: Duration,
    pub p50: Duration,
    pub p99: Duration,
}

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

/// The may-act hook's cost per call, as the server makes it, for the same
/// policy in each language found: `calls` calls on one thread after a
/// warm-up. Languages whose component is missing are skipped.
pub fn hook_costs(components: &[(&'static str, Vec<u8>)], calls: usize) -> anyhow::Result<Vec<HookCost>> {
    let host = PluginHost::new().context("plugin host")?;
    let client = agent();
    let scopes = ["read".to_string()];
    let token = TokenView { grant_type: "client_credentials", sub: "agent-1", scopes: &scopes };
    let limits = Limits { timeout: Duration::from_secs(1), ..Limits::default() };
    let mut costs = Vec::new();
    for (language, bytes) in components {
        let started = Instant::now();
        let plugin = host.load(HookKind::MayAct, language, 1, bytes).with_context(|| format!("loading {language}"))?;
        let compile = started.elapsed();
        for _ in 0..50 {
            host.run_may_act(&plugin, &limits, "bench", &client, &token).context("warm-up call")?;
        }
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let claim = host.run_may_act(&plugin, &limits, "bench", &client, &token).context("call")?;
            times.push(started.elapsed());
            anyhow::ensure!(claim.is_some(), "{language}: the policy named no actor");
        }
        times.sort_unstable();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        costs.push(HookCost { language, size_mb: bytes.len() as f64 / 1e6, compile, p50: at(0.5), p99: at(0.99) });
    }
    Ok(costs)
}
