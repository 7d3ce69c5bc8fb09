//! A real `agentauth serve` on loopback, and the admin and OAuth calls
//! that set it up: the test kit's server, with the benchmark's realm
//! setup and memory readings, and its errors as `anyhow`'s.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use agentauth_testkit::{Credentials, Registration, ServerBuilder};
use anyhow::Context;
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// A running server, stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct Server(agentauth_testkit::Server);

impl Deref for Server {
    type Target = agentauth_testkit::Server;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Server {
    /// Starts `binary` on a free loopback port with `data_dir`; returns
    /// once `/healthz` answers.
    pub fn start(binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let server = ServerBuilder::new(binary).data_dir(data_dir).admin_token(ADMIN_TOKEN).start()?;
        Ok(Self(server))
    }

    /// Starts `binary` as a replica on the PostgreSQL database `database`,
    /// with the master key `master_key` (text, as `AGENTAUTH_MASTER_KEY`
    /// takes it) and the public URL every replica of that database shares;
    /// `data_dir` holds nothing of the database. Returns once `/healthz`
    /// answers.
    pub fn start_replica(
        binary: &Path,
        data_dir: &Path,
        database: &str,
        master_key: &str,
        public_url: &str,
    ) -> anyhow::Result<Self> {
        let server = ServerBuilder::new(binary)
            .data_dir(data_dir)
            .admin_token(ADMIN_TOKEN)
            .args(["--database", database, "--public-url", public_url])
            .env("AGENTAUTH_MASTER_KEY", master_key)
            .start()?;
        Ok(Self(server))
    }

    /// Resident memory now and at its peak, in MiB, from /proc.
    pub fn memory_mib(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).context("reading /proc")?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{name} in /proc"))?;
            let kib: f64 = line.split_whitespace().nth(1).context("a number")?.parse()?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(self) -> anyhow::Result<()> {
        self.0.stop();
        Ok(())
    }

    /// An admin API call that must succeed.
    pub fn admin(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let reply = self.0.admin(method, path, content_type, body)?;
        Ok(reply.successful(&format!("{method} {path}"))?.json)
    }

    pub fn realm_path(realm: &str, endpoint: &str) -> String {
        agentauth_testkit::realm_path(realm, endpoint)
    }

    /// A realm for benchmarks: open registration with `bench-dcr` as its
    /// DCR policy, the seed's may-act policy, and limits out of the way.
    pub fn bench_realm(&self, realm: &str, alg: &str) -> anyhow::Result<()> {
        let settings = json!({
            "ai_agents_enabled": true,
            "open_registration": true,
            "signing_alg": alg,
            "registrations_per_minute": 1_000_000,
            "registrations_per_minute_per_source": 1_000_000,
            "max_clients": 100_000_000,
            "plugin_pushes_per_minute": 10_000,
        });
        self.admin("PUT", &format!("/{realm}"), "application/json", settings.to_string().into_bytes())?;
        self.push(realm, "bench-dcr", "dcr", agentauth_plugins::BENCH_DCR)?;
        self.push(realm, "software-agent-may-act", "may-act", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT)?;
        self.admin(
            "PUT",
            &format!("/{realm}/hooks"),
            "application/json",
            json!({"dcr": "bench-dcr"}).to_string().into(),
        )?;
        Ok(())
    }

    /// Pushes and activates a plugin version.
    pub fn push(&self, realm: &str, name: &str, hook: &str, component: &[u8]) -> anyhow::Result<Value> {
        self.admin("POST", &format!("/{realm}/plugins/{name}?hook={hook}"), "application/wasm", component.to_vec())
    }

    /// Registers an agent in `realm` named `name`; its credentials.
    pub fn register(&self, realm: &str, name: &str) -> anyhow::Result<Credentials> {
        Ok(self.0.register_agent(realm, &Registration::seed().client_name(name))?)
    }

    /// The token endpoint of `realm`, as its discovery document names it
    /// (what a DPoP proof's `htu` must be).
    pub fn token_endpoint(&self, realm: &str) -> anyhow::Result<String> {
        let reply = self.0.get(&self.0.realm_url(realm, ".well-known/openid-configuration"))?;
        reply.json["token_endpoint"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("realm {realm} names no token endpoint: {}", reply.body))
    }

    /// A client credentials token for `scope`.
    pub fn token(&self, realm: &str, client: &Credentials, scope: &str) -> anyhow::Result<String> {
        Ok(self.0.client_credentials(realm, client, Some(scope))?)
    }
}

/// The seed's registration, with its `client_name` chosen by the caller
/// (`bench-dcr` reads it).
pub fn registration(name: &str) -> Value {
    Registration::seed().client_name(name).to_json()
}

/// A fresh data directory under `root`.
pub fn data_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
