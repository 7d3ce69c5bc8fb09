//! The server without a socket: policies that misbehave fail closed, and
//! nothing half-done is stored.

use std::sync::Arc;

use agentauth_plugin_host::HookKind;
use agentauth_store::{Store, TokenKind};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::{App, Config, RealmSettings};

const REALM: &str = "hostile";

fn app() -> Arc<App> {
    let config = Config { public_url: "https://as.example.test".into(), base_path: "/am".into() };
    let app = App::new(config, Store::open_in_memory().unwrap()).unwrap();
    let settings = RealmSettings {
        ai_agents_enabled: true,
        open_registration: true,
        dcr_plugin: Some("misbehaving-dcr".into()),
        signing_alg: "ES256".into(),
        plugin_timeout_ms: 50,
        plugin_memory_bytes: 8 << 20,
        ..RealmSettings::default()
    };
    let plugins: &[(&str, HookKind, &[u8])] = &[
        ("misbehaving-dcr", HookKind::Dcr, agentauth_plugins::MISBEHAVING_DCR),
        ("misbehaving-may-act", HookKind::MayAct, agentauth_plugins::MISBEHAVING_MAY_ACT),
    ];
    assert!(app.provision_realm(REALM, &settings, plugins).unwrap());
    app
}

async fn call(app: &Arc<App>, request: Request<Full<Bytes>>) -> (u16, Value) {
    let response: Response<Full<Bytes>> = app.handle(request).await;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn register(app: &Arc<App>, client_name: &str) -> (u16, Value) {
    let body = json!({"grant_types": ["client_credentials"], "client_name": client_name, "scope": "read"});
    let request = Request::post(format!("/am/oauth2/realms/root/realms/{REALM}/aiagent/register"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    call(app, request).await
}

async fn client_credentials(app: &Arc<App>, client: &Value) -> (u16, Value) {
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        client["client_id"].as_str().unwrap(),
        client["client_secret"].as_str().unwrap()
    );
    let request = Request::post(format!("/am/oauth2/realms/root/realms/{REALM}/access_token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .unwrap();
    call(app, request).await
}

fn clients(app: &App) -> i64 {
    app.store.count_clients(REALM).unwrap()
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
    assert_eq!(app.store.count_tokens(REALM, TokenKind::Access).unwrap(), 0);
}

#[tokio::test]
async fn a_may_act_policy_may_name_another_client_or_no_one() {
    let app = app();
    let (_, client) = register(&app, "someone-else").await;
    let (status, body) = client_credentials(&app, &client).await;
    assert_eq!(status, 200, "{body}");
    let (_, quiet) = register(&app, "quiet").await;
    assert_eq!(client_credentials(&app, &quiet).await.0, 200);
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
