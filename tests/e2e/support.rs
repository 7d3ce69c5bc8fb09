//! Starting the server and speaking to it, as the end-to-end tests do:
//! the real binary with `--demo`, requests to the demo realm `alpha`, and
//! a panic (a test failure) wherever the server does not answer.
//!
//! Spawning, registrations, token requests and replies are
//! `agentauth-testkit`'s, shared with the benchmark; this module fixes
//! what every test here has in common and keeps the helpers only these
//! tests use.

use std::ops::Deref;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use agentauth_testkit::{Form, Registration, ServerBuilder};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

pub use agentauth_testkit::{ACCESS_TOKEN_TYPE, Credentials, Reply, TOKEN_EXCHANGE, jwt_parts};

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
/// The realm `--demo` sets up.
const REALM: &str = "alpha";

/// A running `agentauth serve --demo`, stopped when dropped; the kit's
/// server, with the calls below fixed to the demo realm.
#[derive(Debug)]
pub struct Server(agentauth_testkit::Server);

impl Deref for Server {
    type Target = agentauth_testkit::Server;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Server {
    fn builder() -> ServerBuilder {
        ServerBuilder::new(env!("CARGO_BIN_EXE_agentauth")).demo()
    }

    fn launch(builder: ServerBuilder) -> Self {
        Self(builder.start().unwrap_or_else(|e| panic!("starting agentauth: {e}")))
    }

    /// Starts a server with a fresh data directory.
    pub fn start() -> Self {
        Self::launch(Self::builder())
    }

    /// Starts a server with a fresh data directory and extra arguments.
    pub fn start_with_args(args: &[&str]) -> Self {
        Self::launch(Self::builder().args(args))
    }

    /// Starts a server with a fresh data directory and the admin API on,
    /// with [`ADMIN_TOKEN`].
    pub fn start_with_admin() -> Self {
        Self::launch(Self::builder().admin_token(ADMIN_TOKEN))
    }

    /// Starts a server with a fresh data directory, the admin API on and
    /// extra arguments.
    pub fn start_with_admin_args(args: &[&str]) -> Self {
        Self::launch(Self::builder().admin_token(ADMIN_TOKEN).args(args))
    }

    /// Starts a server with a fresh data directory, the admin API on,
    /// extra arguments and an environment variable.
    pub fn start_with_admin_args_env(args: &[&str], key: &str, value: &str) -> Self {
        Self::launch(Self::builder().admin_token(ADMIN_TOKEN).args(args).env(key, value))
    }

    /// Starts a replica on the PostgreSQL database `database`, sharing
    /// `master_key` and the origin clients use (`public_url`) with the other
    /// replicas there, with the admin API on.
    pub fn start_replica(database: &str, master_key: &str, public_url: &str) -> Self {
        let args = ["--database", database, "--public-url", public_url];
        let builder = Self::builder().admin_token(ADMIN_TOKEN).args(args);
        Self::launch(builder.env("AGENTAUTH_MASTER_KEY", master_key))
    }

    /// Starts a server on the data directory `dir` with the admin API on.
    pub fn start_with_admin_in(dir: &Path) -> Self {
        Self::launch(Self::builder().admin_token(ADMIN_TOKEN).data_dir(dir))
    }

    /// Starts a server on the data directory `dir` with the admin API on
    /// and extra arguments.
    pub fn start_with_admin_in_args(dir: &Path, args: &[&str]) -> Self {
        Self::launch(Self::builder().admin_token(ADMIN_TOKEN).data_dir(dir).args(args))
    }

    /// Starts a server on the data directory `dir`, with extra arguments.
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        Self::launch(Self::builder().data_dir(dir).args(args))
    }

    /// Starts a server with a fresh data directory and the admin API on,
    /// logging everything it would log at `trace` into `log`.
    pub fn start_logging_to(log: &Path) -> Self {
        // Everything but the compiler's own chatter.
        let filter = "trace,cranelift=warn,wasmtime=warn,wasmtime_cranelift=warn";
        Self::launch(Self::builder().admin_token(ADMIN_TOKEN).env("RUST_LOG", filter).stderr_to(log))
    }

    /// Starts a server like [`Server::start_logging_to`], its log lines
    /// written as JSON objects.
    pub fn start_logging_json_to(log: &Path) -> Self {
        let filter = "debug,cranelift=warn,wasmtime=warn,wasmtime_cranelift=warn";
        let builder = Self::builder().admin_token(ADMIN_TOKEN).args(["--log-format", "json"]);
        Self::launch(builder.env("RUST_LOG", filter).stderr_to(log))
    }

    /// Starts a server with `--config file` alone, the file naming
    /// `data_dir`, logging at `info` into `log`.
    pub fn start_with_config(file: &Path, data_dir: &Path, log: &Path) -> Self {
        let builder = Self::builder().config_file(file).data_dir(data_dir);
        Self::launch(builder.env("RUST_LOG", "info").stderr_to(log))
    }

    /// Starts a server exporting its traces over OTLP/HTTP (JSON) to
    /// `collector`, batched for at most 100 ms, its JSON log lines in `log`.
    pub fn start_exporting_traces(collector: &str, log: &Path) -> Self {
        let builder = Self::builder()
            .admin_token(ADMIN_TOKEN)
            .args(["--log-format", "json", "--otlp-endpoint", collector])
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("RUST_LOG", "debug,cranelift=warn,wasmtime=warn,wasmtime_cranelift=warn,hyper=info,reqwest=info");
        Self::launch(builder.stderr_to(log))
    }

    /// Waits (at most `limit`) for the server to exit; its exit status.
    pub fn wait_exit(self, limit: Duration) -> Option<ExitStatus> {
        self.0.wait_exit(limit)
    }

    /// Kills the server with SIGKILL, as a crash or power loss would.
    pub fn kill(self) {
        self.0.kill();
    }

    /// Stops the server (SIGTERM, then waits).
    pub fn stop(self) {
        self.0.stop();
    }

    /// The URL of a demo realm endpoint.
    pub fn realm_url(&self, endpoint: &str) -> String {
        self.0.realm_url(REALM, endpoint)
    }

    /// GETs a realm endpoint.
    pub fn get(&self, endpoint: &str) -> Reply {
        self.get_url(&self.realm_url(endpoint))
    }

    /// GETs any URL.
    pub fn get_url(&self, url: &str) -> Reply {
        answered(self.0.get(url))
    }

    /// POSTs JSON to `url`.
    pub fn post_json(&self, url: &str, body: &str) -> Reply {
        answered(self.0.post_json(url, body))
    }

    /// POSTs JSON to `aiagent/register`.
    pub fn register_raw(&self, body: &str) -> Reply {
        self.post_json(&self.realm_url("aiagent/register"), body)
    }

    /// Registers the seed's software agent and returns its credentials.
    pub fn register_agent(&self) -> Credentials {
        self.0.register_agent(REALM, &Registration::seed()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// POSTs a form to `access_token`, with optional Basic credentials.
    pub fn token(&self, form: &[(&str, &str)], basic: Option<&Credentials>) -> Reply {
        self.post_form("access_token", form, basic)
    }

    /// POSTs a form to a realm endpoint, with optional Basic credentials.
    pub fn post_form(&self, endpoint: &str, form: &[(&str, &str)], basic: Option<&Credentials>) -> Reply {
        let form = form.iter().fold(Form::new(), |form, (name, value)| form.field(name, value));
        answered(self.0.post_form(&self.realm_url(endpoint), &form, basic))
    }

    /// The seed's client credentials request, with `scope=read`.
    pub fn read_token(&self, client: &Credentials) -> String {
        self.0.client_credentials(REALM, client, Some("read")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The seed's token exchange request for `scope`.
    pub fn exchange(&self, client: &Credentials, subject_token: &str, scope: &str) -> Reply {
        answered(self.0.exchange(REALM, client, subject_token, scope))
    }

    /// Introspects `token` as `caller`.
    pub fn introspect(&self, caller: &Credentials, token: &str) -> Reply {
        self.post_form("introspect", &[("token", token)], Some(caller))
    }

    /// Revokes `token` as `caller`.
    pub fn revoke(&self, caller: &Credentials, token: &str) -> Reply {
        self.post_form("token/revoke", &[("token", token)], Some(caller))
    }
}

/// The reply; a test failure when the server did not answer.
pub fn answered(reply: Result<Reply, agentauth_testkit::Error>) -> Reply {
    reply.unwrap_or_else(|e| panic!("the server answered: {e}"))
}

/// The registration request body of the seed page, verbatim.
pub fn seed_registration() -> Value {
    Registration::seed().to_json()
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

/// Runs the node script `script` of tests/browser (whose packages
/// scripts/install-browser installs) with `args`, and reads the JSON it
/// prints; a test failure, saying `what` failed and what the script
/// printed, when it fails.
pub fn node_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S], what: &str) -> Value {
    let out = Command::new("node")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser"))
        .arg(script)
        .args(args)
        .output()
        .expect("running node (scripts/install-browser installs what the scripts need)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} ({}): {stderr}{stdout}", out.status);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
