//! What the server is made of: `agentauth -V` names its version,
//! `--version` also those of rustc, wasmtime, the plugin contract and the
//! storage schemas, and `GET /version` answers the same as JSON.

use std::process::Command;

use crate::support::Server;

/// Runs `agentauth args`; (success, stdout).
fn agentauth(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_agentauth")).args(args).output().expect("running agentauth");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into())
}

#[test]
fn version_names_agentauth_rustc_wasmtime_the_plugin_contract_and_the_schemas() {
    let (ok, short) = agentauth(&["-V"]);
    assert!(ok);
    assert_eq!(short.trim(), format!("agentauth {}", env!("CARGO_PKG_VERSION")));
    let (ok, long) = agentauth(&["--version"]);
    assert!(ok);
    for expected in ["rustc 1.", "wasmtime ", "plugin contract agentauth:policy@", "storage schema: SQLite "] {
        assert!(long.contains(expected), "{expected}: {long}");
    }

    let server = Server::start();
    let reply = server.get_url(&server.url("/version"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["agentauth"], env!("CARGO_PKG_VERSION"));
    let wasmtime = reply.json["wasmtime"].as_str().expect("wasmtime's version");
    assert!(long.contains(&format!("wasmtime {wasmtime}\n")), "{long}");
    let mut names: Vec<&str> = reply.json.as_object().expect("an object").keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["agentauth", "plugin_contract", "postgres_schema", "rustc", "sqlite_schema", "wasmtime"]);
    assert_eq!(server.post_json(&server.url("/version"), "{}").status, 405);
}
