//! Starting the server and speaking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A running `agentauth serve --demo`, stopped when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh data directory.
    pub fn start() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut server = Self::start_with(&dir, &[]);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server with a fresh data directory and extra arguments.
    pub fn start_with_args(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut server = Self::start_with(&dir, args);
        server._tmp = Some(tmp);
        server
    }

    /// The address the server listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().expect("a socket address")
    }

    /// Starts a server with a fresh data directory and the admin API on,
    /// with [`ADMIN_TOKEN`].
    pub fn start_with_admin() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut server = Self::spawn(&dir, &[], Some(ADMIN_TOKEN));
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server with a fresh data directory, the admin API on and
    /// extra arguments.
    pub fn start_with_admin_args(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut server = Self::spawn(&dir, args, Some(ADMIN_TOKEN));
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server on the data directory `dir` with the admin API on.
    pub fn start_with_admin_in(dir: &Path) -> Self {
        Self::spawn(dir, &[], Some(ADMIN_TOKEN))
    }

    /// Sends SIGTERM, without waiting.
    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }

    /// Waits (at most `limit`) for the server to exit; its exit status.
    pub fn wait_exit(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the server with SIGKILL, as a crash or power loss would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a server on the data directory `dir`, with extra arguments.
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        Self::spawn(dir, args, None)
    }

    fn spawn(dir: &Path, args: &[&str], admin_token: Option<&str>) -> Self {
        Self::spawn_logging(dir, args, admin_token, None)
    }

    /// Starts a server with a fresh data directory and the admin API on,
    /// logging everything it would log at `trace` into `log`.
    pub fn start_logging_to(log: &Path) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut server = Self::spawn_logging(&dir, &[], Some(ADMIN_TOKEN), Some(log));
        server._tmp = Some(tmp);
        server
    }

    fn spawn_logging(dir: &Path, args: &[&str], admin_token: Option<&str>, log: Option<&Path>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentauth"));
        command.env_remove("AGENTAUTH_ADMIN_TOKEN").env_remove("AGENTAUTH_MASTER_KEY");
        if let Some(token) = admin_token {
            command.env("AGENTAUTH_ADMIN_TOKEN", token);
        }
        match log {
            Some(log) => {
                let file = std::fs::File::create(log).expect("creating the log file");
                // Everything but the compiler's own chatter.
                let filter = "trace,cranelift=warn,wasmtime=warn,wasmtime_cranelift=warn";
                command.env("RUST_LOG", filter).stderr(Stdio::from(file))
            }
            None => command.env("RUST_LOG", "warn").stderr(Stdio::inherit()),
        };
        let mut child = command
            .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting agentauth");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reading the listening address");
        let addr = line
            .trim()
            .strip_prefix("agentauth listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let server = Self { child, base: addr.to_string(), data_dir: dir.to_path_buf(), _tmp: None };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if agent().get(&format!("{}/healthz", self.base)).call().is_ok_and(|r| r.status() == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not become ready");
    }

    /// Stops the server (SIGTERM, then waits) and returns its data dir.
    pub fn stop(mut self) -> PathBuf {
        terminate(&mut self.child);
        self.data_dir.clone()
    }

    /// The threads the server process runs now (Linux).
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn realm_url(&self, endpoint: &str) -> String {
        format!("{}/am/oauth2/realms/root/realms/alpha/{endpoint}", self.base)
    }

    /// GETs a realm endpoint.
    pub fn get(&self, endpoint: &str) -> Reply {
        self.get_url(&self.realm_url(endpoint))
    }

    /// GETs any URL.
    pub fn get_url(&self, url: &str) -> Reply {
        Reply::from(agent().get(url).call())
    }

    /// POSTs JSON to `url`.
    pub fn post_json(&self, url: &str, body: &str) -> Reply {
        Reply::from(agent().post(url).header("Content-Type", "application/json").send(body))
    }

    /// POSTs JSON to `aiagent/register`.
    pub fn register_raw(&self, body: &str) -> Reply {
        self.post_json(&self.realm_url("aiagent/register"), body)
    }

    /// Registers the seed's software agent and returns its credentials.
    pub fn register_agent(&self) -> Agent {
        let reply = self.register_raw(&seed_registration().to_string());
        assert_eq!(reply.status, 201, "{}", reply.body);
        Agent {
            client_id: reply.json["client_id"].as_str().expect("client_id").into(),
            client_secret: reply.json["client_secret"].as_str().expect("client_secret").into(),
        }
    }

    /// POSTs a form to `access_token`, with optional Basic credentials.
    pub fn token(&self, form: &[(&str, &str)], basic: Option<&Agent>) -> Reply {
        self.post_form("access_token", form, basic)
    }

    /// POSTs a form to a realm endpoint, with optional Basic credentials.
    pub fn post_form(&self, endpoint: &str, form: &[(&str, &str)], basic: Option<&Agent>) -> Reply {
        let mut request = agent().post(&self.realm_url(endpoint));
        if let Some(a) = basic {
            let credentials = STANDARD.encode(format!("{}:{}", a.client_id, a.client_secret));
            request = request.header("Authorization", format!("Basic {credentials}"));
        }
        Reply::from(request.send_form(form.iter().copied()))
    }

    /// The seed's client credentials request, with `scope=read`.
    pub fn read_token(&self, a: &Agent) -> String {
        let reply = self.token(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &a.client_id),
                ("client_secret", &a.client_secret),
                ("scope", "read"),
            ],
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json["access_token"].as_str().expect("access_token").into()
    }

    /// The seed's token exchange request for `read write`.
    pub fn exchange(&self, a: &Agent, subject_token: &str, scope: &str) -> Reply {
        self.token(
            &[
                ("client_id", &a.client_id),
                ("client_secret", &a.client_secret),
                ("grant_type", TOKEN_EXCHANGE),
                ("scope", scope),
                ("subject_token", subject_token),
                ("subject_token_type", ACCESS_TOKEN_TYPE),
            ],
            None,
        )
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
    // SIGTERM lets the server finish in-flight requests and close SQLite.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// A registered agent's credentials.
#[derive(Clone, Debug)]
pub struct Agent {
    pub client_id: String,
    pub client_secret: String,
}

impl Agent {
    /// The credentials in a registration response (empty where missing:
    /// the request that uses them then fails, and says so).
    pub fn from_registration(reply: &Value) -> Self {
        Self {
            client_id: reply["client_id"].as_str().unwrap_or_default().into(),
            client_secret: reply["client_secret"].as_str().unwrap_or_default().into(),
        }
    }
}

/// A response: status, headers of interest and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub json: Value,
    pub cache_control: Option<String>,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<String>,
}

impl From<Result<ureq::http::Response<ureq::Body>, ureq::Error>> for Reply {
    fn from(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Self {
        let mut r = r.expect("the server answered");
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (cache_control, www_authenticate) = (header("cache-control"), header("www-authenticate"));
        let retry_after = header("retry-after");
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().expect("a text body");
        let json = serde_json::from_str(&body).unwrap_or(Value::Null);
        Self { status, body, json, cache_control, www_authenticate, retry_after }
    }
}

impl Reply {
    /// Asserts an RFC 6749 §5.2 error response.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.json["error"].as_str()), (status, Some(code)), "{}", self.body);
        assert!(self.json["error_description"].is_string(), "{}", self.body);
        assert_eq!(self.cache_control.as_deref(), Some("no-store"));
    }
}

/// The registration request body of the seed page, verbatim.
pub fn seed_registration() -> Value {
    json!({
        "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "client_name": "software agent",
        "response_types": ["token"],
        "redirect_uris": ["https://www.example.com:443/callback"],
        "scopes": ["read", "write"]
    })
}

/// The header and claims of a JWT, unverified.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = || {
        let part = parts.next().expect("a JWT part");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
    };
    (decode(), decode())
}

/// Re-encodes a JWT with `claims`, keeping header and signature.
pub fn with_claims(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

/// Re-encodes a JWT with `header` and no signature.
pub fn unsigned_with_header(token: &str, header: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.", URL_SAFE_NO_PAD.encode(header.to_string()), parts[1])
}

/// Runs the `agentauth` CLI with `args`; returns (success, stdout, stderr).
pub fn cli(args: &[&str], admin_token: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentauth"))
        .args(args)
        .env("AGENTAUTH_ADMIN_TOKEN", admin_token)
        .env("USER", "e2e")
        .output()
        .expect("running agentauth");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

impl Server {
    /// Introspects `token` as `caller`.
    pub fn introspect(&self, caller: &Agent, token: &str) -> Reply {
        self.post_form("introspect", &[("token", token)], Some(caller))
    }

    /// Revokes `token` as `caller`.
    pub fn revoke(&self, caller: &Agent, token: &str) -> Reply {
        self.post_form("token/revoke", &[("token", token)], Some(caller))
    }
}
