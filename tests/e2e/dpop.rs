//! DPoP (RFC 9449): tokens bound to a key the client proves it holds with
//! each request, so that a leaked token is of no use alone. The proofs are
//! made here with the client's own keys.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use agentauth_jose::{Algorithm, SigningKey, generate_pkcs8, sign_dpop_proof};
use agentauth_testkit::{Credentials, Form};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::authorize::{Browser, VERIFIER, admin, authorize_url, setup, sign_in_and_allow};
use crate::support::{ACCESS_TOKEN_TYPE, Reply, Server, answered, jwt_parts, node_script};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A client's DPoP key.
fn key(alg: Algorithm) -> SigningKey {
    SigningKey::from_pkcs8(alg, &generate_pkcs8(alg).expect("a key")).expect("a key")
}

/// The claims of a fresh proof for a POST to `url`.
fn claims(url: &str) -> Value {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    json!({"jti": format!("proof-{n}-{}", now()), "htm": "POST", "htu": url, "iat": now()})
}

/// A fresh proof for a POST to the token endpoint, signed by `key`.
fn proof(server: &Server, key: &SigningKey) -> String {
    sign_dpop_proof(key, &claims(&server.realm_url("access_token"))).expect("a proof")
}

/// POSTs `form` to the token endpoint with `proofs` as `DPoP` headers.
fn token_with(server: &Server, form: &Form, client: Option<&Credentials>, proofs: &[&str]) -> Reply {
    let headers: Vec<(&str, &str)> = proofs.iter().map(|p| ("DPoP", *p)).collect();
    answered(server.post_form_with(&server.realm_url("access_token"), form, client, &headers))
}

/// A client credentials request of `agent` for `read`, with `proofs`.
fn client_credentials(server: &Server, agent: &Credentials, proofs: &[&str]) -> Reply {
    token_with(server, &Form::client_credentials().scope("read"), Some(agent), proofs)
}

#[test]
fn a_token_asked_for_with_a_proof_is_bound_to_its_key_and_says_so_everywhere() {
    let server = Server::start();
    let agent = server.register_agent();
    let discovery = server.get(".well-known/openid-configuration");
    assert_eq!(discovery.json["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA", "RS256"]));

    for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256] {
        let key = key(alg);
        let reply = client_credentials(&server, &agent, &[&proof(&server, &key)]);
        assert_eq!(reply.status, 200, "{alg:?}: {}", reply.body);
        assert_eq!(reply.json["token_type"], "DPoP", "{}", reply.body);
        let token = reply.json["access_token"].as_str().expect("a token");
        let thumbprint = key.verifying_key().thumbprint();
        assert_eq!(jwt_parts(token).1["cnf"], json!({"jkt": thumbprint}), "{alg:?}");
        let introspected = server.introspect(&agent, token);
        assert_eq!(introspected.json["active"], true, "{}", introspected.body);
        assert_eq!(introspected.json["token_type"], "DPoP", "{}", introspected.body);
        assert_eq!(introspected.json["cnf"]["jkt"], thumbprint, "{}", introspected.body);
    }
    // Without a proof, a client that never asked for binding gets a bearer
    // token, as before.
    let bearer = client_credentials(&server, &agent, &[]);
    assert_eq!(bearer.json["token_type"], "Bearer", "{}", bearer.body);
    assert!(jwt_parts(bearer.json["access_token"].as_str().unwrap_or_default()).1.get("cnf").is_none());
}

#[test]
fn proofs_that_do_not_hold_are_refused_and_issue_nothing() {
    let server = Server::start();
    let agent = server.register_agent();
    let key = key(Algorithm::Es256);
    let url = server.realm_url("access_token");
    let signed = |claims: &Value| sign_dpop_proof(&key, claims).expect("a proof");
    let changed = |name: &str, value: Value| {
        let mut claims = claims(&url);
        claims[name] = value;
        signed(&claims)
    };
    let without = |name: &str| {
        let mut claims = claims(&url);
        claims.as_object_mut().map(|c| c.remove(name));
        signed(&claims)
    };
    // A header other than the proof's own: the same claims, a header made
    // here, signed by `key`.
    let with_header = |header: Value| {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims(&url).to_string())
        );
        let signature = key.sign_bytes(input.as_bytes()).expect("signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    };
    let jwk = key.verifying_key().jwk();
    let other_realm = url.replace("/alpha/", "/beta/");
    let cases: Vec<(&str, String)> = vec![
        ("for GET", changed("htm", json!("GET"))),
        ("for another endpoint", changed("htu", json!(server.realm_url("introspect")))),
        ("for another realm", changed("htu", json!(other_realm))),
        ("made two minutes ago", changed("iat", json!(now() - 120))),
        ("made two minutes ahead", changed("iat", json!(now() + 120))),
        ("with iat as a string", changed("iat", json!(now().to_string()))),
        ("without a jti", without("jti")),
        ("without htu", without("htu")),
        ("with a jti too long", changed("jti", json!("j".repeat(300)))),
        ("typed JWT", with_header(json!({"typ": "JWT", "alg": "ES256", "jwk": jwk}))),
        ("without its key", with_header(json!({"typ": "dpop+jwt", "alg": "ES256"}))),
        ("naming a kid", with_header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk, "kid": "k"}))),
        ("with alg none", {
            let signed = with_header(json!({"typ": "dpop+jwt", "alg": "none", "jwk": jwk}));
            format!("{}.", signed.rsplit_once('.').map_or("", |(input, _)| input))
        }),
        ("signed by another key", {
            let stolen = proof(&server, &self::key(Algorithm::Es256));
            let (head, _) = stolen.split_once('.').expect("a JWS");
            let theirs = signed(&claims(&url));
            format!("{head}.{}", theirs.split_once('.').map_or("", |(_, rest)| rest))
        }),
        ("not a JWS", "not-a-proof".to_string()),
    ];
    for (case, bad) in &cases {
        let reply = client_credentials(&server, &agent, &[bad]);
        assert_eq!(reply.status, 400, "{case}: {}", reply.body);
        assert_eq!(reply.json["error"], "invalid_dpop_proof", "{case}: {}", reply.body);
        assert!(reply.json.get("access_token").is_none(), "{case}");
    }
    // Two proofs in one request.
    let (a, b) = (proof(&server, &key), proof(&server, &key));
    client_credentials(&server, &agent, &[&a, &b]).assert_error(400, "invalid_dpop_proof");
    // A proof is good once: replayed, it is refused.
    let once = proof(&server, &key);
    assert_eq!(client_credentials(&server, &agent, &[&once]).status, 200);
    let replayed = client_credentials(&server, &agent, &[&once]);
    replayed.assert_error(400, "invalid_dpop_proof");
    assert!(
        replayed.json["error_description"].as_str().is_some_and(|d| d.contains("used before")),
        "{}",
        replayed.body
    );
    // The same jti under another key is another proof.
    let mut reused = claims(&url);
    reused["jti"] = json!("shared-jti");
    assert_eq!(client_credentials(&server, &agent, &[&signed(&reused)]).status, 200);
    let other = sign_dpop_proof(&self::key(Algorithm::Es256), &reused).expect("a proof");
    assert_eq!(client_credentials(&server, &agent, &[&other]).status, 200);
}

#[test]
fn clients_registered_for_dpop_and_a_realms_agents_must_send_proofs() {
    let server = Server::start_with_admin();
    let registration = json!({
        "client_name": "bound worker", "grant_types": ["client_credentials"], "scope": "read",
        "dpop_bound_access_tokens": true,
    });
    let registered = server.register_raw(&registration.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert_eq!(registered.json["dpop_bound_access_tokens"], true, "{}", registered.body);
    let bound = Credentials::from_registration(&registered.json);
    let key = key(Algorithm::Es256);
    let refused = client_credentials(&server, &bound, &[]);
    refused.assert_error(400, "invalid_dpop_proof");
    let granted = client_credentials(&server, &bound, &[&proof(&server, &key)]);
    assert_eq!(granted.json["token_type"], "DPoP", "{}", granted.body);
    let bad = server
        .register_raw(&json!({"grant_types": ["client_credentials"], "dpop_bound_access_tokens": "yes"}).to_string());
    bad.assert_error(400, "invalid_client_metadata");

    // A realm may require it of every agent: then the seed's agent, which
    // registered nothing of the kind, needs a proof too.
    let agent = server.register_agent();
    assert_eq!(client_credentials(&server, &agent, &[]).status, 200);
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"dpop_required_for_agents": true})));
    assert_eq!(status, 200, "{body}");
    client_credentials(&server, &agent, &[]).assert_error(400, "invalid_dpop_proof");
    assert_eq!(client_credentials(&server, &agent, &[&proof(&server, &key)]).json["token_type"], "DPoP");
}

#[test]
fn with_nonces_on_a_proof_must_carry_one_the_server_gave_recently() {
    let server = Server::start_with_admin();
    let agent = server.register_agent();
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"dpop_nonces": true})));
    assert_eq!(status, 200, "{body}");
    let key = key(Algorithm::Es256);
    let url = server.realm_url("access_token");

    let first = client_credentials(&server, &agent, &[&proof(&server, &key)]);
    first.assert_error(400, "use_dpop_nonce");
    let nonce = first.dpop_nonce.clone().expect("a DPoP-Nonce header");
    let mut with_nonce = claims(&url);
    with_nonce["nonce"] = json!(nonce);
    let second = client_credentials(&server, &agent, &[&sign_dpop_proof(&key, &with_nonce).expect("a proof")]);
    assert_eq!(second.status, 200, "{}", second.body);
    assert!(second.dpop_nonce.is_some(), "a successful response carries the nonce too");
    for made_up in ["0.AAAAAAAAAAAAAAAAAAAAAA", "nonsense", ""] {
        let mut forged = claims(&url);
        forged["nonce"] = json!(made_up);
        let reply = client_credentials(&server, &agent, &[&sign_dpop_proof(&key, &forged).expect("a proof")]);
        reply.assert_error(400, "use_dpop_nonce");
    }
}

#[test]
fn an_exchange_keeps_the_subject_tokens_binding() {
    let server = Server::start();
    let agent = server.register_agent();
    let key = key(Algorithm::Es256);
    let subject = client_credentials(&server, &agent, &[&proof(&server, &key)]);
    let subject = subject.json["access_token"].as_str().expect("a bound token").to_string();
    let exchange = Form::token_exchange(&subject).scope("read write");

    // Without a proof, the bound token would come out a bearer one.
    token_with(&server, &exchange, Some(&agent), &[]).assert_error(400, "invalid_dpop_proof");
    // With the key it is bound to: a token bound to it again.
    let exchanged = token_with(&server, &exchange, Some(&agent), &[&proof(&server, &key)]);
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    assert_eq!(exchanged.json["token_type"], "DPoP");
    assert_eq!(exchanged.json["issued_token_type"], ACCESS_TOKEN_TYPE);
    let claims = jwt_parts(exchanged.json["access_token"].as_str().unwrap_or_default()).1;
    assert_eq!(claims["cnf"]["jkt"], key.verifying_key().thumbprint());

    // Another client, with a key of its own, holds neither the token's key
    // nor a place in its may_act.
    let thief = server.register_agent();
    let stolen = token_with(&server, &exchange, Some(&thief), &[&proof(&server, &self::key(Algorithm::Es256))]);
    stolen.assert_error(400, "invalid_dpop_proof");
}

/// The public client `client_id`'s redemption of `code`, with the PKCE
/// verifier.
fn code_redemption(code: &str, client_id: &str) -> Form {
    Form::new()
        .field("grant_type", "authorization_code")
        .field("code", code)
        .field("redirect_uri", "http://127.0.0.1:49152/callback")
        .field("client_id", client_id)
        .field("code_verifier", VERIFIER)
}

#[test]
fn a_code_asked_for_with_dpop_jkt_is_redeemed_only_with_a_proof_of_that_key() {
    let (server, client_id) = setup();
    let key = key(Algorithm::Es256);
    let thumbprint = key.verifying_key().thumbprint();
    let mut browser = Browser::new();
    let url = authorize_url(&server, &client_id, &[("dpop_jkt", &thumbprint)]);
    let answer: HashMap<String, String> = sign_in_and_allow(&mut browser, &server, &url);
    let redeem = code_redemption(&answer["code"], &client_id);
    // Stolen with its verifier, the code is still of no use without the
    // key; and the refusals spend nothing.
    token_with(&server, &redeem, None, &[]).assert_error(400, "invalid_dpop_proof");
    let other = proof(&server, &self::key(Algorithm::Es256));
    token_with(&server, &redeem, None, &[&other]).assert_error(400, "invalid_dpop_proof");
    let tokens = token_with(&server, &redeem, None, &[&proof(&server, &key)]);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.json["token_type"], "DPoP");
    let access = tokens.json["access_token"].as_str().unwrap_or_default();
    assert_eq!(jwt_parts(access).1["cnf"]["jkt"], thumbprint.as_str(), "{}", tokens.body);

    // A dpop_jkt that is no thumbprint goes back to the client.
    let bad = authorize_url(&server, &client_id, &[("dpop_jkt", "not-a-thumbprint"), ("state", "s-bad")]);
    let seen = browser.get(&bad);
    assert_eq!(seen.status, 303, "{}", seen.body);
    let back = crate::authorize::query(&seen.location.expect("a redirect"));
    assert_eq!((back["error"].as_str(), back["state"].as_str()), ("invalid_request", "s-bad"));
}

#[test]
fn a_public_clients_refresh_token_is_bound_to_the_key_it_redeemed_its_code_with() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    let answer: HashMap<String, String> =
        sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let key = key(Algorithm::Es256);
    let redeem = code_redemption(&answer["code"], &client_id);
    let tokens = token_with(&server, &redeem, None, &[&proof(&server, &key)]);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.json["token_type"], "DPoP");
    let refresh_token = tokens.json["refresh_token"].as_str().expect("a refresh token").to_string();
    let refresh = Form::refresh(&refresh_token).field("client_id", &client_id);

    // Without a proof, or with another key's, the refresh token is of no
    // use: it was not spent, and its holder may still use it.
    token_with(&server, &refresh, None, &[]).assert_error(400, "invalid_dpop_proof");
    let other = proof(&server, &self::key(Algorithm::Es256));
    token_with(&server, &refresh, None, &[&other]).assert_error(400, "invalid_dpop_proof");
    let refreshed = token_with(&server, &refresh, None, &[&proof(&server, &key)]);
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_eq!(refreshed.json["token_type"], "DPoP");
    // The successor stays bound.
    let next =
        Form::refresh(refreshed.json["refresh_token"].as_str().unwrap_or_default()).field("client_id", &client_id);
    token_with(&server, &next, None, &[]).assert_error(400, "invalid_dpop_proof");
}

#[test]
#[ignore = "needs node and oauth4webapi (scripts/install-browser); make test runs it"]
fn oauth4webapi_gets_and_exchanges_tokens_bound_to_its_key_through_a_nonce_challenge() {
    let server = Server::start_with_admin();
    let agent = server.register_agent();
    let (status, body) =
        admin(&server, "PATCH", "/alpha", Some(json!({"dpop_nonces": true, "dpop_required_for_agents": true})));
    assert_eq!(status, 200, "{body}");
    let issuer = server.realm_url("").trim_end_matches('/').to_string();
    let args = [&issuer, &agent.client_id, &agent.client_secret];
    let answer = node_script("dpop-client.mjs", &args, "the client failed");
    assert_eq!(answer["nonce_challenges"], 1, "the first request met the nonce challenge, and no other: {answer}");
    let thumbprint = agentauth_jose::VerifyingKey::from_jwk(&answer["jwk"]).expect("its public key").thumbprint();
    for (kind, token) in [("token_type", "access_token"), ("exchanged_token_type", "exchanged_access_token")] {
        assert_eq!(answer[kind].as_str().map(str::to_ascii_lowercase).as_deref(), Some("dpop"), "{answer}");
        let claims = jwt_parts(answer[token].as_str().unwrap_or_default()).1;
        assert_eq!(claims["cnf"]["jkt"], thumbprint, "{token}: {claims}");
    }
}
