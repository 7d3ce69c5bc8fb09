//! What one realm's admins may take from the server: uploads and key
//! rotations are rate-limited, stored plugins are bounded, and nothing a
//! refused or deleted upload compiled stays behind.

use std::time::{Duration, Instant};

use agentauth_store::prelude::*;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Reply, Server, answered};

fn admin(server: &Server, method: &str, path: &str, body: Vec<u8>) -> Reply {
    admin_as(server, ADMIN_TOKEN, method, path, body)
}

fn admin_as(server: &Server, token: &str, method: &str, path: &str, body: Vec<u8>) -> Reply {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}/admin/v1/realms{path}", server.base))
        .header("Authorization", format!("Bearer {token}"))
        .body(body)
        .expect("a request");
    answered(server.send(request))
}

fn settings(server: &Server, realm: &str, changes: Value) {
    let reply = admin(server, "PATCH", &format!("/{realm}"), changes.to_string().into_bytes());
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn push(server: &Server, name: &str, bytes: &[u8]) -> Reply {
    admin(server, "POST", &format!("/alpha/plugins/{name}?hook=may-act"), bytes.to_vec())
}

fn assert_slow_down(reply: &Reply) {
    assert_eq!((reply.status, reply.json["error"].as_str()), (429, Some("slow_down")), "{}", reply.body);
    let wait: u64 = reply.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("a Retry-After in seconds");
    assert!((1..=60).contains(&wait), "{wait}");
}

#[test]
fn plugin_uploads_past_the_realms_rate_are_refused_with_retry_after() {
    let server = Server::start_with_admin();
    settings(&server, "alpha", json!({"plugin_pushes_per_minute": 2}));
    // Refused uploads count too: each may have cost a compilation.
    assert_eq!(push(&server, "p", b"not a component").status, 400);
    assert_eq!(push(&server, "p", agentauth_plugins::MISBEHAVING_MAY_ACT).status, 201);
    assert_slow_down(&push(&server, "p", agentauth_plugins::MISBEHAVING_MAY_ACT));
    // Other realms have their own allowance.
    assert_eq!(admin(&server, "PUT", "/beta", b"{}".to_vec()).status, 201);
    let other = admin(&server, "POST", "/beta/plugins/p?hook=may-act", agentauth_plugins::MISBEHAVING_MAY_ACT.to_vec());
    assert_eq!(other.status, 201, "{}", other.body);
}

#[test]
fn key_rotations_past_the_realms_rate_are_refused_with_retry_after() {
    let server = Server::start_with_admin();
    settings(&server, "alpha", json!({"key_rotations_per_minute": 1}));
    assert_eq!(admin(&server, "POST", "/alpha/keys/rotate", vec![]).status, 200);
    assert_slow_down(&admin(&server, "POST", "/alpha/keys/rotate", vec![]));
    let keys = admin(&server, "GET", "/alpha/keys", vec![]);
    assert_eq!(keys.json["keys"].as_array().map(Vec::len), Some(2), "the refused rotation made no key");
}

#[test]
fn a_realm_publishes_at_most_ten_keys_at_once() {
    let server = Server::start_with_admin();
    settings(&server, "alpha", json!({"key_rotations_per_minute": 1000}));
    let rotate = || admin(&server, "POST", "/alpha/keys/rotate", br#"{"alg": "ES256"}"#.to_vec());
    // The demo realm's first key, and nine rotated in.
    for _ in 1..10 {
        assert_eq!(rotate().status, 200);
    }
    let refused = rotate();
    assert_eq!((refused.status, refused.json["error"].as_str()), (429, Some("slow_down")), "{}", refused.body);
    let wait: u64 = refused.retry_after.as_deref().and_then(|s| s.parse().ok()).expect("a Retry-After in seconds");
    assert!(wait > 60, "until the oldest key retires: {wait}");
    assert_eq!(server.get("connect/jwk_uri").json["keys"].as_array().map(Vec::len), Some(10));
}

#[test]
fn a_realm_stores_plugins_within_its_quota_which_only_the_operator_sets() {
    let server = Server::start_with_admin();
    // The demo realm stores two versions; room for one more.
    settings(&server, "alpha", json!({"plugin_storage_versions": 3}));
    assert_eq!(push(&server, "extra", agentauth_plugins::MISBEHAVING_MAY_ACT).status, 201);
    let refused = push(&server, "extra", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT);
    assert_eq!((refused.status, refused.json["error"].as_str()), (409, Some("quota_exceeded")), "{}", refused.body);
    let listed = admin(&server, "GET", "/alpha/plugins/extra", vec![]);
    assert_eq!(listed.json["plugins"].as_array().map(Vec::len), Some(1), "nothing of the refused push stored");
    // Deleting a version makes room.
    assert_eq!(admin(&server, "DELETE", "/alpha/plugins/extra", vec![]).status, 200);
    assert_eq!(push(&server, "extra", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT).status, 201);

    let created = admin(&server, "POST", "/alpha/admins", br#"{"name": "ops"}"#.to_vec());
    let token = created.json["token"].as_str().expect("a realm admin token").to_string();
    for change in [
        json!({"plugin_storage_versions": 1000}),
        json!({"plugin_storage_bytes": 1u64 << 40}),
        json!({"plugin_pushes_per_minute": 10_000}),
        json!({"key_rotations_per_minute": 10_000}),
        json!({"max_published_keys": 1000}),
    ] {
        let reply = admin_as(&server, &token, "PATCH", "/alpha", change.to_string().into_bytes());
        assert_eq!((reply.status, reply.json["error"].as_str()), (403, Some("access_denied")), "{change}");
    }
}

#[test]
fn refused_uploads_and_deleted_plugins_leave_no_compiled_artifacts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with_admin_in(dir.path());
    // Compiles, then is refused: it imports sockets.
    let refused = push(&server, "nosy", agentauth_plugins::NOSY_MAY_ACT);
    assert_eq!(refused.status, 400, "{}", refused.body);
    // Compiles, is stored, then deleted.
    assert_eq!(push(&server, "extra", agentauth_plugins::MISBEHAVING_MAY_ACT).status, 201);
    assert_eq!(admin(&server, "DELETE", "/alpha/plugins/extra", vec![]).status, 200);
    // A realm of its own, deleted with its plugin.
    assert_eq!(admin(&server, "PUT", "/beta", b"{}".to_vec()).status, 201);
    let beta = admin(&server, "POST", "/beta/plugins/p?hook=dcr", agentauth_plugins::MISBEHAVING_DCR.to_vec());
    assert_eq!(beta.status, 201, "{}", beta.body);
    assert_eq!(admin(&server, "DELETE", "/beta", vec![]).status, 204);
    drop(server);

    let store = agentauth_store::Store::open(&dir.path().join("agentauth.sqlite3")).expect("the database");
    let stored = store.plugin_artifact_hashes().expect("artifacts");
    let sha = agentauth_plugin_host::sha256_hex;
    let demo = [sha(agentauth_plugins::SOFTWARE_AGENT_DCR), sha(agentauth_plugins::SOFTWARE_AGENT_MAY_ACT)];
    for gone in
        [agentauth_plugins::NOSY_MAY_ACT, agentauth_plugins::MISBEHAVING_MAY_ACT, agentauth_plugins::MISBEHAVING_DCR]
    {
        assert!(!stored.contains(&sha(gone)), "an artifact no stored version uses: {stored:?}");
    }
    assert!(stored.iter().all(|s| demo.contains(s)), "{stored:?}");
}

#[test]
fn an_upload_too_costly_to_compile_is_refused_in_bounded_time_while_other_realms_are_served() {
    let server = Server::start_with_admin_args(&["--plugin-compile-cpu-seconds", "2"]);
    let agent = server.register_agent();
    assert_eq!(admin(&server, "PUT", "/beta", b"{}".to_vec()).status, 201);
    let hostile = slow_to_compile(HOSTILE_FUNCTIONS, HOSTILE_VALUES);
    assert!(hostile.len() < 4 << 20, "a small upload: {} bytes", hostile.len());

    let started = Instant::now();
    let (refused, latencies) = std::thread::scope(|scope| {
        let upload = scope.spawn(|| admin(&server, "POST", "/beta/plugins/p?hook=dcr", hostile.clone()));
        // Realm alpha keeps issuing tokens meanwhile.
        let mut latencies = Vec::new();
        while !upload.is_finished() {
            let at = Instant::now();
            server.read_token(&agent);
            latencies.push(at.elapsed());
        }
        (upload.join().expect("the upload thread"), latencies)
    });
    let took = started.elapsed();
    assert_eq!((refused.status, refused.json["error"].as_str()), (400, Some("invalid_plugin")), "{}", refused.body);
    assert!(refused.json["error_description"].as_str().is_some_and(|d| d.contains("CPU-seconds")), "{}", refused.body);
    // The bound: 2 CPU-seconds, or at worst its wall-clock deadline (9 s).
    assert!(took < Duration::from_secs(12), "refused only after {took:?}");
    let listed = admin(&server, "GET", "/beta/plugins", vec![]);
    assert_eq!(listed.json["plugins"], json!([]), "nothing stored");

    let mut sorted = latencies.clone();
    sorted.sort();
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    eprintln!(
        "token requests of another realm during the hostile upload ({took:?}): {} requests, p50 {:?}, p99 {p99:?}, max {:?}",
        sorted.len(),
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

#[test]
fn uploads_past_what_the_server_compiles_and_queues_are_told_to_come_back() {
    let server = Server::start_with_admin_args(&["--plugin-compile-cpu-seconds", "1"]);
    let hostile = slow_to_compile(HOSTILE_FUNCTIONS, HOSTILE_VALUES);
    let realms: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
    for realm in &realms {
        assert_eq!(admin(&server, "PUT", &format!("/{realm}"), b"{}".to_vec()).status, 201);
    }
    // Six realms upload at once: one compiles, three wait, two are turned away.
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let uploads: Vec<_> = realms
            .iter()
            .map(|realm| {
                let (server, hostile) = (&server, &hostile);
                scope.spawn(move || admin(server, "POST", &format!("/{realm}/plugins/p?hook=dcr"), hostile.clone()))
            })
            .collect();
        uploads.into_iter().map(|u| u.join().expect("an upload thread")).collect()
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 4, "{statuses:?}");
    let busy: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(busy.len(), 2, "{statuses:?}");
    for reply in busy {
        assert_eq!(reply.json["error"], "temporarily_unavailable", "{}", reply.body);
        assert!(reply.retry_after.is_some(), "{}", reply.body);
    }
}

#[test]
fn a_realm_has_one_upload_in_flight_at_a_time() {
    let server = Server::start_with_admin_args(&["--plugin-compile-cpu-seconds", "2"]);
    let hostile = slow_to_compile(HOSTILE_FUNCTIONS, HOSTILE_VALUES);
    std::thread::scope(|scope| {
        let first = scope.spawn(|| push(&server, "slow", &hostile));
        std::thread::sleep(Duration::from_millis(500));
        // While the first compiles, the realm's second upload is turned away.
        let second = push(&server, "quick", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT);
        assert_eq!(
            (second.status, second.json["error"].as_str()),
            (503, Some("temporarily_unavailable")),
            "{}",
            second.body
        );
        assert!(second.body.contains("already has an upload"), "{}", second.body);
        assert!(second.retry_after.is_some());
        assert_eq!(first.join().expect("the first upload").status, 400);
    });
    // Once the first is done, the realm uploads again.
    assert_eq!(push(&server, "quick", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT).status, 201);
}

/// The hostile component: one function of 220 KB, under the size the
/// pre-check refuses, that takes about ten CPU-seconds to compile.
const HOSTILE_FUNCTIONS: u64 = 1;
const HOSTILE_VALUES: u64 = 30_000;

#[test]
fn an_enormous_function_is_refused_before_it_is_compiled() {
    let server = Server::start_with_admin();
    let enormous = slow_to_compile(1, 400_000);
    let started = Instant::now();
    let refused = push(&server, "p", &enormous);
    assert_eq!((refused.status, refused.json["error"].as_str()), (400, Some("invalid_plugin")), "{}", refused.body);
    assert!(refused.body.contains("bytes of code"), "{}", refused.body);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

/// LEB128, as the Wasm binary format writes integers.
fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A valid component of `functions` core functions, each keeping
/// `values` values alive at once on its operand stack: small to upload,
/// slow to compile (register allocation).
pub fn slow_to_compile(functions: u64, values: u64) -> Vec<u8> {
    let mut code = vec![0x00]; // no locals but the parameter
    for i in 1..=values {
        code.extend([0x20, 0x00, 0x42]); // local.get 0, i64.const i
        leb(i, &mut code);
        code.push(0x7e); // i64.mul, left on the stack
    }
    code.extend([0x20, 0x00]);
    code.extend(std::iter::repeat_n(0x7c, values as usize)); // i64.add, all the way down
    code.push(0x0b);
    let (mut declared, mut bodies) = (Vec::new(), Vec::new());
    leb(functions, &mut declared);
    leb(functions, &mut bodies);
    declared.extend(std::iter::repeat_n(0x00, functions as usize)); // each of type 0
    for _ in 0..functions {
        leb(code.len() as u64, &mut bodies);
        bodies.extend(&code);
    }

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(0x01, &[0x01, 0x60, 0x01, 0x7e, 0x01, 0x7e], &mut module); // (func (param i64) (result i64))
    section(0x03, &declared, &mut module);
    section(0x0a, &bodies, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(0x01, &module, &mut component); // a core module, never instantiated
    component
}

#[test]
fn an_upload_refused_before_its_body_is_read_still_gets_its_answer() {
    let server = Server::start_with_admin();
    // Far more than the kernel buffers between client and server: the
    // client is still sending when the refusal is written.
    let body = vec![0u8; 8 << 20];
    for _ in 0..3 {
        let refused = admin_as(&server, "not-the-admin-token", "POST", "/alpha/plugins/p?hook=may-act", body.clone());
        assert_eq!(refused.status, 401, "{}", refused.body);
    }
}
