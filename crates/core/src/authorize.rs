//! The authorization request (RFC 6749 §4.1.1 as OAuth 2.1 profiles it,
//! with PKCE, RFC 7636, and resource indicators, RFC 8707), read and
//! checked in the order the RFC's errors require:
//!
//! | what is wrong | answer |
//! |---|---|
//! | `client_id` missing, unknown, or not registered for the code grant | an error page, no redirect |
//! | `redirect_uri` missing (with several registered), not registered, or repeated | an error page, no redirect |
//! | anything else: `response_type`, PKCE, scope, resource, a repeated parameter | a redirect to the client with `error`, `state` and `iss` |
//!
//! A redirect URI matches a registered one exactly, character for
//! character, except that a native client's loopback URI matches on any
//! port (RFC 8252 §7.3): the port is chosen by the app at run time.
//! A client that registered exactly one redirect URI may omit it.

use crate::client::{ApplicationType, Client, GrantType};
use crate::error::{ErrorCode, OAuthError};
use crate::resource::{self, ResourceRules};
use crate::scope::Scopes;

/// Longest `state` kept and echoed.
pub const MAX_STATE: usize = 1024;

/// An authorization request whose client and redirect URI are known good:
/// what is left to check is redirected to the client on failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorization {
    pub client_id: String,
    /// The redirect URI to answer to: as the request named it (it matched
    /// a registered one), or the client's only one.
    pub redirect_uri: String,
    /// The client's `state`, echoed in the answer.
    pub state: Option<String>,
    /// The scopes asked for (the client's registered scopes when the
    /// request named none), within the client's registration.
    pub scopes: Scopes,
    /// The PKCE S256 challenge.
    pub code_challenge: String,
    /// The resources the tokens are for, allowed by the realm or client.
    pub resources: Vec<String>,
    /// The DPoP key the code is to be bound to (`dpop_jkt`, RFC 9449
    /// §10): its JWK thumbprint.
    pub dpop_jkt: Option<String>,
}

/// Why an authorization request failed, and so where the answer goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The client or its redirect URI cannot be trusted: the user sees the
    /// error, the client nothing (RFC 6749 §4.1.2.1).
    Page(OAuthError),
    /// Redirected to the client, with its `state`.
    Redirect { redirect_uri: String, state: Option<String>, error: OAuthError },
}

/// The query of an authorization request, as name-value pairs.
pub type Params<'a> = [(String, String)];

/// Finds the client's redirect URI for a request: the one named, if it
/// matches a registered one, or the only one registered.
pub fn redirect_uri(client: &Client, requested: Option<&str>) -> Result<String, OAuthError> {
    let registered = &client.metadata.redirect_uris;
    match requested {
        None => match registered.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(OAuthError::invalid_request("redirect_uri is required: the client registered several")),
        },
        Some(uri) => {
            let native = client.metadata.application_type == ApplicationType::Native;
            if registered.iter().any(|r| redirect_matches(r, uri, native)) {
                Ok(uri.to_string())
            } else {
                Err(OAuthError::invalid_request("redirect_uri is not one the client registered"))
            }
        }
    }
}

/// Whether `requested` is the `registered` redirect URI: exactly, or for a
/// native client, a loopback IP literal on another port (RFC 8252 §7.3).
pub fn redirect_matches(registered: &str, requested: &str, native: bool) -> bool {
    if registered == requested {
        return true;
    }
    if !native {
        return false;
    }
    let (Some(r), Some(q)) = (loopback_without_port(registered), loopback_without_port(requested)) else {
        return false;
    };
    r == q
}

/// For an `http` URI whose host is `127.0.0.1` or `[::1]`: the URI with
/// its port left out, to compare; otherwise none.
fn loopback_without_port(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("http://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let host = if let Some(v6) = authority.strip_prefix("[::1]") {
        (v6.is_empty() || valid_port(v6)).then_some("[::1]")?
    } else if let Some(v4) = authority.strip_prefix("127.0.0.1") {
        (v4.is_empty() || valid_port(v4)).then_some("127.0.0.1")?
    } else {
        return None;
    };
    Some(format!("http://{host}{tail}"))
}

fn valid_port(colon_port: &str) -> bool {
    colon_port.strip_prefix(':').is_some_and(|p| (1..=5).contains(&p.len()) && p.parse::<u16>().is_ok())
}

/// Checks the `client` (already found by its `client_id`) may use the
/// authorization endpoint, then the rest of the request: an error here
/// that is not `Refusal::Page` goes to the client.
pub fn check(client: &Client, params: &Params<'_>, rules: &ResourceRules) -> Result<Authorization, Refusal> {
    let single = |name: &str| -> Result<Option<&str>, OAuthError> {
        let mut values = params.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(OAuthError::invalid_request(format!("{name} is repeated")));
        }
        Ok(first)
    };
    if !client.metadata.allows_grant(GrantType::AuthorizationCode) {
        return Err(Refusal::Page(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client is not registered for the authorization_code grant",
        )));
    }
    let redirect_uri = single("redirect_uri").and_then(|r| redirect_uri(client, r)).map_err(Refusal::Page)?;
    let state = single("state").ok().flatten().map(str::to_string);
    let redirect = |error: OAuthError| Refusal::Redirect {
        redirect_uri: redirect_uri.clone(),
        state: state.clone().filter(|s| s.len() <= MAX_STATE),
        error,
    };
    let state = match single("state").map_err(redirect)? {
        Some(s) if s.len() > MAX_STATE => {
            return Err(redirect(OAuthError::invalid_request(format!("state is longer than {MAX_STATE} bytes"))));
        }
        s => s.map(str::to_string),
    };
    match single("response_type").map_err(redirect)? {
        Some("code") => {}
        None => return Err(redirect(OAuthError::invalid_request("response_type is required"))),
        Some(other) => {
            return Err(redirect(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                format!("response_type {other:?} is not supported; use code"),
            )));
        }
    }
    let code_challenge =
        match (single("code_challenge").map_err(redirect)?, single("code_challenge_method").map_err(redirect)?) {
            (None, _) => return Err(redirect(OAuthError::invalid_request("code_challenge is required (PKCE, S256)"))),
            (Some(_), None | Some("plain")) => {
                return Err(redirect(OAuthError::invalid_request("code_challenge_method must be S256")));
            }
            (Some(challenge), Some("S256")) if is_s256_challenge(challenge) => challenge.to_string(),
            (Some(_), Some("S256")) => {
                return Err(redirect(OAuthError::invalid_request(
                    "code_challenge must be 43 base64url characters (an S256 challenge)",
                )));
            }
            (Some(_), Some(other)) => {
                return Err(redirect(OAuthError::invalid_request(format!(
                    "code_challenge_method {other:?} is not supported; use S256"
                ))));
            }
        };
    let registered = client.metadata.scopes();
    let scopes = match single("scope").map_err(redirect)? {
        // MCP clients often send no scope: they get what they registered.
        None => registered.clone(),
        Some(asked) => {
            let asked = Scopes::parse(asked).map_err(&redirect)?;
            crate::grant::narrow_scopes(Some(asked), &registered, "the client's registered scopes").map_err(redirect)?
        }
    };
    let asked: Vec<String> = params.iter().filter(|(n, _)| n == "resource").map(|(_, v)| v.clone()).collect();
    let resources = resource::resolve(&asked, rules, client).map_err(redirect)?;
    let dpop_jkt = match single("dpop_jkt").map_err(redirect)? {
        // A SHA-256 JWK thumbprint (RFC 7638), base64url: 43 characters,
        // as an S256 challenge is.
        Some(jkt) if is_s256_challenge(jkt) => Some(jkt.to_string()),
        Some(_) => {
            return Err(redirect(OAuthError::invalid_request(
                "dpop_jkt must be a JWK SHA-256 thumbprint: 43 base64url characters",
            )));
        }
        None => None,
    };
    Ok(Authorization {
        client_id: client.client_id.clone(),
        redirect_uri,
        state,
        scopes,
        code_challenge,
        resources,
        dpop_jkt,
    })
}

/// An S256 `code_challenge`: BASE64URL(SHA-256(verifier)) without padding,
/// 43 characters.
pub fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A `code_verifier` as RFC 7636 §4.1 defines it: 43 to 128 characters of
/// `[A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~"`.
pub fn is_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{AuthMethod, test_agent};

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn app(native: bool, uris: &[&str]) -> Client {
        let mut client = test_agent("app", "read write", &[GrantType::AuthorizationCode, GrantType::RefreshToken]);
        client.metadata.redirect_uris = uris.iter().map(|u| u.to_string()).collect();
        client.metadata.token_endpoint_auth_method = AuthMethod::None;
        if native {
            client.metadata.application_type = ApplicationType::Native;
        }
        client
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    fn good() -> Vec<(String, String)> {
        params(&[
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", "https://app.example/cb"),
            ("state", "xyz"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
    }

    fn refused(client: &Client, params: &[(String, String)]) -> Refusal {
        check(client, params, &ResourceRules::default()).unwrap_err()
    }

    #[test]
    fn a_good_request_gets_the_registered_scopes_when_it_names_none() {
        let checked = check(&app(false, &["https://app.example/cb"]), &good(), &ResourceRules::default()).unwrap();
        assert_eq!(checked.scopes.to_string(), "read write");
        assert_eq!((checked.state.as_deref(), checked.code_challenge.as_str()), (Some("xyz"), CHALLENGE));
    }

    #[test]
    fn a_redirect_uri_not_registered_is_shown_on_a_page_never_redirected() {
        let mut request = good();
        request[2].1 = "https://evil.example/cb".into();
        assert!(matches!(refused(&app(false, &["https://app.example/cb"]), &request), Refusal::Page(_)));
        request[2].1 = "https://app.example/cb/".into();
        assert!(matches!(refused(&app(false, &["https://app.example/cb"]), &request), Refusal::Page(_)));
    }

    #[test]
    fn a_native_clients_loopback_uri_matches_on_any_port_and_nothing_else_does() {
        assert!(redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:53211/cb", true));
        assert!(redirect_matches("http://[::1]:80/cb", "http://[::1]:9/cb", true));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:53211/cb", false), "web clients: exact");
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:1/other", true));
        assert!(!redirect_matches("http://localhost/cb", "http://localhost:8/cb", true), "IP literals only");
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1.evil.example/cb", true));
        assert!(!redirect_matches("http://127.0.0.1/cb", "http://127.0.0.1:99999/cb", true));
    }

    #[test]
    fn pkce_is_required_with_s256_and_plain_is_refused() {
        let client = app(false, &["https://app.example/cb"]);
        for (drop, method) in [("code_challenge", None), ("", Some("plain")), ("code_challenge_method", None)] {
            let mut request: Vec<_> = good().into_iter().filter(|(n, _)| n != drop).collect();
            if let Some(method) = method {
                request.retain(|(n, _)| n != "code_challenge_method");
                request.push(("code_challenge_method".into(), method.into()));
            }
            match refused(&client, &request) {
                Refusal::Redirect { error, state, .. } => {
                    assert_eq!(error.code, ErrorCode::InvalidRequest, "{drop} {method:?}");
                    assert_eq!(state.as_deref(), Some("xyz"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn other_errors_go_to_the_client_with_their_codes() {
        let client = app(false, &["https://app.example/cb"]);
        let with = |name: &str, value: &str| {
            let mut request: Vec<_> = good().into_iter().filter(|(n, _)| n != name).collect();
            request.push((name.into(), value.into()));
            match refused(&client, &request) {
                Refusal::Redirect { error, .. } => error.code,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(with("response_type", "token"), ErrorCode::UnsupportedResponseType);
        assert_eq!(with("scope", "admin"), ErrorCode::InvalidScope);
        assert_eq!(with("resource", "https://elsewhere.example/"), ErrorCode::InvalidTarget);
        let mut repeated = good();
        repeated.push(("scope".into(), "read".into()));
        repeated.push(("scope".into(), "write".into()));
        assert!(matches!(refused(&client, &repeated), Refusal::Redirect { .. }));
    }

    #[test]
    fn a_client_without_the_code_grant_is_refused_on_a_page() {
        let client = test_agent("a1", "read", &[GrantType::ClientCredentials]);
        assert!(matches!(refused(&client, &good()), Refusal::Page(e) if e.code == ErrorCode::UnauthorizedClient));
    }

    #[test]
    fn code_verifiers_and_challenges_have_their_rfc_7636_shapes() {
        assert!(is_code_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!is_code_verifier("short"));
        assert!(!is_code_verifier(&"a".repeat(129)));
        assert!(!is_code_verifier(&format!("{}+", "a".repeat(43))));
        assert!(is_s256_challenge(CHALLENGE));
        assert!(!is_s256_challenge(&format!("{CHALLENGE}=")));
    }
}
