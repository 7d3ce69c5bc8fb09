//! The data directory keeps clients, keys and plugins across restarts.

use crate::support::{Server, jwt_parts};

#[test]
fn a_restart_keeps_a_registered_client_and_its_tokens_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The issuer must not change across the restart, though the port does.
    let args = ["--public-url", "https://as.example.test"];
    let server = Server::start_with(dir.path(), &args);
    let agent = server.register_agent();
    let token = server.read_token(&agent);
    let (header, _) = jwt_parts(&token);
    server.stop();

    let server = Server::start_with(dir.path(), &args);
    // Same client, same signing key, same plugins.
    let again = server.read_token(&agent);
    assert_eq!(jwt_parts(&again).0["kid"], header["kid"]);
    let reply = server.exchange(&agent, &token, "read write");
    assert_eq!(reply.status, 200, "{}", reply.body);
}
