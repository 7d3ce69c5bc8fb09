//! Dynamic client registration (RFC 7591): turning a registration request
//! into validated metadata, and a registered client into the response.

use serde_json::{Map, Value, json};

use crate::client::{ApplicationType, AuthMethod, Client, ClientMetadata, GrantType, WorkloadIdentity};
use crate::error::{ErrorCode, OAuthError};
use crate::scope::Scopes;

// Bounds on what one registration may hold, so that open registration
// cannot make a row (or a policy's input) of any size. The request body is
// also bounded (64 KiB) before it is parsed.

/// Most entries a metadata list may hold: `redirect_uris`, `grant_types`,
/// `response_types`, `scopes`, `contacts`.
pub const MAX_ARRAY: usize = 32;
/// Longest string a metadata field (or list entry) may hold, in bytes.
pub const MAX_STRING: usize = 2048;
/// Most bytes the entries of one list may hold together.
pub const MAX_LIST_BYTES: usize = 8 * 1024;
/// Most keys a registered JWK Set may hold.
pub const MAX_JWKS_KEYS: usize = 8;
/// Longest one registered JWK may be, as JSON: an 8192-bit RSA key with
/// a certificate fits.
pub const MAX_JWK_BYTES: usize = 8 * 1024;
/// Longest `software_statement` (a JWT) a policy is shown.
pub const MAX_SOFTWARE_STATEMENT: usize = 8 * 1024;
/// The longest `jwks_uri` a client metadata document may give.
pub const MAX_JWKS_URI: usize = 512;
/// Most bytes the registered metadata may take in all, as stored.
pub const MAX_METADATA_BYTES: usize = 32 * 1024;

/// RFC 7591 §2 string fields this server does not keep, bounded all the
/// same: the realm's DCR policy sees them.
const UNKEPT_STRINGS: &[&str] = &["client_uri", "logo_uri", "tos_uri", "policy_uri", "software_id", "software_version"];

/// Fields a client may not send when it updates its registration
/// (RFC 7592 §2.2): the server manages them.
pub const SERVER_MANAGED_FIELDS: &[&str] =
    &["registration_access_token", "registration_client_uri", "client_secret_expires_at", "client_id_issued_at"];

/// Validates a registration request body (a JSON object) into metadata.
///
/// Unknown fields are ignored (RFC 7591 §2), and so are fields the server
/// owns, such as `client_id` and `client_secret`: a client never chooses
/// its own identifier.
///
/// Choices where RFC 7591 leaves room, or where this server differs:
/// - `grant_types` defaults to `client_credentials`: most clients that
///   register here are agents acting for themselves (RFC 7591's default
///   is `authorization_code`). A client that wants the authorization code
///   grant says so, with its redirect URIs.
/// - PingAM's `scopes` array is accepted beside `scope`; both may be given
///   only when they agree.
/// - With the `authorization_code` grant, `response_types` is `["code"]`
///   (the default; nothing else is supported) and `redirect_uris` must not
///   be empty. Without it they are recorded and echoed.
/// - A public client (`token_endpoint_auth_method: none`) may have only
///   the `authorization_code` and `refresh_token` grants.
/// - OpenID Connect's `application_type` is kept: `web` (the default) or
///   `native`; any other value is refused.
///
/// Every field is bounded (see [`MAX_STRING`] and the constants beside
/// it), RFC 7591 fields this server does not keep included; over a bound,
/// the error names the field.
///
/// `jwks_uri` is refused: a registration gives its keys inline, so that
/// registering never makes the server fetch from a URL the caller chose.
pub fn parse_metadata(body: &Value) -> Result<ClientMetadata, OAuthError> {
    parse(body, KeyLocation::Inline)
}

/// As [`parse_metadata`], for a Client ID Metadata Document: a
/// `private_key_jwt` client may also say where its keys are published
/// (`jwks_uri`, an `https` URL, or `http` on loopback for a server in
/// development), as the draft allows. The server fetches them only when
/// the client authenticates, through the fetcher that checks every
/// address, as it fetches trusted issuers' keys.
pub fn parse_document_metadata(body: &Value) -> Result<ClientMetadata, OAuthError> {
    parse(body, KeyLocation::InlineOrUri)
}

/// Where a client's public keys may be given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyLocation {
    /// `jwks` only.
    Inline,
    /// `jwks`, or a `jwks_uri` to fetch them from.
    InlineOrUri,
}

fn parse(body: &Value, keys: KeyLocation) -> Result<ClientMetadata, OAuthError> {
    let Some(fields) = body.as_object() else {
        return Err(OAuthError::invalid_client_metadata("the request body must be a JSON object"));
    };
    for name in UNKEPT_STRINGS {
        optional_string(fields, name)?;
    }
    string_array(fields, "contacts")?;
    optional_string_up_to(fields, "software_statement", MAX_SOFTWARE_STATEMENT)?;

    let grant_types = match string_array(fields, "grant_types")? {
        None => vec![GrantType::ClientCredentials],
        Some(names) => {
            let mut grants = Vec::new();
            for name in names {
                let grant = GrantType::parse(name).ok_or_else(|| {
                    OAuthError::invalid_client_metadata(format!(
                        "grant type {name:?} is not supported; supported: {}",
                        GrantType::list()
                    ))
                })?;
                if !grants.contains(&grant) {
                    grants.push(grant);
                }
            }
            if grants.is_empty() {
                return Err(OAuthError::invalid_client_metadata("grant_types must not be empty"));
            }
            grants
        }
    };

    let response_types: Vec<String> = string_array(fields, "response_types")?
        .map(|v| v.into_iter().map(str::to_string).collect())
        .unwrap_or_default();

    let redirect_uris: Vec<String> =
        string_array(fields, "redirect_uris")?.map(|v| v.into_iter().map(str::to_string).collect()).unwrap_or_default();
    for uri in &redirect_uris {
        check_redirect_uri(uri)?;
    }

    let client_name = optional_string(fields, "client_name")?.map(str::to_string);

    // RFC 7591 §2: "The jwks_uri and jwks parameters MUST NOT both be present."
    let present = |name: &str| fields.get(name).is_some_and(|v| !v.is_null());
    if present("jwks") && present("jwks_uri") {
        return Err(OAuthError::invalid_client_metadata("jwks and jwks_uri must not both be present"));
    }
    let jwks_uri = match optional_string_up_to(fields, "jwks_uri", MAX_JWKS_URI)? {
        None => None,
        Some(_) if keys == KeyLocation::Inline => {
            return Err(OAuthError::invalid_client_metadata(
                "jwks_uri is not supported: registering fetches nothing; register the keys inline as jwks",
            ));
        }
        Some(uri) if crate::trust::is_https_url(uri) || crate::trust::is_loopback_http_url(uri) => {
            Some(uri.to_string())
        }
        Some(_) => {
            return Err(OAuthError::invalid_client_metadata(
                "jwks_uri must be an https URL without credentials or fragment",
            ));
        }
    };
    let jwks = match fields.get("jwks") {
        None | Some(Value::Null) => None,
        Some(jwks) => match jwks.get("keys").and_then(Value::as_array) {
            Some(keys) if (1..=MAX_JWKS_KEYS).contains(&keys.len()) && keys.iter().all(Value::is_object) => {
                if keys.iter().any(|key| key.to_string().len() > MAX_JWK_BYTES) {
                    return Err(OAuthError::invalid_client_metadata(format!(
                        "jwks: a key is longer than {MAX_JWK_BYTES} bytes"
                    )));
                }
                Some(jwks.clone())
            }
            _ => {
                return Err(OAuthError::invalid_client_metadata(format!(
                    "jwks must be a JWK Set of 1 to {MAX_JWKS_KEYS} keys"
                )));
            }
        },
    };

    let scope = optional_string(fields, "scope")?
        .map(Scopes::parse)
        .transpose()
        .map_err(|e| OAuthError::invalid_client_metadata(format!("scope: {}", e.description)))?;
    let scopes = string_array(fields, "scopes")?
        .map(Scopes::from_tokens)
        .transpose()
        .map_err(|e| OAuthError::invalid_client_metadata(format!("scopes: {}", e.description)))?;
    let scope = match (scope, scopes) {
        (Some(a), Some(b)) if a != b => {
            return Err(OAuthError::invalid_client_metadata("scope and scopes disagree"));
        }
        (a, b) => a.or(b).unwrap_or_default(),
    };

    let token_endpoint_auth_method = match optional_string(fields, "token_endpoint_auth_method")? {
        None => AuthMethod::ClientSecretBasic,
        Some(m) => AuthMethod::parse(m).ok_or_else(|| {
            OAuthError::invalid_client_metadata(format!(
                "token_endpoint_auth_method {m:?} is not supported; supported: {}",
                AuthMethod::list()
            ))
        })?,
    };

    let application_type = match optional_string(fields, "application_type")? {
        None => ApplicationType::default(),
        Some(name) => ApplicationType::parse(name).ok_or_else(|| {
            OAuthError::invalid_client_metadata(format!(
                "application_type {name:?} is not supported; supported: {}",
                ApplicationType::list()
            ))
        })?,
    };

    // A public client has nothing to authenticate with: PKCE binds its
    // codes to it and its refresh tokens rotate; it gets no other grant.
    if token_endpoint_auth_method == AuthMethod::None
        && let Some(other) =
            grant_types.iter().find(|g| !matches!(g, GrantType::AuthorizationCode | GrantType::RefreshToken))
    {
        return Err(OAuthError::invalid_client_metadata(format!(
            "a public client (token_endpoint_auth_method none) may use only the authorization_code and \
             refresh_token grants, not {}",
            other.as_str()
        )));
    }
    let response_types = if grant_types.contains(&GrantType::AuthorizationCode) {
        if redirect_uris.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                "the authorization_code grant needs at least one redirect URI",
            ));
        }
        match response_types.as_slice() {
            [] => vec!["code".to_string()],
            [code] if code == "code" => response_types,
            _ => {
                return Err(OAuthError::invalid_client_metadata(
                    "response_types: the only response type supported is code",
                ));
            }
        }
    } else {
        response_types
    };

    if (token_endpoint_auth_method == AuthMethod::PrivateKeyJwt) != (jwks.is_some() || jwks_uri.is_some()) {
        let keys = if keys == KeyLocation::Inline { "jwks" } else { "jwks or jwks_uri" };
        return Err(OAuthError::invalid_client_metadata(format!(
            "private_key_jwt needs {keys}, and {keys} are used only with private_key_jwt",
        )));
    }
    let workload = workload_identity(fields, token_endpoint_auth_method)?;
    let dpop_bound_access_tokens = match fields.get("dpop_bound_access_tokens") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(bound)) => *bound,
        Some(_) => return Err(OAuthError::invalid_client_metadata("dpop_bound_access_tokens must be a boolean")),
    };

    let metadata = ClientMetadata {
        redirect_uris,
        grant_types,
        response_types,
        client_name,
        scope: scope.to_string(),
        token_endpoint_auth_method,
        jwks,
        jwks_uri,
        application_type,
        workload,
        dpop_bound_access_tokens,
    };
    let size = serde_json::to_string(&metadata).map_or(usize::MAX, |json| json.len());
    if size > MAX_METADATA_BYTES {
        return Err(OAuthError::invalid_client_metadata(format!(
            "the metadata together take {size} bytes, more than {MAX_METADATA_BYTES}"
        )));
    }
    Ok(metadata)
}

fn optional_string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, OAuthError> {
    optional_string_up_to(fields, name, MAX_STRING)
}

fn optional_string_up_to<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    max: usize,
) -> Result<Option<&'a str>, OAuthError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
        Some(Value::String(_)) => {
            Err(OAuthError::invalid_client_metadata(format!("{name} is too long (at most {max} bytes)")))
        }
        Some(_) => Err(OAuthError::invalid_client_metadata(format!("{name} must be a string"))),
    }
}

fn string_array<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<Vec<&'a str>>, OAuthError> {
    let items = match fields.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) if items.len() <= MAX_ARRAY => items,
        Some(Value::Array(_)) => {
            return Err(OAuthError::invalid_client_metadata(format!("{name} has more than {MAX_ARRAY} entries")));
        }
        Some(_) => return Err(OAuthError::invalid_client_metadata(format!("{name} must be an array of strings"))),
    };
    let strings = items
        .iter()
        .map(|item| match item {
            Value::String(s) if !s.is_empty() && s.len() <= MAX_STRING => Ok(s.as_str()),
            _ => Err(OAuthError::invalid_client_metadata(format!(
                "{name} must hold non-empty strings of at most {MAX_STRING} bytes"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if strings.iter().map(|s| s.len()).sum::<usize>() > MAX_LIST_BYTES {
        return Err(OAuthError::invalid_client_metadata(format!(
            "{name} holds more than {MAX_LIST_BYTES} bytes in all"
        )));
    }
    Ok(Some(strings))
}

/// Checks one redirect URI: absolute, no fragment (RFC 6749 §3.1.2), no
/// user information, and `https` unless it points at the loopback
/// interface (RFC 8252 §7.3). The URI is kept as sent, so it must mean the
/// same to this check as to a browser: it is read twice, by a plain RFC
/// 3986 split and by the WHATWG URL parser browsers use (the `url` crate),
/// and refused unless both name the same scheme, host, port, path and
/// query. That refuses what the two would route differently:
/// `http://evil.example\@localhost/` (a browser goes to evil.example),
/// `http://[::1].evil.example/`, `http://127.1/`, ports past 65535,
/// percent-encoded hosts, dot segments, and characters a browser would
/// re-encode. The only differences allowed are the ones that cannot
/// change where a browser goes: the case of scheme and host, an explicit
/// default port, an IPv6 address written in full, and an empty path.
pub fn check_redirect_uri(uri: &str) -> Result<(), OAuthError> {
    let bad = |why: &str| Err(OAuthError::new(ErrorCode::InvalidRedirectUri, format!("redirect URI {uri:?} {why}")));
    if uri.contains('#') {
        return bad("must not contain a fragment");
    }
    if uri.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return bad("must not contain spaces, control or non-ASCII characters");
    }
    if uri.contains('\\') {
        return bad("must not contain a backslash");
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return bad("must be an absolute URI");
    };
    let (authority, path_and_query) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return bad("must not contain user information");
    }
    let Some((host, port)) = split_host_port(authority) else {
        return bad("has a malformed host or port");
    };
    if host.is_empty() {
        return bad("must name a host");
    }
    let port = match port {
        None => None,
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(port) => Some(port),
            Err(_) => return bad("has a port past 65535"),
        },
        Some(_) => return bad("has a malformed port"),
    };
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "https" && scheme != "http" {
        return bad("must use https");
    }

    let Ok(url) = url::Url::parse(uri) else {
        return bad("is not a URL a browser would accept");
    };
    let same_host = match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case(host),
        Some(url::Host::Ipv4(address)) => host.parse::<std::net::Ipv4Addr>() == Ok(address),
        Some(url::Host::Ipv6(address)) => {
            host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
                == Some(address)
        }
        None => false,
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let tail = &url[url::Position::BeforePath..];
    // An empty path is `/` to a browser.
    let same_tail =
        tail == path_and_query || (!path_and_query.starts_with('/') && tail.strip_prefix('/') == Some(path_and_query));
    if url.scheme() != scheme
        || !same_host
        || url.port_or_known_default() != Some(port.unwrap_or(default_port))
        || !same_tail
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return bad("is read differently by browsers; send it as a browser would write it");
    }

    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    match scheme.as_str() {
        "https" => Ok(()),
        _ if loopback => Ok(()),
        _ => bad("must use https (http is allowed only for loopback)"),
    }
}

/// Splits an authority without user information into its host (an IPv6
/// literal keeps its brackets) and its port, if it has one; `None` when
/// anything follows a bracketed host other than a port.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let (host, rest) = authority.split_at(authority.find(']')? + 1);
        if rest.is_empty() { Some((host, None)) } else { Some((host, Some(rest.strip_prefix(':')?))) }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => Some((host, Some(port))),
            None => Some((authority, None)),
        }
    }
}

/// Server-generated credentials, returned when they are issued: both at
/// registration, a new registration access token at each update, none
/// when a client reads its registration (only their hashes are kept).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IssuedCredentials {
    pub client_secret: Option<String>,
    pub registration_access_token: Option<String>,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedCredentials { [redacted] }")
    }
}

/// The registered metadata as RFC 7591 names it: what a policy sees and
/// what registration responses echo.
/// The workload a `federated_jwt` or `spiffe_jwt` client is: its
/// `federated_issuer` and `federated_subject`, or its `spiffe_id`; other
/// clients name none.
fn workload_identity(fields: &Map<String, Value>, method: AuthMethod) -> Result<Option<WorkloadIdentity>, OAuthError> {
    let issuer = optional_string(fields, "federated_issuer")?;
    let subject = optional_string(fields, "federated_subject")?;
    let spiffe_id = optional_string(fields, "spiffe_id")?;
    let printable = |name: &str, value: &str| {
        if value.is_empty() || value.chars().any(|c| c.is_control() || c == ' ') {
            Err(OAuthError::invalid_client_metadata(format!("{name}: printable, without spaces")))
        } else {
            Ok(())
        }
    };
    match (method, issuer, subject, spiffe_id) {
        (AuthMethod::FederatedJwt, Some(issuer), Some(subject), None) => {
            printable("federated_issuer", issuer)?;
            printable("federated_subject", subject)?;
            Ok(Some(WorkloadIdentity { issuer: issuer.into(), subject: subject.into() }))
        }
        (AuthMethod::FederatedJwt, ..) => Err(OAuthError::invalid_client_metadata(
            "federated_jwt needs federated_issuer (a trusted issuer's iss) and federated_subject (its tokens' sub)",
        )),
        (AuthMethod::SpiffeJwt, None, None, Some(id)) => {
            printable("spiffe_id", id)?;
            let domain = id
                .strip_prefix("spiffe://")
                .and_then(|rest| rest.split_once('/'))
                .filter(|(domain, path)| !domain.is_empty() && !path.is_empty() && !path.contains("//"))
                .map(|(domain, _)| domain)
                .ok_or_else(|| {
                    OAuthError::invalid_client_metadata(
                        "spiffe_id: spiffe://<trust-domain>/<path>, or a path ending in /*",
                    )
                })?;
            Ok(Some(WorkloadIdentity { issuer: format!("spiffe://{domain}"), subject: id.into() }))
        }
        (AuthMethod::SpiffeJwt, ..) => {
            Err(OAuthError::invalid_client_metadata("spiffe_jwt needs spiffe_id, and nothing else"))
        }
        (_, None, None, None) => Ok(None),
        (other, ..) => Err(OAuthError::invalid_client_metadata(format!(
            "federated_issuer, federated_subject and spiffe_id go with federated_jwt or spiffe_jwt, not {other}"
        ))),
    }
}

pub fn metadata_json(m: &ClientMetadata) -> Value {
    let scopes = m.scopes();
    let mut body = json!({
        "grant_types": m.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "redirect_uris": m.redirect_uris,
        "response_types": m.response_types,
        "scope": scopes.to_string(),
        "scopes": scopes.to_vec(),
        "token_endpoint_auth_method": m.token_endpoint_auth_method.as_str(),
        "application_type": m.application_type.as_str(),
    });
    if let Some(name) = &m.client_name {
        body["client_name"] = json!(name);
    }
    if let Some(jwks) = &m.jwks {
        body["jwks"] = jwks.clone();
    }
    if let Some(uri) = &m.jwks_uri {
        body["jwks_uri"] = json!(uri);
    }
    if m.dpop_bound_access_tokens {
        body["dpop_bound_access_tokens"] = json!(true);
    }
    if let Some(workload) = &m.workload {
        if m.token_endpoint_auth_method == AuthMethod::SpiffeJwt {
            body["spiffe_id"] = json!(workload.subject);
        } else {
            body["federated_issuer"] = json!(workload.issuer);
            body["federated_subject"] = json!(workload.subject);
        }
    }
    body
}

/// The registration response (RFC 7591 §3.2.1): the metadata as
/// registered, the server's fields, and the attributes the DCR policy set.
pub fn response(client: &Client, credentials: &IssuedCredentials, registration_client_uri: &str) -> Value {
    let mut body = metadata_json(&client.metadata);
    body["client_id"] = json!(client.client_id);
    body["client_id_issued_at"] = json!(client.issued_at);
    if let Some(secret) = &credentials.client_secret {
        body["client_secret"] = json!(secret);
    }
    body["client_secret_expires_at"] = json!(0);
    if let Some(token) = &credentials.registration_access_token {
        body["registration_access_token"] = json!(token);
    }
    body["registration_client_uri"] = json!(registration_client_uri);
    // PingAM's name for RFC 6749 §2.1's client types: a client without
    // credentials (`none`) is a public one.
    let client_type = match client.metadata.token_endpoint_auth_method {
        AuthMethod::None => "Public",
        _ => "Confidential",
    };
    body["client_type"] = json!(client_type);
    for (name, value) in client.attributes.as_json() {
        body[name] = value;
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_request() -> Value {
        json!({
            "grant_types": ["client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"],
            "client_name": "software agent",
            "response_types": ["token"],
            "redirect_uris": ["https://www.example.com:443/callback"],
            "scopes": ["read", "write"]
        })
    }

    #[test]
    fn seed_registration_is_accepted() {
        let m = parse_metadata(&seed_request()).unwrap();
        assert_eq!(m.grant_types, vec![GrantType::ClientCredentials, GrantType::TokenExchange]);
        assert_eq!(m.scope, "read write");
        assert_eq!(m.token_endpoint_auth_method, AuthMethod::ClientSecretBasic);
        assert_eq!(m.client_name.as_deref(), Some("software agent"));
    }

    #[test]
    fn non_object_body_is_invalid_client_metadata() {
        let err = parse_metadata(&json!(["x"])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidClientMetadata);
    }

    #[test]
    fn wrong_types_and_unknown_grants_are_refused() {
        for bad in [
            json!({"grant_types": "client_credentials"}),
            json!({"grant_types": ["password"]}),
            json!({"grant_types": []}),
            json!({"client_name": 7}),
            json!({"scope": "read", "scopes": ["write"]}),
            json!({"token_endpoint_auth_method": "none"}),
            json!({"jwks": {"keys": []}, "jwks_uri": "https://a.example/jwks"}),
            json!({"token_endpoint_auth_method": "private_key_jwt"}),
            json!({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}}),
            json!({"jwks": {"keys": [{"kty": "EC"}]}}),
        ] {
            let err = parse_metadata(&bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClientMetadata, "{bad}");
        }
    }

    #[test]
    fn an_unsupported_grant_or_method_is_refused_naming_what_is_supported() {
        let refused = |request: Value| parse_metadata(&request).unwrap_err().description;
        assert_eq!(
            refused(json!({"grant_types": ["password"]})),
            "grant type \"password\" is not supported; supported: client_credentials, \
             urn:ietf:params:oauth:grant-type:token-exchange, refresh_token, authorization_code, \
             urn:ietf:params:oauth:grant-type:jwt-bearer"
        );
        assert_eq!(
            refused(json!({"token_endpoint_auth_method": "tls_client_auth"})),
            "token_endpoint_auth_method \"tls_client_auth\" is not supported; supported: client_secret_basic, \
             client_secret_post, private_key_jwt, none, federated_jwt, spiffe_jwt"
        );
    }

    #[test]
    fn a_workload_client_names_its_issuer_and_subject_and_nothing_else_does() {
        let k8s = json!({"token_endpoint_auth_method": "federated_jwt",
                         "federated_issuer": "https://kubernetes.default.svc",
                         "federated_subject": "system:serviceaccount:agents:planner"});
        let workload = parse_metadata(&k8s).unwrap().workload.unwrap();
        assert_eq!(workload.issuer, "https://kubernetes.default.svc");
        assert!(workload.matches("system:serviceaccount:agents:planner"));
        assert!(!workload.matches("system:serviceaccount:agents:planner2"));
        let spiffe = json!({"token_endpoint_auth_method": "spiffe_jwt", "spiffe_id": "spiffe://prod.example/agents/*"});
        let metadata = parse_metadata(&spiffe).unwrap();
        let workload = metadata.workload.clone().unwrap();
        assert_eq!(workload.issuer, "spiffe://prod.example");
        assert!(workload.matches("spiffe://prod.example/agents/planner"));
        assert!(!workload.matches("spiffe://prod.example/agentsplanner"), "whole segments only");
        assert!(!workload.matches("spiffe://prod.example/agents/"));
        assert_eq!(metadata_json(&metadata)["spiffe_id"], "spiffe://prod.example/agents/*");
        for bad in [
            json!({"token_endpoint_auth_method": "federated_jwt", "federated_issuer": "https://k"}),
            json!({"token_endpoint_auth_method": "spiffe_jwt", "spiffe_id": "https://prod.example/a"}),
            json!({"token_endpoint_auth_method": "spiffe_jwt", "spiffe_id": "spiffe://prod.example"}),
            json!({"federated_issuer": "https://k", "federated_subject": "s"}),
        ] {
            assert_eq!(parse_metadata(&bad).unwrap_err().code, ErrorCode::InvalidClientMetadata, "{bad}");
        }
    }

    #[test]
    fn a_code_client_needs_redirect_uris_and_a_public_client_only_the_code_grants() {
        let refused = |request: Value| parse_metadata(&request).unwrap_err();
        let mcp = json!({"grant_types": ["authorization_code", "refresh_token"], "token_endpoint_auth_method": "none",
                         "redirect_uris": ["http://127.0.0.1:33418/callback"], "application_type": "native"});
        let metadata = parse_metadata(&mcp).unwrap();
        assert_eq!(metadata.response_types, ["code"], "code is the default and only response type");
        assert_eq!(metadata.token_endpoint_auth_method, AuthMethod::None);
        let no_uris = json!({"grant_types": ["authorization_code"]});
        assert_eq!(refused(no_uris).code, ErrorCode::InvalidRedirectUri);
        let public_cc = json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"});
        assert_eq!(refused(public_cc).code, ErrorCode::InvalidClientMetadata);
        let implicit = json!({"grant_types": ["authorization_code"], "response_types": ["token"],
                              "redirect_uris": ["https://app.example/cb"]});
        assert_eq!(refused(implicit).code, ErrorCode::InvalidClientMetadata);
    }

    #[test]
    fn application_type_is_web_by_default_or_native_and_is_echoed() {
        let web = parse_metadata(&seed_request()).unwrap();
        assert_eq!(web.application_type, ApplicationType::Web);
        assert_eq!(metadata_json(&web)["application_type"], "web");
        let mut request = seed_request();
        request["application_type"] = json!("native");
        let native = parse_metadata(&request).unwrap();
        assert_eq!(native.application_type, ApplicationType::Native);
        assert_eq!(metadata_json(&native)["application_type"], "native");
        for bad in [json!("browser"), json!("Native"), json!(""), json!(["web"]), json!(1)] {
            request["application_type"] = bad.clone();
            let err = parse_metadata(&request).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClientMetadata, "{bad}");
            assert!(err.description.contains("application_type"), "{bad}: {}", err.description);
        }
    }

    #[test]
    fn the_response_shows_the_attributes_the_policy_set() {
        let mut client = crate::client::test_agent("c", "read", &[GrantType::ClientCredentials]);
        let plain = response(&client, &IssuedCredentials::default(), "https://as.example/register/c");
        assert_eq!(plain["providerOverridesEnabled"], false);
        assert_eq!(plain["statelessTokensEnabled"], false);
        assert!(plain.get("accessTokenMayActScript").is_none() && plain.get("allowedAudiences").is_none());
        client.attributes.set("accessTokenMayActScript", &["p".to_string()]).unwrap();
        client.attributes.set("allowedAudiences", &["https://a.example".to_string()]).unwrap();
        let set = response(&client, &IssuedCredentials::default(), "https://as.example/register/c");
        assert_eq!(set["accessTokenMayActScript"], "p");
        assert_eq!(set["allowedAudiences"], json!(["https://a.example"]));
    }

    #[test]
    fn the_response_calls_a_client_without_credentials_public() {
        let mut client = crate::client::test_agent("c", "read", &[GrantType::AuthorizationCode]);
        let confidential = response(&client, &IssuedCredentials::default(), "https://as.example/register/c");
        assert_eq!(confidential["client_type"], "Confidential");
        client.metadata.token_endpoint_auth_method = AuthMethod::None;
        let public = response(&client, &IssuedCredentials::default(), "https://as.example/register/c");
        assert_eq!(public["client_type"], "Public");
        assert!(public.get("client_secret").is_none());
    }

    #[test]
    fn redirect_uris_are_checked() {
        for ok in ["https://a.example/cb", "http://localhost:8080/cb", "http://127.0.0.1/cb", "http://[::1]:9/cb"] {
            check_redirect_uri(ok).unwrap();
        }
        for bad in [
            "/relative",
            "https://a.example/cb#frag",
            "http://a.example/cb",
            "javascript://x",
            "https:///nohost",
            "https://a.example/c b",
        ] {
            assert_eq!(check_redirect_uri(bad).unwrap_err().code, ErrorCode::InvalidRedirectUri, "{bad}");
        }
    }

    #[test]
    fn redirect_uris_are_read_as_a_browser_reads_them() {
        // Each of these names one host to a naive split and another (or
        // none) to a browser's WHATWG URL parser.
        for bad in [
            r"http://evil.example\@localhost/cb",
            r"http://evil.example\@127.0.0.1/cb",
            r"https://a.example\cb",
            "http://[::1].evil.example/cb",
            "https://a.example:65536/cb",
            "https://a.example:99999999999/cb",
            "http://0x7f.1/cb",
            "http://127.1/cb",
            "https://a%2eexample/cb",
            "https://a.example/one/../two",
            "https://a.example/c\"b",
            "https://user@a.example/cb",
            "https://a.example:/cb",
            "https://a.example:8x/cb",
        ] {
            assert_eq!(check_redirect_uri(bad).unwrap_err().code, ErrorCode::InvalidRedirectUri, "{bad}");
        }
        // What both read alike is kept as sent, default port and all.
        for ok in [
            "https://www.example.com:443/callback",
            "https://A.Example/cb?x=1&y=%2F",
            "https://a.example",
            "http://[0:0:0:0:0:0:0:1]:8080/cb",
            "http://localhost/cb",
        ] {
            check_redirect_uri(ok).unwrap();
        }
    }

    #[test]
    fn every_field_is_bounded_and_the_refusal_names_it() {
        let long_uri = format!("https://a.example/{}", "a".repeat(1000));
        let big_key = json!({"kty": "OKP", "crv": "Ed25519", "x": "AA", "x5c": ["A".repeat(MAX_JWK_BYTES)]});
        let small_key = json!({"kty": "OKP", "crv": "Ed25519", "x": "AA", "x5c": ["A".repeat(MAX_JWK_BYTES - 100)]});
        for (field, value) in [
            ("contacts", json!(vec!["a@b.example"; MAX_ARRAY + 1])),
            ("contacts", json!("a@b.example")),
            ("logo_uri", json!("l".repeat(MAX_STRING + 1))),
            ("software_id", json!(7)),
            ("software_statement", json!("s".repeat(MAX_SOFTWARE_STATEMENT + 1))),
            ("client_name", json!("n".repeat(MAX_STRING + 1))),
            ("redirect_uris", json!(vec![long_uri; 9])),
            ("response_types", json!(vec!["r".repeat(MAX_STRING); 5])),
            ("jwks", json!({"keys": [big_key]})),
            ("jwks", json!({"keys": vec![json!({"kty": "OKP"}); MAX_JWKS_KEYS + 1]})),
            ("metadata together", json!({"keys": vec![small_key; 5]})),
        ] {
            let mut request = seed_request();
            match field {
                "metadata together" => {
                    request["jwks"] = value;
                    request["token_endpoint_auth_method"] = json!("private_key_jwt");
                }
                _ => request[field] = value,
            }
            let err = parse_metadata(&request).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidClientMetadata, "{field}");
            assert!(err.description.contains(field), "{field}: {}", err.description);
        }
    }

    #[test]
    fn server_owned_fields_are_ignored() {
        let mut req = seed_request();
        req["client_id"] = json!("chosen-by-client");
        let m = parse_metadata(&req).unwrap();
        assert_eq!(m, parse_metadata(&seed_request()).unwrap());
    }

    #[test]
    fn only_a_metadata_document_may_give_a_jwks_uri_and_only_for_private_key_jwt() {
        let document = |extra: Value| {
            let mut body = json!({"grant_types": ["authorization_code"], "redirect_uris": ["https://app.example/cb"]});
            for (name, value) in extra.as_object().into_iter().flatten() {
                body[name] = value.clone();
            }
            body
        };
        let uri = "https://app.example/jwks.json";
        let keyed = document(json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": uri}));
        let read = parse_document_metadata(&keyed).unwrap();
        assert_eq!(read.jwks_uri.as_deref(), Some(uri));
        assert_eq!(metadata_json(&read)["jwks_uri"], uri, "the policy and the admin API see it");
        let registered = parse_metadata(&keyed).unwrap_err();
        assert!(registered.description.contains("jwks_uri is not supported"), "{registered:?}");
        for (bad, why) in [
            (json!({"token_endpoint_auth_method": "none", "jwks_uri": uri}), "only with private_key_jwt"),
            (json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://app.example/k"}), "https URL"),
            (
                json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://app.example/k#1"}),
                "https URL",
            ),
            (json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": 7}), "jwks_uri must be a string"),
            (json!({"token_endpoint_auth_method": "private_key_jwt"}), "needs jwks or jwks_uri"),
        ] {
            let refused = parse_document_metadata(&document(bad.clone())).unwrap_err();
            assert!(refused.description.contains(why), "{bad}: {refused:?}");
        }
        let loopback =
            document(json!({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://127.0.0.1:8080/k"}));
        assert!(parse_document_metadata(&loopback).is_ok(), "for a server in development; the fetcher decides");
    }
}
