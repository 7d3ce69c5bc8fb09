//! `private_key_jwt` (RFC 7523): an agent holds a key instead of a shared
//! secret, as RFC 9700 recommends.

use std::time::{SystemTime, UNIX_EPOCH};

use agentauth_jose::{Algorithm, SigningKey, generate_pkcs8, sign};
use serde_json::{Value, json};

use crate::support::{Server, jwt_parts, seed_registration};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn key(alg: Algorithm) -> SigningKey {
    SigningKey::from_pkcs8(alg, &generate_pkcs8(alg).expect("a key")).expect("a key")
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Registers an agent that authenticates with `key`; returns its client_id.
fn register_with_key(server: &Server, key: &SigningKey) -> String {
    let mut body = seed_registration();
    body["token_endpoint_auth_method"] = json!("private_key_jwt");
    body["jwks"] = json!({"keys": [key.verifying_key().jwk()]});
    let reply = server.register_raw(&body.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.json.get("client_secret").is_none(), "no secret for a key-holding client");
    assert_eq!(reply.json["token_endpoint_auth_method"], "private_key_jwt");
    reply.json["client_id"].as_str().unwrap_or_default().to_string()
}

fn assertion(key: &SigningKey, client_id: &str, aud: &str, jti: &str) -> String {
    let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now() + 60, "iat": now(), "jti": jti});
    sign(key, "JWT", &claims).expect("signing")
}

fn token_with(server: &Server, assertion: &str, extra: &[(&str, &str)]) -> crate::support::Reply {
    let mut form = vec![("client_assertion_type", JWT_BEARER), ("client_assertion", assertion)];
    form.extend_from_slice(extra);
    server.token(&form, None)
}

#[test]
fn an_agent_with_a_key_runs_the_seed_flow() {
    let server = Server::start();
    let agent_key = key(Algorithm::Es256);
    let client_id = register_with_key(&server, &agent_key);
    let endpoint = server.realm_url("access_token");

    let reply = token_with(
        &server,
        &assertion(&agent_key, &client_id, &endpoint, "1"),
        &[("grant_type", "client_credentials"), ("scope", "read")],
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let read = reply.json["access_token"].as_str().unwrap_or_default().to_string();
    assert_eq!(jwt_parts(&read).1["may_act"]["sub"], format!("(age!{client_id})"));

    let exchange = [
        ("grant_type", crate::support::TOKEN_EXCHANGE),
        ("scope", "read write"),
        ("subject_token", read.as_str()),
        ("subject_token_type", crate::support::ACCESS_TOKEN_TYPE),
    ];
    let issuer = format!("{}/am/oauth2/realms/root/realms/alpha", server.base);
    let reply = token_with(&server, &assertion(&agent_key, &client_id, &issuer, "2"), &exchange);
    assert_eq!((reply.status, reply.json["scope"].as_str()), (200, Some("read write")), "{}", reply.body);
}

#[test]
fn replayed_misaddressed_or_foreign_assertions_are_refused() {
    let server = Server::start();
    let agent_key = key(Algorithm::EdDsa);
    let client_id = register_with_key(&server, &agent_key);
    let endpoint = server.realm_url("access_token");
    let cc = [("grant_type", "client_credentials")];

    let once = assertion(&agent_key, &client_id, &endpoint, "once");
    assert_eq!(token_with(&server, &once, &cc).status, 200);
    token_with(&server, &once, &cc).assert_error(401, "invalid_client");

    let elsewhere = assertion(&agent_key, &client_id, "https://other.example/token", "aud");
    token_with(&server, &elsewhere, &cc).assert_error(401, "invalid_client");
    let stranger = assertion(&key(Algorithm::EdDsa), &client_id, &endpoint, "stranger");
    token_with(&server, &stranger, &cc).assert_error(401, "invalid_client");
    let long = sign(
        &agent_key,
        "JWT",
        &json!({"iss": client_id, "sub": client_id, "aud": endpoint, "exp": now() + 86_400, "jti": "long"}),
    )
    .expect("signing");
    token_with(&server, &long, &cc).assert_error(401, "invalid_client");
    let wrong_type = [
        ("client_assertion_type", "urn:example:other"),
        ("client_assertion", once.as_str()),
        ("grant_type", "client_credentials"),
    ];
    server.token(&wrong_type, None).assert_error(400, "invalid_request");
}

#[test]
fn registration_refuses_keys_it_cannot_use() {
    let server = Server::start();
    let agent_key = key(Algorithm::Es256);
    let mut leaked = agent_key.verifying_key().jwk();
    leaked["d"] = json!("cHJpdmF0ZQ");
    for jwks in [json!({"keys": [leaked]}), json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), json!({"keys": []})] {
        let mut body = seed_registration();
        body["token_endpoint_auth_method"] = json!("private_key_jwt");
        body["jwks"] = jwks;
        server.register_raw(&body.to_string()).assert_error(400, "invalid_client_metadata");
    }
    let mut body: Value = seed_registration();
    body["token_endpoint_auth_method"] = json!("private_key_jwt");
    body["jwks_uri"] = json!("https://agent.example/jwks");
    server.register_raw(&body.to_string()).assert_error(400, "invalid_client_metadata");
}

/// Signs `header` and `claims` exactly as written: what a client's own
/// library could produce, duplicates included.
fn sign_raw(key: &SigningKey, header: &str, claims: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let input = format!("{}.{}", B64.encode(header), B64.encode(claims));
    let signature = B64.encode(key.sign_bytes(input.as_bytes()).expect("signing"));
    format!("{input}.{signature}")
}

#[test]
fn a_signed_assertion_with_a_duplicate_member_is_refused() {
    let server = Server::start();
    let agent_key = key(Algorithm::Es256);
    let client_id = register_with_key(&server, &agent_key);
    let endpoint = server.realm_url("access_token");
    let cc = [("grant_type", "client_credentials")];
    let claims = |jti: &str, extra: &str| {
        format!(
            r#"{{"iss":"{client_id}","sub":"{client_id}",{extra}"aud":"{endpoint}","exp":{},"jti":"{jti}"}}"#,
            now() + 60
        )
    };
    let header = r#"{"alg":"ES256","typ":"JWT"}"#;
    // The same assertion, written once, is accepted: the refusals below
    // are for the duplicates alone.
    assert_eq!(token_with(&server, &sign_raw(&agent_key, header, &claims("plain", "")), &cc).status, 200);
    for (header, claims) in [
        (header, claims("sub", &format!(r#""sub":"{client_id}","#))),
        (header, claims("jti", r#""jti":"other","#)),
        (r#"{"alg":"ES256","alg":"ES256","typ":"JWT"}"#, claims("alg", "")),
    ] {
        token_with(&server, &sign_raw(&agent_key, header, &claims), &cc).assert_error(401, "invalid_client");
    }
}

#[test]
fn registration_refuses_rsa_keys_that_ring_cannot_verify_with() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    let server = Server::start();
    // An odd modulus of `bits` bits.
    let modulus = |bits: usize| {
        let top = 1u8 << ((bits + 7) % 8);
        let mut n = vec![0xa5u8; bits.div_ceil(8)];
        n[0] = (n[0] & (top - 1)) | top;
        if let Some(last) = n.last_mut() {
            *last |= 1;
        }
        B64.encode(n)
    };
    let mut even = B64.decode(modulus(2048)).unwrap_or_default();
    if let Some(last) = even.last_mut() {
        *last &= 0xfe;
    }
    let rsa = |n: String, e: &[u8]| json!({"kty": "RSA", "n": n, "e": B64.encode(e)});
    for (why, jwk) in [
        ("over 8192 bits", rsa(modulus(8200), &[1, 0, 1])),
        ("16384 bits", rsa(modulus(16384), &[1, 0, 1])),
        ("an even modulus", rsa(B64.encode(&even), &[1, 0, 1])),
        ("exponent 1", rsa(modulus(2048), &[1])),
        ("an even exponent", rsa(modulus(2048), &[1, 0, 0])),
        ("an exponent over 33 bits", rsa(modulus(2048), &[1, 0, 0, 0, 0, 1])),
    ] {
        let mut body = seed_registration();
        body["token_endpoint_auth_method"] = json!("private_key_jwt");
        body["jwks"] = json!({"keys": [jwk]});
        let reply = server.register_raw(&body.to_string());
        assert_eq!((reply.status, reply.json["error"].as_str()), (400, Some("invalid_client_metadata")), "{why}");
    }
    // A usable 8192-bit shape is still accepted.
    let mut body = seed_registration();
    body["token_endpoint_auth_method"] = json!("private_key_jwt");
    body["jwks"] = json!({"keys": [rsa(modulus(8192), &[1, 0, 1])]});
    assert_eq!(server.register_raw(&body.to_string()).status, 201);
}
