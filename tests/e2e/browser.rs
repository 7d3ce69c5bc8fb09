//! The authorization code flow in a real browser: headless Chromium,
//! driven by `tests/browser/authorize.mjs`, signs a user in with the
//! keyboard, consents, and is sent back to the client's loopback redirect
//! URI; the test redeems the code with the PKCE verifier, and an agent
//! exchanges the user's token to act for them.
//!
//! Chromium (Debian's package) and playwright-core come from
//! `scripts/install-browser` (run by `make test` before these tests),
//! which plain `cargo test` does not install, hence `#[ignore]`.
//!
//! The pages' screenshots go to `target/browser/<test>/`; with
//! `AGENTAUTH_SCREENSHOTS_DIR=docs/screenshots` the public client's are
//! the README's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::authorize::{
    PASSWORD, VERIFIER, admin, authorize_url, query, redeem, redeem_as, register_agent_for_code, setup,
    use_agent_for_user_policy,
};
use crate::support::{Server, jwt_parts, node_script};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Where the screenshots of the test `name` go.
fn screenshots(name: &str, documented: bool) -> PathBuf {
    match std::env::var_os("AGENTAUTH_SCREENSHOTS_DIR") {
        Some(dir) if documented => Path::new(ROOT).join(dir),
        _ => Path::new(ROOT).join("target/browser").join(name),
    }
}

/// Opens `url` in Chromium, signs `ada` in and allows the request: the
/// query of the redirect back to the client, and whether consent was
/// asked.
fn in_chromium(url: &str, screenshots: &Path) -> (HashMap<String, String>, bool) {
    let dir = Path::new(ROOT).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "Chromium or playwright-core is missing: run scripts/install-browser (make test does)"
    );
    let args = [url.as_ref(), "ada".as_ref(), PASSWORD.as_ref(), screenshots.as_os_str()];
    let answer = node_script("authorize.mjs", &args, "the browser did not get back to the client");
    let redirect = answer["redirect"].as_str().unwrap_or_else(|| panic!("no redirect: {answer}"));
    assert!(redirect.starts_with("http://127.0.0.1:49152/callback?"), "{redirect}");
    (query(redirect), answer["consent"] == true)
}

/// The issuer of realm `alpha`, as RFC 9207's `iss` names it.
fn issuer(server: &Server) -> String {
    server.realm_url("").trim_end_matches('/').to_string()
}

#[test]
#[ignore = "needs scripts/install-browser; make test runs it"]
fn in_chromium_a_user_signs_in_consents_and_a_public_client_redeems_the_code_with_pkce() {
    let (server, client_id) = setup();
    let url = authorize_url(&server, &client_id, &[]);
    let (answer, consented) = in_chromium(&url, &screenshots("public-client", true));
    assert!(consented, "a first request asks consent");
    assert!(answer.get("code").is_some_and(|c| !c.is_empty()), "{answer:?}");
    assert_eq!(answer["state"], "s-123");
    assert_eq!(answer["iss"], issuer(&server), "RFC 9207 iss");
    assert!(!answer.contains_key("error"), "{answer:?}");

    let tokens = redeem(&server, &client_id, &answer["code"], VERIFIER);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.json["token_type"], "Bearer", "{}", tokens.body);
    assert_eq!(tokens.json["scope"], "read write", "no scope asked: the registered ones");
    assert!(tokens.json["refresh_token"].is_string(), "{}", tokens.body);
}

#[test]
#[ignore = "needs scripts/install-browser; make test runs it"]
fn in_chromium_a_user_lets_an_agent_act_for_them_through_token_exchange() {
    let server = Server::start_with_admin();
    let (status, body) = admin(&server, "POST", "/alpha/users", Some(json!({"username": "ada", "password": PASSWORD})));
    assert_eq!(status, 201, "{body}");
    use_agent_for_user_policy(&server);
    let agent = register_agent_for_code(&server);

    let url = authorize_url(&server, &agent.client_id, &[("scope", "read"), ("state", "agent-1")]);
    let (answer, consented) = in_chromium(&url, &screenshots("agent", false));
    assert!(consented, "the policy asks consent for an agent");
    assert_eq!(answer["state"], "agent-1");
    assert_eq!(answer["iss"], issuer(&server), "RFC 9207 iss");
    let tokens = redeem_as(&server, &agent, &answer["code"]);
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let user_token = tokens.json["access_token"].as_str().expect("an access token");
    let (_, claims) = jwt_parts(user_token);
    let user = claims["sub"].as_str().expect("a subject").to_string();
    assert!(user.starts_with("usr_"), "the user's token: {claims}");
    let (_, listed) = admin(&server, "GET", "/alpha/users", None);
    assert!(listed.to_string().contains(&user), "sub is ada's subject: {listed}");
    assert_eq!(claims["may_act"]["sub"], format!("(age!{})", agent.client_id), "{claims}");

    let exchanged = server.exchange(&agent, user_token, "read");
    assert_eq!(exchanged.status, 200, "{}", exchanged.body);
    let (_, claims) = jwt_parts(exchanged.json["access_token"].as_str().expect("a token"));
    assert_eq!(claims["sub"], user, "sub is the user: {claims}");
    assert_eq!(claims["act"]["sub"], format!("(age!{})", agent.client_id), "act is the agent: {claims}");
    let wider = server.exchange(&agent, user_token, "read write");
    assert_eq!(wider.status, 400, "no wider than the user granted: {}", wider.body);
}
