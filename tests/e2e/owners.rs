//! Users as the owners of their agents: a user signs in, gets a token
//! with the scope `agentauth:agents` for a client it trusts, registers an
//! agent with it, and later lists and disables its own agents, and only
//! its own, over the realm's `agents` endpoints; with a bearer token, and
//! with a DPoP-bound one whose proofs must name it in `ath`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentauth_jose::{Algorithm, SigningKey, generate_pkcs8, sign_dpop_proof};
use serde_json::{Value, json};

use crate::authorize::{
    Browser, PASSWORD, VERIFIER, admin, authorize_url, register_public_client, sign_in_as_and_allow,
};
use crate::support::{Credentials, Server, node_script, seed_registration};

const SCOPE: &str = "agentauth:agents";

/// What the server answered: status, body, every `WWW-Authenticate`.
#[derive(Debug)]
struct Answer {
    status: u16,
    json: Value,
    challenges: Vec<String>,
    /// The server's `DPoP-Nonce`, if it sent one.
    nonce: Option<String>,
}

/// Calls `url` with `method`, the `headers` and, for a POST, the JSON
/// `body`.
fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> Answer {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let sent = match body {
        Some(body) => {
            let request = request.header("content-type", "application/json").body(body.to_string()).expect("a request");
            http.run(request)
        }
        None => http.run(request.body(()).expect("a request")),
    };
    let mut response = sent.expect("the server answers");
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    let nonce = response.headers().get("dpop-nonce").and_then(|v| v.to_str().ok()).map(String::from);
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Answer { status, json: serde_json::from_str(&text).unwrap_or(Value::Null), challenges, nonce }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A server whose realm lets users manage their agents, with user `ada`
/// and a public client ("Inspector") that may ask for the agents scope.
fn setup() -> (Server, String) {
    let server = Server::start_with_admin();
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "ada", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"owner_self_service": true})));
    assert_eq!(status, 200, "{body}");
    let client_id = register_public_client(&server, &format!("read {SCOPE}"));
    (server, client_id)
}

/// Ada's access token for `scope`, by the code grant; bound to `key` when
/// there is one.
fn users_token(server: &Server, client_id: &str, scope: &str, key: Option<&SigningKey>) -> String {
    token_of(server, "ada", client_id, scope, key)
}

/// `username`'s access token for `scope`, by the code grant; bound to
/// `key` when there is one.
fn token_of(server: &Server, username: &str, client_id: &str, scope: &str, key: Option<&SigningKey>) -> String {
    let mut browser = Browser::new();
    let url = authorize_url(server, client_id, &[("scope", scope)]);
    let answer = sign_in_as_and_allow(&mut browser, server, &url, username);
    let token_url = server.realm_url("access_token");
    let form: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "authorization_code"),
            ("code", answer["code"].as_str()),
            ("redirect_uri", "http://127.0.0.1:49152/callback"),
            ("client_id", client_id),
            ("code_verifier", VERIFIER),
        ])
        .finish();
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = http.post(&token_url).header("content-type", "application/x-www-form-urlencoded");
    let proof = key.map(|key| proof(key, "POST", &token_url, None));
    if let Some(proof) = &proof {
        request = request.header("dpop", proof);
    }
    let mut response = request.send(form.as_str()).expect("the token endpoint answers");
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let tokens: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(response.status().as_u16(), 200, "{text}");
    assert_eq!(tokens["token_type"], if key.is_some() { "DPoP" } else { "Bearer" }, "{text}");
    tokens["access_token"].as_str().expect("an access token").to_string()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A DPoP proof by `key` for `method` on `url`, naming `token` in `ath`
/// when given.
fn proof(key: &SigningKey, method: &str, url: &str, ath: Option<&str>) -> String {
    proof_with_nonce(key, method, url, ath, None)
}

/// [`proof`], with the server's `nonce` when given.
fn proof_with_nonce(key: &SigningKey, method: &str, url: &str, ath: Option<&str>, nonce: Option<&str>) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut claims = json!({"jti": format!("owner-proof-{n}-{}", now()), "htm": method, "htu": url, "iat": now()});
    if let Some(ath) = ath {
        claims["ath"] = json!(ath);
    }
    if let Some(nonce) = nonce {
        claims["nonce"] = json!(nonce);
    }
    sign_dpop_proof(key, &claims).expect("a proof")
}

/// RFC 9449 §4.2's `ath` of `token`.
fn ath(token: &str) -> String {
    agentauth_service::dpop::token_hash(token)
}

fn key() -> SigningKey {
    SigningKey::from_pkcs8(Algorithm::Es256, &generate_pkcs8(Algorithm::Es256).expect("a key")).expect("a key")
}

/// Registers the seed's agent at `aiagent/register`, presenting `token`.
fn register_with(server: &Server, authorization: &str) -> Answer {
    let url = server.realm_url("aiagent/register");
    call("POST", &url, &[("authorization", authorization)], Some(&seed_registration()))
}

#[test]
fn a_user_registers_an_agent_lists_it_and_disables_it_and_its_tokens_die() {
    let (server, inspector) = setup();
    let token = users_token(&server, &inspector, &format!("read {SCOPE}"), None);
    let auth = bearer(&token);

    // Registered with ada's token: ada owns it.
    let registered = register_with(&server, &auth);
    assert_eq!(registered.status, 201, "{:?}", registered.json);
    let agent = Credentials::from_registration(&registered.json);
    let (status, shown) = admin(&server, "GET", &format!("/alpha/clients/{}", agent.client_id), None);
    assert_eq!(status, 200, "{shown}");
    let owner = shown["attributes"]["owner"].as_str().expect("an owner").to_string();
    assert!(owner.starts_with("user:usr_"), "{owner}");
    // Registered by nobody: nobody's. Registered by bob: bob's.
    let stranger = server.register_agent();
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "bob", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    let bobs_token = token_of(&server, "bob", &inspector, &format!("read {SCOPE}"), None);
    let bobs = register_with(&server, &bearer(&bobs_token));
    assert_eq!(bobs.status, 201, "{:?}", bobs.json);
    let bobs = Credentials::from_registration(&bobs.json);

    let agents = server.realm_url("agents");
    let mine = call("GET", &agents, &[("authorization", &auth)], None);
    assert_eq!(mine.status, 200, "{:?}", mine.json);
    assert_eq!(mine.json["owner"], owner);
    let listed: Vec<&str> =
        mine.json["clients"].as_array().expect("clients").iter().filter_map(|c| c["client_id"].as_str()).collect();
    assert_eq!(listed, [agent.client_id.as_str()], "only ada's own agent");
    for bad in ["limit=0", "limit=1001", "limit=ten"] {
        let answer = call("GET", &format!("{agents}?{bad}"), &[("authorization", &auth)], None);
        assert_eq!((answer.status, answer.json["error"].as_str()), (400, Some("invalid_request")), "{bad}");
    }
    // Of what the realm's policy set on it, ada sees the owner alone.
    assert!(shown["attributes"].as_object().is_some_and(|a| a.len() > 1), "the policy set more: {shown}");
    assert_eq!(mine.json["clients"][0]["attributes"], json!({"owner": owner}), "{}", mine.json);

    // Another's agent, or nobody's, is not there to read or disable, and
    // stays active.
    for other in [&stranger, &bobs] {
        let theirs = format!("{agents}/{}", other.client_id);
        assert_eq!(call("GET", &theirs, &[("authorization", &auth)], None).status, 404);
        assert_eq!(call("POST", &format!("{theirs}/disable"), &[("authorization", &auth)], None).status, 404);
    }
    let stranger_token = server.read_token(&stranger);
    assert_eq!(server.introspect(&stranger, &stranger_token).json["active"], true);
    let bobs_agent_token = server.read_token(&bobs);
    assert_eq!(server.introspect(&stranger, &bobs_agent_token).json["active"], true);
    // Bob sees his own.
    let his = call("GET", &agents, &[("authorization", &bearer(&bobs_token))], None);
    let listed: Vec<&str> =
        his.json["clients"].as_array().expect("clients").iter().filter_map(|c| c["client_id"].as_str()).collect();
    assert_eq!(listed, [bobs.client_id.as_str()]);

    // Ada disables hers: its token is dead at once, it cannot get another,
    // and the audit names ada.
    let agent_token = server.read_token(&agent);
    assert_eq!(server.introspect(&stranger, &agent_token).json["active"], true);
    let disabled = call("POST", &format!("{agents}/{}/disable", agent.client_id), &[("authorization", &auth)], None);
    assert_eq!(disabled.status, 200, "{:?}", disabled.json);
    assert_eq!(disabled.json["state"], "disabled");
    assert_eq!(server.introspect(&stranger, &agent_token).json["active"], false);
    server
        .token(&[("grant_type", "client_credentials"), ("scope", "read")], Some(&agent))
        .assert_error(401, "invalid_client");
    let (status, audit) = admin(&server, "GET", "/alpha/audit", None);
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().expect("entries");
    let by_ada = |e: &&Value| e["actor"] == owner.as_str() && e["action"] == "disable-client";
    assert!(
        entries.iter().any(|e| by_ada(&e) && e["detail"].as_str().is_some_and(|d| d.contains(&agent.client_id))),
        "{audit}"
    );

    // Ada cannot enable it again: that is the admins' call.
    let enable = call("POST", &format!("{agents}/{}/enable", agent.client_id), &[("authorization", &auth)], None);
    assert_eq!(enable.status, 404);

    // Where registration is not open, a user still registers its own
    // agents; nobody else registers anything.
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"open_registration": false})));
    assert_eq!(status, 200, "{body}");
    let anonymous = server.register_raw(&seed_registration().to_string());
    anonymous.assert_error(403, "access_denied");
    let by_ada = register_with(&server, &auth);
    assert_eq!(by_ada.status, 201, "{:?}", by_ada.json);
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"open_registration": true})));
    assert_eq!(status, 200, "{body}");

    // A second agent, then all at once.
    let second = Credentials::from_registration(&register_with(&server, &auth).json);
    let all = call("POST", &format!("{agents}/disable-all"), &[("authorization", &auth)], None);
    assert_eq!(all.status, 200, "{:?}", all.json);
    assert_eq!(all.json["disabled"], 2, "the first was disabled already");
    server
        .token(&[("grant_type", "client_credentials"), ("scope", "read")], Some(&second))
        .assert_error(401, "invalid_client");
    assert_eq!(server.introspect(&stranger, &stranger_token).json["active"], true, "nobody's agent is untouched");
    assert_eq!(server.introspect(&stranger, &bobs_agent_token).json["active"], true, "bob's agent is untouched");
}

#[test]
fn tokens_that_do_not_speak_for_a_user_with_the_scope_are_refused_as_rfc_6750_says() {
    let (server, inspector) = setup();
    let agents = server.realm_url("agents");

    let none = call("GET", &agents, &[], None);
    assert_eq!(none.status, 401);
    assert!(none.challenges.iter().any(|c| c.starts_with("Bearer realm=\"alpha\"")), "{:?}", none.challenges);
    assert!(none.challenges.iter().any(|c| c.starts_with("DPoP ") && c.contains("algs=")), "{:?}", none.challenges);
    assert!(none.challenges.iter().all(|c| !c.contains("error=")), "no error without a token: {:?}", none.challenges);

    let garbage = call("GET", &agents, &[("authorization", "Bearer not-a-token")], None);
    assert_eq!((garbage.status, garbage.json["error"].as_str()), (401, Some("invalid_token")));
    assert!(garbage.challenges.iter().any(|c| c.contains("error=\"invalid_token\"")), "{:?}", garbage.challenges);
    let basic = call("GET", &agents, &[("authorization", "Basic YTpi")], None);
    assert_eq!((basic.status, basic.json["error"].as_str()), (400, Some("invalid_request")));

    // Ada's token without the scope.
    let read_only = users_token(&server, &inspector, "read", None);
    let narrow = call("GET", &agents, &[("authorization", &bearer(&read_only))], None);
    assert_eq!((narrow.status, narrow.json["error"].as_str()), (403, Some("insufficient_scope")), "{:?}", narrow.json);
    assert!(narrow.challenges.iter().any(|c| c.contains(&format!("scope=\"{SCOPE}\""))), "{:?}", narrow.challenges);
    // Registering with it is refused too, and registers nothing.
    let (_, before) = admin(&server, "GET", "/alpha/clients", None);
    let refused = register_with(&server, &bearer(&read_only));
    assert_eq!((refused.status, refused.json["error"].as_str()), (403, Some("insufficient_scope")));
    let refused = register_with(&server, "Bearer not-a-token");
    assert_eq!((refused.status, refused.json["error"].as_str()), (401, Some("invalid_token")));
    let (_, after) = admin(&server, "GET", "/alpha/clients", None);
    assert_eq!(before["clients"].as_array().map(Vec::len), after["clients"].as_array().map(Vec::len));

    // A client's own token names no user.
    let agent = server.register_agent();
    let machine = server.read_token(&agent);
    let answer = call("GET", &agents, &[("authorization", &bearer(&machine))], None);
    assert_eq!((answer.status, answer.json["error"].as_str()), (401, Some("invalid_token")));

    // A disabled user's token manages nothing.
    let token = users_token(&server, &inspector, &format!("read {SCOPE}"), None);
    assert_eq!(call("GET", &agents, &[("authorization", &bearer(&token))], None).status, 200);
    let (_, users) = admin(&server, "GET", "/alpha/users", None);
    let subject = users["users"][0]["subject"].as_str().expect("ada's subject").to_string();
    let (status, body) = admin(&server, "POST", &format!("/alpha/users/{subject}/disable"), None);
    assert_eq!(status, 200, "{body}");
    let answer = call("GET", &agents, &[("authorization", &bearer(&token))], None);
    assert_eq!((answer.status, answer.json["error"].as_str()), (401, Some("invalid_token")));

    // Where the realm does not offer it, there is nothing there, and a
    // registration's Authorization header means nothing, as before.
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"owner_self_service": false})));
    assert_eq!(status, 200, "{body}");
    assert_eq!(call("GET", &agents, &[("authorization", &bearer(&token))], None).status, 404);
    assert_eq!(register_with(&server, "Bearer not-a-token").status, 201);
}

#[test]
fn a_dpop_bound_token_is_accepted_only_with_a_proof_of_its_key_that_names_it() {
    let (server, inspector) = setup();
    let key = key();
    let token = users_token(&server, &inspector, &format!("read {SCOPE}"), Some(&key));
    let agents = server.realm_url("agents");
    let dpop = format!("DPoP {token}");
    let get = |headers: &[(&str, &str)]| call("GET", &agents, headers, None);

    // RFC 9449 §7.2: never as a bearer token.
    let as_bearer = get(&[("authorization", &bearer(&token))]);
    assert_eq!((as_bearer.status, as_bearer.json["error"].as_str()), (401, Some("invalid_token")));
    let refusals = [
        ("no proof", String::new()),
        ("no ath", proof(&key, "GET", &agents, None)),
        ("another token's ath", proof(&key, "GET", &agents, Some(&ath("another token")))),
    ];
    for (why, proof) in &refusals {
        let headers: Vec<(&str, &str)> = [("authorization", dpop.as_str())]
            .into_iter()
            .chain((!proof.is_empty()).then_some(("dpop", proof.as_str())))
            .collect();
        let answer = get(&headers);
        assert_eq!(
            (answer.status, answer.json["error"].as_str()),
            (401, Some("invalid_dpop_proof")),
            "{why}: {:?}",
            answer.json
        );
        assert!(answer.challenges.iter().all(|c| c.starts_with("DPoP ")), "{why}: {:?}", answer.challenges);
    }
    let wrong_method = proof(&key, "POST", &agents, Some(&ath(&token)));
    assert_eq!(get(&[("authorization", &dpop), ("dpop", &wrong_method)]).json["error"], "invalid_dpop_proof");
    // Another key's proof, however well made, is not the token's holder.
    let other = proof(&self::key(), "GET", &agents, Some(&ath(&token)));
    let answer = get(&[("authorization", &dpop), ("dpop", &other)]);
    assert_eq!((answer.status, answer.json["error"].as_str()), (401, Some("invalid_token")));

    // The holder's proof: accepted once; the same proof again is a replay.
    let good = proof(&key, "GET", &agents, Some(&ath(&token)));
    let answer = get(&[("authorization", &dpop), ("dpop", &good)]);
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    assert_eq!(get(&[("authorization", &dpop), ("dpop", &good)]).json["error"], "invalid_dpop_proof");

    // Registering with it binds the agent to ada, and she disables it.
    let register = server.realm_url("aiagent/register");
    let registration = proof(&key, "POST", &register, Some(&ath(&token)));
    let registered =
        call("POST", &register, &[("authorization", &dpop), ("dpop", &registration)], Some(&seed_registration()));
    assert_eq!(registered.status, 201, "{:?}", registered.json);
    let agent = Credentials::from_registration(&registered.json);
    let disable = format!("{agents}/{}/disable", agent.client_id);
    let answer = call(
        "POST",
        &disable,
        &[("authorization", &dpop), ("dpop", &proof(&key, "POST", &disable, Some(&ath(&token))))],
        None,
    );
    assert_eq!((answer.status, answer.json["state"].as_str()), (200, Some("disabled")), "{:?}", answer.json);

    // A realm that asks for nonces asks here too, and says which.
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"dpop_nonces": true})));
    assert_eq!(status, 200, "{body}");
    let without = get(&[("authorization", &dpop), ("dpop", &proof(&key, "GET", &agents, Some(&ath(&token))))]);
    assert_eq!((without.status, without.json["error"].as_str()), (401, Some("use_dpop_nonce")), "{:?}", without.json);
    assert!(without.challenges.iter().any(|c| c.starts_with("DPoP ") && c.contains("use_dpop_nonce")));
    let nonce = without.nonce.expect("the server's nonce");
    let with = proof_with_nonce(&key, "GET", &agents, Some(&ath(&token)), Some(&nonce));
    assert_eq!(get(&[("authorization", &dpop), ("dpop", &with)]).status, 200);
}

#[test]
#[ignore = "needs node and oauth4webapi (scripts/install-browser); make test runs it"]
fn oauth4webapi_presents_a_bound_token_at_the_agents_endpoint_through_a_nonce_challenge() {
    use base64::Engine as _;
    let (server, inspector) = setup();
    let pkcs8 = generate_pkcs8(Algorithm::Es256).expect("a key");
    let key = SigningKey::from_pkcs8(Algorithm::Es256, &pkcs8).expect("a key");
    let token = users_token(&server, &inspector, &format!("read {SCOPE}"), Some(&key));
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"dpop_nonces": true})));
    assert_eq!(status, 200, "{body}");
    let agents = server.realm_url("agents");
    let private = base64::engine::general_purpose::STANDARD.encode(&pkcs8);
    let public = key.verifying_key().jwk().to_string();
    let answer = node_script("dpop-resource.mjs", &[&agents, &token, &private, &public], "the client failed");
    assert_eq!(answer["nonce_challenges"], 1, "the first request met the nonce challenge, and no other: {answer}");
    assert_eq!(answer["status"], 200, "{answer}");
    assert!(answer["body"]["owner"].as_str().is_some_and(|o| o.starts_with("user:usr_")), "{answer}");
}
