//! Trust in issuers outside the realm: an enterprise identity provider's
//! ID-JAG, and other JWT bearer assertions (RFC 7523 §2.1), from a small
//! issuer run by the test on loopback with keys of its own.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use agentauth_jose::{Algorithm, SigningKey, generate_pkcs8, sign};
use agentauth_testkit::Credentials;
use serde_json::{Value, json};

use crate::authorize::admin;
use crate::support::{Server, seed_registration};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_JAG: &str = "oauth-id-jag+jwt";
const MCP: &str = "https://mcp.example/mcp";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn key() -> SigningKey {
    SigningKey::from_pkcs8(Algorithm::Es256, &generate_pkcs8(Algorithm::Es256).expect("a key")).expect("a key")
}

/// An identity provider on loopback: it publishes its JWKS over plain
/// HTTP (the server runs with `--dev-loopback-fetch`) and signs what the
/// test asks it to.
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<SigningKey>>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let keys = Arc::new(Mutex::new(vec![key()]));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                // The request line, then headers to the blank line.
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let jwks = {
                    let keys = served.lock().expect("keys");
                    json!({"keys": keys.iter().map(|k| k.verifying_key().jwk()).collect::<Vec<_>>()})
                };
                let body = jwks.to_string();
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=3600\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.read(&mut [0u8; 1]);
            }
        });
        Self { url, keys, fetches }
    }

    fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.url)
    }

    /// Signs `claims` as a JWT of type `typ` with its current key.
    fn sign(&self, typ: &str, claims: &Value) -> String {
        let keys = self.keys.lock().expect("keys");
        sign(keys.last().expect("a key"), typ, claims).expect("signing")
    }

    /// Rotates to a new key, published beside the old one.
    fn rotate(&self) {
        self.keys.lock().expect("keys").push(key());
    }

    /// Publishes `count` new keys beside the old ones, signing with the
    /// last.
    fn publish(&self, count: usize) {
        self.keys.lock().expect("keys").extend((0..count).map(|_| key()));
    }
}

/// The demo realm trusting `issuer` for `purposes`, and a confidential
/// client registered for the JWT bearer grant.
fn setup(server: &Server, issuer: &Issuer, purposes: &[&str]) -> Credentials {
    let trusted =
        json!({"issuer": issuer.url, "purposes": purposes, "jwks_uri": issuer.jwks_uri(), "algorithms": ["ES256"]});
    let (status, body) = admin(server, "PUT", "/alpha/trusted-issuers/corp", Some(trusted));
    assert_eq!(status, 201, "{body}");
    let (status, body) = admin(server, "PATCH", "/alpha", Some(json!({"allowed_resources": [MCP]})));
    assert_eq!(status, 200, "{body}");
    let mut registration = seed_registration();
    registration["grant_types"] = json!(["client_credentials", JWT_BEARER]);
    registration["scope"] = json!("calendar.read calendar.write");
    registration["scopes"] = json!(["calendar.read", "calendar.write"]);
    let reply = server.register_raw(&registration.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    Credentials::from_registration(&reply.json)
}

fn id_jag_claims(issuer: &Issuer, server: &Server, client: &Credentials, jti: &str) -> Value {
    json!({
        "iss": issuer.url, "sub": "alice@corp.example", "aud": realm_issuer(server),
        "client_id": client.client_id, "jti": jti, "iat": now(), "exp": now() + 300,
        "resource": MCP, "scope": "calendar.read", "email": "alice@corp.example",
    })
}

fn realm_issuer(server: &Server) -> String {
    format!("{}/am/oauth2/realms/root/realms/alpha", server.base)
}

fn grant(server: &Server, client: &Credentials, assertion: &str, extra: &[(&str, &str)]) -> crate::support::Reply {
    let mut form = vec![("grant_type", JWT_BEARER), ("assertion", assertion)];
    form.extend_from_slice(extra);
    server.token(&form, Some(client))
}

#[test]
fn an_id_jag_from_a_trusted_identity_provider_becomes_the_users_token_for_the_client() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag"]);

    let jag = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "jag-1"));
    let reply = grant(&server, &client, &jag, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "calendar.read", "the ID-JAG's scope bounds the token");
    assert!(reply.json.get("refresh_token").is_none(), "an ID-JAG is exchanged for an access token only");
    let token = reply.json["access_token"].as_str().unwrap_or_default().to_string();
    let seen = server.introspect(&client, &token);
    assert_eq!(seen.json["active"], true, "{}", seen.body);
    assert_eq!(
        seen.json["sub"],
        format!("ext:{}#alice@corp.example", idp.url),
        "the token names the user, as its issuer knows them"
    );
    assert_eq!(seen.json["client_id"], client.client_id.as_str(), "and the client acting with it");
    assert_eq!(seen.json["aud"], MCP, "audience-restricted to the ID-JAG's resource");

    // Used once: the same ID-JAG again is refused.
    grant(&server, &client, &jag, &[]).assert_error(400, "invalid_grant");
    // The keys were fetched once and cached.
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
}

#[test]
fn id_jags_that_are_misaddressed_mistyped_stale_or_for_another_client_are_refused() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag"]);
    let base = |jti: &str| id_jag_claims(&idp, &server, &client, jti);
    let with = |jti: &str, name: &str, value: Value| {
        let mut claims = base(jti);
        claims[name] = value;
        idp.sign(ID_JAG, &claims)
    };
    let cases = [
        ("another audience", with("a", "aud", json!("https://other.example"))),
        ("two audiences", with("b", "aud", json!([realm_issuer(&server), "https://other.example"]))),
        ("another client", with("c", "client_id", json!("someone-else"))),
        ("expired", with("d", "exp", json!(now() - 3600))),
        ("valid for a day", with("e", "exp", json!(now() + 86_400))),
        ("no jti", {
            let mut claims = base("f");
            claims.as_object_mut().expect("an object").remove("jti");
            idp.sign(ID_JAG, &claims)
        }),
        ("no iat", {
            let mut claims = base("f2");
            claims.as_object_mut().expect("an object").remove("iat");
            idp.sign(ID_JAG, &claims)
        }),
        ("an untrusted issuer", with("g", "iss", json!("https://evil.example"))),
        ("typed as a plain JWT, from an issuer trusted only for ID-JAG", idp.sign("JWT", &base("h"))),
        ("a resource the realm does not allow", with("i", "resource", json!("https://evil.example/mcp"))),
    ];
    for (what, assertion) in cases {
        let reply = grant(&server, &client, &assertion, &[]);
        let expected = if what.starts_with("a resource") { "invalid_target" } else { "invalid_grant" };
        assert_eq!((reply.status, reply.json["error"].as_str()), (400, Some(expected)), "{what}: {}", reply.body);
    }
    // Signed by a key the issuer never published.
    let mut forged = base("j");
    forged["sub"] = json!("admin@corp.example");
    let stranger = sign(&key(), ID_JAG, &forged).expect("signing");
    grant(&server, &client, &stranger, &[]).assert_error(400, "invalid_grant");
    // A scope or resource beyond the ID-JAG's is not granted.
    let jag = idp.sign(ID_JAG, &base("k"));
    let reply = grant(&server, &client, &jag, &[("resource", "https://other.example/mcp")]);
    reply.assert_error(400, "invalid_target");
}

#[test]
fn an_id_jag_is_for_the_realms_issuer_whatever_audience_its_issuer_is_configured_with() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag", "jwt_bearer"]);
    // The issuer's plain assertions name an audience of their own.
    let partner = "https://partner.example";
    let trusted = json!({"issuer": idp.url, "purposes": ["id_jag", "jwt_bearer"], "jwks_uri": idp.jwks_uri(),
                         "algorithms": ["ES256"], "audience": partner});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/corp", Some(trusted)).0, 200);
    let plain =
        json!({"iss": idp.url, "sub": "batch-job-7", "aud": partner, "jti": "pa1", "iat": now(), "exp": now() + 120});
    let reply = grant(&server, &client, &idp.sign("JWT", &plain), &[("scope", "calendar.read")]);
    assert_eq!(reply.status, 200, "the configured audience holds for plain assertions: {}", reply.body);

    // An ID-JAG addressed to that audience is for another server.
    let mut misaddressed = id_jag_claims(&idp, &server, &client, "pa2");
    misaddressed["aud"] = json!(partner);
    let reply = grant(&server, &client, &idp.sign(ID_JAG, &misaddressed), &[]);
    reply.assert_error(400, "invalid_grant");
    assert!(reply.body.contains("aud"), "{}", reply.body);
    // Addressed to this realm's issuer, it is redeemed.
    let jag = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "pa3"));
    let reply = grant(&server, &client, &jag, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_rotated_key_is_fetched_once_and_unknown_keys_do_not_make_the_server_fetch_again_and_again() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag", "jwt_bearer"]);
    let first = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "r1"));
    assert_eq!(grant(&server, &client, &first, &[]).status, 200);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates: a token under the new key makes the server
    // fetch the JWKS again (it was cached for an hour), and passes.
    idp.rotate();
    let rotated = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "r2"));
    let reply = grant(&server, &client, &rotated, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);

    // Tokens naming keys nobody published are refused, and within the
    // refresh interval they do not make the server fetch again.
    for n in 0..5 {
        let stranger = sign(&key(), ID_JAG, &id_jag_claims(&idp, &server, &client, &format!("x{n}"))).expect("signing");
        grant(&server, &client, &stranger, &[]).assert_error(400, "invalid_grant");
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2, "unknown kids are rate-limited");
}

#[test]
fn an_issuer_whose_jwks_grows_past_the_bound_is_refused_whole_and_other_issuers_still_work() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag"]);
    let first = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "g1"));
    assert_eq!(grant(&server, &client, &first, &[]).status, 200);

    // The issuer now publishes more keys than any issuer may have: a
    // token under one of them makes the server fetch the set again, and
    // the whole set is refused, the key it trusted before included.
    let bound = agentauth_core::trust::MAX_ISSUER_KEYS;
    idp.publish(bound);
    let grown = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "g2"));
    let reply = grant(&server, &client, &grown, &[]);
    reply.assert_error(400, "invalid_grant");
    let why = reply.json["error_description"].as_str().unwrap_or_default();
    assert!(why.contains(&format!("more than {bound} keys")), "the reason is given: {}", reply.body);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2, "fetched again once");
    let old_key = sign(&idp.keys.lock().expect("keys")[0], ID_JAG, &id_jag_claims(&idp, &server, &client, "g3"))
        .expect("signing");
    grant(&server, &client, &old_key, &[]).assert_error(400, "invalid_grant");

    // Another issuer of the same realm is not held up by it.
    let other = Issuer::start();
    let trusted =
        json!({"issuer": other.url, "purposes": ["id_jag"], "jwks_uri": other.jwks_uri(), "algorithms": ["ES256"]});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/other", Some(trusted)).0, 201);
    let jag = other.sign(ID_JAG, &id_jag_claims(&other, &server, &client, "g4"));
    let reply = grant(&server, &client, &jag, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[test]
fn a_plain_jwt_bearer_assertion_needs_an_issuer_trusted_for_it() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["jwt_bearer"]);
    let claims = json!({
        "iss": idp.url, "sub": "batch-job-7", "aud": server.realm_url("access_token"),
        "jti": "b1", "iat": now(), "exp": now() + 120,
    });
    let reply = grant(&server, &client, &idp.sign("JWT", &claims), &[("scope", "calendar.read")]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json["access_token"].as_str().unwrap_or_default().to_string();
    assert_eq!(server.introspect(&client, &token).json["sub"], format!("ext:{}#batch-job-7", idp.url));
    // The same issuer's ID-JAG is refused: it is trusted for plain
    // assertions only.
    let jag = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "b2"));
    grant(&server, &client, &jag, &[]).assert_error(400, "invalid_grant");
    // An issuer naming a local user's subject, or a client's id, names
    // only someone of its own.
    let (status, user) =
        admin(&server, "POST", "/alpha/users", Some(json!({"username": "root", "password": "a long passphrase"})));
    assert_eq!(status, 201, "{user}");
    for (n, local) in [user["subject"].clone(), json!(client.client_id)].into_iter().enumerate() {
        let mut claims = claims.clone();
        claims["sub"] = local.clone();
        claims["jti"] = json!(format!("b3-{n}"));
        let reply = grant(&server, &client, &idp.sign("JWT", &claims), &[]);
        assert_eq!(reply.status, 200, "{}", reply.body);
        let token = reply.json["access_token"].as_str().unwrap_or_default().to_string();
        let sub = server.introspect(&client, &token).json["sub"].clone();
        assert_eq!(sub, format!("ext:{}#{}", idp.url, local.as_str().unwrap_or_default()), "not {local}");
    }
}

#[test]
fn without_the_development_setting_a_loopback_issuer_is_never_fetched() {
    let server = Server::start_with_admin();
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag"]);
    let jag = idp.sign(ID_JAG, &id_jag_claims(&idp, &server, &client, "s1"));
    let reply = grant(&server, &client, &jag, &[]);
    assert_eq!(reply.status / 100, 4, "{}", reply.body);
    assert_eq!(reply.json["error"], "invalid_grant", "{}", reply.body);
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 0, "no connection was made to the loopback address");
}

#[test]
fn trusted_issuers_are_managed_whole_and_checked_through_the_admin_api() {
    let server = Server::start_with_admin();
    let corp = json!({"issuer": "https://idp.corp.example", "purposes": ["id_jag"], "discovery": true});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/corp", Some(corp.clone())).0, 201);
    let (status, listed) = admin(&server, "GET", "/alpha/trusted-issuers", None);
    assert_eq!(status, 200);
    assert_eq!(listed["trusted_issuers"][0]["name"], "corp");
    assert_eq!(listed["trusted_issuers"][0]["algorithms"], json!(["RS256", "ES256"]), "safe defaults are shown");
    let mut replaced = corp.clone();
    replaced["purposes"] = json!(["id_jag", "jwt_bearer"]);
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/corp", Some(replaced)).0, 200);
    let mut encryption = key().verifying_key().jwk();
    encryption["use"] = json!("enc");
    for (bad, why) in [
        (json!({"issuer": "https://x.example", "purposes": ["id_jag"]}), "exactly one"),
        (json!({"issuer": "https://x.example", "purposes": ["root"], "discovery": true}), "root"),
        (
            json!({"issuer": "https://x.example", "purposes": ["id_jag"], "discovery": true, "algorithms": ["none"]}),
            "none",
        ),
        (json!({"issuer": "https://x.example", "purposes": ["id_jag"], "jwks_uri": "ftp://x.example/k"}), "jwks_uri"),
        (
            json!({"issuer": "https://x.example", "purposes": ["id_jag"], "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
            "private",
        ),
        (
            json!({"issuer": "https://x.example", "purposes": ["id_jag"], "jwks": {"keys": [encryption]}}),
            "no signing key",
        ),
        (
            json!({"issuer": "https://x.example", "purposes": ["client_auth", "id_jag"], "discovery": true}),
            "client_auth goes alone",
        ),
    ] {
        let (status, body) = admin(&server, "PUT", "/alpha/trusted-issuers/other", Some(bad.clone()));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error_description"].as_str().unwrap_or_default().contains(why), "{bad}: {body}");
    }
    assert_eq!(admin(&server, "DELETE", "/alpha/trusted-issuers/corp", None).0, 204);
    assert_eq!(admin(&server, "DELETE", "/alpha/trusted-issuers/corp", None).0, 404);
    let (_, audit) = admin(&server, "GET", "/alpha/audit", None);
    let actions: Vec<&str> =
        audit["entries"].as_array().into_iter().flatten().filter_map(|e| e["action"].as_str()).collect();
    for action in ["add-trusted-issuer", "replace-trusted-issuer", "remove-trusted-issuer"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }
}

const CLIENT_JWT: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CLIENT_SPIFFE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe";

/// Registers a client that authenticates as a workload (`method`, with
/// the metadata naming it), for client credentials; returns its id.
fn register_workload(server: &Server, method: &str, naming: Value) -> String {
    let mut registration = seed_registration();
    registration["token_endpoint_auth_method"] = json!(method);
    for (name, value) in naming.as_object().into_iter().flatten() {
        registration[name] = value.clone();
    }
    let reply = server.register_raw(&registration.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.json.get("client_secret").is_none(), "a workload client has no secret");
    reply.json["client_id"].as_str().unwrap_or_default().to_string()
}

fn workload_token(server: &Server, client_id: Option<&str>, kind: &str, token: &str) -> crate::support::Reply {
    let mut form =
        vec![("grant_type", "client_credentials"), ("client_assertion_type", kind), ("client_assertion", token)];
    if let Some(id) = client_id {
        form.push(("client_id", id));
    }
    server.token(&form, None)
}

#[test]
fn a_kubernetes_workload_authenticates_with_its_service_account_token() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let cluster = Issuer::start();
    let trusted = json!({"issuer": cluster.url, "purposes": ["client_auth"], "jwks_uri": cluster.jwks_uri(),
                         "algorithms": ["ES256"], "audience": "agentauth"});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/cluster", Some(trusted)).0, 201);
    let planner = "system:serviceaccount:agents:planner";
    let client_id = register_workload(
        &server,
        "federated_jwt",
        json!({"federated_issuer": cluster.url, "federated_subject": planner}),
    );
    let projected = |sub: &str, aud: &str| {
        cluster.sign("JWT", &json!({"iss": cluster.url, "sub": sub, "aud": [aud], "iat": now(), "exp": now() + 600}))
    };
    let token = projected(planner, "agentauth");
    let reply = workload_token(&server, Some(&client_id), CLIENT_JWT, &token);
    assert_eq!(reply.status, 200, "{}", reply.body);
    // A platform token is reused until it expires.
    assert_eq!(workload_token(&server, Some(&client_id), CLIENT_JWT, &token).status, 200);
    for (what, bad, id) in [
        (
            "another service account",
            projected("system:serviceaccount:agents:other", "agentauth"),
            Some(client_id.as_str()),
        ),
        ("another audience", projected(planner, "kubernetes"), Some(client_id.as_str())),
        ("no client named, and no policy to name one", projected(planner, "agentauth"), None),
    ] {
        let reply = workload_token(&server, id, CLIENT_JWT, &bad);
        assert_eq!(
            (reply.status, reply.json["error"].as_str()),
            (401, Some("invalid_client")),
            "{what}: {}",
            reply.body
        );
    }
}

#[test]
fn a_spiffe_workload_authenticates_with_its_jwt_svid() {
    let server = Server::start_with_admin();
    let bundle = key();
    // The trust domain's bundle as SPIFFE publishes it: its JWT-SVID key
    // marked for that use, and the bundle's own sequence and refresh hint.
    let mut authority = bundle.verifying_key().jwk();
    authority["use"] = json!("jwt-svid");
    authority.as_object_mut().expect("a JWK").remove("alg");
    let trusted = json!({"issuer": "spiffe://prod.example", "purposes": ["client_auth"],
                         "jwks": {"keys": [authority], "spiffe_sequence": 7, "spiffe_refresh_hint": 300},
                         "algorithms": ["ES256"]});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/prod", Some(trusted)).0, 201);
    let client_id = register_workload(&server, "spiffe_jwt", json!({"spiffe_id": "spiffe://prod.example/agents/*"}));
    let svid = |sub: &str, aud: Value| {
        sign(&bundle, "JWT", &json!({"sub": sub, "aud": aud, "iat": now(), "exp": now() + 300})).expect("signing")
    };
    let issuer = realm_issuer(&server);
    let good = svid("spiffe://prod.example/agents/planner", json!([issuer]));
    let reply = workload_token(&server, Some(&client_id), CLIENT_SPIFFE, &good);
    assert_eq!(reply.status, 200, "{}", reply.body);
    for (what, bad, kind) in [
        ("outside the registered path", svid("spiffe://prod.example/agentsplanner", json!([issuer])), CLIENT_SPIFFE),
        ("another trust domain", svid("spiffe://dev.example/agents/planner", json!([issuer])), CLIENT_SPIFFE),
        (
            "a second audience",
            svid("spiffe://prod.example/agents/planner", json!([issuer, "https://x.example"])),
            CLIENT_SPIFFE,
        ),
        ("sent as a plain jwt-bearer assertion", good.clone(), CLIENT_JWT),
    ] {
        let reply = workload_token(&server, Some(&client_id), kind, &bad);
        assert_eq!(reply.status, 401, "{what}: {}", reply.body);
    }
    let discovery = server.get(".well-known/openid-configuration");
    let methods = discovery.json["token_endpoint_auth_methods_supported"].to_string();
    assert!(methods.contains("spiffe_jwt") && methods.contains("federated_jwt"), "{methods}");
}

#[test]
fn a_trusted_issuers_jwt_is_exchanged_for_the_client_it_names_in_may_act() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let trusted =
        json!({"issuer": idp.url, "purposes": ["subject_token"], "jwks_uri": idp.jwks_uri(), "algorithms": ["ES256"]});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/corp", Some(trusted)).0, 201);
    let mut registration = seed_registration();
    registration["grant_types"] = json!([crate::support::TOKEN_EXCHANGE]);
    registration["scope"] = json!("read write");
    registration["scopes"] = json!(["read", "write"]);
    let reply = server.register_raw(&registration.to_string());
    assert_eq!(reply.status, 201, "{}", reply.body);
    let agent = Credentials::from_registration(&reply.json);
    let user_token = |may_act: Value| {
        idp.sign(
            "JWT",
            &json!({"iss": idp.url, "sub": "alice", "aud": realm_issuer(&server), "scope": "read",
                                "iat": now(), "exp": now() + 300, "may_act": may_act}),
        )
    };
    let exchange = |token: &str| {
        let form = [
            ("grant_type", crate::support::TOKEN_EXCHANGE),
            ("subject_token", token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ];
        server.token(&form, Some(&agent))
    };
    let reply = exchange(&user_token(json!({"client_id": agent.client_id})));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read", "no wider than the user's token");
    assert!(reply.json.get("refresh_token").is_none());
    let token = reply.json["access_token"].as_str().unwrap_or_default().to_string();
    let seen = server.introspect(&agent, &token);
    assert_eq!(seen.json["sub"], format!("ext:{}#alice", idp.url), "{}", seen.body);
    assert_eq!(seen.json["act"]["client_id"], agent.client_id.as_str(), "{}", seen.body);
    // A token naming another client, or no one, in may_act is not this agent's to exchange.
    exchange(&user_token(json!({"client_id": "someone-else"}))).assert_error(400, "invalid_request");
    exchange(&user_token(Value::Null)).assert_error(400, "invalid_request");
    // Signed by a stranger: the subject token is invalid.
    let forged = sign(
        &key(),
        "JWT",
        &json!({"iss": idp.url, "sub": "alice", "aud": realm_issuer(&server),
                                            "exp": now() + 300, "may_act": {"client_id": agent.client_id}}),
    )
    .expect("signing");
    exchange(&forged).assert_error(400, "invalid_request");
}

/// Pushes the trusted-domains assertion policy and makes it realm
/// `alpha`'s assertion plugin.
/// Makes the Rust trusted-domains policy realm `alpha`'s assertion plugin.
pub(crate) fn use_trusted_domains_policy(server: &Server) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let plugin = dir.path().join("trusted-domains.wasm");
    std::fs::write(&plugin, agentauth_plugins::TRUSTED_DOMAINS_ASSERTION).expect("writing the plugin");
    let file = plugin.to_string_lossy().into_owned();
    let push = [
        "plugin",
        "push",
        "--server",
        &server.base,
        "--realm",
        "alpha",
        "--name",
        "trusted-domains",
        "--hook",
        "assertion",
        &file,
    ];
    let (ok, out, err) = crate::support::cli(&push, crate::support::ADMIN_TOKEN);
    assert!(ok, "{out} {err}");
    let (status, body) = admin(server, "PATCH", "/alpha", Some(json!({"assertion_plugin": "trusted-domains"})));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_realms_assertion_policy_decides_who_an_id_jag_names_and_whom_it_refuses() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let idp = Issuer::start();
    let client = setup(&server, &idp, &["id_jag"]);
    use_trusted_domains_policy(&server);
    let jag = |jti: &str, email: &str| {
        let mut claims = id_jag_claims(&idp, &server, &client, jti);
        claims["email"] = json!(email);
        claims["email_verified"] = json!(true);
        claims["sub"] = json!("00u1alice");
        idp.sign(ID_JAG, &claims)
    };
    let reply = grant(&server, &client, &jag("p1", "alice@example.com"), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json["access_token"].as_str().unwrap_or_default().to_string();
    let seen = server.introspect(&client, &token);
    assert_eq!(seen.json["sub"], format!("ext:{}#00u1alice", idp.url), "the policy's subject: {}", seen.body);
    // Another domain: the policy refuses, in its words.
    let reply = grant(&server, &client, &jag("p2", "mallory@evil.example"), &[]);
    reply.assert_error(400, "invalid_grant");
    assert!(reply.body.contains("trusted email domain"), "{}", reply.body);
    // The decisions name the policy that made them (the audit writes in
    // batches: wait for it).
    let mut decided = Value::Null;
    for _ in 0..50 {
        decided = admin(&server, "GET", "/alpha/decisions?plugin=trusted-domains", None).1;
        if decided["decisions"].as_array().is_some_and(|d| d.len() >= 2) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(decided["decisions"].as_array().map(Vec::len), Some(2), "{decided}");
}

#[test]
fn with_an_assertion_policy_a_workload_must_still_be_the_subject_its_client_registered() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let cluster = Issuer::start();
    let trusted = json!({"issuer": cluster.url, "purposes": ["client_auth"], "jwks_uri": cluster.jwks_uri(),
                         "algorithms": ["ES256"], "audience": "agentauth"});
    assert_eq!(admin(&server, "PUT", "/alpha/trusted-issuers/cluster", Some(trusted)).0, 201);
    use_trusted_domains_policy(&server);
    // The policy maps service account agents:<name> to the client named
    // <name>; this client is named "other" but registered agents:planner.
    let mut naming =
        json!({"federated_issuer": cluster.url, "federated_subject": "system:serviceaccount:agents:planner"});
    naming["client_name"] = json!("other");
    let client_id = register_workload(&server, "federated_jwt", naming);
    let token = |sub: &str| {
        cluster
            .sign("JWT", &json!({"iss": cluster.url, "sub": sub, "aud": "agentauth", "iat": now(), "exp": now() + 600}))
    };
    let reply = workload_token(&server, Some(&client_id), CLIENT_JWT, &token("system:serviceaccount:agents:other"));
    reply.assert_error(401, "invalid_client");
    // Its registered subject passes the binding, and the policy refuses
    // it (the name is not the account's): both must agree.
    let reply = workload_token(&server, Some(&client_id), CLIENT_JWT, &token("system:serviceaccount:agents:planner"));
    reply.assert_error(401, "invalid_client");
    // When both agree, it authenticates.
    let mut naming =
        json!({"federated_issuer": cluster.url, "federated_subject": "system:serviceaccount:agents:planner"});
    naming["client_name"] = json!("planner");
    let planner = register_workload(&server, "federated_jwt", naming);
    let reply = workload_token(&server, Some(&planner), CLIENT_JWT, &token("system:serviceaccount:agents:planner"));
    assert_eq!(reply.status, 200, "{}", reply.body);
}

/// Runs `agentauth trust ...` against `server`'s realm `alpha`: its
/// output as JSON, or its error output.
fn trust_cli(server: &Server, args: &[&str]) -> Result<Value, String> {
    let remote = ["--server", server.base.as_str(), "--realm", "alpha"];
    let (ok, out, err) = crate::support::cli(&[&["trust"], args, &remote[..]].concat(), crate::support::ADMIN_TOKEN);
    if !ok {
        return Err(err);
    }
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

#[test]
fn the_trust_command_adds_an_upstream_login_provider_shows_lists_and_removes_issuers() {
    let (server, client_id) = crate::authorize::setup();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let jwks = dir.path().join("cluster-jwks.json");
    std::fs::write(&jwks, json!({"keys": [key().verifying_key().jwk()]}).to_string()).expect("writing the JWKS");
    let jwks = jwks.to_string_lossy().into_owned();
    let cluster = [
        "add",
        "--name",
        "k8s",
        "--issuer",
        "https://kubernetes.default.svc",
        "--purpose",
        "client_auth",
        "--jwks-file",
        &jwks,
        "--audience",
        "agentauth",
    ];
    let added = trust_cli(&server, &cluster).expect("the cluster trusted");
    assert_eq!((added["name"].as_str(), added["audience"].as_str()), (Some("k8s"), Some("agentauth")), "{added}");

    // A login provider needs the realm's client there: without it the
    // server says what is missing.
    let login = ["add", "--name", "corp", "--issuer", "https://idp.corp.example", "--purpose", "login", "--discovery"];
    let refused = trust_cli(&server, &login).expect_err("login without its settings");
    assert!(refused.contains("400") && refused.contains("login needs login"), "{refused}");
    // Its settings without the client id are refused before any call.
    let orphan = trust_cli(&server, &[&login[..], &["--login-label", "Corp"]].concat()).expect_err("no client id");
    assert!(orphan.contains("--login-client-id"), "{orphan}");
    let settings = [
        "--login-client-id",
        "agentauth-alpha",
        "--login-client-secret-env",
        "CORP_CLIENT_SECRET",
        "--login-scope",
        "openid email",
        "--login-label",
        "Corp",
    ];
    let added = trust_cli(&server, &[&login[..], &settings[..]].concat()).expect("the provider trusted");
    let expected = json!({"client_id": "agentauth-alpha", "client_secret_env": "CORP_CLIENT_SECRET",
                          "scope": "openid email", "label": "Corp"});
    assert_eq!(added["login"], expected, "{added}");
    let shown = trust_cli(&server, &["show", "--name", "corp"]).expect("shown");
    assert_eq!((shown["purposes"].clone(), shown["login"].clone()), (json!(["login"]), expected), "{shown}");
    // Its users see it on the login page.
    let page = crate::authorize::Browser::new().get(&crate::authorize::authorize_url(&server, &client_id, &[]));
    assert!(page.body.contains("Sign in with Corp"), "{}", page.body);

    let names = |listed: &Value| -> Vec<String> {
        listed["trusted_issuers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .map(str::to_string)
            .collect()
    };
    assert_eq!(names(&trust_cli(&server, &["list"]).expect("listed")), ["k8s", "corp"]);
    let removed = trust_cli(&server, &["remove", "--name", "corp"]).expect("removed");
    assert_eq!(removed, json!({"name": "corp", "removed": true}));
    let gone = trust_cli(&server, &["show", "--name", "corp"]).expect_err("no longer trusted");
    assert!(gone.contains("404"), "{gone}");
    assert_eq!(names(&trust_cli(&server, &["list"]).expect("listed")), ["k8s"]);
    let page = crate::authorize::Browser::new().get(&crate::authorize::authorize_url(&server, &client_id, &[]));
    assert!(!page.body.contains("Sign in with"), "{}", page.body);
}
