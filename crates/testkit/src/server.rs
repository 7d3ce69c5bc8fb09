//! The real `agentauth serve`, spawned on a free loopback port, and the
//! HTTP calls that set it up and use it.
//!
//! The end-to-end tests and the benchmark both run the binary they ship
//! (`CARGO_BIN_EXE_agentauth`, or `target/release/agentauth`), so the
//! caller names it. The server prints `agentauth listening on <url>` as
//! its first line of standard output; `/healthz` answering 200 means it
//! is ready.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::client::{Credentials, Form, Registration, realm_path};
use crate::error::{Error, ErrorKind};
use crate::reply::Reply;

/// How long a server may take to answer `/healthz` after it has printed
/// its address (the first start compiles the demo's plugins).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM before it is killed.
const EXIT_WITHIN: Duration = Duration::from_secs(15);
/// How often readiness and exit are polled: short, as the benchmark
/// times a cold start with it.
const POLL: Duration = Duration::from_millis(5);
/// How long one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The bound on any one HTTP call, so a hung server fails the caller
/// rather than hanging it.
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// How to start a server: `agentauth serve --listen 127.0.0.1:0
/// --data-dir DIR` (or [`config_file`](Self::config_file)'s `--config
/// FILE`), then [`demo`](Self::demo)'s `--demo` and the extra arguments,
/// with `RUST_LOG=warn`, no `AGENTAUTH_MASTER_KEY` and no
/// `AGENTAUTH_ADMIN_TOKEN` unless given, and standard error inherited.
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    binary: PathBuf,
    data_dir: Option<PathBuf>,
    admin_token: Option<String>,
    demo: bool,
    config: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stderr: Option<PathBuf>,
}

impl ServerBuilder {
    /// A server run from `binary`, with a fresh data directory removed
    /// when the server is dropped.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            data_dir: None,
            admin_token: None,
            demo: false,
            config: None,
            args: Vec::new(),
            env: Vec::new(),
            stderr: None,
        }
    }

    /// Runs on `dir` instead, which outlives the server: restarts in the
    /// same directory, or a directory the caller inspects.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Enables the admin API with `token` (`AGENTAUTH_ADMIN_TOKEN`).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Serves the demo realm `alpha` with the seed's policies (`--demo`).
    pub fn demo(mut self) -> Self {
        self.demo = true;
        self
    }

    /// Starts with `--config FILE` in place of `--listen 127.0.0.1:0
    /// --data-dir DIR`: the file says where to listen (a loopback port 0)
    /// and where the data goes. The server reports the data directory
    /// given with [`data_dir`](Self::data_dir), which should be the file's.
    pub fn config_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.config = Some(file.into());
        self
    }

    /// Adds arguments after the others.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable, over the defaults (`RUST_LOG`
    /// included).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Writes the server's standard error (its log) into `file`.
    pub fn stderr_to(mut self, file: impl Into<PathBuf>) -> Self {
        self.stderr = Some(file.into());
        self
    }

    /// Starts the server; returns once `/healthz` answers.
    pub fn start(self) -> Result<Server, Error> {
        let start_error = |what: &str, e: std::io::Error| Error::caused_by(ErrorKind::Start, what, e);
        let (data_dir, fresh_dir) = match self.data_dir {
            Some(dir) => (dir, None),
            None => {
                let tmp = tempfile::tempdir().map_err(|e| start_error("making a data directory", e))?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let mut command = Command::new(&self.binary);
        command.arg("serve");
        if self.demo {
            command.arg("--demo");
        }
        match &self.config {
            Some(file) => command.arg("--config").arg(file),
            None => command.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(&data_dir),
        };
        command.args(&self.args);
        command.env_remove("AGENTAUTH_ADMIN_TOKEN").env_remove("AGENTAUTH_MASTER_KEY").env("RUST_LOG", "warn");
        if let Some(token) = &self.admin_token {
            command.env("AGENTAUTH_ADMIN_TOKEN", token);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let stderr = match &self.stderr {
            Some(file) => {
                Stdio::from(std::fs::File::create(file).map_err(|e| start_error("creating the log file", e))?)
            }
            None => Stdio::inherit(),
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| start_error(&format!("starting {}", self.binary.display()), e))?;
        let base = match listening_address(&mut child) {
            Ok(base) => base,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        // From here on, dropping the server stops the process.
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            base,
            data_dir,
            admin_token: self.admin_token,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(HTTP_TIMEOUT))
                .build()
                .into(),
            _fresh_dir: fresh_dir,
        };
        server.addr = server
            .base
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| Error::caused_by(ErrorKind::Start, format!("the listening address {}", server.base), e))?;
        server.wait_ready()?;
        Ok(server)
    }
}

/// Reads `agentauth listening on <url>`, the first line the server prints.
fn listening_address(child: &mut Child) -> Result<String, Error> {
    let stdout = child.stdout.take().ok_or_else(|| Error::new(ErrorKind::Start, "no standard output"))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| Error::caused_by(ErrorKind::Start, "reading the listening address", e))?;
    line.trim()
        .strip_prefix("agentauth listening on ")
        .map(str::to_string)
        .ok_or_else(|| Error::new(ErrorKind::Start, format!("unexpected first line from the server: {line:?}")))
}

/// A running `agentauth serve`, stopped (SIGTERM, then SIGKILL after
/// 15 s) when dropped; its fresh data directory, if it made one, goes
/// with it.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its origin, `http://127.0.0.1:<port>`.
    pub base: String,
    data_dir: PathBuf,
    admin_token: Option<String>,
    http: ureq::Agent,
    _fresh_dir: Option<tempfile::TempDir>,
}

impl Server {
    fn wait_ready(&self) -> Result<(), Error> {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(POLL);
        }
        Err(Error::new(ErrorKind::Start, "the server did not become ready"))
    }

    /// Whether `/healthz` answers 200, asked on a connection the server
    /// closes: read to its end, the probe leaves no connection open (in a
    /// pool, or closing on the server's side) to count against the
    /// connection caps a test sets.
    fn healthy(&self) -> bool {
        use std::io::{Read as _, Write as _};
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&self.addr, PROBE_TIMEOUT) else {
            return false;
        };
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr);
        let mut answer = Vec::new();
        stream.set_read_timeout(Some(PROBE_TIMEOUT)).is_ok()
            && stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_end(&mut answer).is_ok()
            && answer.starts_with(b"HTTP/1.1 200 ")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The threads the server process runs now (Linux; 0 when unknown).
    pub fn threads(&self) -> usize {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// Sends SIGTERM, without waiting.
    pub fn sigterm(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
    }

    /// Waits (at most `limit`) for the server to exit; its exit status.
    /// When it has not exited by then, dropping the server stops it.
    pub fn wait_exit(mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(POLL);
        }
        None
    }

    /// Kills the server with SIGKILL, as a crash or power loss would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server (SIGTERM, then waits) before its data directory
    /// is used again.
    pub fn stop(self) {
        drop(self);
    }

    /// The URL of `path` (from `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL of a realm's OAuth `endpoint`.
    pub fn realm_url(&self, realm: &str, endpoint: &str) -> String {
        self.url(&realm_path(realm, endpoint))
    }

    /// Sends `request`.
    pub fn send(&self, request: ureq::http::Request<Vec<u8>>) -> Result<Reply, Error> {
        Reply::read(self.http.run(request))
    }

    /// GETs `url`.
    pub fn get(&self, url: &str) -> Result<Reply, Error> {
        Reply::read(self.http.get(url).call())
    }

    /// POSTs the JSON `body` to `url`.
    pub fn post_json(&self, url: &str, body: &str) -> Result<Reply, Error> {
        self.send(request("POST", url).header("Content-Type", "application/json").body(body.into()).map_err(bad)?)
    }

    /// POSTs `form` to `url`, with `client` in a Basic `Authorization`
    /// header when given.
    pub fn post_form(&self, url: &str, form: &Form, client: Option<&Credentials>) -> Result<Reply, Error> {
        self.post_form_with(url, form, client, &[])
    }

    /// POSTs `form` to `url` as [`Server::post_form`] does, with extra
    /// `headers` (a `DPoP` proof, say).
    pub fn post_form_with(
        &self,
        url: &str,
        form: &Form,
        client: Option<&Credentials>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, Error> {
        let mut request = request("POST", url).header("Content-Type", "application/x-www-form-urlencoded");
        if let Some(client) = client {
            request = request.header("Authorization", client.basic_authorization());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(form.encode().into_bytes()).map_err(bad)?)
    }

    /// An admin API call (`/admin/v1/realms{path}`) with the admin token
    /// the server was started with.
    pub fn admin(&self, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> Result<Reply, Error> {
        let token = self
            .admin_token
            .as_deref()
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, "the server was started without an admin token"))?;
        let request = request(method, &self.url(&format!("/admin/v1/realms{path}")))
            .header("Content-Type", content_type)
            .header("Authorization", format!("Bearer {token}"));
        self.send(request.body(body).map_err(bad)?)
    }

    /// Registers an AI agent (`aiagent/register`) in `realm`; its
    /// credentials, or an error unless the answer is 201 with them.
    pub fn register_agent(&self, realm: &str, registration: &Registration) -> Result<Credentials, Error> {
        self.register_at(realm, "aiagent/register", registration)
    }

    /// Registers an ordinary client (`register`) in `realm`; its
    /// credentials, or an error unless the answer is 201 with them.
    pub fn register_client(&self, realm: &str, registration: &Registration) -> Result<Credentials, Error> {
        self.register_at(realm, "register", registration)
    }

    fn register_at(&self, realm: &str, endpoint: &str, registration: &Registration) -> Result<Credentials, Error> {
        let what = format!("registering {} in {realm}", registration.to_json()["client_name"]);
        let reply =
            self.post_json(&self.realm_url(realm, endpoint), &registration.body())?.expect_status(201, &what)?;
        Credentials::try_from(&reply.json)
    }

    /// POSTs `form` to `realm`'s token endpoint, with `client` in a Basic
    /// `Authorization` header when given.
    pub fn token(&self, realm: &str, form: &Form, client: Option<&Credentials>) -> Result<Reply, Error> {
        self.post_form(&self.realm_url(realm, "access_token"), form, client)
    }

    /// A client credentials access token for `client` (secret posted),
    /// with `scope` when given; an error unless the answer is 200 with one.
    pub fn client_credentials(&self, realm: &str, client: &Credentials, scope: Option<&str>) -> Result<String, Error> {
        let mut form = Form::client_credentials().client_secret_post(client);
        if let Some(scope) = scope {
            form = form.scope(scope);
        }
        let reply = self.token(realm, &form, None)?.expect_status(200, &format!("a token in {realm}"))?;
        reply.json["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::new(ErrorKind::Unexpected, format!("no access_token in {}", reply.body)))
    }

    /// `client` (secret posted) exchanges `subject_token` for `scope`
    /// (RFC 8693): the answer, whatever it is.
    pub fn exchange(
        &self,
        realm: &str,
        client: &Credentials,
        subject_token: &str,
        scope: &str,
    ) -> Result<Reply, Error> {
        let form = Form::token_exchange(subject_token).scope(scope).client_secret_post(client);
        self.token(realm, &form, None)
    }
}

fn request(method: &str, url: &str) -> ureq::http::request::Builder {
    ureq::http::Request::builder().method(method).uri(url)
}

fn bad(e: ureq::http::Error) -> Error {
    Error::caused_by(ErrorKind::Http, "building a request", e)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SIGTERM lets the server finish in-flight requests and close SQLite.
        self.sigterm();
        let deadline = Instant::now() + EXIT_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
