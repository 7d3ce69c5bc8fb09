//! A real `agentauth serve` on loopback, and the admin and OAuth calls
//! that set it up.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef";

/// A running server, stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    http: ureq::Agent,
}

impl Server {
    /// Starts `binary` on a free loopback port with `data_dir`; returns
    /// once `/healthz` answers.
    pub fn start(binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("AGENTAUTH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("AGENTAUTH_MASTER_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).context("reading the listening address")?;
        let Some(base) = line.trim().strip_prefix("agentauth listening on ") else {
            bail!("unexpected first line from the server: {line:?}");
        };
        let addr: SocketAddr = base.trim_start_matches("http://").parse().context("the listening address")?;
        let http: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let server = Self { child, addr, base: base.to_string(), http };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if server.http.get(format!("{}/healthz", server.base)).call().is_ok_and(|r| r.status() == 200) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("the server did not become ready")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    pub fn stop(mut self) -> anyhow::Result<()> {
        terminate(&mut self.child);
        Ok(())
    }

    fn call(&self, method: &str, url: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<(u16, Value)> {
        let mut request = ureq::http::Request::builder().method(method).uri(url).header("Content-Type", content_type);
        if url.contains("/admin/v1/") {
            request = request.header("Authorization", format!("Bearer {ADMIN_TOKEN}"));
        }
        let request = request.body(body)?;
        let mut response = self.http.run(request).with_context(|| format!("{method} {url}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// An admin API call that must succeed.
    pub fn admin(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let url = format!("{}/admin/v1/realms{path}", self.base);
        let (status, value) = self.call(method, &url, content_type, body)?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {value}");
        }
        Ok(value)
    }

    pub fn realm_path(realm: &str, endpoint: &str) -> String {
        format!("/am/oauth2/realms/root/realms/{realm}/{endpoint}")
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

    /// Registers an agent in `realm` named `name`; returns (client_id, secret).
    pub fn register(&self, realm: &str, name: &str) -> anyhow::Result<(String, String)> {
        let url = format!("{}{}", self.base, Self::realm_path(realm, "aiagent/register"));
        let (status, client) = self.call("POST", &url, "application/json", registration(name).to_string().into())?;
        if status != 201 {
            bail!("registering {name} in {realm}: {status} {client}");
        }
        let field = |f: &str| client[f].as_str().map(str::to_string).with_context(|| format!("{f} in {client}"));
        Ok((field("client_id")?, field("client_secret")?))
    }

    /// A client credentials token for `scope`.
    pub fn token(&self, realm: &str, client: &(String, String), scope: &str) -> anyhow::Result<String> {
        let url = format!("{}{}", self.base, Self::realm_path(realm, "access_token"));
        let form =
            format!("grant_type=client_credentials&scope={scope}&client_id={}&client_secret={}", client.0, client.1);
        let (status, body) = self.call("POST", &url, "application/x-www-form-urlencoded", form.into_bytes())?;
        if status != 200 {
            bail!("token in {realm}: {status} {body}");
        }
        body["access_token"].as_str().map(str::to_string).context("access_token")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The seed's registration, with its `client_name` chosen by the caller
/// (`bench-dcr` reads it).
pub fn registration(name: &str) -> Value {
    json!({
        "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "client_name": name,
        "response_types": ["token"],
        "redirect_uris": ["https://www.example.com:443/callback"],
        "scopes": ["read", "write"]
    })
}

/// A fresh data directory under `root`.
pub fn data_dir(root: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
