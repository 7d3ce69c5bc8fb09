//! The authorization code grant end to end, as a browser and an MCP-style
//! public client drive it over real HTTP: sign in, consent, code, PKCE,
//! tokens; the agent acting for the user; and every refusal the RFCs ask
//! for (code reuse, wrong verifier, wrong redirect URI, missing or plain
//! PKCE, a foreign resource, a form posted from elsewhere).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Server, jwt_parts};

/// RFC 7636 Appendix B's pair.
pub(crate) const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub(crate) const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub(crate) const REDIRECT: &str = "http://127.0.0.1/callback";
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// A browser: follows nothing by itself, keeps cookies.
pub(crate) struct Browser {
    http: ureq::Agent,
    pub(crate) cookies: HashMap<String, String>,
}

/// What a browser saw.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) body: String,
}

impl Browser {
    pub(crate) fn new() -> Self {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self { http, cookies: HashMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn keep(&mut self, response: &mut ureq::http::Response<ureq::Body>) -> Seen {
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().expect("a cookie is ASCII");
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Lax"), "{set}");
            let (name, value) = pair.split_once('=').expect("name=value");
            self.cookies.insert(name.to_string(), value.to_string());
        }
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Seen { status, location, body }
    }

    pub(crate) fn get(&mut self, url: &str) -> Seen {
        let mut response =
            self.http.get(url).header("cookie", &self.cookie_header()).call().expect("the server answers");
        self.keep(&mut response)
    }

    pub(crate) fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Seen {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let mut response = self
            .http
            .post(url)
            .header("cookie", &self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .send(body.as_str())
            .expect("the server answers");
        self.keep(&mut response)
    }
}

/// The `value` of the hidden input `name` on a page.
pub(crate) fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} on the page: {page}")) + marker.len();
    page[start..].split('"').next().unwrap_or_default().to_string()
}

/// The query parameters of a redirect.
pub(crate) fn query(location: &str) -> HashMap<String, String> {
    let url = url::Url::parse(location).expect("a redirect is a URL");
    url.query_pairs().map(|(n, v)| (n.into_owned(), v.into_owned())).collect()
}

pub(crate) fn admin(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = server.url(&format!("/admin/v1/realms{path}"));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut response = match (method, body) {
        ("POST", Some(body)) => http
            .post(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.to_string().as_str()),
        ("PUT", Some(body)) => http
            .put(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.to_string().as_str()),
        ("PATCH", Some(body)) => http
            .patch(&url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(body.to_string().as_str()),
        ("POST", None) => http.post(&url).header("authorization", &auth).send_empty(),
        ("GET", _) => http.get(&url).header("authorization", &auth).call(),
        ("DELETE", _) => http.delete(&url).header("authorization", &auth).call(),
        other => panic!("{other:?}"),
    }
    .expect("the admin API answers");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A server with a user `ada`, and an MCP-style public client registered
/// for the code grant with a loopback redirect URI.
pub(crate) fn setup() -> (Server, String) {
    let server = Server::start_with_admin();
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "ada", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    let client_id = register_public_client(&server, "read write");
    (server, client_id)
}

/// Registers "Inspector", an MCP-style public client of the code grant
/// (with refresh tokens) on a loopback redirect URI, for `scope`; its
/// client id.
pub(crate) fn register_public_client(server: &Server, scope: &str) -> String {
    let registration = json!({
        "client_name": "Inspector",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
        "scope": scope,
    });
    let registered = server.register_raw(&registration.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    assert!(registered.json.get("client_secret").is_none(), "a public client gets no secret");
    registered.json["client_id"].as_str().expect("a client_id").to_string()
}

pub(crate) fn authorize_url(server: &Server, client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", "http://127.0.0.1:49152/callback"),
        ("state", "s-123"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in extra {
        params.retain(|(n, _)| n != name);
        if !value.is_empty() {
            params.push((name, value));
        }
    }
    let query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    format!("{}?{query}", server.realm_url("authorize"))
}

/// Signs `ada` in and allows the request: the redirect back to the client.
pub(crate) fn sign_in_and_allow(browser: &mut Browser, server: &Server, url: &str) -> HashMap<String, String> {
    sign_in_as_and_allow(browser, server, url, "ada")
}

/// Signs `username` (whose password is [`PASSWORD`]) in and allows the
/// request: the redirect back to the client.
pub(crate) fn sign_in_as_and_allow(
    browser: &mut Browser,
    server: &Server,
    url: &str,
    username: &str,
) -> HashMap<String, String> {
    let login = browser.get(url);
    assert_eq!(login.status, 200, "{}", login.body);
    assert!(login.body.contains("<form method=\"post\">"), "{}", login.body);
    let endpoint = server.realm_url("authorize");
    let pending = hidden(&login.body, "pending");
    let fields = [("pending", pending.as_str()), ("action", "login"), ("username", username), ("password", PASSWORD)];
    let consent = browser.post(&endpoint, &fields);
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Inspector") && consent.body.contains("read"), "{}", consent.body);
    let pending = hidden(&consent.body, "pending");
    let back = browser.post(&endpoint, &[("pending", pending.as_str()), ("action", "allow")]);
    assert_eq!(back.status, 303, "{}", back.body);
    let location = back.location.expect("a redirect");
    assert!(location.starts_with("http://127.0.0.1:49152/callback?"), "{location}");
    query(&location)
}

pub(crate) fn redeem(server: &Server, client_id: &str, code: &str, verifier: &str) -> crate::support::Reply {
    server.post_form(
        "access_token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:49152/callback"),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ],
        None,
    )
}

/// Redeems `code` with the PKCE verifier as the confidential `agent`
/// (client_secret_basic).
pub(crate) fn redeem_as(server: &Server, agent: &crate::support::Credentials, code: &str) -> crate::support::Reply {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", "http://127.0.0.1:49152/callback"),
        ("code_verifier", VERIFIER),
    ];
    server.post_form("access_token", &form, Some(agent))
}

/// Pushes the Rust agent-for-user policy and makes it realm `alpha`'s
/// authorize plugin.
pub(crate) fn use_agent_for_user_policy(server: &Server) {
    // A folder of its own: tests running at once each write their copy.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let plugin = dir.path().join("agent-for-user.wasm");
    std::fs::write(&plugin, agentauth_plugins::AGENT_FOR_USER).expect("writing the plugin");
    let file = plugin.to_string_lossy().into_owned();
    let push = [
        "plugin",
        "push",
        "--server",
        &server.base,
        "--realm",
        "alpha",
        "--name",
        "agent-for-user",
        "--hook",
        "authorize",
        &file,
    ];
    let (ok, out, err) = crate::support::cli(&push, ADMIN_TOKEN);
    assert!(ok, "{out} {err}");
    let (status, body) = admin(server, "PATCH", "/alpha", Some(json!({"authorize_plugin": "agent-for-user"})));
    assert_eq!(status, 200, "{body}");
}

/// An AI agent registered for the code grant and the exchange, with the
/// loopback redirect URI; the seed's DCR policy gives it JWTs.
pub(crate) fn register_agent_for_code(server: &Server) -> crate::support::Credentials {
    let mut registration = crate::support::seed_registration();
    registration["grant_types"] =
        json!(["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"]);
    registration["response_types"] = json!(["code"]);
    registration["redirect_uris"] = json!([REDIRECT]);
    registration["application_type"] = json!("native");
    let registered = server.register_raw(&registration.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    crate::support::Credentials::from_registration(&registered.json)
}

#[test]
fn a_user_signs_in_consents_and_a_public_client_gets_their_tokens_with_pkce() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    assert_eq!(answer["state"], "s-123");
    assert_eq!(answer["iss"], server.realm_url("").trim_end_matches('/'), "RFC 9207 iss");
    let tokens = redeem(&server, &client_id, &answer["code"], VERIFIER);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.json["scope"], "read write", "no scope asked: the registered ones");
    let access = tokens.json["access_token"].as_str().expect("an access token");
    let introspected = server.post_form("introspect", &[("token", access)], None);
    // Public clients cannot introspect: only the realm's confidential ones.
    assert_eq!(introspected.status, 401, "{}", introspected.body);

    // The refresh token rotates for a public client.
    let refresh = tokens.json["refresh_token"].as_str().expect("a refresh token");
    let refreshed = server.post_form(
        "access_token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &client_id)],
        None,
    );
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    assert_ne!(refreshed.json["refresh_token"], refresh);

    // Signed in and consented: the next request goes straight back.
    let again = browser.get(&authorize_url(&server, &client_id, &[("state", "s-2")]));
    assert_eq!(again.status, 303, "{}", again.body);
    let answer = query(&again.location.expect("a redirect"));
    assert_eq!(answer["state"], "s-2");
    assert_eq!(redeem(&server, &client_id, &answer["code"], VERIFIER).status, 200);
}

#[test]
fn a_code_used_twice_is_refused_and_revokes_what_it_issued() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let first = redeem(&server, &client_id, &answer["code"], VERIFIER);
    assert_eq!(first.status, 200, "{}", first.body);
    redeem(&server, &client_id, &answer["code"], VERIFIER).assert_error(400, "invalid_grant");
    let refresh = first.json["refresh_token"].as_str().expect("a refresh token");
    let refreshed = server.post_form(
        "access_token",
        &[("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", &client_id)],
        None,
    );
    refreshed.assert_error(400, "invalid_grant");
}

#[test]
fn a_wrong_verifier_or_redirect_uri_is_invalid_grant_and_spends_nothing() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let code = &answer["code"];
    redeem(&server, &client_id, code, &"x".repeat(43)).assert_error(400, "invalid_grant");
    redeem(&server, &client_id, code, "short").assert_error(400, "invalid_request");
    let wrong_uri = server.post_form(
        "access_token",
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:1/elsewhere"),
            ("client_id", &client_id),
            ("code_verifier", VERIFIER),
        ],
        None,
    );
    wrong_uri.assert_error(400, "invalid_grant");
    assert_eq!(redeem(&server, &client_id, code, VERIFIER).status, 200, "the right holder still redeems it");
}

#[test]
fn requests_without_s256_pkce_or_for_a_foreign_resource_are_sent_back_with_their_errors() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    for (extra, error) in [
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge_method", "")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "admin")], "invalid_scope"),
        (vec![("resource", "https://elsewhere.example/mcp")], "invalid_target"),
    ] {
        let seen = browser.get(&authorize_url(&server, &client_id, &extra));
        assert_eq!(seen.status, 303, "{extra:?}: {}", seen.body);
        let answer = query(&seen.location.expect("a redirect"));
        assert_eq!(answer["error"], error, "{extra:?}");
        assert_eq!(answer["state"], "s-123", "{extra:?}");
        assert!(answer.contains_key("iss"), "{extra:?}");
    }
}

#[test]
fn an_unregistered_redirect_uri_or_unknown_client_is_shown_never_redirected() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    for url in [
        authorize_url(&server, &client_id, &[("redirect_uri", "https://evil.example/callback")]),
        authorize_url(&server, &client_id, &[("redirect_uri", "http://127.0.0.1:8080/other")]),
        authorize_url(&server, "no-such-client", &[]),
    ] {
        let seen = browser.get(&url);
        assert_eq!((seen.status, seen.location.as_deref()), (400, None), "{url}: {}", seen.body);
        assert!(seen.body.contains("cannot be completed"), "{}", seen.body);
    }
}

#[test]
fn a_form_posted_without_the_browsers_csrf_cookie_is_refused() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    let login = browser.get(&authorize_url(&server, &client_id, &[]));
    let pending = hidden(&login.body, "pending");
    // Another site's page posts the form: the browser sends no cookie
    // (SameSite=Lax), or the attacker's own.
    let mut elsewhere = Browser::new();
    elsewhere.cookies.insert("agentauth_csrf".into(), "forged".into());
    let fields = [("pending", pending.as_str()), ("action", "login"), ("username", "ada"), ("password", PASSWORD)];
    let refused = elsewhere.post(&server.realm_url("authorize"), &fields);
    assert_eq!((refused.status, refused.location.as_deref()), (400, None), "{}", refused.body);
    // A wrong password is one answer for all, and keeps the form.
    let wrong =
        [("pending", pending.as_str()), ("action", "login"), ("username", "ada"), ("password", "wrong password")];
    let failed = browser.post(&server.realm_url("authorize"), &wrong);
    assert_eq!(failed.status, 401, "{}", failed.body);
    assert!(failed.body.contains("role=\"alert\""), "{}", failed.body);
}

#[test]
fn the_agent_acts_for_the_user_through_the_authorize_hook_and_token_exchange() {
    let server = Server::start_with_admin();
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "ada", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    use_agent_for_user_policy(&server);
    let agent = register_agent_for_code(&server);

    let mut browser = Browser::new();
    let url = authorize_url(&server, &agent.client_id, &[("scope", "read")]);
    let login = browser.get(&url);
    let pending = hidden(&login.body, "pending");
    let fields = [("pending", pending.as_str()), ("action", "login"), ("username", "ada"), ("password", PASSWORD)];
    let consent = browser.post(&server.realm_url("authorize"), &fields);
    let pending = hidden(&consent.body, "pending");
    let back = browser.post(&server.realm_url("authorize"), &[("pending", pending.as_str()), ("action", "allow")]);
    let answer = query(&back.location.expect("a redirect"));
    let tokens = redeem_as(&server, &agent, &answer["code"]);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let user_token = tokens.json["access_token"].as_str().expect("an access token");
    let (_, claims) = jwt_parts(user_token);
    assert!(claims["sub"].as_str().is_some_and(|s| s.starts_with("usr_")), "{claims}");
    assert_eq!(claims["may_act"], json!({"client_id": agent.client_id, "sub": format!("(age!{})", agent.client_id)}));

    let exchanged = server.exchange(&agent, user_token, "read");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let (_, claims) = jwt_parts(exchanged.json["access_token"].as_str().expect("a token"));
    assert!(claims["sub"].as_str().is_some_and(|s| s.starts_with("usr_")), "sub is the user: {claims}");
    assert_eq!(claims["act"]["sub"], format!("(age!{})", agent.client_id), "act is the agent: {claims}");
    let wider = server.exchange(&agent, user_token, "read write");
    assert_eq!(wider.status, 400, "no wider than the user granted: {}", wider.body);

    // What was derived dies with the user's token.
    let exchanged_token = exchanged.json["access_token"].as_str().expect("a token");
    assert_eq!(server.introspect(&agent, exchanged_token).json["active"], true);
    assert_eq!(server.revoke(&agent, user_token).status, 200);
    assert_eq!(server.introspect(&agent, user_token).json["active"], false);
    assert_eq!(server.introspect(&agent, exchanged_token).json["active"], false, "derived from a revoked token");
}

#[test]
fn revoking_consent_or_disabling_the_user_ends_what_the_client_holds() {
    let (server, client_id) = setup();
    let mut browser = Browser::new();
    let answer = sign_in_and_allow(&mut browser, &server, &authorize_url(&server, &client_id, &[]));
    let tokens = redeem(&server, &client_id, &answer["code"], VERIFIER);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let refresh = tokens.json["refresh_token"].as_str().expect("a refresh token").to_string();

    let (status, listed) = admin(&server, "GET", "/alpha/users?username=ada", None);
    assert_eq!(status, 200, "{listed}");
    let subject = listed["users"][0]["subject"].as_str().expect("ada's subject").to_string();
    let (status, consents) = admin(&server, "GET", &format!("/alpha/users/{subject}/consents"), None);
    assert_eq!(status, 200, "{consents}");
    assert_eq!(consents["consents"][0]["client_id"], client_id.as_str());
    assert_eq!(consents["consents"][0]["scope"], "read write");

    let (status, _) = admin(&server, "DELETE", &format!("/alpha/users/{subject}/consents/{client_id}"), None);
    assert_eq!(status, 204);
    let refreshed = server.post_form(
        "access_token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", &client_id)],
        None,
    );
    refreshed.assert_error(400, "invalid_grant");
    // The user is still signed in, but must consent again.
    let again = browser.get(&authorize_url(&server, &client_id, &[]));
    assert_eq!(again.status, 200, "the consent page: {}", again.body);
    assert!(again.body.contains("Allow"), "{}", again.body);
    let pending = hidden(&again.body, "pending");
    let back = browser.post(&server.realm_url("authorize"), &[("pending", pending.as_str()), ("action", "allow")]);
    let answer = query(&back.location.expect("a redirect"));
    let tokens = redeem(&server, &client_id, &answer["code"], VERIFIER);
    let refresh = tokens.json["refresh_token"].as_str().expect("a refresh token").to_string();

    // Disabling the user ends it too, and their session.
    let (status, _) = admin(&server, "POST", &format!("/alpha/users/{subject}/disable"), Some(json!({})));
    assert_eq!(status, 200);
    let refreshed = server.post_form(
        "access_token",
        &[("grant_type", "refresh_token"), ("refresh_token", &refresh), ("client_id", &client_id)],
        None,
    );
    refreshed.assert_error(400, "invalid_grant");
    let signed_out = browser.get(&authorize_url(&server, &client_id, &[]));
    assert!(signed_out.body.contains("Sign in"), "a disabled user's session ends: {}", signed_out.body);
}

#[test]
fn a_realm_brands_its_pages_without_a_rebuild_and_cannot_break_out_of_the_style() {
    let (server, client_id) = setup();
    let branding = json!({"page_title": "Acme <Agents>", "page_css": "main{border-top:4px solid #c60}"});
    let (status, body) = admin(&server, "PATCH", "/alpha", Some(branding));
    assert_eq!(status, 200, "{body}");
    let mut browser = Browser::new();
    let login = browser.get(&authorize_url(&server, &client_id, &[]));
    assert!(login.body.contains("<p class=\"brand\">Acme &lt;Agents&gt;</p>"), "{}", login.body);
    assert!(login.body.contains("main{border-top:4px solid #c60}</style>"), "{}", login.body);
    assert!(login.body.contains("<strong>Inspector</strong>"), "the client by its name: {}", login.body);
    for css in ["</style><script>alert(1)</script>", "a{content:'\\3c'}"] {
        let (status, body) = admin(&server, "PATCH", "/alpha", Some(json!({"page_css": css})));
        assert_eq!(status, 400, "{css}: {body}");
    }
}
