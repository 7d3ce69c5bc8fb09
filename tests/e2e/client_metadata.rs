//! Client ID Metadata Documents: an MCP client that never registered
//! names itself with the URL of its metadata, and signs a user in.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use agentauth_jose::{Algorithm, SigningKey, generate_pkcs8, sign};
use serde_json::{Value, json};

use crate::authorize::{Browser, PASSWORD, REDIRECT, VERIFIER, admin, authorize_url, redeem, sign_in_and_allow};
use crate::support::{Reply, Server};

/// A web server on loopback serving one document at `/client.json` and
/// a JWKS at `/jwks.json` (and 404 elsewhere), counting its requests.
struct DocumentHost {
    base: String,
    document: Arc<Mutex<Value>>,
    keys: Arc<Mutex<Value>>,
    requests: Arc<AtomicUsize>,
    key_requests: Arc<AtomicUsize>,
}

impl DocumentHost {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("an address"));
        let document = Arc::new(Mutex::new(Value::Null));
        let keys = Arc::new(Mutex::new(Value::Null));
        let requests = Arc::new(AtomicUsize::new(0));
        let key_requests = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (document.clone(), requests.clone());
        let (served_keys, counted_keys) = (keys.clone(), key_requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let (status, body) = if request_line.contains(" /jwks.json ") {
                    counted_keys.fetch_add(1, Ordering::SeqCst);
                    ("200 OK", served_keys.lock().expect("the keys").to_string())
                } else {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().expect("the document").to_string();
                    (if request_line.contains(" /client.json") { "200 OK" } else { "404 Not Found" }, body)
                };
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: max-age=600\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.read(&mut [0u8; 1]);
            }
        });
        Self { base, document, keys, requests, key_requests }
    }

    fn client_id(&self) -> String {
        format!("{}/client.json", self.base)
    }

    fn serve(&self, document: Value) {
        *self.document.lock().expect("the document") = document;
    }

    fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.base)
    }

    /// Publishes `keys` (public JWKs) at [`Self::jwks_uri`].
    fn publish(&self, keys: &[&SigningKey]) {
        let jwks = json!({"keys": keys.iter().map(|k| k.verifying_key().jwk()).collect::<Vec<_>>()});
        *self.keys.lock().expect("the keys") = jwks;
    }
}

fn server_taking_documents() -> Server {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"client_metadata_documents": true})));
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "ada", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    server
}

fn inspector(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "client_name": "Inspector",
        "redirect_uris": [REDIRECT],
        "application_type": "native",
        "scope": "read write",
    })
}

#[test]
fn a_client_named_by_its_metadata_document_signs_a_user_in_without_registering() {
    let server = server_taking_documents();
    let discovery = server.get(".well-known/openid-configuration");
    assert_eq!(discovery.json["client_id_metadata_document_supported"], true, "{}", discovery.body);
    let host = DocumentHost::start();
    let client_id = host.client_id();
    host.serve(inspector(&client_id));

    let mut browser = Browser::new();
    // Before anyone signs in, the page says where the answer will go: the
    // redirect URI's host, which a document cannot dress up as its name.
    let login = browser.get(&authorize_url(&server, &client_id, &[]));
    assert!(login.body.contains("return to <strong>127.0.0.1:49152</strong>"), "{}", login.body);
    assert!(login.body.contains("<strong>Inspector</strong> from <strong>127.0.0.1</strong>"), "{}", login.body);
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let code = answer.get("code").expect("a code");
    let reply = redeem(&server, &client_id, code, VERIFIER);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read write");
    assert!(reply.json["refresh_token"].is_string(), "a public client's refresh token, rotating");
    assert_eq!(host.requests.load(Ordering::SeqCst), 1, "the document is fetched once and cached");
}

#[test]
fn documents_that_break_the_rules_are_refused_before_anyone_signs_in() {
    let server = server_taking_documents();
    let host = DocumentHost::start();
    let client_id = host.client_id();
    for (what, document) in [
        ("another client_id", inspector("https://app.example/client.json")),
        ("a secret", {
            let mut d = inspector(&client_id);
            d["client_secret"] = json!("s3cret");
            d
        }),
        ("a shared-secret method", {
            let mut d = inspector(&client_id);
            d["token_endpoint_auth_method"] = json!("client_secret_post");
            d
        }),
        ("a redirect URI that is not https or loopback", {
            let mut d = inspector(&client_id);
            d["redirect_uris"] = json!(["http://evil.example/cb"]);
            d
        }),
    ] {
        // Each document is a new URL: nothing is cached between cases.
        let url = format!("{client_id}?case={}", what.len());
        let mut document = document;
        if document["client_id"] == json!(client_id) {
            document["client_id"] = json!(url);
        }
        host.serve(document);
        let mut browser = Browser::new();
        let page = browser.get(&authorize_url(&server, &url, &[]));
        assert_eq!(page.status, 400, "{what}: {}", page.body);
        assert!(!page.body.contains("<form"), "{what}: no login form");
    }
    // A redirect URI the document does not list is never redirected to.
    host.serve(inspector(&client_id));
    let mut browser = Browser::new();
    let page = browser.get(&authorize_url(&server, &client_id, &[("redirect_uri", "http://127.0.0.1:49152/other")]));
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(page.location, None);
}

#[test]
fn a_realm_that_does_not_take_documents_never_fetches_them() {
    let server = Server::start_with_admin_args(&["--dev-loopback-fetch"]);
    let host = DocumentHost::start();
    let client_id = host.client_id();
    host.serve(inspector(&client_id));
    let discovery = server.get(".well-known/openid-configuration");
    assert_eq!(discovery.json["client_id_metadata_document_supported"], false);
    let mut browser = Browser::new();
    let page = browser.get(&authorize_url(&server, &client_id, &[]));
    assert_eq!(page.status, 400, "{}", page.body);
    assert_eq!(host.requests.load(Ordering::SeqCst), 0);
}

#[test]
fn a_document_for_machine_grants_is_refused_and_the_token_endpoint_never_fetches_new_ones() {
    let server = server_taking_documents();
    let host = DocumentHost::start();
    let client_id = host.client_id();
    let mut machine = inspector(&client_id);
    machine["grant_types"] = json!(["client_credentials"]);
    machine["token_endpoint_auth_method"] = json!("private_key_jwt");
    machine["jwks"] =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]});
    host.serve(machine);
    let mut browser = Browser::new();
    let page = browser.get(&authorize_url(&server, &client_id, &[]));
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("grant type"), "{}", page.body);
    // A URL never seen at the authorization endpoint is an unknown client
    // at the token endpoint, and is not fetched from there.
    let other = format!("{}/client.json?never-authorized", host.base);
    let before = host.requests.load(Ordering::SeqCst);
    let reply = server.token(&[("grant_type", "authorization_code"), ("code", "x"), ("client_id", &other)], None);
    reply.assert_error(401, "invalid_client");
    assert_eq!(host.requests.load(Ordering::SeqCst), before);
}

#[test]
fn documents_are_owned_by_their_host_which_the_realm_may_cap_and_disable_at_once() {
    let server = server_taking_documents();
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"max_clients_per_owner": 1})));
    assert_eq!(status, 200, "{body}");
    let (first, second) = (DocumentHost::start(), DocumentHost::start());
    first.serve(inspector(&first.client_id()));
    second.serve(inspector(&second.client_id()));

    let mut browser = Browser::new();
    let admitted = browser.get(&authorize_url(&server, &first.client_id(), &[]));
    assert_eq!(admitted.status, 200, "{}", admitted.body);
    // The same host's second document is past the owner's cap.
    let refused = browser.get(&authorize_url(&server, &second.client_id(), &[]));
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("maximum of 1 clients"), "{}", refused.body);

    let owner = "document:127.0.0.1";
    let (status, listed) = admin(&server, "GET", "/alpha/clients?owner=document%3A127.0.0.1", None);
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["clients"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["clients"][0]["client_id"], first.client_id());
    assert_eq!(listed["clients"][0]["attributes"]["owner"], owner);

    // Every client of the owner, disabled in one call.
    let (status, done) = admin(&server, "POST", "/alpha/owners/document%3A127.0.0.1/disable", None);
    assert_eq!(status, 200, "{done}");
    assert_eq!(done, json!({"owner": owner, "disabled": 1}));
    let stopped = browser.get(&authorize_url(&server, &first.client_id(), &[]));
    assert_eq!(stopped.status, 400, "{}", stopped.body);
}

/// Pushes the misbehaving DCR fixture (it refuses a client named
/// `dcr-deny`, and admits any other with stateless tokens, the audience
/// `https://updates.example` and its may-act plugin) and makes it realm
/// `alpha`'s DCR policy.
fn use_misbehaving_dcr_policy(server: &Server) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let remote = ["--server", server.base.as_str(), "--realm", "alpha"];
    for (name, hook, bytes) in [
        ("misbehaving-may-act", "may-act", agentauth_plugins::MISBEHAVING_MAY_ACT),
        ("misbehaving-dcr", "dcr", agentauth_plugins::MISBEHAVING_DCR),
    ] {
        let file = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&file, bytes).expect("writing the plugin");
        let file = file.to_string_lossy().into_owned();
        let push = [&["plugin", "push"], &remote[..], &["--name", name, "--hook", hook, &file]].concat();
        let (ok, out, err) = crate::support::cli(&push, crate::support::ADMIN_TOKEN);
        assert!(ok, "{out} {err}");
    }
    let (status, body) = admin(server, "PATCH", "/alpha", Some(json!({"dcr_plugin": "misbehaving-dcr"})));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_realms_dcr_policy_decides_which_documents_become_clients_and_what_they_may_do() {
    let server = server_taking_documents();
    use_misbehaving_dcr_policy(&server);
    let host = DocumentHost::start();
    let documents = "/alpha/clients?owner=document%3A127.0.0.1";

    // A document the policy refuses names no client: the page says so,
    // and nothing is redirected or stored.
    let refused_id = format!("{}?refused", host.client_id());
    let mut refused = inspector(&refused_id);
    refused["client_name"] = json!("dcr-deny");
    host.serve(refused);
    let page = Browser::new().get(&authorize_url(&server, &refused_id, &[]));
    assert_eq!((page.status, page.location.as_deref()), (400, None), "{}", page.body);
    assert!(!page.body.contains("<form"), "no login form: {}", page.body);
    assert!(page.body.contains("registrations named dcr-deny are refused"), "the policy's words: {}", page.body);
    let (status, listed) = admin(&server, "GET", documents, None);
    assert_eq!((status, listed["clients"].as_array().map(Vec::len)), (200, Some(0)), "{listed}");

    // One it admits works, with what the policy set on it.
    let client_id = host.client_id();
    host.serve(inspector(&client_id));
    let mut browser = Browser::new();
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let reply = redeem(&server, &client_id, answer.get("code").expect("a code"), VERIFIER);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let token = reply.json["access_token"].as_str().unwrap_or_default();
    // The policy made its tokens stateless: a JWT naming the client.
    let (header, claims) = crate::support::jwt_parts(token);
    assert_eq!((header["typ"].as_str(), claims["client_id"].as_str()), (Some("at+jwt"), Some(client_id.as_str())));
    let (_, listed) = admin(&server, "GET", documents, None);
    assert_eq!(listed["clients"].as_array().map(Vec::len), Some(1), "{listed}");
    let attributes = &listed["clients"][0]["attributes"];
    assert_eq!(listed["clients"][0]["client_id"], client_id);
    assert_eq!(attributes["stateless_tokens_enabled"], true, "{attributes}");
    assert_eq!(attributes["allowed_audiences"], json!(["https://updates.example"]), "{attributes}");
    assert_eq!(attributes["access_token_may_act_script"], "misbehaving-may-act", "{attributes}");
    assert_eq!(attributes["owner"], "document:127.0.0.1", "the document's host, as the policy did not say");
}

fn key() -> SigningKey {
    SigningKey::from_pkcs8(Algorithm::Es256, &generate_pkcs8(Algorithm::Es256).expect("a key")).expect("a key")
}

/// Redeems `code` as `client_id`, authenticating with a client assertion
/// (RFC 7523) signed by `key`; `jti` unique per call.
fn redeem_with_key(server: &Server, client_id: &str, key: &SigningKey, code: &str, jti: &str) -> Reply {
    redeem_with_assertion(server, client_id, key, code, jti, true)
}

/// [`redeem_with_key`], the assertion's header naming the key's `kid`
/// or not (`kid`): many client libraries name none.
fn redeem_with_assertion(
    server: &Server,
    client_id: &str,
    key: &SigningKey,
    code: &str,
    jti: &str,
    kid: bool,
) -> Reply {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let claims = json!({"iss": client_id, "sub": client_id, "aud": server.realm_url("access_token"),
                        "iat": now, "exp": now + 60, "jti": jti});
    let assertion = if kid {
        sign(key, "JWT", &claims).expect("signing")
    } else {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(&json!({"alg": key.alg().as_str(), "typ": "JWT"})), b64(&claims));
        let signature = key.sign_bytes(input.as_bytes()).expect("signing");
        format!("{input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature))
    };
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", "http://127.0.0.1:49152/callback"),
        ("code_verifier", VERIFIER),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", assertion.as_str()),
    ];
    server.token(&form, None)
}

#[test]
fn a_document_may_publish_its_keys_at_a_jwks_uri_which_is_fetched_when_the_client_authenticates() {
    let server = server_taking_documents();
    let host = DocumentHost::start();
    let client_id = host.client_id();
    let first = key();
    host.publish(&[&first]);
    let mut document = inspector(&client_id);
    document["token_endpoint_auth_method"] = json!("private_key_jwt");
    document["jwks_uri"] = json!(host.jwks_uri());
    host.serve(document);

    let mut browser = Browser::new();
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let first_code = answer.get("code").expect("a code").clone();
    // Signed in and consented: the next codes come straight back.
    let code = |browser: &mut Browser| {
        let seen = browser.get(&authorize_url(&server, &client_id, &[]));
        let location = seen.location.unwrap_or_else(|| panic!("a redirect: {}", seen.body));
        crate::authorize::query(&location).remove("code").expect("a code")
    };
    assert_eq!(host.key_requests.load(Ordering::SeqCst), 0, "the keys are fetched only to authenticate");
    // Without its key it is not authenticated, as a public client.
    redeem(&server, &client_id, &first_code, VERIFIER).assert_error(401, "invalid_client");
    let reply = redeem_with_key(&server, &client_id, &first, &first_code, "j1");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json["scope"], "read write");
    assert_eq!(host.key_requests.load(Ordering::SeqCst), 1);

    // The client rotates its key: an assertion under the new one makes
    // the server fetch the keys again, even one that names no kid.
    let second = key();
    host.publish(&[&first, &second]);
    let reply = redeem_with_assertion(&server, &client_id, &second, &code(&mut browser), "j2", false);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(host.key_requests.load(Ordering::SeqCst), 2, "fetched again for the new key");
    // A key it never published is refused, and does not make the server
    // fetch again so soon.
    let stranger = redeem_with_key(&server, &client_id, &key(), &code(&mut browser), "j3");
    stranger.assert_error(401, "invalid_client");
    assert_eq!(host.key_requests.load(Ordering::SeqCst), 2);
    assert_eq!(host.requests.load(Ordering::SeqCst), 1, "the document itself was fetched once");
}
