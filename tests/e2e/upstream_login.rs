//! Signing in at an upstream OpenID provider: panva's oidc-provider on
//! loopback (tests/browser/upstream-op.mjs, installed by
//! scripts/install-browser), its own login and consent pages driven over
//! HTTP, then this realm's consent and code.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::authorize::{REDIRECT, VERIFIER, admin, authorize_url, hidden, query, redeem};
use crate::support::Server;

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

#[test]
#[ignore = "needs node and oidc-provider (scripts/install-browser); make test runs it"]
fn a_user_signs_in_at_the_companys_provider_and_the_client_gets_their_token() {
    let server = Server::start_with_admin_args_env(&["--dev-loopback-fetch"], "AGENTAUTH_TEST_UPSTREAM_SECRET", SECRET);
    let callback = server.realm_url("authorize/upstream");
    let provider = Provider::start(&callback);
    let trusted = json!({
        "issuer": provider.issuer, "purposes": ["login"], "discovery": true, "algorithms": ["RS256", "ES256"],
        "login": {"client_id": "agentauth", "client_secret_env": "AGENTAUTH_TEST_UPSTREAM_SECRET",
                  "scope": "openid email profile", "label": "Example IdP"},
    });
    let (status, body) = admin(&server, "PUT", "/alpha/trusted-issuers/example", Some(trusted));
    assert_eq!(status, 201, "{body}");
    let registration = json!({
        "client_name": "Inspector", "redirect_uris": [REDIRECT], "grant_types": ["authorization_code"],
        "token_endpoint_auth_method": "none", "application_type": "native", "scope": "read",
    });
    let registered = server.register_raw(&registration.to_string());
    assert_eq!(registered.status, 201, "{}", registered.body);
    let client_id = registered.json["client_id"].as_str().expect("a client_id").to_string();

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
