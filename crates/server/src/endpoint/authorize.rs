//! The authorization endpoint (`authorize`, RFC 6749 §3.1): a browser
//! brings the client's request with GET; the server answers with its
//! login page, its consent page, or a redirect back to the client; the
//! pages post their forms back here.
//!
//! The pages are plain HTML and CSS, with no script and nothing loaded
//! from elsewhere. Two cookies, both `HttpOnly`, `SameSite=Lax`, `Secure`
//! unless the issuer is plain-HTTP loopback, and scoped to the realm's
//! path: the session (who signed in, sealed, for
//! [`SESSION_LIFETIME`](agentauth_service::authorize::SESSION_LIFETIME))
//! and the CSRF nonce that a posted form must match.

use std::net::IpAddr;

use agentauth_core::authorize::Refusal;
use agentauth_core::{ErrorCode, OAuthError};
use agentauth_service::authorize::{FORM_LIFETIME, Pending, SESSION_LIFETIME, Step, redirect_to};
use agentauth_service::password::Password;
use agentauth_service::trust::UpstreamRefused;
use agentauth_service::users::LoginError;
use agentauth_service::{RealmRuntime, Service};
use hyper::Method;
use hyper::header::{RETRY_AFTER, SET_COOKIE};
use hyper::http::request::Parts;

use crate::http::{Form, Reply, cookie, has_media_type};

const SESSION_COOKIE: &str = "agentauth_session";
const CSRF_COOKIE: &str = "agentauth_csrf";
/// Binds a sign-in at an upstream provider to the browser that started it.
const UPSTREAM_COOKIE: &str = "agentauth_upstream";

/// Answers a GET (a new request) or a POST (a form of the pages).
pub fn authorize(
    service: &Service,
    realm: &RealmRuntime,
    parts: &Parts,
    body: &[u8],
    source: Option<IpAddr>,
    request_id: &str,
) -> Reply {
    if parts.method == Method::GET {
        let params: Vec<(String, String)> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(n, v)| (n.into_owned(), v.into_owned())).collect())
            .unwrap_or_default();
        if parts.uri.path().ends_with("/authorize/upstream") {
            return upstream_callback(service, realm, parts, &params, request_id);
        }
        let pending = match service.authorization_request(realm, &params, source) {
            Ok(pending) => pending,
            Err(Refusal::Page(error)) => return error_page(realm, &error),
            Err(Refusal::Redirect { redirect_uri, state, error }) => {
                let params = [("error", error.code.as_str()), ("error_description", &*error.description)];
                return Reply::redirect(redirect_to(&redirect_uri, &params, state.as_deref(), &realm.issuer));
            }
        };
        let signed_in = cookie(&parts.headers, SESSION_COOKIE).and_then(|s| service.open_session(realm, s));
        return match signed_in {
            None => login_page(service, realm, &pending, None, 200),
            Some((session, user)) => decide(service, realm, &pending, &session, &user, false, request_id, Vec::new()),
        };
    }
    if !has_media_type(&parts.headers, "application/x-www-form-urlencoded") {
        return error_page(realm, &OAuthError::invalid_request("the form must be application/x-www-form-urlencoded"));
    }
    let Ok(form) = Form::parse(body) else {
        return error_page(realm, &OAuthError::invalid_request("the form cannot be read"));
    };
    let sealed = form.get("pending").unwrap_or_default();
    let Some(pending) = service.open_pending(realm, sealed, cookie(&parts.headers, CSRF_COOKIE)) else {
        return error_page(
            realm,
            &OAuthError::invalid_request(
                "this form has expired or was not sent from the page this server showed; go back to the application \
             and start again",
            ),
        );
    };
    match form.get("action") {
        Some("login") => {
            let username = form.get("username").unwrap_or_default();
            let password = Password::new(form.get("password").unwrap_or_default().to_string());
            match service.authenticate_user(realm, username, &password, source) {
                Ok(user) => {
                    let session = service.session(realm, &user);
                    let cookie = set_cookie(realm, SESSION_COOKIE, &service.seal(&session), SESSION_LIFETIME);
                    decide(service, realm, &pending, &session, &user, false, request_id, vec![cookie])
                }
                Err(e @ LoginError::Failed) => login_page(service, realm, &pending, Some(&e.to_string()), 401),
                Err(e @ LoginError::NotHere) => login_page(service, realm, &pending, Some(&e.to_string()), 403),
                Err(e @ LoginError::SlowDown { retry_after }) => {
                    login_page(service, realm, &pending, Some(&e.to_string()), 429)
                        .with_header(RETRY_AFTER, retry_after.to_string())
                }
                Err(e @ LoginError::Busy { retry_after }) => {
                    login_page(service, realm, &pending, Some(&e.to_string()), 503)
                        .with_header(RETRY_AFTER, retry_after.to_string())
                }
                Err(LoginError::Internal) => error_page(realm, &OAuthError::server_error("internal error")),
            }
        }
        Some(answer @ ("allow" | "deny")) => {
            let Some((session, user)) =
                cookie(&parts.headers, SESSION_COOKIE).and_then(|s| service.open_session(realm, s))
            else {
                return login_page(service, realm, &pending, None, 200);
            };
            if answer == "deny" {
                let refused = OAuthError::new(ErrorCode::AccessDenied, "the user did not allow the request");
                let _ = service.decision(realm, "authorize", request_id, || Err::<(), _>(refused.clone()));
                return Reply::redirect(service.error_redirect(realm, &pending, &refused));
            }
            decide(service, realm, &pending, &session, &user, true, request_id, Vec::new())
        }
        Some("upstream") => {
            let name = form.get("upstream").unwrap_or_default();
            match service.start_upstream_login(realm, &pending, name) {
                Ok(start) => Reply::redirect(start.location)
                    .with_header(SET_COOKIE, set_cookie(realm, UPSTREAM_COOKIE, &start.nonce, FORM_LIFETIME)),
                Err(error) => error_page(realm, &error),
            }
        }
        _ => error_page(realm, &OAuthError::invalid_request("the form has no action")),
    }
}

/// The browser back from an upstream provider: the user signed in there
/// becomes this realm's signed-in user, and the request goes on as after
/// a local login.
fn upstream_callback(
    service: &Service,
    realm: &RealmRuntime,
    parts: &Parts,
    params: &[(String, String)],
    request_id: &str,
) -> Reply {
    match service.finish_upstream_login(realm, params, cookie(&parts.headers, UPSTREAM_COOKIE)) {
        Ok((pending, session, user)) => {
            let signed_in = set_cookie(realm, SESSION_COOKIE, &service.seal(&session), SESSION_LIFETIME);
            let spent = set_cookie(realm, UPSTREAM_COOKIE, "", 0);
            // The consent page's form needs the CSRF cookie of this
            // pending request, which the login page set in this browser.
            decide(service, realm, &pending, &session, &user, false, request_id, vec![signed_in, spent])
        }
        // Back in the browser that started, but not signed in (the user
        // declined there, or its answer did not hold): the login page
        // again, saying why, to try again or another way.
        Err(UpstreamRefused { pending: Some(pending), error }) if error.code != ErrorCode::ServerError => {
            let status = error.code.http_status().max(400);
            login_page(service, realm, &pending, Some(&error.description), status)
        }
        Err(UpstreamRefused { error, .. }) => error_page(realm, &error),
    }
}

/// Decides `pending` for a signed-in user (audited), and shows the
/// outcome: a redirect to the client, or the consent page.
#[allow(clippy::too_many_arguments)]
fn decide(
    service: &Service,
    realm: &RealmRuntime,
    pending: &Pending,
    session: &agentauth_service::authorize::Session,
    user: &agentauth_service::users::User,
    consented: bool,
    request_id: &str,
    cookies: Vec<String>,
) -> Reply {
    let step = service
        .decision(realm, "authorize", request_id, || service.authorize(realm, pending, session, user, consented));
    let mut reply = match step {
        Ok(Step::Redirect(location)) => Reply::redirect(location),
        Ok(Step::Consent { client_name, client_id, scopes, resources }) => {
            consent_page(service, realm, pending, &client_name, &client_id, &scopes, &resources)
        }
        Err(error) => Reply::redirect(service.error_redirect(realm, pending, &error)),
    };
    for cookie in cookies {
        reply = reply.with_header(SET_COOKIE, cookie);
    }
    reply
}

/// A `Set-Cookie` value for the realm's path, living `max_age` seconds.
fn set_cookie(realm: &RealmRuntime, name: &str, value: &str, max_age: i64) -> String {
    let path = url::Url::parse(&realm.issuer).map(|u| u.path().to_string()).unwrap_or_else(|_| "/".into());
    let secure = if realm.issuer.starts_with("https://") { "; Secure" } else { "" };
    format!("{name}={value}; Path={path}/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// Escapes text for HTML (content and quoted attribute values).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2430;margin:0}\
main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 1px 3px rgba(0,0,0,.15)}h1{font-size:1.35rem;margin-top:0}label{display:block;margin:1rem 0 .3rem;\
font-weight:600}input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;\
border:1px solid #8a93a3;border-radius:4px;font-size:1rem}button{margin-top:1.3rem;padding:.6rem 1.2rem;\
font-size:1rem;border-radius:4px;border:1px solid #1f4fbf;background:#1f4fbf;color:#fff;cursor:pointer}\
button.secondary{background:#fff;color:#1f4fbf;margin-left:.5rem}button:focus,input:focus{outline:3px solid #f0b400;\
outline-offset:1px}.error{color:#a40e26;font-weight:600}.brand{color:#4a5261;font-size:.9rem;margin:0 0 1rem}ul{padding-left:1.2rem}code{word-break:break-all}";

/// A page in the realm's branding: its `page_title` above the content,
/// its `page_css` after the pages' own (checked to hold no `<`, so it
/// cannot leave the style element).
fn page(realm: &RealmRuntime, title: &str, body: &str) -> String {
    let brand = realm.settings.page_title.as_deref();
    let heading = brand.map_or_else(String::new, |b| format!("<p class=\"brand\">{}</p>", escape(b)));
    let full_title = brand.map_or_else(|| escape(title), |b| format!("{} · {}", escape(title), escape(b)));
    let css = realm.settings.page_css.as_deref().filter(|css| !css.contains('<')).unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{full_title}</title>\
         <style>{STYLE}{css}</style></head><body><main>{heading}{body}</main></body></html>"
    )
}

/// Where the answer goes, as the user should see it before answering
/// (MCP requires the redirect URI's host be shown): `host` or
/// `host:port`. A client's name is its own to choose; the host of its
/// redirect URI is not.
fn destination(pending: &Pending) -> String {
    let host = url::Url::parse(&pending.redirect_uri).ok().and_then(|u| {
        let host = u.host_str()?.to_string();
        Some(match u.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        })
    });
    let host = host.unwrap_or_else(|| pending.redirect_uri.clone());
    format!("<p>You will then return to <strong>{}</strong>.</p>", escape(&host))
}

/// The client as the login page names it: its registered name, and for a
/// client known by its metadata document the document's host too (the
/// draft asks it be shown: the name is the document's to choose, the host
/// is not).
fn client_shown(service: &Service, realm: &RealmRuntime, client_id: &str) -> String {
    let name = escape(&service.client_name(realm, client_id));
    match url::Url::parse(client_id).ok().filter(|u| matches!(u.scheme(), "https" | "http")) {
        Some(url) => format!("{name}</strong> from <strong>{}", escape(url.host_str().unwrap_or_default())),
        None => name,
    }
}

/// A button per upstream provider the realm signs users in at; the
/// first has the focus when the page has no password form.
fn upstream_buttons(service: &Service, realm: &RealmRuntime, pending: &Pending, first_focused: bool) -> String {
    let sealed = escape(&service.seal(pending));
    let class = if realm.settings.local_login { " class=\"secondary\"" } else { "" };
    service
        .upstream_logins(realm)
        .into_iter()
        .enumerate()
        .map(|(i, (name, label))| {
            let focus = if first_focused && i == 0 { " autofocus" } else { "" };
            format!(
                "<form method=\"post\"><input type=\"hidden\" name=\"pending\" value=\"{sealed}\">\
                 <input type=\"hidden\" name=\"action\" value=\"upstream\">\
                 <input type=\"hidden\" name=\"upstream\" value=\"{}\">\
                 <button type=\"submit\"{class}{focus}>Sign in with {}</button></form>",
                escape(&name),
                escape(&label)
            )
        })
        .collect()
}

/// The login page for `pending`, with the CSRF cookie its form needs.
fn login_page(service: &Service, realm: &RealmRuntime, pending: &Pending, failure: Option<&str>, status: u16) -> Reply {
    let message = failure.map_or_else(String::new, |e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)));
    let local = realm.settings.local_login;
    let password_form = if local {
        format!(
            "<form method=\"post\"><input type=\"hidden\" name=\"pending\" value=\"{sealed}\">\
             <input type=\"hidden\" name=\"action\" value=\"login\">\
             <label for=\"username\">Username</label>\
             <input type=\"text\" id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
             <label for=\"password\">Password</label>\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
             <button type=\"submit\">Sign in</button></form>",
            sealed = escape(&service.seal(pending)),
        )
    } else {
        String::new()
    };
    let body = format!(
        "<h1>Sign in</h1><p>to let <strong>{client}</strong> use your account in <strong>{realm}</strong>.</p>\
         {destination}{message}{password_form}{upstream}",
        client = client_shown(service, realm, &pending.client_id),
        realm = escape(&realm.name),
        destination = destination(pending),
        upstream = upstream_buttons(service, realm, pending, !local),
    );
    Reply::html(status, page(realm, "Sign in", &body))
        .with_header(SET_COOKIE, set_cookie(realm, CSRF_COOKIE, &pending.nonce, FORM_LIFETIME))
}

/// The consent page: the client, the scopes, the resources.
fn consent_page(
    service: &Service,
    realm: &RealmRuntime,
    pending: &Pending,
    client_name: &str,
    client_id: &str,
    scopes: &[String],
    resources: &[String],
) -> Reply {
    let list =
        |items: &[String]| items.iter().map(|i| format!("<li><code>{}</code></li>", escape(i))).collect::<String>();
    let scopes_html =
        if scopes.is_empty() { "<li>nothing beyond signing you in</li>".to_string() } else { list(scopes) };
    let resources_html =
        if resources.is_empty() { String::new() } else { format!("<p>for use at:</p><ul>{}</ul>", list(resources)) };
    let body = format!(
        "<h1>Allow access?</h1><p><strong>{name}</strong> (<code>{id}</code>) asks to act for you with:</p>\
         <ul>{scopes_html}</ul>{resources_html}{destination}\
         <form method=\"post\"><input type=\"hidden\" name=\"pending\" value=\"{sealed}\">\
         <button type=\"submit\" name=\"action\" value=\"allow\">Allow</button>\
         <button type=\"submit\" name=\"action\" value=\"deny\" class=\"secondary\">Deny</button></form>",
        name = escape(client_name),
        id = escape(client_id),
        destination = destination(pending),
        sealed = escape(&service.seal(pending)),
    );
    Reply::html(200, page(realm, "Allow access?", &body))
        .with_header(SET_COOKIE, set_cookie(realm, CSRF_COOKIE, &pending.nonce, FORM_LIFETIME))
}

/// An error the browser shows, because the client cannot be trusted with
/// it (RFC 6749 §4.1.2.1), or the form is not one this server gave.
fn error_page(realm: &RealmRuntime, error: &OAuthError) -> Reply {
    let body = format!(
        "<h1>This request cannot be completed</h1><p class=\"error\" role=\"alert\">{}</p><p><code>{}</code></p>",
        escape(&error.description),
        error.code.as_str()
    );
    Reply::html(error.code.http_status().max(400), page(realm, "Error", &body))
}
