//! Key rotation: a new key is published before it signs, and tokens signed
//! by the old key keep verifying until they expire.

use crate::support::{ADMIN_TOKEN, Server, cli, jwt_parts};

fn kids(server: &Server) -> Vec<String> {
    let jwks = server.get("connect/jwk_uri").json;
    jwks["keys"].as_array().into_iter().flatten().filter_map(|k| k["kid"].as_str().map(str::to_string)).collect()
}

fn keys(server: &Server, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    all.extend(["--server", server.base.as_str(), "--realm", "alpha"]);
    let (ok, out, err) = cli(&all, ADMIN_TOKEN);
    assert!(ok, "{err}");
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn a_rotated_key_is_published_first_and_old_tokens_keep_working() {
    let server = Server::start_with_admin();
    let agent = server.register_agent();
    let before = server.read_token(&agent);
    let old_kid = jwt_parts(&before).0["kid"].as_str().unwrap_or_default().to_string();

    // With the default five minutes of publication, the new key is in the
    // JWKS but does not sign yet.
    let rotated = keys(&server, &["rotate", "--alg", "EdDSA"]);
    assert_eq!(rotated["alg"], "EdDSA");
    assert_eq!(kids(&server).len(), 2);
    assert_eq!(jwt_parts(&server.read_token(&agent)).0["kid"], old_kid.as_str());
    let statuses: Vec<String> = keys(&server, &["list"])["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| k["status"].as_str().unwrap_or("").into())
        .collect();
    assert_eq!(statuses, ["published", "retiring"]);

    // With no publication delay, the next rotation signs at once; tokens
    // of the earlier key still verify.
    let (ok, _, err) = cli(
        &["realm", "set", "--server", &server.base, "--realm", "alpha", "--settings", r#"{"key_publish_seconds": 0}"#],
        ADMIN_TOKEN,
    );
    assert!(ok, "{err}");
    keys(&server, &["rotate"]);
    let after = server.read_token(&agent);
    let (header, _) = jwt_parts(&after);
    assert_eq!(header["alg"], "EdDSA");
    assert_ne!(header["kid"], old_kid.as_str());
    assert!(kids(&server).contains(&old_kid), "the old key stays published");
    let reply = server.exchange(&agent, &before, "read write");
    assert_eq!(reply.status, 200, "a token of the old key still works: {}", reply.body);
    assert_eq!(kids(&server).len(), 3, "all three keys published while their tokens live");
}
