//! The server without a socket: policies that misbehave fail closed, and
//! nothing half-done is stored.

use std::sync::Arc;

use agentauth_plugin_host::HookKind;
use agentauth_store::{Store, TokenKind};
use agentauth_testkit::{Credentials, Form, Registration, TOKEN_EXCHANGE, jwt_parts, realm_path};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::{AdminToken, App, Config, RealmSettings};

mod console;
mod metrics;

const REALM: &str = "hostile";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn config() -> Config {
    Config {
        master_key: Arc::new(agentauth_jose::MasterKey::generate().unwrap().0),
        admin_token: Some(AdminToken::new(ADMIN_TOKEN.into()).unwrap()),
        public_url: "https://as.example.test".into(),
        base_path: "/am".into(),
        workers: Some(4),
        versions: serde_json::Map::new(),
        loopback_fetch: false,
    }
}

fn app() -> Arc<App> {
    let config = config();
    let app = App::new(config, Store::open_in_memory().unwrap()).unwrap();
    let settings = hostile_settings();
    let plugins: &[(&str, HookKind, &[u8])] = &[
        ("misbehaving-dcr", HookKind::Dcr, agentauth_plugins::MISBEHAVING_DCR),
        ("misbehaving-may-act", HookKind::MayAct, agentauth_plugins::MISBEHAVING_MAY_ACT),
    ];
    assert!(app.provision_realm(REALM, &settings, plugins).unwrap());
    app
}

fn hostile_settings() -> RealmSettings {
    RealmSettings {
        ai_agents_enabled: true,
        open_registration: true,
        dcr_plugin: Some("misbehaving-dcr".into()),
        signing_alg: "ES256".into(),
        plugin_timeout_ms: 50,
        plugin_memory_bytes: 8 << 20,
        ..RealmSettings::default()
    }
}

async fn call(app: &Arc<App>, request: Request<Full<Bytes>>) -> (u16, Value) {
    let response: Response<Full<Bytes>> = app.handle(request).await;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A POST to a realm endpoint with `content_type`.
fn post(realm: &str, endpoint: &str, content_type: &str, body: String) -> Request<Full<Bytes>> {
    Request::post(realm_path(realm, endpoint))
        .header("content-type", content_type.to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// The body of `form` sent by the client of a registration response,
/// its credentials posted (`client_secret_post`).
fn as_client(form: Form, client: &Value) -> String {
    form.client_secret_post(&Credentials::try_from(client).unwrap()).encode()
}

async fn register(app: &Arc<App>, client_name: &str) -> (u16, Value) {
    let body = Registration::grants(&["client_credentials"]).client_name(client_name).scope("read");
    call(app, post(REALM, "aiagent/register", JSON, body.body())).await
}

async fn client_credentials(app: &Arc<App>, client: &Value) -> (u16, Value) {
    call(app, post(REALM, "access_token", FORM, as_client(Form::client_credentials(), client))).await
}

/// Registers a client whose tokens' may_act (from the realm's first
/// may-act version) names another client of the realm, without `sub`;
/// returns (client, the other's client_id).
async fn register_naming_another(app: &Arc<App>) -> (Value, String) {
    let (_, other) = register(app, "quiet").await;
    let other_id = other["client_id"].as_str().unwrap().to_string();
    let (status, client) = register(app, &format!("impersonate:{other_id}")).await;
    assert_eq!(status, 201, "{client}");
    (client, other_id)
}

/// An RFC 7592 request to `client`'s registration_client_uri, with its
/// registration access token, and `body` as JSON when there is one.
async fn manage_as(app: &Arc<App>, client: &Value, method: &str, body: Option<&Value>) -> (u16, Value) {
    let uri = client["registration_client_uri"].as_str().unwrap().trim_start_matches("https://as.example.test");
    let token = client["registration_access_token"].as_str().unwrap();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", JSON)
        .body(Full::new(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()))))
        .unwrap();
    call(app, request).await
}

fn clients(app: &App) -> u64 {
    app.service.store().count_clients(REALM).unwrap()
}

#[tokio::test]
async fn a_dcr_refusal_is_invalid_client_metadata_with_the_policy_reason() {
    let app = app();
    let (status, body) = register(&app, "dcr-deny").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client_metadata")));
    assert_eq!(body["error_description"], "registrations named dcr-deny are refused");
    assert_eq!(clients(&app), 0);
}

#[tokio::test]
async fn a_failing_dcr_policy_fails_closed_and_stores_nothing() {
    let app = app();
    for (mode, why) in [
        ("dcr-loop", "timed out"),
        ("dcr-trap", "trapped"),
        ("dcr-unknown-attribute", "unknown client attribute"),
        ("dcr-missing-may-act", "may-act policy is not available"),
    ] {
        let (status, body) = register(&app, mode).await;
        assert_eq!((status, body["error"].as_str()), (500, Some("server_error")), "{mode}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(why), "{mode}: {description}");
    }
    assert_eq!(clients(&app), 0);
    // The realm keeps serving: a well-behaved registration still works.
    assert_eq!(register(&app, "fine").await.0, 201);
    assert_eq!(clients(&app), 1);
}

#[tokio::test]
async fn a_dcr_policy_sets_how_long_a_client_lives_within_bounds() {
    let app = app();
    let (status, client) = register(&app, "dcr-expires-in:3600").await;
    assert_eq!(status, 201, "{client}");
    let issued = client["client_id_issued_at"].as_i64().unwrap();
    assert_eq!(client["client_secret_expires_at"].as_i64(), Some(issued + 3600), "{client}");
    // Outside a minute to ten years, the policy has failed, and nothing is
    // stored.
    for seconds in ["59", "316224001", "-1", "soon"] {
        let (status, body) = register(&app, &format!("dcr-expires-in:{seconds}")).await;
        assert_eq!((status, body["error"].as_str()), (500, Some("server_error")), "{seconds}: {body}");
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains("expiresIn takes one whole number of seconds"), "{seconds}: {description}");
    }
    assert_eq!(clients(&app), 1);
}

#[tokio::test]
async fn a_failing_may_act_policy_issues_no_token() {
    let app = app();
    for (mode, status, code) in [
        ("loop", 500, "server_error"),
        ("trap", 500, "server_error"),
        ("alloc", 500, "server_error"),
        ("recurse", 500, "server_error"),
        ("huge", 500, "server_error"),
        ("control", 500, "server_error"),
        ("other", 500, "server_error"),
        ("deny", 403, "access_denied"),
    ] {
        let (registered, client) = register(&app, mode).await;
        assert_eq!(registered, 201, "{client}");
        let (got, body) = client_credentials(&app, &client).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{mode}: {body}");
        assert!(body.get("access_token").is_none());
    }
    assert_eq!(app.service.store().count_tokens(REALM, TokenKind::Access).unwrap(), 0);
}

#[tokio::test]
async fn a_may_act_policy_may_name_another_client_or_no_one_but_not_a_stranger() {
    let app = app();
    let (_, other) = register(&app, "quiet").await;
    assert_eq!(client_credentials(&app, &other).await.0, 200, "no may_act at all");
    let (_, client) = register(&app, &format!("delegate:{}", other["client_id"].as_str().unwrap())).await;
    let (status, body) = client_credentials(&app, &client).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["may_act"]["client_id"], other["client_id"]);
    // A may_act naming no client of the realm would let whoever registers
    // under that id later act on the token: the policy has failed.
    let (_, stranger) = register(&app, "someone-else").await;
    let (status, body) = client_credentials(&app, &stranger).await;
    assert_eq!((status, body["error"].as_str()), (500, Some("server_error")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("not a client of this realm"), "{body}");
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_are_told_apart() {
    let app = app();
    let get = |path: &str| Request::get(path.to_string()).body(Full::new(Bytes::new())).unwrap();
    let (status, _) = call(&app, get(&format!("/am/oauth2/realms/root/realms/{REALM}/access_token"))).await;
    assert_eq!(status, 405);
    let (status, _) = call(&app, get("/am/oauth2/realms/root/realms/nowhere/connect/jwk_uri")).await;
    assert_eq!(status, 404);
    let (status, jwks) = call(&app, get(&format!("/am/oauth2/realms/root/realms/{REALM}/connect/jwk_uri"))).await;
    assert_eq!((status, jwks["keys"][0]["alg"].as_str()), (200, Some("ES256")));
}

#[tokio::test]
async fn version_answers_what_the_server_was_given_to_all_and_only_to_get() {
    let mut config = config();
    let versions = json!({"agentauth": "9.9.9", "wasmtime": "1.2.3", "sqlite_schema": 7});
    config.versions = versions.as_object().unwrap().clone();
    let app = App::new(config, Store::open_in_memory().unwrap()).unwrap();
    let (status, body) = call(&app, Request::get("/version").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!((status, body), (200, versions));
    let post = Request::post("/version").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(call(&app, post).await.0, 405);
}

#[tokio::test]
async fn discovery_lists_every_grant_type_and_authentication_method_of_the_core_tables() {
    use agentauth_core::{AuthMethod, GrantType};
    let app = app();
    let path = format!("/am/oauth2/realms/root/realms/{REALM}/.well-known/openid-configuration");
    let (status, doc) = call(&app, Request::get(path).body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(doc["grant_types_supported"], json!(GrantType::ALL.map(GrantType::as_str)));
    // Public clients (`none`) authenticate at the token and revocation
    // endpoints only; introspection is for confidential clients.
    for (endpoint, public) in [("token", true), ("introspection", false), ("revocation", true)] {
        let methods = &doc[format!("{endpoint}_endpoint_auth_methods_supported")];
        let expected: Vec<&str> =
            AuthMethod::ALL.iter().filter(|m| public || **m != AuthMethod::None).map(|m| m.as_str()).collect();
        assert_eq!(methods, &json!(expected), "{endpoint}");
    }
}

// ---- admin API and hot swap ----

fn admin_request(method: &str, path: &str, token: Option<&str>, body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(method).uri(format!("/admin/v1/realms/{REALM}/{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.header("agentauth-actor", "tester").body(Full::new(Bytes::from(body))).unwrap()
}

/// An operator's admin request to `path`, a full path.
fn admin_request_to(method: &str, path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    let request = Request::builder().method(method).uri(path).header("authorization", format!("Bearer {ADMIN_TOKEN}"));
    request.body(Full::new(Bytes::from(body))).unwrap()
}

async fn admin(app: &Arc<App>, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    call(app, admin_request(method, path, Some(ADMIN_TOKEN), body)).await
}

/// Pushes the seed's may-act policy as the next version of the realm's
/// `misbehaving-may-act` plugin, so its clients get the seed's answer.
async fn push_seed_may_act(app: &Arc<App>) -> (u16, Value) {
    let path = "plugins/misbehaving-may-act?hook=may-act";
    admin(app, "POST", path, agentauth_plugins::SOFTWARE_AGENT_MAY_ACT.to_vec()).await
}

fn claims(token: &str) -> Value {
    jwt_parts(token).1
}

#[tokio::test]
async fn the_admin_api_needs_the_bearer_token() {
    let app = app();
    let (status, body) = call(&app, admin_request("GET", "plugins", None, vec![])).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")));
    let (status, _) = call(&app, admin_request("GET", "plugins", Some("wrong-token-wrong-token"), vec![])).await;
    assert_eq!(status, 401);
    let (status, body) = admin(&app, "GET", "plugins", vec![]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugins"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_stored_version_runs_on_a_test_case_under_the_realms_limits_before_it_is_activated() {
    let app = app();
    let path = "plugins/trial?hook=may-act&activate=false";
    let (status, body) = admin(&app, "POST", path, agentauth_plugins::SOFTWARE_AGENT_MAY_ACT.to_vec()).await;
    assert_eq!(status, 201, "{body}");
    let case = |case: Value| case.to_string().into_bytes();
    let (status, body) = admin(&app, "POST", "plugins/trial/versions/1/test", case(json!({}))).await;
    assert_eq!((status, body["allowed"].as_bool()), (200, Some(true)), "{body}");
    assert!(body["decision"].get("may_act").is_some(), "{body}");
    // An empty body is the empty case.
    let (status, body) = admin(&app, "POST", "plugins/trial/versions/1/test", vec![]).await;
    assert_eq!((status, body["allowed"].as_bool()), (200, Some(true)), "{body}");

    // A refusal and a failure are told apart; the realm's 50 ms deadline
    // stops the loop.
    let named = |name: &str| {
        case(json!({"client": {"metadata": {"client_name": name, "grant_types": ["client_credentials"]}}}))
    };
    let (status, body) = admin(&app, "POST", "plugins/misbehaving-dcr/versions/1/test", named("dcr-deny")).await;
    assert_eq!((status, body["denied"].as_str()), (200, Some("registrations named dcr-deny are refused")), "{body}");
    let started = std::time::Instant::now();
    let (status, body) = admin(&app, "POST", "plugins/misbehaving-dcr/versions/1/test", named("dcr-loop")).await;
    assert_eq!((status, body["allowed"].as_bool()), (200, Some(false)), "{body}");
    assert!(body["failed"].as_str().unwrap().contains("timed out"), "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));

    // A case that does not fit, and a version that does not exist.
    let (status, body) =
        admin(&app, "POST", "plugins/misbehaving-dcr/versions/1/test", case(json!({"operation": "explode"}))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["error_description"].as_str().unwrap().starts_with("the test case: operation must be"), "{body}");
    let (status, _) = admin(&app, "POST", "plugins/trial/versions/9/test", case(json!({}))).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&app, "POST", "plugins/trial/versions/1/test", b"not json".to_vec()).await;
    assert_eq!(status, 400);

    // Testing activated nothing.
    let (_, listed) = admin(&app, "GET", "plugins/trial", vec![]).await;
    assert_eq!(listed["plugins"][0]["active"], false, "{listed}");
    // The listing says who pushed it and in what it was written.
    assert_eq!(listed["plugins"][0]["uploaded_by"], "admin:tester", "{listed}");
    assert_eq!(listed["plugins"][0]["language"], "Rust", "{listed}");
}

#[tokio::test]
async fn tests_of_a_version_take_the_realms_call_slots_even_when_it_runs_no_plugin() {
    let app = app();
    let settings = json!({"plugin_concurrency": 1, "plugin_timeout_ms": 1000}).to_string().into_bytes();
    let (status, _) = call(&app, admin_request_to("PUT", "/admin/v1/realms/idle", settings)).await;
    assert_eq!(status, 201);
    let path = "/admin/v1/realms/idle/plugins/looper?activate=false";
    let (status, body) = call(&app, admin_request_to("POST", path, agentauth_plugins::MISBEHAVING_DCR.to_vec())).await;
    assert_eq!(status, 201, "{body}");
    let case = json!({"client": {"metadata": {"client_name": "dcr-loop", "grant_types": ["client_credentials"]}}});
    let test = || {
        let request = admin_request_to(
            "POST",
            "/admin/v1/realms/idle/plugins/looper/versions/1/test",
            case.to_string().into_bytes(),
        );
        call(&app, request)
    };
    // One slot, four tests that each hold it for a second: those that
    // cannot have it within the realm's timeout are turned away.
    let answers = tokio::join!(test(), test(), test(), test());
    let statuses = [answers.0.0, answers.1.0, answers.2.0, answers.3.0];
    assert!(statuses.iter().filter(|s| **s == 503).count() >= 2, "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}

#[tokio::test]
async fn the_plugin_listing_counts_each_active_versions_calls_and_failures() {
    let app = app();
    for name in ["fine", "also-fine", "dcr-trap"] {
        register(&app, name).await;
    }
    let (status, listed) = admin(&app, "GET", "plugins/misbehaving-dcr", vec![]).await;
    assert_eq!(status, 200, "{listed}");
    let stats = &listed["plugins"][0]["stats"];
    assert_eq!(stats["calls"], 3, "{listed}");
    assert!(stats["seconds"].as_f64().unwrap() > 0.0, "{listed}");
    assert_eq!(stats["failures"], json!({"trap": 1}), "{listed}");
    // A version the realm does not run has none.
    let path = "plugins/misbehaving-dcr?activate=false";
    assert_eq!(admin(&app, "POST", path, agentauth_plugins::SOFTWARE_AGENT_DCR.to_vec()).await.0, 201);
    let (_, listed) = admin(&app, "GET", "plugins/misbehaving-dcr", vec![]).await;
    let second = listed["plugins"].as_array().unwrap().iter().find(|v| v["version"] == 2).unwrap().clone();
    assert!(second.get("stats").is_none(), "{listed}");
}

#[tokio::test]
async fn a_bad_upload_is_refused_with_its_reason_and_the_active_version_keeps_serving() {
    let app = app();
    for (bytes, hook, why) in [
        (b"not a component".to_vec(), "may-act", "not a valid component"),
        (agentauth_plugins::NOSY_MAY_ACT.to_vec(), "may-act", "imports wasi:sockets/"),
        (agentauth_plugins::SOFTWARE_AGENT_DCR.to_vec(), "may-act", "exports agentauth:policy/dcr@0.1.0, not"),
    ] {
        let (status, body) = admin(&app, "POST", &format!("plugins/misbehaving-may-act?hook={hook}"), bytes).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_plugin")), "{body}");
        assert!(body["error_description"].as_str().unwrap().contains(why), "{body}");
    }
    let (status, body) =
        admin(&app, "POST", "plugins/misbehaving-may-act?hook=dcr", agentauth_plugins::MISBEHAVING_DCR.to_vec()).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "{body}");
    // Version 1 still serves.
    let (_, versions) = admin(&app, "GET", "plugins/misbehaving-may-act", vec![]).await;
    assert_eq!(versions["plugins"].as_array().unwrap().len(), 1);
    let (client, other_id) = register_naming_another(&app).await;
    let (status, token) = client_credentials(&app, &client).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(claims(token["access_token"].as_str().unwrap())["may_act"]["client_id"], other_id.as_str());
}

#[tokio::test]
async fn push_activate_rollback_and_delete_are_audited() {
    let app = app();
    let (client, other_id) = register_naming_another(&app).await;
    let may_act_of = |token: &Value| claims(token["access_token"].as_str().unwrap())["may_act"].clone();

    let (status, pushed) = push_seed_may_act(&app).await;
    assert_eq!((status, pushed["version"].as_i64()), (201, Some(2)), "{pushed}");
    let (_, token) = client_credentials(&app, &client).await;
    assert_eq!(may_act_of(&token)["sub"], format!("(age!{})", client["client_id"].as_str().unwrap()), "v2 serves");

    let (status, _) = admin(&app, "POST", "plugins/misbehaving-may-act/rollback", vec![]).await;
    assert_eq!(status, 200);
    let (_, token) = client_credentials(&app, &client).await;
    assert_eq!(may_act_of(&token)["client_id"], other_id.as_str(), "v1 serves again");

    let (status, body) = admin(&app, "DELETE", "plugins/misbehaving-may-act/versions/1", vec![]).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "the active version stays");
    let (status, _) = admin(&app, "POST", "plugins/misbehaving-may-act/activate", br#"{"version": 2}"#.to_vec()).await;
    assert_eq!(status, 200);
    let (status, _) = admin(&app, "DELETE", "plugins/misbehaving-may-act/versions/1", vec![]).await;
    assert_eq!(status, 200);
    let (status, body) = admin(&app, "DELETE", "plugins/misbehaving-dcr", vec![]).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("conflict")), "the dcr hook uses it");

    let (_, log) = admin(&app, "GET", "audit", vec![]).await;
    let entries: Vec<(String, Option<i64>)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["version"].as_i64()))
        .collect();
    let expected: Vec<(String, Option<i64>)> = [("push", 2), ("rollback", 1), ("activate", 2), ("delete", 1)]
        .iter()
        .map(|(a, v)| (a.to_string(), Some(*v)))
        .collect();
    assert_eq!(entries, expected);
    let first = &log["entries"][0];
    assert_eq!(first["actor"], "admin:tester");
    assert_eq!(first["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn the_dcr_hook_can_be_switched_off_and_on() {
    let app = app();
    let (status, body) = admin(&app, "PUT", "hooks", br#"{"dcr": null}"#.to_vec()).await;
    assert_eq!(
        (status, &body),
        (200, &json!({"assertion": null, "authorize": null, "dcr": null, "scope": null, "token": null}))
    );
    let (status, client) = register(&app, "dcr-deny").await;
    assert_eq!(status, 201, "no policy runs: {client}");
    assert_eq!(client["statelessTokensEnabled"], false);
    let (status, body) = admin(&app, "PUT", "hooks", br#"{"dcr": "misbehaving-may-act"}"#.to_vec()).await;
    assert_eq!(status, 400, "a may-act plugin cannot serve the dcr hook: {body}");
    let (status, _) = admin(&app, "PUT", "hooks", br#"{"dcr": "misbehaving-dcr"}"#.to_vec()).await;
    assert_eq!(status, 200);
    assert_eq!(register(&app, "dcr-deny").await.0, 400);
}

/// Swaps a may-act plugin between two versions many times while tokens
/// are issued concurrently: every request succeeds, and every token's
/// `may_act` is wholly one version's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swapping_a_plugin_under_load_fails_no_request_and_mixes_no_versions() {
    let app = app();
    let (client, other_id) = register_naming_another(&app).await;
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let (status, _) = push_seed_may_act(&app).await;
    assert_eq!(status, 201);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (app, client, stop) = (Arc::clone(&app), client.clone(), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || seen.is_empty() {
                let (status, token) = client_credentials(&app, &client).await;
                assert_eq!(status, 200, "{token}");
                seen.push(claims(token["access_token"].as_str().unwrap())["may_act"].clone());
            }
            seen
        }));
    }
    for swap in 0..20 {
        let version = 1 + swap % 2;
        let (status, body) = admin(
            &app,
            "POST",
            "plugins/misbehaving-may-act/activate",
            format!("{{\"version\": {version}}}").into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);

    let version_1 = json!({"client_id": other_id});
    let version_2 = json!({"client_id": client_id, "sub": format!("(age!{client_id})")});
    let (mut ones, mut twos) = (0, 0);
    for worker in workers {
        for may_act in worker.await.unwrap() {
            if may_act == version_1 {
                ones += 1;
            } else if may_act == version_2 {
                twos += 1;
            } else {
                panic!("a decision from no single version: {may_act}");
            }
        }
    }
    assert!(ones > 0 && twos > 0, "both versions served: {ones} and {twos}");
}

/// A realm whose plugin loops fills only its own call slots: its callers
/// get 503 once they are all busy, and another realm keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_realm_answers_503_and_does_not_stall_another_realm() {
    let app = app();
    let settings = RealmSettings { plugin_concurrency: 1, ..hostile_settings() };
    let json = serde_json::to_string(&settings).unwrap();
    let entry = agentauth_store::AuditEntry { action: "test".into(), ..Default::default() };
    app.service.store().set_realm_settings(REALM, &json, &entry).unwrap();
    app.service.republish(REALM).unwrap();
    let calm = RealmSettings {
        ai_agents_enabled: true,
        open_registration: true,
        dcr_plugin: Some("software-agent-dcr".into()),
        signing_alg: "EdDSA".into(),
        ..RealmSettings::default()
    };
    let seed: &[(&str, HookKind, &[u8])] = &[
        ("software-agent-dcr", HookKind::Dcr, agentauth_plugins::SOFTWARE_AGENT_DCR),
        ("software-agent-may-act", HookKind::MayAct, agentauth_plugins::SOFTWARE_AGENT_MAY_ACT),
    ];
    assert!(app.provision_realm("calm", &calm, seed).unwrap());

    let (_, looping) = register(&app, "loop").await;
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let (app, looping) = (Arc::clone(&app), looping.clone());
        stuck.push(tokio::spawn(async move { client_credentials(&app, &looping).await }));
    }
    // Meanwhile the calm realm registers and issues as usual.
    for _ in 0..5 {
        let body = Registration::grants(&["client_credentials"]).scope("read");
        let (status, client) = call(&app, post("calm", "aiagent/register", JSON, body.body())).await;
        assert_eq!(status, 201, "{client}");
    }
    let mut codes = Vec::new();
    for handle in stuck {
        let (status, body) = handle.await.unwrap();
        codes.push((status, body["error"].as_str().unwrap_or_default().to_string()));
    }
    assert!(
        codes
            .iter()
            .all(|(s, e)| (*s, e.as_str()) == (500, "server_error")
                || (*s, e.as_str()) == (503, "temporarily_unavailable")),
        "{codes:?}"
    );
    assert!(codes.iter().any(|(s, _)| *s == 503), "{codes:?}");
}

// ---- token and scope hooks ----

async fn with_token_and_scope_hooks() -> Arc<App> {
    let app = app();
    for (name, bytes) in [
        ("department-token", agentauth_plugins::DEPARTMENT_TOKEN),
        ("narrowing-scope", agentauth_plugins::NARROWING_SCOPE),
    ] {
        let (status, body) = admin(&app, "POST", &format!("plugins/{name}"), bytes.to_vec()).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) =
        admin(&app, "PUT", "hooks", br#"{"token": "department-token", "scope": "narrowing-scope"}"#.to_vec()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({
            "assertion": null,
            "authorize": null,
            "dcr": "misbehaving-dcr",
            "scope": "narrowing-scope",
            "token": "department-token"
        })
    );
    app
}

async fn token_for(app: &Arc<App>, client_name: &str, scope: &str) -> (u16, Value) {
    let body = Registration::grants(&["client_credentials"]).client_name(client_name).scope("read write");
    let (status, client) = call(app, post(REALM, "aiagent/register", JSON, body.body())).await;
    assert_eq!(status, 201, "{client}");
    let form = as_client(Form::client_credentials().scope(scope), &client);
    call(app, post(REALM, "access_token", FORM, form)).await
}

#[tokio::test]
async fn a_token_policy_adds_custom_claims_but_not_reserved_ones() {
    let app = with_token_and_scope_hooks().await;
    let (status, body) = token_for(&app, "quiet", "read").await;
    assert_eq!(status, 200, "{body}");
    let claims = claims(body["access_token"].as_str().unwrap());
    assert_eq!((claims["department"].as_str(), claims["agent"].as_bool()), (Some("software-updates"), Some(true)));

    for (name, status, code, why) in [
        ("take-sub", 500, "server_error", "reserved claim \"sub\""),
        ("not-json", 500, "server_error", "not JSON"),
        ("token-deny", 403, "access_denied", "no tokens for this agent today"),
    ] {
        let (got, body) = token_for(&app, name, "read").await;
        assert_eq!((got, body["error"].as_str()), (status, Some(code)), "{name}: {body}");
        assert!(body["error_description"].as_str().unwrap().contains(why), "{name}: {body}");
    }
}

#[tokio::test]
async fn a_scope_policy_narrows_or_refuses_but_never_widens() {
    let app = with_token_and_scope_hooks().await;
    let (status, body) = token_for(&app, "read-only", "read write").await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("read")), "{body}");
    let (status, body) = token_for(&app, "quiet", "read write").await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("read write")), "{body}");
    let (status, body) = token_for(&app, "refuse", "read").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{body}");
    assert_eq!(body["error_description"], "this agent may not have tokens");
    let (status, body) = token_for(&app, "widen", "read").await;
    assert_eq!((status, body["error"].as_str()), (500, Some("server_error")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("may only narrow"), "{body}");
}

#[tokio::test]
async fn the_dcr_policy_runs_on_update_and_delete_and_may_refuse_a_delete() {
    let app = app();
    let (status, client) = register(&app, "dcr-keep").await;
    assert_eq!(status, 201, "{client}");
    let update =
        json!({"client_id": client["client_id"], "client_name": "dcr-deny", "grant_types": ["client_credentials"]});
    let (status, body) = manage_as(&app, &client, "PUT", Some(&update)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_client_metadata")),
        "the policy saw the UPDATE: {body}"
    );
    let (status, body) = manage_as(&app, &client, "DELETE", None).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")), "{body}");
    assert_eq!(body["error_description"], "this client may not be deleted");
    assert_eq!(clients(&app), 1);
}

#[tokio::test]
async fn registration_is_limited_to_the_realms_scopes() {
    let app = app();
    let settings = RealmSettings { allowed_scopes: Some(vec!["read".into(), "write".into()]), ..hostile_settings() };
    let json = serde_json::to_string(&settings).unwrap();
    let entry = agentauth_store::AuditEntry { action: "test".into(), ..Default::default() };
    app.service.store().set_realm_settings(REALM, &json, &entry).unwrap();
    app.service.republish(REALM).unwrap();
    let register_with = |scope: &'static str| {
        let body = Registration::grants(&["client_credentials"]).client_name("quiet").scope(scope);
        post(REALM, "register", JSON, body.body())
    };
    assert_eq!(call(&app, register_with("read write")).await.0, 201);
    let (status, body) = call(&app, register_with("read admin")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_client_metadata")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("admin"), "{body}");
}

#[tokio::test]
async fn an_exchange_may_target_only_an_allowed_audience_which_refresh_keeps() {
    let app = app();
    let (status, _) = push_seed_may_act(&app).await;
    assert_eq!(status, 201);
    let body = Registration::grants(&["client_credentials", TOKEN_EXCHANGE]).client_name("quiet").scope("read write");
    let (_, client) = call(&app, post(REALM, "aiagent/register", JSON, body.body())).await;
    assert_eq!(client["allowedAudiences"], json!(["https://updates.example"]), "the registration shows them");
    let (_, token) = client_credentials(&app, &client).await;
    let exchange = |target: &str, uri: &str| {
        let form = Form::token_exchange(token["access_token"].as_str().unwrap()).field(target, uri);
        post(REALM, "access_token", FORM, as_client(form, &client))
    };
    let (status, body) = call(&app, exchange("audience", "https://other.example")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");
    let (status, body) = call(&app, exchange("resource", "https://updates.example")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], "https://updates.example");

    let refresh = as_client(Form::refresh(body["refresh_token"].as_str().unwrap()), &client);
    let (status, body) = call(&app, post(REALM, "access_token", FORM, refresh)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], "https://updates.example");
}

#[tokio::test]
async fn a_token_of_another_realm_is_inactive_and_no_subject_here() {
    let app = app();
    let calm = RealmSettings {
        ai_agents_enabled: true,
        open_registration: true,
        dcr_plugin: Some("software-agent-dcr".into()),
        ..RealmSettings::default()
    };
    let seed: &[(&str, HookKind, &[u8])] = &[
        ("software-agent-dcr", HookKind::Dcr, agentauth_plugins::SOFTWARE_AGENT_DCR),
        ("software-agent-may-act", HookKind::MayAct, agentauth_plugins::SOFTWARE_AGENT_MAY_ACT),
    ];
    assert!(app.provision_realm("calm", &calm, seed).unwrap());
    let body = Registration::grants(&["client_credentials", TOKEN_EXCHANGE]).scope("read");
    let (_, elsewhere) = call(&app, post("calm", "aiagent/register", JSON, body.body())).await;
    let (_, token) =
        call(&app, post("calm", "access_token", FORM, as_client(Form::client_credentials(), &elsewhere))).await;
    let foreign = token["access_token"].as_str().unwrap().to_string();
    let naming_foreign = || Form::new().field("token", &foreign);

    let (_, local) = register(&app, "quiet").await;
    let (status, body) = call(&app, post(REALM, "introspect", FORM, as_client(naming_foreign(), &local))).await;
    assert_eq!((status, &body), (200, &json!({"active": false})));
    let exchange = as_client(Form::token_exchange(&foreign), &local);
    let (status, body) = call(&app, post(REALM, "access_token", FORM, exchange)).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    // Nor does its client exist here.
    let (status, _) =
        call(&app, post(REALM, "access_token", FORM, as_client(Form::client_credentials(), &elsewhere))).await;
    assert_eq!(status, 401);
    // Revoking it here is the RFC 7009 200 for a token this realm does not
    // know, and leaves it live in its own realm.
    let (status, _) = call(&app, post(REALM, "token/revoke", FORM, as_client(naming_foreign(), &local))).await;
    assert_eq!(status, 200);
    let (_, body) = call(&app, post("calm", "introspect", FORM, as_client(naming_foreign(), &elsewhere))).await;
    assert_eq!(body["active"], true, "{body}");
    // Its registration access token manages nothing here.
    let client_id = elsewhere["client_id"].as_str().unwrap();
    let manage = Request::get(format!("/am/oauth2/realms/root/realms/{REALM}/aiagent/register?client_id={client_id}"))
        .header("authorization", format!("Bearer {}", elsewhere["registration_access_token"].as_str().unwrap()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, body) = call(&app, manage).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
    // Nor can this realm select the other's plugins.
    let (status, body) =
        admin(&app, "PUT", "hooks", json!({"dcr": "software-agent-dcr"}).to_string().into_bytes()).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_dcr_policy_never_sees_the_clients_secret() {
    let app = app();
    let (_, client) = register(&app, "quiet").await;
    let secret = client["client_secret"].as_str().unwrap();
    let update = json!({"client_id": client["client_id"], "client_secret": secret,
                        "client_name": "dcr-show-body", "grant_types": ["client_credentials"]});
    let (status, body) = manage_as(&app, &client, "PUT", Some(&update)).await;
    assert_eq!(status, 400, "{body}");
    let shown = body["error_description"].as_str().unwrap();
    assert!(shown.contains("dcr-show-body"), "the policy saw the body: {shown}");
    assert!(!shown.contains(secret) && !shown.contains("client_secret"), "{shown}");
}

// ---- realm admins ----

/// An admin API call with `token` to a path under `/admin/v1/realms`.
async fn admin_as(app: &Arc<App>, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
    let request = Request::builder()
        .method(method)
        .uri(format!("/admin/v1/realms{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("agentauth-actor", "claims-to-be-the-operator")
        .body(Full::new(body))
        .unwrap();
    call(app, request).await
}

#[tokio::test]
async fn a_realm_admin_manages_its_own_realm_and_no_other() {
    let app = app();
    let (status, _) = admin_as(&app, ADMIN_TOKEN, "PUT", "/other", json!({})).await;
    assert_eq!(status, 201);
    let (status, created) =
        admin_as(&app, ADMIN_TOKEN, "POST", &format!("/{REALM}/admins"), json!({"name": "ops"})).await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_string();

    // Its own realm: read, change, rotate keys, manage plugins.
    for (method, path, body) in [
        ("GET", format!("/{REALM}"), Value::Null),
        ("PATCH", format!("/{REALM}"), json!({"access_token_lifetime": 600})),
        ("GET", format!("/{REALM}/plugins"), Value::Null),
        ("POST", format!("/{REALM}/keys/rotate"), Value::Null),
        ("GET", format!("/{REALM}/audit"), Value::Null),
    ] {
        let (status, body) = admin_as(&app, &token, method, &path, body).await;
        assert_eq!(status, 200, "{method} {path}: {body}");
    }
    // Another realm: nothing, read or write.
    for (method, path, body) in [
        ("GET", "/other", Value::Null),
        ("PATCH", "/other", json!({"open_registration": true})),
        ("GET", "/other/plugins", Value::Null),
        ("GET", "/other/keys", Value::Null),
        ("POST", "/other/keys/rotate", Value::Null),
        ("GET", "/other/audit", Value::Null),
        ("DELETE", "/other", Value::Null),
    ] {
        let (status, body) = admin_as(&app, &token, method, path, body).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")), "{method} {path}: {body}");
    }
    // Nor what belongs to the operator: realms, admins, server-protecting limits.
    for (method, path, body) in [
        ("GET", String::new(), Value::Null),
        ("PUT", "/third".to_string(), json!({})),
        ("DELETE", format!("/{REALM}"), Value::Null),
        ("POST", format!("/{REALM}/admins"), json!({"name": "another"})),
        ("GET", format!("/{REALM}/admins"), Value::Null),
        ("PATCH", format!("/{REALM}"), json!({"plugin_memory_bytes": 256 << 20})),
        ("PATCH", format!("/{REALM}"), json!({"registrations_per_minute": 1_000_000})),
    ] {
        let (status, body) = admin_as(&app, &token, method, &path, body).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("access_denied")), "{method} {path}: {body}");
    }
    let other = app.service.store().realm("other").unwrap().unwrap();
    assert!(!other.settings.contains("\"open_registration\":true"));
    assert!(app.service.store().realm("third").unwrap().is_none());

    // Its changes are audited under its own name, whatever it claims.
    let (_, audit) = admin_as(&app, ADMIN_TOKEN, "GET", &format!("/{REALM}/audit"), Value::Null).await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("rotate-key"), Some("realm-admin:ops")));

    // Deleting the credential ends it.
    let (_, listed) = admin_as(&app, ADMIN_TOKEN, "GET", &format!("/{REALM}/admins"), Value::Null).await;
    assert_eq!(listed["admins"][0]["name"], "ops");
    assert!(listed["admins"][0].get("token").is_none());
    let id = listed["admins"][0]["id"].as_str().unwrap();
    let (status, _) = admin_as(&app, ADMIN_TOKEN, "DELETE", &format!("/{REALM}/admins/{id}"), Value::Null).await;
    assert_eq!(status, 204);
    let (status, _) = admin_as(&app, &token, "GET", &format!("/{REALM}"), Value::Null).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn keys_rotate_on_their_schedule_and_not_before() {
    let app = app();
    let (status, _) = admin_as(&app, ADMIN_TOKEN, "PUT", "/manual", json!({"key_rotation_days": 0})).await;
    assert_eq!(status, 201);
    app.warm_up(REALM).unwrap();
    app.warm_up("manual").unwrap();
    let first = app.service.store().keys(REALM).unwrap()[0].created_at;
    let day = 86_400;

    app.maintain(first + 89 * day);
    assert_eq!(app.service.store().keys(REALM).unwrap().len(), 1, "rotated before 90 days");
    app.maintain(first + 90 * day);
    let keys = app.service.store().keys(REALM).unwrap();
    assert_eq!(keys.len(), 2);
    let newest = keys.iter().max_by_key(|k| k.created_at).unwrap();
    assert_eq!(newest.created_at, first + 90 * day);
    assert_eq!(newest.signs_from, first + 90 * day + 300, "published before it signs");
    // Once rotated, the clock starts again from the new key; the old key
    // is gone once its tokens have expired.
    app.maintain(first + 91 * day);
    let keys = app.service.store().keys(REALM).unwrap();
    assert_eq!(keys.iter().map(|k| k.created_at).collect::<Vec<_>>(), [first + 90 * day]);
    assert_eq!(app.service.store().keys("manual").unwrap().len(), 1, "a realm without a schedule keeps its key");

    let (_, audit) = admin_as(&app, ADMIN_TOKEN, "GET", &format!("/{REALM}/audit"), Value::Null).await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("rotate-key"), Some("scheduler")));
}

#[tokio::test]
async fn a_realm_that_cannot_be_rotated_does_not_hold_back_the_others() {
    let app = app();
    // Sorted first, and its settings unreadable.
    let (status, _) = admin_as(&app, ADMIN_TOKEN, "PUT", "/aaa-broken", json!({})).await;
    assert_eq!(status, 201);
    app.warm_up("aaa-broken").unwrap();
    app.warm_up(REALM).unwrap();
    assert!(
        app.service
            .store()
            .set_realm_settings("aaa-broken", "not json", &agentauth_store::AuditEntry::default())
            .unwrap()
    );
    let first = app.service.store().keys(REALM).unwrap()[0].created_at;
    app.maintain(first + 90 * 86_400);
    assert_eq!(app.service.store().keys(REALM).unwrap().len(), 2, "the healthy realm rotated all the same");
}

#[tokio::test]
async fn only_a_plugin_upload_may_send_the_admin_api_a_large_body() {
    let app = app();
    let large = format!("{{\"access_token_lifetime\": 900{}}}", " ".repeat(100 << 10));
    let request = Request::patch(format!("/admin/v1/realms/{REALM}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::from(large)))
        .unwrap();
    assert_eq!(call(&app, request).await.0, 413);
    let (status, body) = push_seed_may_act(&app).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_is_503_on_the_admin_api_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentauth.db");
    let config = config();
    let app = App::new(config, Store::open(&path).unwrap()).unwrap();
    let (status, _) = admin_as(&app, ADMIN_TOKEN, "PUT", "/busy", json!({})).await;
    assert_eq!(status, 201);
    // Another process (a backup, say) holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, body) = admin_as(&app, ADMIN_TOKEN, "PATCH", "/busy", json!({"access_token_lifetime": 900})).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");
    other.execute_batch("ROLLBACK").unwrap();
    let (status, body) = admin_as(&app, ADMIN_TOKEN, "PATCH", "/busy", json!({"access_token_lifetime": 900})).await;
    assert_eq!(status, 200, "{body}");
}

// ---- token exchange: what a derived token may hold, and how long ----

/// Registers an agent that may exchange tokens, with `scope`.
async fn register_exchanger(app: &Arc<App>, client_name: &str, scope: &str) -> Value {
    let body = Registration::grants(&["client_credentials", TOKEN_EXCHANGE]).client_name(client_name).scope(scope);
    let (status, client) = call(app, post(REALM, "aiagent/register", JSON, body.body())).await;
    assert_eq!(status, 201, "{client}");
    client
}

async fn token_request(app: &Arc<App>, client: &Value, form: Form) -> (u16, Value) {
    call(app, post(REALM, "access_token", FORM, as_client(form, client))).await
}

/// `client` exchanges `subject_token`, asking for `scope` when given.
async fn exchange_as(app: &Arc<App>, client: &Value, subject_token: &str, scope: Option<&str>) -> (u16, Value) {
    let mut form = Form::token_exchange(subject_token);
    if let Some(scope) = scope {
        form = form.scope(scope);
    }
    token_request(app, client, form).await
}

async fn refresh_as(app: &Arc<App>, client: &Value, refresh_token: &str) -> (u16, Value) {
    token_request(app, client, Form::refresh(refresh_token)).await
}

async fn introspect_as(app: &Arc<App>, caller: &Value, token: &str) -> Value {
    let form = as_client(Form::new().field("token", token), caller);
    let (status, body) = call(app, post(REALM, "introspect", FORM, form)).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn revoke_as(app: &Arc<App>, caller: &Value, token: &str) {
    let form = as_client(Form::new().field("token", token), caller);
    let (status, body) = call(app, post(REALM, "token/revoke", FORM, form)).await;
    assert_eq!(status, 200, "{body}");
}

async fn set_realm(app: &Arc<App>, changes: Value) {
    let request = Request::patch(format!("/admin/v1/realms/{REALM}"))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Full::new(Bytes::from(changes.to_string())))
        .unwrap();
    let (status, body) = call(app, request).await;
    assert_eq!(status, 200, "{body}");
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}"))
}

/// A client the token's may-act policy names as its own actor (the seed).
async fn seed_agent(app: &Arc<App>, scope: &str) -> Value {
    assert_eq!(push_seed_may_act(app).await.0, 201);
    register_exchanger(app, "quiet", scope).await
}

#[tokio::test]
async fn exchange_never_raises_a_subjects_privileges() {
    let app = app();
    // `wide` registered `read admin`; `narrow` registered only `read`, and
    // its tokens' may_act names `wide`.
    let wide = register_exchanger(&app, "quiet", "read admin").await;
    let narrow = register_exchanger(&app, &format!("delegate:{}", text(&wide, "client_id")), "read").await;
    let (_, token) = client_credentials(&app, &narrow).await;
    let subject = text(&token, "access_token");
    for asked in ["read admin", "admin"] {
        let (status, body) = exchange_as(&app, &wide, subject, Some(asked)).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{asked}: {body}");
    }
    let (status, body) = exchange_as(&app, &wide, subject, Some("read")).await;
    assert_eq!(status, 200, "{body}");
    let issued = claims(text(&body, "access_token"));
    assert_eq!((issued["sub"].as_str(), issued["scope"].as_str()), (narrow["client_id"].as_str(), Some("read")));
    assert_eq!(issued["act"]["client_id"], wide["client_id"]);
}

#[tokio::test]
async fn the_seed_agent_still_widens_its_own_token_within_its_registration() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    let (_, token) = token_for_scope(&app, &agent, "read").await;
    let (status, body) = exchange_as(&app, &agent, text(&token, "access_token"), Some("read write")).await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("read write")), "{body}");
}

async fn token_for_scope(app: &Arc<App>, client: &Value, scope: &str) -> (u16, Value) {
    token_request(app, client, Form::client_credentials().scope(scope)).await
}

#[tokio::test]
async fn may_act_without_sub_names_the_exchanging_client_unless_the_realm_allows_impersonation() {
    let app = app();
    let actor = register_exchanger(&app, "quiet", "read").await;
    let subject_client = register_exchanger(&app, &format!("impersonate:{}", text(&actor, "client_id")), "read").await;
    let (_, token) = client_credentials(&app, &subject_client).await;
    let (status, body) = exchange_as(&app, &actor, text(&token, "access_token"), None).await;
    assert_eq!(status, 200, "{body}");
    let act = &claims(text(&body, "access_token"))["act"];
    assert_eq!(act["client_id"], actor["client_id"], "the exchanging client is named: {act}");
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");

    set_realm(&app, json!({"token_exchange_impersonation": true})).await;
    let (_, token) = client_credentials(&app, &subject_client).await;
    let (status, body) = exchange_as(&app, &actor, text(&token, "access_token"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(claims(text(&body, "access_token")).get("act").is_none(), "{body}");
    // RFC 8693 §2.2.1: an exchange always says what it issued.
    assert_eq!(body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token", "{body}");
    let (status, refreshed) = refresh_as(&app, &actor, text(&body, "refresh_token")).await;
    assert_eq!(status, 200, "{refreshed}");
    assert!(refreshed.get("issued_token_type").is_none(), "a refresh is no exchange: {refreshed}");
}

#[tokio::test]
async fn an_exchanged_token_expires_no_later_than_its_subject() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    let (_, token) = client_credentials(&app, &agent).await;
    let subject = text(&token, "access_token");
    // The realm's access tokens live an hour; make the next ones live two.
    set_realm(&app, json!({"access_token_lifetime": 7200})).await;
    let (status, body) = exchange_as(&app, &agent, subject, None).await;
    assert_eq!(status, 200, "{body}");
    let (subject_exp, exchanged) = (claims(subject)["exp"].as_i64(), claims(text(&body, "access_token")));
    assert_eq!(exchanged["exp"].as_i64(), subject_exp);
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(expires_in <= 3600, "expires_in says what exp says: {expires_in}");
    let refresh = introspect_as(&app, &agent, text(&body, "refresh_token")).await;
    assert_eq!(refresh["exp"].as_i64(), subject_exp, "the refresh token ends with the subject too: {refresh}");
}

#[tokio::test]
async fn revoking_a_subject_token_revokes_everything_exchanged_from_it_transitively() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    let (_, token) = client_credentials(&app, &agent).await;
    let subject = text(&token, "access_token").to_string();
    let (_, first) = exchange_as(&app, &agent, &subject, None).await;
    let (_, second) = exchange_as(&app, &agent, text(&first, "access_token"), None).await;
    let derived = [
        text(&first, "access_token"),
        text(&first, "refresh_token"),
        text(&second, "access_token"),
        text(&second, "refresh_token"),
    ];
    for token in derived {
        assert_eq!(introspect_as(&app, &agent, token).await["active"], true);
    }
    revoke_as(&app, &agent, &subject).await;
    for token in derived {
        assert_eq!(introspect_as(&app, &agent, token).await, json!({"active": false}));
    }
    let (status, body) = refresh_as(&app, &agent, text(&second, "refresh_token")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    // Nor can the revoked subject start a new family.
    let (status, body) = exchange_as(&app, &agent, &subject, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
}

#[tokio::test]
async fn deleting_the_subjects_client_revokes_what_others_exchanged_from_its_tokens() {
    let app = app();
    let actor = register_exchanger(&app, "quiet", "read").await;
    let subject_client = register_exchanger(&app, &format!("delegate:{}", text(&actor, "client_id")), "read").await;
    let (_, token) = client_credentials(&app, &subject_client).await;
    let (status, exchanged) = exchange_as(&app, &actor, text(&token, "access_token"), None).await;
    assert_eq!(status, 200, "{exchanged}");
    assert_eq!(introspect_as(&app, &actor, text(&exchanged, "access_token")).await["active"], true);

    assert_eq!(manage_as(&app, &subject_client, "DELETE", None).await.0, 204);
    for token in [text(&exchanged, "access_token"), text(&exchanged, "refresh_token")] {
        assert_eq!(introspect_as(&app, &actor, token).await, json!({"active": false}));
    }
}

#[tokio::test]
async fn reusing_a_refresh_token_revokes_the_families_exchanged_from_its_family() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    let (_, token) = client_credentials(&app, &agent).await;
    let (_, first) = exchange_as(&app, &agent, text(&token, "access_token"), None).await;
    let (status, refreshed) = refresh_as(&app, &agent, text(&first, "refresh_token")).await;
    assert_eq!(status, 200, "{refreshed}");
    let (status, derived) = exchange_as(&app, &agent, text(&refreshed, "access_token"), None).await;
    assert_eq!(status, 200, "{derived}");
    // The rotated refresh token comes back: the family has leaked.
    let (status, _) = refresh_as(&app, &agent, text(&first, "refresh_token")).await;
    assert_eq!(status, 400);
    for token in [text(&refreshed, "access_token"), text(&derived, "access_token"), text(&derived, "refresh_token")] {
        assert_eq!(introspect_as(&app, &agent, token).await, json!({"active": false}));
    }
}

#[tokio::test]
async fn a_refresh_grants_no_more_than_the_clients_current_registration() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    let (_, token) = client_credentials(&app, &agent).await;
    let (_, exchanged) = exchange_as(&app, &agent, text(&token, "access_token"), Some("read write")).await;
    assert_eq!(exchanged["scope"], "read write");

    let narrowed = json!({"client_id": agent["client_id"], "client_name": "quiet", "scope": "read",
                          "grant_types": ["client_credentials", TOKEN_EXCHANGE]});
    let (status, body) = manage_as(&app, &agent, "PUT", Some(&narrowed)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = refresh_as(&app, &agent, text(&exchanged, "refresh_token")).await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("read")), "{body}");
    assert_eq!(claims(text(&body, "access_token"))["scope"], "read");
}

#[tokio::test]
async fn a_delegation_chain_deeper_than_the_realm_allows_is_invalid_request() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    set_realm(&app, json!({"max_delegation_depth": 2})).await;
    let (_, token) = client_credentials(&app, &agent).await;
    let mut subject = text(&token, "access_token").to_string();
    for depth in 1..=2 {
        let (status, body) = exchange_as(&app, &agent, &subject, None).await;
        assert_eq!(status, 200, "depth {depth}: {body}");
        subject = text(&body, "access_token").to_string();
    }
    let (status, body) = exchange_as(&app, &agent, &subject, None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
}

#[tokio::test]
async fn a_stored_token_whose_claims_cannot_be_read_is_inactive() {
    let app = app();
    let (_, caller) = register(&app, "quiet").await;
    let (opaque, refresh) = ("opaque-token-with-broken-claims", "refresh-token-with-broken-grant");
    let hashes = (
        app.service.hasher().hash(agentauth_service::Purpose::AccessToken, opaque),
        app.service.hasher().hash(agentauth_service::Purpose::RefreshToken, refresh),
    );
    let broken = |hash, kind| agentauth_store::NewToken {
        hash,
        client_id: caller["client_id"].as_str().unwrap(),
        family: None,
        kind,
        grant: "{\"act\": {\"act\": ",
        expires_at: i64::MAX,
    };
    app.service
        .store()
        .insert_tokens(REALM, &[broken(&hashes.0, TokenKind::Access), broken(&hashes.1, TokenKind::Refresh)])
        .unwrap();
    for token in [opaque, refresh] {
        assert_eq!(introspect_as(&app, &caller, token).await, json!({"active": false}));
    }
    let (status, body) = refresh_as(&app, &caller, refresh).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn revoking_the_subject_reaches_an_exchanged_token_after_its_refresh_token_expired() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    // Refresh tokens that die long before the access tokens.
    set_realm(&app, json!({"refresh_token_lifetime": 60})).await;
    let (_, token) = client_credentials(&app, &agent).await;
    let subject = text(&token, "access_token").to_string();
    let (_, exchanged) = exchange_as(&app, &agent, &subject, None).await;
    // The housekeeping of two minutes later sweeps the refresh token.
    let later = claims(&subject)["iat"].as_i64().unwrap() + 120;
    app.maintain(later);
    revoke_as(&app, &agent, &subject).await;
    assert_eq!(introspect_as(&app, &agent, text(&exchanged, "access_token")).await, json!({"active": false}));
}

#[tokio::test]
async fn revoking_a_rotated_refresh_token_revokes_its_family() {
    let app = app();
    let agent = seed_agent(&app, "read write").await;
    let (_, token) = client_credentials(&app, &agent).await;
    let (_, exchanged) = exchange_as(&app, &agent, text(&token, "access_token"), None).await;
    let (_, refreshed) = refresh_as(&app, &agent, text(&exchanged, "refresh_token")).await;
    assert_eq!(introspect_as(&app, &agent, text(&exchanged, "refresh_token")).await, json!({"active": false}));
    revoke_as(&app, &agent, text(&exchanged, "refresh_token")).await;
    for token in [text(&refreshed, "access_token"), text(&refreshed, "refresh_token")] {
        assert_eq!(introspect_as(&app, &agent, token).await, json!({"active": false}));
    }
}

#[tokio::test]
async fn an_exchange_racing_the_revocation_of_its_opaque_subject_stores_nothing() {
    let app = app();
    let (_, caller) = register(&app, "quiet").await;
    let client_id = caller["client_id"].as_str().unwrap();
    let gone = app.service.hasher().hash(agentauth_service::Purpose::AccessToken, "an-opaque-token-revoked-meanwhile");
    let lineage = agentauth_store::Lineage {
        family: "f-raced",
        parent_jti: "jti-of-the-revoked-token",
        parent_hash: Some(&gone),
        parent_family: None,
        parent_client: client_id,
        expires_at: i64::MAX,
    };
    let refresh = app.service.hasher().hash(agentauth_service::Purpose::RefreshToken, "refresh-of-the-raced-exchange");
    let row = agentauth_store::NewToken {
        hash: &refresh,
        client_id,
        family: Some("f-raced"),
        kind: TokenKind::Refresh,
        grant: "{}",
        expires_at: i64::MAX,
    };
    assert!(!app.service.store().insert_derived_family(REALM, &lineage, &[row]).unwrap());
    assert_eq!(app.service.store().count_tokens(REALM, TokenKind::Refresh).unwrap(), 0);
}

#[tokio::test]
async fn a_refresh_follows_the_subjects_current_registration_too() {
    let app = app();
    let actor = register_exchanger(&app, "quiet", "read write").await;
    let subject = register_exchanger(&app, &format!("delegate:{}", text(&actor, "client_id")), "read write").await;
    let (_, token) = client_credentials(&app, &subject).await;
    let (status, exchanged) = exchange_as(&app, &actor, text(&token, "access_token"), Some("read write")).await;
    assert_eq!(status, 200, "{exchanged}");
    // The subject narrows its own registration to `read`.
    let narrowed = json!({"client_id": subject["client_id"], "client_name": text(&subject, "client_name"),
                          "scope": "read", "grant_types": ["client_credentials", TOKEN_EXCHANGE]});
    assert_eq!(manage_as(&app, &subject, "PUT", Some(&narrowed)).await.0, 200);
    let (status, body) = refresh_as(&app, &actor, text(&exchanged, "refresh_token")).await;
    assert_eq!((status, body["scope"].as_str()), (200, Some("read")), "{body}");
}
