//! Trust in issuers outside the realm: the issuers a realm accepts JWTs
//! from, and what for.
//!
//! A realm lists its trusted issuers in its settings. Each names the
//! issuer exactly as its tokens' `iss` does, the purposes it may serve
//! (signing users in, ID-JAG and other JWT bearer grants, authenticating
//! workloads as clients, subject tokens of an exchange), where its keys
//! come from (a static JWKS, a `jwks_uri`, or its OpenID discovery
//! document), the algorithms and audience its tokens must have, and how
//! much clock skew and lifetime to allow. What a verified token then means
//! locally is the realm's `assertion` hook's decision.
//!
//! This module holds the configuration and its checks; fetching keys and
//! verifying tokens are the service's.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Algorithm;
use crate::vocabulary::vocabulary;

vocabulary! {
    /// What a trusted issuer's tokens may be used for.
    pub enum TrustPurpose {
        /// Signing users in at the authorization endpoint (upstream
        /// OpenID login): the issuer's ID tokens.
        Login = "login",
        /// Identity Assertion JWT Authorization Grants (ID-JAG) at the
        /// token endpoint.
        IdJag = "id_jag",
        /// Other JWT bearer grants (RFC 7523 §2.1).
        JwtBearer = "jwt_bearer",
        /// Authenticating a client with a workload's platform token
        /// (RFC 7523 §2.2; a Kubernetes service account token, a SPIFFE
        /// JWT-SVID, a cloud workload token).
        ClientAuth = "client_auth",
        /// The subject token of a token exchange (RFC 8693).
        SubjectToken = "subject_token",
    }
}

/// The most trusted issuers one realm may list.
pub const MAX_TRUSTED_ISSUERS: usize = 32;

/// The largest static JWKS a trusted issuer may carry, serialized.
pub const MAX_STATIC_JWKS_BYTES: usize = 64 * 1024;

/// The most keys one issuer's key set may hold, static or fetched: a JWKS
/// that grows past it is refused whole.
pub const MAX_ISSUER_KEYS: usize = 32;

/// An issuer a realm trusts, as its settings list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The realm's name for it, in the admin API and the CLI: 1 to 64 of
    /// `a-z`, `0-9` and `-`.
    pub name: String,
    /// The issuer identifier, compared exactly with tokens' `iss`: an
    /// absolute `https` URL (an OpenID provider, a SPIFFE trust domain's
    /// issuer, a Kubernetes cluster's) or, for issuers that name
    /// themselves otherwise (`spiffe://trust.domain`), that name.
    pub issuer: String,
    /// What its tokens may be used for; at least one.
    pub purposes: Vec<TrustPurpose>,
    /// Its public keys, as a JWKS held in the settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    /// Where its public keys are published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Read `jwks_uri` (and, for login, the endpoints) from the issuer's
    /// OpenID discovery document, `{issuer}/.well-known/openid-configuration`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub discovery: bool,
    /// The algorithms its tokens may be signed with.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The audience its tokens must name; by default the realm's issuer.
    /// (Workload tokens usually name one their platform was told to.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Seconds by which its clock may differ from this server's.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u32,
    /// The longest lifetime (`exp` from now) a token of its may have left.
    #[serde(default = "default_max_lifetime")]
    pub max_token_lifetime_seconds: u32,
    /// For `login`: how this realm signs users in there, as a client of
    /// the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<UpstreamLogin>,
}

/// This realm as a client of an upstream OpenID provider: the
/// authorization code grant with PKCE, the ID token checked against the
/// trusted issuer. The client secret never sits in the settings (which are
/// shown and audited): it is read from the server's environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamLogin {
    /// The realm's client id at the provider.
    pub client_id: String,
    /// The environment variable holding the client secret
    /// (`client_secret_basic`); none for a public client, PKCE alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// The scopes asked of the provider.
    #[serde(default = "default_login_scope")]
    pub scope: String,
    /// What the login page's button says: "Sign in with {label}".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_login_scope() -> String {
    "openid email profile".into()
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}

const fn default_clock_skew() -> u32 {
    60
}

const fn default_max_lifetime() -> u32 {
    3600
}

/// Where a trusted issuer's keys come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource<'a> {
    /// The JWKS in its settings.
    Static(&'a Value),
    /// The JWKS at this URL.
    Uri(&'a str),
    /// The `jwks_uri` of its discovery document at this URL.
    Discovery,
}

impl TrustedIssuer {
    /// Where its keys come from; [`Self::validate`] has checked there is
    /// exactly one source.
    pub fn key_source(&self) -> KeySource<'_> {
        match (&self.jwks, &self.jwks_uri) {
            (Some(jwks), _) => KeySource::Static(jwks),
            (None, Some(uri)) => KeySource::Uri(uri),
            (None, None) => KeySource::Discovery,
        }
    }

    /// The URL of its OpenID discovery document (OpenID Connect Discovery
    /// 1.0 §4: the issuer, without a trailing `/`, then the well-known path).
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'))
    }

    /// Whether it may be used for `purpose`.
    pub fn serves(&self, purpose: TrustPurpose) -> bool {
        self.purposes.contains(&purpose)
    }

    /// The algorithms its tokens may use, as this server names them.
    pub fn allowed_algorithms(&self) -> Vec<Algorithm> {
        self.algorithms.iter().filter_map(|a| Algorithm::parse(a)).collect()
    }

    /// Checks it, for a realm's settings: its name, an issuer, purposes,
    /// exactly one source of keys (a static JWKS of usable keys, an `https`
    /// `jwks_uri`, or discovery from an `https` issuer), the algorithms
    /// this server verifies, and ranges.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        let bad = |why: String| Err(format!("trusted issuer {name:?}: {why}"));
        if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-')) {
            return Err(format!("trusted issuer name {name:?}: 1 to 64 of a-z, 0-9 and -"));
        }
        if self.issuer.is_empty() || self.issuer.len() > 512 || self.issuer.chars().any(|c| c.is_control() || c == ' ')
        {
            return bad("issuer: 1 to 512 printable characters without spaces".into());
        }
        let parsed = url::Url::parse(&self.issuer);
        let is_url = parsed.as_ref().is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if let Ok(url) = &parsed
            && is_url
            && (url.query().is_some() || url.fragment().is_some() || !url.username().is_empty())
        {
            return bad("issuer: an issuer URL has no query, fragment or credentials".into());
        }
        if self.purposes.is_empty() {
            return bad(format!("purposes: at least one of {}", TrustPurpose::list()));
        }
        if self.purposes.iter().enumerate().any(|(i, p)| self.purposes[..i].contains(p)) {
            return bad("purposes: each at most once".into());
        }
        // A workload's platform token is reused until it expires, and its
        // audience is often the workload's to choose: an issuer trusted to
        // authenticate clients is trusted for nothing that names a user.
        if self.serves(TrustPurpose::ClientAuth) && self.purposes.len() > 1 {
            return bad("purposes: client_auth goes alone; trust the issuer for users under another entry".into());
        }
        let sources =
            usize::from(self.jwks.is_some()) + usize::from(self.jwks_uri.is_some()) + usize::from(self.discovery);
        if sources != 1 {
            return bad("give exactly one of jwks, jwks_uri and discovery: true".into());
        }
        if self.serves(TrustPurpose::Login) && !self.discovery {
            return bad("login needs discovery: true, for the provider's endpoints".into());
        }
        match (&self.login, self.serves(TrustPurpose::Login)) {
            (None, true) => return bad("login needs login: {client_id, client_secret_env?, scope?, label?}".into()),
            (Some(_), false) => return bad("login settings go with the login purpose".into()),
            (Some(login), true) => {
                let printable = |v: &str| !v.is_empty() && v.len() <= 256 && !v.chars().any(char::is_control);
                if !printable(&login.client_id) {
                    return bad("login.client_id: 1 to 256 printable characters".into());
                }
                if let Some(env) = &login.client_secret_env
                    && (env.is_empty()
                        || env.len() > 128
                        || !env.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'))
                {
                    return bad("login.client_secret_env: the name of an environment variable (A-Z, 0-9, _)".into());
                }
                if !login.scope.split(' ').any(|s| s == "openid") || !printable(&login.scope) {
                    return bad("login.scope: space-separated scopes, openid among them".into());
                }
                if login.label.as_deref().is_some_and(|l| !printable(l) || l.chars().count() > 64) {
                    return bad("login.label: 1 to 64 printable characters".into());
                }
            }
            (None, false) => {}
        }
        if let Some(jwks) = &self.jwks {
            let size = serde_json::to_string(jwks).map_or(usize::MAX, |s| s.len());
            if size > MAX_STATIC_JWKS_BYTES {
                return bad(format!("jwks: at most {MAX_STATIC_JWKS_BYTES} bytes"));
            }
            let keys = jwks.get("keys").and_then(Value::as_array);
            match keys {
                Some(keys) if !keys.is_empty() && keys.len() <= MAX_ISSUER_KEYS => {}
                _ => return bad(format!("jwks: an object whose keys hold 1 to {MAX_ISSUER_KEYS} JWKs")),
            }
        }
        if let Some(uri) = &self.jwks_uri
            && !is_https_url(uri)
            && !is_loopback_http_url(uri)
        {
            return bad("jwks_uri: an https URL without credentials or fragment".into());
        }
        if self.discovery && !is_https_url(&self.issuer) && !is_loopback_http_url(&self.issuer) {
            return bad("discovery: the issuer must be an https URL".into());
        }
        if self.algorithms.is_empty() {
            return bad("algorithms: at least one".into());
        }
        if let Some(alg) = self.algorithms.iter().find(|a| Algorithm::parse(a).is_none()) {
            let supported = Algorithm::ALL.map(Algorithm::as_str).join(", ");
            return bad(format!("algorithms: {alg:?} is not one this server verifies ({supported})"));
        }
        if let Some(audience) = &self.audience
            && (audience.is_empty() || audience.len() > 512 || audience.chars().any(char::is_control))
        {
            return bad("audience: 1 to 512 printable characters".into());
        }
        if self.clock_skew_seconds > 300 {
            return bad("clock_skew_seconds: at most 300".into());
        }
        if !(60..=86_400).contains(&self.max_token_lifetime_seconds) {
            return bad("max_token_lifetime_seconds: between 60 and 86400".into());
        }
        Ok(())
    }
}

/// Checks a realm's list of trusted issuers: each valid, at most
/// [`MAX_TRUSTED_ISSUERS`], names and issuers unique.
pub fn validate_all(issuers: &[TrustedIssuer]) -> Result<(), String> {
    if issuers.len() > MAX_TRUSTED_ISSUERS {
        return Err(format!("trusted_issuers: at most {MAX_TRUSTED_ISSUERS}"));
    }
    for (i, issuer) in issuers.iter().enumerate() {
        issuer.validate()?;
        if issuers[..i].iter().any(|o| o.name == issuer.name) {
            return Err(format!("trusted issuer {:?} is listed twice", issuer.name));
        }
        // `https://idp` and `https://idp/` are different issuers to a
        // token, but never meant as two entries with different keys.
        let same = |o: &TrustedIssuer| o.issuer.trim_end_matches('/') == issuer.issuer.trim_end_matches('/');
        if issuers[..i].iter().any(same) {
            return Err(format!("issuer {:?} is listed twice: give one entry all its purposes", issuer.issuer));
        }
    }
    Ok(())
}

/// An `https` URL with a host and no credentials or fragment.
pub fn is_https_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| {
        u.scheme() == "https"
            && u.host().is_some()
            && u.username().is_empty()
            && u.password().is_none()
            && u.fragment().is_none()
    })
}

/// An `http` URL on a loopback address, allowed (as the fetcher decides)
/// only in development.
pub(crate) fn is_loopback_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| {
        u.scheme() == "http"
            && match u.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issuer(extra: Value) -> Result<TrustedIssuer, serde_json::Error> {
        let mut base =
            json!({"name": "corp", "issuer": "https://idp.example", "purposes": ["id_jag"], "discovery": true});
        for (k, v) in extra.as_object().into_iter().flatten() {
            base[k] = v.clone();
        }
        serde_json::from_value(base)
    }

    #[test]
    fn purposes_parse_from_their_own_names() {
        crate::vocabulary::assert_table(&TrustPurpose::ALL, TrustPurpose::as_str, TrustPurpose::parse);
    }

    #[test]
    fn a_minimal_issuer_takes_safe_defaults() {
        let corp = issuer(json!({})).unwrap();
        assert_eq!(corp.validate(), Ok(()));
        assert_eq!(corp.algorithms, ["RS256", "ES256"]);
        assert_eq!(corp.clock_skew_seconds, 60);
        assert_eq!(corp.key_source(), KeySource::Discovery);
        assert_eq!(corp.discovery_url(), "https://idp.example/.well-known/openid-configuration");
    }

    #[test]
    fn each_mistake_is_named() {
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
        for (extra, expected) in [
            (json!({"name": "Corp"}), "a-z, 0-9"),
            (json!({"purposes": []}), "at least one"),
            (json!({"purposes": ["id_jag", "id_jag"]}), "at most once"),
            (json!({"purposes": ["client_auth", "jwt_bearer"]}), "client_auth goes alone"),
            (json!({"jwks_uri": "https://idp.example/jwks"}), "exactly one"),
            (json!({"discovery": false}), "exactly one"),
            (json!({"discovery": false, "jwks_uri": "http://idp.example/jwks"}), "jwks_uri"),
            (json!({"discovery": false, "jwks": {"keys": []}}), "1 to 32"),
            (json!({"discovery": false, "jwks": {"keys": vec![jwk; 33]}}), "1 to 32"),
            (json!({"issuer": "http://idp.example"}), "https"),
            (json!({"issuer": "https://idp.example?tenant=1"}), "no query"),
            (json!({"algorithms": ["HS256"]}), "HS256"),
            (json!({"algorithms": []}), "at least one"),
            (json!({"clock_skew_seconds": 301}), "at most 300"),
            (json!({"max_token_lifetime_seconds": 10}), "between 60"),
            (json!({"purposes": ["login"], "discovery": false, "jwks_uri": "https://idp.example/k"}), "login needs"),
            (json!({"purposes": ["login"]}), "login needs login"),
            (json!({"login": {"client_id": "agentauth"}}), "go with the login purpose"),
            (json!({"purposes": ["login"], "login": {"client_id": "a", "client_secret_env": "lower"}}), "environment"),
            (json!({"purposes": ["login"], "login": {"client_id": "a", "scope": "email"}}), "openid"),
        ] {
            let refusal = issuer(extra.clone()).unwrap().validate().unwrap_err();
            assert!(refusal.contains(expected), "{extra}: {refusal}");
        }
        assert!(issuer(json!({"purposes": ["everything"]})).is_err());
        assert!(issuer(json!({"surprise": 1})).is_err(), "unknown fields are refused");
    }

    #[test]
    fn an_upstream_login_names_the_realms_client_and_where_its_secret_is() {
        let corp = issuer(json!({"purposes": ["login"],
                                 "login": {"client_id": "agentauth", "client_secret_env": "CORP_IDP_SECRET"}}))
        .unwrap();
        assert_eq!(corp.validate(), Ok(()));
        let login = corp.login.unwrap();
        assert_eq!(login.scope, "openid email profile");
        assert!(issuer(json!({"login": {"client_id": "a", "client_secret": "s"}})).is_err(), "never the secret itself");
    }

    #[test]
    fn names_and_issuers_are_unique_in_a_realm() {
        let corp = issuer(json!({})).unwrap();
        let mut again = corp.clone();
        again.issuer = "https://other.example".into();
        assert!(validate_all(&[corp.clone(), again]).unwrap_err().contains("twice"));
        let mut same_issuer = corp.clone();
        same_issuer.name = "corp-2".into();
        assert!(validate_all(&[corp.clone(), same_issuer.clone()]).unwrap_err().contains("twice"));
        same_issuer.issuer = format!("{}/", corp.issuer);
        assert!(validate_all(&[corp.clone(), same_issuer]).unwrap_err().contains("twice"), "a trailing / is no other");
        assert_eq!(validate_all(&[corp]), Ok(()));
    }

    #[test]
    fn a_spiffe_trust_domain_may_be_an_issuer_with_a_static_jwks() {
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
        let spiffe = issuer(json!({
            "issuer": "spiffe://prod.example", "purposes": ["client_auth"],
            "discovery": false, "jwks": {"keys": [jwk]},
        }))
        .unwrap();
        assert_eq!(spiffe.validate(), Ok(()));
    }
}
