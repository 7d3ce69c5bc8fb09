//! The web console under `/console/`: one page, its script and its style,
//! built into the binary (no build step, nothing loaded from elsewhere),
//! and the admin API again under `/console/api/v1/realms/...` for the
//! signed-in console.
//!
//! Signing in (`POST /console/api/session` with `{"token": ...}`) turns an
//! admin token into a session cookie (see `agentauth_service::console`):
//! `HttpOnly`, `SameSite=Strict`, scoped to `/console`, `Secure` unless
//! the server's public URL is plain HTTP. The console's requests carry
//! the cookie, never the token. A request that changes anything must also
//! come from the console's own origin (`Origin`, `Sec-Fetch-Site`) and
//! carry the session's CSRF secret in [`CSRF_HEADER`]; a forged one is
//! refused with 403 before its body is read. A realm admin's session is
//! held to its realm exactly as its bearer token is.

use std::sync::Arc;

use agentauth_service::admin::UploadPermit;
use agentauth_service::console::{CONSOLE_SESSION_LIFETIME, ConsoleSession};
use agentauth_service::{AdminError, Principal};
use hyper::header::SET_COOKIE;
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method};
use serde_json::{Value, json};

use crate::App;
use crate::http::{Reply, has_media_type};
use crate::route::AdminOp;

/// The session cookie.
pub const COOKIE_NAME: &str = "agentauth_console";
/// The header a write carries the session's CSRF secret in.
pub const CSRF_HEADER: &str = "x-agentauth-csrf";

/// The console's files: name (empty for the page), media type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("", "text/html; charset=utf-8", include_str!("../console/index.html")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
];

/// Whether `name` is one of the console's files (other than its page).
pub fn is_file(name: &str) -> bool {
    !name.is_empty() && FILES.iter().any(|(n, ..)| *n == name)
}

/// `GET /console/{file}`; 404 while the admin API is disabled, as if
/// there were no console.
pub fn file(app: &App, name: &str) -> Reply {
    if !app.service.admin_enabled() {
        return Reply::not_found();
    }
    match FILES.iter().find(|(n, ..)| *n == name) {
        Some((_, media_type, content)) => Reply::console_file(media_type, content),
        None => Reply::not_found(),
    }
}

/// `/console/api/session`: GET the signed-in session, POST `{"token":
/// ...}` to sign in, DELETE to sign out. Blocking: a realm admin's token
/// is looked up in the store.
pub fn session(app: &App, parts: &Parts, body: &[u8]) -> Reply {
    let service = &app.service;
    match parts.method {
        Method::GET => match service.console_session(cookie(&parts.headers)) {
            Ok(session) => Reply::json(200, &session_json(&session)),
            Err(e) => Reply::from(e),
        },
        Method::POST => {
            if let Err(e) = from_the_console(app, &parts.headers) {
                return Reply::from(e);
            }
            if !has_media_type(&parts.headers, "application/json") {
                return Reply::from(AdminError::Invalid("sign in with a JSON body: {\"token\": \"...\"}".into()));
            }
            let token = crate::http::parse_json(body)
                .ok()
                .and_then(|body| body.get("token").and_then(Value::as_str).map(str::to_string));
            let Some(token) = token else {
                return Reply::from(AdminError::Invalid("sign in with a JSON body: {\"token\": \"...\"}".into()));
            };
            match service.console_sign_in(token.trim()) {
                Ok((session, sealed)) => {
                    tracing::info!(principal = ?session.principal, "console sign-in");
                    Reply::json(200, &session_json(&session))
                        .with_header(SET_COOKIE, set_cookie(app, &sealed, CONSOLE_SESSION_LIFETIME))
                }
                Err(e) => Reply::from(e),
            }
        }
        _ => match from_the_console(app, &parts.headers) {
            Ok(()) => Reply::no_content().with_header(SET_COOKIE, set_cookie(app, "", 0)),
            Err(e) => Reply::from(e),
        },
    }
}

/// Identifies the console's caller by its session, checks a write's
/// origin and CSRF secret, then its right to `op` on `realm` and an
/// upload's admission, as `admin::admit` does for a bearer. Blocking.
pub fn admit(
    app: &Arc<App>,
    method: &Method,
    headers: &HeaderMap,
    realm: &str,
    op: &AdminOp,
) -> Result<(Principal, Option<UploadPermit>), Reply> {
    let session = app.service.console_session(cookie(headers))?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        from_the_console(app, headers)?;
        if !session.csrf_matches(headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())) {
            return Err(Reply::from(AdminError::Forbidden("this change lacks the console's CSRF token".into())));
        }
    }
    crate::admin::admit_principal(app, session.principal, realm, op)
}

/// Refuses a request a browser sent from another site: its `Origin`, when
/// present, must be the server's, and its `Sec-Fetch-Site`, when present,
/// `same-origin`.
fn from_the_console(app: &App, headers: &HeaderMap) -> Result<(), AdminError> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    let foreign = || AdminError::Forbidden("the console accepts changes from its own pages only".into());
    if header("origin").is_some_and(|origin| origin != app.origin) {
        return Err(foreign());
    }
    if header("sec-fetch-site").is_some_and(|site| site != "same-origin") {
        return Err(foreign());
    }
    Ok(())
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    crate::http::cookie(headers, COOKIE_NAME)
}

fn set_cookie(app: &App, value: &str, max_age: i64) -> String {
    let secure = if app.origin.starts_with("https://") { "; Secure" } else { "" };
    format!("{COOKIE_NAME}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn session_json(session: &ConsoleSession) -> Value {
    let (kind, realm, name) = match &session.principal {
        Principal::Operator => ("operator", None, None),
        Principal::RealmAdmin { realm, name } => ("realm-admin", Some(realm), Some(name)),
    };
    json!({
        "principal": kind, "realm": realm, "name": name,
        "csrf": session.csrf, "expires_at": session.expires_at,
    })
}
