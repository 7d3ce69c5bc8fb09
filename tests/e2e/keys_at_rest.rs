//! Private keys are sealed at rest under the operator's master key; a
//! wrong or missing master key stops the server with a clear message and
//! never makes new keys.

use std::process::Command;

use agentauth_store::prelude::*;

use crate::support::Server;

fn serve_fails(dir: &std::path::Path, master_key: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_agentauth"));
    command
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("AGENTAUTH_MASTER_KEY");
    if let Some(key) = master_key {
        command.env("AGENTAUTH_MASTER_KEY", key);
    }
    let out = command.output().expect("running agentauth");
    assert!(!out.status.success(), "the server must not start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stored_keys(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let store = agentauth_store::Store::open(&dir.join("agentauth.sqlite3")).expect("the database");
    store.keys("alpha").expect("keys").into_iter().map(|k| k.pkcs8).collect()
}

#[test]
fn signing_keys_are_sealed_and_a_wrong_master_key_stops_the_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &[]);
    let agent = server.register_agent();
    server.read_token(&agent);
    server.stop();

    let keys = stored_keys(dir.path());
    assert_eq!(keys.len(), 1);
    assert!(agentauth_jose::is_sealed(&keys[0]), "the private key is sealed at rest");
    let key_file = std::fs::read_to_string(dir.path().join("master.key")).expect("the generated master key");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("master.key")).expect("metadata").permissions().mode();
    assert_eq!(mode & 0o077, 0, "only its owner may read the master key");

    let (_, other) = agentauth_jose::MasterKey::generate().expect("a key");
    let err = serve_fails(dir.path(), Some(&other));
    assert!(err.contains("the master key does not open this database's keys"), "{err}");

    std::fs::remove_file(dir.path().join("master.key")).expect("removing the key file");
    let err = serve_fails(dir.path(), None);
    assert!(err.contains("master.key is missing"), "{err}");
    assert_eq!(stored_keys(dir.path()), keys, "no new key was made");

    // With the right key, everything works again.
    let server = Server::start_with(dir.path(), &["--master-key-file", &write_key(dir.path(), &key_file)]);
    server.read_token(&agent);
}

fn write_key(dir: &std::path::Path, key: &str) -> String {
    let path = dir.join("restored.key");
    std::fs::write(&path, key).expect("writing the key");
    path.to_string_lossy().into_owned()
}
