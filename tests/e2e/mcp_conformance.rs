//! The MCP project's own conformance suite, `@modelcontextprotocol/
//! conformance`, at the version pinned in tests/mcp-conformance, run
//! against the demo realm: its `authorization` command, whose two
//! scenarios check the RFC 8414 metadata and an authorization code grant
//! with PKCE S256 as an MCP client makes it (a public client, a loopback
//! redirect URI, an RFC 8707 `resource`, no `scope`).
//!
//! The suite prints the authorization URL for a person to open and waits
//! for the redirect to its callback server; here the test is that person's
//! browser: it signs a user in on the login page and allows the request on
//! the consent page, as anyone would, then follows the redirect.
//!
//! `scripts/mcp-conformance` installs the suite (npm, and a Node 22 when
//! the system's is older), which plain `cargo test` does not do, hence
//! `#[ignore]`; `make test` runs it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::authorize::{Browser, admin, hidden};
use crate::support::Server;

const USERNAME: &str = "ada";
const PASSWORD: &str = "correct horse battery staple";
/// The MCP server the token is for; only its name matters here.
const RESOURCE: &str = "https://mcp.example.com/mcp";

/// The suite, running; killed if the test ends before it does.
struct Suite {
    child: Child,
    lines: mpsc::Receiver<String>,
    output: Vec<String>,
}

impl Suite {
    fn start(args: &[&str]) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mcp-conformance");
        let mut child = Command::new(&script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, output: Vec::new() }
    }

    /// The first line of output `wanted` picks, within `limit`.
    fn wait_for_line(&mut self, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("the suite did not print the line awaited; it printed:\n{}", self.output.join("\n")),
            }
        }
    }

    /// Waits (at most `limit`) for the suite to end: whether it passed,
    /// and all it printed.
    fn finish(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        // The reader ends when the suite closes its output, at exit.
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.output.push(line);
        }
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the suite") {
                return (status.success(), self.output.join("\n"));
            }
            assert!(Instant::now() < deadline, "the suite did not end; it printed:\n{}", self.output.join("\n"));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port free on 127.0.0.1 for the suite's callback server.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a port");
    listener.local_addr().expect("its address").port()
}

/// Every check in the `checks.json` files the suite wrote under `dir`.
fn checks(dir: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the suite's output directory") {
        let file: PathBuf = entry.expect("an entry").path().join("checks.json");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let Value::Array(checks) = serde_json::from_str(&text).expect("checks.json is JSON") else {
            panic!("{}: not an array", file.display())
        };
        all.extend(checks);
    }
    all
}

#[test]
#[ignore = "needs npm and Node 22 (scripts/mcp-conformance); make test runs it"]
fn the_mcp_conformance_suite_passes_its_authorization_server_scenarios() {
    let server = Server::start_with_admin();
    let (status, body) =
        admin(&server, "POST", "/alpha/users", Some(json!({"username": USERNAME, "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"allowed_resources": [RESOURCE]})));
    assert_eq!(status, 200, "{body}");
    // What an MCP client registers (open registration is on in `alpha`):
    // a public native client whose loopback redirect URI takes any port.
    let registration = json!({
        "client_name": "MCP conformance suite",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        "scope": "read",
    });
    let registered = server.register_raw(&registration.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let client_id = registered.json["client_id"].as_str().expect("a client_id").to_string();

    let issuer = server.realm_url("").trim_end_matches('/').to_string();
    let authorize = server.realm_url("authorize");
    let port = free_port().to_string();
    let results = tempfile::tempdir().expect("a temporary directory");
    let results_dir = results.path().to_string_lossy().into_owned();
    let mut suite = Suite::start(&[
        "authorization",
        "--url",
        &issuer,
        "--client-id",
        &client_id,
        "--resource",
        RESOURCE,
        "--port",
        &port,
        "--output-dir",
        &results_dir,
    ]);

    // npm ci may run first, on a machine that never ran the suite.
    let url = suite.wait_for_line(Duration::from_secs(300), |line| line.starts_with(&format!("{authorize}?")));
    let mut browser = Browser::new();
    let login = browser.get(&url);
    assert_eq!(login.status, 200, "the login page: {}", login.body);
    let pending = hidden(&login.body, "pending");
    let fields = [("pending", pending.as_str()), ("action", "login"), ("username", USERNAME), ("password", PASSWORD)];
    let consent = browser.post(&authorize, &fields);
    assert_eq!(consent.status, 200, "the consent page: {}", consent.body);
    assert!(consent.body.contains(RESOURCE), "consent names the resource: {}", consent.body);
    let pending = hidden(&consent.body, "pending");
    let back = browser.post(&authorize, &[("pending", pending.as_str()), ("action", "allow")]);
    assert_eq!(back.status, 303, "{}", back.body);
    let callback = back.location.expect("a redirect to the client");
    assert!(callback.starts_with(&format!("http://127.0.0.1:{port}/callback?")), "{callback}");
    // The suite's callback server listens before it prints the URL.
    let delivered = browser.get(&callback);
    assert_eq!(delivered.status, 200, "the suite took the redirect: {}", delivered.body);

    let (passed, output) = suite.finish(Duration::from_secs(60));
    println!("{output}");
    assert!(passed, "the suite failed:\n{output}");
    assert!(output.contains("Total: 2 passed, 0 failed"), "{output}");
    let checks = checks(results.path());
    for id in ["authorization-server-metadata", "authorization-code-grant"] {
        let check = checks.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}: {output}"));
        assert_eq!(check["status"], "SUCCESS", "{check}");
    }
    // Anything else is a warning at most: the demo realm does not take
    // Client ID Metadata Documents (`client_metadata_documents` is off by
    // default), and its metadata says `client_id_metadata_document_
    // supported: false`.
    for check in &checks {
        assert!(matches!(check["status"].as_str(), Some("SUCCESS" | "WARNING" | "INFO")), "{check}");
    }
}
