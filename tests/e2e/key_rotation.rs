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

#[test]
fn rotating_the_key_of_a_realm_that_never_signed_keeps_it_serving() {
    let server = Server::start_with_admin();
    let remote = ["--server", server.base.as_str(), "--realm", "fresh"];
    let run = |args: &[&str]| {
        let all: Vec<&str> = args.iter().chain(&remote).copied().collect();
        let (ok, out, err) = cli(&all, ADMIN_TOKEN);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out).expect("JSON")
    };
    run(&["realm", "create"]);
    // Rotated before the realm made its first key: there is no JWKS anyone
    // could have cached, so the key signs at once.
    let rotated = run(&["keys", "rotate", "--alg", "EdDSA"]);
    let jwks = server.get_url(&format!("{}/am/oauth2/realms/root/realms/fresh/connect/jwk_uri", server.base));
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    assert_eq!(jwks.json["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(jwks.json["keys"][0]["alg"], "EdDSA");
    assert!(rotated["signs_from"].as_i64() <= rotated["previous_keys_retire_at"].as_i64());
    let statuses = run(&["keys", "list"]);
    assert_eq!(statuses["keys"][0]["status"], "signing", "{statuses}");
    // The next rotation waits for publication as usual.
    run(&["keys", "rotate"]);
    let statuses = run(&["keys", "list"]);
    assert_eq!(statuses["keys"][0]["status"], "published", "{statuses}");
    assert_eq!(statuses["keys"][1]["status"], "retiring", "{statuses}");
}
