//! Signing in at an upstream OpenID provider: panva's oidc-provider on
//! loopback (tests/browser/upstream-op.mjs, installed by
//! scripts/install-browser), its own login and consent pages driven over
//! HTTP, then this realm's consent and code.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use agentauth_jose::{Algorithm, SigningKey, generate_pkcs8, sign};
use agentauth_service::grant::authorization_code::s256;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::authorize::{REDIRECT, VERIFIER, admin, authorize_url, hidden, query, redeem};
use crate::support::{Server, jwt_parts, node_script};

const SECRET: &str = "upstream-client-secret-for-tests";

/// The provider, killed when dropped.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(redirect_uri: &str) -> Self {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
        let mut child = Command::new("node")
            .arg("upstream-op.mjs")
            .current_dir(dir)
            .env("PORT", "0")
            .env("CLIENT_ID", "agentauth")
            .env("CLIENT_SECRET", SECRET)
            .env("REDIRECT_URI", redirect_uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs the provider (scripts/install-browser installs it)");
        let stdout = child.stdout.take().expect("its output");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = loop {
            let line = lines.next().expect("the provider starts").expect("a line");
            if let Some(issuer) = line.strip_prefix("issuer ") {
                break issuer.to_string();
            }
        };
        // It writes notices later: a closed pipe would end it.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, issuer }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser that keeps each origin's cookies and does not follow
/// redirects.
struct Agent {
    http: ureq::Agent,
    jars: HashMap<String, HashMap<String, String>>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Agent {
    fn new() -> Self {
        // A connection per request: the provider closes idle ones early.
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(0)
            .build()
            .into();
        Self { http, jars: HashMap::new() }
    }

    fn origin(url: &str) -> String {
        url.split('/').take(3).collect::<Vec<_>>().join("/")
    }

    fn cookies(&self, url: &str) -> String {
        let jar = self.jars.get(&Self::origin(url));
        jar.map(|j| j.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")).unwrap_or_default()
    }

    fn keep(&mut self, url: &str, response: &mut ureq::http::Response<ureq::Body>) -> Page {
        let jar = self.jars.entry(Self::origin(url)).or_default();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap_or_default().split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                jar.insert(name.to_string(), value.to_string());
            }
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| if l.starts_with('/') { format!("{}{l}", Self::origin(url)) } else { l.to_string() });
        let status = response.status().as_u16();
        Page { status, location, body: response.body_mut().read_to_string().unwrap_or_default() }
    }

    fn get(&mut self, url: &str) -> Page {
        let cookies = self.cookies(url);
        let mut response =
            self.http.get(url).header("cookie", &cookies).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
        self.keep(url, &mut response)
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let cookies = self.cookies(url);
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut response = self
            .http
            .post(url)
            .header("cookie", &cookies)
            .header("content-type", "application/x-www-form-urlencoded")
            .send(body.as_str())
            .expect("an answer");
        self.keep(url, &mut response)
    }

    /// Follows redirects from `page` while they stay off `stop`'s origin
    /// prefix, returning the first page that is not a redirect, or the
    /// redirect to `stop`.
    fn follow(&mut self, mut page: Page, stop: &str) -> Page {
        for _ in 0..10 {
            match page.location.clone() {
                Some(next) if (300..400).contains(&page.status) && !next.starts_with(stop) => page = self.get(&next),
                _ => return page,
            }
        }
        panic!("too many redirects");
    }
}

/// The form's `action` attribute on an oidc-provider page.
fn form_action(page: &str) -> String {
    let start = page.find("action=\"").expect("a form") + "action=\"".len();
    page[start..].split('"').next().unwrap_or_default().to_string()
}

/// A server that may fetch from loopback, holding the realm's secret at
/// the provider in `AGENTAUTH_TEST_UPSTREAM_SECRET`.
fn upstream_server() -> Server {
    Server::start_with_admin_args_env(&["--dev-loopback-fetch"], "AGENTAUTH_TEST_UPSTREAM_SECRET", SECRET)
}

/// Makes `issuer` the realm's provider `example`, labelled "Example IdP",
/// where the realm is the client `agentauth`.
fn trust(server: &Server, issuer: &str) {
    trust_as(server, "example", issuer);
}

/// Makes `issuer` the realm's provider `name`, as [`trust`] does.
fn trust_as(server: &Server, name: &str, issuer: &str) {
    let label = if name == "example" { "Example IdP" } else { name };
    let trusted = json!({
        "issuer": issuer, "purposes": ["login"], "discovery": true, "algorithms": ["RS256", "ES256"],
        "login": {"client_id": "agentauth", "client_secret_env": "AGENTAUTH_TEST_UPSTREAM_SECRET",
                  "scope": "openid email profile", "label": label},
    });
    let (status, body) = admin(server, "PUT", &format!("/alpha/trusted-issuers/{name}"), Some(trusted));
    assert_eq!(status, 201, "{body}");
}

/// Registers the public client "Inspector" (an MCP inspector on
/// loopback); its client id.
fn register_inspector(server: &Server) -> String {
    let registration = json!({
        "client_name": "Inspector", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "none", "application_type": "native", "scope": "read",
    });
    let registered = server.register_raw(&registration.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    registered.json["client_id"].as_str().expect("a client_id").to_string()
}

#[test]
#[ignore = "needs node and oidc-provider (scripts/install-browser); make test runs it"]
fn a_user_signs_in_at_the_companys_provider_and_the_client_gets_their_token() {
    let server = upstream_server();
    let callback = server.realm_url("authorize/upstream");
    let provider = Provider::start(&callback);
    trust(&server, &provider.issuer);
    let client_id = register_inspector(&server);

    let mut browser = Agent::new();
    let login = browser.get(&authorize_url(&server, &client_id, &[]));
    assert!(login.body.contains("Sign in with Example IdP"), "{}", login.body);
    let pending = hidden(&login.body, "pending");
    let endpoint = server.realm_url("authorize");
    let away = browser.post(&endpoint, &[("pending", &pending), ("action", "upstream"), ("upstream", "example")]);
    assert_eq!(away.status, 303, "{}", away.body);
    assert!(away.location.as_deref().is_some_and(|l| l.starts_with(&provider.issuer)), "{:?}", away.location);

    // The provider's own pages: sign in as alice, then consent.
    let page = browser.follow(away, &callback);
    assert!(page.body.contains("name=\"login\""), "{}", page.body);
    let page = browser.post(&form_action(&page.body), &[("prompt", "login"), ("login", "alice"), ("password", "x")]);
    let page = browser.follow(page, &callback);
    let page = if page.body.contains("value=\"consent\"") {
        let answered = browser.post(&form_action(&page.body), &[("prompt", "consent")]);
        browser.follow(answered, &callback)
    } else {
        page
    };
    let back = page.location.clone().expect("back to the realm");
    assert!(back.starts_with(&callback), "{back}");

    // The same answer in another browser (login CSRF: an attacker's code
    // planted in a victim's browser) finds no cookie of the sign-in.
    let elsewhere = Agent::new().get(&back);
    assert_eq!(elsewhere.status, 400, "{}", elsewhere.body);
    assert!(elsewhere.body.contains("another browser"), "{}", elsewhere.body);

    // Back here: signed in, this realm asks consent, and the client gets
    // a code for the user the provider vouched for.
    let consent = browser.get(&back);
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Inspector"), "{}", consent.body);
    let pending = hidden(&consent.body, "pending");
    let answer = browser.post(&endpoint, &[("pending", &pending), ("action", "allow")]);
    let location =
        answer.location.unwrap_or_else(|| panic!("a redirect to the client: {} {}", answer.status, answer.body));
    let code = query(&location).remove("code").unwrap_or_else(|| panic!("a code: {location}"));
    let tokens = redeem(&server, &client_id, &code, VERIFIER);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    // The user is the realm's now: listed, with the provider's name and
    // email, and the admin's to disable.
    let (status, found) = admin(&server, "GET", "/alpha/users?username=alice%40example.com%2Bexample", None);
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["users"][0]["email"], "alice@example.com", "{found}");
}

#[test]
#[ignore = "needs Chromium, node and oidc-provider (scripts/install-browser); make test runs it"]
fn in_chromium_a_realm_without_passwords_signs_its_users_in_at_their_provider() {
    let server = upstream_server();
    // No local login without a provider to sign in at.
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"local_login": false})));
    assert_eq!(status, 400, "{body}");
    assert!(body["error_description"].as_str().is_some_and(|d| d.contains("local_login")), "{body}");
    let provider = Provider::start(&server.realm_url("authorize/upstream"));
    trust(&server, &provider.issuer);
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"local_login": false})));
    assert_eq!(status, 200, "{body}");
    // ... and the last provider cannot go while it is off.
    let (status, body) = admin(&server, "DELETE", "/alpha/trusted-issuers/example", None);
    assert_eq!(status, 400, "{body}");
    let client_id = register_inspector(&server);
    let url = authorize_url(&server, &client_id, &[]);

    // A password posted anyway is refused unchecked.
    let mut browser = Agent::new();
    let login = browser.get(&url);
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(!login.body.contains("type=\"password\""), "{}", login.body);
    let pending = hidden(&login.body, "pending");
    let endpoint = server.realm_url("authorize");
    let posted =
        browser.post(&endpoint, &[("pending", &pending), ("action", "login"), ("username", "ada"), ("password", "x")]);
    assert_eq!(posted.status, 403, "{}", posted.body);
    assert!(posted.body.contains("identity providers only"), "{}", posted.body);

    // In Chromium: the provider's button has the focus, Enter leads to
    // the provider, alice signs in there and allows the request here.
    let screenshots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/browser/upstream-login");
    let args = [url.as_str(), provider.issuer.as_str(), "Example IdP", "alice", screenshots];
    let answer = node_script("upstream-login.mjs", &args, "the browser did not get back to the client");
    assert_eq!(answer["password_form"], false, "{answer}");
    let redirect = answer["redirect"].as_str().unwrap_or_else(|| panic!("no redirect: {answer}"));
    let code = query(redirect).remove("code").unwrap_or_else(|| panic!("a code: {redirect}"));
    let tokens = redeem(&server, &client_id, &code, VERIFIER);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let access = tokens.json["access_token"].as_str().expect("an access token");
    let claims = jwt_parts(access).1;
    assert!(claims["sub"].as_str().is_some_and(|s| s.starts_with("usr_")), "{claims}");
}

/// An OpenID provider the test plays itself, for the answers a real one
/// would not give: its discovery document, JWKS and token endpoint on
/// loopback. The test reads the authorization request the realm sent the
/// browser to, and makes the provider's answer; the token endpoint answers
/// a code with the ID token the test prepared for it, after checking the
/// realm's client secret (Basic), redirect URI and PKCE verifier.
struct FakeProvider {
    issuer: String,
    key: SigningKey,
    codes: Arc<Mutex<HashMap<String, Prepared>>>,
}

/// What the token endpoint gives for a code.
struct Prepared {
    challenge: String,
    id_token: String,
}

impl FakeProvider {
    fn start(callback: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let issuer = format!("http://{}", listener.local_addr().expect("an address"));
        let key = es256_key();
        let codes: Arc<Mutex<HashMap<String, Prepared>>> = Arc::default();
        let discovery = json!({
            "issuer": issuer, "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        });
        let jwks = json!({"keys": [key.verifying_key().jwk()]});
        let (codes_served, callback) = (codes.clone(), callback.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (path, headers, body) = read_request(&stream);
                let (status, answer) = match path.as_str() {
                    "/.well-known/openid-configuration" => (200, discovery.clone()),
                    "/jwks" => (200, jwks.clone()),
                    "/token" => redeem_fake(&codes_served, &headers, &body, &callback),
                    _ => (404, json!({"error": "not_found"})),
                };
                let body = answer.to_string();
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { issuer, key, codes }
    }

    /// The ID token `claims` signed by `key`, as the answer to the
    /// authorization request `request` (the URL the realm sent the browser
    /// to): the callback's query, with a fresh code.
    fn answer(&self, request: &str, claims: &Value, key: Option<&SigningKey>) -> Vec<(String, String)> {
        self.answer_with(request, sign(key.unwrap_or(&self.key), "JWT", claims).expect("signing"))
    }

    /// The answer to `request` whose code redeems for `id_token`.
    fn answer_with(&self, request: &str, id_token: String) -> Vec<(String, String)> {
        let params = query(request);
        let code = format!("code-{}", self.codes.lock().expect("codes").len());
        let prepared = Prepared { challenge: params["code_challenge"].clone(), id_token };
        self.codes.lock().expect("codes").insert(code.clone(), prepared);
        vec![("code".into(), code), ("state".into(), params["state"].clone()), ("iss".into(), self.issuer.clone())]
    }

    /// An ID token's claims for `sub`, right in every way for `request`.
    fn claims(&self, request: &str, sub: &str) -> Value {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        json!({
            "iss": self.issuer, "sub": sub, "aud": "agentauth", "iat": now, "exp": now + 300,
            "nonce": query(request)["nonce"], "email": format!("{sub}@example.com"),
        })
    }
}

fn es256_key() -> SigningKey {
    SigningKey::from_pkcs8(Algorithm::Es256, &generate_pkcs8(Algorithm::Es256).expect("a key")).expect("a key")
}

/// Reads one HTTP/1.1 request: its path, headers (lowercase names) and
/// body.
fn read_request(stream: &TcpStream) -> (String, HashMap<String, String>, String) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let path = line.split(' ').nth(1).unwrap_or_default().split('?').next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_or(true, |n| n <= 2) {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    (path, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The fake provider's token endpoint: the prepared ID token for a code
/// redeemed once, by the realm's client with its secret, with the
/// verifier of the code's challenge.
fn redeem_fake(
    codes: &Mutex<HashMap<String, Prepared>>,
    headers: &HashMap<String, String>,
    body: &str,
    callback: &str,
) -> (u16, Value) {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let basic = format!("Basic {}", STANDARD.encode(format!("agentauth:{SECRET}")));
    if headers.get("authorization") != Some(&basic) {
        return (401, json!({"error": "invalid_client"}));
    }
    let prepared = form.get("code").and_then(|c| codes.lock().expect("codes").remove(c));
    let Some(prepared) = prepared else { return (400, json!({"error": "invalid_grant"})) };
    let verifier = form.get("code_verifier").map(String::as_str).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("authorization_code")
        || form.get("redirect_uri").map(String::as_str) != Some(callback)
        || s256(verifier) != prepared.challenge
    {
        return (400, json!({"error": "invalid_grant", "error_description": "PKCE or redirect_uri"}));
    }
    (200, json!({"access_token": "upstream-at", "token_type": "Bearer", "id_token": prepared.id_token}))
}

/// How the fake provider's answer goes wrong.
enum Tamper {
    /// The ID token's claims, changed so.
    Claims(fn(&mut Value)),
    /// The ID token signed by a key the provider never published.
    UnknownKey,
    /// `error=access_denied`: the user did not sign in there.
    Refused,
    /// The answer's `iss` (RFC 9207) names another provider.
    MixUp,
}

impl Tamper {
    /// The answer to the authorization request `request`, gone wrong.
    fn answer(&self, provider: &FakeProvider, request: &str) -> Vec<(String, String)> {
        let mut claims = provider.claims(request, "mallory");
        match self {
            Self::Claims(change) => {
                change(&mut claims);
                provider.answer(request, &claims, None)
            }
            Self::UnknownKey => provider.answer(request, &claims, Some(&es256_key())),
            Self::Refused => {
                vec![("error".into(), "access_denied".into()), ("state".into(), query(request)["state"].clone())]
            }
            Self::MixUp => {
                let mut answer = provider.answer(request, &claims, None);
                answer.retain(|(n, _)| n != "iss");
                answer.push(("iss".into(), "https://other.example".into()));
                answer
            }
        }
    }
}

/// Starts a sign-in at `url` in a fresh browser, choosing `provider` (the
/// realm's `example`), and brings the browser back with the answer
/// `answer` makes from the request the realm sent the provider: the page
/// the realm then shows.
fn sign_in_at(
    server: &Server,
    provider: &FakeProvider,
    url: &str,
    answer: &dyn Fn(&str) -> Vec<(String, String)>,
) -> Page {
    let (endpoint, callback) = (server.realm_url("authorize"), server.realm_url("authorize/upstream"));
    let mut browser = Agent::new();
    let login = browser.get(url);
    let pending = hidden(&login.body, "pending");
    let away = browser.post(&endpoint, &[("pending", &pending), ("action", "upstream"), ("upstream", "example")]);
    let request = away.location.clone().unwrap_or_else(|| panic!("to the provider: {}", away.body));
    assert!(request.starts_with(&format!("{}/authorize?", provider.issuer)), "{request}");
    let params = query(&request);
    assert_eq!(params["client_id"], "agentauth");
    assert_eq!(params["redirect_uri"], callback);
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params["scope"].split(' ').any(|s| s == "openid"), "{request}");
    let back: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(answer(&request)).finish();
    browser.get(&format!("{callback}?{back}"))
}

#[test]
fn the_realms_assertion_policy_decides_who_signs_in_upstream() {
    let server = upstream_server();
    let provider = FakeProvider::start(&server.realm_url("authorize/upstream"));
    trust(&server, &provider.issuer);
    crate::trust::use_trusted_domains_policy(&server);
    let client_id = register_inspector(&server);
    let url = authorize_url(&server, &client_id, &[]);
    let provider = &provider;
    let verified = |sub: &'static str, email: &'static str| {
        move |request: &str| {
            let mut claims = provider.claims(request, sub);
            claims["email"] = json!(email);
            claims["email_verified"] = json!(true);
            provider.answer(request, &claims, None)
        }
    };

    // A verified user of a trusted domain: signed in, asked to consent.
    let alice = sign_in_at(&server, provider, &url, &verified("alice", "alice@example.com"));
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert!(alice.body.contains("Allow access?"), "{}", alice.body);
    // Another domain, or an address the provider did not verify: the
    // login page again, in the policy's words, and no user made.
    let mallory = sign_in_at(&server, provider, &url, &verified("mallory", "mallory@evil.example"));
    let unverified = sign_in_at(&server, provider, &url, &|request: &str| {
        provider.answer(request, &provider.claims(request, "eve"), None)
    });
    for page in [&mallory, &unverified] {
        assert_eq!(page.status, 403, "{}", page.body);
        assert!(page.body.contains("only verified users of a trusted email domain"), "{}", page.body);
        assert!(!page.body.contains("Allow access?"), "{}", page.body);
    }
    let (_, users) = admin(&server, "GET", "/alpha/users", None);
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1), "only alice: {users}");
}

#[test]
fn the_provider_answers_that_do_not_hold_sign_no_one_in() {
    let server = upstream_server();
    let callback = server.realm_url("authorize/upstream");
    let provider = FakeProvider::start(&callback);
    trust(&server, &provider.issuer);
    let client_id = register_inspector(&server);
    let url = authorize_url(&server, &client_id, &[]);
    let users = |server: &Server| admin(server, "GET", "/alpha/users", None).1["users"].as_array().map_or(0, Vec::len);

    let sign_in = |answer: &dyn Fn(&str) -> Vec<(String, String)>| sign_in_at(&server, &provider, &url, answer);

    // The harness holds: a right answer signs bob in.
    let good = sign_in(&|request| provider.answer(request, &provider.claims(request, "bob"), None));
    assert_eq!(good.status, 200, "{}", good.body);
    assert!(good.body.contains("Allow access?"), "{}", good.body);
    assert_eq!(users(&server), 1);

    let refusals: [(&str, Tamper, &str); 8] = [
        ("for another client", Tamper::Claims(|c| c["aud"] = json!("someone-else")), "aud"),
        ("for another sign-in", Tamper::Claims(|c| c["nonce"] = json!("seen-elsewhere")), "not for this sign-in"),
        (
            "without a nonce",
            Tamper::Claims(|c| drop(c.as_object_mut().and_then(|o| o.remove("nonce")))),
            "not for this sign-in",
        ),
        ("from another issuer", Tamper::Claims(|c| c["iss"] = json!("https://evil.example")), "iss"),
        ("expired", Tamper::Claims(|c| (c["iat"], c["exp"]) = (json!(1_000_000), json!(1_000_300))), "exp"),
        ("signed by an unknown key", Tamper::UnknownKey, "key"),
        ("refused at the provider", Tamper::Refused, "did not sign you in"),
        ("naming another issuer (mix-up)", Tamper::MixUp, "another provider"),
    ];
    for (case, tamper, why) in &refusals {
        let page = sign_in(&|request| tamper.answer(&provider, request));
        // The login page again, saying why, for another try.
        assert_eq!(page.status, 403, "{case}: {}", page.body);
        assert!(page.body.contains("role=\"alert\""), "{case}: {}", page.body);
        assert!(page.body.contains(why), "{case}: expected {why:?} in {}", page.body);
        assert!(page.body.contains("Sign in with Example IdP"), "{case}: {}", page.body);
        assert!(!page.body.contains("Allow access?"), "{case}: {}", page.body);
    }
    assert_eq!(users(&server), 1, "no user was made for a refused answer");

    // Another provider of the realm's ID token, right in every other way
    // (its key, its issuer, this sign-in's nonce), relayed by this one.
    let other = FakeProvider::start(&callback);
    trust_as(&server, "other", &other.issuer);
    let relayed = sign_in(&|request| {
        let mut claims = provider.claims(request, "mallory");
        claims["iss"] = json!(other.issuer);
        let id_token = sign(&other.key, "JWT", &claims).expect("signing");
        provider.answer_with(request, id_token)
    });
    assert_eq!(relayed.status, 403, "{}", relayed.body);
    assert!(relayed.body.contains("issued by another provider"), "{}", relayed.body);
    assert_eq!(users(&server), 1);

    // A code the provider refuses (the realm's PKCE verifier not matching,
    // say) is no sign-in either.
    let unredeemable = sign_in(&|request| {
        let mut answer = provider.answer(request, &provider.claims(request, "mallory"), None);
        answer[0].1 = "a-code-never-issued".into();
        answer
    });
    assert_eq!(unredeemable.status, 503, "{}", unredeemable.body);
    assert!(unredeemable.body.contains("could not be redeemed"), "{}", unredeemable.body);
    assert_eq!(users(&server), 1);
}
