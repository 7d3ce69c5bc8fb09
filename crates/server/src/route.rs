//! Which endpoint a request is for: a pure function of method and path.
//!
//! OAuth endpoints live under `{base}/oauth2/realms/root/realms/{realm}/`,
//! as in PingAM, so PingAM clients and the seed's curl commands work
//! unchanged. A realm's metadata is also at RFC 8414's location, the
//! issuer's path inserted after [`AUTHORIZATION_SERVER_METADATA`].

use agentauth_service::telemetry::Endpoint;
use hyper::Method;

/// An endpoint and the realm it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Liveness: the process answers.
    Health,
    /// Readiness: the process can serve, its database answering.
    Ready,
    /// The versions the server is made of.
    Version,
    /// The metrics, for the operator (`GET /metrics`).
    Metrics,
    Register {
        realm: String,
        ai_agent: bool,
    },
    /// RFC 7592 client configuration: GET, PUT or DELETE on a
    /// registration endpoint with `?client_id=`.
    Manage {
        realm: String,
    },
    Token {
        realm: String,
    },
    Introspect {
        realm: String,
    },
    Revoke {
        realm: String,
    },
    /// The authorization endpoint: GET a request, POST its forms.
    Authorize {
        realm: String,
    },
    Jwks {
        realm: String,
    },
    /// The realm's metadata (RFC 8414), at either of its locations.
    Discovery {
        realm: String,
    },
    /// A user's own agents (`agents`, `agents/{client_id}`, with
    /// `/disable`, and `agents/disable-all`), reached with the user's
    /// access token. `path` is the endpoint as requested, after the
    /// realm's issuer (`agents/...`), which a DPoP proof's `htu` names.
    Agents {
        realm: String,
        op: AgentsOp,
        path: String,
    },
    /// The admin API, `/admin/v1/realms/{realm}/...`, or the same
    /// operation under `/console/api/v1/realms/{realm}/...` (`console`),
    /// authenticated by the console's session cookie instead of a bearer.
    Admin {
        realm: String,
        op: AdminOp,
        console: bool,
    },
    /// The console's page and its script and style (`GET /console/...`);
    /// the file, empty for the page.
    Console {
        file: String,
    },
    /// `/console/api/session`: GET who is signed in, POST to sign in,
    /// DELETE to sign out.
    ConsoleSession,
    /// A known path with a method it does not answer.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

impl Route {
    /// The realm the request is for, when it names one.
    pub fn realm(&self) -> Option<&str> {
        match self {
            Self::Register { realm, .. }
            | Self::Manage { realm }
            | Self::Token { realm }
            | Self::Introspect { realm }
            | Self::Revoke { realm }
            | Self::Authorize { realm }
            | Self::Jwks { realm }
            | Self::Discovery { realm }
            | Self::Agents { realm, .. }
            | Self::Admin { realm, .. } => Some(realm).filter(|r| !r.is_empty()).map(String::as_str),
            Self::Health
            | Self::Ready
            | Self::Version
            | Self::Metrics
            | Self::Console { .. }
            | Self::ConsoleSession
            | Self::MethodNotAllowed { .. }
            | Self::NotFound => None,
        }
    }

    /// The endpoint whose latency the request counts for, if any.
    pub fn endpoint(&self) -> Option<Endpoint> {
        Some(match self {
            Self::Register { .. } => Endpoint::Register,
            Self::Manage { .. } => Endpoint::Manage,
            Self::Token { .. } => Endpoint::Token,
            Self::Introspect { .. } => Endpoint::Introspect,
            Self::Revoke { .. } => Endpoint::Revoke,
            Self::Authorize { .. } => Endpoint::Authorize,
            Self::Jwks { .. } => Endpoint::Jwks,
            Self::Discovery { .. } => Endpoint::Discovery,
            Self::Agents { .. } => Endpoint::Agents,
            Self::Admin { .. } | Self::ConsoleSession => Endpoint::Admin,
            Self::Health
            | Self::Console { .. }
            | Self::Ready
            | Self::Version
            | Self::Metrics
            | Self::MethodNotAllowed { .. }
            | Self::NotFound => return None,
        })
    }
}

/// An operation on a user's own agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentsOp {
    List,
    Show { client_id: String },
    Disable { client_id: String },
    DisableAll,
}

/// An operation of the admin API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminOp {
    ListPlugins,
    PushPlugin {
        name: String,
    },
    PluginVersions {
        name: String,
    },
    DeletePlugin {
        name: String,
    },
    Activate {
        name: String,
    },
    Rollback {
        name: String,
    },
    DeleteVersion {
        name: String,
        version: i64,
    },
    /// `POST plugins/{name}/versions/{version}/test`: runs the version on
    /// the test case in the body.
    TestPlugin {
        name: String,
        version: i64,
    },
    Hooks,
    SetHooks,
    Audit,
    /// The audit of decisions (tokens, registrations), filtered.
    Decisions,
    Keys,
    RotateKey,
    /// `GET /admin/v1/realms` (the realm name is empty).
    ListRealms,
    ShowRealm,
    CreateRealm,
    UpdateRealm,
    DeleteRealm,
    ListAdmins,
    CreateAdmin,
    DeleteAdmin {
        id: String,
    },
    /// `GET users`: a page of the realm's users, or the one of a username.
    ListUsers,
    CreateUser,
    ShowUser {
        subject: String,
    },
    DeleteUser {
        subject: String,
    },
    /// `POST users/{subject}/disable` (`enable: false`) or `.../enable`.
    SetUserState {
        subject: String,
        enable: bool,
    },
    SetUserPassword {
        subject: String,
    },
    /// `GET users/{subject}/consents`.
    ListConsents {
        subject: String,
    },
    /// `DELETE users/{subject}/consents/{client_id}`.
    RevokeConsent {
        subject: String,
        client_id: String,
    },
    /// `GET clients`: a page of the realm's clients.
    ListClients,
    ShowClient {
        client_id: String,
    },
    /// `DELETE clients/{client_id}`, without its registration token.
    DeleteClient {
        client_id: String,
    },
    /// `POST clients/{client_id}/disable` (`enable: false`) or `.../enable`.
    SetClientState {
        client_id: String,
        enable: bool,
    },
    /// `POST owners/{owner}/disable`: every active client of the owner.
    DisableOwned {
        owner: String,
    },
    /// `GET trusted-issuers`.
    ListTrustedIssuers,
    /// `GET trusted-issuers/{name}`.
    ShowTrustedIssuer {
        name: String,
    },
    /// `PUT trusted-issuers/{name}`: add or replace.
    PutTrustedIssuer {
        name: String,
    },
    /// `DELETE trusted-issuers/{name}`.
    DeleteTrustedIssuer {
        name: String,
    },
}

/// Where the metrics are served, on the main listener and the metrics one.
pub const METRICS_PATH: &str = "/metrics";

/// RFC 8414 §3.1's well-known URI: a realm's metadata is here followed by
/// the path of its issuer, `{base}/oauth2/realms/root/realms/{realm}`.
pub const AUTHORIZATION_SERVER_METADATA: &str = "/.well-known/oauth-authorization-server";

pub fn route(method: &Method, path: &str, base: &str) -> Route {
    if path == "/healthz" {
        return if method == Method::GET { Route::Health } else { Route::MethodNotAllowed { allow: "GET" } };
    }
    if path == "/readyz" {
        return if method == Method::GET { Route::Ready } else { Route::MethodNotAllowed { allow: "GET" } };
    }
    if path == "/version" {
        return if method == Method::GET { Route::Version } else { Route::MethodNotAllowed { allow: "GET" } };
    }
    if path == METRICS_PATH {
        return if method == Method::GET { Route::Metrics } else { Route::MethodNotAllowed { allow: "GET" } };
    }
    if let Some(rest) = path.strip_prefix("/console") {
        return console_route(method, rest);
    }
    if let Some(rest) = path.strip_prefix("/admin/v1/realms") {
        return admin_api_route(method, rest, false);
    }
    if let Some(issuer_path) = path.strip_prefix(AUTHORIZATION_SERVER_METADATA) {
        // The issuer's path exactly: nothing after the realm's name, as
        // the issuer has nothing after it.
        let realm = issuer_path.strip_prefix(base).and_then(|p| p.strip_prefix("/oauth2/realms/root/realms/"));
        return match realm.filter(|r| is_realm_name(r)) {
            None => Route::NotFound,
            Some(realm) if *method == Method::GET => Route::Discovery { realm: realm.to_string() },
            Some(_) => Route::MethodNotAllowed { allow: "GET" },
        };
    }
    let Some(rest) = path.strip_prefix(base).and_then(|p| p.strip_prefix("/oauth2/realms/root/realms/")) else {
        return Route::NotFound;
    };
    let Some((realm, endpoint)) = rest.split_once('/') else {
        return Route::NotFound;
    };
    if !is_realm_name(realm) {
        return Route::NotFound;
    }
    let realm = realm.to_string();
    if matches!(endpoint, "aiagent/register" | "register")
        && matches!(*method, Method::GET | Method::PUT | Method::DELETE)
    {
        return Route::Manage { realm };
    }
    if endpoint == "agents" || endpoint.starts_with("agents/") {
        return agents_route(method, realm, endpoint);
    }
    // `authorize/upstream`: where an upstream provider sends the browser
    // back after signing the user in there.
    if endpoint == "authorize" || endpoint == "authorize/upstream" {
        return match *method {
            Method::GET | Method::POST => Route::Authorize { realm },
            _ => Route::MethodNotAllowed { allow: "GET, POST" },
        };
    }
    let (route, allow) = match endpoint {
        "aiagent/register" => (Route::Register { realm, ai_agent: true }, Method::POST),
        "register" => (Route::Register { realm, ai_agent: false }, Method::POST),
        "access_token" => (Route::Token { realm }, Method::POST),
        "introspect" => (Route::Introspect { realm }, Method::POST),
        "token/revoke" => (Route::Revoke { realm }, Method::POST),
        "connect/jwk_uri" => (Route::Jwks { realm }, Method::GET),
        ".well-known/openid-configuration" => (Route::Discovery { realm }, Method::GET),
        _ => return Route::NotFound,
    };
    if *method == allow {
        route
    } else {
        Route::MethodNotAllowed {
            allow: match (allow, endpoint) {
                (Method::GET, _) => "GET",
                (_, "aiagent/register" | "register") => "GET, POST, PUT, DELETE",
                _ => "POST",
            },
        }
    }
}

/// `/console` and what is under it: the page, its files, the session,
/// and the admin API for the signed-in console.
fn console_route(method: &Method, rest: &str) -> Route {
    let get_only = |route: Route| if *method == Method::GET { route } else { Route::MethodNotAllowed { allow: "GET" } };
    match rest {
        "" | "/" => get_only(Route::Console { file: String::new() }),
        "/api/session" => match *method {
            Method::GET | Method::POST | Method::DELETE => Route::ConsoleSession,
            _ => Route::MethodNotAllowed { allow: "GET, POST, DELETE" },
        },
        _ => match rest.strip_prefix("/api/v1/realms") {
            Some(rest) => admin_api_route(method, rest, true),
            None => match rest.strip_prefix('/') {
                Some(file) if crate::console::is_file(file) => get_only(Route::Console { file: file.to_string() }),
                _ => Route::NotFound,
            },
        },
    }
}

/// The admin API after its `.../realms` prefix: the list of realms, or an
/// operation on one.
fn admin_api_route(method: &Method, rest: &str, console: bool) -> Route {
    let route = match rest {
        "" => match *method {
            Method::GET => Route::Admin { realm: String::new(), op: AdminOp::ListRealms, console },
            _ => Route::MethodNotAllowed { allow: "GET" },
        },
        _ => match rest.strip_prefix('/') {
            Some(rest) => admin_route(method, rest),
            None => Route::NotFound,
        },
    };
    match route {
        Route::Admin { realm, op, .. } => Route::Admin { realm, op, console },
        other => other,
    }
}

/// `agents...` of realm `realm`: a client id is one path segment,
/// percent-decoded (it may be a URL).
fn agents_route(method: &Method, realm: String, endpoint: &str) -> Route {
    let segments: Vec<&str> = endpoint.split('/').collect();
    let id = |n: &str| percent_encoding::percent_decode_str(n).decode_utf8().map(|d| d.into_owned()).ok();
    let (op, allow) = match (&segments[1..], method.as_str()) {
        ([], "GET") => (Some(AgentsOp::List), ""),
        ([], _) => (None, "GET"),
        (["disable-all"], "POST") => (Some(AgentsOp::DisableAll), ""),
        ([n], "GET") if !n.is_empty() => match id(n) {
            Some(client_id) => (Some(AgentsOp::Show { client_id }), ""),
            None => return Route::NotFound,
        },
        ([n], _) if !n.is_empty() => (None, if *n == "disable-all" { "GET, POST" } else { "GET" }),
        ([n, "disable"], "POST") if !n.is_empty() => match id(n) {
            Some(client_id) => (Some(AgentsOp::Disable { client_id }), ""),
            None => return Route::NotFound,
        },
        ([n, "disable"], _) if !n.is_empty() => (None, "POST"),
        _ => return Route::NotFound,
    };
    match op {
        Some(op) => Route::Agents { realm, op, path: endpoint.to_string() },
        None => Route::MethodNotAllowed { allow },
    }
}

fn admin_route(method: &Method, rest: &str) -> Route {
    let segments: Vec<&str> = rest.split('/').collect();
    let Some((realm, segments)) = segments.split_first() else {
        return Route::NotFound;
    };
    if !is_realm_name(realm) || segments.iter().skip(1).any(|s| s.is_empty()) {
        return Route::NotFound;
    }
    // Segments are percent-decoded: a client id may be a URL, and an
    // owner may hold a ':' (RFC 3986 §3.3).
    let name = |n: &str| {
        percent_encoding::percent_decode_str(n).decode_utf8().map_or_else(|_| n.to_string(), |d| d.into_owned())
    };
    let (op, allow): (Option<AdminOp>, &'static str) = match (segments, method.as_str()) {
        ([], "GET") => (Some(AdminOp::ShowRealm), ""),
        ([], "PUT") => (Some(AdminOp::CreateRealm), ""),
        ([], "PATCH") => (Some(AdminOp::UpdateRealm), ""),
        ([], "DELETE") => (Some(AdminOp::DeleteRealm), ""),
        ([], _) => (None, "GET, PUT, PATCH, DELETE"),
        (["plugins"], "GET") => (Some(AdminOp::ListPlugins), ""),
        (["plugins"], _) => (None, "GET"),
        (["plugins", n], "POST") => (Some(AdminOp::PushPlugin { name: name(n) }), ""),
        (["plugins", n], "GET") => (Some(AdminOp::PluginVersions { name: name(n) }), ""),
        (["plugins", n], "DELETE") => (Some(AdminOp::DeletePlugin { name: name(n) }), ""),
        (["plugins", _], _) => (None, "GET, POST, DELETE"),
        (["plugins", n, "activate"], "POST") => (Some(AdminOp::Activate { name: name(n) }), ""),
        (["plugins", n, "rollback"], "POST") => (Some(AdminOp::Rollback { name: name(n) }), ""),
        (["plugins", _, "activate" | "rollback"], _) => (None, "POST"),
        (["plugins", n, "versions", v], "DELETE") => match v.parse() {
            Ok(version) => (Some(AdminOp::DeleteVersion { name: name(n), version }), ""),
            Err(_) => return Route::NotFound,
        },
        (["plugins", _, "versions", _], _) => (None, "DELETE"),
        (["plugins", n, "versions", v, "test"], "POST") => match v.parse() {
            Ok(version) => (Some(AdminOp::TestPlugin { name: name(n), version }), ""),
            Err(_) => return Route::NotFound,
        },
        (["plugins", _, "versions", _, "test"], _) => (None, "POST"),
        (["hooks"], "GET") => (Some(AdminOp::Hooks), ""),
        (["hooks"], "PUT") => (Some(AdminOp::SetHooks), ""),
        (["hooks"], _) => (None, "GET, PUT"),
        (["keys"], "GET") => (Some(AdminOp::Keys), ""),
        (["keys"], _) => (None, "GET"),
        (["keys", "rotate"], "POST") => (Some(AdminOp::RotateKey), ""),
        (["keys", "rotate"], _) => (None, "POST"),
        (["audit"], "GET") => (Some(AdminOp::Audit), ""),
        (["decisions"], "GET") => (Some(AdminOp::Decisions), ""),
        (["decisions"], _) => (None, "GET"),
        (["audit"], _) => (None, "GET"),
        (["admins"], "GET") => (Some(AdminOp::ListAdmins), ""),
        (["admins"], "POST") => (Some(AdminOp::CreateAdmin), ""),
        (["admins"], _) => (None, "GET, POST"),
        (["admins", id], "DELETE") => (Some(AdminOp::DeleteAdmin { id: name(id) }), ""),
        (["admins", _], _) => (None, "DELETE"),
        (["users"], "GET") => (Some(AdminOp::ListUsers), ""),
        (["users"], "POST") => (Some(AdminOp::CreateUser), ""),
        (["users"], _) => (None, "GET, POST"),
        (["users", s], "GET") => (Some(AdminOp::ShowUser { subject: name(s) }), ""),
        (["users", s], "DELETE") => (Some(AdminOp::DeleteUser { subject: name(s) }), ""),
        (["users", _], _) => (None, "GET, DELETE"),
        (["users", s, change @ ("enable" | "disable")], "POST") => {
            (Some(AdminOp::SetUserState { subject: name(s), enable: *change == "enable" }), "")
        }
        (["users", _, "enable" | "disable"], _) => (None, "POST"),
        (["users", s, "password"], "PUT") => (Some(AdminOp::SetUserPassword { subject: name(s) }), ""),
        (["users", _, "password"], _) => (None, "PUT"),
        (["users", s, "consents"], "GET") => (Some(AdminOp::ListConsents { subject: name(s) }), ""),
        (["users", _, "consents"], _) => (None, "GET"),
        (["users", s, "consents", c], "DELETE") => {
            (Some(AdminOp::RevokeConsent { subject: name(s), client_id: name(c) }), "")
        }
        (["users", _, "consents", _], _) => (None, "DELETE"),
        (["clients"], "GET") => (Some(AdminOp::ListClients), ""),
        (["clients"], _) => (None, "GET"),
        (["clients", c], "GET") => (Some(AdminOp::ShowClient { client_id: name(c) }), ""),
        (["clients", c], "DELETE") => (Some(AdminOp::DeleteClient { client_id: name(c) }), ""),
        (["clients", _], _) => (None, "GET, DELETE"),
        (["clients", c, change @ ("enable" | "disable")], "POST") => {
            (Some(AdminOp::SetClientState { client_id: name(c), enable: *change == "enable" }), "")
        }
        (["clients", _, "enable" | "disable"], _) => (None, "POST"),
        (["owners", o, "disable"], "POST") => (Some(AdminOp::DisableOwned { owner: name(o) }), ""),
        (["owners", _, "disable"], _) => (None, "POST"),
        (["trusted-issuers"], "GET") => (Some(AdminOp::ListTrustedIssuers), ""),
        (["trusted-issuers"], _) => (None, "GET"),
        (["trusted-issuers", n], "GET") => (Some(AdminOp::ShowTrustedIssuer { name: name(n) }), ""),
        (["trusted-issuers", n], "PUT") => (Some(AdminOp::PutTrustedIssuer { name: name(n) }), ""),
        (["trusted-issuers", n], "DELETE") => (Some(AdminOp::DeleteTrustedIssuer { name: name(n) }), ""),
        (["trusted-issuers", _], _) => (None, "GET, PUT, DELETE"),
        _ => return Route::NotFound,
    };
    match op {
        Some(op) => Route::Admin { realm: realm.to_string(), op, console: false },
        None => Route::MethodNotAllowed { allow },
    }
}

/// Realm names: what an operator can type and a URL carries unescaped.
pub fn is_realm_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REALM: &str = "/am/oauth2/realms/root/realms/alpha";

    #[test]
    fn a_users_agents_route_by_method_with_client_ids_decoded() {
        let at = |method: Method, path: &str| route(&method, &format!("{REALM}/{path}"), "/am");
        let agents = |op, path: &str| Route::Agents { realm: "alpha".into(), op, path: path.into() };
        assert_eq!(at(Method::GET, "agents"), agents(AgentsOp::List, "agents"));
        assert_eq!(at(Method::POST, "agents/disable-all"), agents(AgentsOp::DisableAll, "agents/disable-all"));
        assert_eq!(at(Method::GET, "agents/c1"), agents(AgentsOp::Show { client_id: "c1".into() }, "agents/c1"));
        assert_eq!(
            at(Method::POST, "agents/https%3A%2F%2Fapp.example%2Fc/disable"),
            agents(
                AgentsOp::Disable { client_id: "https://app.example/c".into() },
                "agents/https%3A%2F%2Fapp.example%2Fc/disable"
            )
        );
        // In a realm named root, the path is still the one after the realm.
        assert_eq!(
            route(&Method::GET, "/am/oauth2/realms/root/realms/root/agents", "/am"),
            Route::Agents { realm: "root".into(), op: AgentsOp::List, path: "agents".into() }
        );
        assert_eq!(at(Method::POST, "agents"), Route::MethodNotAllowed { allow: "GET" });
        assert_eq!(at(Method::GET, "agents/c1/disable"), Route::MethodNotAllowed { allow: "POST" });
        assert_eq!(at(Method::DELETE, "agents/c1"), Route::MethodNotAllowed { allow: "GET" });
        for unknown in ["agents/", "agents//disable", "agents/c1/enable", "agents/c1/disable/x", "agentsx"] {
            assert_eq!(at(Method::POST, unknown), Route::NotFound, "{unknown}");
        }
    }

    #[test]
    fn seed_paths_route_to_their_endpoints() {
        assert_eq!(
            route(&Method::POST, &format!("{REALM}/aiagent/register"), "/am"),
            Route::Register { realm: "alpha".into(), ai_agent: true }
        );
        assert_eq!(
            route(&Method::POST, &format!("{REALM}/access_token"), "/am"),
            Route::Token { realm: "alpha".into() }
        );
        assert_eq!(
            route(&Method::GET, &format!("{REALM}/connect/jwk_uri"), "/am"),
            Route::Jwks { realm: "alpha".into() }
        );
    }

    #[test]
    fn wrong_method_is_not_a_missing_page() {
        assert_eq!(
            route(&Method::GET, &format!("{REALM}/access_token"), "/am"),
            Route::MethodNotAllowed { allow: "POST" }
        );
    }

    #[test]
    fn version_is_get_only_and_outside_the_base_path() {
        assert_eq!(route(&Method::GET, "/version", "/am"), Route::Version);
        assert_eq!(route(&Method::POST, "/version", "/am"), Route::MethodNotAllowed { allow: "GET" });
        assert_eq!(route(&Method::GET, "/am/version", "/am"), Route::NotFound);
    }

    #[test]
    fn base_path_is_configurable_and_required() {
        assert_eq!(
            route(&Method::POST, "/oauth2/realms/root/realms/alpha/access_token", ""),
            Route::Token { realm: "alpha".into() }
        );
        assert_eq!(route(&Method::POST, "/oauth2/realms/root/realms/alpha/access_token", "/am"), Route::NotFound);
    }

    #[test]
    fn metadata_is_also_at_the_rfc8414_location_with_the_issuers_path_inserted() {
        let discovery = || Route::Discovery { realm: "alpha".into() };
        assert_eq!(route(&Method::GET, &format!("{REALM}/.well-known/openid-configuration"), "/am"), discovery());
        let inserted = format!("/.well-known/oauth-authorization-server{REALM}");
        assert_eq!(route(&Method::GET, &inserted, "/am"), discovery());
        assert_eq!(route(&Method::POST, &inserted, "/am"), Route::MethodNotAllowed { allow: "GET" });
        // The base path is the configured one, as in the issuer.
        assert_eq!(
            route(&Method::GET, "/.well-known/oauth-authorization-server/oauth2/realms/root/realms/alpha", ""),
            discovery()
        );
        assert_eq!(
            route(
                &Method::GET,
                "/.well-known/oauth-authorization-server/auth/oauth2/realms/root/realms/alpha",
                "/auth"
            ),
            discovery()
        );
        for path in [
            "/.well-known/oauth-authorization-server",
            "/.well-known/oauth-authorization-server/",
            "/.well-known/oauth-authorization-server/oauth2/realms/root/realms/alpha",
            "/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/alpha/",
            "/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/alpha/access_token",
            "/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/al%20pha",
            "/.well-known/oauth-authorization-server/am/oauth2/realms/root/realms/",
            "/.well-known/oauth-authorization-serverx/am/oauth2/realms/root/realms/alpha",
            "/am/oauth2/realms/root/realms/alpha/.well-known/oauth-authorization-server",
        ] {
            assert_eq!(route(&Method::GET, path, "/am"), Route::NotFound, "{path}");
        }
    }

    #[test]
    fn console_paths_route_to_its_files_its_session_and_the_admin_api() {
        let page = || Route::Console { file: String::new() };
        assert_eq!(route(&Method::GET, "/console", "/am"), page());
        assert_eq!(route(&Method::GET, "/console/", "/am"), page());
        assert_eq!(route(&Method::GET, "/console/console.js", "/am"), Route::Console { file: "console.js".into() });
        assert_eq!(route(&Method::POST, "/console/", "/am"), Route::MethodNotAllowed { allow: "GET" });
        for path in ["/console/../admin", "/console/nothing.js", "/consolex", "/console/api", "/console/api/v1/realmsx"]
        {
            assert_eq!(route(&Method::GET, path, "/am"), Route::NotFound, "{path}");
        }
        for method in [Method::GET, Method::POST, Method::DELETE] {
            assert_eq!(route(&method, "/console/api/session", ""), Route::ConsoleSession);
        }
        assert_eq!(
            route(&Method::POST, "/console/api/v1/realms/alpha/clients/c1/disable", ""),
            Route::Admin {
                realm: "alpha".into(),
                op: AdminOp::SetClientState { client_id: "c1".into(), enable: false },
                console: true
            }
        );
        assert_eq!(
            route(&Method::GET, "/console/api/v1/realms", ""),
            Route::Admin { realm: String::new(), op: AdminOp::ListRealms, console: true }
        );
    }

    #[test]
    fn admin_paths_route_to_their_operations() {
        let admin = |op| Route::Admin { realm: "alpha".into(), op, console: false };
        let name = || "p".to_string();
        assert_eq!(
            route(&Method::POST, "/admin/v1/realms/alpha/plugins/p", "/am"),
            admin(AdminOp::PushPlugin { name: name() })
        );
        assert_eq!(
            route(&Method::POST, "/admin/v1/realms/alpha/plugins/p/rollback", ""),
            admin(AdminOp::Rollback { name: name() })
        );
        assert_eq!(
            route(&Method::DELETE, "/admin/v1/realms/alpha/plugins/p/versions/3", ""),
            admin(AdminOp::DeleteVersion { name: name(), version: 3 })
        );
        assert_eq!(route(&Method::PUT, "/admin/v1/realms/alpha/hooks", ""), admin(AdminOp::SetHooks));
        assert_eq!(
            route(&Method::POST, "/admin/v1/realms/alpha/plugins/p/versions/2/test", ""),
            admin(AdminOp::TestPlugin { name: name(), version: 2 })
        );
        // A client id that is a URL, and an owner with a ':', encoded.
        assert_eq!(
            route(&Method::POST, "/admin/v1/realms/alpha/clients/https%3A%2F%2Fapp.example%2Fc.json/disable", ""),
            admin(AdminOp::SetClientState { client_id: "https://app.example/c.json".into(), enable: false })
        );
        assert_eq!(
            route(&Method::POST, "/admin/v1/realms/alpha/owners/team%3Apayments/disable", ""),
            admin(AdminOp::DisableOwned { owner: "team:payments".into() })
        );
        assert_eq!(route(&Method::PATCH, "/admin/v1/realms/alpha", ""), admin(AdminOp::UpdateRealm));
        assert_eq!(
            route(&Method::DELETE, "/admin/v1/realms/alpha/admins/a1", ""),
            admin(AdminOp::DeleteAdmin { id: "a1".into() })
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/realms", ""),
            Route::Admin { realm: String::new(), op: AdminOp::ListRealms, console: false }
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/realms/alpha/plugins/p/activate", ""),
            Route::MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(route(&Method::DELETE, "/admin/v1/realms/alpha/plugins/p/versions/x", ""), Route::NotFound);
        let subject = || "usr_1".to_string();
        assert_eq!(route(&Method::POST, "/admin/v1/realms/alpha/users", ""), admin(AdminOp::CreateUser));
        assert_eq!(route(&Method::GET, "/admin/v1/realms/alpha/users", ""), admin(AdminOp::ListUsers));
        assert_eq!(
            route(&Method::PUT, "/admin/v1/realms/alpha/trusted-issuers/corp", ""),
            admin(AdminOp::PutTrustedIssuer { name: "corp".into() })
        );
        assert_eq!(
            route(&Method::DELETE, "/admin/v1/realms/alpha/users/usr_1", ""),
            admin(AdminOp::DeleteUser { subject: subject() })
        );
        assert_eq!(
            route(&Method::POST, "/admin/v1/realms/alpha/users/usr_1/disable", ""),
            admin(AdminOp::SetUserState { subject: subject(), enable: false })
        );
        assert_eq!(
            route(&Method::PUT, "/admin/v1/realms/alpha/users/usr_1/password", ""),
            admin(AdminOp::SetUserPassword { subject: subject() })
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/realms/alpha/users/usr_1/password", ""),
            Route::MethodNotAllowed { allow: "PUT" }
        );
        assert_eq!(route(&Method::GET, "/admin/v1/realms/alpha/users//enable", ""), Route::NotFound);
        assert_eq!(route(&Method::GET, "/admin/v1/realms/../plugins", ""), Route::NotFound);
    }

    #[test]
    fn odd_realm_names_and_paths_are_not_found() {
        for path in [
            "/am/oauth2/realms/root/realms/../access_token",
            "/am/oauth2/realms/root/realms/al%20pha/access_token",
            "/am/oauth2/realms/root/realms/alpha/access_token/",
            "/am/oauth2/realms/root/realms/alpha",
        ] {
            assert_eq!(route(&Method::POST, path, "/am"), Route::NotFound, "{path}");
        }
    }
}
