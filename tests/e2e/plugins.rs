//! Operating plugins from the command line against a running server, and
//! trying one without a server.

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Server, cli, jwt_parts};

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a fixture");
    path.to_string_lossy().into_owned()
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn an_operator_pushes_lists_rolls_back_and_audits_a_plugin() {
    let server = Server::start_with_admin();
    let dir = tempfile::tempdir().expect("temp dir");
    let other = write(dir.path(), "other.wasm", agentauth_plugins::MISBEHAVING_MAY_ACT);
    let remote = ["--server", server.base.as_str(), "--realm", "alpha"];
    let with = |command: &[&str], extra: &[&str]| -> Vec<String> {
        command.iter().chain(&remote).chain(extra).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args, ADMIN_TOKEN)
    };

    // Version 2 of the demo's may-act plugin: a policy that names no one.
    let (ok, out, err) =
        run(with(&["plugin", "push"], &["--name", "software-agent-may-act", "--hook", "may-act", &other]));
    assert!(ok, "{err}");
    assert_eq!(json_of(&out)["version"], 2);
    let agent = server.register_agent();
    let (_, claims) = jwt_parts(&server.read_token(&agent));
    assert!(claims.get("may_act").is_none(), "version 2 serves: {claims}");

    let (ok, out, err) = run(with(&["plugin", "list"], &[]));
    assert!(ok, "{err}");
    let listed = json_of(&out);
    let versions: Vec<(i64, bool)> = listed["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter(|p| p["name"] == "software-agent-may-act")
        .map(|p| (p["version"].as_i64().unwrap_or(0), p["active"].as_bool().unwrap_or(false)))
        .collect();
    assert_eq!(versions, [(1, false), (2, true)]);

    // Version 1, no longer active, still runs on a case there.
    let case = write(dir.path(), "case.json", br#"{"client": {"client_id": "agent-7"}}"#);
    let (ok, out, err) = run(with(
        &["plugin", "test-version"],
        &["--name", "software-agent-may-act", "--version", "1", "--input", &case],
    ));
    assert!(ok, "{err}");
    let tried = json_of(&out);
    assert_eq!(tried["allowed"], true, "{tried}");
    assert_eq!(tried["decision"]["may_act"]["sub"], "(age!agent-7)", "{tried}");

    let (ok, _, err) = run(with(&["plugin", "rollback"], &["--name", "software-agent-may-act"]));
    assert!(ok, "{err}");
    let (_, claims) = jwt_parts(&server.read_token(&agent));
    assert_eq!(claims["may_act"]["sub"], format!("(age!{})", agent.client_id), "version 1 serves again");

    let (ok, out, err) = run(with(&["realm", "audit"], &[]));
    assert!(ok, "{err}");
    let actions: Vec<(String, String)> = json_of(&out)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or("").to_string(), e["actor"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(
        actions,
        [("push".to_string(), "admin:e2e".to_string()), ("rollback".to_string(), "admin:e2e".to_string())]
    );
}

#[test]
fn the_cli_reports_refusals_and_a_wrong_token() {
    let server = Server::start_with_admin();
    let dir = tempfile::tempdir().expect("temp dir");
    let nosy = write(dir.path(), "nosy.wasm", agentauth_plugins::NOSY_MAY_ACT);
    let push =
        ["plugin", "push", "--server", &server.base, "--realm", "alpha", "--name", "nosy", "--hook", "may-act", &nosy];
    let (ok, _, err) = cli(&push, ADMIN_TOKEN);
    assert!(!ok);
    assert!(err.contains("400 invalid_plugin") && err.contains("wasi:sockets"), "{err}");
    let (ok, _, err) = cli(&["plugin", "list", "--server", &server.base, "--realm", "alpha"], "not-the-admin-token");
    assert!(!ok);
    assert!(err.contains("401"), "{err}");
}

#[test]
fn a_plugin_can_be_tried_without_a_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = write(dir.path(), "may-act.wasm", agentauth_plugins::SOFTWARE_AGENT_MAY_ACT);
    let case = dir.path().join("case.json");
    std::fs::write(&case, json!({"client": {"client_id": "agent-7"}}).to_string()).expect("writing the case");
    let case = case.to_string_lossy().into_owned();
    let (ok, out, err) = cli(&["plugin", "test", &plugin, "--hook", "may-act", "--input", &case], "");
    assert!(ok, "{err}");
    assert_eq!(
        json_of(&out),
        json!({"allowed": true, "decision": {"may_act": {"client_id": "agent-7", "sub": "(age!agent-7)"}}})
    );

    let hostile = write(dir.path(), "hostile.wasm", agentauth_plugins::MISBEHAVING_MAY_ACT);
    let case = dir.path().join("loop.json");
    std::fs::write(&case, json!({"client": {"metadata": {"client_name": "loop"}}}).to_string())
        .expect("writing the case");
    let case = case.to_string_lossy().into_owned();
    let (ok, out, _) = cli(&["plugin", "test", &hostile, "--hook", "may-act", "--input", &case], "");
    assert!(!ok, "a failing plugin exits non-zero");
    assert!(json_of(&out)["failed"].as_str().is_some_and(|w| w.contains("timed out")), "{out}");
}

/// Polls `check` for up to 15 seconds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn a_developer_hot_swaps_a_plugin_by_saving_its_file() {
    let data = tempfile::tempdir().expect("temp dir");
    let watched = tempfile::tempdir().expect("temp dir");
    let realm_dir = watched.path().join("alpha");
    std::fs::create_dir(&realm_dir).expect("realm dir");
    let watch = watched.path().to_string_lossy().into_owned();
    let server = Server::start_with(data.path(), &["--watch-plugins", &watch]);
    let agent = server.register_agent();
    let may_act = || jwt_parts(&server.read_token(&agent)).1.get("may_act").cloned();
    assert!(may_act().is_some(), "the demo's may-act policy serves first");

    // Saving a policy that names no one swaps it in.
    let file = realm_dir.join("software-agent-may-act.wasm");
    std::fs::write(&file, agentauth_plugins::MISBEHAVING_MAY_ACT).expect("writing the plugin");
    eventually("the saved plugin serves", || may_act().is_none());

    // A broken save is refused; the last good version keeps serving.
    std::fs::write(&file, b"half-written").expect("writing the plugin");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(may_act().is_none());

    // Saving the original swaps it back.
    std::fs::write(&file, agentauth_plugins::SOFTWARE_AGENT_MAY_ACT).expect("writing the plugin");
    eventually("the original plugin serves again", || may_act().is_some());
}
