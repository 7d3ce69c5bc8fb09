//! The console's sign-in and its guard on writes: the session cookie's
//! attributes, CSRF and origin checks, and a realm admin held to its realm.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, REALM, admin_as, app};
use crate::App;

const ORIGIN: &str = "https://as.example.test";

/// What a console request carries besides its method, path and body.
#[derive(Clone, Default)]
struct Sent<'a> {
    cookie: Option<&'a str>,
    csrf: Option<&'a str>,
    origin: Option<&'a str>,
    fetch_site: Option<&'a str>,
    bearer: Option<&'a str>,
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Value,
    text: String,
}

async fn send(app: &Arc<App>, method: &str, path: &str, sent: &Sent<'_>, body: Value) -> Answer {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = sent.cookie {
        request = request.header("cookie", format!("theme=dark; agentauth_console={cookie}"));
    }
    for (name, value) in [
        ("x-agentauth-csrf", sent.csrf),
        ("origin", sent.origin),
        ("sec-fetch-site", sent.fetch_site),
        ("authorization", sent.bearer.map(|b| format!("Bearer {b}")).as_deref()),
    ] {
        if let Some(value) = value {
            request = request.header(name, value);
        }
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        request = request.header("content-type", "application/json");
        Bytes::from(body.to_string())
    };
    let response: Response<Full<Bytes>> = app.handle(request.body(Full::new(body)).unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Signs in with `token` from the console's page; the cookie's value and
/// the CSRF secret.
async fn sign_in(app: &Arc<App>, token: &str) -> (String, String) {
    let from_page = Sent { origin: Some(ORIGIN), fetch_site: Some("same-origin"), ..Sent::default() };
    let answer = send(app, "POST", "/console/api/session", &from_page, json!({ "token": token })).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let set_cookie = answer.headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
    let value = set_cookie.split(';').next().unwrap().strip_prefix("agentauth_console=").unwrap().to_string();
    (value, answer.body["csrf"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn the_console_is_served_by_the_server_and_signs_in_into_a_strict_http_only_cookie() {
    let app = app();
    let page = send(&app, "GET", "/console/", &Sent::default(), Value::Null).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<script type=\"module\" src=\"/console/console.js\">"), "{}", page.text);
    let csp = page.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let script = send(&app, "GET", "/console/console.js", &Sent::default(), Value::Null).await;
    assert_eq!(
        (script.status, script.headers["content-type"].to_str().unwrap()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(!script.text.contains("localStorage.set"), "nothing is kept in localStorage");
    let moved = send(&app, "GET", "/console", &Sent::default(), Value::Null).await;
    assert_eq!((moved.status, moved.headers["location"].to_str().unwrap()), (303, "/console/"));

    // No session yet; a wrong token signs nobody in.
    assert_eq!(send(&app, "GET", "/console/api/session", &Sent::default(), Value::Null).await.status, 401);
    let wrong =
        send(&app, "POST", "/console/api/session", &Sent::default(), json!({"token": "not-an-admin-token"})).await;
    assert_eq!((wrong.status, wrong.body["error"].as_str()), (401, Some("invalid_token")));
    assert!(wrong.headers.get("set-cookie").is_none());
    assert_eq!(wrong.headers["x-content-type-options"], "nosniff", "no answer is sniffed as another type");
    assert_eq!(page.headers.get_all("x-content-type-options").iter().count(), 1);

    let from_page = Sent { origin: Some(ORIGIN), fetch_site: Some("same-origin"), ..Sent::default() };
    let signed_in = send(&app, "POST", "/console/api/session", &from_page, json!({ "token": ADMIN_TOKEN })).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text);
    let cookie = signed_in.headers["set-cookie"].to_str().unwrap();
    for attribute in ["; Path=/console;", "; HttpOnly", "; SameSite=Strict", "; Secure", "; Max-Age=28800"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains(ADMIN_TOKEN) && !signed_in.text.contains(ADMIN_TOKEN), "the token is never handed back");
    assert_eq!(signed_in.body["principal"], "operator");
    let (value, csrf) = sign_in(&app, ADMIN_TOKEN).await;
    let session =
        send(&app, "GET", "/console/api/session", &Sent { cookie: Some(&value), ..Sent::default() }, Value::Null).await;
    assert_eq!((session.status, session.body["csrf"].as_str()), (200, Some(csrf.as_str())));

    // A cookie altered in any way is no session.
    let mut forged = value.clone().into_bytes();
    forged[3] ^= 1;
    let forged = String::from_utf8(forged).unwrap();
    let answer =
        send(&app, "GET", "/console/api/session", &Sent { cookie: Some(&forged), ..Sent::default() }, Value::Null)
            .await;
    assert_eq!(answer.status, 401);

    // Signing out clears the cookie.
    let sent = Sent { cookie: Some(&value), origin: Some(ORIGIN), ..Sent::default() };
    let out = send(&app, "DELETE", "/console/api/session", &sent, Value::Null).await;
    assert_eq!(out.status, 204);
    assert!(out.headers["set-cookie"].to_str().unwrap().starts_with("agentauth_console=; Path=/console; Max-Age=0;"));
}

#[tokio::test]
async fn a_console_write_needs_the_sessions_csrf_token_and_the_consoles_origin() {
    let app = app();
    let (cookie, csrf) = sign_in(&app, ADMIN_TOKEN).await;
    let rotate = format!("/console/api/v1/realms/{REALM}/keys/rotate");
    let keys = |app: Arc<App>| async move { app.service.store().keys(REALM).unwrap().len() };
    app.warm_up(REALM).unwrap();
    let before = keys(Arc::clone(&app)).await;
    let refused = [
        Sent { cookie: Some(&cookie), ..Sent::default() },
        Sent { cookie: Some(&cookie), csrf: Some("not-the-token"), ..Sent::default() },
        Sent { cookie: Some(&cookie), csrf: Some(&csrf), origin: Some("https://evil.example"), ..Sent::default() },
        Sent { cookie: Some(&cookie), csrf: Some(&csrf), fetch_site: Some("cross-site"), ..Sent::default() },
        Sent { cookie: Some(&cookie), csrf: Some(&csrf), origin: Some("null"), ..Sent::default() },
    ];
    for sent in &refused {
        let answer = send(&app, "POST", &rotate, sent, Value::Null).await;
        assert_eq!((answer.status, answer.body["error"].as_str()), (403, Some("access_denied")), "{}", answer.text);
    }
    assert_eq!(keys(Arc::clone(&app)).await, before, "no refused write changed anything");

    // Reads need the session only; writes with its token from its origin pass.
    let read = send(&app, "GET", &format!("/console/api/v1/realms/{REALM}/keys"), &refused[0], Value::Null).await;
    assert_eq!(read.status, 200, "{}", read.text);
    let sent = Sent {
        cookie: Some(&cookie),
        csrf: Some(&csrf),
        origin: Some(ORIGIN),
        fetch_site: Some("same-origin"),
        ..Sent::default()
    };
    let answer = send(&app, "POST", &rotate, &sent, Value::Null).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(keys(Arc::clone(&app)).await, before + 1);

    // The console's API takes no bearer token, and the admin API no cookie.
    let bearer = Sent { bearer: Some(ADMIN_TOKEN), ..Sent::default() };
    assert_eq!(send(&app, "GET", "/console/api/v1/realms", &bearer, Value::Null).await.status, 401);
    let with_cookie = Sent { cookie: Some(&cookie), csrf: Some(&csrf), origin: Some(ORIGIN), ..Sent::default() };
    assert_eq!(send(&app, "GET", "/admin/v1/realms", &with_cookie, Value::Null).await.status, 401);

    // Signing in from another site is refused too.
    let elsewhere = Sent { origin: Some("https://evil.example"), ..Sent::default() };
    let answer = send(&app, "POST", "/console/api/session", &elsewhere, json!({ "token": ADMIN_TOKEN })).await;
    assert_eq!(answer.status, 403);
    assert!(answer.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn a_realm_admins_console_session_keeps_to_its_realm_and_ends_with_its_credential() {
    let app = app();
    assert_eq!(admin_as(&app, ADMIN_TOKEN, "PUT", "/other", json!({})).await.0, 201);
    let (status, created) =
        admin_as(&app, ADMIN_TOKEN, "POST", &format!("/{REALM}/admins"), json!({"name": "ops"})).await;
    assert_eq!(status, 201);
    let token = created["token"].as_str().unwrap();
    let (cookie, csrf) = sign_in(&app, token).await;
    let sent = Sent { cookie: Some(&cookie), csrf: Some(&csrf), origin: Some(ORIGIN), ..Sent::default() };
    let session = send(&app, "GET", "/console/api/session", &sent, Value::Null).await;
    assert_eq!(
        (session.body["principal"].as_str(), session.body["realm"].as_str()),
        (Some("realm-admin"), Some(REALM))
    );

    let own = send(&app, "GET", &format!("/console/api/v1/realms/{REALM}/clients"), &sent, Value::Null).await;
    assert_eq!(own.status, 200, "{}", own.text);
    // Requests forged by hand for another realm, or the operator's
    // operations, are refused like its bearer token's.
    for (method, path) in [
        ("GET", "/console/api/v1/realms/other/clients"),
        ("POST", "/console/api/v1/realms/other/keys/rotate"),
        ("DELETE", "/console/api/v1/realms/other"),
        ("GET", "/console/api/v1/realms"),
        ("PUT", "/console/api/v1/realms/third"),
    ] {
        let answer = send(&app, method, path, &sent, Value::Null).await;
        assert_eq!((answer.status, answer.body["error"].as_str()), (403, Some("access_denied")), "{method} {path}");
    }
    assert!(app.service.store().realm("third").unwrap().is_none());

    // Its changes are audited under its name.
    let answer = send(&app, "POST", &format!("/console/api/v1/realms/{REALM}/keys/rotate"), &sent, Value::Null).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let (_, audit) = admin_as(&app, ADMIN_TOKEN, "GET", &format!("/{REALM}/audit"), Value::Null).await;
    let last = audit["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("rotate-key"), Some("realm-admin:ops")));

    // Revoking the credential ends the session at once.
    let (_, listed) = admin_as(&app, ADMIN_TOKEN, "GET", &format!("/{REALM}/admins"), Value::Null).await;
    let id = listed["admins"][0]["id"].as_str().unwrap();
    assert_eq!(admin_as(&app, ADMIN_TOKEN, "DELETE", &format!("/{REALM}/admins/{id}"), Value::Null).await.0, 204);
    assert_eq!(send(&app, "GET", "/console/api/session", &sent, Value::Null).await.status, 401);
    assert_eq!(
        send(&app, "GET", &format!("/console/api/v1/realms/{REALM}/clients"), &sent, Value::Null).await.status,
        401
    );
}
